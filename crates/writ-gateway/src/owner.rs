//! Whom an MCP session or stream belongs to (a task, its agent and
//! delegation chain, the tokens it was used with), and when that ends it.
//! Both transports sit on it: stdio sessions and HTTP upstream streams,
//! and the upstream sessions of HTTP MCP servers ([`SessionOwners`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use writ_core::AgentName;

use crate::auth::Caller;
use crate::state::Bundle;

/// A session whose every token has expired ends this long after the last
/// one did: its task may have ended meanwhile without revoking anything
/// this gateway saw.
const AFTER_LAST_TOKEN_SECS: i64 = 60;
/// Most tokens remembered per session (the newest are kept).
const MAX_TOKENS: usize = 64;

/// Whom a session (or a stream) belongs to, and what ends it.
#[derive(Debug)]
pub(crate) struct Owner {
    /// The task that opened it: no other task may use it.
    pub(crate) task: String,
    /// The agent acting when it was opened (counted against).
    pub(crate) agent: AgentName,
    /// The SPIFFE IDs of every agent of the delegation chain: quarantining
    /// any of them ends the session.
    chain: Vec<String>,
    /// The task's hard end (unix seconds).
    task_end: Option<i64>,
    tokens: std::sync::Mutex<Tokens>,
}

/// The tokens a session was used with.
#[derive(Debug, Default)]
struct Tokens {
    /// Those that may still be revoked: `jti` → expiry (unix seconds).
    live: HashMap<String, i64>,
    /// When the last of them all expires.
    last_exp: i64,
}

impl Owner {
    pub(crate) fn of(caller: &Caller) -> Self {
        let claims = &caller.claims;
        let chain = caller
            .chain
            .iter()
            .chain(std::iter::once(&caller.agent))
            .map(|a| a.spiffe_id.clone())
            .collect();
        let owner = Self {
            task: claims.task.clone().unwrap_or_default(),
            agent: caller.agent.name.clone(),
            chain,
            task_end: claims.task_ctx.as_ref().map(|t| t.expires_at),
            tokens: std::sync::Mutex::new(Tokens::default()),
        };
        owner.used_with(caller);
        owner
    }

    /// Remembers the token a request came with.
    pub(crate) fn used_with(&self, caller: &Caller) {
        if let Ok(mut t) = self.tokens.lock() {
            t.last_exp = t.last_exp.max(caller.claims.exp);
            let m = &mut t.live;
            if m.len() >= MAX_TOKENS && !m.contains_key(&caller.claims.jti) {
                let oldest = m
                    .iter()
                    .min_by_key(|(_, exp)| **exp)
                    .map(|(j, _)| j.clone());
                if let Some(j) = oldest {
                    m.remove(&j);
                }
            }
            m.insert(caller.claims.jti.clone(), caller.claims.exp);
        }
    }

    /// Why the session must end now, if it must: `revoked` says whether a
    /// token is revoked, `agent_live` whether an agent (by SPIFFE ID) is
    /// registered and not quarantined.
    pub(crate) fn ended(
        &self,
        now: i64,
        revoked: &dyn Fn(&str) -> bool,
        agent_live: &dyn Fn(&str) -> bool,
    ) -> Option<&'static str> {
        if self.task_end.is_some_and(|end| now >= end) {
            return Some("its task reached its hard end");
        }
        let Ok(mut tokens) = self.tokens.lock() else {
            return Some("its state is unreadable");
        };
        if tokens.live.keys().any(|jti| revoked(jti)) {
            return Some("a token it was used with was revoked (task ended or agent quarantined)");
        }
        if now > tokens.last_exp.saturating_add(AFTER_LAST_TOKEN_SECS) {
            return Some("every token it was used with has expired");
        }
        // Expired tokens are not revoked any more: forget them.
        tokens
            .live
            .retain(|_, exp| exp.saturating_add(writ_core::token::LEEWAY_SECS) >= now);
        drop(tokens);
        (!self.chain.iter().all(|id| agent_live(id)))
            .then_some("an agent of its chain is quarantined or no longer registered")
    }
}

/// Whether an agent (by SPIFFE ID) is registered and not quarantined, as
/// `bundle` says; with no bundle yet, nothing is known to have ended.
pub(crate) fn agent_live(bundle: Option<&Bundle>, id: &str) -> bool {
    bundle.is_none_or(|b| b.agents_by_spiffe.get(id).is_some_and(|a| !a.quarantined))
}

/// Which task opened each upstream MCP session: a session id is honoured
/// only for tokens of the same task (and an unknown one not at all).
#[derive(Debug, Default)]
pub(crate) struct SessionOwners(std::sync::Mutex<HashMap<String, (String, Instant)>>);

/// Most upstream sessions remembered; the idle ones go first.
const MAX_OWNED: usize = 100_000;
const OWNED_IDLE: Duration = Duration::from_secs(3600);

impl SessionOwners {
    pub(crate) fn check(&self, sid: &str, task: &str) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        match m.get_mut(sid) {
            Some((owner, seen)) if owner == task => {
                *seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    pub(crate) fn bind(&self, sid: &str, task: &str) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_OWNED {
                m.retain(|_, (_, seen)| seen.elapsed() < OWNED_IDLE);
            }
            m.entry(sid.to_owned())
                .or_insert_with(|| (task.to_owned(), Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn owner(task_end: Option<i64>, tokens: &[(&str, i64)]) -> Owner {
        Owner {
            task: "t1".into(),
            agent: "a".parse().unwrap(),
            chain: vec![
                "spiffe://writ.local/agent/root".into(),
                "spiffe://writ.local/agent/a".into(),
            ],
            task_end,
            tokens: std::sync::Mutex::new(Tokens {
                live: tokens.iter().map(|(j, e)| ((*j).to_owned(), *e)).collect(),
                last_exp: tokens.iter().map(|(_, e)| *e).max().unwrap_or(0),
            }),
        }
    }

    #[test]
    fn h6_a_session_ends_with_its_task_and_its_agents() {
        let none = |_: &str| false;
        let all = |_: &str| true;
        let now = 1_000_000;
        let o = owner(Some(now + 600), &[("j1", now + 300)]);
        assert_eq!(o.ended(now, &none, &all), None);
        // The task ended (its tokens revoked), or its agent was quarantined.
        assert!(o.ended(now, &|j| j == "j1", &all).is_some());
        assert!(
            o.ended(now, &none, &|id| !id.ends_with("/root")).is_some(),
            "an earlier agent of the chain counts too"
        );
        // The task's hard end.
        assert!(o.ended(now + 600, &none, &all).is_some());
        // Every token expired a minute ago: the task may be over unseen.
        let o = owner(None, &[("j1", now - 61), ("j2", now - 100)]);
        assert!(o.ended(now, &none, &all).is_some());
        let o = owner(None, &[("j1", now - 59)]);
        assert_eq!(o.ended(now, &none, &all), None);
        // A token expired past the leeway is forgotten (it is never
        // revoked any more); a live one is kept.
        let o = owner(None, &[("old", now - 40), ("new", now + 10)]);
        assert_eq!(o.ended(now, &none, &all), None);
        assert_eq!(
            o.tokens
                .lock()
                .unwrap()
                .live
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            vec!["new".to_owned()]
        );
        // Forgotten tokens still say when the last one expired.
        assert_eq!(o.ended(now + 60, &none, &all), None);
        assert!(o.ended(now + 71, &none, &all).is_some());
    }
}
