//! The token service: metadata, JWKS, introspection, revocation, rotation,
//! and tokens that must never be accepted.

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::harness::Broker;

#[tokio::test]
async fn metadata_and_jwks_describe_the_issuer() {
    let b = Broker::start();
    let m = b.anon().metadata().await.unwrap();
    assert_eq!(m["issuer"], b.addr.as_str());
    for (k, path) in [
        ("jwks_uri", "/.well-known/jwks.json"),
        ("token_endpoint", "/oauth2/token"),
        ("introspection_endpoint", "/oauth2/introspect"),
        ("revocation_endpoint", "/oauth2/revoke"),
    ] {
        assert_eq!(m[k], b.url(path), "{k}");
    }
    let jwks = b.anon().jwks().await.unwrap();
    // The signing keys; the gateways' transaction-token keys (`txn.`) are
    // listed beside them, ES256 public keys too.
    let (txn, keys): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|k| k["kid"].as_str().unwrap().starts_with("txn."));
    assert_eq!(keys.len(), 1);
    for k in txn {
        assert_eq!((&k["kty"], &k["alg"]), (&json!("EC"), &json!("ES256")));
        assert!(k.get("d").is_none(), "no private key material");
    }
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none(), "no private key material");

    // Tokens name that key and carry the RFC 9068 claims.
    let inst = b.attest("demo-agent").await;
    let (h, c) = writ_core::token::insecure_peek(&inst.access_token).unwrap();
    assert_eq!(h["kid"], keys[0]["kid"]);
    assert_eq!(h["typ"], "at+jwt");
    for claim in ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"] {
        assert!(c.get(claim).is_some(), "{claim} missing");
    }
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    assert_eq!(c["sub"], "spiffe://writ.local/agent/demo-agent");
}

#[tokio::test]
async fn r1_r2_r3_introspection_and_revocation_rules() {
    let b = Broker::start();
    let a = b.attest("demo-agent").await;
    let other = b.attest("demo-agent").await;
    let t = b
        .start_task(&a.access_token, &["tickets:read"])
        .await
        .unwrap();

    // R1: introspection needs caller authentication; agents may not.
    let r = b
        .http()
        .post(b.url("/oauth2/introspect"))
        .form(&[("token", t.access_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert!(
        b.as_token(&a.access_token)
            .introspect(&t.access_token)
            .await
            .is_err()
    );

    // R2: revoking garbage is a success that changes nothing.
    let head = b.admin().audit_last(1).await.unwrap().next;
    b.admin().revoke("not-a-token").await.unwrap();
    b.as_token(&a.access_token).revoke("a.b.c").await.unwrap();
    assert_eq!(b.admin().audit_last(1).await.unwrap().next, head);

    // R3: an instance cannot revoke another instance's token.
    let e = b
        .as_token(&other.access_token)
        .revoke(&t.access_token)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("unauthorized_client"), "{e}");
    assert!(b.active(&t.access_token).await);

    // Its own: yes. And an admin: any.
    b.as_token(&a.access_token)
        .revoke(&t.access_token)
        .await
        .unwrap();
    assert!(!b.active(&t.access_token).await);
    b.admin().revoke(&other.access_token).await.unwrap();
    assert!(!b.active(&other.access_token).await);
    let e = b
        .start_task(&other.access_token, &["tickets:read"])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Tokens assembled by hand or signed with the outside `jsonwebtoken`
/// crate under keys writ never issued.
#[tokio::test]
async fn forged_and_malformed_tokens_fail_closed() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let real = inst.access_token.clone();
    let (header, claims) = writ_core::token::insecure_peek(&real).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let jwks = b.anon().jwks().await.unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = real.split('.').collect();

    let rng = aws_lc_rs::rand::SystemRandom::new();
    let foreign = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let foreign_key = jsonwebtoken::EncodingKey::from_ed_der(foreign.as_ref());
    let sign_foreign = |h: jsonwebtoken::Header, c: &serde_json::Value| {
        jsonwebtoken::encode(&h, c, &foreign_key).unwrap()
    };
    let mut eddsa = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    eddsa.typ = Some("at+jwt".into());
    eddsa.kid = Some(kid.clone());

    let mut flipped = claims.clone();
    flipped["client_id"] = json!("ins_AAAAAAAAAAAAAAAAAAAAAA");
    let mut typ_jwt = eddsa.clone();
    typ_jwt.typ = Some("JWT".into());
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(kid.clone());
    let hs_token = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&x).unwrap()).unwrap(),
    )
    .unwrap();

    let cases: Vec<(&str, String)> = vec![
        (
            "J1 alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
                parts[1]
            ),
        ),
        ("J2 HS256 keyed with the public key", hs_token),
        (
            "J14 signed by a key not the issuer's",
            sign_foreign(eddsa.clone(), &claims),
        ),
        (
            "J18 payload changed, signature kept",
            format!("{}.{}.{}", parts[0], b64(&flipped), parts[2]),
        ),
        ("J12 typ JWT", sign_foreign(typ_jwt, &claims)),
        (
            "J8 path-like kid",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "../../etc/passwd"})),
                parts[1],
                parts[2]
            ),
        ),
        (
            "J9 crit",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "crit": ["exp"]})),
                parts[1],
                parts[2]
            ),
        ),
        (
            "J15 padded base64url",
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "J16 oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(1 << 20), parts[2]),
        ),
        ("J16 many dots", ".".repeat(100_000)),
        ("empty", String::new()),
    ];
    for (what, token) in cases {
        match b.admin().introspect(&token).await {
            Ok(i) => assert!(!i.active, "{what}: introspected active"),
            Err(e) => assert_eq!(e.status(), Some(400), "{what}: {e}"),
        }
        let sent = b
            .http()
            .post(b.url("/v1/tasks"))
            .bearer_auth(&token)
            .json(
                &json!({"intent": "x", "capabilities": [{"tool": "tickets", "scopes": ["read"]}]}),
            )
            .send()
            .await;
        // A refused response, or (for a header too large to read) a closed connection.
        if let Ok(r) = sent {
            assert!(
                r.status() == 401 || r.status() == 400 || r.status() == 431,
                "{what}: status {}",
                r.status()
            );
        }
    }
    // The real token still works: nothing above changed state.
    assert!(b.active(&real).await);
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_verifiable() {
    let b = Broker::start();
    let before = b.attest("demo-agent").await;
    let old_kid = writ_core::token::insecure_peek(&before.access_token)
        .unwrap()
        .0["kid"]
        .clone();

    let out = b.cli(&["keys", "rotate"]);
    assert!(out.status.success(), "{out:?}");
    let rotated = crate::harness::json(&out);
    assert_eq!(rotated["previous_kid"], old_kid);

    let kids: Vec<serde_json::Value> = b.anon().jwks().await.unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .filter(|k| !k.as_str().unwrap().starts_with("txn."))
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&old_kid) && kids.contains(&rotated["kid"]));

    assert!(
        b.active(&before.access_token).await,
        "old tokens stay valid"
    );
    let after = b.attest("demo-agent").await;
    let new_kid = writ_core::token::insecure_peek(&after.access_token)
        .unwrap()
        .0["kid"]
        .clone();
    assert_eq!(new_kid, rotated["kid"]);
    // Tokens from both keys still authenticate.
    assert!(
        b.start_task(&before.access_token, &["tickets:read"])
            .await
            .is_ok()
    );
    assert!(
        b.start_task(&after.access_token, &["tickets:read"])
            .await
            .is_ok()
    );
}
