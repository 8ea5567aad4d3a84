//! A per-client rate limit for the endpoints anyone may call without a
//! credential (`/v1/attest`, `/v1/node/attest`): a token bucket per client
//! address, in a bounded map.
//!
//! A client is its peer address; an IPv6 client is its /64, the smallest
//! block one host is commonly given, so that one host cannot become 2^64
//! clients. The bucket holds a minute's allowance and refills evenly over
//! the minute, as Envoy's local rate limit and nginx's `limit_req` (with a
//! burst) do. The map is bounded: a full bucket carries no information and
//! is dropped when room is needed; if every tracked client is still
//! drawing on its bucket, a new client goes untracked (allowed) rather
//! than refused, so that crowding the map with many addresses locks
//! nobody out. An attacker with that many addresses is not slowed by any
//! per-client limit; what stops it is that an attestation without a valid
//! credential costs writ little and remembers nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use writ_core::Timestamp;

/// The most clients tracked at once.
const MAX_CLIENTS: usize = 65_536;
/// A full map is swept for idle buckets at most this often.
const SWEEP_EVERY_MS: i64 = 1_000;
/// One request, in thousandths of a request (buckets count in those).
const COST: i64 = 1_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a request left.
    level: i64,
    /// When `level` was last brought up to date.
    at: Timestamp,
}

#[derive(Debug, Default)]
struct Clients {
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Timestamp>,
}

/// Requests per minute per client; `0` turns the limit off.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: i64,
    clients: Mutex<Clients>,
    max_clients: usize,
}

/// A refusal: the client may try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_CLIENTS)
    }

    fn with_capacity(per_minute: u32, max_clients: usize) -> Self {
        Self {
            per_minute: i64::from(per_minute),
            clients: Mutex::new(Clients::default()),
            max_clients,
        }
    }

    /// Takes one request from `client`'s bucket, or says how long to wait.
    pub fn check(&self, client: IpAddr, now: Timestamp) -> Result<(), Limited> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = self.per_minute.saturating_mul(COST);
        let key = client_key(client);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if !clients.buckets.contains_key(&key) && clients.buckets.len() >= self.max_clients {
            self.sweep(&mut clients, now);
            if clients.buckets.len() >= self.max_clients {
                return Ok(());
            }
        }
        let bucket = clients.buckets.entry(key).or_insert(Bucket {
            level: capacity,
            at: now,
        });
        bucket.level = self.level(bucket, now);
        bucket.at = now;
        if bucket.level >= COST {
            bucket.level -= COST;
            return Ok(());
        }
        // Refill is per_minute thousandths of a request per millisecond, /60.
        let missing_ms = ceil_div((COST - bucket.level).saturating_mul(60), self.per_minute);
        let secs = ceil_div(missing_ms, 1_000).max(1);
        Err(Limited {
            retry_after_secs: u64::try_from(secs).unwrap_or(1),
        })
    }

    /// The bucket's level at `now`, refilled since it was last seen.
    fn level(&self, b: &Bucket, now: Timestamp) -> i64 {
        let capacity = self.per_minute.saturating_mul(COST);
        let elapsed = now.millis().saturating_sub(b.at.millis()).max(0);
        let refill = elapsed.saturating_mul(self.per_minute) / 60;
        b.level.saturating_add(refill).min(capacity)
    }

    /// Drops the buckets that have refilled: they are as good as absent.
    fn sweep(&self, clients: &mut Clients, now: Timestamp) {
        if clients
            .last_sweep
            .is_some_and(|t| now.millis().saturating_sub(t.millis()) < SWEEP_EVERY_MS)
        {
            return;
        }
        clients.last_sweep = Some(now);
        let capacity = self.per_minute.saturating_mul(COST);
        clients.buckets.retain(|_, b| self.level(b, now) < capacity);
    }
}

/// `a / b` rounded up, for `a >= 0` and `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    a.saturating_add(b - 1) / b
}

/// The address a client is counted under: IPv4 as is (an IPv4-mapped IPv6
/// address as its IPv4 address), IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                for seg in s.iter_mut().skip(4) {
                    *seg = 0;
                }
                IpAddr::V6(s.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn h7_a_client_gets_its_minute_then_waits_and_refills() {
        let l = RateLimiter::new(60);
        let a = ip("192.0.2.1");
        for _ in 0..60 {
            assert_eq!(l.check(a, T0), Ok(()));
        }
        assert_eq!(
            l.check(a, T0),
            Err(Limited {
                retry_after_secs: 1
            })
        );
        // Another client is not affected.
        assert_eq!(l.check(ip("192.0.2.2"), T0), Ok(()));
        // One a second comes back.
        assert!(l.check(a, T0.add_secs(1)).is_ok());
        assert!(l.check(a, T0.add_secs(1)).is_err());
        // A slow allowance says how long to wait.
        let slow = RateLimiter::new(2);
        assert!(slow.check(a, T0).is_ok());
        assert!(slow.check(a, T0).is_ok());
        assert_eq!(
            slow.check(a, T0),
            Err(Limited {
                retry_after_secs: 30
            })
        );
        assert!(slow.check(a, T0.add_secs(30)).is_ok());
        // Off.
        let off = RateLimiter::new(0);
        for _ in 0..1_000 {
            assert!(off.check(a, T0).is_ok());
        }
    }

    #[test]
    fn h7_an_ipv6_host_is_one_client() {
        let l = RateLimiter::new(1);
        assert!(l.check(ip("2001:db8:1:2:aaaa::1"), T0).is_ok());
        assert!(l.check(ip("2001:db8:1:2:bbbb::2"), T0).is_err());
        assert!(l.check(ip("2001:db8:1:3::1"), T0).is_ok());
        assert!(l.check(ip("::ffff:192.0.2.7"), T0).is_ok());
        assert!(l.check(ip("192.0.2.7"), T0).is_err());
    }

    #[test]
    fn h7_a_full_map_drops_idle_clients_and_never_refuses_a_new_one() {
        let l = RateLimiter::with_capacity(1, 2);
        assert!(l.check(ip("192.0.2.1"), T0).is_ok());
        assert!(l.check(ip("192.0.2.2"), T0).is_ok());
        // Full of busy clients: a third goes untracked, not refused.
        assert!(l.check(ip("192.0.2.3"), T0).is_ok());
        assert!(l.check(ip("192.0.2.3"), T0).is_ok());
        assert!(
            l.check(ip("192.0.2.1"), T0).is_err(),
            "tracked ones still limited"
        );
        // Once the first two have refilled, they make room.
        let later = T0.add_secs(61);
        assert!(l.check(ip("192.0.2.3"), later).is_ok());
        assert!(l.check(ip("192.0.2.3"), later).is_err());
    }
}
