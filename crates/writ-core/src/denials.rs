//! Recent denials per agent: the `behaviour` policy sees.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::{AgentName, Timestamp};

/// The window policy sees (`context.behaviour.denials_5m`).
const WINDOW_MS: i64 = 5 * 60 * 1000;
/// Past this many in the window, older ones are dropped (the count saturates).
const MAX_PER_AGENT: usize = 1024;

#[derive(Debug, Default)]
pub struct Denials {
    by_agent: Mutex<HashMap<AgentName, VecDeque<i64>>>,
}

impl Denials {
    pub fn record(&self, agent: &AgentName, now: Timestamp) {
        if let Ok(mut m) = self.by_agent.lock() {
            let q = m.entry(agent.clone()).or_default();
            prune(q, now);
            if q.len() >= MAX_PER_AGENT {
                q.pop_front();
            }
            q.push_back(now.millis());
        }
    }

    pub fn recent(&self, agent: &AgentName, now: Timestamp) -> u32 {
        let Ok(mut m) = self.by_agent.lock() else {
            // A poisoned counter reads as "very noisy": fail towards denial.
            return u32::MAX;
        };
        match m.get_mut(agent) {
            Some(q) => {
                prune(q, now);
                u32::try_from(q.len()).unwrap_or(u32::MAX)
            }
            None => 0,
        }
    }
}

fn prune(q: &mut VecDeque<i64>, now: Timestamp) {
    while q.front().is_some_and(|t| *t <= now.millis() - WINDOW_MS) {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_last_five_minutes() {
        let d = Denials::default();
        let a: AgentName = "a".parse().unwrap();
        let t0 = Timestamp::from_secs(1_000_000);
        for i in 0..3 {
            d.record(&a, t0.add_secs(i * 60));
        }
        assert_eq!(d.recent(&a, t0.add_secs(150)), 3);
        assert_eq!(d.recent(&a, t0.add_secs(301)), 2);
        assert_eq!(d.recent(&"b".parse().unwrap(), t0), 0);
    }
}
