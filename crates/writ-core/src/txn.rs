//! Transaction tokens (draft-ietf-oauth-transaction-tokens): what a gateway
//! tells a tool, signed, about the call it forwards: who calls (the agent,
//! the human it acts for, the delegation chain), for which task and
//! intent, and what was asked (method and path). The gateway signs them
//! (ES256, through the JOSE crate) with a key of its own that the broker
//! publishes in its JWKS under a `kid` starting with
//! [`TXN_KID_PREFIX`], which no verifier of writ's access tokens accepts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse,
};
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::token::{Actor, SigningAlg, SigningKey, TokenError, p256_thumbprint};

pub use crate::token::TXN_KID_PREFIX;

/// The `typ` of a transaction token.
pub const TXN_TOKEN_TYP: &str = "txntoken+jwt";
/// The request header that carries it.
pub const TXN_TOKEN_HEADER: &str = "txn-token";
/// How long a transaction token lives: it is made for one call.
pub const TXN_TOKEN_SECS: i64 = 60;

/// The claims of a transaction token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnClaims {
    /// The broker's issuer: the trust domain the gateway acts in.
    pub iss: String,
    /// The tool's audience.
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The call's id (the same for every token of one forwarded call).
    pub txn: String,
    /// The agent acting now (its SPIFFE ID).
    pub sub: String,
    /// The scopes the call's token carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The requesting workload: the gateway.
    pub req_wl: String,
    /// The transaction's context.
    pub tctx: TxnContext,
    /// The request's context.
    pub rctx: RequestContext,
}

/// What the call is part of and what it asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnContext {
    /// The tool's name.
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// The human the task acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obo: Option<String>,
    /// The delegation chain (RFC 8693 `act`), on delegated calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    pub method: String,
    pub path: String,
}

/// Where the call came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestContext {
    /// The agent's address as the gateway saw it.
    pub req_ip: String,
}

/// A gateway's transaction-token key (P-256), made at start and never
/// written anywhere.
#[derive(Debug)]
pub struct TxnSigner {
    key: SigningKey,
}

/// The `kid` of a transaction-token key with public point `x`, `y`.
pub fn txn_kid(x: &str, y: &str) -> String {
    format!("{TXN_KID_PREFIX}{}", p256_thumbprint(x, y))
}

impl TxnSigner {
    pub fn generate(now: Timestamp) -> Result<Self, TokenError> {
        let key = SigningKey::generate_for(SigningAlg::ES256, now)?;
        let kid = match &key.jwk().algorithm {
            AlgorithmParameters::EllipticCurve(p) => txn_kid(&p.x, &p.y),
            _ => return Err(TokenError::Key),
        };
        Ok(Self {
            key: key.with_kid(kid),
        })
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The public key, as the broker publishes it.
    pub fn jwk(&self) -> Jwk {
        self.key.jwk()
    }

    /// A signed transaction token (`typ` [`TXN_TOKEN_TYP`]).
    pub fn sign(&self, claims: &TxnClaims) -> Result<String, TokenError> {
        self.key.sign_typed(TXN_TOKEN_TYP, claims)
    }
}

/// The key a gateway asks the broker to publish, as published: a public
/// P-256 key (nothing else is accepted: no private part, no other curve),
/// with `use` `sig`, `alg` `ES256` and the `kid` its thumbprint makes.
pub fn published_txn_jwk(submitted: &Jwk) -> Result<Jwk, TokenError> {
    let AlgorithmParameters::EllipticCurve(p) = &submitted.algorithm else {
        return Err(TokenError::Key);
    };
    if p.curve != EllipticCurve::P256 {
        return Err(TokenError::Key);
    }
    // Coordinates of 32 bytes each (a point off the curve verifies nothing).
    let coordinate = |c: &str| {
        URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .is_some_and(|b| b.len() == 32)
    };
    if !coordinate(&p.x) || !coordinate(&p.y) {
        return Err(TokenError::Key);
    }
    let public = AlgorithmParameters::EllipticCurve(p.clone());
    let kid = txn_kid(&p.x, &p.y);
    Ok(Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_id: Some(kid),
            key_algorithm: Some(KeyAlgorithm::ES256),
            ..Default::default()
        },
        algorithm: public,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    #[test]
    fn a_transaction_token_verifies_with_its_published_key_and_no_other() {
        let now = Timestamp::from_secs(1_800_000_000);
        let signer = TxnSigner::generate(now).unwrap();
        let published = published_txn_jwk(&signer.jwk()).unwrap();
        assert_eq!(published.common.key_id.as_deref(), Some(signer.kid()));
        assert!(signer.kid().starts_with(TXN_KID_PREFIX));
        let claims = TxnClaims {
            iss: "http://writ.test".into(),
            aud: "https://tickets.example".into(),
            iat: now.secs(),
            exp: now.secs() + TXN_TOKEN_SECS,
            jti: "j1".into(),
            txn: "call-1".into(),
            sub: "spiffe://writ.local/agent/a".into(),
            scope: Some("tickets:read".into()),
            req_wl: "gateway:embedded".into(),
            tctx: TxnContext {
                tool: "tickets".into(),
                task: Some("task_1".into()),
                intent: Some("triage".into()),
                obo: Some("alice".into()),
                act: None,
                method: "GET".into(),
                path: "/tickets".into(),
            },
            rctx: RequestContext {
                req_ip: "127.0.0.1".into(),
            },
        };
        let token = signer.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some(TXN_TOKEN_TYP));
        assert_eq!(header.alg, Algorithm::ES256);
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["https://tickets.example"]);
        v.validate_exp = false;
        let key = DecodingKey::from_jwk(&published).unwrap();
        let got = jsonwebtoken::decode::<TxnClaims>(&token, &key, &v).unwrap();
        assert_eq!(got.claims, claims);
        let other = TxnSigner::generate(now).unwrap();
        let wrong = DecodingKey::from_jwk(&published_txn_jwk(&other.jwk()).unwrap()).unwrap();
        assert!(jsonwebtoken::decode::<TxnClaims>(&token, &wrong, &v).is_err());
    }

    #[test]
    fn a_transaction_token_key_never_verifies_an_access_token() {
        // A gateway's key is in the broker's JWKS: an `at+jwt` it signed
        // (a gateway minting itself access) is refused by writ's verifier.
        let now = Timestamp::from_secs(1_800_000_000);
        let signer = TxnSigner::generate(now).unwrap();
        let jwks = jsonwebtoken::jwk::JwkSet {
            keys: vec![published_txn_jwk(&signer.jwk()).unwrap()],
        };
        let claims = serde_json::json!({
            "iss": "http://writ.test", "sub": "spiffe://writ.local/agent/a",
            "aud": "https://tickets.example", "exp": now.secs() + 60, "iat": now.secs(),
            "nbf": now.secs(), "jti": "j", "client_id": "ins_x",
        });
        let forged = signer.key.sign_typed("at+jwt", &claims).unwrap();
        assert_eq!(
            crate::token::verify_with_jwks(&forged, &jwks, "http://writ.test", now),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn only_a_public_p256_key_is_published() {
        let now = Timestamp::from_secs(1_800_000_000);
        let ed = SigningKey::generate(now).unwrap();
        assert_eq!(published_txn_jwk(&ed.jwk()), Err(TokenError::Key));
        let mut bad = TxnSigner::generate(now).unwrap().jwk();
        if let AlgorithmParameters::EllipticCurve(p) = &mut bad.algorithm {
            p.y = "AAAA".into();
        }
        assert_eq!(published_txn_jwk(&bad), Err(TokenError::Key));
    }
}
