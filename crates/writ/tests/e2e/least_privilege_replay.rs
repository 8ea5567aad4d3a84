//! The least-privilege replay decides on the facts the live decisions saw:
//! an AuthZEN decision an enforcement point enforced is use and is
//! replayed from the context its record keeps; a gateway call's query
//! (sensitive values redacted) and MCP arguments (their shape) are
//! recorded, so a live policy about them replays to the recorded verdict,
//! and a decision whose verdict could turn on a redacted value (the set
//! reads that part) is not replayed but counted.

use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway::{register_http_tool, upstream, wait_for_tool};
use crate::harness::{ADMIN, Broker, Opts, eventually, json as out_json};

const SET: &str = r#"
@id("broad-tasks")
permit (principal, action in [Action::"StartTask", Action::"ExchangeToken"], resource);

@id("broad-calls")
permit (principal, action == Action::"CallTool", resource);

@id("no-debug")
forbid (principal, action == Action::"CallTool", resource)
when { context.request.query like "*debug=1*" };

@id("no-force")
forbid (principal, action == Action::"CallTool", resource)
when { context.request has arguments && context.request.arguments like "*\"force\":true*" };

@id("no-etc")
forbid (principal, action == Action::"CallTool", resource)
when { context.request has arguments && context.request.arguments like "*/etc/*" };
"#;

async fn evaluate(b: &Broker, q: &Value) -> bool {
    let r = b
        .http()
        .post(b.url("/access/v1/evaluation"))
        .bearer_auth(ADMIN)
        .json(q)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let v: Value = r.json().await.unwrap();
    v["decision"].as_bool().unwrap()
}

fn report(b: &Broker) -> Value {
    let out = b.cli(&[
        "report",
        "least-privilege",
        "--since",
        "1h",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_json(&out)
}

fn crm(r: &Value) -> &Value {
    r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "reporter")
        .unwrap_or_else(|| panic!("{r}"))["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "crm")
        .unwrap_or_else(|| panic!("{r}"))
}

#[tokio::test]
async fn least_privilege_replay_decides_on_the_recorded_query_arguments_and_authzen_context() {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("set.cedar"), SET).unwrap();
    let b = Broker::start_with(Opts {
        policy_dir: Some(policies.path().to_owned()),
        ..Opts::default()
    });
    let up = upstream().await;
    register_http_tool(&b, "crm", &up.url).await;
    wait_for_tool(&b.gateway, "crm").await;
    b.agent("reporter", &[]).await;
    let inst = b.attest("reporter").await.access_token;
    let t = b.start_task(&inst, &["crm:read,write"]).await.unwrap();

    // Through the gateway: a call with a credential in its query, and one
    // the live `no-debug` forbid refuses for its query.
    let tok = b
        .anon()
        .exchange(&t.access_token, None, Some("crm"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let get = |url: String| {
        let tok = tok.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let secret_query = format!("{}/crm/customers?page=2&api_key=SECRETVALUE123", b.gateway);
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(secret_query.clone()).await == 200
        })
        .await
    );
    assert_eq!(
        get(format!("{}/crm/customers?debug=1", b.gateway)).await,
        403
    );

    // AuthZEN: an enforcement point of its own enforces these answers.
    let q = |path: &str, query: &str, arguments: Value, enforced: bool| {
        json!({
            "subject": {"type": "agent", "id": "reporter"},
            "action": {"name": "CallTool"},
            "resource": {"type": "tool", "id": "crm", "properties": {"scopes": ["read"]}},
            "context": {"task": t.task_id, "enforced": enforced, "request": {
                "method": "POST", "path": path, "query": query,
                "mcp_method": "tools/call", "mcp_tool": "write_note", "arguments": arguments}}
        })
    };
    assert!(evaluate(&b, &q("/mcp", "page=1", json!({"force": false}), true)).await);
    assert!(!evaluate(&b, &q("/mcp", "", json!({"force": true}), true)).await);
    // A question nobody enforced is not use.
    assert!(
        evaluate(
            &b,
            &q(
                "/never-enforced",
                "session=SESSIONSECRET999",
                json!({"text": "NOTETEXT"}),
                false
            )
        )
        .await
    );
    assert!(!evaluate(&b, &q("/mcp", "", json!({"file": "/etc/passwd"}), true)).await);

    // The records keep the query and the arguments' shape, never a value.
    // The gateway's decisions reach the audit by its delivery spool, a
    // moment after the calls: read until they are there.
    let read_audit = || async {
        b.http()
            .get(b.url("/v1/audit?limit=1000"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(15), || async {
            read_audit().await.contains("api_key=[redacted]")
        })
        .await,
        "the gateway's decisions reached the audit"
    );
    let audit = read_audit().await;
    for secret in [
        "SECRETVALUE123",
        "SESSIONSECRET999",
        "NOTETEXT",
        "/etc/passwd",
    ] {
        assert!(
            !audit.contains(secret),
            "recorded_request_never_holds_a_secret_value: {secret}"
        );
    }
    assert!(audit.contains("api_key=[redacted]"), "{audit}");
    assert!(audit.contains("page=2"), "{audit}");
    assert!(audit.contains("evaluated"), "{audit}");

    let r = eventually(Duration::from_secs(15), || async {
        let r = report(&b);
        crm(&r)["calls"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["path"] == "/customers" && c["denied"] == 1)
        })
    })
    .await;
    assert!(r, "the gateway's calls never reached the report");
    let r = report(&b);
    let c = crm(&r);
    // Enforced AuthZEN decisions are use; the unenforced question is not.
    assert_eq!(c["authzen_allowed"], 1, "{c}");
    assert_eq!(c["authzen_denied"], 2, "{c}");
    let calls = c["calls"].as_array().unwrap();
    assert!(
        calls
            .iter()
            .any(|x| x["path"] == "/mcp" && x["mcp_tool"] == "write_note" && x["allowed"] == 1),
        "{c}"
    );
    assert!(!calls.iter().any(|x| x["path"] == "/never-enforced"), "{c}");
    assert_eq!(c["used"], json!(["read"]), "{c}");

    let replay = &r["replay"];
    // The live set replayed on the recorded facts gives every recorded
    // verdict: the query and argument forbids fire again in replay.
    assert_eq!(replay["live_checked"], replay["live_agreed"], "{replay}");
    assert!(replay["live_checked"].as_u64().unwrap() >= 5, "{replay}");
    // The call with a credential in its query and the `/etc/` refusal:
    // their sets read the parts their records redacted.
    assert_eq!(replay["redacted_dependent"], 2, "{replay}");
    assert_eq!(replay["legitimate_allow_to_deny"], 0, "{replay}");
    assert_eq!(replay["deny_to_allow"], 0, "{replay}");
    let proposal = &r["proposal"];
    assert_eq!(proposal["valid"], true, "{proposal}");
    let permits = proposal["files"]["least-privilege.cedar"].as_str().unwrap();
    assert!(permits.contains("write_note"), "{permits}");

    // Made live: the enforced AuthZEN call still passes, the unseen one
    // does not.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("proposal");
    let out = b.cli(&[
        "report",
        "least-privilege",
        "--since",
        "1h",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = b.cli(&["policy", "push", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(evaluate(&b, &q("/mcp", "page=1", json!({"force": false}), true)).await);
    assert!(!evaluate(&b, &q("/never-enforced", "", json!({}), true)).await);
}

const EXCEPTIONS: &str = r#"
@id("broad-tasks")
@exception("allowed")
permit (principal, action in [Action::"StartTask", Action::"ExchangeToken"], resource);

@id("broad-calls")
permit (principal, action == Action::"CallTool", resource);
"#;

fn long_read(justification: Option<&str>, ttl: Option<u64>) -> writ_core::api::StartTask {
    writ_core::api::StartTask {
        intent: "month-end close".into(),
        capabilities: vec![writ_core::Capability::parse_short("crm:read").unwrap()],
        on_behalf_of: None,
        ttl,
        justification: justification.map(str::to_owned),
    }
}

/// Traffic that ran under an exception is carried into the proposal as an
/// `@exception("allowed")` permit (still held for approval), with test
/// cases for it, and the report lists the exception and its use.
#[tokio::test]
async fn least_privilege_proposal_carries_the_exceptions_traffic_used() {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("set.cedar"), EXCEPTIONS).unwrap();
    let b = Broker::start_with(Opts {
        policy_dir: Some(policies.path().to_owned()),
        extra: vec!["--max-task-ttl".into(), "3600".into()],
        ..Opts::default()
    });
    let up = upstream().await;
    register_http_tool(&b, "crm", &up.url).await;
    wait_for_tool(&b.gateway, "crm").await;
    b.agent("closer", &[]).await;
    let inst = b.attest("closer").await.access_token;
    let agent = b.as_token(&inst);
    let p = match agent
        .start_task(&long_read(Some("month-end close"), Some(4 * 3600)))
        .await
        .unwrap_err()
    {
        writ_client::ClientError::Pending(p) => p,
        other => panic!("expected a held exception, got {other}"),
    };
    b.admin()
        .decide_approval(&p.approval_id, true, "finance sign-off")
        .await
        .unwrap();
    let t = agent.heartbeat(&p.task_id).await.unwrap();
    let tok = b
        .anon()
        .exchange(&t.access_token, None, Some("crm"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let ledger = format!("{}/crm/ledger", b.gateway);
    assert!(
        eventually(Duration::from_secs(10), || async {
            reqwest::Client::new()
                .get(&ledger)
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap()
                .status()
                == 200
        })
        .await
    );

    let r = eventually(Duration::from_secs(15), || async {
        report(&b)["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["agent"] == "closer"))
            .is_some_and(|a| a["exceptions"][0]["calls"].as_u64() >= Some(1))
    })
    .await;
    assert!(r, "the exception's calls never reached the report");
    let r = report(&b);
    let closer = r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "closer")
        .unwrap();
    let e = &closer["exceptions"][0];
    assert_eq!(e["task"], p.task_id.as_str(), "{e}");
    assert_eq!(e["tools"], json!(["crm"]), "{e}");
    assert_eq!(e["ttl"], 4 * 3600, "{e}");
    assert_eq!(e["approved"], true, "{e}");

    let proposal = &r["proposal"];
    assert_eq!(proposal["valid"], true, "{proposal}");
    assert!(
        proposal["permits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "lp:closer:crm:start-exception"),
        "{proposal}"
    );
    let text = proposal["files"]["least-privilege.cedar"].as_str().unwrap();
    assert!(text.contains("@exception(\"allowed\")"), "{text}");
    let cases = proposal["tests"]["cases"].as_array().unwrap();
    assert!(
        cases
            .iter()
            .any(|c| c["exception"] == true && c["expect"] == "needs_approval"),
        "{cases:?}"
    );
    // Replayed, the approved exception passes again (held for approval,
    // as every exception is): it is not listed as an allow turned deny.
    let replay = &r["replay"];
    assert_eq!(replay["deny_to_allow"], 0, "{replay}");
    assert!(
        !replay["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "StartTask" && c["agent"] == "closer"),
        "{replay}"
    );

    // The generated cases pass against the generated set, and, made live,
    // the exception is still possible (held), a plain start never seen is
    // not.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("proposal");
    let out = b.cli(&[
        "report",
        "least-privilege",
        "--since",
        "1h",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tests = out_dir.join("least-privilege.tests.json");
    let out = b.cli(&["policy", "test", tests.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = b.cli(&["policy", "push", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = agent
        .start_task(&long_read(Some("next month"), Some(4 * 3600)))
        .await
        .unwrap_err();
    assert!(
        matches!(again, writ_client::ClientError::Pending(_)),
        "{again}"
    );
    let plain = agent.start_task(&long_read(None, None)).await.unwrap_err();
    assert_eq!(plain.status(), Some(403), "{plain}");
}
