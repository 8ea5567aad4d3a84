//! Outcomes beyond allow and deny: approvals, lifetime caps, exceptions.

use std::time::Duration;

use writ_client::ClientError;
use writ_core::Capability;
use writ_core::api::{ApprovalStatus, StartTask, TaskStatus};

use crate::harness::{Broker, Opts, eventually, json};

const POLICIES: &str = r#"
@id("reads")
permit (principal, action == Action::"StartTask", resource)
when { ["read"].containsAll(context.scopes) && !context.exception };

@id("writes-need-approval")
@approval("required")
@max_ttl("600")
permit (principal, action == Action::"StartTask", resource)
when { context.scopes.contains("write") && !context.exception };

@id("long-reads")
@exception("allowed")
permit (principal, action == Action::"StartTask", resource)
when { context.exception && ["read"].containsAll(context.scopes) };

@id("exchange")
permit (principal, action == Action::"ExchangeToken", resource);
"#;

/// Exceptions watched: used twice within a minute, and within a day of
/// the end (so at once, for a four-hour exception).
const EXCEPTION_RULES: &str = r#"
[[rule]]
id = "exception-used-twice"
on = "exception_used"
threshold = 2
window_secs = 60
actions = ["alert"]

[[rule]]
id = "exception-ends-within-a-day"
on = "exception_expiring"
before_secs = 86400
actions = ["alert"]
"#;

fn broker(extra: &[&str]) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), POLICIES).unwrap();
    std::fs::write(dir.path().join("x.rules.toml"), EXCEPTION_RULES).unwrap();
    let mut args: Vec<String> = vec!["--max-task-ttl".into(), "3600".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let b = Broker::start_with(Opts {
        dev: true,
        policy_dir: Some(dir.path().to_owned()),
        extra: args,
    });
    (b, dir)
}

fn req(cap: &str, ttl: Option<u64>, justification: Option<&str>) -> StartTask {
    StartTask {
        intent: "reconcile the ledger".into(),
        capabilities: vec![Capability::parse_short(cap).unwrap()],
        on_behalf_of: Some("user:alice".into()),
        ttl,
        justification: justification.map(str::to_owned),
    }
}

fn pending(e: ClientError) -> Box<writ_core::api::TaskPending> {
    match e {
        ClientError::Pending(p) => p,
        other => panic!("expected 202 pending, got {other}"),
    }
}

#[tokio::test]
async fn an_approval_holds_the_token_until_a_person_decides() {
    let (b, _dir) = broker(&[]);
    let inst = b.attest("demo-agent").await;
    let agent = b.as_token(&inst.access_token);

    let p = pending(
        agent
            .start_task(&req("tickets:write", None, None))
            .await
            .unwrap_err(),
    );
    assert_eq!(p.status, TaskStatus::PendingApproval);
    // Until decided: heartbeats answer 202, and the task holds nothing.
    let again = pending(agent.heartbeat(&p.task_id).await.unwrap_err());
    assert_eq!(again.approval_id, p.approval_id);
    let listed = b.admin().approvals(false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].task.intent, "reconcile the ledger");

    // A decision needs a reason.
    let out = b.cli(&[
        "approval",
        "approve",
        p.approval_id.as_str(),
        "--reason",
        "",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let out = b.cli(&[
        "approval",
        "approve",
        p.approval_id.as_str(),
        "--reason",
        "ticket CHG-42",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["status"], "approved");

    let t = agent.heartbeat(&p.task_id).await.unwrap();
    assert!(b.active(&t.access_token).await);
    let task = b.admin().task(&p.task_id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Active);
    // @max_ttl("600") capped the default one-hour lifetime.
    let lifetime = task.expires_at.millis() - task.lease_expires_at.millis() + 120_000;
    assert!(lifetime <= 600_000 + 1000, "lifetime {lifetime} ms");
    // A decided approval cannot be decided again.
    let e = b
        .admin()
        .decide_approval(&p.approval_id, false, "changed my mind")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409));

    // A denial: the heartbeat says so, with the reason.
    let p2 = pending(
        agent
            .start_task(&req("tickets:write", None, None))
            .await
            .unwrap_err(),
    );
    b.admin()
        .decide_approval(&p2.approval_id, false, "not during the freeze")
        .await
        .unwrap();
    let e = agent.heartbeat(&p2.task_id).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("not during the freeze"), "{e}");
    assert_eq!(
        b.admin().task(&p2.task_id).await.unwrap().status,
        TaskStatus::Denied
    );

    let kinds: Vec<String> = b
        .admin()
        .audit(0, 1000)
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| r.event.clone())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|e| e.contains("\"kind\":\"approval\""))
            .count(),
        2
    );
}

#[tokio::test]
async fn an_undecided_approval_expires() {
    let (b, _dir) = broker(&["--approval-ttl", "1"]);
    let inst = b.attest("demo-agent").await;
    let agent = b.as_token(&inst.access_token);
    let p = pending(
        agent
            .start_task(&req("tickets:write", None, None))
            .await
            .unwrap_err(),
    );
    let expired = eventually(Duration::from_secs(10), || async {
        b.admin().task(&p.task_id).await.unwrap().status == TaskStatus::Expired
    })
    .await;
    assert!(expired);
    let a = b.admin().approvals(true).await.unwrap();
    assert_eq!(a[0].status, ApprovalStatus::Expired);
    assert_eq!(
        agent.heartbeat(&p.task_id).await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        b.admin()
            .decide_approval(&p.approval_id, true, "late")
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
}

#[tokio::test]
async fn exceptions_need_a_justification_a_policy_and_approval() {
    let (b, _dir) = broker(&[]);
    let inst = b.attest("demo-agent").await;
    let agent = b.as_token(&inst.access_token);
    let long = Some(4 * 3600);

    let e = agent
        .start_task(&req("tickets:read", long, None))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("justification"), "{e}");
    // No permit allows an exception for writes.
    let e = agent
        .start_task(&req("tickets:write", long, Some("month-end close")))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    // Past the longest exception: refused outright.
    let e = agent
        .start_task(&req("tickets:read", Some(30 * 86_400), Some("forever")))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));

    let p = pending(
        agent
            .start_task(&req("tickets:read", long, Some("month-end close")))
            .await
            .unwrap_err(),
    );
    let a = b.admin().approvals(false).await.unwrap();
    assert!(a[0].exception);
    assert_eq!(a[0].justification.as_deref(), Some("month-end close"));
    b.admin()
        .decide_approval(&p.approval_id, true, "finance sign-off")
        .await
        .unwrap();
    let t = agent.heartbeat(&p.task_id).await.unwrap();
    let (_, claims) = writ_core::token::insecure_peek(&t.access_token).unwrap();
    assert_eq!(claims["exception"], true);
    let task = b.admin().task(&p.task_id).await.unwrap();
    assert!(task.exception);
    assert!(task.expires_at.millis() - task.lease_expires_at.millis() > 3 * 3600 * 1000);

    let listed = json(&b.cli(&["task", "list", "--exceptions"]));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [p.task_id.as_str()]);
    // The list says when it ends, whose it is, why and who let it, and how
    // often it was used; every tool token under it is counted.
    let x = &listed[0];
    assert_eq!(x["expires_at"], serde_json::json!(task.expires_at));
    assert_eq!(x["justification"], "month-end close");
    assert!(x["approved_by"].is_string(), "{x}");
    assert_eq!(x["uses"], 0);
    for _ in 0..2 {
        b.anon()
            .exchange(&t.access_token, None, Some("tickets"), Some("read"))
            .await
            .unwrap();
    }
    let listed = json(&b.cli(&["task", "list", "--exceptions"]));
    assert_eq!(listed[0]["uses"], 2, "{listed}");
    // The rules noticed both: the use, and the end coming (once).
    let fired = |rule: &'static str| {
        let b = &b;
        async move {
            b.admin()
                .audit(0, 10_000)
                .await
                .unwrap()
                .records
                .iter()
                .filter(|r| r.event.contains("\"rule_fired\"") && r.event.contains(rule))
                .count()
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            fired("exception-used-twice").await == 1
                && fired("exception-ends-within-a-day").await == 1
        })
        .await,
        "the exception rules did not fire"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fired("exception-ends-within-a-day").await, 1, "fired twice");
    // Every record about it says it is an exception.
    let records = b.admin().audit(0, 1000).await.unwrap().records;
    let about: Vec<&String> = records
        .iter()
        .map(|r| &r.event)
        .filter(|e| e.contains(p.task_id.as_str()) && !e.contains("token_issue"))
        .collect();
    assert!(about.len() >= 3);
    assert!(
        about.iter().all(|e| e.contains("\"exception\":true")),
        "{about:?}"
    );
}
