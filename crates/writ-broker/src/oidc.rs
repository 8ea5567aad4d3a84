//! OIDC attestation: verifying an outside identity token against its
//! issuer's JWKS, fetched with a time limit and cached with `kid` rotation.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;
use writ_core::Timestamp;
use writ_core::token::{self, ExternalExpect, TokenError};

/// A fetched JWKS is reused this long.
const CACHE_TTL_SECS: i64 = 300;
/// An unknown `kid` triggers a refetch at most this often per issuer.
const REFETCH_MIN_SECS: i64 = 10;
/// A JWKS larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Default accepted algorithms for outside tokens: EdDSA only, unless the
/// agent's registration asks for more.
pub const DEFAULT_ALGS: &[Algorithm] = &[Algorithm::EdDSA];

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("cannot fetch the issuer's JWKS: {0}")]
    Fetch(String),
    #[error("issuer's JWKS is invalid: {0}")]
    BadJwks(String),
}

#[derive(Debug)]
struct Cached {
    set: JwkSet,
    fetched_at: Timestamp,
}

/// Where an agent's issuer keys come from.
pub enum KeySource<'a> {
    Inline(&'a serde_json::Value),
    Uri(&'a str),
}

#[derive(Debug)]
pub struct OidcVerifier {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

impl OidcVerifier {
    pub fn new(timeout: Duration) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| OidcError::Fetch(e.to_string()))?;
        Ok(Self {
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub async fn verify(
        &self,
        token: &str,
        source: KeySource<'_>,
        expect: &ExternalExpect<'_>,
        now: Timestamp,
    ) -> Result<(), OidcError> {
        // Header rules first: a token with `jku`/`x5u` is refused before any fetch.
        let kid = token::external_kid(token)?;
        let set = match source {
            KeySource::Inline(v) => parse_jwks(v.clone())?,
            KeySource::Uri(uri) => self.jwks_for(uri, kid.as_deref(), now).await?,
        };
        token::verify_external(token, &set, expect, now)?;
        Ok(())
    }

    async fn jwks_for(
        &self,
        uri: &str,
        kid: Option<&str>,
        now: Timestamp,
    ) -> Result<JwkSet, OidcError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(uri) {
            let fresh = now < c.fetched_at.add_secs(CACHE_TTL_SECS);
            let has_kid = kid.is_none_or(|k| c.set.find(k).is_some());
            let may_refetch = now >= c.fetched_at.add_secs(REFETCH_MIN_SECS);
            if fresh && (has_kid || !may_refetch) {
                return Ok(c.set.clone());
            }
        }
        let set = self.fetch(uri).await?;
        cache.insert(
            uri.to_owned(),
            Cached {
                set: set.clone(),
                fetched_at: now,
            },
        );
        Ok(set)
    }

    async fn fetch(&self, uri: &str) -> Result<JwkSet, OidcError> {
        let resp = self
            .http
            .get(uri)
            .send()
            .await
            .map_err(|e| OidcError::Fetch(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(OidcError::Fetch(format!("status {}", resp.status())));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(OidcError::BadJwks("too large".into()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| OidcError::Fetch(e.without_url().to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(OidcError::BadJwks("too large".into()));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| OidcError::BadJwks(e.to_string()))?;
        parse_jwks(v)
    }
}

pub fn parse_jwks(v: serde_json::Value) -> Result<JwkSet, OidcError> {
    serde_json::from_value(v).map_err(|e| OidcError::BadJwks(e.to_string()))
}

/// Parses an agent's `algorithms` list; empty means [`DEFAULT_ALGS`].
pub fn algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Ok(DEFAULT_ALGS.to_vec());
    }
    names
        .iter()
        .map(|n| match n.as_str() {
            "EdDSA" => Ok(Algorithm::EdDSA),
            "ES256" => Ok(Algorithm::ES256),
            "ES384" => Ok(Algorithm::ES384),
            "RS256" => Ok(Algorithm::RS256),
            "PS256" => Ok(Algorithm::PS256),
            other => Err(format!(
                "algorithm {other:?} is not accepted (choose from EdDSA, ES256, ES384, RS256, PS256)"
            )),
        })
        .collect()
}
