//! Delegation as a person runs it from the CLI: keys, attestation, a
//! three-hop chain, server nonces.

use super::*;

fn exports(out: &std::process::Output) -> Vec<(String, String)> {
    stdout(out)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn get<'a>(e: &'a [(String, String)], k: &str) -> &'a str {
    &e.iter().find(|(n, _)| n == k).unwrap().1
}

/// DESIGN.md promise 3 and issue 4's "done when": agent → sub-agent → tool
/// token from the CLI; ending the root ends the whole tree.

#[tokio::test]
async fn a_three_hop_chain_from_the_cli() {
    let b = Broker::start();
    let dir = b.data_dir().to_owned();
    let root_key = dir.join("root.pem");
    let sub_key = dir.join("sub.pem");
    for k in [&root_key, &sub_key] {
        let out = b.cli(&["dpop", "keygen", "--out", k.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(json(&out)["jkt"].as_str().unwrap().len(), 43);
    }
    assert!(b.cli(&["agent", "register", "helper-bot"]).status.success());
    let jt = |agent: &str| {
        stdout(&b.cli(&["agent", "join-token", agent, "--field", "join_token"]))
            .trim()
            .to_owned()
    };
    let root_env = [("WRIT_DPOP_KEY", root_key.to_str().unwrap())];
    let sub_env = [("WRIT_DPOP_KEY", sub_key.to_str().unwrap())];

    let out = b.cli_env(
        &[
            "attest",
            "demo-agent",
            "--join-token",
            &jt("demo-agent"),
            "--export",
        ],
        &root_env,
    );
    assert!(out.status.success(), "{out:?}");
    let root_instance = get(&exports(&out), "WRIT_INSTANCE_TOKEN").to_owned();
    let out = b.cli_env(
        &[
            "attest",
            "helper-bot",
            "--join-token",
            &jt("helper-bot"),
            "--export",
        ],
        &sub_env,
    );
    let sub_instance = get(&exports(&out), "WRIT_INSTANCE_TOKEN").to_owned();

    let env = [
        ("WRIT_DPOP_KEY", root_key.to_str().unwrap()),
        ("WRIT_INSTANCE_TOKEN", root_instance.as_str()),
    ];
    let out = b.cli_env(
        &[
            "task",
            "start",
            "--intent",
            "summarise tickets",
            "--cap",
            "tickets:read,comment",
            "--on-behalf-of",
            "user:alice",
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    let root = json(&out);
    assert_eq!(root["token_type"], "DPoP");
    let root_task = root["task_id"].as_str().unwrap().to_owned();
    let root_token = root["access_token"].as_str().unwrap().to_owned();

    // The sub-agent takes part: a proof with its own key for its token.
    let out = b.cli_env(
        &["dpop", "actor-proof", "--actor-token", &sub_instance],
        &sub_env,
    );
    assert!(out.status.success(), "{out:?}");
    let proof = stdout(&out).trim().to_owned();

    // Delegate read only (the example policy gives sub-agents read-only work).
    let out = b.cli_env(
        &[
            "task",
            "delegate",
            "--subject-token",
            &root_token,
            "--actor-token",
            &sub_instance,
            "--actor-token-proof",
            &proof,
            "--scope",
            "tickets:read",
            "--export",
        ],
        &root_env,
    );
    assert!(out.status.success(), "{out:?}");
    let e = exports(&out);
    let child_token = get(&e, "WRIT_CHILD_TASK_TOKEN").to_owned();
    let child_task = get(&e, "WRIT_CHILD_TASK_ID").to_owned();
    let (_, c) = writ_core::token::insecure_peek(&child_token).unwrap();
    assert_eq!(c["sub"], "spiffe://writ.local/agent/demo-agent");
    assert_eq!(c["act"]["sub"], "spiffe://writ.local/agent/helper-bot");
    assert_eq!(c["scope"], "tickets:read");
    assert_eq!(c["obo"], "user:alice");
    let sub_jkt = ProofKey::from_pkcs8(&pem_der(&sub_key))
        .unwrap()
        .thumbprint()
        .unwrap();
    assert_eq!(
        c["cnf"]["jkt"],
        sub_jkt.as_str(),
        "bound to the sub-agent's key"
    );

    // The parent's key cannot use the child's token; the sub-agent's can.
    let out = b.cli_env(
        &[
            "token",
            "exchange",
            "--subject-token",
            &child_token,
            "--audience",
            "tickets",
        ],
        &root_env,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_dpop_proof"));
    let out = b.cli_env(
        &[
            "token",
            "exchange",
            "--subject-token",
            &child_token,
            "--audience",
            "tickets",
            "--scope",
            "read",
        ],
        &sub_env,
    );
    assert!(out.status.success(), "{out:?}");
    let tool = json(&out);
    assert_eq!(
        tool["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(tool["scope"], "read");
    assert!(tool["expires_in"].as_i64().unwrap() <= 300);
    let tool_token = tool["access_token"].as_str().unwrap().to_owned();
    let (_, t) = writ_core::token::insecure_peek(&tool_token).unwrap();
    assert_eq!(t["aud"], "https://tickets.example.com");
    assert_eq!(t["act"]["sub"], "spiffe://writ.local/agent/helper-bot");
    assert!(t["exp"].as_i64() <= c["exp"].as_i64());

    let tree = stdout(&b.cli(&["task", "tree", &root_task]));
    assert_eq!(tree.lines().count(), 2, "{tree}");
    assert!(tree.lines().nth(1).unwrap().contains(&child_task), "{tree}");

    let intro = b.admin().introspect(&child_token).await.unwrap();
    assert!(intro.active);
    assert_eq!(intro.cnf.unwrap().jkt, sub_jkt);
    assert!(intro.act.is_some());

    // End the root: everything in the tree goes inactive at once.
    let out = b.cli_env(&["task", "complete", &root_task], &env);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["ended_descendants"], 1);
    for tok in [&root_token, &child_token, &tool_token] {
        assert!(!b.active(tok).await);
    }
    assert!(stdout(&b.cli(&["task", "tree", &root_task])).contains("revoked"));
    assert!(b.admin().audit_verify().await.unwrap().valid);
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// With server nonces on, the CLI (through writ-client) learns the nonce
/// from the first refusal and retries: attest, start and exchange all work.
#[tokio::test]
async fn the_cli_follows_server_nonces() {
    let b = Broker::start_with(crate::harness::Opts {
        extra: vec!["--dpop-nonces".into()],
        ..Default::default()
    });
    let key = b.data_dir().join("k.pem");
    assert!(
        b.cli(&["dpop", "keygen", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    let env = [("WRIT_DPOP_KEY", key.to_str().unwrap())];
    let jt = stdout(&b.cli(&["agent", "join-token", "demo-agent", "--field", "join_token"]))
        .trim()
        .to_owned();
    let out = b.cli_env(
        &[
            "attest",
            "demo-agent",
            "--join-token",
            &jt,
            "--field",
            "access_token",
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    let inst = stdout(&out).trim().to_owned();
    let env2 = [
        ("WRIT_DPOP_KEY", key.to_str().unwrap()),
        ("WRIT_INSTANCE_TOKEN", inst.as_str()),
    ];
    let out = b.cli_env(
        &[
            "task",
            "start",
            "--intent",
            "read",
            "--cap",
            "tickets:read",
            "--field",
            "access_token",
        ],
        &env2,
    );
    assert!(out.status.success(), "{out:?}");
    let task_token = stdout(&out).trim().to_owned();
    let out = b.cli_env(
        &[
            "token",
            "exchange",
            "--subject-token",
            &task_token,
            "--audience",
            "tickets",
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["token_type"], "DPoP");
}
