//! Retention, in process with a clock the test moves: what the sweeper
//! forgets is never mistaken for something live.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;
use writ_core::token::TokenKind;

use crate::service::Caller;
use crate::tests::{bearer, fixture, instance, read_task};

/// A token whose grant the store no longer knows (pruned, or lost in a
/// restore) is inactive at introspection and refused with 401, even while
/// its signature and lifetime still verify: an unknown `jti` is never live.
#[tokio::test]
async fn a_token_whose_grant_is_forgotten_is_inactive_and_refused() {
    let f = fixture().await;
    let b = &f.broker;
    let (_, inst) = instance(b).await;
    let t = b
        .tasks
        .start(&inst, read_task(None))
        .await
        .unwrap()
        .into_token()
        .unwrap();
    assert!(b.tokens.introspect(&t.access_token).await.unwrap().active);
    let far = b.now().add_secs(10 * 365 * 86_400);
    assert!(b.store.prune_grants(far, 1000).await.unwrap() >= 2);
    assert!(!b.tokens.introspect(&t.access_token).await.unwrap().active);
    assert!(
        b.tokens
            .authenticate(
                &bearer(&t.access_token),
                "POST",
                "/v1/tasks",
                TokenKind::Task
            )
            .await
            .is_err()
    );
    let resp = crate::router(Arc::clone(&f.broker))
        .oneshot(
            Request::post(format!("/v1/tasks/{}/heartbeat", t.task_id))
                .header("authorization", format!("Bearer {}", t.access_token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// The sweeper forgets a token five minutes after it expired (not
/// before), a revocation once its token expired (the feed's newest stays),
/// an ended task once the task retention (a day) has passed, and an
/// expired instance once no task names it.
#[tokio::test]
async fn the_sweeper_prunes_grants_revocations_ended_tasks_and_instances_on_time() {
    let f = fixture().await;
    let b = &f.broker;
    let (_, inst) = instance(b).await;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(
            b.tasks
                .start(&inst, read_task(Some(600)))
                .await
                .unwrap()
                .into_token()
                .unwrap(),
        );
    }
    let operator = Caller::Operator(crate::service::Operator {
        name: "test".into(),
        role: writ_core::api::Role::Admin,
    });
    for t in &tasks {
        b.tasks.complete(&operator, &t.task_id).await.unwrap();
    }
    let jti = |token: &str| {
        writ_core::token::insecure_peek(token).unwrap().1["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = jti(&tasks[0].access_token);
    assert_eq!(b.store.revocations_after(0, 100).await.unwrap().len(), 2);
    // The task tokens live 10 minutes; five more, and a little.
    f.clock.advance(Duration::from_secs(600 + 240));
    crate::sweeper::sweep_once(b).await;
    assert!(b.store.grant_state(&first).await.unwrap().is_some());
    f.clock.advance(Duration::from_secs(120));
    crate::sweeper::sweep_once(b).await;
    assert!(b.store.grant_state(&first).await.unwrap().is_none());
    assert!(
        !b.tokens
            .introspect(&tasks[0].access_token)
            .await
            .unwrap()
            .active
    );
    let head = b.store.revocation_head().await.unwrap();
    let left = b.store.revocations_after(0, 100).await.unwrap();
    assert_eq!((left.len(), left[0].seq), (1, head));
    // The ended tasks stay for a day, then go; so does their instance
    // (expired after 15 minutes), which they named until then.
    assert!(b.store.get_task(&tasks[0].task_id).await.unwrap().is_some());
    let id = inst.instance_id().clone();
    assert!(b.store.get_instance(&id).await.unwrap().is_some());
    f.clock.advance(Duration::from_secs(86_400));
    crate::sweeper::sweep_once(b).await;
    for t in &tasks {
        assert!(b.store.get_task(&t.task_id).await.unwrap().is_none());
    }
    assert!(b.store.get_instance(&id).await.unwrap().is_none());
}

/// Audit retention never passes the first record an audit sink has not
/// acknowledged: with a sink that acknowledged nothing, nothing is
/// archived however old; as it acknowledges, the archive follows, and the
/// chain (archive and database) verifies throughout. Checkpoints keep
/// being signed after the second (the record of the last one stays).
#[tokio::test]
async fn audit_retention_never_drops_a_record_a_sink_has_not_acknowledged() {
    let mut config = crate::BrokerConfig::new("http://writ.test");
    config.audit_retention = Some(60);
    config.audit_checkpoint_secs = 1;
    let f = crate::tests::fixture_with(config).await;
    let b = &f.broker;
    b.store
        .configure_sinks(&["hook".to_owned()], b.now())
        .await
        .unwrap();
    let (_, inst) = instance(b).await;
    let mut checkpoints = 0;
    for _ in 0..4 {
        b.tasks.start(&inst, read_task(None)).await.unwrap();
        f.clock.advance(Duration::from_secs(61));
        crate::sweeper::sweep_once(b).await;
        let n = b.store.audit_checkpoints().await.unwrap().len();
        assert!(n > checkpoints, "no new checkpoint was signed");
        checkpoints = n;
    }
    assert_eq!(b.store.audit_archive_state().await.unwrap().through, 0);
    assert_eq!(b.audit.records_after(0, 1).await.unwrap()[0].seq, 1);

    let acked = b.store.audit_head().await.unwrap() / 2;
    assert!(
        b.store
            .claim_sink("hook", "r1", b.now(), b.now().add_secs(60))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        b.store
            .ack_sink("hook", "r1", acked, b.now())
            .await
            .unwrap()
    );
    f.clock.advance(Duration::from_secs(2));
    crate::sweeper::sweep_once(b).await;
    let through = b.store.audit_archive_state().await.unwrap().through;
    assert_eq!(through, acked, "archived up to what the sink acknowledged");
    assert_eq!(b.store.audit_after(0, 1).await.unwrap()[0].seq, acked + 1);
    // Reads and verification go on from the archive.
    let all = b.audit.records_after(0, 10_000).await.unwrap();
    assert_eq!(all[0].seq, 1);
    assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let v = b.audit.verify().await.unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.records, b.store.audit_head().await.unwrap());
}
