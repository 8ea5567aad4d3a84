//! DPoP (RFC 9449): proofs of possession for sender-constrained tokens.
//!
//! [`verify_proof`] performs the checks of RFC 9449 §4.3 that need no state:
//! size, `typ`, an algorithm allow-list, a public-only `jwk` in the header,
//! the signature under that key, `htm`, `htu` (normalised), `iat` within a
//! window, and `ath`. Replay (`jti`) and server nonces are the caller's,
//! since they need memory: the result carries a hash of the `jti` and the
//! nonce for that. [`Proof`] builds proofs, for clients.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use std::collections::HashSet;

/// The `typ` of a DPoP proof.
pub const PROOF_TYP: &str = "dpop+jwt";
/// Algorithms accepted for proofs.
pub const ALGORITHMS: &[Algorithm] = &[Algorithm::EdDSA, Algorithm::ES256];
/// The names proofs may give them in `alg`: RFC 9864's `Ed25519` is the
/// fully specified name of what `EdDSA` means with an Ed25519 key.
pub const ALGORITHM_NAMES: &[&str] = &["EdDSA", "Ed25519", "ES256"];

/// The algorithm an `alg` name stands for, if proofs may use it.
pub fn algorithm_named(name: &str) -> Option<Algorithm> {
    match name {
        "EdDSA" | "Ed25519" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}
/// Proofs longer than this are refused before parsing.
pub const MAX_PROOF_LEN: usize = 4096;
/// How old a proof's `iat` may be.
pub const MAX_AGE_SECS: i64 = 60;
/// How far in the future a proof's `iat` may be (clock skew).
pub const MAX_SKEW_SECS: i64 = 30;
/// Longest accepted `jti`.
pub const MAX_JTI_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("DPoP proof is larger than {MAX_PROOF_LEN} bytes")]
    TooLarge,
    #[error("DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    #[error("DPoP proof typ must be dpop+jwt")]
    Type,
    #[error("DPoP proof algorithm is not allowed (EdDSA or Ed25519, ES256)")]
    Algorithm,
    #[error("DPoP proof must carry a public jwk")]
    MissingKey,
    #[error("DPoP proof jwk must not contain private key material")]
    PrivateKey,
    #[error("DPoP proof jwk does not match its algorithm")]
    KeyMismatch,
    #[error("DPoP proof signature is invalid")]
    Signature,
    #[error("DPoP proof htm does not match the request method")]
    Method,
    #[error("DPoP proof htu does not match the request URL")]
    Url,
    #[error("DPoP proof iat is outside the accepted window")]
    Time,
    #[error("DPoP proof jti is missing or too long")]
    Jti,
    #[error("DPoP proof ath does not match the access token")]
    AccessTokenHash,
    #[error("DPoP proof was signed by a key other than the token's")]
    WrongKey,
    #[error("DPoP proof was already used")]
    Replay,
    #[error("DPoP proof needs a fresh server nonce")]
    UseNonce,
    #[error("cannot build a DPoP proof: {0}")]
    Build(String),
}

/// What a verified proof says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 SHA-256 thumbprint of the proof's key.
    pub jkt: String,
    /// SHA-256 of the `jti` (hex): what a replay cache keeps.
    pub jti_hash: String,
    pub iat: i64,
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub method: &'a str,
    /// The full request URL as the client addressed it (no query).
    pub url: &'a str,
    /// The access token presented with the proof, if any.
    pub access_token: Option<&'a str>,
    pub now: Timestamp,
}

/// `base64url(SHA-256(token))`, the `ath` claim.
pub fn ath(access_token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// RFC 7638 thumbprint of a JWK.
pub fn thumbprint(jwk: &Jwk) -> Result<String, DpopError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| DpopError::MissingKey)
}

/// `htu` comparison (RFC 9449 §4.3 check 9): scheme and host are
/// case-insensitive, default ports are implied, query and fragment ignored.
pub fn same_url(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (url::Url::parse(a), url::Url::parse(b)) else {
        return false;
    };
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

/// Verifies a proof for one request. Replay and nonce checks remain the
/// caller's.
pub fn verify_proof(proof: &str, expected: &Expected<'_>) -> Result<VerifiedProof, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(DpopError::TooLarge);
    }
    if proof.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(DpopError::Malformed("not three dot-separated parts"));
    }
    // The header is read as JSON first: private key members would be
    // dropped by the typed JWK parser, and `alg` may be RFC 9864's
    // `Ed25519`, which the JOSE crate's header type does not name.
    let (message, signature) = proof
        .rsplit_once('.')
        .ok_or(DpopError::Malformed("not three dot-separated parts"))?;
    let raw_header = proof
        .split('.')
        .next()
        .ok_or(DpopError::Malformed("no header"))?;
    let mut raw: serde_json::Value = URL_SAFE_NO_PAD
        .decode(raw_header)
        .map_err(|_| DpopError::Malformed("the header is not base64url"))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|_| DpopError::Malformed("the header is not JSON"))
        })?;
    let raw_jwk = raw
        .get("jwk")
        .and_then(|j| j.as_object())
        .ok_or(DpopError::MissingKey)?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| raw_jwk.contains_key(*m))
    {
        return Err(DpopError::PrivateKey);
    }
    let alg = raw
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .and_then(algorithm_named)
        .ok_or(DpopError::Algorithm)?;
    if let Some(obj) = raw.as_object_mut() {
        obj.insert(
            "alg".into(),
            serde_json::to_value(alg).map_err(|_| DpopError::Algorithm)?,
        );
    }
    let header: Header = serde_json::from_value(raw)
        .map_err(|_| DpopError::Malformed("the header does not fit a JOSE header"))?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(PROOF_TYP))
    {
        return Err(DpopError::Type);
    }
    if header.jku.is_some() || header.x5u.is_some() || header.x5c.is_some() || header.crit.is_some()
    {
        return Err(DpopError::Malformed(
            "the header names keys or extensions by reference (jku, x5u, x5c, crit)",
        ));
    }
    let jwk = header.jwk.ok_or(DpopError::MissingKey)?;
    let key_fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        _ => false,
    };
    if !key_fits {
        return Err(DpopError::KeyMismatch);
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| DpopError::KeyMismatch)?;
    // The signature over the exact bytes sent, by the JOSE crate.
    let signed = jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg)
        .map_err(|_| DpopError::Malformed("the signature is not base64url"))?;
    if !signed {
        return Err(DpopError::Signature);
    }
    let claims: ProofClaims =
        jsonwebtoken::dangerous::insecure_decode_claims(proof).map_err(|_| {
            DpopError::Malformed(
                "the claims are not JSON with string jti, htm, htu and integer iat",
            )
        })?;
    if claims.htm != expected.method {
        return Err(DpopError::Method);
    }
    if !same_url(&claims.htu, expected.url) {
        return Err(DpopError::Url);
    }
    let now = expected.now.secs();
    if claims.iat < now.saturating_sub(MAX_AGE_SECS)
        || claims.iat > now.saturating_add(MAX_SKEW_SECS)
    {
        return Err(DpopError::Time);
    }
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
        return Err(DpopError::Jti);
    }
    match (expected.access_token, &claims.ath) {
        (Some(t), Some(a))
            if aws_lc_rs::constant_time::verify_slices_are_equal(
                ath(t).as_bytes(),
                a.as_bytes(),
            )
            .is_ok() => {}
        (Some(_), _) => return Err(DpopError::AccessTokenHash),
        (None, _) => {}
    }
    let jti_hash = crate::audit::hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, claims.jti.as_bytes()).as_ref(),
    );
    Ok(VerifiedProof {
        jkt: thumbprint(&jwk)?,
        jti_hash,
        iat: claims.iat,
        nonce: claims.nonce,
    })
}

/// A client's DPoP key (Ed25519), which signs proofs.
pub struct ProofKey {
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKey").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct OutClaims<'a> {
    jti: String,
    htm: &'a str,
    htu: &'a str,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl ProofKey {
    /// From an Ed25519 PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, DpopError> {
        let signing = crate::token::SigningKey::from_pkcs8(pkcs8, Timestamp::from_millis(0), None)
            .map_err(|e| DpopError::Build(e.to_string()))?;
        let mut jwk = signing.jwk();
        jwk.common = Default::default();
        Ok(Self {
            encoding: EncodingKey::from_ed_der(pkcs8),
            jwk,
        })
    }

    /// A fresh key; returns it with its PKCS#8 document for saving: the
    /// v1 form (RFC 8410's `PrivateKeyInfo`), the one OpenSSL, Python's
    /// `cryptography` and Node's crypto load as written.
    pub fn generate() -> Result<(Self, Vec<u8>), DpopError> {
        use aws_lc_rs::signature::Ed25519KeyPair;
        let failed = |_| DpopError::Build("key generation failed".into());
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(failed)?;
        let v1 = Ed25519KeyPair::from_pkcs8(doc.as_ref())
            .map_err(|_| DpopError::Build("key generation failed".into()))?
            .to_pkcs8v1()
            .map_err(failed)?;
        let pkcs8 = v1.as_ref().to_vec();
        Ok((Self::from_pkcs8(&pkcs8)?, pkcs8))
    }

    pub fn thumbprint(&self) -> Result<String, DpopError> {
        thumbprint(&self.jwk)
    }

    /// A proof for `method url`, bound to `access_token` when given.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: Timestamp,
    ) -> Result<String, DpopError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(PROOF_TYP.to_owned());
        header.jwk = Some(self.jwk.clone());
        let claims = OutClaims {
            jti: crate::random::token_128().map_err(|e| DpopError::Build(e.to_string()))?,
            htm: method,
            htu: url,
            iat: now.secs(),
            ath: access_token.map(ath),
            nonce,
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| DpopError::Build(e.to_string()))
    }
}

/// A proof is accepted at most this long after it could first be used.
const WINDOW_SECS: i64 = MAX_AGE_SECS + MAX_SKEW_SECS;

/// Why a replay cache refused a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The proof was seen before.
    Replay,
    /// The cache is full: refuse rather than risk a replay.
    Full,
}

/// A DPoP replay cache: seen `jti` hashes in two generations: entries live between one and two
/// windows, and forgetting is O(1) (drop the older generation).
#[derive(Debug)]
pub struct ReplayCache {
    current: HashSet<String>,
    previous: HashSet<String>,
    rotated_at: i64,
    max: usize,
}

impl ReplayCache {
    pub fn new(max: usize) -> Self {
        Self {
            current: HashSet::new(),
            previous: HashSet::new(),
            rotated_at: i64::MIN,
            max,
        }
    }

    pub fn insert(&mut self, jti_hash: &str, now: Timestamp) -> Result<(), ReplayError> {
        let now = now.secs();
        if now.saturating_sub(self.rotated_at) >= WINDOW_SECS {
            self.previous = std::mem::take(&mut self.current);
            if now.saturating_sub(self.rotated_at) >= 2 * WINDOW_SECS {
                self.previous.clear();
            }
            self.rotated_at = now;
        }
        if self.current.contains(jti_hash) || self.previous.contains(jti_hash) {
            return Err(ReplayError::Replay);
        }
        if self.current.len() >= self.max {
            return Err(ReplayError::Full);
        }
        self.current.insert(jti_hash.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);
    const URL: &str = "https://writ.example/oauth2/token";

    fn expected(token: Option<&str>) -> Expected<'_> {
        Expected {
            method: "POST",
            url: URL,
            access_token: token,
            now: NOW,
        }
    }

    #[test]
    fn a_generated_key_is_saved_in_the_pkcs8_form_every_toolkit_loads() {
        let (key, pkcs8) = ProofKey::generate().unwrap();
        // RFC 8410 PrivateKeyInfo: version 0, id-Ed25519, the 32-byte seed.
        assert_eq!(pkcs8.len(), 48);
        assert!(pkcs8.starts_with(&[
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20
        ]));
        let again = ProofKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(key.thumbprint().unwrap(), again.thumbprint().unwrap());
    }

    #[test]
    fn rfc9449_figure_2_thumbprint() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        }))
        .unwrap();
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }

    #[test]
    fn a_fresh_proof_verifies_and_binds_its_key() {
        let (key, _) = ProofKey::generate().unwrap();
        let p = key.proof("POST", URL, Some("tok"), None, NOW).unwrap();
        let v = verify_proof(&p, &expected(Some("tok"))).unwrap();
        assert_eq!(v.jkt, key.thumbprint().unwrap());
        assert_eq!(v.jti_hash.len(), 64);
    }

    #[test]
    fn every_stateless_check_refuses() {
        let (key, _) = ProofKey::generate().unwrap();
        let p = key.proof("POST", URL, Some("tok"), None, NOW).unwrap();
        assert_eq!(
            verify_proof(
                &p,
                &Expected {
                    method: "GET",
                    ..expected(Some("tok"))
                }
            ),
            Err(DpopError::Method)
        );
        assert_eq!(
            verify_proof(
                &p,
                &Expected {
                    url: "https://writ.example/v1/tasks",
                    ..expected(Some("tok"))
                }
            ),
            Err(DpopError::Url)
        );
        assert_eq!(
            verify_proof(&p, &expected(Some("other"))),
            Err(DpopError::AccessTokenHash)
        );
        let no_ath = key.proof("POST", URL, None, None, NOW).unwrap();
        assert_eq!(
            verify_proof(&no_ath, &expected(Some("tok"))),
            Err(DpopError::AccessTokenHash)
        );
        let old = key
            .proof("POST", URL, None, None, NOW.add_secs(-600))
            .unwrap();
        assert_eq!(verify_proof(&old, &expected(None)), Err(DpopError::Time));
        let future = key
            .proof("POST", URL, None, None, NOW.add_secs(600))
            .unwrap();
        assert_eq!(verify_proof(&future, &expected(None)), Err(DpopError::Time));
        assert!(matches!(
            verify_proof("a.b", &expected(None)),
            Err(DpopError::Malformed(_))
        ));
        assert_eq!(
            verify_proof(&"a".repeat(5000), &expected(None)),
            Err(DpopError::TooLarge)
        );
    }

    /// Signs `claims` under a header naming `alg` as given, with `key`.
    fn signed_as(key: &ProofKey, alg: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk});
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, Algorithm::EdDSA)
            .unwrap();
        format!("{message}.{sig}")
    }

    #[test]
    fn rfc_9864_ed25519_is_accepted_and_every_refusal_says_why() {
        let (key, _) = ProofKey::generate().unwrap();
        let claims = serde_json::json!({"jti": "j1", "htm": "POST", "htu": URL, "iat": NOW.secs()});
        let p = signed_as(&key, "Ed25519", &claims);
        let v = verify_proof(&p, &expected(None)).unwrap();
        assert_eq!(v.jkt, key.thumbprint().unwrap());
        // The same bytes with another name for the algorithm: refused,
        // and a flipped signature still fails as a signature.
        assert_eq!(
            verify_proof(&signed_as(&key, "EdDSA25519", &claims), &expected(None)),
            Err(DpopError::Algorithm)
        );
        assert_eq!(
            verify_proof(&signed_as(&key, "none", &claims), &expected(None)),
            Err(DpopError::Algorithm)
        );
        let mut flipped = p.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verify_proof(&String::from_utf8(flipped).unwrap(), &expected(None)),
            Err(DpopError::Signature)
        );
        let bad_claims = signed_as(&key, "Ed25519", &serde_json::json!({"htm": "POST"}));
        let e = verify_proof(&bad_claims, &expected(None)).unwrap_err();
        assert!(e.to_string().contains("claims"), "{e}");
        let e = verify_proof("e30.e30.e30", &expected(None)).unwrap_err();
        assert_eq!(e, DpopError::MissingKey, "{e}");
        let e = verify_proof("!!.e30.e30", &expected(None)).unwrap_err();
        assert!(e.to_string().contains("base64url"), "{e}");
    }

    #[test]
    fn htu_is_compared_normalised() {
        assert!(same_url("HTTPS://Writ.Example:443/oauth2/token", URL));
        assert!(same_url("https://writ.example/oauth2/token?x=1", URL));
        assert!(!same_url("https://writ.example/oauth2/Token", URL));
        assert!(!same_url("http://writ.example/oauth2/token", URL));
        assert!(!same_url("https://writ.example:8443/oauth2/token", URL));
    }
    #[test]
    fn remembered_for_a_window_and_bounded() {
        let mut s = ReplayCache::new(2);
        assert!(s.insert("a", NOW).is_ok());
        assert!(
            s.insert("a", NOW.add_secs(WINDOW_SECS - 1)).is_err(),
            "replay inside the window"
        );
        assert!(s.insert("b", NOW).is_ok());
        assert!(
            matches!(s.insert("c", NOW), Err(ReplayError::Full)),
            "full: fail closed"
        );
        // After one rotation "a" is still remembered; after two it is gone.
        assert!(s.insert("a", NOW.add_secs(WINDOW_SECS)).is_err());
        assert!(s.insert("a", NOW.add_secs(3 * WINDOW_SECS)).is_ok());
    }
}
