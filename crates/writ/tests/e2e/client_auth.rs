//! Client authentication at introspection and revocation (RFC 6749 §2.3,
//! RFC 7523), and ES256 signing keys as an option.

use serde_json::json;
use writ_core::token::{SigningAlg, SigningKey};
use writ_core::{Clock as _, SystemClock, Timestamp};

use crate::harness::{Broker, Opts, json as out_json};

fn now() -> Timestamp {
    SystemClock.now()
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client registered with the CLI; its secret, when it has one.
fn register(b: &Broker, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["client", "register"];
    all.extend_from_slice(args);
    let out = b.cli(&all);
    assert!(out.status.success(), "{out:?}");
    out_json(&out)
}

async fn form(
    b: &Broker,
    path: &str,
    basic: Option<(&str, &str)>,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = b.http().post(b.url(path)).form(fields);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    req.send().await.unwrap()
}

fn assertion(key: &SigningKey, client: &str, aud: &str, jti: &str) -> String {
    let now = now();
    key.sign_typed(
        "JWT",
        &json!({"iss": client, "sub": client, "aud": aud, "jti": jti,
                "iat": now.secs(), "exp": now.secs() + 60}),
    )
    .unwrap()
}

#[tokio::test]
async fn introspection_clients_authenticate_with_client_secret_basic_and_private_key_jwt() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let token = inst.access_token.as_str();

    let meta = b.anon().metadata().await.unwrap();
    for e in ["introspection", "revocation"] {
        assert_eq!(
            meta[format!("{e}_endpoint_auth_methods_supported")],
            json!(["client_secret_basic", "private_key_jwt"]),
            "the registered names, and no unregistered `bearer`"
        );
    }

    // client_secret_basic: the secret is shown once, never listed.
    let rs = register(&b, &["rs-basic", "--audience", "https://rs.example"]);
    let secret = rs["client_secret"].as_str().unwrap();
    assert!(secret.starts_with("wcs_"));
    let listed = b.cli(&["client", "list"]);
    assert!(!crate::harness::stdout(&listed).contains(secret));
    let r = form(
        &b,
        "/oauth2/introspect",
        Some(("rs-basic", secret)),
        &[("token", token)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["active"], true);

    // private_key_jwt, the assertion's aud the endpoint or the issuer.
    let key = SigningKey::generate_for(SigningAlg::ES256, now()).unwrap();
    let jwks = b.dir.path().join("rs-jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk()]}).to_string()).unwrap();
    let rs = register(&b, &["rs-jwt", "--jwks", jwks.to_str().unwrap()]);
    assert_eq!(rs["token_endpoint_auth_method"], "private_key_jwt");
    assert!(rs.get("client_secret").is_none());
    for (n, aud) in [b.url("/oauth2/introspect"), b.addr.clone()]
        .iter()
        .enumerate()
    {
        let a = assertion(&key, "rs-jwt", aud, &format!("jti-{n}"));
        let r = form(
            &b,
            "/oauth2/introspect",
            None,
            &[
                ("token", token),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &a),
            ],
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["active"], true);
    }

    // A gateway authenticates with its name and its own credential.
    let out = b.cli(&["gateway", "register", "edge-1"]);
    let gw = out_json(&out)["token"].as_str().unwrap().to_owned();
    let r = form(
        &b,
        "/oauth2/introspect",
        Some(("edge-1", &gw)),
        &[("token", token)],
    )
    .await;
    assert_eq!(r.status(), 200);
    // writ's own bearer credentials keep working.
    assert!(b.active(token).await);
}

#[tokio::test]
async fn a_wrong_client_secret_is_invalid_client_with_a_challenge_and_changes_nothing() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let token = inst.access_token.as_str();
    let rs = register(&b, &["rs", "--audience", "https://rs.example"]);
    let secret = rs["client_secret"].as_str().unwrap();
    let before = b.admin().audit(0, 1000).await.unwrap().records.len();
    for (path, id, pw) in [
        ("/oauth2/introspect", "rs", "wrong"),
        ("/oauth2/revoke", "rs", "wrong"),
        ("/oauth2/revoke", "nobody", secret),
        ("/oauth2/introspect", "edge-unknown", "wgw_guess"),
    ] {
        let r = form(&b, path, Some((id, pw)), &[("token", token)]).await;
        assert_eq!(r.status(), 401, "{path} {id}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }
    // Two methods at once are refused too.
    let r = form(
        &b,
        "/oauth2/introspect",
        Some(("rs", secret)),
        &[
            ("token", token),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", "a.b.c"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(b.active(token).await, "the token is untouched");
    assert_eq!(
        b.admin().audit(0, 1000).await.unwrap().records.len(),
        before,
        "nothing recorded, nothing changed"
    );
    // A client may revoke only tokens of its audiences.
    let r = form(
        &b,
        "/oauth2/revoke",
        Some(("rs", secret)),
        &[("token", token)],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    assert!(b.active(token).await);
    // A revoked client is refused.
    assert!(b.cli(&["client", "revoke", "rs"]).status.success());
    let r = form(
        &b,
        "/oauth2/introspect",
        Some(("rs", secret)),
        &[("token", token)],
    )
    .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_client_assertion_is_accepted_once_and_only_from_its_clients_key() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let token = inst.access_token.as_str();
    let key = SigningKey::generate_for(SigningAlg::ES256, now()).unwrap();
    let jwks = b.dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk()]}).to_string()).unwrap();
    register(&b, &["rs-jwt", "--jwks", jwks.to_str().unwrap()]);
    let endpoint = b.url("/oauth2/introspect");
    let send = |a: String| {
        let b = &b;
        async move {
            form(
                b,
                "/oauth2/introspect",
                None,
                &[
                    ("token", token),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &a),
                ],
            )
            .await
            .status()
        }
    };
    let once = assertion(&key, "rs-jwt", &endpoint, "only-once");
    assert_eq!(send(once.clone()).await, 200);
    assert_eq!(send(once).await, 401, "a replayed jti is refused");
    let other = SigningKey::generate_for(SigningAlg::ES256, now()).unwrap();
    assert_eq!(
        send(assertion(&other, "rs-jwt", &endpoint, "j2")).await,
        401
    );
    assert_eq!(
        send(assertion(&key, "rs-jwt", "https://elsewhere.example", "j3")).await,
        401
    );
    assert_eq!(
        send(assertion(&key, "someone-else", &endpoint, "j4")).await,
        401
    );
}

#[tokio::test]
async fn es256_signing_keys_sign_tokens_and_switching_back_keeps_the_old_key_published() {
    let mut opts = Opts::default();
    opts.extra.extend(["--signing-alg".into(), "ES256".into()]);
    let mut b = Broker::start_with(opts);
    let signing = |jwks: serde_json::Value| -> Vec<serde_json::Value> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| !k["kid"].as_str().unwrap().starts_with("txn."))
            .cloned()
            .collect()
    };
    let keys = signing(b.anon().jwks().await.unwrap());
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["kty"], "EC");
    assert!(keys[0].get("d").is_none());
    let inst = b.attest("demo-agent").await;
    let (h, _) = writ_core::token::insecure_peek(&inst.access_token).unwrap();
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["kid"], keys[0]["kid"]);
    assert!(b.active(&inst.access_token).await);
    let out = b.cli(&["token", "inspect", &inst.access_token]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out_json(&out)["verified"],
        "valid",
        "verified against the JWKS"
    );

    // Back to EdDSA: a new key signs, the ES256 one stays published (and
    // its tokens valid) until they have expired.
    b.opts
        .extra
        .retain(|a| a != "--signing-alg" && a != "ES256");
    b.restart();
    let keys = signing(b.anon().jwks().await.unwrap());
    let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    assert_eq!(algs.len(), 2, "{algs:?}");
    assert!(algs.contains(&"ES256") && algs.contains(&"EdDSA"));
    assert!(b.active(&inst.access_token).await);
    let again = b.attest("demo-agent").await;
    assert_eq!(
        writ_core::token::insecure_peek(&again.access_token)
            .unwrap()
            .0["alg"],
        "EdDSA"
    );
}
