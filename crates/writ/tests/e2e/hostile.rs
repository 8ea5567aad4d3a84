//! Catalogue rows J3, J4, J5 and D1: signatures and proofs built by hand or
//! with the outside `jsonwebtoken` crate, never with writ's signing code.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use writ_core::api::{AttestRequest, Attestation, RegisterAgent};

use crate::harness::Broker;

const ISS: &str = "https://idp.example";
const SUB: &str = "workload-1";

#[expect(
    clippy::disallowed_methods,
    reason = "outside tokens are minted against the real clock the broker reads"
)]
fn claims() -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"iss": ISS, "aud": "writ", "sub": SUB, "iat": now, "exp": now + 300})
}

async fn oidc_agent(b: &Broker, name: &str, jwks: serde_json::Value, algorithms: &[&str]) {
    b.admin()
        .register_agent(&RegisterAgent {
            name: name.parse().unwrap(),
            attestation: Attestation::Oidc {
                issuer: ISS.into(),
                jwks_uri: None,
                jwks: Some(jwks),
                audience: "writ".into(),
                subject: SUB.into(),
                algorithms: algorithms.iter().map(|s| s.to_string()).collect(),
            },
            attributes: Default::default(),
            workload: None,
        })
        .await
        .unwrap();
}

async fn attest(b: &Broker, agent: &str, token: &str) -> Result<(), writ_client::ClientError> {
    b.anon()
        .attest(&AttestRequest {
            agent: agent.parse().unwrap(),
            join_token: None,
            oidc_token: Some(token.to_owned()),
            jwt_svid: None,
        })
        .await
        .map(|_| ())
}

fn p256() -> (Vec<u8>, serde_json::Value) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let (x, y) = (&point[1..33], &point[33..65]);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y), "kid": "ec", "alg": "ES256"});
    (pkcs8.as_ref().to_vec(), jwk)
}

/// J4: an ES256 signature with r = s = 0 is refused, where a real ES256
/// signature from the same issuer is accepted.
#[tokio::test]
async fn j4_es256_zero_signature_is_refused() {
    let b = Broker::start();
    let (pkcs8, jwk) = p256();
    oidc_agent(&b, "ec-agent", json!({"keys": [jwk]}), &["ES256"]).await;
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("ec".into());
    let good = jsonwebtoken::encode(
        &h,
        &claims(),
        &jsonwebtoken::EncodingKey::from_ec_der(&pkcs8),
    )
    .unwrap();
    attest(&b, "ec-agent", &good).await.unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let zero = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    let e = attest(&b, "ec-agent", &zero).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
}

/// J5: an Ed25519 signature with S replaced by S + L (non-canonical, valid
/// under lax verification) is refused.
#[tokio::test]
async fn j5_non_canonical_ed25519_signature_is_refused() {
    let b = Broker::start();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()), "kid": "ed", "alg": "EdDSA"});
    oidc_agent(&b, "ed-agent", json!({"keys": [jwk]}), &[]).await;
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some("ed".into());
    let good = jsonwebtoken::encode(
        &h,
        &claims(),
        &jsonwebtoken::EncodingKey::from_ed_der(&pkcs8),
    )
    .unwrap();
    attest(&b, "ed-agent", &good).await.unwrap();

    // L, the order of the Ed25519 group, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let parts: Vec<&str> = good.split('.').collect();
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let v = u16::from(sig[32 + i]) + u16::from(*l) + carry;
        sig[32 + i] = (v & 0xff) as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    let malleated = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    let e = attest(&b, "ed-agent", &malleated).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
}

/// J3: a token whose header `alg` differs from the algorithm pinned to the
/// key (`alg` in the JWK) is refused, even if both are allowed.
#[tokio::test]
async fn j3_header_alg_must_match_the_keys_alg() {
    let b = Broker::start();
    let (pkcs8, mut jwk) = p256();
    // The key says EdDSA; the token will say ES256.
    jwk["alg"] = json!("EdDSA");
    oidc_agent(
        &b,
        "mixed-agent",
        json!({"keys": [jwk]}),
        &["EdDSA", "ES256"],
    )
    .await;
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("ec".into());
    let token = jsonwebtoken::encode(
        &h,
        &claims(),
        &jsonwebtoken::EncodingKey::from_ec_der(&pkcs8),
    )
    .unwrap();
    let e = attest(&b, "mixed-agent", &token).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
}

/// D1: two `DPoP` headers are refused.
#[tokio::test]
async fn d1_two_dpop_headers_are_refused() {
    let b = Broker::start();
    let key = writ_core::dpop::ProofKey::generate().unwrap().0;
    let url = b.url("/v1/attest");
    #[expect(
        clippy::disallowed_methods,
        reason = "proofs are checked against the broker's real clock"
    )]
    let now = writ_core::Timestamp::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let jt = b
        .admin()
        .join_token(&"demo-agent".parse().unwrap(), 60)
        .await
        .unwrap()
        .join_token;
    let r = b
        .http()
        .post(&url)
        .header("dpop", key.proof("POST", &url, None, None, now).unwrap())
        .header("dpop", key.proof("POST", &url, None, None, now).unwrap())
        .json(&json!({"agent": "demo-agent", "join_token": jt}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("more than one DPoP header"),
        "{body}"
    );
    // The join token was not consumed.
    assert!(
        b.anon()
            .attest(&AttestRequest {
                agent: "demo-agent".parse().unwrap(),
                join_token: Some(jt),
                oidc_token: None,
                jwt_svid: None,
            })
            .await
            .is_ok()
    );
}
