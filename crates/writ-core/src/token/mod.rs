//! Access tokens: RFC 9068 JWTs signed with Ed25519 (or P-256, as an
//! option), and their verification.
//!
//! Verification is strict and fails closed: a size bound before any parsing,
//! an explicit `typ`, a pinned algorithm, a known `kid`, no key material or key
//! URLs in the header, no `crit`, then the signature, then every claim against
//! the caller's clock. Signature checking and base64/JSON decoding are the
//! `jsonwebtoken` crate's, on `aws-lc-rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::time::Timestamp;

/// The `typ` of every access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is larger than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
    #[error("token is malformed")]
    Malformed,
    #[error("token type must be at+jwt")]
    WrongType,
    #[error("token algorithm is not allowed")]
    Algorithm,
    #[error("token header carries a forbidden parameter: {0}")]
    ForbiddenHeader(&'static str),
    #[error("token is signed by an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token issuer is wrong")]
    Issuer,
    #[error("token audience is wrong")]
    Audience,
    #[error("token subject is wrong")]
    Subject,
    #[error("token is not a {0}")]
    WrongKind(&'static str),
    #[error("signing failed")]
    Sign,
    #[error("key material is invalid")]
    Key,
}

/// Confirmation claim (RFC 7800), for sender-constrained tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    pub jkt: String,
}

/// An actor in a delegation chain (RFC 8693 §4.1): the outermost is the
/// current actor, each nested `act` the one before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// Number of hops, this one included.
    pub fn depth(&self) -> usize {
        1 + self.act.as_ref().map_or(0, |a| a.depth())
    }
}

/// The claims of every token writ issues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    pub iss: String,
    /// The agent's SPIFFE ID.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// The instance the token was issued to.
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The task id, on task tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The human principal the task acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The delegation chain, on delegated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// Set on tokens of a task that lives by an approved exception.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exception: bool,
    /// The task's declared intent, on tool tokens: what a gateway's policy
    /// sees of why the agent is calling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// The task's facts, on tool tokens: a gateway decides without the
    /// store, and must see the same task as every other enforcement point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_ctx: Option<TaskContext>,
}

/// What a tool token says of its task, for policy at a gateway: the same
/// facts the broker reads from its store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskContext {
    /// Everything the task holds, in `scope` claim form (`tool:scope ...`).
    pub capabilities: String,
    /// Unix seconds.
    pub started_at: i64,
    /// The task's hard end, unix seconds.
    pub expires_at: i64,
    /// The task it was delegated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub depth: u32,
    /// How the task's instance attested (`join_token`, `oidc`, `spiffe`,
    /// `spiffe_x509`).
    pub attestation: String,
}

/// What a verifier expects of a token beyond its signature.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    /// `None` accepts any audience: only for the issuer's own bookkeeping
    /// (introspection, revocation), never for authorising a request.
    pub audience: Option<&'a str>,
    pub kind: TokenKind,
}

/// Which kind of writ token is acceptable here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An instance token: no `task` claim.
    Instance,
    /// A task token: a `task` claim.
    Task,
    /// Either.
    Any,
}

/// Tokens whose signature verified, keyed by the SHA-256 of their bytes,
/// with the `kid` that signed them: a token seen again skips the signature
/// check and the JSON decoding, never the claim checks. Entries are dropped
/// once expired when the map is full; past `max` live entries it starts
/// over (a miss only costs a verification).
pub struct VerifiedTokens {
    map: Mutex<HashMap<[u8; 32], Remembered>>,
    max: usize,
}

/// A verified token's signing `kid` and claims.
pub type Remembered = (Arc<str>, Arc<AccessClaims>);

/// Most verified tokens a [`VerifiedTokens`] remembers by default.
pub const MAX_VERIFIED: usize = 100_000;

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::new(MAX_VERIFIED)
    }
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("len", &self.len())
            .field("max", &self.max)
            .finish()
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl VerifiedTokens {
    pub fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// The claims and signing `kid` of `token` if it verified before and
    /// has not expired at `now` (seconds).
    pub fn get(&self, token: &str, now: i64) -> Option<Remembered> {
        let key = token_digest(token);
        let m = self.map.lock().ok()?;
        m.get(&key)
            .filter(|(_, c)| now <= c.exp.saturating_add(LEEWAY_SECS))
            .cloned()
    }

    /// A remembered token's claims if they still hold at `now` for
    /// `issuer` (times with leeway, issuer): for a verifier that checks
    /// everything else about the token itself.
    pub fn recall(&self, token: &str, issuer: &str, now: Timestamp) -> Option<Arc<AccessClaims>> {
        let (_, c) = self.get(token, now.secs())?;
        (c.iss == issuer && check_times(c.exp, c.nbf, Some(c.iat), now).is_ok()).then_some(c)
    }

    /// Remembers a token whose signature (by `kid`) verified.
    pub fn put(&self, token: &str, kid: Arc<str>, claims: Arc<AccessClaims>, now: i64) {
        let key = token_digest(token);
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= self.max {
                m.retain(|_, (_, c)| c.exp.saturating_add(LEEWAY_SECS) >= now);
                if m.len() >= self.max {
                    m.clear();
                }
            }
            m.insert(key, (kid, claims));
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The issuer's signing keys: one active, older ones kept for verification.
/// A ring is replaced, never changed, when keys rotate, so the tokens it
/// has verified are forgotten with it.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
    verified: VerifiedTokens,
}

impl KeyRing {
    /// Builds a ring; the newest unretired key signs.
    pub fn new(mut keys: Vec<SigningKey>) -> Self {
        keys.sort_by_key(|k| k.created_at);
        Self {
            keys,
            verified: VerifiedTokens::default(),
        }
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    pub fn active(&self) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.retired_at.is_none())
    }

    /// Keys a verifier must still know: active ones, and retired ones whose
    /// tokens may not all have expired yet.
    pub fn published(
        &self,
        now: Timestamp,
        max_token_lifetime_secs: i64,
    ) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().filter(move |k| match k.retired_at {
            None => true,
            Some(r) => now < r.add_secs(max_token_lifetime_secs + LEEWAY_SECS),
        })
    }

    pub fn jwks(&self, now: Timestamp, max_token_lifetime_secs: i64) -> JwkSet {
        JwkSet {
            keys: self
                .published(now, max_token_lifetime_secs)
                .map(SigningKey::jwk)
                .collect(),
        }
    }

    /// Every key's public half, retired ones included: what verifies the
    /// audit checkpoints of the whole history.
    pub fn all_jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().map(SigningKey::jwk).collect(),
        }
    }

    /// Signs claims with the active key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let key = self.active().ok_or(TokenError::Key)?;
        key.compact(&key.header(ACCESS_TOKEN_TYP), claims)
    }

    /// Signs an audit head checkpoint (`typ` `writ-checkpoint+jwt`).
    pub fn sign_checkpoint(&self, c: &Checkpoint) -> Result<String, TokenError> {
        let key = self.active().ok_or(TokenError::Key)?;
        key.compact(&key.header(CHECKPOINT_TYP), c)
    }

    /// Verifies a token this issuer signed. `now` decides expiry.
    pub fn verify(
        &self,
        token: &str,
        expect: Expect<'_>,
        now: Timestamp,
        max_token_lifetime_secs: i64,
    ) -> Result<AccessClaims, TokenError> {
        let cached = self.verified.get(token, now.secs()).filter(|(kid, _)| {
            self.published(now, max_token_lifetime_secs)
                .any(|k| k.kid == **kid)
        });
        let claims = match cached {
            Some((_, claims)) => claims,
            None => {
                let (kid, alg) = access_token_kid(token)?;
                let key = self
                    .published(now, max_token_lifetime_secs)
                    .find(|k| k.kid == kid)
                    .ok_or(TokenError::UnknownKey)?;
                if key.alg != alg {
                    return Err(TokenError::Algorithm);
                }
                let claims: Arc<AccessClaims> =
                    Arc::new(signature_only(token, &key.decoding, &[alg.jose()])?);
                self.verified
                    .put(token, Arc::from(kid), Arc::clone(&claims), now.secs());
                claims
            }
        };
        check_times(claims.exp, claims.nbf, Some(claims.iat), now)?;
        if claims.iss != expect.issuer {
            return Err(TokenError::Issuer);
        }
        if expect.audience.is_some_and(|a| a != claims.aud) {
            return Err(TokenError::Audience);
        }
        match (expect.kind, claims.task.is_some()) {
            (TokenKind::Instance, true) => return Err(TokenError::WrongKind("instance token")),
            (TokenKind::Task, false) => return Err(TokenError::WrongKind("task token")),
            _ => {}
        }
        Ok(Arc::unwrap_or_clone(claims))
    }
}

/// The header rules of a writ access token (explicit `at+jwt` type, EdDSA
/// or ES256); returns its `kid` and algorithm.
fn access_token_kid(token: &str) -> Result<(String, SigningAlg), TokenError> {
    let header = checked_header(token)?;
    let alg = SigningAlg::of(header.alg).ok_or(TokenError::Algorithm)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(TokenError::WrongType);
    }
    Ok((header.kid.ok_or(TokenError::UnknownKey)?, alg))
}

/// The key `kid` of a published JWKS, for a token signed with `alg`: the
/// key must name that algorithm itself (RFC 8725 §3.1), and must not be a
/// gateway's transaction-token key, which signs nothing else.
fn published_key(jwks: &JwkSet, kid: &str, alg: SigningAlg) -> Result<DecodingKey, TokenError> {
    if kid.starts_with(TXN_KID_PREFIX) {
        return Err(TokenError::UnknownKey);
    }
    let jwk = jwks.find(kid).ok_or(TokenError::UnknownKey)?;
    let pinned = match jwk.common.key_algorithm {
        Some(KeyAlgorithm::EdDSA) => SigningAlg::EdDSA,
        Some(KeyAlgorithm::ES256) => SigningAlg::ES256,
        _ => return Err(TokenError::Algorithm),
    };
    if pinned != alg {
        return Err(TokenError::Algorithm);
    }
    DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey)
}

/// The `kid` of every gateway transaction-token key starts so: the broker
/// publishes them beside its own, and no verifier of writ's own tokens
/// takes them for one of its keys.
pub const TXN_KID_PREFIX: &str = "txn.";

/// Size bound and header rules shared by every verifier.
fn checked_header(token: &str) -> Result<Header, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    if token.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    header_rules(header)
}

/// The header rules every token here is held to.
fn header_rules(header: Header) -> Result<Header, TokenError> {
    if header.jwk.is_some() {
        return Err(TokenError::ForbiddenHeader("jwk"));
    }
    if header.jku.is_some() {
        return Err(TokenError::ForbiddenHeader("jku"));
    }
    if header.x5u.is_some() {
        return Err(TokenError::ForbiddenHeader("x5u"));
    }
    if header.x5c.is_some() {
        return Err(TokenError::ForbiddenHeader("x5c"));
    }
    if header.crit.is_some() {
        return Err(TokenError::ForbiddenHeader("crit"));
    }
    Ok(header)
}

/// An outside token's header, which may name its algorithm `Ed25519`
/// (RFC 9864's fully specified name for EdDSA with an Ed25519 key, which
/// the JOSE crate's header type does not know): the header with `EdDSA`
/// in its place, and whether that was done.
fn external_header(token: &str) -> Result<(Header, bool), TokenError> {
    match checked_header(token) {
        Ok(h) => Ok((h, false)),
        Err(TokenError::Malformed) if token.bytes().filter(|b| *b == b'.').count() == 2 => {
            let raw = token.split('.').next().ok_or(TokenError::Malformed)?;
            let mut json: serde_json::Value = URL_SAFE_NO_PAD
                .decode(raw)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or(TokenError::Malformed)?;
            if json.get("alg").and_then(serde_json::Value::as_str) != Some("Ed25519") {
                return Err(TokenError::Malformed);
            }
            if let Some(o) = json.as_object_mut() {
                o.insert("alg".into(), serde_json::Value::from("EdDSA"));
            }
            let header: Header = serde_json::from_value(json).map_err(|_| TokenError::Malformed)?;
            Ok((header_rules(header)?, true))
        }
        Err(e) => Err(e),
    }
}

/// The signature of `token` over its exact bytes, by the JOSE crate, with
/// `alg` (the header's own name for it may differ: `Ed25519`), then its
/// claims.
fn signature_as<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<T, TokenError> {
    let (message, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    if !jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg)
        .map_err(|_| TokenError::Malformed)?
    {
        return Err(TokenError::Signature);
    }
    jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| TokenError::Malformed)
}

/// Checks the signature (and only the signature) with the crate's verifier.
fn signature_only<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    algs: &[Algorithm],
) -> Result<T, TokenError> {
    let mut v = Validation::new(algs.first().copied().unwrap_or(Algorithm::EdDSA));
    v.algorithms = algs.to_vec();
    v.required_spec_claims = HashSet::new();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<T>(token, key, &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })
}

fn check_times(exp: i64, nbf: i64, iat: Option<i64>, now: Timestamp) -> Result<(), TokenError> {
    let now = now.secs();
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if nbf > now.saturating_add(LEEWAY_SECS)
        || iat.is_some_and(|iat| iat > now.saturating_add(LEEWAY_SECS))
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Verifies a writ access token against a published JWKS (as a gateway or
/// any outside verifier would): header rules, EdDSA, signature, `iss`, and
/// lifetime. The audience is the caller's to check.
pub fn verify_with_jwks(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    now: Timestamp,
) -> Result<AccessClaims, TokenError> {
    let (kid, alg) = access_token_kid(token)?;
    let key = published_key(jwks, &kid, alg)?;
    let claims: AccessClaims = signature_only(token, &key, &[alg.jose()])?;
    check_times(claims.exp, claims.nbf, Some(claims.iat), now)?;
    if claims.iss != issuer {
        return Err(TokenError::Issuer);
    }
    Ok(claims)
}

/// The `typ` of a signed audit head checkpoint.
pub const CHECKPOINT_TYP: &str = "writ-checkpoint+jwt";

/// A signed statement that the audit chain had `seq` records ending in
/// `hash` at `iat`: kept outside writ, it makes truncation detectable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub iss: String,
    pub seq: u64,
    pub hash: String,
    pub iat: i64,
    /// The `seq` of the checkpoint the broker kept before this one (0 for
    /// the first): a checkpoint removed from the middle is missed.
    #[serde(default)]
    pub prev: u64,
}

/// Verifies a checkpoint against a published JWKS. `Ok(None)` when its key
/// is no longer published (the claims are then returned unverified, for the
/// caller to say so).
pub fn verify_checkpoint(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
) -> Result<(Checkpoint, bool), TokenError> {
    let header = checked_header(token)?;
    let alg = SigningAlg::of(header.alg).ok_or(TokenError::Algorithm)?;
    if header.typ.as_deref() != Some(CHECKPOINT_TYP) {
        return Err(TokenError::WrongType);
    }
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    if jwks.find(&kid).is_none() {
        let (_, claims) = insecure_peek(token)?;
        let c: Checkpoint = serde_json::from_value(claims).map_err(|_| TokenError::Malformed)?;
        return Ok((c, false));
    }
    let key = published_key(jwks, &kid, alg)?;
    let c: Checkpoint = signature_only(token, &key, &[alg.jose()])?;
    if c.iss != issuer {
        return Err(TokenError::Issuer);
    }
    Ok((c, true))
}

/// Reads the claims of a token without verifying anything; for display only.
pub fn insecure_peek(token: &str) -> Result<(serde_json::Value, serde_json::Value), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let mut part = || -> Result<serde_json::Value, TokenError> {
        let p = parts.next().ok_or(TokenError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
    };
    Ok((part()?, part()?))
}

mod assertion;
mod external;
mod segment;
mod signing;
pub use segment::*;
pub use signing::*;

/// An `aud` claim: one audience or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

pub use assertion::*;
pub use external::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outside_token_may_name_ed25519_as_rfc_9864_does() {
        let now = Timestamp::from_secs(1_800_000_000);
        let key = SigningKey::generate(now).unwrap();
        let jwks = JwkSet {
            keys: vec![key.jwk()],
        };
        let claims = serde_json::json!({
            "iss": "https://idp.example", "aud": "writ", "sub": "ci-runner",
            "exp": now.secs() + 60, "iat": now.secs(),
        });
        let signed = |alg: &str| {
            let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": key.kid()});
            let mut out = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let Pair::Ed25519(pair) = &key.pair else {
                unreachable!()
            };
            let sig = pair.sign(out.as_bytes());
            out.push('.');
            out.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
            out
        };
        let expect = ExternalExpect {
            issuer: "https://idp.example",
            audience: "writ",
            subject: "ci-runner",
            algorithms: &[Algorithm::EdDSA],
        };
        assert_eq!(
            verify_external(&signed("EdDSA"), &jwks, &expect, now),
            Ok(())
        );
        assert_eq!(
            verify_external(&signed("Ed25519"), &jwks, &expect, now),
            Ok(())
        );
        assert_eq!(
            verify_external(&signed("Ed448"), &jwks, &expect, now),
            Err(TokenError::Malformed)
        );
        let mut forged = signed("Ed25519").into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verify_external(&String::from_utf8(forged).unwrap(), &jwks, &expect, now),
            Err(TokenError::Signature)
        );
        let other = ExternalExpect {
            subject: "someone-else",
            ..expect
        };
        assert_eq!(
            verify_external(&signed("Ed25519"), &jwks, &other, now),
            Err(TokenError::Subject)
        );
    }

    const ISS: &str = "http://writ.test";

    fn claims(now: Timestamp, task: Option<&str>) -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "spiffe://writ.local/agent/a".into(),
            aud: ISS.into(),
            exp: now.secs() + 600,
            iat: now.secs(),
            nbf: now.secs(),
            jti: "jti_x".into(),
            client_id: "ins_x".into(),
            scope: Some("t:read".into()),
            task: task.map(str::to_owned),
            obo: None,
            cnf: None,
            act: None,
            exception: false,
            intent: None,
            task_ctx: None,
        }
    }

    fn expect(kind: TokenKind) -> Expect<'static> {
        Expect {
            issuer: ISS,
            audience: Some(ISS),
            kind,
        }
    }

    #[test]
    fn es256_tokens_verify_by_the_ring_and_by_the_published_jwks() {
        let now = Timestamp::from_secs(1_800_000_000);
        let key = SigningKey::generate_for(SigningAlg::ES256, now).unwrap();
        let again =
            SigningKey::from_pkcs8_for(SigningAlg::ES256, key.expose_pkcs8(), now, None).unwrap();
        assert_eq!(again.kid(), key.kid());
        let ring = KeyRing::new(vec![key]);
        let tok = ring.sign(&claims(now, Some("task_1"))).unwrap();
        let header = jsonwebtoken::decode_header(&tok).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert!(ring.verify(&tok, expect(TokenKind::Task), now, 900).is_ok());
        let jwks = ring.jwks(now, 900);
        assert!(verify_with_jwks(&tok, &jwks, ISS, now).is_ok());
        // A JWKS entry that names another algorithm than the token's is refused.
        let mut lying = jwks.clone();
        lying.keys[0].common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        assert_eq!(
            verify_with_jwks(&tok, &lying, ISS, now),
            Err(TokenError::Algorithm)
        );
        // An EdDSA ring does not take the ES256 token for one of its own.
        let ed = KeyRing::new(vec![SigningKey::generate(now).unwrap()]);
        assert_eq!(
            ed.verify(&tok, expect(TokenKind::Task), now, 900),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn sign_and_verify_with_rotation() {
        let now = Timestamp::from_secs(1_800_000_000);
        let k1 = SigningKey::generate(now).unwrap();
        let ring = KeyRing::new(vec![k1]);
        let tok = ring.sign(&claims(now, Some("task_1"))).unwrap();
        let c = ring
            .verify(&tok, expect(TokenKind::Task), now, 900)
            .unwrap();
        assert_eq!(c.task.as_deref(), Some("task_1"));
        assert_eq!(
            ring.verify(&tok, expect(TokenKind::Instance), now, 900),
            Err(TokenError::WrongKind("instance token"))
        );

        // Rotate: the old key still verifies until its tokens can have expired.
        let mut keys: Vec<SigningKey> = Vec::new();
        let old = SigningKey::from_pkcs8(ring.keys()[0].expose_pkcs8(), now, Some(now)).unwrap();
        keys.push(old);
        keys.push(SigningKey::generate(now.add_secs(1)).unwrap());
        let ring2 = KeyRing::new(keys);
        assert_ne!(ring2.active().unwrap().kid(), ring.keys()[0].kid());
        assert!(
            ring2
                .verify(&tok, expect(TokenKind::Any), now.add_secs(60), 900)
                .is_ok()
        );
        assert_eq!(ring2.jwks(now.add_secs(60), 900).keys.len(), 2);
        assert_eq!(ring2.jwks(now.add_secs(2000), 900).keys.len(), 1);
        assert_eq!(
            ring2.verify(&tok, expect(TokenKind::Any), now.add_secs(2000), 900),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn signed_tokens_are_the_jose_crates_bytes() {
        let now = Timestamp::from_secs(1_800_000_000);
        let ring = KeyRing::new(vec![SigningKey::generate(now).unwrap()]);
        let key = ring.active().unwrap();
        let mut c = claims(now, Some("task_1"));
        c.intent = Some("résumé \"quoted\" \u{1f600}".into());
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(key.kid.clone());
        assert_eq!(
            ring.sign(&c).unwrap(),
            jsonwebtoken::encode(&header, &c, &key.encoding).unwrap()
        );
        let cp = Checkpoint {
            iss: ISS.into(),
            seq: 7,
            hash: "ab".repeat(32),
            iat: now.secs(),
            prev: 0,
        };
        header.typ = Some(CHECKPOINT_TYP.to_owned());
        assert_eq!(
            ring.sign_checkpoint(&cp).unwrap(),
            jsonwebtoken::encode(&header, &cp, &key.encoding).unwrap()
        );
    }

    #[test]
    fn a_remembered_token_is_still_checked_in_full() {
        let now = Timestamp::from_secs(1_800_000_000);
        let old = SigningKey::generate(now).unwrap();
        let pkcs8 = old.expose_pkcs8().to_vec();
        let ring = KeyRing::new(vec![old]);
        let mut long = claims(now, Some("task_1"));
        long.exp = now.secs() + 10_000;
        let tok = ring.sign(&long).unwrap();
        let retired = SigningKey::from_pkcs8(&pkcs8, now, Some(now)).unwrap();
        let ring = KeyRing::new(vec![
            retired,
            SigningKey::generate(now.add_secs(1)).unwrap(),
        ]);

        // Verified once, then remembered: every claim check still applies.
        assert!(ring.verify(&tok, expect(TokenKind::Task), now, 900).is_ok());
        assert_eq!(ring.verified.len(), 1);
        assert_eq!(
            ring.verify(&tok, expect(TokenKind::Instance), now, 900),
            Err(TokenError::WrongKind("instance token"))
        );
        let other = Expect {
            issuer: ISS,
            audience: Some("elsewhere"),
            kind: TokenKind::Task,
        };
        assert_eq!(
            ring.verify(&tok, other, now, 900),
            Err(TokenError::Audience)
        );
        assert_eq!(
            ring.verify(
                &tok,
                expect(TokenKind::Task),
                now.add_secs(-LEEWAY_SECS - 1),
                900
            ),
            Err(TokenError::NotYetValid)
        );
        // The retired key leaves the published set before the token expires:
        // the remembered token dies with it.
        assert_eq!(
            ring.verify(&tok, expect(TokenKind::Task), now.add_secs(2000), 900),
            Err(TokenError::UnknownKey)
        );
        // A token differing in one byte is not the remembered one.
        let mut forged = tok.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(
            ring.verify(&forged, expect(TokenKind::Task), now, 900)
                .is_err()
        );
    }

    #[test]
    fn verified_tokens_forget_expired_ones_when_full() {
        let now = Timestamp::from_secs(1_800_000_000);
        let cache = VerifiedTokens::new(2);
        let mut c = claims(now, None);
        c.exp = now.secs() + 1;
        let kid: Arc<str> = Arc::from("k");
        cache.put("a", Arc::clone(&kid), Arc::new(c.clone()), now.secs());
        c.exp = now.secs() + 600;
        cache.put("b", Arc::clone(&kid), Arc::new(c.clone()), now.secs());
        assert!(cache.get("a", now.secs() + 1 + LEEWAY_SECS + 1).is_none());
        cache.put("c", Arc::clone(&kid), Arc::new(c), now.secs() + 100);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b", now.secs() + 100).is_some());
        assert!(cache.get("c", now.secs() + 100).is_some());
    }

    #[test]
    fn recall_checks_issuer_and_times() {
        let now = Timestamp::from_secs(1_800_000_000);
        let cache = VerifiedTokens::default();
        cache.put("t", Arc::from("k"), Arc::new(claims(now, None)), now.secs());
        assert!(cache.recall("t", ISS, now).is_some());
        assert!(cache.recall("t", "https://other.example", now).is_none());
        assert!(
            cache
                .recall("t", ISS, now.add_secs(-LEEWAY_SECS - 1))
                .is_none()
        );
        assert!(
            cache
                .recall("t", ISS, now.add_secs(600 + LEEWAY_SECS + 1))
                .is_none()
        );
        assert!(cache.recall("u", ISS, now).is_none());
    }

    #[test]
    fn time_checks_have_leeway() {
        let now = Timestamp::from_secs(1_800_000_000);
        let ring = KeyRing::new(vec![SigningKey::generate(now).unwrap()]);
        let tok = ring.sign(&claims(now, None)).unwrap();
        let e = expect(TokenKind::Instance);
        assert!(
            ring.verify(&tok, e, now.add_secs(600 + LEEWAY_SECS), 900)
                .is_ok()
        );
        assert_eq!(
            ring.verify(&tok, e, now.add_secs(600 + LEEWAY_SECS + 1), 900),
            Err(TokenError::Expired)
        );
        assert_eq!(
            ring.verify(&tok, e, now.add_secs(-LEEWAY_SECS - 1), 900),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn flipped_bytes_and_oversize_fail() {
        let now = Timestamp::from_secs(1_800_000_000);
        let ring = KeyRing::new(vec![SigningKey::generate(now).unwrap()]);
        let tok = ring.sign(&claims(now, None)).unwrap();
        let e = expect(TokenKind::Any);
        let mut bytes = tok.clone().into_bytes();
        let mid = tok.find('.').unwrap() + 5;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(ring.verify(&flipped, e, now, 900).is_err());
        let big = format!("{tok}{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(ring.verify(&big, e, now, 900), Err(TokenError::TooLarge));
        assert_eq!(ring.verify("a.b", e, now, 900), Err(TokenError::Malformed));
    }

    /// Signs arbitrary header and claims JSON with the ring's key, through
    /// the JOSE crate directly (bypassing `KeyRing::sign`).
    fn raw_token(ring: &KeyRing, header: serde_json::Value, claims: serde_json::Value) -> String {
        let key = ring.active().unwrap();
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let msg = format!("{h}.{c}");
        let sig =
            jsonwebtoken::crypto::sign(msg.as_bytes(), &key.encoding, Algorithm::EdDSA).unwrap();
        format!("{msg}.{sig}")
    }

    #[test]
    fn header_and_claim_rules_are_enforced_on_validly_signed_tokens() {
        let now = Timestamp::from_secs(1_800_000_000);
        let ring = KeyRing::new(vec![SigningKey::generate(now).unwrap()]);
        let kid = ring.active().unwrap().kid().to_owned();
        let good = serde_json::to_value(claims(now, None)).unwrap();
        let hdr = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
        let e = expect(TokenKind::Any);
        let check = |h: serde_json::Value, c: serde_json::Value| {
            ring.verify(&raw_token(&ring, h, c), e, now, 900)
        };

        assert!(
            check(hdr.clone(), good.clone()).is_ok(),
            "the control case verifies"
        );

        let mut h = hdr.clone();
        h["crit"] = serde_json::json!(["exp"]);
        assert_eq!(
            check(h, good.clone()),
            Err(TokenError::ForbiddenHeader("crit")),
            "J9"
        );

        let mut h = hdr.clone();
        h["jwk"] = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            check(h, good.clone()),
            Err(TokenError::ForbiddenHeader("jwk")),
            "J6"
        );

        for typ in ["JWT", "dpop+jwt"] {
            let mut h = hdr.clone();
            h["typ"] = serde_json::json!(typ);
            assert_eq!(
                check(h, good.clone()),
                Err(TokenError::WrongType),
                "J12 {typ}"
            );
        }
        let mut h = hdr.clone();
        h.as_object_mut().unwrap().remove("typ");
        assert_eq!(
            check(h, good.clone()),
            Err(TokenError::WrongType),
            "J12 no typ"
        );

        let mut c = good.clone();
        c["exp"] = serde_json::json!(c["exp"].to_string());
        assert_eq!(
            check(hdr.clone(), c),
            Err(TokenError::Malformed),
            "J10 exp as string"
        );
        let mut c = good.clone();
        c["nbf"] = serde_json::json!("0");
        assert_eq!(
            check(hdr.clone(), c),
            Err(TokenError::Malformed),
            "J10 nbf as string"
        );

        for claim in ["exp", "aud", "iss", "jti"] {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(claim);
            assert_eq!(
                check(hdr.clone(), c),
                Err(TokenError::Malformed),
                "J11 no {claim}"
            );
        }

        let mut c = good.clone();
        c["aud"] = serde_json::json!("https://other-tool.example");
        assert_eq!(check(hdr.clone(), c), Err(TokenError::Audience), "J13");
        let mut c = good.clone();
        c["iss"] = serde_json::json!("https://evil.example");
        assert_eq!(check(hdr.clone(), c), Err(TokenError::Issuer));

        let mut h = hdr.clone();
        h["kid"] = serde_json::json!("x".repeat(64 * 1024));
        assert!(check(h, good.clone()).is_err(), "J8 64 KB kid");
        let mut h = hdr.clone();
        h["kid"] = serde_json::json!("' OR 1=1 --");
        assert_eq!(
            check(h, good.clone()),
            Err(TokenError::UnknownKey),
            "J8 SQL kid"
        );

        // J15: a duplicate claim is refused, not resolved either way.
        let key = ring.active().unwrap();
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&hdr).unwrap());
        let body = serde_json::to_string(&good).unwrap().replacen(
            '{',
            r#"{"iss":"https://evil.example","#,
            1,
        );
        let c = URL_SAFE_NO_PAD.encode(body.as_bytes());
        let msg = format!("{h}.{c}");
        let sig =
            jsonwebtoken::crypto::sign(msg.as_bytes(), &key.encoding, Algorithm::EdDSA).unwrap();
        assert_eq!(
            ring.verify(&format!("{msg}.{sig}"), e, now, 900),
            Err(TokenError::Malformed),
            "J15 duplicate key"
        );
    }

    #[test]
    fn rfc8037_thumbprint_known_answer() {
        // RFC 8037 Appendix A.3.
        assert_eq!(
            ed25519_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            /// Any change of one character of a token (to another character a
            /// token can contain) fails verification.
            #[test]
            fn any_one_character_change_fails(index in any::<prop::sample::Index>(), replacement in 0usize..65) {
                let now = Timestamp::from_secs(1_800_000_000);
                let ring = KeyRing::new(vec![SigningKey::generate(now).unwrap()]);
                let token = ring.sign(&claims(now, Some("task_1"))).unwrap();
                const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
                let mut bytes = token.clone().into_bytes();
                let i = index.index(bytes.len());
                let new = ALPHABET[replacement % ALPHABET.len()];
                prop_assume!(bytes[i] != new);
                bytes[i] = new;
                let tampered = String::from_utf8(bytes).unwrap();
                prop_assert!(ring.verify(&tampered, expect(TokenKind::Any), now, 900).is_err());
            }
        }
    }
}
