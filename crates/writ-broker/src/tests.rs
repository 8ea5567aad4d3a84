//! In-process tests of the broker's logic, with a clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;
use writ_core::api::{
    AttestRequest, CreateJoinToken, RegisterAgent, RegisterTool, StartTask, TaskStatus,
};
use writ_core::token::TokenKind;
use writ_core::{Capability, ManualClock, Timestamp};
use writ_policy::{PolicySet, PolicySource};

use crate::service::{AgentCaller, Broker};
use crate::{BrokerConfig, DataDir};

const T0: Timestamp = Timestamp::from_secs(1_795_780_800); // a Tuesday, noon UTC

pub(crate) struct Fixture {
    pub(crate) broker: Arc<Broker>,
    pub(crate) clock: ManualClock,
    _dir: tempfile::TempDir,
}

pub(crate) async fn fixture() -> Fixture {
    fixture_with(BrokerConfig::new("http://writ.test")).await
}

pub(crate) async fn fixture_with(config: BrokerConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let policy = PolicySet::compile(vec![PolicySource {
        name: "p.cedar".into(),
        text: r#"@id("reads") permit (principal, action, resource) when { ["read"].containsAll(context.scopes) };"#.into(),
    }])
    .unwrap();
    let opened = crate::open(
        &DataDir::new(dir.path()),
        config,
        crate::InitialPolicy::Set {
            set: policy,
            origin: "test".into(),
        },
        Arc::new(clock.clone()),
        None,
    )
    .await
    .unwrap();
    assert!(opened.bootstrap_admin_token.is_some());
    let b = opened.broker;
    b.registry
        .register_agent(
            serde_json::from_value::<RegisterAgent>(
                serde_json::json!({"name": "a", "attestation": {"kind": "join_token"}}),
            )
            .unwrap(),
            "operator:test",
        )
        .await
        .unwrap();
    b.registry
        .register_tool(
            RegisterTool {
                name: "t".parse().unwrap(),
                audience: "https://t".into(),
                scopes: vec!["read".parse().unwrap(), "write".parse().unwrap()],
                attributes: Default::default(),
                upstream: None,
                gateway: None,
            },
            "operator:test",
        )
        .await
        .unwrap();
    Fixture {
        broker: b,
        clock,
        _dir: dir,
    }
}

pub(crate) async fn instance(b: &Broker) -> (String, AgentCaller) {
    let jt = b
        .registry
        .create_join_token(
            &"a".parse().unwrap(),
            CreateJoinToken { ttl: 60 },
            "operator:test",
        )
        .await
        .unwrap();
    let att = b
        .attestations
        .attest(
            AttestRequest {
                agent: "a".parse().unwrap(),
                join_token: Some(jt.join_token),
                oidc_token: None,
                jwt_svid: None,
            },
            None,
        )
        .await
        .unwrap();
    let caller = b
        .tokens
        .authenticate(
            &bearer(&att.access_token),
            "POST",
            "/v1/tasks",
            TokenKind::Instance,
        )
        .await
        .unwrap();
    (att.access_token, caller)
}

pub(crate) fn bearer(token: &str) -> crate::extract::Presented<'_> {
    crate::extract::Presented {
        token,
        dpop: false,
        proof: None,
    }
}

pub(crate) fn read_task(ttl: Option<u64>) -> StartTask {
    StartTask {
        intent: "read things".into(),
        capabilities: vec![Capability::parse_short("t:read").unwrap()],
        on_behalf_of: None,
        ttl,
        justification: None,
    }
}

#[tokio::test]
async fn tokens_and_leases_never_pass_the_task_end() {
    let f = fixture().await;
    let b = &f.broker;
    let (_, inst) = instance(b).await;
    let t = b
        .tasks
        .start(&inst, read_task(Some(300)))
        .await
        .unwrap()
        .into_token()
        .unwrap();
    let task = b.store.get_task(&t.task_id).await.unwrap().unwrap();
    assert_eq!(task.expires_at, T0.add_secs(300));
    assert_eq!(t.expires_in, 300, "10 min token clamped to the 5 min task");
    assert_eq!(task.lease_expires_at, T0.add_secs(120));

    f.clock.advance(Duration::from_secs(100));
    let hb = b
        .tasks
        .heartbeat(&inst, &t.task_id)
        .await
        .unwrap()
        .into_token()
        .unwrap();
    assert_eq!(hb.lease_expires_at, T0.add_secs(220));
    f.clock.advance(Duration::from_secs(100));
    let hb = b
        .tasks
        .heartbeat(&inst, &t.task_id)
        .await
        .unwrap()
        .into_token()
        .unwrap();
    assert_eq!(
        hb.lease_expires_at,
        T0.add_secs(300),
        "lease clamped to the hard end"
    );
    assert_eq!(hb.expires_in, 100);
    // Past the hard end nothing renews it.
    f.clock.advance(Duration::from_secs(100));
    assert!(b.tasks.heartbeat(&inst, &t.task_id).await.is_err());
}

#[tokio::test]
async fn the_sweeper_ends_lapsed_tasks_and_their_tokens() {
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
    let kept = b
        .tasks
        .start(&inst, read_task(None))
        .await
        .unwrap()
        .into_token()
        .unwrap();

    f.clock.advance(Duration::from_secs(100));
    assert_eq!(crate::sweeper::sweep_once(b).await, 0);
    b.tasks
        .heartbeat(&inst, &kept.task_id)
        .await
        .unwrap()
        .into_token()
        .unwrap();

    f.clock.advance(Duration::from_secs(30));
    assert_eq!(crate::sweeper::sweep_once(b).await, 1);
    assert!(!b.tokens.introspect(&t.access_token).await.unwrap().active);
    assert!(
        b.tokens
            .introspect(&kept.access_token)
            .await
            .unwrap()
            .active
    );
    let ended = b.store.get_task(&t.task_id).await.unwrap().unwrap();
    assert_eq!(ended.status, TaskStatus::Expired);
    assert_eq!(ended.end_reason.as_deref(), Some("lease lapsed"));
}

#[tokio::test]
async fn instance_tokens_expire_on_time() {
    let f = fixture().await;
    let b = &f.broker;
    let (token, _) = instance(b).await;
    f.clock.advance(Duration::from_secs(899));
    assert!(
        b.tokens
            .authenticate(&bearer(&token), "POST", "/v1/tasks", TokenKind::Instance)
            .await
            .is_ok()
    );
    // The issuer's own clock needs no skew leeway: at `exp` the grant is dead.
    f.clock.advance(Duration::from_secs(1));
    assert!(
        b.tokens
            .authenticate(&bearer(&token), "POST", "/v1/tasks", TokenKind::Instance)
            .await
            .is_err()
    );
    assert!(!b.tokens.introspect(&token).await.unwrap().active);
}

#[tokio::test]
async fn a_write_is_denied_by_default_and_audited() {
    let f = fixture().await;
    let b = &f.broker;
    let (_, inst) = instance(b).await;
    let mut req = read_task(None);
    req.capabilities = vec![Capability::parse_short("t:write").unwrap()];
    let head = b.store.audit_head().await.unwrap();
    let err = b.tasks.start(&inst, req).await.unwrap_err();
    assert!(
        matches!(err, writ_authority::Error::Denied(ref d) if d.verdict() == writ_policy::Verdict::Deny)
    );
    assert_eq!(b.store.audit_head().await.unwrap(), head + 1);
}

#[tokio::test]
async fn the_router_answers_problems_in_process() {
    let f = fixture().await;
    let app = crate::router(Arc::clone(&f.broker));
    let resp = app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .oneshot(Request::post("/v1/agents").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_lapsed_lease_kills_tokens_before_any_sweep() {
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
    // Past the 120 s lease, with no sweeper having run.
    f.clock.advance(Duration::from_secs(121));
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
    assert!(b.tasks.heartbeat(&inst, &t.task_id).await.is_err());
}

/// The console's revocation lag: how long the oldest revocation a gateway
/// does not hold has been out, by the broker's clock; none once it holds
/// them all.
#[tokio::test]
async fn a_gateway_s_revocation_lag_is_the_age_of_the_oldest_revocation_it_lacks() {
    let f = fixture().await;
    let b = &f.broker;
    let (_, inst) = instance(b).await;
    let _task = b
        .tasks
        .start(&inst, read_task(None))
        .await
        .unwrap()
        .into_token()
        .unwrap();
    let head = b.store.revocation_head().await.unwrap();
    b.revocations
        .page(Some(("edge", "p1")), head, Duration::ZERO)
        .await
        .unwrap();
    let lag = |g: crate::service::feed::FeedFollowers| {
        let f = g.followers.iter().find(|f| f.gateway == "edge").unwrap();
        (f.behind, f.lag_ms)
    };
    assert_eq!(lag(b.revocations.followers(b.now()).await.unwrap()), (0, 0));

    // The task's lease lapses and the sweeper revokes its tokens; the
    // gateway does not come back for them.
    f.clock.advance(Duration::from_secs(130));
    assert_eq!(crate::sweeper::sweep_once(b).await, 1);
    f.clock.advance(Duration::from_millis(7_250));
    let (behind, ms) = lag(b.revocations.followers(b.now()).await.unwrap());
    assert!(behind > 0);
    assert_eq!(ms, 7_250);

    // It takes them: no lag.
    let head = b.store.revocation_head().await.unwrap();
    b.revocations
        .page(Some(("edge", "p1")), head, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(lag(b.revocations.followers(b.now()).await.unwrap()), (0, 0));
}
