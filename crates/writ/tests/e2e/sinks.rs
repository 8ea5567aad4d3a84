//! Audit sinks, end to end: a sink that is down (here, one that accepts
//! connections and never answers) never holds up a decision, falls
//! behind visibly, and only the roles that should can see or test sinks.

use std::time::{Duration, Instant};

use writ_core::api::Role;

use crate::harness::{Broker, Opts, eventually, json};

const SECRET: &str = "e2e-sink-secret-canary-0123456789";

/// A receiver that takes connections and never answers: every delivery
/// runs into its time limit.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (url, task)
}

fn with_sink(url: &str) -> (Opts, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("writ.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[sink]]\nname = \"stuck\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let mut opts = Opts::default();
    opts.extra
        .extend(["--config".to_owned(), cfg.display().to_string()]);
    (opts, dir)
}

async fn lag_records(b: &Broker) -> Option<f64> {
    let body = b
        .http()
        .get(b.url("/metrics"))
        .bearer_auth(crate::harness::ADMIN)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("writ_sink_lag_records{sink=\"stuck\"} "))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_down_sink_never_blocks_decisions() {
    let (url, hole) = black_hole().await;
    let (opts, _cfg) = with_sink(&url);
    let b = Broker::start_with(opts);
    let inst = b.attest("demo-agent").await;
    let started = Instant::now();
    for _ in 0..30 {
        b.start_task(&inst.access_token, &["tickets:read"])
            .await
            .unwrap();
    }
    // The sink's first delivery waits 10 s for an answer that never comes;
    // issuance goes on meanwhile.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "issuance took {:?}",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            lag_records(&b).await.is_some_and(|n| n >= 30.0)
        })
        .await,
        "the lag metric did not show the records behind"
    );
    let list = json(&b.cli(&["sink", "list"]));
    assert_eq!(list[0]["name"], "stuck");
    assert!(list[0]["lag_records"].as_u64().unwrap() >= 30);
    assert_eq!(list[0]["cursor"], 0);
    hole.abort();
}

#[tokio::test]
async fn sinks_are_listed_for_auditors_tested_by_admins_and_never_show_their_secret() {
    let (url, hole) = black_hole().await;
    let (opts, _cfg) = with_sink(&format!("{url}?key=query-canary"));
    let b = Broker::start_with(opts);
    let admin = b.admin();
    let auditor = admin
        .create_admin_token("aud", Role::Auditor)
        .await
        .unwrap();
    let operator = admin
        .create_admin_token("ops", Role::Operator)
        .await
        .unwrap();

    let listed = b.as_token(&auditor.token).sinks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].target, url);
    let text = b
        .http()
        .get(b.url("/v1/sinks"))
        .bearer_auth(&auditor.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains(SECRET) && !text.contains("query-canary"),
        "{text}"
    );

    let refused = |r: reqwest::Response| r.status().as_u16();
    for (token, path, want) in [
        (operator.token.as_str(), "/v1/sinks", 403),
        ("not-a-credential", "/v1/sinks", 401),
    ] {
        let r = b
            .http()
            .get(b.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(r), want, "{path}");
    }
    for (token, path, want) in [
        (auditor.token.as_str(), "/v1/sinks/stuck/test", 403),
        (operator.token.as_str(), "/v1/sinks/stuck/test", 403),
        (crate::harness::ADMIN, "/v1/sinks/nope/test", 404),
    ] {
        let r = b
            .http()
            .post(b.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused(r), want, "{path}");
    }
    // Every log line the broker wrote so far: no secret there either.
    assert!(!b.stdout().concat().contains(SECRET));
    hole.abort();
}
