//! `/metrics` on the broker's and the embedded gateway's listeners
//! (issue 23): an operator credential of any role reads them, nobody else
//! unless `--metrics-public` says so. (A real Prometheus scrapes them in
//! interop/python/test_prometheus.py.)

use crate::harness::{Broker, Opts, stdout};

fn create(b: &Broker, name: &str, role: &str) -> String {
    let out = b.cli(&[
        "admin", "token", "create", name, "--role", role, "--field", "token",
    ]);
    assert!(out.status.success(), "{out:?}");
    stdout(&out).trim().to_owned()
}

async fn scrape(b: &Broker, base: &str, token: Option<&str>) -> (u16, String) {
    let mut r = b.http().get(format!("{base}/metrics"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn metrics_are_read_only_with_an_operator_credential_of_any_role() {
    let b = Broker::start();
    let auditor = create(&b, "prom", "auditor");
    let author = create(&b, "pat", "policy-author");
    let agent = b.attest("demo-agent").await;
    let gateway = b.gateway.clone();
    for base in [b.addr.as_str(), gateway.as_str()] {
        for token in [None, Some("nope"), Some(agent.access_token.as_str())] {
            let (status, body) = scrape(&b, base, token).await;
            assert_eq!(status, 401, "{base} {token:?}: {body}");
            assert!(!body.contains("writ_"), "{body}");
        }
        for token in [&auditor, &author] {
            let (status, body) = scrape(&b, base, Some(token)).await;
            assert_eq!(status, 200, "{base}: {body}");
            assert!(
                body.contains("# TYPE writ_tokens_issued_total counter"),
                "{body}"
            );
            assert!(
                body.contains("# TYPE writ_http_request_duration_seconds histogram"),
                "{body}"
            );
            assert!(body.contains("route=\"/metrics\""), "{body}");
        }
    }
    // What a gateway asks the broker: who a credential names, any role.
    let me: serde_json::Value = b
        .http()
        .get(b.url("/v1/admin/whoami"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("prom"), Some("auditor"))
    );
    let r = b
        .http()
        .get(b.url("/v1/admin/whoami"))
        .bearer_auth(&agent.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The gauges of what is live come from the store at each scrape.
    let (_, body) = scrape(&b, &b.addr, Some(&auditor)).await;
    assert!(body.contains("writ_live_grants "), "{body}");
    assert!(body.contains("writ_approvals_pending 0"), "{body}");
}

#[tokio::test]
async fn metrics_public_opens_metrics_to_anyone() {
    let mut opts = Opts::default();
    opts.extra.push("--metrics-public".into());
    let b = Broker::start_with(opts);
    let gateway = b.gateway.clone();
    for base in [b.addr.as_str(), gateway.as_str()] {
        let (status, body) = scrape(&b, base, None).await;
        assert_eq!(status, 200, "{base}: {body}");
        assert!(body.contains("writ_attestations_total"), "{body}");
    }
}
