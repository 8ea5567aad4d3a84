//! A stolen proof or a stolen token, noticed where it is tried: a DPoP
//! proof replayed at the gateway, and a token presented there with a
//! proof by another key, are refused, recorded by the broker as the
//! gateway's `token_refused` records, and fire the example pack's rules:
//! the operator's webhook gets each alert and the audit holds each firing.

use std::sync::Arc;
use std::time::Duration;

use writ_core::api::StartTask;
use writ_core::dpop::ProofKey;

use crate::detect::{SECRET, receiver, verify};
use crate::gateway::{register_http_tool, upstream, wait_for_tool};
use crate::harness::{Broker, Opts, eventually};

/// The example pack's rules for both, as shipped.
const RULES: &str = include_str!("../../../../examples/policies/detect.rules.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_proof_or_a_second_key_at_the_gateway_fires_its_rule_alerts_and_is_audited() {
    let (hook, got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasks.cedar"),
        include_str!("../../../../examples/policies/tasks.cedar"),
    )
    .unwrap();
    std::fs::write(dir.path().join("detect.rules.toml"), RULES).unwrap();
    let b = Broker::start_with(Opts {
        dev: true,
        policy_dir: Some(dir.path().to_owned()),
        extra: vec![
            "--alert-webhook".into(),
            hook,
            "--alert-webhook-secret".into(),
            SECRET.into(),
        ],
    });
    let up = upstream().await;
    register_http_tool(&b, "files", &up.url).await;
    wait_for_tool(&b.gateway, "files").await;

    // A DPoP-bound tool token, as an agent holding its key gets one.
    let key = Arc::new(ProofKey::generate().unwrap().0);
    let jt = b
        .admin()
        .join_token(&"demo-agent".parse().unwrap(), 60)
        .await
        .unwrap()
        .join_token;
    let inst = b
        .anon()
        .with_dpop(Arc::clone(&key))
        .attest(&writ_core::api::AttestRequest {
            agent: "demo-agent".parse().unwrap(),
            join_token: Some(jt),
            oidc_token: None,
            jwt_svid: None,
        })
        .await
        .unwrap()
        .access_token;
    let task = b
        .as_token(&inst)
        .with_dpop(Arc::clone(&key))
        .start_task(&StartTask {
            intent: "read the files".into(),
            capabilities: vec![writ_core::Capability::parse_short("files:read").unwrap()],
            on_behalf_of: None,
            ttl: None,
            justification: None,
        })
        .await
        .unwrap();
    let tok = b
        .anon()
        .with_dpop(Arc::clone(&key))
        .exchange(&task.access_token, None, Some("files"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let url = format!("{}/files/items", b.gateway);
    let http = reqwest::Client::new();
    let call = |proof: String| {
        let r = http
            .get(&url)
            .header("authorization", format!("DPoP {tok}"))
            .header("dpop", proof);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let now = writ_core::Clock::now(&writ_core::SystemClock);
    let proof = key.proof("GET", &url, Some(&tok), None, now).unwrap();
    assert_eq!(call(proof.clone()).await, 200);
    // The proof again, as someone who copied it off the wire would.
    assert_eq!(call(proof).await, 401, "a replayed proof");

    let fired = |rule: &'static str| {
        let got = Arc::clone(&got);
        move || {
            let got = Arc::clone(&got);
            async move {
                got.lock().unwrap().iter().any(|(_, body)| {
                    let a: serde_json::Value = serde_json::from_slice(body).unwrap();
                    a["event"]["detail"]["rule"] == rule
                })
            }
        }
    };
    assert!(
        eventually(Duration::from_secs(15), fired("replayed-proof")).await,
        "no alert of the replayed proof reached the webhook"
    );

    // The token with a proof by a key that is not its own: a thief's.
    let thief = ProofKey::generate().unwrap().0;
    let foreign = thief.proof("GET", &url, Some(&tok), None, now).unwrap();
    assert_eq!(call(foreign).await, 401, "another key's proof");
    assert!(
        eventually(Duration::from_secs(15), fired("token-from-a-second-key")).await,
        "no alert of the second key reached the webhook"
    );

    // Each alert is signed, names the agent the token was issued to and
    // carries the gateway's record as its evidence.
    let alerts: Vec<serde_json::Value> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(headers, body)| {
            assert!(
                verify(headers, body),
                "an alert's signature does not verify"
            );
            serde_json::from_slice(body).unwrap()
        })
        .collect();
    for rule in ["replayed-proof", "token-from-a-second-key"] {
        let a = alerts
            .iter()
            .find(|a| a["event"]["detail"]["rule"] == rule)
            .unwrap();
        assert_eq!(a["type"], "writ.rule_fired");
        assert_eq!(a["event"]["agent"], "demo-agent", "{a}");
    }

    // The audit: the gateway's refusals, recorded as its own, and one
    // firing of each rule.
    let events: Vec<serde_json::Value> = b
        .admin()
        .audit(0, 10_000)
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| serde_json::from_str(&r.event).unwrap())
        .collect();
    for binding in ["replay", "wrong_key"] {
        let refused: Vec<_> = events
            .iter()
            .filter(|e| e["kind"] == "token_refused" && e["detail"]["binding"] == binding)
            .collect();
        assert_eq!(refused.len(), 1, "{binding}: {refused:?}");
        let r = refused[0];
        assert_eq!(r["actor"], "gateway:embedded", "{r}");
        assert_eq!(r["outcome"], "deny");
        assert_eq!(r["agent"], "demo-agent");
        assert_eq!(r["task"], task.task_id.as_str());
        assert_eq!(r["detail"]["tool"], "files");
    }
    for rule in ["replayed-proof", "token-from-a-second-key"] {
        let firings = events
            .iter()
            .filter(|e| e["kind"] == "rule_fired" && e["detail"]["rule"] == rule)
            .count();
        assert_eq!(firings, 1, "{rule}");
    }
    // Only alerted: whoever holds a stolen token cannot get the agent it
    // was issued to stopped by misusing it.
    let agent = b
        .admin()
        .agent(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    assert!(!agent.quarantined);
}

/// A gateway's word that a token was refused is taken only about a token
/// it could have seen: a refusal naming another agent than the token's,
/// or a token writ never issued, is kept as a `failure` naming no one, so
/// it fires no rule for anyone; a gateway records nothing but calls and
/// refused tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cannot_pin_a_replayed_proof_on_another_agent() {
    use serde_json::json;
    let b = Broker::start();
    b.agent("victim", &[]).await;
    let edge = b.admin().register_gateway("edge-1").await.unwrap().token;
    let up = upstream().await;
    crate::gateway_edges::tool_on(&b, "crm", &up.url, Some("edge-1")).await;
    let inst = b.attest("demo-agent").await.access_token;
    let t = b.start_task(&inst, &["crm:read"]).await.unwrap();
    let c = crate::gateway_edges::claims(
        &crate::gateway_edges::exchange(&b, &t.access_token, "crm", "read").await,
    );
    let now = writ_core::Clock::now(&writ_core::SystemClock).millis();
    let refusal = |agent: &str, jti: &serde_json::Value| {
        json!({
            "kind": "token_refused", "outcome": "deny", "actor": "x", "agent": agent,
            "instance": c["client_id"], "task": c["task"], "jti": jti,
            "reason": "DPoP proof was already used",
            "detail": {"tool": "crm", "method": "GET", "path": "/crm/x", "binding": "replay", "decided_at": now},
        })
    };
    let deliver = |batch: serde_json::Value| {
        let r = b
            .http()
            .post(b.url("/v1/gateway/decisions"))
            .bearer_auth(&edge)
            .json(&batch);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let status = deliver(json!({"first_seq": 1, "decisions": [
        refusal("demo-agent", &c["jti"]),
        refusal("victim", &c["jti"]),
        refusal("victim", &json!("made-up-jti")),
    ]}))
    .await;
    assert_eq!(status, 200);
    let mut quarantine = refusal("demo-agent", &c["jti"]);
    quarantine["kind"] = json!("agent_quarantine");
    assert_eq!(
        deliver(json!({"first_seq": 4, "decisions": [quarantine]})).await,
        400,
        "a gateway records calls and refused tokens only"
    );

    let events: Vec<writ_core::audit::AuditEvent> = b
        .admin()
        .audit(0, 10_000)
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| r.parsed().unwrap())
        .filter(|e| e.actor == "gateway:edge-1")
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let kept = events
        .iter()
        .find(|e| e.kind == writ_core::audit::AuditKind::TokenRefused)
        .unwrap();
    assert_eq!(kept.agent.as_deref(), Some("demo-agent"));
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.outcome == writ_core::audit::Outcome::Failure)
        .collect();
    assert_eq!(refused.len(), 2);
    for e in refused {
        assert_eq!(e.kind, writ_core::audit::AuditKind::ToolCall, "{e:?}");
        assert_eq!(e.agent, None);
        assert_eq!(e.detail["claimed"]["kind"], "token_refused");
        assert_eq!(e.detail["claimed"]["agent"], "victim");
    }
}
