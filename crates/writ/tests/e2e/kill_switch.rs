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

/// The revocation feed: every revocation, in order, resumable by sequence; a
/// waiting reader is woken by the next one.
#[tokio::test]
async fn the_revocation_feed_delivers_every_revocation_in_order() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let t = b
        .start_task(&inst.access_token, &["tickets:read"])
        .await
        .unwrap();
    let hb = b
        .as_token(&inst.access_token)
        .heartbeat(&t.task_id)
        .await
        .unwrap();
    let jti = |tok: &str| {
        writ_core::token::insecure_peek(tok).unwrap().1["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let start = b.admin().revocations(0, 0).await.unwrap();
    assert!(start.revocations.is_empty());
    // A reader waits; completing the task wakes it with both task tokens.
    let admin = b.admin();
    let waiting = tokio::spawn(async move { admin.revocations(start.next, 20).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    b.as_token(&inst.access_token)
        .complete(&t.task_id)
        .await
        .unwrap();
    let page = waiting.await.unwrap().unwrap();
    let got: Vec<String> = page.revocations.iter().map(|r| r.jti.clone()).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&jti(&t.access_token)) && got.contains(&jti(&hb.access_token)));
    assert!(page.revocations.windows(2).all(|w| w[0].seq < w[1].seq));

    // Quarantine feeds the instance token; reading on from `next` resumes.
    b.admin()
        .quarantine(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    let more = b.admin().revocations(page.next, 0).await.unwrap();
    assert_eq!(more.revocations.len(), 1);
    assert_eq!(more.revocations[0].jti, jti(&inst.access_token));
    assert!(
        b.admin()
            .revocations(more.next, 0)
            .await
            .unwrap()
            .revocations
            .is_empty()
    );
    // Only enforcement points (admin for now) may read it.
    let e = b
        .as_token(&t.access_token)
        .revocations(0, 0)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
}
