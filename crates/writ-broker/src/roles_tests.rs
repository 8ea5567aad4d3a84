//! Every operator route checks its role: a table of routes, each driven
//! in process with a credential of every role.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;
use writ_core::TaskId;
use writ_core::api::{CreateAdminCredential, Duty, Role};

use crate::service::Operator;
use crate::{BrokerConfig, DataDir};

/// Every route an operator credential reaches, with the duty it needs.
fn routes() -> Vec<(&'static str, String, Duty)> {
    use Duty::*;
    let task = TaskId::generate().unwrap();
    let mut v: Vec<(&'static str, String, Duty)> = [
        ("POST", "/v1/agents", Operate),
        ("GET", "/v1/agents", Operate),
        ("GET", "/v1/agents/a", Operate),
        ("PATCH", "/v1/agents/nobody", Operate),
        ("DELETE", "/v1/agents/nobody", Operate),
        ("PATCH", "/v1/tools/nobody", Operate),
        ("DELETE", "/v1/tools/nobody", Operate),
        ("POST", "/v1/agents/a/join-tokens", Operate),
        ("POST", "/v1/agents/nobody/quarantine", Operate),
        ("POST", "/v1/agents/nobody/release", Operate),
        ("POST", "/v1/tools", Operate),
        ("GET", "/v1/tools", Operate),
        ("GET", "/v1/tools/t", Operate),
        ("PUT", "/v1/tools/t/secret", Operate),
        ("PUT", "/v1/tools/t/gateway", Operate),
        ("GET", "/v1/tasks", Operate),
        ("POST", "/v1/nodes", Operate),
        ("GET", "/v1/nodes", Operate),
        ("GET", "/v1/nodes/n", Operate),
        ("POST", "/v1/nodes/n/join-tokens", Operate),
        ("POST", "/v1/nodes/n/quarantine", Operate),
        ("POST", "/v1/nodes/n/release", Operate),
        ("GET", "/v1/admin/tokens", Administer),
        ("POST", "/v1/admin/tokens", Administer),
        ("DELETE", "/v1/admin/tokens/nobody", Administer),
        ("POST", "/v1/admin/tokens/nobody/rotate", Administer),
        ("POST", "/v1/keys/rotate", Administer),
        ("POST", "/v1/keys/rotate-spiffe", Administer),
        ("POST", "/v1/gateways", Administer),
        ("POST", "/v1/clients", Administer),
        ("GET", "/v1/clients", Administer),
        ("DELETE", "/v1/clients/nobody", Administer),
        ("DELETE", "/v1/gateways/nobody", Administer),
        ("POST", "/access/v1/evaluation", Administer),
        ("POST", "/access/v1/evaluations", Administer),
        ("POST", "/access/v1/search/subject", Administer),
        ("POST", "/access/v1/search/resource", Administer),
        ("POST", "/access/v1/search/action", Administer),
        ("GET", "/v1/revocations", Administer),
        ("GET", "/v1/audit", Audit),
        ("GET", "/v1/audit/verify", Audit),
        ("GET", "/v1/audit/checkpoints", Audit),
        ("GET", "/v1/audit/keys", Audit),
        ("GET", "/v1/sinks", Audit),
        ("POST", "/v1/sinks/nobody/test", Administer),
        ("GET", "/v1/reports/least-privilege", Audit),
        ("GET", "/v1/reports/evidence", Audit),
        ("GET", "/v1/policies", ReadPolicy),
        ("GET", "/v1/policies/history", ReadPolicy),
        ("PUT", "/v1/policies", AuthorPolicy),
        ("PUT", "/v1/policies/shadow", AuthorPolicy),
        ("DELETE", "/v1/policies/shadow", AuthorPolicy),
        ("PUT", "/v1/entities", AuthorPolicy),
        ("GET", "/v1/approvals", Approve),
        ("POST", "/v1/approvals/nobody/approve", Approve),
        ("POST", "/v1/approvals/nobody/deny", Approve),
        ("GET", "/ui/api/audit", Audit),
        ("GET", "/ui/api/tasks", Operate),
        ("POST", "/ui/api/agents/nobody/quarantine", Operate),
        ("POST", "/ui/api/agents/nobody/release", Operate),
        ("GET", "/ui/api/agents/nobody", Operate),
        ("GET", "/ui/api/policies/shadow", ReadPolicy),
        ("GET", "/ui/api/policies/versions/v1", ReadPolicy),
    ]
    .into_iter()
    .map(|(m, p, d)| (m, p.to_owned(), d))
    .collect();
    v.push(("GET", format!("/v1/tasks/{task}"), ReadTask));
    v.push(("GET", format!("/v1/tasks/{task}/tree"), ReadTask));
    v.push(("POST", format!("/v1/tasks/{task}/complete"), Operate));
    v.push(("GET", format!("/ui/api/tasks/{task}"), Operate));
    v
}

#[tokio::test]
async fn every_route_refuses_a_role_without_its_duty() {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::open(
        &DataDir::new(dir.path()),
        BrokerConfig::new("http://writ.test"),
        crate::InitialPolicy::Stored,
        Arc::new(writ_core::SystemClock),
        None,
    )
    .await
    .unwrap();
    let b = opened.broker;
    let root = Operator {
        name: "bootstrap".into(),
        role: Role::Admin,
    };
    let mut creds = Vec::new();
    for role in Role::ALL {
        let name = format!("as-{role}");
        let issued = b
            .operators
            .create_admin_credential(&root, CreateAdminCredential { name, role })
            .await
            .unwrap();
        creds.push((role, issued.token));
    }
    let app = crate::router(Arc::clone(&b));
    let mut checked = 0;
    for (method, path, duty) in routes() {
        for (role, token) in &creds {
            let mut req = Request::builder()
                .method(method)
                .uri(path.as_str())
                .header("authorization", format!("Bearer {token}"));
            let body = if matches!(method, "POST" | "PUT" | "PATCH") {
                req = req.header("content-type", "application/json");
                Body::from("{}")
            } else {
                Body::empty()
            };
            let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes);
            if role.holds(duty) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{role} on {method} {path}: {status} {text}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} on {method} {path}: {text}"
                );
                let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let detail = problem["detail"].as_str().unwrap_or_default();
                assert!(
                    detail.contains(&format!("this needs role {}", duty.needed()))
                        && detail.contains(&format!("has role {role}")),
                    "{role} on {method} {path}: {detail}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 130, "only {checked} refusals checked");
}

#[tokio::test]
async fn a_credential_cannot_create_a_higher_one_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::open(
        &DataDir::new(dir.path()),
        BrokerConfig::new("http://writ.test"),
        crate::InitialPolicy::Stored,
        Arc::new(writ_core::SystemClock),
        None,
    )
    .await
    .unwrap();
    let b = opened.broker;
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Admin) {
        let by = Operator {
            name: "someone".into(),
            role,
        };
        let e = b
            .operators
            .create_admin_credential(
                &by,
                CreateAdminCredential {
                    name: "escalated".into(),
                    role: Role::Admin,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, writ_authority::Error::Forbidden(_)),
            "{role}: {e:?}"
        );
    }
    let root = Operator {
        name: "bootstrap".into(),
        role: Role::Admin,
    };
    for bad in ["", "Root", "a b", "../x", "x\u{0}"] {
        let e = b
            .operators
            .create_admin_credential(
                &root,
                CreateAdminCredential {
                    name: bad.into(),
                    role: Role::Auditor,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, writ_authority::Error::Invalid(_)), "{bad:?}");
    }
    let names: Vec<_> = b
        .operators
        .admin_credentials()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["bootstrap"], "nothing was created");
}

/// Single sign-on sessions are operator credentials with an end: refused
/// from their end on and from their revocation on, replaced by the same
/// person's next sign-in, never taking a name a made credential holds,
/// and never counting as the last admin credential.
#[tokio::test]
async fn sso_a_session_is_refused_once_it_ends_or_is_revoked() {
    use writ_core::{ManualClock, Timestamp};
    let t0 = Timestamp::from_secs(1_800_000_000);
    let clock = ManualClock::new(t0);
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::open(
        &DataDir::new(dir.path()),
        BrokerConfig::new("http://writ.test"),
        crate::InitialPolicy::Stored,
        Arc::new(clock.clone()),
        None,
    )
    .await
    .unwrap();
    let b = opened.broker;
    let hash = crate::service::hash_secret;
    let store = &b.store;

    store
        .add_operator_session(
            "alice@example.com",
            &hash("s1"),
            Role::Approver,
            t0.add_secs(60),
            t0,
            vec![],
        )
        .await
        .unwrap();
    let op = b.require_operator(Some("s1")).await.unwrap();
    assert_eq!(
        (op.name.as_str(), op.role),
        ("alice@example.com", Role::Approver)
    );
    let listed = b.operators.admin_credentials().await.unwrap();
    let alice = listed
        .iter()
        .find(|c| c.name == "alice@example.com")
        .unwrap();
    assert_eq!(alice.expires_at, Some(t0.add_secs(60)));

    // Ended: refused.
    clock.advance(std::time::Duration::from_secs(60));
    assert!(b.require_operator(Some("s1")).await.is_err());

    // Signing in again replaces the ended session; revoked, it is refused.
    let now = t0.add_secs(60);
    store
        .add_operator_session(
            "alice@example.com",
            &hash("s2"),
            Role::Approver,
            now.add_secs(60),
            now,
            vec![],
        )
        .await
        .unwrap();
    assert!(b.require_operator(Some("s2")).await.is_ok());
    b.operators
        .revoke_admin_credential("alice@example.com", "operator:test")
        .await
        .unwrap();
    assert!(b.require_operator(Some("s2")).await.is_err());

    // A made credential's name is not a session's to take.
    let root = Operator {
        name: "bootstrap".into(),
        role: Role::Admin,
    };
    b.operators
        .create_admin_credential(
            &root,
            CreateAdminCredential {
                name: "carol@example.com".into(),
                role: Role::Auditor,
            },
        )
        .await
        .unwrap();
    let taken = store
        .add_operator_session(
            "carol@example.com",
            &hash("s3"),
            Role::Admin,
            now.add_secs(60),
            now,
            vec![],
        )
        .await;
    assert!(taken.is_err(), "{taken:?}");
    assert!(b.require_operator(Some("s3")).await.is_err());

    // An admin session does not stand in for the last made admin credential.
    store
        .add_operator_session(
            "bob@example.com",
            &hash("s4"),
            Role::Admin,
            now.add_secs(60),
            now,
            vec![],
        )
        .await
        .unwrap();
    let made_admins: Vec<_> = b
        .operators
        .admin_credentials()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.role == Role::Admin && c.expires_at.is_none() && !c.dev)
        .collect();
    assert_eq!(made_admins.len(), 1);
    let refused = b
        .operators
        .revoke_admin_credential(&made_admins[0].name, "operator:test")
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

/// A broker whose operators sign in with a test identity provider (an
/// Ed25519 key whose JWKS a local server publishes), its clock at `t0`.
struct TestIdp {
    pkcs8: Vec<u8>,
    x: String,
    t0: writ_core::Timestamp,
    broker: Arc<crate::Broker>,
    _dir: tempfile::TempDir,
}

impl TestIdp {
    async fn start() -> Self {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
        use base64::Engine as _;
        use jsonwebtoken::Algorithm;
        use writ_core::{ManualClock, Timestamp};

        let t0 = Timestamp::from_secs(1_800_000_000);
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "x": x}]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_uri = format!("http://{}/jwks", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut config = BrokerConfig::new("http://writ.test");
        config.operator_sso = Some(crate::OperatorSso {
            issuer: "https://idp.test".into(),
            client_id: "writ".into(),
            jwks_uri,
            algorithms: vec![Algorithm::EdDSA],
            name_claim: "email".into(),
            roles: vec![crate::RoleRule {
                claim: "groups".into(),
                value: "approvers".into(),
                role: Role::Approver,
            }],
            session_ttl: 600,
            max_token_age: 600,
            browser: None,
        });
        let dir = tempfile::tempdir().unwrap();
        let broker = crate::open(
            &DataDir::new(dir.path()),
            config,
            crate::InitialPolicy::Stored,
            Arc::new(ManualClock::new(t0)),
            None,
        )
        .await
        .unwrap()
        .broker;
        Self {
            pkcs8: pkcs8.as_ref().to_vec(),
            x,
            t0,
            broker,
            _dir: dir,
        }
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }

    /// Alice's claims, `over` replacing some.
    fn claims(&self, over: serde_json::Value) -> serde_json::Value {
        let t0 = self.t0;
        let mut c = serde_json::json!({"iss": "https://idp.test", "aud": "writ", "sub": "u1",
            "email": "Alice@Example.com", "email_verified": true, "groups": ["approvers"],
            "iat": t0.secs() - 5, "exp": t0.secs() + 300});
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// The refused sign-ins in the audit, as their events.
    async fn refusals(&self) -> Vec<writ_core::audit::AuditEvent> {
        self.broker
            .store
            .audit_after(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| serde_json::from_str::<writ_core::audit::AuditEvent>(&r.event).unwrap())
            .filter(|e| e.kind == writ_core::audit::AuditKind::OperatorSignIn)
            .collect()
    }
}

/// The broker verifies a sign-in's identity token itself, never on the
/// CLI's word: the issuer's key, the issuer, the audience (and `azp` when
/// there are several), the expiry, a recent `iat`, an accepted algorithm;
/// then the claim rules decide the role, or refuse.
#[tokio::test]
async fn sso_the_broker_verifies_the_identity_token_itself() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use writ_authority::Error;

    let idp = TestIdp::start().await;
    let (t0, b, x) = (idp.t0, idp.broker.clone(), idp.x.clone());
    let sign = |c: serde_json::Value| idp.sign(&c);
    let claims = |over: serde_json::Value| idp.claims(over);
    assert_eq!(b.operators.operator_sso_info().unwrap().client_id, "writ");

    let s = b
        .operators
        .operator_sign_in(&sign(claims(serde_json::json!({}))))
        .await
        .unwrap();
    assert_eq!(
        (s.name.as_str(), s.role),
        ("alice@example.com", Role::Approver)
    );
    assert_eq!(s.expires_at, t0.add_secs(600));
    let op = b.require_operator(Some(&s.token)).await.unwrap();
    assert_eq!(op.name, "alice@example.com");

    let unauthenticated = [
        (
            "another audience",
            claims(serde_json::json!({"aud": "other-app"})),
        ),
        (
            "another issuer",
            claims(serde_json::json!({"iss": "https://evil.test"})),
        ),
        (
            "expired",
            claims(serde_json::json!({"exp": t0.secs() - 600})),
        ),
        (
            "an old sign-in",
            claims(serde_json::json!({"iat": t0.secs() - 3_600})),
        ),
        (
            "several audiences, not for writ",
            claims(serde_json::json!({"aud": ["writ", "other"], "azp": "other"})),
        ),
    ];
    for (what, c) in unauthenticated {
        let e = b.operators.operator_sign_in(&sign(c)).await.unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(_)), "{what}: {e:?}");
    }
    // Several audiences, authorized for writ: fine.
    b.operators
        .operator_sign_in(&sign(claims(
            serde_json::json!({"aud": ["writ", "other"], "azp": "writ"}),
        )))
        .await
        .unwrap();
    // A shared-secret token (HS256 keyed with the public key) is refused.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(serde_json::json!({})),
        &EncodingKey::from_secret(x.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        b.operators.operator_sign_in(&hs).await,
        Err(Error::Unauthenticated(_))
    ));
    // No rule matches: no session.
    let e = b
        .operators
        .operator_sign_in(&sign(claims(serde_json::json!({"groups": ["staff"]}))))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e:?}");
    // An email the provider has not verified names nobody.
    let e = b
        .operators
        .operator_sign_in(&sign(claims(serde_json::json!({"email_verified": false}))))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e:?}");
    // A name that cannot name a credential: no session.
    let e = b
        .operators
        .operator_sign_in(&sign(claims(serde_json::json!({"email": "a b@x"}))))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e:?}");
}

/// Every refused operator sign-in leaves an audit record: who the token
/// claimed to be (said to be unverified when its signature was not
/// checked), and why; never the token itself.
#[tokio::test]
async fn sso_refused_sign_ins_are_audited() {
    let idp = TestIdp::start().await;
    let (t0, b) = (idp.t0, idp.broker.clone());
    // Signed by someone else: same claims, another key.
    let forged = {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let other = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(
            &h,
            &idp.claims(serde_json::json!({"sub": "forger"})),
            &EncodingKey::from_ed_der(other.as_ref()),
        )
        .unwrap()
    };
    let cases = [
        ("bad signature", forged, false, "forger"),
        (
            "wrong audience",
            idp.sign(&idp.claims(serde_json::json!({"aud": "other-app", "sub": "u-aud"}))),
            false,
            "u-aud",
        ),
        (
            "unknown issuer",
            idp.sign(&idp.claims(serde_json::json!({"iss": "https://evil.test", "sub": "u-iss"}))),
            false,
            "u-iss",
        ),
        (
            "stale",
            idp.sign(&idp.claims(serde_json::json!({"iat": t0.secs() - 3_600, "sub": "u-old"}))),
            true,
            "u-old",
        ),
        (
            "no matching role rule",
            idp.sign(&idp.claims(serde_json::json!({"groups": ["staff"], "sub": "u-staff"}))),
            true,
            "u-staff",
        ),
        ("not a token", "garbage".to_owned(), false, ""),
    ];
    for (i, (what, token, verified, sub)) in cases.iter().enumerate() {
        assert!(b.operators.operator_sign_in(token).await.is_err(), "{what}");
        let refusals = idp.refusals().await;
        assert_eq!(refusals.len(), i + 1, "{what}: one record per refusal");
        let e = refusals.last().unwrap();
        assert_eq!(e.outcome, writ_core::audit::Outcome::Deny, "{what}");
        assert!(
            e.reason
                .as_deref()
                .unwrap()
                .starts_with("operator sign-in refused: "),
            "{what}: {:?}",
            e.reason
        );
        assert_eq!(e.detail["verified"], *verified, "{what}");
        if *verified {
            assert_eq!(e.detail["subject"], *sub, "{what}: {e:?}");
            assert_eq!(e.detail["name"], "Alice@Example.com", "{what}");
        } else {
            // What a token whose signature did not verify claims is
            // anyone's to write: kept out of the audit.
            for k in ["subject", "name", "issuer"] {
                assert!(e.detail.get(k).is_none_or(|v| v.is_null()), "{what}: {e:?}");
            }
            let record = serde_json::to_string(e).unwrap();
            assert!(!record.contains("Alice@Example.com"), "{what}: {record}");
            if !sub.is_empty() {
                assert!(!record.contains(sub), "{what}: {record}");
            }
        }
        let record = serde_json::to_string(e).unwrap();
        assert!(
            !record.contains(token.as_str()),
            "{what}: the token is never kept"
        );
        if let Some(sig) = token.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(!record.contains(sig), "{what}: nor its signature");
        }
    }
    assert!(
        idp.refusals().await[3]
            .reason
            .as_deref()
            .unwrap()
            .contains("issued more than"),
        "the reason says why"
    );
    // A sign-in that works writes no refusal.
    b.operators
        .operator_sign_in(&idp.sign(&idp.claims(serde_json::json!({}))))
        .await
        .unwrap();
    assert_eq!(idp.refusals().await.len(), cases.len());
}

/// Anyone can send a token whose signature does not verify: refused
/// sign-ins of that kind are recorded without what the token claims, and
/// identical ones are folded (one record, then a count), not written once
/// a request.
#[tokio::test]
async fn sso_unverified_sign_ins_are_recorded_without_their_claims_and_folded() {
    let idp = TestIdp::start().await;
    let b = idp.broker.clone();
    let mut garbage = idp.sign(&idp.claims(serde_json::json!({"sub": "attacker-chosen"})));
    garbage.push_str("AAAA");
    for _ in 0..20 {
        assert!(b.operators.operator_sign_in(&garbage).await.is_err());
    }
    let refusals = idp.refusals().await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let record = serde_json::to_string(&refusals[0]).unwrap();
    assert!(!record.contains("attacker-chosen"), "{record}");
    assert!(!record.contains("Alice@Example.com"), "{record}");
    assert_eq!(refusals[0].detail["verified"], false);
}

/// An identity token signs an operator in once: replayed (by its `jti`,
/// or, without one, as itself) it is refused and audited, and no session
/// comes of it; another token of the same person signs in.
#[tokio::test]
async fn sso_a_replayed_identity_token_is_refused() {
    use writ_authority::Error;
    let idp = TestIdp::start().await;
    let b = idp.broker.clone();
    for (what, over) in [
        ("with a jti", serde_json::json!({"jti": "id-1"})),
        ("without a jti", serde_json::json!({"sub": "u2"})),
    ] {
        let token = idp.sign(&idp.claims(over));
        let first = b.operators.operator_sign_in(&token).await.unwrap();
        let e = b.operators.operator_sign_in(&token).await.unwrap_err();
        assert!(
            matches!(&e, Error::Unauthenticated(m) if m.contains("used before")),
            "{what}: {e:?}"
        );
        // The first session stands; the replay made none.
        assert!(
            b.require_operator(Some(&first.token)).await.is_ok(),
            "{what}"
        );
        let last = idp.refusals().await.pop().unwrap();
        assert!(last.reason.unwrap().contains("used before"), "{what}");
        assert_eq!(last.detail["verified"], true, "{what}");
    }
    // Another token with the same jti from another issuer is no replay of
    // it, but that issuer is not ours anyway; a fresh jti is fine.
    b.operators
        .operator_sign_in(&idp.sign(&idp.claims(serde_json::json!({"jti": "id-2"}))))
        .await
        .unwrap();
}
