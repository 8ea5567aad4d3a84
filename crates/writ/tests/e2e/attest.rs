//! Attestation: one-time join tokens and OIDC federation.

use std::time::{Duration, Instant};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use writ_core::api::{AttestRequest, Attestation, RegisterAgent};

use crate::harness::{ADMIN, Broker, Opts, eventually};

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

/// The reasons of the failed attestations in the audit log, oldest first.
async fn attest_failures(b: &Broker) -> Vec<String> {
    audit_events(b)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "attest" && e["outcome"] == "failure")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a1_join_token_used_twice_also_concurrently() {
    // Identical failures are folded into one record a window: a short one
    // here, so that the count lands within the test.
    let mut opts = Opts::default();
    opts.extra.extend(["--audit-fold-secs".into(), "1".into()]);
    let b = Broker::start_with(opts);
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
    // Reuse later is refused as well, and every refusal is accounted for
    // in the audit: the first of its kind as its own record, the identical
    // ones after it as one record with their count once the window ends.
    let e = b
        .anon()
        .attest(&attest_req("demo-agent", Some(&jt), None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already used"), "{e}");
    let counted = || async {
        audit_events(&b)
            .await
            .into_iter()
            .filter(|e| e["kind"] == "attest" && e["outcome"] == "failure")
            .map(|e| e["detail"]["repeated"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    assert!(
        eventually(Duration::from_secs(10), || async { counted().await == 16 }).await,
        "{} refusals accounted for",
        counted().await
    );
    let records = audit_events(&b)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "attest" && e["outcome"] == "failure")
        .count();
    assert_eq!(records, 2, "16 identical refusals make two records");
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
    assert!(started.elapsed() < Duration::from_secs(30));
    // Why is for the operator (the caller is told no more than for an
    // unknown agent: H13).
    assert!(
        attest_failures(&b)
            .await
            .iter()
            .any(|r| r.contains("cannot fetch the issuer's JWKS")),
        "{:?}",
        attest_failures(&b).await
    );
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

/// A JWKS endpoint on loopback: answers every request with `jwks`.
fn serve_jwks(jwks: serde_json::Value) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let body = jwks.to_string();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

fn oidc_agent(
    name: &str,
    jwks_uri: Option<String>,
    jwks: Option<serde_json::Value>,
) -> RegisterAgent {
    RegisterAgent {
        name: name.parse().unwrap(),
        attestation: Attestation::Oidc {
            issuer: "https://idp.example".into(),
            jwks_uri,
            jwks,
            audience: "writ".into(),
            subject: "workload".into(),
            algorithms: vec![],
        },
        attributes: Default::default(),
        workload: None,
    }
}

/// H3: attestations naming an agent whose OIDC issuer never answers share
/// one fetch of its keys and slow nobody else: meanwhile another OIDC agent
/// (its keys fetched by URI too) attests at once. Once the fetch has failed,
/// the next attempt is refused at once, without fetching again.
#[tokio::test]
async fn h3_a_slow_oidc_issuer_never_slows_another_agents_attestation() {
    // Every failure its own audit record (no folding): the reasons are
    // read one by one below.
    let mut opts = Opts::default();
    opts.extra.extend(["--audit-fold-secs".into(), "0".into()]);
    let b = Broker::start_with(opts);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&connections);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    let slow = Issuer::new("k1");
    let fast = Issuer::new("k1");
    let admin = b.admin();
    admin
        .register_agent(&oidc_agent(
            "slow-agent",
            Some(format!("http://{silent_addr}/jwks")),
            None,
        ))
        .await
        .unwrap();
    admin
        .register_agent(&oidc_agent(
            "fast-agent",
            Some(serve_jwks(fast.jwks.clone())),
            None,
        ))
        .await
        .unwrap();
    let slow_tok = slow.mint("k1", claims("https://idp.example", "writ", "workload", 300));
    let fast_tok = fast.mint("k1", claims("https://idp.example", "writ", "workload", 300));
    b.anon()
        .attest(&attest_req("fast-agent", None, Some(&fast_tok)))
        .await
        .unwrap();

    let started = Instant::now();
    let stuck: Vec<_> = (0..4)
        .map(|_| {
            let (c, tok) = (b.anon(), slow_tok.clone());
            tokio::spawn(async move { c.attest(&attest_req("slow-agent", None, Some(&tok))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    b.anon()
        .attest(&attest_req("fast-agent", None, Some(&fast_tok)))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "another issuer's agent waited {:?}",
        t.elapsed()
    );
    for s in stuck {
        assert_eq!(s.await.unwrap().unwrap_err().status(), Some(401));
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the four waited one after another: {:?}",
        started.elapsed()
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one fetch for the four"
    );
    // The failure is remembered: refused at once, no new fetch.
    let t = Instant::now();
    let e = b
        .anon()
        .attest(&attest_req("slow-agent", None, Some(&slow_tok)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    let reasons = attest_failures(&b).await;
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(reasons.iter().all(|r| r.contains("JWKS")), "{reasons:?}");
    assert!(reasons[4].contains("next attempt in"), "{reasons:?}");
}

/// Now, as the broker reads it (`now` reads the wall clock).
fn wall_clock() -> writ_core::Timestamp {
    writ_core::Timestamp::from_secs(now())
}

/// H7: a DPoP proof on an attestation whose credential is refused is not
/// remembered, so requests with throwaway keys and no valid credential
/// cannot fill the attestation replay cache (100,000 of them used to lock
/// every DPoP attestation out for minutes). A proof that came with an
/// accepted credential is remembered: a replay is refused, and consumes
/// nothing.
#[tokio::test]
async fn h7_a_proof_is_remembered_only_with_an_accepted_credential() {
    let b = Broker::start();
    let key = writ_core::dpop::ProofKey::generate().unwrap().0;
    let url = b.url("/v1/attest");
    let proof = key.proof("POST", &url, None, None, wall_clock()).unwrap();
    let post = |body: serde_json::Value| {
        b.http()
            .post(&url)
            .header("dpop", proof.clone())
            .json(&body)
            .send()
    };
    for body in [
        json!({"agent": "demo-agent", "join_token": "wjt_made-up"}),
        json!({"agent": "nobody", "join_token": "wjt_made-up"}),
        json!({"agent": "demo-agent", "oidc_token": "a.b.c"}),
    ] {
        assert_eq!(post(body).await.unwrap().status(), 401);
    }
    let name = "demo-agent".parse().unwrap();
    let jt = b.admin().join_token(&name, 60).await.unwrap().join_token;
    let r = post(json!({"agent": "demo-agent", "join_token": jt}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let jt2 = b.admin().join_token(&name, 60).await.unwrap().join_token;
    let r = post(json!({"agent": "demo-agent", "join_token": jt2}))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    // The replay consumed nothing.
    b.anon()
        .attest(&attest_req("demo-agent", Some(&jt2), None))
        .await
        .unwrap();
}

/// H7: anyone may call `/v1/attest` and `/v1/node/attest`, so each client
/// address has an allowance (`--limit-attest-per-minute`); past it, 429
/// with `Retry-After`, and nothing is done. Another address has its own.
#[tokio::test]
async fn h7_unauthenticated_attestation_is_rate_limited_per_client() {
    let b = Broker::start_with(Opts {
        extra: vec!["--limit-attest-per-minute".into(), "5".into()],
        ..Opts::default()
    });
    let http = b.http();
    let bogus = json!({"agent": "demo-agent", "join_token": "wjt_made-up"});
    for _ in 0..4 {
        let r = http
            .post(b.url("/v1/attest"))
            .json(&bogus)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = http
        .post(b.url("/v1/node/attest"))
        .json(&json!({"node": "node-1", "join_token": "wjt_made-up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the node endpoint draws on the same allowance"
    );
    let name = "demo-agent".parse().unwrap();
    let jt = b.admin().join_token(&name, 60).await.unwrap().join_token;
    let valid = json!({"agent": "demo-agent", "join_token": jt});
    let r = http
        .post(b.url("/v1/attest"))
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    // Refused before its body was read: the connection says it closes.
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], 429);
    let r = http
        .post(b.url("/v1/node/attest"))
        .json(&json!({"node": "node-1", "join_token": "wjt_made-up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Another address on this host has its own allowance, and the join
    // token the refused request carried was not consumed.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = other
        .post(b.url("/v1/attest"))
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let metrics = http
        .get(b.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("writ_attestations_total{outcome=\"rate_limited\"} 2"),
        "{metrics}"
    );
}

/// H13: an attestation refused before its credential is proven answers
/// the same (status, headers that matter, body) whether the agent exists,
/// is quarantined, attests another way, or does not exist: `/v1/attest`
/// does not tell which agents exist. The audit log keeps the reasons apart.
#[tokio::test]
async fn h13_attestation_failures_do_not_tell_which_agents_exist() {
    let b = Broker::start();
    let issuer = Issuer::new("k1");
    let admin = b.admin();
    admin
        .register_agent(&oidc_agent("ci-agent", None, Some(issuer.jwks.clone())))
        .await
        .unwrap();
    b.agent("parked", &[]).await;
    admin.quarantine(&"parked".parse().unwrap()).await.unwrap();
    let forged =
        Issuer::new("k1").mint("k1", claims("https://idp.example", "writ", "workload", 300));
    let cases = [
        (
            "unknown agent, join token",
            json!({"agent": "ghost", "join_token": "wjt_made-up"}),
        ),
        (
            "known agent, unknown join token",
            json!({"agent": "demo-agent", "join_token": "wjt_made-up"}),
        ),
        (
            "quarantined agent, unknown join token",
            json!({"agent": "parked", "join_token": "wjt_made-up"}),
        ),
        (
            "unknown agent, OIDC token",
            json!({"agent": "ghost", "oidc_token": forged}),
        ),
        (
            "join-token agent, OIDC token",
            json!({"agent": "demo-agent", "oidc_token": forged}),
        ),
        (
            "OIDC agent, token by another key",
            json!({"agent": "ci-agent", "oidc_token": forged}),
        ),
        (
            "quarantined agent, OIDC token",
            json!({"agent": "parked", "oidc_token": forged}),
        ),
        (
            "unknown agent, JWT-SVID",
            json!({"agent": "ghost", "jwt_svid": forged}),
        ),
        (
            "join-token agent, JWT-SVID",
            json!({"agent": "demo-agent", "jwt_svid": forged}),
        ),
    ];
    let mut answers = Vec::new();
    for (what, body) in &cases {
        let r = b
            .http()
            .post(b.url("/v1/attest"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let challenge = r.headers().get("www-authenticate").cloned();
        let text = r.text().await.unwrap();
        answers.push((*what, status, challenge, text));
    }
    let (_, status, challenge, text) = &answers[0];
    assert_eq!(*status, 401);
    assert!(text.contains("unknown agent"), "{text}");
    for (what, s, c, t) in &answers {
        assert_eq!(
            (s, c, t),
            (status, challenge, text),
            "{what} is told apart from an unknown agent"
        );
    }
    let reasons = attest_failures(&b).await;
    for r in [
        "unknown agent",
        "join token is unknown",
        "agent attests with join_token",
        "oidc token rejected",
    ] {
        assert!(reasons.iter().any(|x| x.contains(r)), "{r}: {reasons:?}");
    }
}
