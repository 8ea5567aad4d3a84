//! The signed head of an audit archive segment.

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};

use super::{KeyRing, SigningAlg, TokenError, checked_header, published_key, signature_only};

/// The `typ` of an audit archive segment's signed head.
pub const SEGMENT_TYP: &str = "writ-audit-segment+jwt";

/// A signed statement that an archive segment holds the audit records
/// `first..=last`, chained from `first_prev_hash` to `last_hash`, and that
/// it follows the segment whose head hashes to `prev_segment` (empty for
/// the first segment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentHead {
    pub iss: String,
    pub first: u64,
    pub last: u64,
    pub first_prev_hash: String,
    pub last_hash: String,
    pub prev_segment: String,
    pub iat: i64,
}

impl KeyRing {
    /// Signs an archive segment's head with the active key (the key the
    /// audit checkpoints are signed with).
    pub fn sign_segment(&self, h: &SegmentHead) -> Result<String, TokenError> {
        let key = self.active().ok_or(TokenError::Key)?;
        key.compact(&key.header(SEGMENT_TYP), h)
    }
}

/// Verifies a segment head against the issuer's JWKS (every key that ever
/// signed, retired ones included): a head signed by a key not in it, or
/// for another issuer, is refused.
pub fn verify_segment_head(
    token: &str,
    jwks: &JwkSet,
    issuer: Option<&str>,
) -> Result<SegmentHead, TokenError> {
    let header = checked_header(token)?;
    let alg = SigningAlg::of(header.alg).ok_or(TokenError::Algorithm)?;
    if header.typ.as_deref() != Some(SEGMENT_TYP) {
        return Err(TokenError::WrongType);
    }
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    let key = published_key(jwks, &kid, alg)?;
    let h: SegmentHead = signature_only(token, &key, &[alg.jose()])?;
    if issuer.is_some_and(|i| i != h.iss) {
        return Err(TokenError::Issuer);
    }
    Ok(h)
}
