//! Lifetimes: how long what writ issues may live. Every clamp (the task's
//! end, the subject token's expiry, a policy's `@max_ttl`, the configured
//! maximum) goes through [`Lifetime`], so that a derived credential can
//! never outlive what it derives from, whichever path issued it.

use crate::time::Timestamp;

/// A lifetime that starts at `start` and ends at the earliest of its bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    start: Timestamp,
    end: Timestamp,
}

impl Lifetime {
    /// `secs` from `start` (a negative length is an empty lifetime).
    pub fn new(start: Timestamp, secs: i64) -> Self {
        Self {
            start,
            end: start.add_secs(secs.max(0)),
        }
    }

    /// From `start` until `end` (an end before the start is an empty lifetime).
    pub fn until(start: Timestamp, end: Timestamp) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }

    /// Never past `bound` (the task's end, the subject token's expiry).
    pub fn within(self, bound: Timestamp) -> Self {
        Self {
            end: self.end.min(bound).max(self.start),
            ..self
        }
    }

    /// Never past `bound`, when there is one.
    pub fn within_opt(self, bound: Option<Timestamp>) -> Self {
        bound.map_or(self, |b| self.within(b))
    }

    /// At most `secs` seconds from the start (a policy's `@max_ttl`, a
    /// configured maximum). A cap below one second is one second: a cap
    /// shortens what is issued, it never refuses it; refusing is policy's.
    pub fn capped(self, secs: Option<i64>) -> Self {
        match secs {
            Some(s) => self.within(self.start.add_secs(s.max(1))),
            None => self,
        }
    }

    pub fn start(self) -> Timestamp {
        self.start
    }

    pub fn end(self) -> Timestamp {
        self.end
    }

    /// Whole seconds from start to end.
    pub fn secs(self) -> i64 {
        self.start.secs_until(self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock, ManualClock};

    #[test]
    fn every_bound_shortens_and_none_lengthens() {
        let clock = ManualClock::new(Timestamp::from_secs(1_000));
        let now = clock.now();
        let task_end = now.add_secs(120);
        // A 10-minute token of a task that ends in 2 minutes.
        let l = Lifetime::new(now, 600).within(task_end);
        assert_eq!(l.end(), task_end);
        assert_eq!(l.secs(), 120);
        // A later bound changes nothing.
        assert_eq!(l.within(now.add_secs(900)), l);
        // The subject token expires sooner still; then @max_ttl of 30 s.
        let l = l.within_opt(Some(now.add_secs(90))).capped(Some(30));
        assert_eq!(l.secs(), 30);
        assert_eq!(l.within_opt(None).capped(None), l);
        // A cap of 0 (or an unparsable one) is one second, never zero.
        assert_eq!(Lifetime::new(now, 600).capped(Some(0)).secs(), 1);
        // Time moves; the same rules hold from the new now.
        clock.advance(std::time::Duration::from_secs(100));
        let l = Lifetime::new(clock.now(), 300).within(task_end);
        assert_eq!(l.secs(), 20);
        // Past the bound: empty, never negative, never ending before it starts.
        clock.advance(std::time::Duration::from_secs(60));
        let l = Lifetime::new(clock.now(), 300).within(task_end);
        assert_eq!((l.secs(), l.end()), (0, clock.now()));
        assert_eq!(Lifetime::until(clock.now(), task_end).secs(), 0);
        assert_eq!(Lifetime::new(clock.now(), -5).secs(), 0);
    }
}
