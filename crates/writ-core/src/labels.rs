//! Metric label values under a cardinality bound.
//!
//! A label whose values come from outside (a tool's name, an agent's
//! name, a policy set's version) gets at most `cap` distinct values in a
//! process; the first `cap` seen keep their own series and every later one
//! is counted under [`OTHER`]. A monitoring system's memory then grows with
//! the bound, not with what agents choose to send.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// The value every label past the bound is counted under.
pub const OTHER: &str = "_other";

/// The distinct values one label has been given so far.
#[derive(Debug)]
pub struct Bounded {
    cap: usize,
    seen: Mutex<BTreeSet<String>>,
}

impl Bounded {
    pub const fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// `value` itself when it has been seen or there is room, else [`OTHER`].
    pub fn label(&self, value: &str) -> String {
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.cap {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_past_the_bound_are_counted_as_other() {
        let b = Bounded::new(2);
        assert_eq!(b.label("a"), "a");
        assert_eq!(b.label("b"), "b");
        assert_eq!(b.label("c"), OTHER);
        assert_eq!(b.label("a"), "a");
    }
}
