//! State survives restarts and crashes.

use crate::harness::Broker;

#[tokio::test]
async fn restart_keeps_state_and_keys() {
    let mut b = Broker::start();
    b.agent("keeper", &[("owner", "ops")]).await;
    let inst = b.attest("demo-agent").await;
    let t = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    // The signing keys, apart from the gateways' transaction-token keys
    // (`txn.`): the embedded gateway makes a new one each start.
    let signing = |jwks: serde_json::Value| -> Vec<serde_json::Value> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| !k["kid"].as_str().unwrap().starts_with("txn."))
            .cloned()
            .collect()
    };
    let jwks_before = signing(b.anon().jwks().await.unwrap());
    let head_before = b.admin().audit_verify().await.unwrap();

    b.restart();

    assert_eq!(
        signing(b.anon().jwks().await.unwrap()),
        jwks_before,
        "signing key survives"
    );
    assert!(b.active(&inst.access_token).await);
    assert!(b.active(&t.access_token).await);
    let names: Vec<String> = b
        .admin()
        .agents()
        .await
        .unwrap()
        .iter()
        .map(|a| a.name.to_string())
        .collect();
    assert_eq!(names, ["demo-agent", "keeper"]);
    assert_eq!(b.admin().tools().await.unwrap().len(), 1);
    // The audit chain continues from where it was.
    let v = b.admin().audit_verify().await.unwrap();
    assert!(v.valid);
    assert!(v.records > head_before.records);
    // The old instance token still works for new tasks.
    assert!(
        b.start_task(&inst.access_token, &["tickets:read"])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn s1_kill9_right_after_a_revocation_keeps_it() {
    let mut b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let t = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    let keep = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    b.admin().revoke(&t.access_token).await.unwrap();
    let other = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    b.as_token(&inst.access_token)
        .complete(&other.task_id)
        .await
        .unwrap();

    b.kill9();
    b.restart();

    assert!(
        !b.active(&t.access_token).await,
        "revocation lost in the crash"
    );
    assert!(
        !b.active(&other.access_token).await,
        "task end lost in the crash"
    );
    assert!(b.active(&keep.access_token).await);
    assert!(b.admin().audit_verify().await.unwrap().valid);
}

#[test]
fn s6_sqlite_runs_in_wal_with_full_sync() {
    let b = Broker::start();
    let db = b.data_dir().join("writ.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // (synchronous=FULL is per connection; the store's own test checks the writer's.)
    // The master key file is private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(b.data_dir().join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The signing key is not stored in the clear: no PKCS#8 Ed25519 prefix in the database.
    let bytes = std::fs::read(&db).unwrap();
    let pkcs8_prefix = [
        0x30u8, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
    ];
    assert!(!bytes.windows(pkcs8_prefix.len()).any(|w| w == pkcs8_prefix));
}

/// A master key that is valid, just not the one a store was made with.
fn foreign_master_key(dir: &std::path::Path) -> std::path::PathBuf {
    use base64::Engine as _;
    let path = dir.join("another-master.key");
    let key = writ_core::random::bytes::<32>().unwrap();
    std::fs::write(
        &path,
        base64::engine::general_purpose::STANDARD.encode(key) + "\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// Runs `writ serve` with `args` and expects it to refuse to start: its
/// standard error.
fn refused_start(args: &[&str]) -> String {
    let out = std::process::Command::new(crate::harness::BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--no-gateway"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WRIT_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "writ started: {stderr}");
    stderr
}

fn names_the_master_key_and_the_fix(stderr: &str) {
    assert!(stderr.contains("different master key"), "{stderr}");
    assert!(stderr.contains("--master-key-file"), "{stderr}");
    assert!(!stderr.contains("internal error"), "{stderr}");
}

/// H13: a broker (a restart, or another replica) started with another
/// master key than its store was made with says so and names the fix,
/// instead of dying with "internal error: internal error".
#[tokio::test]
async fn h13_another_master_key_is_named_at_startup() {
    let mut b = Broker::start();
    b.stop();
    let other = foreign_master_key(b.data_dir());
    let dir = b.data_dir().display().to_string();
    let stderr = refused_start(&[
        "--data-dir",
        &dir,
        "--master-key-file",
        &other.display().to_string(),
    ]);
    names_the_master_key_and_the_fix(&stderr);

    // Replicas on one PostgreSQL store: the second with its own key.
    let Some(url) = crate::harness::postgres_database() else {
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("master.key");
    let first = Broker::start_with(crate::harness::Opts {
        extra: vec![
            "--store".into(),
            url.clone(),
            "--master-key-file".into(),
            key.display().to_string(),
        ],
        ..Default::default()
    });
    let replica_dir = tempfile::tempdir().unwrap();
    let stderr = refused_start(&[
        "--data-dir",
        &replica_dir.path().display().to_string(),
        "--store",
        &url,
        "--master-key-file",
        &foreign_master_key(replica_dir.path()).display().to_string(),
    ]);
    names_the_master_key_and_the_fix(&stderr);
    assert!(
        !stderr.contains(&url),
        "the store URL (and its password) is not printed"
    );
    // The first replica is unharmed.
    assert_eq!(
        first.anon().metadata().await.unwrap()["issuer"],
        first.addr.as_str()
    );
}

/// H13: a store that cannot be opened is named with what to check, once,
/// and the address (which holds the password) is not printed.
#[tokio::test]
async fn h13_a_store_that_cannot_be_opened_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://writ:secret-password-h13@127.0.0.1:1/writ";
    let stderr = refused_start(&[
        "--data-dir",
        &dir.path().display().to_string(),
        "--store",
        url,
    ]);
    assert!(stderr.contains("cannot open the store"), "{stderr}");
    assert!(stderr.contains("check --store"), "{stderr}");
    assert!(!stderr.contains("secret-password-h13"), "{stderr}");
    assert_eq!(
        stderr.matches("store unavailable").count(),
        1,
        "said once: {stderr}"
    );
    assert!(!stderr.contains("internal error"), "{stderr}");
}

/// `writ keys rotate-master`: everything sealed is re-sealed under a new
/// master key; tokens, signing keys and tool secrets work after a restart
/// with it; the old key opens nothing any more, and a wrong or repeated key
/// changes nothing.
#[tokio::test]
async fn master_key_rotation_reseals_everything_and_the_old_key_opens_nothing() {
    use std::sync::atomic::Ordering;
    use writ_core::api::{RegisterTool, SetToolSecret, Upstream};

    let mut b = Broker::start();
    let up = crate::gateway::upstream().await;
    b.admin()
        .register_tool(&RegisterTool {
            name: "vault".parse().unwrap(),
            audience: "https://vault.example".into(),
            scopes: vec!["read".parse().unwrap()],
            attributes: Default::default(),
            upstream: Some(Upstream::Http {
                url: up.url.clone(),
                require_secret: true,
                txn_token_only: false,
            }),
            gateway: None,
        })
        .await
        .unwrap();
    b.admin()
        .set_tool_secret(
            "vault",
            &SetToolSecret {
                header: "Authorization".into(),
                value: "Bearer upstream-secret-1".into(),
            },
        )
        .await
        .unwrap();
    let inst = b.attest("demo-agent").await;
    let t = b
        .start_task(&inst.access_token, &["vault:read"])
        .await
        .unwrap();
    let jwks_before = b.anon().jwks().await.unwrap();
    let dir = b.data_dir().to_owned();
    let old_key = std::fs::read(dir.join("master.key")).unwrap();
    b.stop();

    let rotate = |key: &std::path::Path| {
        std::process::Command::new(crate::harness::BIN)
            .args(["keys", "rotate-master", "--output", "json", "--data-dir"])
            .arg(&dir)
            .arg("--new-key-file")
            .arg(key)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap()
    };
    // The current key again: refused, nothing changed.
    let same = dir.join("same.key");
    std::fs::copy(dir.join("master.key"), &same).unwrap();
    let o = rotate(&same);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is the current master key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(dir.join("master.key")).unwrap(), old_key);

    // A new key, created by the command.
    let new = dir.join("new.key");
    let o = rotate(&new);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Two signing-key rows at least (the first key), SPIFFE's two, the secret.
    assert!(done["resealed"].as_u64().unwrap() >= 4, "{done}");
    let new_bytes = std::fs::read(&new).unwrap();
    assert_eq!(std::fs::read(dir.join("master.key")).unwrap(), new_bytes);
    assert_eq!(
        std::fs::read(dir.join("master.key.retired")).unwrap(),
        old_key
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the new key is readable by its owner only");
        let mode = std::fs::metadata(&new).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }

    // Rotating again with the retired key as "current" fails to open and
    // changes nothing.
    let stale = dir.join("stale");
    std::fs::create_dir(&stale).unwrap();
    for f in ["writ.db", "writ.db-wal", "writ.db-shm"] {
        if dir.join(f).exists() {
            std::fs::copy(dir.join(f), stale.join(f)).unwrap();
        }
    }
    std::fs::copy(dir.join("master.key.retired"), stale.join("master.key")).unwrap();
    let o = std::process::Command::new(crate::harness::BIN)
        .args(["keys", "rotate-master", "--data-dir"])
        .arg(&stale)
        .arg("--new-key-file")
        .arg(stale.join("another.key"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not the key the store was sealed with"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(stale.join("master.key")).unwrap(),
        old_key,
        "a failed rotation moves no key"
    );

    // With the new key: the same signing keys, the old tokens, the secret.
    b.restart();
    assert_eq!(
        b.anon().jwks().await.unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| !k["kid"].as_str().unwrap().starts_with("txn."))
            .count(),
        jwks_before["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| !k["kid"].as_str().unwrap().starts_with("txn."))
            .count()
    );
    assert!(
        b.active(&t.access_token).await,
        "tokens issued before still verify"
    );
    crate::gateway::wait_for_tool(&b.gateway, "vault").await;
    let tok = b
        .anon()
        .exchange(&t.access_token, None, Some("vault"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let r = reqwest::Client::new()
        .get(format!("{}/vault/x", b.gateway))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the re-sealed secret opens");
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);

    // The retired key opens nothing: a broker started with it refuses.
    b.stop();
    let o = std::process::Command::new(crate::harness::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .arg("--master-key-file")
        .arg(dir.join("master.key.retired"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("different master key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
