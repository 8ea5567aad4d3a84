//! Counters exposed at `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub attest_ok: AtomicU64,
    pub attest_failed: AtomicU64,
    pub attest_rate_limited: AtomicU64,
    pub tasks_started: AtomicU64,
    pub tasks_denied: AtomicU64,
    pub tasks_ended: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub tokens_revoked: AtomicU64,
    pub introspections: AtomicU64,
    pub shadow_differences: AtomicU64,
    /// The last least-privilege report's headline numbers (gauges).
    pub lp_unused_scopes: AtomicU64,
    pub lp_unused_tool_tokens: AtomicU64,
    pub lp_overbroad: AtomicU64,
    pub lp_allow_to_deny: AtomicU64,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Sets a gauge.
pub fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, &AtomicU64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {}", v.load(Ordering::Relaxed));
            }
        };
        counter(
            "writ_attestations_total",
            "Attestation attempts by outcome.",
            &[
                ("{outcome=\"success\"}", &self.attest_ok),
                ("{outcome=\"failure\"}", &self.attest_failed),
                ("{outcome=\"rate_limited\"}", &self.attest_rate_limited),
            ],
        );
        counter(
            "writ_task_decisions_total",
            "Task start decisions.",
            &[
                ("{decision=\"allow\"}", &self.tasks_started),
                ("{decision=\"deny\"}", &self.tasks_denied),
            ],
        );
        counter(
            "writ_tasks_ended_total",
            "Tasks ended for any reason.",
            &[("", &self.tasks_ended)],
        );
        counter(
            "writ_tokens_issued_total",
            "Tokens issued.",
            &[("", &self.tokens_issued)],
        );
        counter(
            "writ_tokens_revoked_total",
            "Tokens revoked.",
            &[("", &self.tokens_revoked)],
        );
        counter(
            "writ_introspections_total",
            "Introspection requests.",
            &[("", &self.introspections)],
        );
        counter(
            "writ_shadow_differences_total",
            "Decisions where the shadow policy set disagreed with the live one.",
            &[("", &self.shadow_differences)],
        );
        let mut gauge = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        gauge(
            "writ_least_privilege_unused_scopes",
            "Scopes granted and never used, in the last least-privilege report.",
            &self.lp_unused_scopes,
        );
        gauge(
            "writ_least_privilege_unused_tool_tokens",
            "Tool tokens issued and never presented at a gateway, in the last least-privilege report.",
            &self.lp_unused_tool_tokens,
        );
        gauge(
            "writ_least_privilege_overbroad_policies",
            "Live permits that granted scopes never used, in the last least-privilege report.",
            &self.lp_overbroad,
        );
        gauge(
            "writ_least_privilege_replay_allow_to_deny",
            "Recorded allows the last proposed narrower policy set would deny.",
            &self.lp_allow_to_deny,
        );
        out
    }
}
