//! Repeated identical attestation failures, folded into one audit record a
//! window.
//!
//! Someone retrying a stale join token in a loop, or a scanner guessing,
//! would otherwise write one hash-chained record a request. The first
//! failure of a kind (the same agent, method and reason) is written at once
//! as before; the identical ones that follow within [`WINDOW_MS`] are only
//! counted, and one record says how many there were, from when to when,
//! once the window is over (at the next failure of any kind, or at the next
//! sweep). The map is bounded: past [`MAX_KINDS`] kinds in flight, every
//! failure is written on its own again, so that many distinct failures are
//! never hidden.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use writ_core::Timestamp;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};

/// How long identical failures are folded together, by default.
pub const WINDOW_MS: i64 = 60_000;
/// The most kinds of failure counted at once.
const MAX_KINDS: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Kind {
    agent: String,
    method: Option<String>,
    reason: String,
}

#[derive(Debug)]
struct Counted {
    /// When the failure written at once happened (the window's start).
    first: Timestamp,
    /// Identical failures since then, not yet written.
    repeats: u64,
    last: Timestamp,
}

/// Identical attestation failures in their windows.
#[derive(Debug)]
pub struct AttestDigest {
    window_ms: i64,
    kinds: Mutex<HashMap<Kind, Counted>>,
}

impl AttestDigest {
    /// Folding within `window_ms`; 0 folds nothing.
    pub fn new(window_ms: i64) -> Self {
        Self {
            window_ms,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this failure is to be written now (the first of its kind in
    /// its window); if not, it is counted.
    pub fn first(&self, agent: &str, method: Option<&str>, reason: &str, now: Timestamp) -> bool {
        if self.window_ms <= 0 {
            return true;
        }
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        let kind = Kind {
            agent: agent.to_owned(),
            method: method.map(str::to_owned),
            reason: reason.to_owned(),
        };
        if let Some(c) = kinds.get_mut(&kind) {
            c.repeats += 1;
            c.last = now;
            return false;
        }
        if kinds.len() < MAX_KINDS {
            kinds.insert(
                kind,
                Counted {
                    first: now,
                    repeats: 0,
                    last: now,
                },
            );
        }
        true
    }

    /// The records of windows over by `now`, their kinds forgotten.
    pub fn due(&self, now: Timestamp) -> Vec<AuditEvent> {
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.window_ms;
        let over = |c: &Counted| now.millis().saturating_sub(c.first.millis()) >= window;
        let done: Vec<Kind> = kinds
            .iter()
            .filter(|(_, c)| over(c))
            .map(|(k, _)| k.clone())
            .collect();
        let mut events = Vec::new();
        for k in done {
            let Some(c) = kinds.remove(&k) else { continue };
            if c.repeats == 0 {
                continue;
            }
            let mut detail = serde_json::json!({
                "repeated": c.repeats,
                "first_at": c.first.millis(),
                "last_at": c.last.millis(),
            });
            if let (Some(m), Some(obj)) = (&k.method, detail.as_object_mut()) {
                obj.insert("method".into(), serde_json::Value::String(m.clone()));
            }
            let event = AuditEvent::new(
                AuditKind::Attest,
                Outcome::Failure,
                format!("agent:{}", k.agent),
            )
            .reason(format!(
                "{} (repeated {} more times within {} ms)",
                k.reason, c.repeats, window
            ))
            .detail(detail)
            .agent(&k.agent);
            events.push(event);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    #[test]
    fn identical_failures_make_one_record_a_window() {
        let d = AttestDigest::new(WINDOW_MS);
        let t = Timestamp::from_millis(1_000_000);
        assert!(d.first("a", Some("join_token"), "join token is unknown", t));
        for i in 1..=50 {
            let at = Timestamp::from_millis(t.millis() + i * 100);
            assert!(!d.first("a", Some("join_token"), "join token is unknown", at));
        }
        // Another reason is another kind: written at once.
        assert!(d.first("a", Some("join_token"), "join token expired", t));
        assert!(d.due(Timestamp::from_millis(t.millis() + 1_000)).is_empty());
        let due = d.due(Timestamp::from_millis(t.millis() + WINDOW_MS));
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].detail["repeated"], 50);
        assert_eq!(due[0].detail["method"], "join_token");
        assert!(
            due[0]
                .reason
                .as_deref()
                .unwrap()
                .starts_with("join token is unknown")
        );
        // A new window starts with a record written at once.
        assert!(d.first(
            "a",
            Some("join_token"),
            "join token is unknown",
            Timestamp::from_millis(t.millis() + WINDOW_MS + 1)
        ));
    }
}
