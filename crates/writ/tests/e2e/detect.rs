//! Detection and response, end to end: an agent probing what it was not
//! granted through the gateway is noticed by a rule, an operator's webhook
//! gets the signed alert, the agent is quarantined and refused, and the
//! automatic release happens and is audited; no person watching.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::gateway::{register_http_tool, upstream, wait_for_tool};
use crate::harness::{Broker, Opts, eventually, json};

pub(crate) const SECRET: &str = "e2e-alert-secret-0123456789";
const RULE: &str = "quarantine-after-refused-calls";

/// What the webhook receiver got: headers and body of each POST.
pub(crate) type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// An operator's alert receiver (axum), answering 503 to the first
/// delivery so the broker has to retry.
pub(crate) async fn receiver() -> (String, Got) {
    let got: Got = Arc::default();
    let seen = Arc::clone(&got);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (seen, calls) = (Arc::clone(&seen), Arc::clone(&calls));
            async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                seen.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, got)
}

/// Checks the signature as a receiver would, with the RustCrypto HMAC.
pub(crate) fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let ts = headers["x-writ-timestamp"].to_str().unwrap();
    let sig = headers["x-writ-signature"].to_str().unwrap();
    let Some(hex_sig) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = (0..hex_sig.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex_sig[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

fn broker_with_rules(webhook: &str) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasks.cedar"),
        include_str!("../../../../examples/policies/tasks.cedar"),
    )
    .unwrap();
    // The example pack's rule, with a threshold and a release short
    // enough for a test.
    std::fs::write(
        dir.path().join("detect.rules.toml"),
        format!(
            r#"
[[rule]]
id = "{RULE}"
description = "3 calls refused at a gateway within 60 seconds"
on = "gateway_denial"
threshold = 3
window_secs = 60
actions = ["alert", "quarantine"]
release_after_secs = 3
"#
        ),
    )
    .unwrap();
    let b = Broker::start_with(Opts {
        dev: true,
        policy_dir: Some(dir.path().to_owned()),
        extra: vec![
            "--sweep-interval-ms".into(),
            "50".into(),
            "--alert-webhook".into(),
            webhook.into(),
            "--alert-webhook-secret".into(),
            SECRET.into(),
        ],
    });
    (b, dir)
}

async fn call(method: reqwest::Method, url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_ungranted_tools_gets_the_agent_quarantined_alerted_and_released_by_a_rule() {
    let (hook, got) = receiver().await;
    let (b, _dir) = broker_with_rules(&hook);
    let up = upstream().await;
    register_http_tool(&b, "files", &up.url).await;
    wait_for_tool(&b.gateway, "files").await;

    let inst = b.attest("demo-agent").await.access_token;
    let task = b.start_task(&inst, &["files:read"]).await.unwrap();
    let tok = b
        .anon()
        .exchange(&task.access_token, None, Some("files"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let url = format!("{}/files/items", b.gateway);
    assert_eq!(call(reqwest::Method::GET, &url, &tok).await, 200);

    // The agent probes what its read-only token was never granted.
    for m in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        assert_eq!(call(m, &url, &tok).await, 403);
    }

    // The rule fires: the webhook gets the alert, signed (after one retry).
    assert!(
        eventually(Duration::from_secs(15), || async {
            !got.lock().unwrap().is_empty()
        })
        .await,
        "no alert reached the webhook"
    );
    let (headers, body) = got.lock().unwrap()[0].clone();
    assert!(
        verify(&headers, &body),
        "the alert's signature does not verify"
    );
    let mut tampered = body.to_vec();
    tampered.push(b' ');
    assert!(!verify(&headers, &tampered));
    let alert: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(alert["type"], "writ.rule_fired");
    assert_eq!(alert["event"]["kind"], "rule_fired");
    assert_eq!(alert["event"]["agent"], "demo-agent");
    assert_eq!(alert["event"]["detail"]["rule"], RULE);
    assert_eq!(alert["event"]["detail"]["count"], 3);
    assert_eq!(
        alert["event"]["detail"]["evidence"]["records"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Quarantined: the very next call is refused, and so is a new instance.
    assert!(
        eventually(Duration::from_secs(5), || async {
            call(reqwest::Method::GET, &url, &tok).await != 200
        })
        .await
    );
    let agent = b
        .admin()
        .agent(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    assert!(agent.quarantined);
    let e = b.start_task(&inst, &["files:read"]).await.unwrap_err();
    assert!(matches!(e.status(), Some(401 | 403)), "{e}");

    // The release comes by itself and is audited as the rule's.
    assert!(
        eventually(Duration::from_secs(15), || async {
            !b.admin()
                .agent(&"demo-agent".parse().unwrap())
                .await
                .unwrap()
                .quarantined
        })
        .await,
        "the agent was never released"
    );
    let records = b.admin().audit(0, 10_000).await.unwrap().records;
    let events: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::from_str(&r.event).unwrap())
        .collect();
    let by_rule = format!("rule:{RULE}");
    let fired: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "rule_fired")
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["detail"]["actions"]["alert"], "alerted");
    assert!(fired[0]["detail"]["actions"]["quarantine"]["release_at"].is_number());
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "agent_quarantine" && e["actor"] == by_rule.as_str())
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "agent_release" && e["actor"] == by_rule.as_str()),
        "the release is not audited as the rule's"
    );
    // Released: the agent works again.
    let inst = b.attest("demo-agent").await.access_token;
    assert!(b.start_task(&inst, &["files:read"]).await.is_ok());

    // The same range replayed against the rules file, in shadow: it
    // would fire once, for the same agent, without acting.
    let out = b.cli(&[
        "rules",
        "test",
        "--rules",
        _dir.path().join("detect.rules.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let shadow = json(&out);
    let would = shadow["would_fire"].as_array().unwrap();
    assert_eq!(would.len(), 1, "{shadow}");
    assert_eq!(would[0]["rule"], RULE);
    assert_eq!(would[0]["agent"], "demo-agent");
    let fired_again = b.admin().audit(0, 10_000).await.unwrap().records;
    assert_eq!(
        fired_again
            .iter()
            .filter(|r| r.event.contains("\"rule_fired\""))
            .count(),
        1,
        "replaying acted"
    );
}

/// Another agent's refusals never move this one's count: a rule is no way
/// to get someone else stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_s_refusals_never_quarantine_another() {
    let (hook, _got) = receiver().await;
    let (b, _dir) = broker_with_rules(&hook);
    let up = upstream().await;
    register_http_tool(&b, "files", &up.url).await;
    wait_for_tool(&b.gateway, "files").await;
    b.agent("bystander", &[]).await;

    let tok_for = |agent: &'static str| {
        let b = &b;
        async move {
            let inst = b.attest(agent).await.access_token;
            let task = b.start_task(&inst, &["files:read"]).await.unwrap();
            b.anon()
                .exchange(&task.access_token, None, Some("files"), Some("read"))
                .await
                .unwrap()
                .access_token
        }
    };
    let prober = tok_for("demo-agent").await;
    let bystander = tok_for("bystander").await;
    let url = format!("{}/files/items", b.gateway);
    // Two refusals each: neither reaches three.
    for tok in [&prober, &bystander, &prober, &bystander] {
        assert_eq!(call(reqwest::Method::POST, &url, tok).await, 403);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(call(reqwest::Method::GET, &url, &bystander).await, 200);
    assert_eq!(call(reqwest::Method::GET, &url, &prober).await, 200);
    // The prober's third: only the prober is stopped.
    assert_eq!(call(reqwest::Method::POST, &url, &prober).await, 403);
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.admin()
                .agent(&"demo-agent".parse().unwrap())
                .await
                .unwrap()
                .quarantined
        })
        .await
    );
    assert!(
        !b.admin()
            .agent(&"bystander".parse().unwrap())
            .await
            .unwrap()
            .quarantined
    );
    assert_eq!(call(reqwest::Method::GET, &url, &bystander).await, 200);
}

/// A rules file that does not validate stops the start, naming its line.
#[test]
fn a_bad_rules_file_is_refused_at_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasks.cedar"),
        include_str!("../../../../examples/policies/tasks.cedar"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.rules.toml"),
        "[[rule]]\nid = \"x\"\non = \"gateway_denial\"\nthreshold = 0\nwindow_secs = 60\nactions = [\"alert\"]\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--policy-dir"])
        .arg(dir.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.rules.toml:1"), "{err}");
    assert!(err.contains("threshold"), "{err}");

    // `writ rules check` says the same, and accepts the example pack.
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["rules", "check"])
        .arg(dir.path().join("bad.rules.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["rules", "check", "../../examples/policies"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rules = json(&out);
    assert!(
        rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == RULE && r["threshold"] == 5 && r["window_secs"] == 60),
        "{rules}"
    );
}

/// Rules are reloaded with the policy directory: a bad edit is refused
/// (audited, naming the line) and the rules before stay live; a good one
/// goes live and acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_with_the_policy_directory_and_a_bad_edit_is_refused() {
    let (hook, _got) = receiver().await;
    let (b, dir) = broker_with_rules(&hook);
    let up = upstream().await;
    register_http_tool(&b, "files", &up.url).await;
    wait_for_tool(&b.gateway, "files").await;
    let rules = dir.path().join("detect.rules.toml");
    let audit_has = |needle: &'static str| {
        let b = &b;
        async move {
            b.admin()
                .audit(0, 10_000)
                .await
                .unwrap()
                .records
                .iter()
                .any(|r| r.event.contains(needle))
        }
    };

    std::fs::write(
        &rules,
        "[[rule]]\nid = \"x\"\non = \"gateway_denial\"\nthreshold = 1\nwindow_secs = 60\nactions = [\"quarantine\"]\nrelease_after = 5\n",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || audit_has("detect.rules.toml:7")).await,
        "the bad rules file was not refused in the audit"
    );

    std::fs::write(
        &rules,
        "[[rule]]\nid = \"one-strike\"\non = \"gateway_denial\"\nthreshold = 1\nwindow_secs = 60\nactions = [\"quarantine\"]\n",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || audit_has("one-strike")).await,
        "the new rules were not loaded"
    );
    let inst = b.attest("demo-agent").await.access_token;
    let task = b.start_task(&inst, &["files:read"]).await.unwrap();
    let tok = b
        .anon()
        .exchange(&task.access_token, None, Some("files"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let url = format!("{}/files/items", b.gateway);
    assert_eq!(call(reqwest::Method::POST, &url, &tok).await, 403);
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.admin()
                .agent(&"demo-agent".parse().unwrap())
                .await
                .unwrap()
                .quarantined
        })
        .await,
        "the reloaded rule did not act"
    );
}
