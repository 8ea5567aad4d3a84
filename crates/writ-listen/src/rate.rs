//! Request rate limits for a listener: per credential, per client, and
//! tightest for requests without a credential.
//!
//! Every request takes one from its client's bucket (the client as
//! [`crate::Limits::client_of`] finds it; an IPv6 client is its /64, so one
//! host cannot become 2^64 clients). A request with an `Authorization`
//! header also takes one from its credential's bucket (the credential is
//! known by a keyed hash of the header, never kept); one without takes one
//! from its client's anonymous bucket, the tightest. A bucket holds a
//! minute's allowance and refills evenly over the minute (a token bucket,
//! as Envoy's local rate limit and nginx's `limit_req` with a burst). A
//! refused request gets 429 with `Retry-After` and is counted in
//! `writ_http_rate_limited_total`.
//!
//! Each map of buckets is bounded: a full bucket says nothing and is
//! dropped when room is needed; if every tracked key is still drawing on
//! its bucket, a new key goes untracked (allowed) rather than refused, so
//! that crowding the map locks nobody out.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hash};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

/// How many requests a minute a listener allows; `0` turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests a minute with one credential (`Authorization` header).
    pub credential_per_minute: u32,
    /// Requests a minute from one client address, with or without one.
    pub client_per_minute: u32,
    /// Requests a minute from one client address without a credential.
    pub anonymous_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            credential_per_minute: 1_200,
            client_per_minute: 6_000,
            anonymous_per_minute: 600,
        }
    }
}

/// The most keys tracked at once, per kind.
const MAX_KEYS: usize = 65_536;
/// A full map is swept for refilled buckets at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// One request, in thousandths (buckets count in those).
const COST: u64 = 1_000;

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Credential,
    Client,
    Anonymous,
}

impl Which {
    fn label(self) -> &'static str {
        match self {
            Which::Credential => "credential",
            Which::Client => "client",
            Which::Anonymous => "anonymous",
        }
    }
}

/// Counts a refusal in `writ_http_rate_limited_total{limit}`.
fn count(w: Which) {
    metrics::counter!(crate::telemetry::RATE_LIMITED, "limit" => w.label()).increment(1);
}

/// Registers the refusal counters at zero, so that each limit has its
/// series before the first refusal.
pub(crate) fn register_metrics() {
    for w in [Which::Credential, Which::Client, Which::Anonymous] {
        metrics::counter!(crate::telemetry::RATE_LIMITED, "limit" => w.label()).increment(0);
    }
}

/// A refusal: try again after this many seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub which: Which,
    pub retry_after_secs: u64,
}

impl Refused {
    /// 429 with `Retry-After` and an RFC 9457 problem body.
    pub fn response(self) -> Response {
        let body = format!(
            r#"{{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"too many requests ({} limit); retry after {} s"}}"#,
            self.which.label(),
            self.retry_after_secs
        );
        let mut res = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        res
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Thousandths of a request left.
    level: u64,
    at: Instant,
}

#[derive(Debug)]
struct Buckets<K> {
    per_minute: u64,
    max: usize,
    state: Mutex<(HashMap<K, Bucket>, Option<Instant>)>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    fn new(per_minute: u32, max: usize) -> Self {
        Self {
            per_minute: u64::from(per_minute),
            max,
            state: Mutex::new((HashMap::new(), None)),
        }
    }

    fn level(&self, b: &Bucket, now: Instant) -> u64 {
        let capacity = self.per_minute.saturating_mul(COST);
        let ms = u64::try_from(now.saturating_duration_since(b.at).as_millis()).unwrap_or(u64::MAX);
        b.level
            .saturating_add(ms.saturating_mul(self.per_minute) / 60)
            .min(capacity)
    }

    /// Takes one request from `key`'s bucket, or says how many seconds to
    /// wait.
    fn take(&self, key: K, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = self.per_minute.saturating_mul(COST);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, last_sweep) = &mut *state;
        if !map.contains_key(&key) && map.len() >= self.max {
            if last_sweep.is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY) {
                *last_sweep = Some(now);
                map.retain(|_, b| self.level(b, now) < capacity);
            }
            if map.len() >= self.max {
                return Ok(());
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            level: capacity,
            at: now,
        });
        b.level = self.level(b, now);
        b.at = now;
        if b.level >= COST {
            b.level -= COST;
            return Ok(());
        }
        // Refill: per_minute thousandths a millisecond, over 60.
        let missing_ms = (COST - b.level)
            .saturating_mul(60)
            .div_ceil(self.per_minute);
        Err(missing_ms.div_ceil(1_000).max(1))
    }
}

/// A listener's limiter.
#[derive(Debug)]
pub(crate) struct Limiter {
    credential: Buckets<u64>,
    client: Buckets<IpAddr>,
    anonymous: Buckets<IpAddr>,
    keys: std::collections::hash_map::RandomState,
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self::with_capacity(limits, MAX_KEYS)
    }

    fn with_capacity(limits: RateLimits, max: usize) -> Self {
        Self {
            credential: Buckets::new(limits.credential_per_minute, max),
            client: Buckets::new(limits.client_per_minute, max),
            anonymous: Buckets::new(limits.anonymous_per_minute, max),
            keys: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Takes one request from `client` (with `headers`) at `now`.
    pub(crate) fn check(
        &self,
        client: IpAddr,
        headers: &HeaderMap,
        certificate: Option<&[u8]>,
        now: Instant,
    ) -> Result<(), Refused> {
        let client = client_key(client);
        let refuse = |which: Which, retry_after_secs: u64| {
            count(which);
            Refused {
                which,
                retry_after_secs,
            }
        };
        // A credential: the `Authorization` header, else a verified client
        // certificate (which authenticates a gateway).
        match headers
            .get(header::AUTHORIZATION)
            .map(|h| h.as_bytes())
            .or(certificate)
        {
            Some(cred) => {
                let key = self.keys.hash_one(cred);
                self.credential
                    .take(key, now)
                    .map_err(|s| refuse(Which::Credential, s))?;
            }
            None => self
                .anonymous
                .take(client, now)
                .map_err(|s| refuse(Which::Anonymous, s))?,
        }
        self.client
            .take(client, now)
            .map_err(|s| refuse(Which::Client, s))
    }
}

/// The key of a client address: itself, or its /64 for IPv6.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn a_client_certificate_counts_as_a_credential() {
        let l = Limiter::new(RateLimits {
            credential_per_minute: 3,
            client_per_minute: 100,
            anonymous_per_minute: 1,
        });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t = Instant::now();
        // Past the anonymous limit, with the credential's own.
        for _ in 0..3 {
            assert!(l.check(ip, &HeaderMap::new(), Some(b"cert-a"), t).is_ok());
        }
        let r = l
            .check(ip, &HeaderMap::new(), Some(b"cert-a"), t)
            .unwrap_err();
        assert_eq!(r.which, Which::Credential);
        // Another certificate is another credential.
        assert!(l.check(ip, &HeaderMap::new(), Some(b"cert-b"), t).is_ok());
    }

    #[test]
    fn requests_without_a_credential_have_the_tightest_limit() {
        let l = Limiter::new(RateLimits {
            credential_per_minute: 10,
            client_per_minute: 100,
            anonymous_per_minute: 2,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        assert!(l.check(ip, &HeaderMap::new(), None, t).is_ok());
        assert!(l.check(ip, &HeaderMap::new(), None, t).is_ok());
        let r = l.check(ip, &HeaderMap::new(), None, t).unwrap_err();
        assert_eq!(r.which, Which::Anonymous);
        assert_eq!(r.retry_after_secs, 30);
        // The same client with a credential still gets through.
        assert!(l.check(ip, &auth("Bearer a"), None, t).is_ok());
        // Refilled after the wait it was told.
        assert!(
            l.check(ip, &HeaderMap::new(), None, t + Duration::from_secs(30))
                .is_ok()
        );
    }

    #[test]
    fn a_credential_is_limited_wherever_it_comes_from() {
        let l = Limiter::new(RateLimits {
            credential_per_minute: 3,
            client_per_minute: 100,
            anonymous_per_minute: 100,
        });
        let t = Instant::now();
        for i in 0..3u8 {
            let ip = IpAddr::from([198, 51, 100, i]);
            assert!(l.check(ip, &auth("DPoP tok"), None, t).is_ok());
        }
        let r = l
            .check("198.51.100.9".parse().unwrap(), &auth("DPoP tok"), None, t)
            .unwrap_err();
        assert_eq!(r.which, Which::Credential);
        assert!(
            l.check(
                "198.51.100.9".parse().unwrap(),
                &auth("DPoP other"),
                None,
                t
            )
            .is_ok()
        );
        let res = r.response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "20");
        let text = crate::telemetry::render();
        assert!(
            text.contains("writ_http_rate_limited_total{limit=\"credential\"}"),
            "{text}"
        );
    }

    #[test]
    fn one_client_is_limited_across_credentials_and_an_ipv6_host_is_its_64() {
        let l = Limiter::new(RateLimits {
            credential_per_minute: 100,
            client_per_minute: 2,
            anonymous_per_minute: 100,
        });
        let t = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(l.check(a, &auth("Bearer 1"), None, t).is_ok());
        assert!(l.check(b, &auth("Bearer 2"), None, t).is_ok());
        assert_eq!(
            l.check(a, &auth("Bearer 3"), None, t).unwrap_err().which,
            Which::Client
        );
        assert!(
            l.check(
                "2001:db8:1:3::1".parse().unwrap(),
                &auth("Bearer 4"),
                None,
                t
            )
            .is_ok()
        );
    }

    #[test]
    fn a_full_map_lets_new_keys_through_rather_than_lock_them_out() {
        let l = Limiter::with_capacity(
            RateLimits {
                credential_per_minute: 1,
                client_per_minute: 0,
                anonymous_per_minute: 1,
            },
            2,
        );
        let t = Instant::now();
        let ip = |i: u8| IpAddr::from([203, 0, 113, i]);
        assert!(l.check(ip(1), &HeaderMap::new(), None, t).is_ok());
        assert!(l.check(ip(2), &HeaderMap::new(), None, t).is_ok());
        // Both tracked clients are drawing on their buckets: a third goes
        // untracked.
        assert!(l.check(ip(3), &HeaderMap::new(), None, t).is_ok());
        assert!(l.check(ip(1), &HeaderMap::new(), None, t).is_err());
        // Once theirs refill, room is made.
        let later = t + Duration::from_secs(61);
        assert!(l.check(ip(3), &HeaderMap::new(), None, later).is_ok());
        assert!(l.check(ip(3), &HeaderMap::new(), None, later).is_err());
    }
}
