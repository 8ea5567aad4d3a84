//! Framework evidence from live state: after a short first session on a
//! dev server (attest, task, exchange, a call through the gateway, a
//! static upstream secret set), every framework's report lists every item
//! of its mapping with a status, over HTTP and through the CLI; the
//! evidence links to audit records; bad input is a clear 400.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::gateway::{register_http_tool, upstream, wait_for_tool};
use crate::harness::{ADMIN, BIN, Broker, eventually, json};

const FRAMEWORKS: [&str; 6] = [
    "owasp-nhi",
    "owasp-agentic",
    "nist-ai-rmf",
    "nist-csf",
    "mitre-atlas",
    "csa-maestro",
];

/// Items each framework's mapping holds at least.
fn min_items(framework: &str) -> usize {
    match framework {
        "csa-maestro" => 7,
        "nist-ai-rmf" => 9,
        _ => 10,
    }
}

async fn get(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn check_items(framework: &str, r: &Value) {
    assert_eq!(r["framework"], framework, "{r}");
    assert!(
        r["framework_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    let items = r["items"].as_array().unwrap();
    assert!(items.len() >= min_items(framework), "{framework}: {r}");
    for i in items {
        assert!(i["id"].as_str().is_some_and(|s| !s.is_empty()), "{i}");
        assert!(i["title"].as_str().is_some_and(|s| !s.is_empty()), "{i}");
        assert!(
            ["pass", "gap", "not-applicable"].contains(&i["status"].as_str().unwrap_or("")),
            "{framework}: {i}"
        );
        assert!(i["evidence"].is_array(), "{i}");
    }
}

#[tokio::test]
async fn evidence_reports_list_every_item_of_every_framework_with_a_status() {
    let b = Broker::start();
    let up = upstream().await;
    register_http_tool(&b, "crm", &up.url).await;
    wait_for_tool(&b.gateway, "crm").await;
    // A static upstream secret the gateway injects: a standing secret.
    let mut child = Command::new(BIN)
        .args(["tool", "secret", "set", "crm", "--header", "authorization"])
        .env("WRIT_ADDR", &b.addr)
        .env("WRIT_TOKEN", ADMIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"Bearer upstream-credential\n").unwrap();
    }
    assert!(child.wait().unwrap().success());

    // The first session: attest, task, exchange, a call through the gateway.
    let inst = b.attest("demo-agent").await.access_token;
    let t = b.start_task(&inst, &["crm:read"]).await.unwrap();
    let tok = b
        .anon()
        .exchange(&t.access_token, None, Some("crm"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let url = format!("{}/crm/customers", b.gateway);
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&url, &tok).await == 200
        })
        .await,
        "the gateway never let the call through"
    );

    let http = b.http();
    // The gateway delivers its decisions to the chain in the background.
    assert!(
        eventually(Duration::from_secs(15), || async {
            let r: Value = http
                .get(b.url("/v1/reports/evidence?framework=owasp-nhi"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["items"].as_array().is_some_and(|items| {
                items.iter().any(|i| {
                    i["evidence"].as_array().is_some_and(|e| {
                        e.iter()
                            .any(|e| e["check"] == "gateway-mediation" && e["status"] == "pass")
                    })
                })
            })
        })
        .await,
        "the gateway's call never reached the evidence"
    );

    for framework in FRAMEWORKS {
        // Over HTTP.
        let resp = http
            .get(b.url(&format!(
                "/v1/reports/evidence?framework={framework}&format=json"
            )))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{framework}");
        let r: Value = resp.json().await.unwrap();
        check_items(framework, &r);
        // Through the CLI, in each form.
        let out = b.cli(&[
            "report",
            "evidence",
            "--framework",
            framework,
            "--format",
            "json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli = json(&out);
        check_items(framework, &cli);
        assert_eq!(
            cli["items"].as_array().unwrap().len(),
            r["items"].as_array().unwrap().len()
        );
        for (format, needle) in [
            ("table", "pass"),
            ("markdown", "| id | title | status | evidence |"),
            ("html", "<!doctype html>"),
        ] {
            let out = b.cli(&[
                "report",
                "evidence",
                "--framework",
                framework,
                "--format",
                format,
            ]);
            assert!(out.status.success(), "{framework} {format}");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(needle), "{framework} {format}: {text}");
            if format == "html" {
                assert!(!text.contains("<script"), "no script in the page");
                assert!(!text.contains(" src="), "no external assets");
            }
        }
    }

    // The live evidence itself: OWASP NHI long-lived secrets sees the
    // static secret set for crm, with its audit record; audit integrity
    // verified; attestation linked to its records.
    let r: Value = http
        .get(b.url("/v1/reports/evidence?framework=owasp-nhi"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = |id: &str| {
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {r}"))
            .clone()
    };
    let evidence = |item: &Value, check: &str| {
        item["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["check"] == check)
            .unwrap_or_else(|| panic!("no {check} in {item}"))
            .clone()
    };
    let nhi7 = item("NHI7:2025");
    assert_eq!(nhi7["status"], "gap", "{nhi7}");
    let secrets = evidence(&nhi7, "static-secrets");
    assert!(secrets["summary"].as_str().unwrap().contains("crm"));
    assert!(
        !secrets["audit"].as_array().unwrap().is_empty(),
        "{secrets}"
    );
    assert_eq!(evidence(&nhi7, "token-lifetimes")["status"], "pass");
    assert_eq!(evidence(&nhi7, "long-lived-tokens")["status"], "pass");
    let nhi4 = item("NHI4:2025");
    // The session's tokens were bearer tokens (attested without DPoP), and
    // the broker issues them: sender-constrained is a gap, linked to them.
    let sender = evidence(&nhi4, "sender-constrained");
    assert_eq!(sender["status"], "gap", "{sender}");
    assert!(
        sender["summary"]
            .as_str()
            .unwrap()
            .contains("bearer tokens were issued"),
        "{sender}"
    );
    assert!(!sender["audit"].as_array().unwrap().is_empty(), "{sender}");
    assert_eq!(nhi4["status"], "gap", "{nhi4}");
    let attest = evidence(&nhi4, "attestation");
    assert_eq!(attest["status"], "pass", "{attest}");
    let link = &attest["audit"][0];
    let seq = link["seq"].as_u64().unwrap();
    let rec: Value = http
        .get(b.url(link["href"].as_str().unwrap()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rec["records"][0]["seq"], seq,
        "the link leads to the record"
    );
    let integrity = evidence(&item("NHI10:2025"), "audit-integrity");
    assert_eq!(integrity["status"], "pass", "{integrity}");

    // Bad input: a clear 400 that names the valid frameworks; no admin, 401.
    for bad in [
        "framework=iso-42001",
        "",
        "framework=owasp-nhi&format=pdf",
        "framework=owasp-nhi&colour=red",
    ] {
        let resp = http
            .get(b.url(&format!("/v1/reports/evidence?{bad}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(!detail.is_empty(), "{bad}: {body}");
        if bad.starts_with("framework=iso") || bad.is_empty() {
            assert!(
                detail.contains("owasp-nhi") && detail.contains("csa-maestro"),
                "{detail}"
            );
        }
    }
    let anon = http
        .get(b.url("/v1/reports/evidence?framework=owasp-nhi"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let out = b.cli(&["report", "evidence", "--framework", "iso-42001"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("owasp-nhi") && err.contains("mitre-atlas"),
        "{err}"
    );
}

/// Under `--require-dpop` an attestation without a DPoP proof is refused,
/// every token issued is bound to the instance's key, and the evidence for
/// sender-constrained tokens passes, from the records of those tokens.
#[tokio::test]
async fn sender_constrained_evidence_passes_only_when_every_token_is_bound() {
    use std::sync::Arc;
    let b = Broker::start_with(crate::harness::Opts {
        extra: vec!["--require-dpop".into()],
        ..crate::harness::Opts::default()
    });
    let up = upstream().await;
    register_http_tool(&b, "crm", &up.url).await;
    let name: writ_core::AgentName = "demo-agent".parse().unwrap();
    let jt = |b: &Broker| {
        let name = name.clone();
        let admin = b.admin();
        async move { admin.join_token(&name, 600).await.unwrap().join_token }
    };
    let req = |jt: String| writ_core::api::AttestRequest {
        agent: name.clone(),
        join_token: Some(jt),
        oidc_token: None,
        jwt_svid: None,
    };
    // Without a proof: refused, and nothing issued.
    let e = b.anon().attest(&req(jt(&b).await)).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(e.to_string().contains("requires DPoP"), "{e}");
    // With one: every token of the session is bound.
    let key = Arc::new(writ_core::dpop::ProofKey::generate().unwrap().0);
    let inst = b
        .anon()
        .with_dpop(Arc::clone(&key))
        .attest(&req(jt(&b).await))
        .await
        .unwrap()
        .access_token;
    let t = b
        .as_token(&inst)
        .with_dpop(Arc::clone(&key))
        .start_task(&writ_core::api::StartTask {
            intent: "read the crm".into(),
            capabilities: vec![writ_core::Capability::parse_short("crm:read").unwrap()],
            on_behalf_of: None,
            ttl: None,
            justification: None,
        })
        .await
        .unwrap();
    let tok = b
        .anon()
        .with_dpop(Arc::clone(&key))
        .exchange(&t.access_token, None, Some("crm"), Some("read"))
        .await
        .unwrap();
    assert_eq!(tok.token_type, "DPoP");
    let r: Value = b
        .http()
        .get(b.url("/v1/reports/evidence?framework=owasp-nhi"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nhi4 = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "NHI4:2025")
        .unwrap();
    let sender = nhi4["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["check"] == "sender-constrained")
        .unwrap();
    assert_eq!(sender["status"], "pass", "{sender}");
    assert!(
        sender["summary"]
            .as_str()
            .unwrap()
            .contains("3 token(s) issued bound to a DPoP key, 0 bearer"),
        "{sender}"
    );
    assert!(!sender["audit"].as_array().unwrap().is_empty(), "{sender}");
}
