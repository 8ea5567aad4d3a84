//! `private_key_jwt` client assertions (RFC 7523 §3).

use super::*;

/// The claims of a client assertion (RFC 7523 §3) that writ reads.
#[derive(Clone, Debug, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    aud: OneOrMany,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub iat: Option<i64>,
    pub jti: String,
}

/// Longest lifetime a client assertion may have left: it is remembered
/// (against replay) until it expires.
pub const MAX_ASSERTION_SECS: i64 = 3600;

/// Why a client assertion is refused, beyond the token rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the assertion's iss and sub must both be the client id")]
    NotTheClient,
    #[error("the assertion has no jti")]
    NoJti,
    #[error("the assertion lives longer than {MAX_ASSERTION_SECS} s")]
    TooLong,
}

/// Verifies a `private_key_jwt` client assertion (RFC 7523 §3) against the
/// client's registered JWKS: header rules, an algorithm of `algorithms`
/// (`Ed25519` read as `EdDSA`), the key's own `alg` when it names one, the
/// signature, `iss` = `sub` = `client_id`, an `aud` among `audiences`,
/// `exp` (at most [`MAX_ASSERTION_SECS`] ahead), `nbf`/`iat` and a `jti`.
/// The caller refuses a `jti` seen before.
pub fn verify_client_assertion(
    token: &str,
    jwks: &JwkSet,
    client_id: &str,
    audiences: &[&str],
    algorithms: &[Algorithm],
    now: Timestamp,
) -> Result<AssertionClaims, AssertionError> {
    let (header, renamed) = external_header(token)?;
    if !algorithms.contains(&header.alg) {
        return Err(TokenError::Algorithm.into());
    }
    let jwk = match header.kid.as_deref() {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .ok_or(TokenError::UnknownKey)?;
    if let Some(ka) = jwk.common.key_algorithm
        && ka.to_string() != format!("{:?}", header.alg)
    {
        return Err(TokenError::Algorithm.into());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey)?;
    let claims: AssertionClaims = if renamed {
        signature_as(token, &key, header.alg)?
    } else {
        signature_only(token, &key, &[header.alg])?
    };
    if claims.iss != client_id || claims.sub != client_id {
        return Err(AssertionError::NotTheClient);
    }
    let aud_ok = match &claims.aud {
        OneOrMany::One(a) => audiences.contains(&a.as_str()),
        OneOrMany::Many(v) => v.iter().any(|a| audiences.contains(&a.as_str())),
    };
    if !aud_ok {
        return Err(TokenError::Audience.into());
    }
    check_times(claims.exp, claims.nbf.unwrap_or(i64::MIN), claims.iat, now)?;
    if claims.exp > now.secs().saturating_add(MAX_ASSERTION_SECS + LEEWAY_SECS) {
        return Err(AssertionError::TooLong);
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(AssertionError::NoJti);
    }
    Ok(claims)
}
