//! Audit sinks, end to end: a sink that is down (here, one that accepts
//! connections and never answers) never holds up a decision, falls
//! behind visibly, and only the roles that should can see or test sinks.

use std::sync::{Arc, Mutex};
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

/// What the receiver saw: each batch's sequence numbers, and the most
/// deliveries it ever had in flight at once.
#[derive(Default)]
struct Seen {
    batches: Vec<Vec<u64>>,
    in_flight: usize,
    most_in_flight: usize,
}

/// A webhook receiver that holds each delivery a moment, so that two
/// deliverers at once would overlap.
async fn slow_receiver() -> (String, Arc<Mutex<Seen>>) {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/in",
        axum::routing::post(move |body: axum::body::Bytes| {
            let s = Arc::clone(&s);
            async move {
                // Out of flight however the handler ends (a killed
                // replica's connection drops it midway).
                struct Flight(Arc<Mutex<Seen>>);
                impl Drop for Flight {
                    fn drop(&mut self) {
                        self.0.lock().unwrap().in_flight -= 1;
                    }
                }
                {
                    let mut g = s.lock().unwrap();
                    g.in_flight += 1;
                    g.most_in_flight = g.most_in_flight.max(g.in_flight);
                }
                let flight = Flight(Arc::clone(&s));
                tokio::time::sleep(Duration::from_millis(30)).await;
                drop(flight);
                let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let mut g = s.lock().unwrap();
                if doc["type"] == "writ.audit" {
                    let seqs = doc["records"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r["seq"].as_u64().unwrap())
                        .collect();
                    g.batches.push(seqs);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, seen)
}

/// Two replicas on one PostgreSQL database deliver each sink's records
/// once between them (one holds the lease at a time), in order; killing
/// one loses nothing.
#[tokio::test]
async fn replicas_deliver_a_sink_one_at_a_time_and_a_killed_one_loses_nothing() {
    let (url, seen) = slow_receiver().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("writ.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[sink]]\nname = \"siem\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let Some((x, y, _shared)) = crate::replicas::pair(&["--config", &cfg]) else {
        return;
    };
    for r in [&x, &y] {
        let inst = r.attest("demo-agent").await;
        for _ in 0..10 {
            r.start_task(&inst.access_token, &["tickets:read"])
                .await
                .unwrap();
        }
    }
    // The replica holding the sink's lease is killed, mid-stream.
    let holder = x.admin().sinks().await.unwrap()[0].holder.clone().unwrap();
    let pid = |r: &Broker| format!("replica-{}-", r.pid().unwrap());
    let (mut a, b) = if holder.starts_with(&pid(&x)) {
        (x, y)
    } else {
        (y, x)
    };
    assert!(holder.starts_with(&pid(&a)), "{holder}");
    a.kill9();
    let inst = b.attest("demo-agent").await;
    for _ in 0..10 {
        b.start_task(&inst.access_token, &["tickets:read"])
            .await
            .unwrap();
    }
    let head = b.admin().audit_last(1).await.unwrap().next;
    let all_there = || {
        let g = seen.lock().unwrap();
        let got: std::collections::BTreeSet<u64> = g.batches.iter().flatten().copied().collect();
        (1..=head).all(|s| got.contains(&s))
    };
    // A lease left by the killed replica lapses within 30 s.
    assert!(
        eventually(Duration::from_secs(60), || {
            let done = all_there();
            async move { done }
        })
        .await,
        "not every record arrived"
    );
    let g = seen.lock().unwrap();
    assert_eq!(g.most_in_flight, 1, "two replicas delivered at once");
    let mut upto = 0;
    for batch in &g.batches {
        assert!(batch.windows(2).all(|w| w[1] == w[0] + 1), "{batch:?}");
        assert!(batch[0] <= upto + 1, "gap after {upto}: {batch:?}");
        upto = upto.max(*batch.last().unwrap());
    }
}
