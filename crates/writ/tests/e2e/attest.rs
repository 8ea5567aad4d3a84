//! Attestation: one-time join tokens and OIDC federation.

use std::time::{Duration, Instant};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use writ_core::api::{AttestRequest, Attestation, RegisterAgent};

use crate::harness::{Broker, eventually};

fn attest_req(agent: &str, jt: Option<&str>, oidc: Option<&str>) -> AttestRequest {
    AttestRequest {
        agent: agent.parse().unwrap(),
        join_token: jt.map(str::to_owned),
        oidc_token: oidc.map(str::to_owned),
        jwt_svid: None,
    }
}

async fn audit_events(b: &Broker) -> Vec<serde_json::Value> {
    b.admin()
        .audit(0, 1000)
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| serde_json::from_str(&r.event).unwrap())
        .collect()
}

#[tokio::test]
async fn a1_join_token_used_twice_also_concurrently() {
    let b = Broker::start();
    let name = "demo-agent".parse().unwrap();
    let jt = b.admin().join_token(&name, 600).await.unwrap().join_token;
    let mut handles = Vec::new();
    for _ in 0..16 {
        let c = b.anon();
        let req = attest_req("demo-agent", Some(&jt), None);
        handles.push(tokio::spawn(async move { c.attest(&req).await }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.status(), Some(401), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (1, 15));
    // Reuse later is refused as well, and every refusal is audited.
    let e = b
        .anon()
        .attest(&attest_req("demo-agent", Some(&jt), None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already used"), "{e}");
    let failures = audit_events(&b)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "attest" && e["outcome"] == "failure")
        .count();
    assert_eq!(failures, 16);
}

#[tokio::test]
async fn join_token_expiry_and_binding_are_honoured() {
    let b = Broker::start();
    b.agent("other", &[]).await;
    let admin = b.admin();
    let jt = admin
        .join_token(&"demo-agent".parse().unwrap(), 1)
        .await
        .unwrap()
        .join_token;
    // Another agent's token does not attest this one.
    let e = b
        .anon()
        .attest(&attest_req("other", Some(&jt), None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("another agent"), "{e}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = b
        .anon()
        .attest(&attest_req("demo-agent", Some(&jt), None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    let e = b
        .anon()
        .attest(&attest_req(
            "demo-agent",
            Some("wjt_not-a-real-token"),
            None,
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown"), "{e}");
    let e = b
        .anon()
        .attest(&attest_req("nobody", Some(&jt), None))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    // Both proofs, or none: a bad request.
    let e = b
        .anon()
        .attest(&attest_req("demo-agent", None, None))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    // A join token lifetime beyond the maximum is refused.
    let e = admin
        .join_token(&"demo-agent".parse().unwrap(), 10 * 86_400)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
}

/// An outside OIDC issuer: an Ed25519 key, its JWKS, and tokens minted with
/// the `jsonwebtoken` crate (not writ's signing code).
struct Issuer {
    pkcs8: Vec<u8>,
    jwks: serde_json::Value,
}

impl Issuer {
    fn new(kid: &str) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}]});
        Self { pkcs8, jwks }
    }

    fn mint(&self, kid: &str, claims: serde_json::Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8),
        )
        .unwrap()
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "outside tokens are minted against the real clock the broker reads"
)]
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(iss: &str, aud: &str, sub: &str, exp_in: i64) -> serde_json::Value {
    json!({"iss": iss, "aud": aud, "sub": sub, "iat": now(), "exp": now() + exp_in})
}

#[tokio::test]
async fn a2_oidc_attestation_checks_issuer_key_audience_subject_and_time() {
    let b = Broker::start();
    let issuer = Issuer::new("k1");
    let iss = "https://ci.example.com";
    let req = RegisterAgent {
        name: "ci-agent".parse().unwrap(),
        attestation: Attestation::Oidc {
            issuer: iss.into(),
            jwks_uri: None,
            jwks: Some(issuer.jwks.clone()),
            audience: "writ".into(),
            subject: "repo:acme/app:ref:refs/heads/main".into(),
            algorithms: vec![],
        },
        attributes: Default::default(),
        workload: None,
    };
    b.admin().register_agent(&req).await.unwrap();
    let sub = "repo:acme/app:ref:refs/heads/main";

    let good = issuer.mint("k1", claims(iss, "writ", sub, 300));
    let att = b
        .anon()
        .attest(&attest_req("ci-agent", None, Some(&good)))
        .await
        .unwrap();
    assert!(b.active(&att.access_token).await);

    let other = Issuer::new("k1");
    let cases = [
        (
            "untrusted iss",
            issuer.mint("k1", claims("https://evil.example", "writ", sub, 300)),
        ),
        ("wrong key", other.mint("k1", claims(iss, "writ", sub, 300))),
        (
            "wrong aud",
            issuer.mint("k1", claims(iss, "someone-else", sub, 300)),
        ),
        (
            "wrong sub",
            issuer.mint("k1", claims(iss, "writ", "repo:acme/other", 300)),
        ),
        (
            "expired beyond leeway",
            issuer.mint("k1", claims(iss, "writ", sub, -31)),
        ),
        (
            "unknown kid",
            issuer.mint("k2", claims(iss, "writ", sub, 300)),
        ),
    ];
    for (what, tok) in cases {
        let e = b
            .anon()
            .attest(&attest_req("ci-agent", None, Some(&tok)))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(401), "{what}: {e}");
    }
    // A join token is not a way in for an OIDC agent.
    let e = b
        .admin()
        .join_token(&"ci-agent".parse().unwrap(), 60)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
}

#[tokio::test]
async fn oidc_jwks_uri_is_fetched_and_a_dead_issuer_fails_closed_in_time() {
    let b = Broker::start();
    let issuer = Issuer::new("k1");
    // A JWKS server that accepts connections and never answers (A3).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    let req = RegisterAgent {
        name: "k8s-agent".parse().unwrap(),
        attestation: Attestation::Oidc {
            issuer: "https://k8s.example".into(),
            jwks_uri: Some(format!("http://{silent_addr}/jwks")),
            jwks: None,
            audience: "writ".into(),
            subject: "system:serviceaccount:agents:summariser".into(),
            algorithms: vec![],
        },
        attributes: Default::default(),
        workload: None,
    };
    b.admin().register_agent(&req).await.unwrap();
    let tok = issuer.mint(
        "k1",
        claims(
            "https://k8s.example",
            "writ",
            "system:serviceaccount:agents:summariser",
            300,
        ),
    );
    let started = Instant::now();
    let c = b.anon();
    let attempt =
        tokio::spawn(async move { c.attest(&attest_req("k8s-agent", None, Some(&tok))).await });
    // The broker stays responsive while the fetch hangs.
    let http = b.http();
    let url = b.url("/healthz");
    assert!(
        eventually(Duration::from_secs(2), || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await
    );
    let e = attempt.await.unwrap().unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(e.to_string().contains("JWKS"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn j7_jku_header_is_refused_without_fetching() {
    let b = Broker::start();
    let issuer = Issuer::new("k1");
    // Count connections to the would-be key URL: there must be none.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let trap_addr = trap.local_addr().unwrap();
    trap.set_nonblocking(true).unwrap();
    let req = RegisterAgent {
        name: "ci-agent".parse().unwrap(),
        attestation: Attestation::Oidc {
            issuer: "https://ci.example.com".into(),
            jwks_uri: None,
            jwks: Some(issuer.jwks.clone()),
            audience: "writ".into(),
            subject: "s".into(),
            algorithms: vec![],
        },
        attributes: Default::default(),
        workload: None,
    };
    b.admin().register_agent(&req).await.unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some("k1".into());
    h.jku = Some(format!("http://{trap_addr}/keys"));
    let tok = jsonwebtoken::encode(
        &h,
        &claims("https://ci.example.com", "writ", "s", 300),
        &jsonwebtoken::EncodingKey::from_ed_der(&issuer.pkcs8),
    )
    .unwrap();
    let e = b
        .anon()
        .attest(&attest_req("ci-agent", None, Some(&tok)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("jku"), "{e}");
    assert!(trap.accept().is_err(), "writ fetched the jku URL");
}
