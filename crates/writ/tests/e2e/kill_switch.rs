//! The kill switch: quarantine revokes everything of an agent at once.

use writ_core::api::TaskStatus;

use crate::harness::Broker;

#[tokio::test]
async fn n1_quarantine_revokes_every_grant_and_refuses_new_ones() {
    let b = Broker::start();
    b.agent("bystander", &[]).await;
    let i1 = b.attest("demo-agent").await;
    let i2 = b.attest("demo-agent").await;
    let t1 = b
        .start_task(&i1.access_token, &["tickets:read"])
        .await
        .unwrap();
    let t2 = b
        .start_task(&i2.access_token, &["tickets:read"])
        .await
        .unwrap();
    let by = b.attest("bystander").await;

    let q = b
        .admin()
        .quarantine(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    assert!(q.quarantined);
    assert_eq!(q.revoked_tokens, 4);
    assert_eq!(q.ended_tasks, 2);

    for t in [
        &i1.access_token,
        &i2.access_token,
        &t1.access_token,
        &t2.access_token,
    ] {
        assert!(!b.active(t).await);
    }
    assert!(
        b.active(&by.access_token).await,
        "other agents are untouched"
    );
    assert_eq!(
        b.admin().task(&t1.task_id).await.unwrap().status,
        TaskStatus::Revoked
    );

    // Old tokens no longer authenticate; new attestations are refused.
    let e = b
        .start_task(&i1.access_token, &["tickets:read"])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    let e = b
        .admin()
        .join_token(&"demo-agent".parse().unwrap(), 60)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));

    // Release: the agent may attest again, but the old grants stay dead.
    let r = b
        .admin()
        .release(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    assert!(!r.quarantined);
    assert!(!b.active(&i1.access_token).await);
    let fresh = b.attest("demo-agent").await;
    assert!(
        b.start_task(&fresh.access_token, &["tickets:read"])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn quarantine_of_an_unknown_agent_is_not_found() {
    let b = Broker::start();
    let e = b
        .admin()
        .quarantine(&"ghost".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
}
