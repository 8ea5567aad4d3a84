//! Time as a parameter.
//!
//! Every expiry decision in writ takes a [`Clock`], so tests move time
//! instead of sleeping, and the wall clock is read in exactly one place.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch, rounded down (the JWT `NumericDate`).
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn add_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Seconds from `self` until `later`, never negative.
    pub fn secs_until(self, later: Timestamp) -> i64 {
        (later.0.saturating_sub(self.0)).max(0) / 1000
    }

    /// Hour of the day in UTC, 0..=23.
    pub fn hour_utc(self) -> i64 {
        self.secs().rem_euclid(86_400) / 3600
    }

    /// Day of the week in UTC, 0 = Sunday ..= 6 = Saturday.
    pub fn weekday_utc(self) -> i64 {
        // 1970-01-01 was a Thursday (4).
        (self.secs().div_euclid(86_400) + 4).rem_euclid(7)
    }

    /// RFC 3339 rendering in UTC with second precision, for people.
    pub fn to_rfc3339(self) -> String {
        let secs = self.secs();
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

/// Days since the epoch to a (year, month, day) civil date (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The wall clock. The only place writ reads it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one sanctioned read of the wall clock"
    )]
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_facts() {
        // 2026-11-28T21:09:40Z is a Saturday.
        let t = Timestamp::from_secs(1_795_900_180);
        assert_eq!(t.to_rfc3339(), "2026-11-28T21:09:40Z");
        assert_eq!(t.hour_utc(), 21);
        assert_eq!(t.weekday_utc(), 6);
        assert_eq!(Timestamp::from_secs(0).weekday_utc(), 4);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_secs(100));
        assert_eq!(c.now().secs(), 100);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now().secs(), 105);
        assert_eq!(
            Timestamp::from_secs(100).secs_until(Timestamp::from_secs(90)),
            0
        );
    }
}
