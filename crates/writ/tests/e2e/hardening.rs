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
