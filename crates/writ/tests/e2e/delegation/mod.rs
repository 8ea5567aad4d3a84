//! Sender-constrained tokens and safe delegation, as users run them.

use std::sync::Arc;

use writ_core::Capability;
use writ_core::api::{AttestRequest, RegisterTool, StartTask, TaskStatus};
use writ_core::dpop::ProofKey;

use crate::harness::{Broker, json, stdout};

pub(crate) async fn bound_instance(b: &Broker, agent: &str, key: &Arc<ProofKey>) -> String {
    let name = agent.parse().unwrap();
    let jt = b.admin().join_token(&name, 60).await.unwrap().join_token;
    let att = b
        .anon()
        .with_dpop(Arc::clone(key))
        .attest(&AttestRequest {
            agent: name,
            join_token: Some(jt),
            oidc_token: None,
            jwt_svid: None,
        })
        .await
        .unwrap();
    assert_eq!(att.token_type, "DPoP");
    att.access_token
}

fn read_task() -> StartTask {
    StartTask {
        intent: "read".into(),
        capabilities: vec![Capability::parse_short("tickets:read").unwrap()],
        on_behalf_of: None,
        ttl: None,
        justification: None,
    }
}

#[tokio::test]
async fn d11_n4_a_bound_token_is_useless_without_its_key() {
    let b = Broker::start();
    let key = Arc::new(ProofKey::generate().unwrap().0);
    let other = Arc::new(ProofKey::generate().unwrap().0);
    let token = bound_instance(&b, "demo-agent", &key).await;

    // As a bearer token (a stolen token on an unattested host): refused.
    let e = b
        .as_token(&token)
        .start_task(&read_task())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("DPoP"), "{e}");
    // With a proof by another key: refused.
    let e = b
        .as_token(&token)
        .with_dpop(other)
        .start_task(&read_task())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    // With its own key: works, and the task token is bound to the same key.
    let t = b
        .as_token(&token)
        .with_dpop(Arc::clone(&key))
        .start_task(&read_task())
        .await
        .unwrap();
    assert_eq!(t.token_type, "DPoP");
    let (_, c) = writ_core::token::insecure_peek(&t.access_token).unwrap();
    assert_eq!(c["cnf"]["jkt"], key.thumbprint().unwrap().as_str());
    // Heartbeats need the key too.
    assert!(
        b.as_token(&t.access_token)
            .heartbeat(&t.task_id)
            .await
            .is_err()
    );
    assert!(
        b.as_token(&t.access_token)
            .with_dpop(key)
            .heartbeat(&t.task_id)
            .await
            .is_ok()
    );
    let m = b.anon().metadata().await.unwrap();
    assert_eq!(
        m["dpop_signing_alg_values_supported"],
        serde_json::json!(["EdDSA", "Ed25519", "ES256"])
    );
    // Strict RFC 8414 validators want a response type; writ claims none.
    assert_eq!(m["response_types_supported"], serde_json::json!(["none"]));
}

#[tokio::test]
async fn x1_x2_x3_x7_exchange_only_narrows_and_refusals_are_audited() {
    let b = Broker::start();
    b.admin()
        .register_tool(&RegisterTool {
            name: "wiki".parse().unwrap(),
            audience: "https://wiki.example.com".into(),
            scopes: vec!["read".parse().unwrap()],
            attributes: Default::default(),
            upstream: None,
            gateway: None,
        })
        .await
        .unwrap();
    let key = Arc::new(ProofKey::generate().unwrap().0);
    let inst = bound_instance(&b, "demo-agent", &key).await;
    let agent = b.as_token(&inst).with_dpop(Arc::clone(&key));
    let t = agent
        .start_task(&StartTask {
            ttl: Some(120),
            ..read_task()
        })
        .await
        .unwrap();
    let c = b.anon().with_dpop(Arc::clone(&key));

    let ok = c
        .exchange(
            &t.access_token,
            None,
            Some("https://tickets.example.com"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(ok.scope, "read");
    assert!(ok.expires_in <= 120, "X2: never past the task's end");

    let err = |e: writ_client::ClientError| e.to_string();
    assert!(
        err(c
            .exchange(&t.access_token, None, Some("tickets"), Some("write"))
            .await
            .unwrap_err())
        .contains("invalid_scope")
    );
    assert!(
        err(c
            .exchange(&t.access_token, None, Some("tickets"), Some("read delete"))
            .await
            .unwrap_err())
        .contains("invalid_scope")
    );
    assert!(
        err(c
            .exchange(&t.access_token, None, Some("wiki"), None)
            .await
            .unwrap_err())
        .contains("invalid_target")
    );
    assert!(
        err(c
            .exchange(&t.access_token, None, Some("nowhere"), None)
            .await
            .unwrap_err())
        .contains("invalid_target")
    );
    // An instance token is not a subject for exchange.
    assert!(
        err(c
            .exchange(&inst, None, Some("tickets"), None)
            .await
            .unwrap_err())
        .contains("invalid_grant")
    );

    agent.complete(&t.task_id).await.unwrap();
    assert!(
        !b.active(&ok.access_token).await,
        "the tool token died with its task"
    );
    assert!(
        err(c
            .exchange(&t.access_token, None, Some("tickets"), None)
            .await
            .unwrap_err())
        .contains("invalid_grant")
    );

    let denials = b
        .admin()
        .audit(0, 1000)
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.event).unwrap())
        .filter(|e| e["kind"] == "token_exchange" && e["outcome"] == "deny")
        .count();
    assert_eq!(denials, 6);
}

#[tokio::test]
async fn x5_depth_limit_and_cycles_are_refused() {
    let b = Broker::start_with(crate::harness::Opts {
        extra: vec!["--max-delegation-depth".into(), "2".into()],
        ..Default::default()
    });
    let mut keys = Vec::new();
    let mut insts = Vec::new();
    for name in ["demo-agent", "a1", "a2", "a3"] {
        if name != "demo-agent" {
            b.agent(name, &[]).await;
        }
        let k = Arc::new(ProofKey::generate().unwrap().0);
        insts.push(bound_instance(&b, name, &k).await);
        keys.push(k);
    }
    let root = b
        .as_token(&insts[0])
        .with_dpop(Arc::clone(&keys[0]))
        .start_task(&read_task())
        .await
        .unwrap();
    let mut token = root.access_token.clone();
    for hop in 1..=2 {
        let proof = actor_proof(&b, &keys[hop], &insts[hop]);
        let d = b
            .anon()
            .with_dpop(Arc::clone(&keys[hop - 1]))
            .delegate(&token, &insts[hop], Some(&proof), None, None)
            .await
            .unwrap();
        let (_, c) = writ_core::token::insecure_peek(&d.access_token).unwrap();
        let depth = {
            let mut n = 0;
            let mut a = &c["act"];
            while a.is_object() {
                n += 1;
                a = &a["act"];
            }
            n
        };
        assert_eq!(depth, hop, "one act per hop");
        token = d.access_token;
    }
    // Depth 3 is past the configured 2.
    let e = b
        .anon()
        .with_dpop(Arc::clone(&keys[2]))
        .delegate(
            &token,
            &insts[3],
            Some(&actor_proof(&b, &keys[3], &insts[3])),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("depth"), "{e}");
    // Back to an agent already in the chain: a cycle.
    let e = b
        .anon()
        .with_dpop(Arc::clone(&keys[2]))
        .delegate(
            &token,
            &insts[0],
            Some(&actor_proof(&b, &keys[0], &insts[0])),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");
}

/// D9: with server nonces on, a proof without one gets `use_dpop_nonce` and
/// a fresh nonce; the retry with it succeeds.
#[tokio::test]
async fn d9_server_nonces_when_configured() {
    let b = Broker::start_with(crate::harness::Opts {
        extra: vec!["--dpop-nonces".into()],
        ..Default::default()
    });
    let jt = b
        .admin()
        .join_token(&"demo-agent".parse().unwrap(), 60)
        .await
        .unwrap()
        .join_token;
    let key = ProofKey::generate().unwrap().0;
    let url = b.url("/v1/attest");
    let body = serde_json::json!({"agent": "demo-agent", "join_token": jt});
    let now = || {
        #[expect(
            clippy::disallowed_methods,
            reason = "proofs are checked against the broker's real clock"
        )]
        let s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        writ_core::Timestamp::from_secs(s as i64)
    };
    let r = b
        .http()
        .post(&url)
        .header("dpop", key.proof("POST", &url, None, None, now()).unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("use_dpop_nonce")
    );
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let r = b
        .http()
        .post(&url)
        .header(
            "dpop",
            key.proof("POST", &url, None, Some(&nonce), now()).unwrap(),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

/// Tool tokens are for tools: writ refuses them as credentials and as
/// exchange subjects; introspection calls bound tokens DPoP.
#[tokio::test]
async fn tool_tokens_are_not_writ_credentials() {
    let b = Broker::start();
    let key = Arc::new(ProofKey::generate().unwrap().0);
    let inst = bound_instance(&b, "demo-agent", &key).await;
    let t = b
        .as_token(&inst)
        .with_dpop(Arc::clone(&key))
        .start_task(&read_task())
        .await
        .unwrap();
    let tool = b
        .anon()
        .with_dpop(Arc::clone(&key))
        .exchange(&t.access_token, None, Some("tickets"), None)
        .await
        .unwrap();
    let i = b.admin().introspect(&tool.access_token).await.unwrap();
    assert!(i.active);
    assert_eq!(i.token_type.as_deref(), Some("DPoP"));
    let e = b
        .as_token(&tool.access_token)
        .with_dpop(Arc::clone(&key))
        .start_task(&read_task())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    let e = b
        .anon()
        .with_dpop(Arc::clone(&key))
        .exchange(&tool.access_token, None, Some("tickets"), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid_grant"), "{e}");
    // A tool may not claim writ's own issuer as its audience.
    let e = b
        .admin()
        .register_tool(&RegisterTool {
            name: "sneaky".parse().unwrap(),
            audience: b.addr.clone(),
            scopes: vec!["read".parse().unwrap()],
            attributes: Default::default(),
            upstream: None,
            gateway: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
}

/// Policy obligations hold on delegation too: `@max_ttl` caps the child,
/// and `@approval` (which nobody could give there) denies.
#[tokio::test]
async fn delegation_honours_max_ttl_and_refuses_approval_gated_permits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"
@id("start") permit (principal, action == Action::"StartTask", resource);
@id("exchange") permit (principal, action == Action::"ExchangeToken", resource);
@id("delegate-reads") @max_ttl("60")
permit (principal, action == Action::"DelegateTask", resource) when { context.scopes == ["read"] };
@id("delegate-comments") @approval("required")
permit (principal, action == Action::"DelegateTask", resource) when { context.scopes.contains("comment") };
"#,
    )
    .unwrap();
    let b = Broker::start_with(crate::harness::Opts {
        dev: true,
        policy_dir: Some(dir.path().to_owned()),
        ..Default::default()
    });
    b.agent("helper", &[]).await;
    let k1 = Arc::new(ProofKey::generate().unwrap().0);
    let k2 = Arc::new(ProofKey::generate().unwrap().0);
    let root_inst = bound_instance(&b, "demo-agent", &k1).await;
    let helper = bound_instance(&b, "helper", &k2).await;
    let root = b
        .as_token(&root_inst)
        .with_dpop(Arc::clone(&k1))
        .start_task(&StartTask {
            capabilities: vec![Capability::parse_short("tickets:read,comment").unwrap()],
            ..read_task()
        })
        .await
        .unwrap();
    let c = b.anon().with_dpop(Arc::clone(&k1));
    let child = c
        .delegate(
            &root.access_token,
            &helper,
            Some(&actor_proof(&b, &k2, &helper)),
            None,
            Some("tickets:read"),
        )
        .await
        .unwrap();
    let task = b
        .admin()
        .task(child.task_id.as_ref().unwrap())
        .await
        .unwrap();
    assert!(
        task.expires_at.millis() - task.created_at.millis() <= 60_000,
        "@max_ttl capped the child"
    );
    assert!(child.expires_in <= 60);
    let e = c
        .delegate(
            &root.access_token,
            &helper,
            Some(&actor_proof(&b, &k2, &helper)),
            None,
            Some("tickets:comment"),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("access_denied"), "{e}");
}

/// The proof a sub-agent holding `key` makes so that a planner may
/// delegate to its bound instance `inst`.
pub(crate) fn actor_proof(b: &Broker, key: &Arc<ProofKey>, inst: &str) -> String {
    b.anon()
        .with_dpop(Arc::clone(key))
        .actor_proof(inst)
        .unwrap()
}

fn jti_of(token: &str) -> String {
    writ_core::token::insecure_peek(token).unwrap().1["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// H12: an admin revokes an instance token; the tasks that instance started
/// end with it (as Vault revokes a token's children), and with them their
/// tool tokens and the tasks delegated from them. No heartbeat, no fresh
/// tool token; the sub-agent's own work carries on.
#[tokio::test]
async fn h12_revoking_an_instance_ends_its_tasks() {
    let b = Broker::start();
    b.agent("helper-bot", &[]).await;
    let key = Arc::new(ProofKey::generate().unwrap().0);
    let helper_key = Arc::new(ProofKey::generate().unwrap().0);
    let inst = bound_instance(&b, "demo-agent", &key).await;
    let helper = bound_instance(&b, "helper-bot", &helper_key).await;
    let t = b
        .as_token(&inst)
        .with_dpop(Arc::clone(&key))
        .start_task(&read_task())
        .await
        .unwrap();
    let c = b.anon().with_dpop(Arc::clone(&key));
    let tool = c
        .exchange(&t.access_token, None, Some("tickets"), None)
        .await
        .unwrap();
    let child = c
        .delegate(
            &t.access_token,
            &helper,
            Some(&actor_proof(&b, &helper_key, &helper)),
            None,
            None,
        )
        .await
        .unwrap();
    let child_id = child.task_id.clone().unwrap();
    let own = b
        .as_token(&helper)
        .with_dpop(Arc::clone(&helper_key))
        .start_task(&read_task())
        .await
        .unwrap();
    let task = b.as_token(&t.access_token).with_dpop(Arc::clone(&key));
    task.heartbeat(&t.task_id).await.unwrap();
    let head = b.admin().revocations(0, 0).await.unwrap().next;

    b.admin().revoke(&inst).await.unwrap();

    let e = task.heartbeat(&t.task_id).await.unwrap_err();
    assert_eq!(
        e.status(),
        Some(401),
        "heartbeat after the instance was revoked: {e}"
    );
    let e = c
        .exchange(&t.access_token, None, Some("tickets"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e.status(), Some(400 | 401)),
        "a fresh tool token after the instance was revoked: {e}"
    );
    for (what, tok) in [
        ("instance", &inst),
        ("task", &t.access_token),
        ("tool", &tool.access_token),
        ("delegated", &child.access_token),
    ] {
        assert!(!b.active(tok).await, "the {what} token is still active");
    }
    let ended = b.admin().task(&t.task_id).await.unwrap();
    assert_eq!(ended.status, TaskStatus::Revoked);
    assert_eq!(ended.end_reason.as_deref(), Some("instance revoked"));
    assert_eq!(
        b.admin().task(&child_id).await.unwrap().status,
        TaskStatus::Revoked
    );
    // Gateways hear of the tool token through the feed.
    let fed: Vec<String> = b
        .admin()
        .revocations(head, 0)
        .await
        .unwrap()
        .revocations
        .into_iter()
        .map(|r| r.jti)
        .collect();
    for tok in [&tool.access_token, &child.access_token] {
        assert!(fed.contains(&jti_of(tok)), "{fed:?}");
    }
    // The sub-agent's own instance and task are not the revoked instance's.
    assert!(b.active(&helper).await);
    assert!(b.active(&own.access_token).await);
    // One record says what happened.
    let records = b.admin().audit_last(20).await.unwrap().records;
    let revoke: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.event).unwrap())
        .filter(|e| e["kind"] == "token_revoke")
        .collect();
    assert_eq!(revoke.len(), 1, "{revoke:?}");
    assert_eq!(revoke[0]["detail"]["kind"], "instance_token");
}

mod cli;
