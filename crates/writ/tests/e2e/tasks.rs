//! Tasks: decisions, leases, heartbeats, and ending everything at once.

use std::time::Duration;

use writ_core::Capability;
use writ_core::api::{StartTask, TaskStatus};

use crate::harness::{Broker, Opts, eventually};

fn start(caps: &[&str], obo: Option<&str>, ttl: Option<u64>) -> StartTask {
    StartTask {
        intent: "triage the support queue".into(),
        capabilities: caps
            .iter()
            .map(|c| Capability::parse_short(c).unwrap())
            .collect(),
        on_behalf_of: obo.map(str::to_owned),
        ttl,
        justification: None,
    }
}

#[tokio::test]
async fn completing_a_task_revokes_every_token_under_it() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let agent = b.as_token(&inst.access_token);
    let t = agent
        .start_task(&start(&["tickets:read"], None, None))
        .await
        .unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert!(t.expires_in > 0 && t.expires_in <= 600);
    let renewed = agent.heartbeat(&t.task_id).await.unwrap();
    assert_ne!(renewed.access_token, t.access_token);
    assert!(b.active(&t.access_token).await && b.active(&renewed.access_token).await);

    let ended = agent.complete(&t.task_id).await.unwrap();
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.revoked_tokens, 2);
    assert!(!b.active(&t.access_token).await);
    assert!(!b.active(&renewed.access_token).await);
    // The instance itself lives on.
    assert!(b.active(&inst.access_token).await);

    // A dead task cannot be revived or used.
    let e = agent.heartbeat(&t.task_id).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let e = agent.complete(&t.task_id).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let e = b
        .as_token(&renewed.access_token)
        .task(&t.task_id)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(
        agent.task(&t.task_id).await.unwrap().status,
        TaskStatus::Completed
    );
}

#[tokio::test]
async fn a_lapsed_lease_ends_the_task() {
    let b = Broker::start_with(Opts {
        extra: vec![
            "--lease-ttl".into(),
            "1".into(),
            "--sweep-interval-ms".into(),
            "50".into(),
        ],
        ..Opts::default()
    });
    let inst = b.attest("demo-agent").await;
    let agent = b.as_token(&inst.access_token);
    let t = agent
        .start_task(&start(&["tickets:read"], None, None))
        .await
        .unwrap();
    assert!(b.active(&t.access_token).await);
    let ended = eventually(Duration::from_secs(10), || async {
        !b.active(&t.access_token).await
    })
    .await;
    assert!(ended, "the task token outlived its lease");
    // The token dies with the lease at once; the sweeper then records the
    // task's end.
    let swept = eventually(Duration::from_secs(10), || async {
        b.admin().task(&t.task_id).await.unwrap().status == TaskStatus::Expired
    })
    .await;
    assert!(swept, "the sweeper did not end the task");
    let task = b.admin().task(&t.task_id).await.unwrap();
    assert!(task.end_reason.is_some());
    let e = agent.heartbeat(&t.task_id).await.unwrap_err();
    assert_eq!(e.status(), Some(409));
}

#[tokio::test]
async fn the_lease_and_tokens_never_outlive_the_hard_lifetime() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let agent = b.as_token(&inst.access_token);
    let t = agent
        .start_task(&start(&["tickets:read"], None, Some(5)))
        .await
        .unwrap();
    assert!(t.expires_in <= 5);
    let hb = agent.heartbeat(&t.task_id).await.unwrap();
    let task = agent.task(&t.task_id).await.unwrap();
    assert!(hb.lease_expires_at <= task.expires_at);
    assert!(hb.expires_in <= 5);
    let ended = eventually(Duration::from_secs(15), || async {
        !b.active(&hb.access_token).await
    })
    .await;
    assert!(ended);
    // The sweeper then records the end.
    let swept = eventually(Duration::from_secs(10), || async {
        b.admin().task(&t.task_id).await.unwrap().status == TaskStatus::Expired
    })
    .await;
    assert!(swept, "the sweeper did not end the task");
}

#[tokio::test]
async fn n2_a_ten_year_task_is_refused() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let e = b
        .as_token(&inst.access_token)
        .start_task(&start(&["tickets:read"], None, Some(10 * 365 * 86_400)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("maximum"), "{e}");
}

#[tokio::test]
async fn a_denial_names_its_policies_and_is_audited() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let agent = b.as_token(&inst.access_token);

    let e = agent
        .start_task(&start(&["tickets:read,delete"], Some("user:alice"), None))
        .await
        .unwrap_err();
    let writ_client::ClientError::Api(p) = e else {
        panic!("not problem details: {e}")
    };
    assert_eq!(p.status, 403);
    assert_eq!(p.determining_policies, ["no-deletes"]);
    assert!(p.policy_version.as_deref().unwrap().starts_with("sha256:"));

    // Nothing permits a write without a human principal.
    let writ_client::ClientError::Api(p) = agent
        .start_task(&start(&["tickets:write"], None, None))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert!(p.determining_policies.is_empty());
    assert!(p.detail.unwrap().contains("no policy permits"));
    // ...and with one, it is allowed.
    let ok = agent
        .start_task(&start(&["tickets:write"], Some("user:alice"), None))
        .await
        .unwrap();
    let i = b.admin().introspect(&ok.access_token).await.unwrap();
    assert_eq!(i.obo.as_deref(), Some("user:alice"));
    assert_eq!(i.scope.as_deref(), Some("tickets:write"));

    let records = b.admin().audit(0, 1000).await.unwrap().records;
    let denials: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.event).unwrap())
        .filter(|e| e["kind"] == "task_start" && e["outcome"] == "deny")
        .collect();
    assert_eq!(denials.len(), 2);
    assert_eq!(denials[0]["determining_policies"][0], "no-deletes");
    assert_eq!(denials[0]["agent"], "demo-agent");
    assert_eq!(denials[0]["instance"], inst.instance_id.as_str());
    assert_eq!(denials[0]["on_behalf_of"], "user:alice");
    assert!(
        denials[0]["policy_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[tokio::test]
async fn requests_outside_the_registry_are_bad_requests() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let agent = b.as_token(&inst.access_token);
    for (caps, needle) in [
        (vec!["nope:read"], "unknown tool"),
        (vec!["tickets:fly"], "has no scope"),
    ] {
        let e = agent
            .start_task(&start(&caps, None, None))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    let e = agent.start_task(&start(&[], None, None)).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    let mut empty_intent = start(&["tickets:read"], None, None);
    empty_intent.intent = "  ".into();
    assert_eq!(
        agent.start_task(&empty_intent).await.unwrap_err().status(),
        Some(400)
    );
}

#[tokio::test]
async fn tasks_belong_to_their_instance() {
    let b = Broker::start();
    let a = b.attest("demo-agent").await;
    let other = b.attest("demo-agent").await;
    let t = b
        .start_task(&a.access_token, &["tickets:read"])
        .await
        .unwrap();
    // N3: another instance of the same agent cannot see, renew or end it.
    let o = b.as_token(&other.access_token);
    assert_eq!(o.task(&t.task_id).await.unwrap_err().status(), Some(404));
    assert_eq!(
        o.heartbeat(&t.task_id).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        o.complete(&t.task_id).await.unwrap_err().status(),
        Some(404)
    );
    // A task token cannot start more tasks.
    let e = b
        .start_task(&t.access_token, &["tickets:read"])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    // The task token can renew its own task.
    assert!(
        b.as_token(&t.access_token)
            .heartbeat(&t.task_id)
            .await
            .is_ok()
    );
    // An admin may end any task.
    let ended = b.admin().complete(&t.task_id).await.unwrap();
    assert_eq!(ended.status, TaskStatus::Revoked);
}
