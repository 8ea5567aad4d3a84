//! Hot, versioned policy sets, and the AuthZEN decision API.

use std::time::Duration;

use serde_json::json;

use crate::harness::{ADMIN, Broker, Opts, eventually, json};

const READS: &str = r#"@id("reads") permit (principal, action == Action::"StartTask", resource) when { ["read"].containsAll(context.scopes) };"#;
const WRITES: &str = r#"@id("writes") permit (principal, action == Action::"StartTask", resource) when { ["read", "write"].containsAll(context.scopes) };"#;

fn dir_broker() -> (Broker, tempfile::TempDir) {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("base.cedar"), READS).unwrap();
    let b = Broker::start_with(Opts {
        dev: true,
        policy_dir: Some(policies.path().to_owned()),
        ..Default::default()
    });
    (b, policies)
}

#[tokio::test]
async fn a_policy_edit_goes_live_without_restart_and_a_bad_one_never_does() {
    let (b, tmp) = dir_broker();
    let dir = tmp.path();
    let inst = b.attest("demo-agent").await;
    let before = b.admin().policies().await.unwrap().version;
    let e = b
        .start_task(&inst.access_token, &["tickets:write"])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));

    // An invalid file: refused, audited, and the live set stays.
    std::fs::write(
        dir.join("broken.cedar"),
        "permit (principal, action, resource) when { context.nope };",
    )
    .unwrap();
    let refused = eventually(Duration::from_secs(5), || async {
        b.admin()
            .audit_last(20)
            .await
            .unwrap()
            .records
            .iter()
            .any(|r| {
                r.event.contains("policy_load")
                    && r.event.contains("failure")
                    && r.event.contains("broken.cedar")
            })
    })
    .await;
    assert!(refused, "the refused set was not audited");
    assert_eq!(b.admin().policies().await.unwrap().version, before);
    std::fs::remove_file(dir.join("broken.cedar")).unwrap();

    // A valid edit: live within a couple of seconds, named in decisions.
    std::fs::write(dir.join("writes.cedar"), WRITES).unwrap();
    let live = eventually(Duration::from_secs(5), || async {
        b.admin().policies().await.unwrap().version != before
    })
    .await;
    assert!(live, "the edit did not go live");
    let t = b
        .start_task(&inst.access_token, &["tickets:write"])
        .await
        .unwrap();
    let task = b.admin().task(&t.task_id).await.unwrap();
    let now_version = b.admin().policies().await.unwrap().version;
    assert_eq!(task.policy_version, now_version);

    let history = json(&b.cli(&["policy", "history"]));
    let versions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions.first(), Some(&now_version.as_str()));
    assert!(versions.contains(&before.as_str()));
}

#[tokio::test]
async fn policy_push_validates_and_survives_restart() {
    let mut b = Broker::start_with(Opts {
        dev: false,
        policy_dir: None,
        extra: vec!["--sweep-interval-ms".into(), "50".into()],
    });
    // Not dev: take the bootstrap admin token from the first start's output.
    let token = b
        .stdout()
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("writ_admin_")
                .map(|t| format!("writ_admin_{t}"))
        })
        .expect("bootstrap admin token printed");
    let env = [("WRIT_TOKEN", token.as_str())];
    let dir = b.data_dir().join("p");
    std::fs::create_dir(&dir).unwrap();

    std::fs::write(
        dir.join("bad.cedar"),
        "permit (principal, action, resource)\nwhen { context.nope == 1 };",
    )
    .unwrap();
    let out = b.cli_env(&["policy", "validate", dir.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.cedar:2:"),
        "{out:?}"
    );
    let out = b.cli_env(&["policy", "push", dir.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let empty_version = json(&b.cli_env(&["policy", "show"], &env))["version"]
        .as_str()
        .unwrap()
        .to_owned();

    std::fs::remove_file(dir.join("bad.cedar")).unwrap();
    std::fs::write(dir.join("reads.cedar"), READS).unwrap();
    let out = b.cli_env(&["policy", "validate", dir.to_str().unwrap()], &env);
    assert!(out.status.success(), "{out:?}");
    let out = b.cli_env(&["policy", "push", dir.to_str().unwrap()], &env);
    assert!(out.status.success(), "{out:?}");
    let pushed = json(&out)["version"].as_str().unwrap().to_owned();
    assert_ne!(pushed, empty_version);

    b.restart();
    let shown = json(&b.cli_env(&["policy", "show"], &env));
    assert_eq!(
        shown["version"],
        pushed.as_str(),
        "the pushed set is live after a restart"
    );
}

#[tokio::test]
async fn authzen_evaluations_for_enforcement_points() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let conf: serde_json::Value = b
        .http()
        .get(b.url("/.well-known/authzen-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        conf["access_evaluation_endpoint"],
        b.url("/access/v1/evaluation")
    );

    let eval = |body: serde_json::Value, auth: Option<&str>| {
        let mut r = b.http().post(b.url("/access/v1/evaluation")).json(&body);
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        r.send()
    };
    let read = json!({
        "subject": {"type": "agent", "id": "demo-agent"},
        "action": {"name": "StartTask"},
        "resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read"]}},
        "context": {"intent": "summarise"}
    });
    let r = eval(read.clone(), None).await.unwrap();
    assert_eq!(r.status(), 401, "only authenticated enforcement points");
    let d: serde_json::Value = eval(read.clone(), Some(ADMIN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], true);
    assert_eq!(d["context"]["determining_policies"], json!(["read-only"]));
    assert!(
        d["context"]["policy_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // A gateway credential is an enforcement point too, and CallTool
    // decides a request with its facts (method, path, MCP tool, arguments).
    let out = b.cli(&["gateway", "register", "pep-1", "--field", "token"]);
    assert!(out.status.success(), "{out:?}");
    let pep = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_owned();
    let call = |method: &str, args: serde_json::Value| {
        json!({
            "subject": {"type": "agent", "id": "demo-agent"},
            "action": {"name": "CallTool"},
            "resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read"]}},
            "context": {"request": {"method": method, "path": "/tickets/1", "mcp_method": "tools/call",
                                    "mcp_tool": "read", "arguments": args}}
        })
    };
    let d: serde_json::Value = eval(call("POST", json!({"q": "open"})), Some(&pep))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], true, "{d}");
    assert_eq!(
        d["context"]["determining_policies"],
        json!(["gateway-mcp-calls"])
    );
    let d: serde_json::Value = eval(
        call("POST", json!({"key": "-----BEGIN PRIVATE KEY-----"})),
        Some(&pep),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(d["decision"], false);
    assert_eq!(
        d["context"]["determining_policies"],
        json!(["no-private-keys-in-arguments"])
    );
    // A gateway credential may introspect (RFC 7662), as an admin may.
    let intro: serde_json::Value = b
        .http()
        .post(b.url("/oauth2/introspect"))
        .bearer_auth(&pep)
        .form(&[("token", inst.access_token.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(intro["active"], true, "{intro}");
    let mut no_request = call("GET", json!({}));
    no_request["context"] = json!({});
    let d: serde_json::Value = eval(no_request, Some(&pep))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], false, "CallTool without its request");

    let mut delete = read.clone();
    delete["resource"]["properties"]["scopes"] = json!(["delete"]);
    delete["subject"] = json!({"type": "instance", "id": inst.instance_id.as_str()});
    let d: serde_json::Value = eval(delete, Some(ADMIN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["determining_policies"], json!(["no-deletes"]));

    let mut unknown = read.clone();
    unknown["resource"]["id"] = json!("nope");
    let d: serde_json::Value = eval(unknown, Some(ADMIN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], false);
    assert!(
        d["context"]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown tool")
    );

    // AuthZEN receivers ignore fields they do not know: the same question
    // with one more field gets the same answer.
    let mut extra = read.clone();
    extra["colour"] = json!("red");
    extra["subject"]["colour"] = json!("red");
    let r = eval(extra, Some(ADMIN)).await.unwrap();
    assert_eq!(r.status(), 200);
    let d: serde_json::Value = r.json().await.unwrap();
    assert_eq!(d["decision"], true);
    assert_eq!(d["context"]["determining_policies"], json!(["read-only"]));

    // Batch: defaults from the top level, per-item overrides, and semantics.
    let batch = |semantic: &str| {
        json!({
            "subject": {"type": "agent", "id": "demo-agent"},
            "action": {"name": "StartTask"},
            "evaluations": [
                {"resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["delete"]}}},
                {"resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read"]}}},
            ],
            "options": {"evaluations_semantic": semantic}
        })
    };
    let post = |body: serde_json::Value| {
        b.http()
            .post(b.url("/access/v1/evaluations"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let all: serde_json::Value = post(batch("execute_all"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let decisions: Vec<bool> = all["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_bool().unwrap())
        .collect();
    assert_eq!(decisions, [false, true]);
    let first_deny: serde_json::Value = post(batch("deny_on_first_deny"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first_deny["evaluations"].as_array().unwrap().len(), 1);

    let records = b.admin().audit(0, 1000).await.unwrap().records;
    let decisions: Vec<_> = records
        .iter()
        .filter(|r| r.event.contains("\"kind\":\"decision\""))
        .collect();
    // Ten: the question with unknown fields is answered (and audited) too.
    assert_eq!(decisions.len(), 10, "every decision is audited");
    assert_eq!(
        decisions
            .iter()
            .filter(|r| r.event.contains("\"actor\":\"gateway:pep-1\""))
            .count(),
        3,
        "each names the enforcement point that asked"
    );
}

#[tokio::test]
async fn tool_tags_and_recent_behaviour_reach_policy() {
    let b = Broker::start();
    let out = b.cli(&[
        "tool",
        "register",
        "crm",
        "--audience",
        "https://crm.example",
        "--scope",
        "read",
        "--attr",
        "data=user",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["attributes"]["data"], "user");
    let inst = b.attest("demo-agent").await;

    let writ_client::ClientError::Api(p) = b
        .start_task(&inst.access_token, &["crm:read"])
        .await
        .unwrap_err()
    else {
        panic!("not a policy denial")
    };
    assert_eq!(p.determining_policies, ["user-data-needs-a-human"]);

    // Nine more denials (ten in five minutes): the example pack's rule
    // approval-after-many-denials holds the agent's next tasks for a
    // person (context.behaviour.requires_approval), even a read.
    for _ in 0..9 {
        assert!(
            b.start_task(&inst.access_token, &["tickets:delete"])
                .await
                .is_err()
        );
    }
    let mut held = None;
    for _ in 0..100 {
        match b.start_task(&inst.access_token, &["tickets:read"]).await {
            Err(writ_client::ClientError::Pending(p)) => {
                held = Some(p);
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let held = held.expect("the agent's tasks were never held for approval");
    let records = b.admin().audit(0, 10_000).await.unwrap().records;
    assert!(
        records
            .iter()
            .any(|r| r.event.contains(held.task_id.as_str())
                && r.event.contains("held-after-a-rule")),
        "the hold is not the rule's"
    );
    assert!(
        records.iter().any(|r| r.event.contains("\"rule_fired\"")
            && r.event.contains("approval-after-many-denials")),
    );
}

/// The shipped example pack passes its own tests; a wrong expectation fails
/// with a diff and exit code 3.
#[test]
fn policy_test_runs_the_example_pack_and_reports_mismatches() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["policy", "test", &format!("{root}/tests.toml")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "policy_dir = {root:?}\n[[case]]\nname = \"wrong\"\nagent = {{ name = \"a\" }}\ntool = {{ name = \"t\", scopes = [\"delete\"] }}\nscopes = [\"delete\"]\nexpect = \"allow\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["policy", "test", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("FAIL wrong")
            && text.contains("expected: allow")
            && text.contains("no-deletes"),
        "{text}"
    );

    let out = std::process::Command::new(crate::harness::BIN)
        .args([
            "policy",
            "explain",
            &format!("{root}/tests.toml"),
            "--case",
            "nobody deletes",
        ])
        .output()
        .unwrap();
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e[0]["tools"][0]["forbids"], json!(["no-deletes"]));
}

#[tokio::test]
async fn shadow_mode_records_differences_without_changing_decisions() {
    let mut b = Broker::start();
    let dir = b.data_dir().join("candidate");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("strict.cedar"),
        r#"@id("nothing") forbid (principal, action, resource);"#,
    )
    .unwrap();
    let out = b.cli(&["policy", "shadow", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let candidate = json(&out)["version"].as_str().unwrap().to_owned();
    // The shadow set is kept across restarts.
    b.restart();

    let inst = b.attest("demo-agent").await;
    // The live set decides: allowed.
    assert!(
        b.start_task(&inst.access_token, &["tickets:read"])
            .await
            .is_ok()
    );
    let metrics = b
        .http()
        .get(b.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("writ_shadow_differences_total 1"),
        "{metrics}"
    );
    let diff = b
        .admin()
        .audit_last(10)
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.event)
        .find(|e| e.contains("policy_shadow") && e.contains("failure"))
        .expect("a shadow difference record");
    assert!(diff.contains(&candidate), "{diff}");

    assert!(b.cli(&["policy", "shadow", "--clear"]).status.success());
    assert!(
        b.start_task(&inst.access_token, &["tickets:read"])
            .await
            .is_ok()
    );
    let metrics = b
        .http()
        .get(b.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("writ_shadow_differences_total 1"),
        "{metrics}"
    );
}

/// AuthZEN refuses what the broker refuses before policy: an ended task,
/// scopes the task does not hold, a quarantined agent.
#[tokio::test]
async fn authzen_respects_task_state_and_quarantine() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let t = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    let ask = |scopes: serde_json::Value| {
        json!({
            "subject": {"type": "instance", "id": inst.instance_id.as_str()},
            "action": {"name": "ExchangeToken"},
            "resource": {"type": "tool", "id": "tickets", "properties": {"scopes": scopes}},
            "context": {"task": t.task_id.as_str()}
        })
    };
    let post = |body: serde_json::Value| {
        b.http()
            .post(b.url("/access/v1/evaluation"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let d: serde_json::Value = post(ask(json!(["read"])))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], true, "{d}");
    let d: serde_json::Value = post(ask(json!(["comment"])))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], false, "scopes the task does not hold");
    b.as_token(&inst.access_token)
        .complete(&t.task_id)
        .await
        .unwrap();
    let d: serde_json::Value = post(ask(json!(["read"])))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], false, "an ended task");
    b.admin()
        .quarantine(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    let d: serde_json::Value = post(json!({
        "subject": {"type": "agent", "id": "demo-agent"},
        "action": {"name": "StartTask"},
        "resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read"]}}
    }))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(d["decision"], false);
    assert!(
        d["context"]["reason"]
            .as_str()
            .unwrap()
            .contains("quarantined")
    );
}
