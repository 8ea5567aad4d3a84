//! Outside identity tokens (OIDC): their header rules, JWKS and claims.

use super::*;

/// What an outside identity token (OIDC) must satisfy.
#[derive(Clone, Debug)]
pub struct ExternalExpect<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub subject: &'a str,
    pub algorithms: &'a [Algorithm],
}

#[derive(Deserialize)]
struct ExternalClaims {
    iss: String,
    sub: String,
    aud: OneOrMany,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
}

/// The key id of an outside token, so the caller can refresh a JWKS that
/// lacks it. Checks the header rules first.
pub fn external_kid(token: &str) -> Result<Option<String>, TokenError> {
    Ok(checked_header(token)?.kid)
}

/// Verifies an outside JWT (an OIDC identity token) against its issuer's JWKS.
pub fn verify_external(
    token: &str,
    jwks: &JwkSet,
    expect: &ExternalExpect<'_>,
    now: Timestamp,
) -> Result<(), TokenError> {
    let claims = verify_external_claims(token, jwks, expect, now)?;
    if claims.get("sub").and_then(|v| v.as_str()) != Some(expect.subject) {
        return Err(TokenError::Subject);
    }
    Ok(())
}

/// Verifies an outside JWT as [`verify_external`] does, except for its
/// subject (left to the caller, `expect.subject` is not looked at), and
/// returns every claim it carries: for a person signing in, whose subject
/// is not known beforehand and whose other claims decide their role.
pub fn verify_external_claims(
    token: &str,
    jwks: &JwkSet,
    expect: &ExternalExpect<'_>,
    now: Timestamp,
) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let (header, renamed) = external_header(token)?;
    if !expect.algorithms.contains(&header.alg) {
        return Err(TokenError::Algorithm);
    }
    let jwk = match header.kid.as_deref() {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .ok_or(TokenError::UnknownKey)?;
    // The key's own algorithm, when it names one, must agree (RFC 8725 §3.1).
    if let Some(ka) = jwk.common.key_algorithm {
        let pinned = ka.to_string();
        if pinned != format!("{:?}", header.alg) {
            return Err(TokenError::Algorithm);
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey)?;
    let all: serde_json::Map<String, serde_json::Value> = if renamed {
        signature_as(token, &key, header.alg)?
    } else {
        signature_only(token, &key, &[header.alg])?
    };
    let claims: ExternalClaims = serde_json::from_value(serde_json::Value::Object(all.clone()))
        .map_err(|_| TokenError::Malformed)?;
    check_times(claims.exp, claims.nbf.unwrap_or(i64::MIN), claims.iat, now)?;
    if claims.iss != expect.issuer {
        return Err(TokenError::Issuer);
    }
    let aud_ok = match &claims.aud {
        OneOrMany::One(a) => a == expect.audience,
        OneOrMany::Many(v) => v.iter().any(|a| a == expect.audience),
    };
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    if claims.sub.is_empty() {
        return Err(TokenError::Subject);
    }
    Ok(all)
}
