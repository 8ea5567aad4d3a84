//! OIDC attestation: verifying an outside identity token against its
//! issuer's JWKS, fetched with a time limit and cached with `kid` rotation.
//!
//! Every issuer (every `jwks_uri`) has a cache entry of its own, and no lock
//! is ever held while a key set is fetched: one slow or dead issuer never
//! slows another. Within one issuer, fetches are single-flight (callers that
//! need keys wait for the one fetch in flight instead of starting their
//! own), a failed fetch is remembered and retried only after a backoff that
//! doubles, and a key set that is past its freshness is still used while
//! its refresh runs or fails, up to [`MAX_STALE_SECS`]. This is how Envoy's
//! `jwt_authn` filter treats remote JWKS (a cached set, refreshed in the
//! background, kept on fetch failure) and how SPIRE's OIDC discovery
//! provider keeps its keys; writ adds the doubling backoff so that a dead
//! issuer costs one fetch per backoff period, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::watch;
use writ_core::token::{self, ExternalExpect, TokenError};
use writ_core::{Clock, Timestamp};

/// A fetched JWKS is fresh this long.
const CACHE_TTL_SECS: i64 = 300;
/// Past its freshness, a key set is still used (while it is refreshed, or
/// while its issuer cannot be reached) until it is this old.
const MAX_STALE_SECS: i64 = 3_600;
/// An unknown `kid` triggers a refetch at most this often per issuer.
const REFETCH_MIN_SECS: i64 = 10;
/// After a failed fetch, the next waits this long, doubling with every
/// further failure up to [`BACKOFF_MAX_SECS`].
const BACKOFF_FIRST_SECS: i64 = 2;
const BACKOFF_MAX_SECS: i64 = 60;
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
    /// The last fetch failed and the next is not due yet.
    #[error("{error} (next attempt in {retry_in} s)")]
    BackingOff { error: String, retry_in: i64 },
}

/// Where an agent's issuer keys come from.
pub enum KeySource<'a> {
    Inline(&'a serde_json::Value),
    Uri(&'a str),
}

/// What is known of one issuer's keys.
#[derive(Debug, Default)]
struct Entry {
    /// The last key set fetched, and when.
    keys: Option<(Arc<JwkSet>, Timestamp)>,
    /// The last fetch failed: why, how many times in a row, and when the
    /// next may start.
    failure: Option<Failure>,
    /// A fetch in flight. Its sender is dropped when the fetch has been
    /// recorded, which wakes every caller waiting on a receiver.
    inflight: Option<watch::Receiver<()>>,
}

#[derive(Debug, Clone)]
struct Failure {
    error: String,
    failures: u32,
    retry_at: Timestamp,
}

/// What a caller does after looking at an issuer's entry.
enum Next {
    Use(Arc<JwkSet>),
    Wait(watch::Receiver<()>),
    Fail(OidcError),
}

#[derive(Debug)]
struct Shared {
    http: reqwest::Client,
    /// The same, following no redirect (the token request: a 307 would
    /// send the code and its verifier on to wherever it points).
    http_no_redirects: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// Held only to look at or update an entry, never across a fetch.
    issuers: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
pub struct OidcVerifier {
    shared: Arc<Shared>,
    timeout: Duration,
    /// The public half of a key whose private half was thrown away: what a
    /// token is verified against when its agent is unknown, so that an
    /// unknown agent costs what a known one does.
    decoy: serde_json::Value,
}

impl OidcVerifier {
    pub fn new(timeout: Duration, clock: Arc<dyn Clock>) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| OidcError::Fetch(e.to_string()))?;
        let http_no_redirects = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Fetch(e.to_string()))?;
        Ok(Self {
            shared: Arc::new(Shared {
                http,
                http_no_redirects,
                clock,
                issuers: Mutex::new(HashMap::new()),
            }),
            timeout,
            decoy: decoy_key()?,
        })
    }

    /// The HTTP client of requests that carry a secret to the identity
    /// provider (the token request): a time limit, no redirect followed.
    pub fn http_no_redirects(&self) -> &reqwest::Client {
        &self.shared.http_no_redirects
    }

    /// The HTTP client of the fetches (a time limit, few redirects): for
    /// the other requests writ makes to an identity provider.
    pub fn http(&self) -> &reqwest::Client {
        &self.shared.http
    }

    /// Verifies `token` as an agent with the default algorithms would, but
    /// against the decoy key (under the token's own `kid`), and forgets the
    /// result: always a failure, at the price of a real one. For an
    /// attestation naming an agent that does not exist, or that attests
    /// another way (as a login form hashes the password of a user who
    /// does not exist).
    pub fn verify_decoy(&self, token: &str, now: Timestamp) {
        let mut key = self.decoy.clone();
        if let (Ok(Some(kid)), Some(fields)) = (token::external_kid(token), key.as_object_mut()) {
            fields.insert("kid".into(), serde_json::Value::String(kid));
        }
        let Ok(set) = parse_jwks(serde_json::json!({ "keys": [key] })) else {
            return;
        };
        let expect = ExternalExpect {
            issuer: "",
            audience: "",
            subject: "",
            algorithms: DEFAULT_ALGS,
        };
        let _ = token::verify_external(token, &set, &expect, now);
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
        match source {
            KeySource::Inline(v) => {
                token::verify_external(token, &parse_jwks(v.clone())?, expect, now)?;
            }
            KeySource::Uri(uri) => {
                let set = self.jwks_for(uri, kid.as_deref()).await?;
                token::verify_external(token, &set, expect, now)?;
            }
        }
        Ok(())
    }

    /// Verifies a person's identity token from `jwks_uri` (any subject)
    /// and returns its claims: for operator sign-in, where the claims
    /// decide the name and the role.
    pub async fn verify_identity(
        &self,
        token: &str,
        jwks_uri: &str,
        expect: &ExternalExpect<'_>,
        now: Timestamp,
    ) -> Result<serde_json::Map<String, serde_json::Value>, OidcError> {
        let kid = token::external_kid(token)?;
        let set = self.jwks_for(jwks_uri, kid.as_deref()).await?;
        Ok(token::verify_external_claims(token, &set, expect, now)?)
    }

    /// The issuer's key set to verify a token naming `kid` with: from the
    /// cache, or after waiting (at most the fetch time limit) for the one
    /// fetch in flight.
    async fn jwks_for(&self, uri: &str, kid: Option<&str>) -> Result<Arc<JwkSet>, OidcError> {
        let mut waited = false;
        loop {
            match self.next(uri, kid, waited) {
                Next::Use(set) => return Ok(set),
                Next::Fail(e) => return Err(e),
                Next::Wait(mut rx) => {
                    // Ends when the fetch has been recorded (its sender is
                    // dropped); the client's own time limit bounds it, the
                    // margin here only guards against a fetch that never ends.
                    let limit = self.timeout.saturating_add(Duration::from_secs(1));
                    let _ = tokio::time::timeout(limit, rx.changed()).await;
                    waited = true;
                }
            }
        }
    }

    /// Looks at the issuer's entry, starting a fetch if one is due.
    fn next(&self, uri: &str, kid: Option<&str>, waited: bool) -> Next {
        let now = self.shared.clock.now();
        let mut issuers = self
            .shared
            .issuers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = issuers.entry(uri.to_owned()).or_default();
        let usable = entry
            .keys
            .as_ref()
            .filter(|(_, at)| now < at.add_secs(MAX_STALE_SECS))
            .map(|(set, at)| (Arc::clone(set), *at));
        let has_kid = |set: &JwkSet| kid.is_none_or(|k| set.find(k).is_some());
        if let Some((set, at)) = &usable
            && now < at.add_secs(CACHE_TTL_SECS)
            && has_kid(set)
        {
            return Next::Use(Arc::clone(set));
        }
        // Due: none in flight, not backing off after a failure, and either
        // no usable set, a set past its freshness, or an unknown `kid` (at
        // most every REFETCH_MIN_SECS: a token naming a made-up `kid` must
        // not make writ fetch on every request).
        let backing_off = entry.failure.as_ref().is_some_and(|f| now < f.retry_at);
        let due = match &usable {
            None => true,
            Some((set, at)) if has_kid(set) => now >= at.add_secs(CACHE_TTL_SECS),
            Some((_, at)) => now >= at.add_secs(REFETCH_MIN_SECS),
        };
        if entry.inflight.is_none() && !backing_off && due && !waited {
            entry.inflight = Some(self.start_fetch(uri));
        }
        match (usable, &entry.inflight) {
            // A usable set with the key: used at once, even while a refresh
            // runs or the issuer cannot be reached.
            (Some((set, _)), _) if has_kid(&set) => Next::Use(set),
            (_, Some(rx)) if !waited => Next::Wait(rx.clone()),
            // The set without the key: verification says the key is unknown.
            (Some((set, _)), _) => Next::Use(set),
            (None, Some(_)) => {
                Next::Fail(OidcError::Fetch("the fetch did not finish in time".into()))
            }
            (None, None) => Next::Fail(match &entry.failure {
                Some(f) => OidcError::BackingOff {
                    error: f.error.clone(),
                    retry_in: now.secs_until(f.retry_at).max(1),
                },
                None => OidcError::Fetch("no key set".into()),
            }),
        }
    }

    /// Fetches in a task of its own, so that the result is recorded even if
    /// the request that asked for it has gone; returns the receiver that
    /// wakes when it is.
    fn start_fetch(&self, uri: &str) -> watch::Receiver<()> {
        let (tx, rx) = watch::channel(());
        let shared = Arc::clone(&self.shared);
        let uri = uri.to_owned();
        tokio::spawn(async move {
            let result = fetch(&shared.http, &uri).await;
            let now = shared.clock.now();
            {
                let mut issuers = shared
                    .issuers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let entry = issuers.entry(uri.clone()).or_default();
                match result {
                    Ok(set) => {
                        entry.keys = Some((Arc::new(set), now));
                        entry.failure = None;
                    }
                    Err(e) => {
                        let failures = entry
                            .failure
                            .as_ref()
                            .map_or(1, |f| f.failures.saturating_add(1));
                        tracing::warn!(jwks_uri = %uri, error = %e, failures, "OIDC issuer keys not refreshed");
                        entry.failure = Some(Failure {
                            error: e.to_string(),
                            failures,
                            retry_at: now.add_secs(backoff_secs(failures)),
                        });
                    }
                }
                entry.inflight = None;
            }
            drop(tx);
        });
        rx
    }
}

/// An Ed25519 public key nobody holds the private key of, as a JWK.
fn decoy_key() -> Result<serde_json::Value, OidcError> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use base64::Engine as _;
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|_| OidcError::BadJwks("cannot make the decoy key".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map_err(|_| OidcError::BadJwks("cannot make the decoy key".into()))?;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Ok(serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": x }))
}

/// The wait before the next fetch after `failures` failures in a row.
fn backoff_secs(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST_SECS
        .saturating_mul(1_i64 << doublings)
        .min(BACKOFF_MAX_SECS)
}

async fn fetch(http: &reqwest::Client, uri: &str) -> Result<JwkSet, OidcError> {
    let resp = http
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
    use std::time::Instant;

    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use writ_core::ManualClock;

    use super::*;

    /// The token request carries a code, its PKCE verifier and maybe a
    /// client secret: a redirect from the token endpoint is answered as
    /// it is, never followed (a 307 would resend the form elsewhere).
    #[tokio::test]
    async fn the_token_request_follows_no_redirect() {
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere_addr = elsewhere.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = elsewhere.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
            }
        });
        let endpoint = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint_addr = endpoint.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = endpoint.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere_addr}/steal\r\ncontent-length: 0\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        let v = OidcVerifier::new(Duration::from_secs(5), Arc::new(ManualClock::new(T0))).unwrap();
        let resp = v
            .http_no_redirects()
            .post(format!("http://{endpoint_addr}/token"))
            .form(&[("code", "c"), ("code_verifier", "v")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 307);
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the form went nowhere else");
    }

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);
    const ISS: &str = "https://idp.example";
    const SERVE: u8 = 0;
    const HANG: u8 = 1;
    const FAIL: u8 = 2;

    /// An issuer: an Ed25519 key under `kid`, and tokens it signs.
    struct Issuer {
        pkcs8: Vec<u8>,
        jwk: serde_json::Value,
        kid: String,
    }

    impl Issuer {
        fn new(kid: &str) -> Self {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                .unwrap()
                .as_ref()
                .to_vec();
            let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
            let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())});
            Self {
                pkcs8,
                jwk,
                kid: kid.into(),
            }
        }

        fn token(&self) -> String {
            let mut h = jsonwebtoken::Header::new(Algorithm::EdDSA);
            h.kid = Some(self.kid.clone());
            let claims = serde_json::json!({"iss": ISS, "aud": "writ", "sub": "w",
                "iat": T0.secs(), "exp": T0.secs() + 86_400});
            jsonwebtoken::encode(
                &h,
                &claims,
                &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8),
            )
            .unwrap()
        }
    }

    /// An issuer's JWKS endpoint on loopback that serves its keys, hangs or
    /// answers 500, as told, and counts the requests it gets.
    struct Endpoint {
        url: String,
        mode: Arc<AtomicU8>,
        hits: Arc<AtomicUsize>,
        keys: Arc<Mutex<Vec<serde_json::Value>>>,
    }

    impl Endpoint {
        async fn start(keys: Vec<serde_json::Value>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            let mode = Arc::new(AtomicU8::new(SERVE));
            let hits = Arc::new(AtomicUsize::new(0));
            let keys = Arc::new(Mutex::new(keys));
            let (m, h, k) = (Arc::clone(&mode), Arc::clone(&hits), Arc::clone(&keys));
            tokio::spawn(async move {
                while let Ok((mut sock, _)) = listener.accept().await {
                    let (m, h, k) = (Arc::clone(&m), Arc::clone(&h), Arc::clone(&k));
                    tokio::spawn(async move {
                        let mut got = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                        let resp = match m.load(Ordering::SeqCst) {
                            HANG => {
                                tokio::time::sleep(Duration::from_secs(3_600)).await;
                                return;
                            }
                            FAIL => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                            _ => {
                                let body = serde_json::json!({"keys": *k.lock().unwrap()}).to_string();
                                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                            }
                        };
                        let _ = sock.write_all(resp.as_bytes()).await;
                    });
                }
            });
            Self {
                url,
                mode,
                hits,
                keys,
            }
        }

        fn set(&self, mode: u8) {
            self.mode.store(mode, Ordering::SeqCst);
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    fn verifier(clock: &ManualClock, timeout: Duration) -> Arc<OidcVerifier> {
        Arc::new(OidcVerifier::new(timeout, Arc::new(clock.clone())).unwrap())
    }

    async fn verify(v: &OidcVerifier, uri: &str, token: &str) -> Result<(), OidcError> {
        let algs = [Algorithm::EdDSA];
        let expect = ExternalExpect {
            issuer: ISS,
            audience: "writ",
            subject: "w",
            algorithms: &algs,
        };
        v.verify(token, KeySource::Uri(uri), &expect, T0).await
    }

    /// H3: four attestations naming an issuer that never answers hold one
    /// fetch between them, and meanwhile another issuer's attestation goes
    /// through at once. Once that fetch has failed, the failure is
    /// remembered: the next attempt fails at once, without a fetch.
    #[tokio::test]
    async fn h3_a_slow_issuer_never_slows_another() {
        let clock = ManualClock::new(T0);
        let v = verifier(&clock, Duration::from_secs(2));
        let slow_issuer = Issuer::new("slow");
        let slow = Endpoint::start(vec![slow_issuer.jwk.clone()]).await;
        slow.set(HANG);
        let fast_issuer = Issuer::new("fast");
        let fast = Endpoint::start(vec![fast_issuer.jwk.clone()]).await;

        let started = Instant::now();
        let waiting: Vec<_> = (0..4)
            .map(|_| {
                let (v, url, tok) = (Arc::clone(&v), slow.url.clone(), slow_issuer.token());
                tokio::spawn(async move { verify(&v, &url, &tok).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        verify(&v, &fast.url, &fast_issuer.token()).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(1_000),
            "another issuer waited {:?}",
            t.elapsed()
        );

        for w in waiting {
            let e = w.await.unwrap().unwrap_err();
            assert!(
                e.to_string().starts_with("cannot fetch the issuer's JWKS"),
                "{e}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the four waited one after another: {:?}",
            started.elapsed()
        );
        assert_eq!(slow.hits(), 1, "one fetch for the four");

        // Remembered: refused at once, with no new fetch, until the backoff ends.
        let t = Instant::now();
        let e = verify(&v, &slow.url, &slow_issuer.token())
            .await
            .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        assert!(matches!(e, OidcError::BackingOff { .. }), "{e}");
        assert!(e.to_string().contains("next attempt in"), "{e}");
        assert_eq!(slow.hits(), 1);
    }

    /// H3: failures back off, doubling; a success clears the count.
    #[tokio::test]
    async fn h3_failed_fetches_back_off() {
        let clock = ManualClock::new(T0);
        let v = verifier(&clock, Duration::from_secs(2));
        let issuer = Issuer::new("k1");
        let ep = Endpoint::start(vec![issuer.jwk.clone()]).await;
        ep.set(FAIL);
        let e = verify(&v, &ep.url, &issuer.token()).await.unwrap_err();
        assert!(e.to_string().contains("status 500"), "{e}");
        assert_eq!(ep.hits(), 1);
        assert!(matches!(
            verify(&v, &ep.url, &issuer.token()).await,
            Err(OidcError::BackingOff { retry_in: 2, .. })
        ));
        assert_eq!(ep.hits(), 1);
        clock.advance(Duration::from_secs(BACKOFF_FIRST_SECS as u64));
        assert!(verify(&v, &ep.url, &issuer.token()).await.is_err());
        assert_eq!(ep.hits(), 2);
        assert!(matches!(
            verify(&v, &ep.url, &issuer.token()).await,
            Err(OidcError::BackingOff { retry_in: 4, .. })
        ));
        clock.advance(Duration::from_secs(4));
        ep.set(SERVE);
        verify(&v, &ep.url, &issuer.token()).await.unwrap();
        assert_eq!(ep.hits(), 3);
        assert_eq!(backoff_secs(1), 2);
        assert_eq!(backoff_secs(100), BACKOFF_MAX_SECS);
    }

    /// H3: a cached key set past its freshness is used at once while its
    /// refresh runs (and while the issuer cannot be reached), up to
    /// MAX_STALE_SECS; a rotated key is fetched for once, by the first token
    /// that names it.
    #[tokio::test]
    async fn h3_cached_keys_stay_usable_while_a_refresh_runs() {
        let clock = ManualClock::new(T0);
        let v = verifier(&clock, Duration::from_secs(2));
        let issuer = Issuer::new("k1");
        let ep = Endpoint::start(vec![issuer.jwk.clone()]).await;
        verify(&v, &ep.url, &issuer.token()).await.unwrap();
        verify(&v, &ep.url, &issuer.token()).await.unwrap();
        assert_eq!(ep.hits(), 1, "cached");

        clock.advance(Duration::from_secs(CACHE_TTL_SECS as u64 + 1));
        ep.set(HANG);
        let t = Instant::now();
        verify(&v, &ep.url, &issuer.token()).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(ep.hits(), 1, "the refresh runs in the background");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ep.hits(), 2, "a refresh was started");
        // While it hangs, and after it failed, the cached set still serves.
        verify(&v, &ep.url, &issuer.token()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        verify(&v, &ep.url, &issuer.token()).await.unwrap();
        assert_eq!(ep.hits(), 2, "backing off");

        // Too old to trust: refused.
        clock.advance(Duration::from_secs(MAX_STALE_SECS as u64));
        assert!(verify(&v, &ep.url, &issuer.token()).await.is_err());

        // Rotation: the first token naming a new key fetches it once.
        ep.set(SERVE);
        clock.advance(Duration::from_secs(BACKOFF_MAX_SECS as u64));
        verify(&v, &ep.url, &issuer.token()).await.unwrap();
        let rotated = Issuer::new("k2");
        ep.keys.lock().unwrap().push(rotated.jwk.clone());
        let hits = ep.hits();
        assert!(
            verify(&v, &ep.url, &rotated.token()).await.is_err(),
            "an unknown kid refetches at most every REFETCH_MIN_SECS"
        );
        clock.advance(Duration::from_secs(REFETCH_MIN_SECS as u64));
        verify(&v, &ep.url, &rotated.token()).await.unwrap();
        verify(&v, &ep.url, &issuer.token()).await.unwrap();
        assert_eq!(ep.hits(), hits + 1);
    }
}
