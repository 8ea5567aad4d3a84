//! Operators (issue 22): named credentials with roles, approvals by name,
//! and the lifecycle of agents and tools, through the real binary.

use writ_client::ClientError;
use writ_core::Capability;
use writ_core::api::{ApprovalStatus, Role, StartTask, TaskStatus, UpdateTool};

use crate::harness::{Broker, Opts, json, stdout};

/// A new credential of `role`, made with the CLI: only its secret printed.
fn create(b: &Broker, name: &str, role: &str) -> String {
    let out = b.cli(&[
        "admin", "token", "create", name, "--role", role, "--field", "token",
    ]);
    assert!(out.status.success(), "{out:?}");
    let token = stdout(&out).trim().to_owned();
    assert!(token.starts_with("writ_op_"), "{token}");
    token
}

fn refused(e: ClientError, status: u16, needed: &str) {
    assert_eq!(e.status(), Some(status), "{e}");
    if status == 403 {
        assert!(e.to_string().contains(needed), "{e}");
    }
}

#[tokio::test]
async fn an_auditor_reads_the_audit_but_cannot_register_an_agent() {
    let b = Broker::start();
    let token = create(&b, "audrey", "auditor");
    let env = [("WRIT_TOKEN", token.as_str())];

    let out = b.cli_env(&["audit", "tail", "-n", "20"], &env);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("operator:dev"),
        "the creation names who made it: {out:?}"
    );
    let out = b.cli_env(&["audit", "verify"], &env);
    assert!(out.status.success(), "{out:?}");

    let out = b.cli_env(&["agent", "register", "sneaky"], &env);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403") && err.contains("this needs role operator or admin"),
        "{err}"
    );
    refused(
        b.as_token(&token).agents().await.unwrap_err(),
        403,
        "has role auditor",
    );
    assert!(b.admin().agent(&"sneaky".parse().unwrap()).await.is_err());
    // The listing shows the role, never the secret.
    let out = b.cli(&["admin", "token", "list"]);
    let listed = stdout(&out);
    assert!(
        listed.contains("\"auditor\"") && !listed.contains(&token),
        "{listed}"
    );
}

const APPROVAL_POLICY: &str = r#"
@id("writes-need-approval")
@approval("required")
permit (principal, action == Action::"StartTask", resource)
when { context.scopes.contains("write") };
"#;

#[tokio::test]
async fn an_approver_approves_a_pending_task_and_is_refused_an_admin_action() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), APPROVAL_POLICY).unwrap();
    let b = Broker::start_with(Opts {
        dev: true,
        policy_dir: Some(dir.path().to_owned()),
        extra: vec![],
    });
    let token = create(&b, "ann", "approver");
    let ann = b.as_token(&token);

    let inst = b.attest("demo-agent").await;
    let pending = match b
        .as_token(&inst.access_token)
        .start_task(&StartTask {
            intent: "close stale tickets".into(),
            capabilities: vec![Capability::parse_short("tickets:write").unwrap()],
            on_behalf_of: Some("user:alice".into()),
            ttl: None,
            justification: None,
        })
        .await
    {
        Err(ClientError::Pending(p)) => p,
        other => panic!("expected 202 pending, got {other:?}"),
    };
    let listed = ann.approvals(false).await.unwrap();
    assert_eq!(listed.len(), 1);
    let decided = ann
        .decide_approval(&pending.approval_id, true, "checked with alice")
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("operator:ann"));
    let started = b
        .as_token(&inst.access_token)
        .heartbeat(&pending.task_id)
        .await
        .unwrap();
    assert!(!started.access_token.is_empty());

    // The audit names her, not "admin".
    let page = b.admin().audit_last(50).await.unwrap();
    let text = serde_json::to_string(&page).unwrap();
    assert!(
        text.contains(r#"\"kind\":\"approval\""#) && text.contains(r#"\"actor\":\"operator:ann\""#),
        "{text}"
    );

    // Refused: an admin action, an operator action, a higher credential,
    // the audit (another role's duty).
    refused(
        ann.rotate_keys().await.unwrap_err(),
        403,
        "this needs role admin",
    );
    refused(
        ann.quarantine(&"demo-agent".parse().unwrap())
            .await
            .unwrap_err(),
        403,
        "operator or admin",
    );
    refused(
        ann.create_admin_token("ann-root", Role::Admin)
            .await
            .unwrap_err(),
        403,
        "this needs role admin",
    );
    refused(
        ann.audit_last(5).await.unwrap_err(),
        403,
        "auditor or admin",
    );
    assert!(
        !b.admin()
            .admin_tokens()
            .await
            .unwrap()
            .iter()
            .any(|c| c.name == "ann-root")
    );
}

#[tokio::test]
async fn a_credential_is_rotated_and_revoked_and_refused_at_once() {
    rotated_and_revoked(Broker::start()).await;
}

#[tokio::test]
async fn a_credential_is_rotated_and_revoked_on_postgres() {
    if let Some(b) = on_postgres() {
        rotated_and_revoked(b).await;
    }
}

/// A dev broker on a fresh PostgreSQL database (`None`: skipped).
fn on_postgres() -> Option<Broker> {
    let url = crate::harness::postgres_database()?;
    Some(Broker::start_with(Opts {
        extra: vec!["--store".into(), url],
        ..Opts::default()
    }))
}

async fn rotated_and_revoked(b: Broker) {
    let old = create(&b, "ops-bot", "operator");
    assert!(b.as_token(&old).agents().await.is_ok());

    let out = b.cli(&["admin", "token", "rotate", "ops-bot"]);
    assert!(out.status.success(), "{out:?}");
    let rotated = json(&out);
    assert_eq!(rotated["role"], "operator");
    let new = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    refused(b.as_token(&old).agents().await.unwrap_err(), 401, "");
    assert!(b.as_token(&new).agents().await.is_ok());
    // Stored hashed: no file of the data directory holds either secret.
    for entry in std::fs::read_dir(b.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for secret in [&old, &new] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds a credential in the clear",
                    path.display()
                );
            }
        }
    }

    let out = b.cli(&["admin", "token", "revoke", "ops-bot"]);
    assert!(out.status.success(), "{out:?}");
    refused(b.as_token(&new).agents().await.unwrap_err(), 401, "");

    // Bad names and roles are refused and change nothing.
    for bad in [["Bad Name", "auditor"], ["ok-name", "root"]] {
        let out = b.cli(&["admin", "token", "create", bad[0], "--role", bad[1]]);
        assert!(!out.status.success(), "{out:?}");
    }
    let out = b.cli(&["admin", "token", "list"]);
    let names: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["dev"]);
    let out = b.cli(&["audit", "tail", "-n", "20"]);
    assert!(stdout(&out).contains("admin_token_rotate"), "{out:?}");
}

#[tokio::test]
async fn a_tool_with_a_live_task_is_updated_and_deleted_and_its_tokens_die() {
    tool_and_agent_lifecycle(Broker::start()).await;
}

#[tokio::test]
async fn a_tool_with_a_live_task_is_updated_and_deleted_on_postgres() {
    if let Some(b) = on_postgres() {
        tool_and_agent_lifecycle(b).await;
    }
}

async fn tool_and_agent_lifecycle(b: Broker) {
    let inst = b.attest("demo-agent").await;
    let task = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    let agent = b.as_token(&task.access_token);
    let tool_token = agent
        .exchange(
            &task.access_token,
            None,
            Some("https://tickets.example.com"),
            Some("read"),
        )
        .await
        .unwrap()
        .access_token;
    assert!(b.active(&tool_token).await);

    // Updated (an attribute, a scope added): the task lives on.
    let before = b
        .admin()
        .tools()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name.as_str() == "tickets")
        .unwrap();
    let mut scopes = before.scopes.clone();
    scopes.push("archive".parse().unwrap());
    let updated = b
        .admin()
        .update_tool(
            "tickets",
            &UpdateTool {
                scopes: Some(scopes),
                attributes: Some([("data".to_owned(), "internal".to_owned())].into()),
                upstream: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.audience, before.audience);
    assert_eq!(updated.attributes["data"], "internal");
    assert!(b.active(&task.access_token).await);
    assert!(b.active(&tool_token).await);
    // An update cannot change the audience (unknown field), nor be empty of scopes.
    let r = b
        .http()
        .patch(b.url("/v1/tools/tickets"))
        .bearer_auth(crate::harness::ADMIN)
        .json(&serde_json::json!({"audience": "https://evil.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let out = b.cli(&["tool", "update", "tickets", "--attr", "bad key=x"]);
    assert!(!out.status.success(), "{out:?}");

    // Deleted with the CLI: the task ends, its tokens die at once.
    let out = b.cli(&["tool", "delete", "tickets"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["ended_tasks"], 1);
    assert!(
        !b.active(&tool_token).await,
        "the tool token outlived its tool"
    );
    assert!(!b.active(&task.access_token).await);
    let t = b.admin().task(&task.task_id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Revoked);
    assert!(
        b.admin()
            .tools()
            .await
            .unwrap()
            .iter()
            .all(|t| t.name.as_str() != "tickets")
    );
    let r = b
        .http()
        .get(b.url("/v1/tools/tickets"))
        .bearer_auth(crate::harness::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // A new task on it is refused; the name stays reserved; the audit
    // keeps the name and who deleted it.
    assert!(
        b.start_task(&inst.access_token, &["tickets:read"])
            .await
            .is_err()
    );
    let out = b.cli(&["audit", "tail", "-n", "30"]);
    let audit = stdout(&out);
    assert!(
        audit.contains("tool_delete") && audit.contains("operator:dev"),
        "{audit}"
    );

    // An agent is updated, then deleted: its instance dies with it.
    let out = b.cli(&["agent", "update", "demo-agent", "--attr", "tier=low"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["attributes"]["tier"], "low");
    assert!(b.active(&inst.access_token).await);
    let out = b.cli(&["agent", "delete", "demo-agent"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!b.active(&inst.access_token).await);
    let out = b.cli(&["agent", "show", "demo-agent"]);
    assert!(!out.status.success(), "{out:?}");
}
