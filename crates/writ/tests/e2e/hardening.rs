//! Holes an outside review reproduced (SECURITY.md, H-rows), each closed.

use serde_json::Value;

use crate::harness::*;

fn bootstrap_token(b: &Broker) -> String {
    b.stdout()
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("writ_admin_")
                .map(|t| format!("writ_admin_{t}"))
        })
        .expect("bootstrap admin token printed")
}

async fn status_of(b: &Broker, token: Option<&str>, method: reqwest::Method, path: &str) -> u16 {
    let mut r = b.http().request(method, b.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().status().as_u16()
}

fn names(listed: &Value) -> Vec<(String, bool)> {
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["dev"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// H9: admin credentials are named, listed and revoked; a dev start leaves
/// one dev credential behind, not one per start, and a start without
/// `--dev` refuses it.
#[tokio::test]
async fn h9_admin_credentials_are_named_and_revocable_and_dev_ones_die_outside_dev() {
    let mut b = Broker::start();
    // Two dev starts with two tokens: one dev credential, the latest.
    b.restart();
    let out = b.cli(&["admin", "token", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(names(&json(&out)), [("dev".to_owned(), true)]);
    assert_eq!(
        status_of(&b, None, reqwest::Method::GET, "/v1/admin/tokens").await,
        401
    );

    // Moved to a start without --dev: the dev credential is refused, the
    // bootstrap one printed and accepted.
    b.opts.dev = false;
    b.restart();
    assert_eq!(
        status_of(&b, Some(ADMIN), reqwest::Method::GET, "/v1/agents").await,
        401,
        "a dev credential works outside dev"
    );
    let boot = bootstrap_token(&b);
    let env = [("WRIT_TOKEN", boot.as_str())];
    let out = b.cli_env(&["admin", "token", "list"], &env);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        names(&json(&out)),
        [("bootstrap".to_owned(), false), ("dev".to_owned(), true)]
    );

    // The last credential not made by a dev start stays; an unknown name
    // is 404; the dev one goes.
    let out = b.cli_env(&["admin", "token", "revoke", "bootstrap"], &env);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last admin credential"),
        "{out:?}"
    );
    assert_eq!(
        status_of(
            &b,
            Some(&boot),
            reqwest::Method::DELETE,
            "/v1/admin/tokens/nobody"
        )
        .await,
        404
    );
    assert_eq!(
        status_of(
            &b,
            Some(ADMIN),
            reqwest::Method::DELETE,
            "/v1/admin/tokens/dev"
        )
        .await,
        401,
        "a refused credential revokes nothing"
    );
    let out = b.cli_env(&["admin", "token", "revoke", "dev"], &env);
    assert!(out.status.success(), "{out:?}");
    let out = b.cli_env(&["admin", "token", "list"], &env);
    assert_eq!(names(&json(&out)), [("bootstrap".to_owned(), false)]);

    // Every change is in the audit trail.
    let out = b.cli_env(&["audit", "verify"], &env);
    assert!(out.status.success(), "{out:?}");
    let out = b.cli_env(&["audit", "tail", "-n", "50"], &env);
    assert!(stdout(&out).contains("admin_token_revoke"), "{out:?}");

    // Back to dev: a fresh dev credential works again; the bootstrap one
    // stays.
    b.opts.dev = true;
    b.restart();
    assert_eq!(
        status_of(&b, Some(ADMIN), reqwest::Method::GET, "/v1/agents").await,
        200
    );
    assert_eq!(
        status_of(&b, Some(&boot), reqwest::Method::GET, "/v1/agents").await,
        200
    );
}

/// Rewrites the record at `seq` to name `someone-else` and re-hashes every
/// record from it on, as someone with the database but not the signing
/// keys can; the chain alone then verifies.
fn rewrite_and_rehash(c: &rusqlite::Connection, seq: i64) {
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    c.execute(
        "UPDATE audit SET event = replace(event, 'demo-agent', 'someone-else') WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    let rows: Vec<(i64, i64, String, String)> = c
        .prepare("SELECT seq, ts, event, prev_hash FROM audit WHERE seq >= ?1 ORDER BY seq")
        .unwrap()
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = rows[0].3.clone();
    for (s, ts, event, _) in rows {
        let hash = writ_core::audit::chain_hash(
            s as u64,
            writ_core::Timestamp::from_millis(ts),
            &prev,
            &event,
        );
        c.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![prev, hash, s],
        )
        .unwrap();
        prev = hash;
    }
}

/// H5: the broker signs and keeps checkpoints of the audit chain as it
/// goes; a record rewritten and the chain re-hashed by someone with write
/// access to the database, but not the signing keys, is caught by
/// `writ audit verify`, by the broker and offline with the public keys
/// alone, even when the kept checkpoints are deleted too.
#[tokio::test]
async fn h5_a_rewritten_and_rehashed_audit_chain_is_caught() {
    let mut b = Broker::start_with(Opts {
        extra: vec![
            "--sweep-interval-ms".into(),
            "50".into(),
            "--audit-checkpoint-records".into(),
            "4".into(),
        ],
        ..Opts::default()
    });
    let inst = b.attest("demo-agent").await;
    for _ in 0..3 {
        let t = b
            .start_task(&inst.access_token, &["tickets:read"])
            .await
            .unwrap();
        b.as_token(&inst.access_token)
            .complete(&t.task_id)
            .await
            .unwrap();
    }
    let admin = b.admin();
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            let v = admin.audit_verify().await.unwrap();
            v.valid && v.checkpoints >= 2 && v.sealed_through >= 8
        })
        .await,
        "the broker kept no checkpoints"
    );
    let keys = b.data_dir().join("keys.json");
    let out = b.cli(&["audit", "keys"]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&keys, &out.stdout).unwrap();
    let out = b.cli(&["audit", "verify", "--keys", keys.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        json(&out)["verified_here"]["sealed_through"]
            .as_u64()
            .unwrap()
            >= 8
    );

    // Rewritten and re-hashed: the chain holds, the checkpoints do not.
    b.stop();
    let db = b.data_dir().join("writ.db");
    let first: i64 = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let seq: i64 = c
            .query_row(
                "SELECT MIN(seq) FROM audit WHERE event LIKE '%demo-agent%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        rewrite_and_rehash(&c, seq);
        let records: Vec<writ_core::audit::AuditRecord> = c
            .prepare("SELECT seq, ts, event, prev_hash, hash FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| {
                Ok(writ_core::audit::AuditRecord {
                    seq: r.get::<_, i64>(0)? as u64,
                    ts: writ_core::Timestamp::from_millis(r.get(1)?),
                    event: r.get(2)?,
                    prev_hash: r.get(3)?,
                    hash: r.get(4)?,
                })
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            writ_core::audit::verify(&records).is_ok(),
            "the re-hashed chain verifies on its own"
        );
        seq
    };
    b.restart();
    let out = b.cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let v = json(&out);
    assert_eq!(v["valid"], false);
    assert!(v["error"]["seq"].as_i64().unwrap() >= first, "{v}");

    // The kept checkpoints deleted as well: the copy outside the database
    // still catches it.
    b.stop();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute("DELETE FROM audit_checkpoints", []).unwrap();
    }
    b.restart();
    let out = b.cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        json(&out)["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("checkpoint"),
        "{out:?}"
    );
}

/// H10: a bound task is never handed to an unbound sub-agent (a bearer
/// child anyone holding it could use) unless a permit says so, audited;
/// and a planner cannot delegate to a bound instance that does not take
/// part: it must bring a fresh proof made with the sub-agent's own key.
#[tokio::test]
async fn h10_delegation_keeps_the_binding_and_the_actor_proves_its_key() {
    use std::sync::Arc;
    use writ_core::dpop::ProofKey;

    use crate::delegation::{actor_proof, bound_instance};

    let dir = tempfile::tempdir().unwrap();
    let write = |unbound: bool| {
        std::fs::write(
            dir.path().join("p.cedar"),
            format!(
                r#"
@id("start") permit (principal, action == Action::"StartTask", resource);
@id("exchange") permit (principal, action == Action::"ExchangeToken", resource);
@id("delegate") {}
permit (principal, action == Action::"DelegateTask", resource);
"#,
                if unbound {
                    r#"@unbound_delegation("allowed")"#
                } else {
                    ""
                }
            ),
        )
        .unwrap();
    };
    write(false);
    let b = Broker::start_with(Opts {
        policy_dir: Some(dir.path().to_owned()),
        ..Opts::default()
    });
    b.agent("helper", &[]).await;
    let planner_key = Arc::new(ProofKey::generate().unwrap().0);
    let helper_key = Arc::new(ProofKey::generate().unwrap().0);
    let planner = bound_instance(&b, "demo-agent", &planner_key).await;
    let root = b
        .as_token(&planner)
        .with_dpop(Arc::clone(&planner_key))
        .start_task(&writ_core::api::StartTask {
            intent: "read".into(),
            capabilities: vec![writ_core::Capability::parse_short("tickets:read").unwrap()],
            on_behalf_of: None,
            ttl: None,
            justification: None,
        })
        .await
        .unwrap();
    let c = b.anon().with_dpop(Arc::clone(&planner_key));

    // An unbound sub-agent: refused, and the refusal is the planner's.
    let bearer_helper = b.attest("helper").await.access_token;
    let e = c
        .exchange(&root.access_token, Some(&bearer_helper), None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid_grant"), "{e}");
    assert!(e.to_string().contains("bound"), "{e}");

    // A bound sub-agent, without its proof, with a proof by another key,
    // for another actor token, or replayed: refused.
    let helper = bound_instance(&b, "helper", &helper_key).await;
    let e = c
        .exchange(&root.access_token, Some(&helper), None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("actor_token_proof"), "{e}");
    let forged = actor_proof(&b, &planner_key, &helper);
    let e = c
        .delegate(&root.access_token, &helper, Some(&forged), None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("actor_token_proof"), "{e}");
    let other = actor_proof(&b, &helper_key, &bearer_helper);
    let e = c
        .delegate(&root.access_token, &helper, Some(&other), None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("actor_token_proof"), "{e}");

    // With it: a child bound to the sub-agent's key. Used twice: refused.
    let proof = actor_proof(&b, &helper_key, &helper);
    let child = c
        .delegate(&root.access_token, &helper, Some(&proof), None, None)
        .await
        .unwrap();
    assert_eq!(child.token_type, "DPoP");
    let e = c
        .delegate(&root.access_token, &helper, Some(&proof), None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("actor_token_proof"), "{e}");

    // Where a permit says so, the unbound hand-off is allowed, audited.
    write(true);
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            c.exchange(&root.access_token, Some(&bearer_helper), None, None)
                .await
                .is_ok_and(|t| t.token_type == "Bearer")
        })
        .await,
        "@unbound_delegation(\"allowed\") was not honoured"
    );
    let records = b.admin().audit_last(200).await.unwrap().records;
    assert!(
        records
            .iter()
            .any(|r| r.event.contains("\"unbound\":true") && r.event.contains("\"success\"")),
        "the unbound delegation is not in the audit trail"
    );
}

/// Opens a connection from `from` to `to` and sends half a request head.
async fn slow_client(from: &str, to: std::net::SocketAddr) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let s = tokio::net::TcpSocket::new_v4().ok()?;
    s.bind(format!("{from}:0").parse().ok()?).ok()?;
    let mut c = s.connect(to).await.ok()?;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .ok()?;
    Some(c)
}

/// Whether the server closed `c` within `wait`.
async fn closed_within(mut c: tokio::net::TcpStream, wait: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(wait, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An error response (408) before the close is a close too.
            Ok(Ok(_)) => {}
        }
    }
}

/// H4: a thousand half-sent requests from one address neither hang the
/// broker nor the embedded gateway: past its share that address's
/// connections are closed at once, the rest when their headers run late,
/// and health, JWKS and other clients answer throughout.
#[tokio::test]
async fn h4_a_flood_of_slow_connections_leaves_health_jwks_and_clients_answering() {
    use std::time::{Duration, Instant};

    let b = Broker::start_with(Opts {
        extra: vec![
            "--limit-client-connections".into(),
            "32".into(),
            "--limit-header-secs".into(),
            "3".into(),
        ],
        ..Opts::default()
    });
    let broker: std::net::SocketAddr = b.addr.trim_start_matches("http://").parse().unwrap();
    let gateway: std::net::SocketAddr = b.gateway.trim_start_matches("http://").parse().unwrap();
    // Healthy before the flood (the embedded gateway has its first bundle
    // and revocation view), so that what follows measures the flood.
    let health = format!("{}/healthz", b.gateway);
    assert!(
        crate::harness::eventually(Duration::from_secs(20), || async {
            reqwest::get(&health)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await,
        "the embedded gateway never became ready"
    );
    let mut held = Vec::new();
    for _ in 0..500 {
        for to in [broker, gateway] {
            if let Some(c) = slow_client("127.0.0.2", to).await {
                held.push(c);
            }
        }
    }
    assert!(
        held.len() >= 900,
        "the flood opened {} connections",
        held.len()
    );

    // Everyone else is answered, promptly.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for url in [
        format!("{}/healthz", b.addr),
        format!("{}/.well-known/jwks.json", b.addr),
        format!("{}/healthz", b.gateway),
    ] {
        let t = Instant::now();
        let r = http.get(&url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{url} took {:?}",
            t.elapsed()
        );
    }
    let inst = b.attest("demo-agent").await;
    b.start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();

    // Past its share, the flood's connections were closed at once; the
    // rest close when their headers run late.
    let mut checks = tokio::task::JoinSet::new();
    for c in held {
        checks.spawn(closed_within(c, Duration::from_millis(1500)));
    }
    let mut open = 0;
    while let Some(closed) = checks.join_next().await {
        if !closed.unwrap() {
            open += 1;
        }
    }
    assert!(
        open <= 64,
        "{open} slow connections still held (at most 2 x 32)"
    );
    let late = slow_client("127.0.0.2", broker).await.unwrap();
    assert!(
        closed_within(late, Duration::from_secs(6)).await,
        "a connection whose headers never came was kept"
    );
}
