//! The broker's counters and gauges, kept by the process's `metrics`
//! recorder (installed by `writ_listen::telemetry`, which renders them at
//! `/metrics`). The handles are taken when the service is built, so the
//! recorder must be installed before that.

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use writ_core::labels::Bounded;
use writ_policy::Decision;

/// Distinct policy versions a process labels decisions with; a process
/// that has decided with more counts the rest as `_other`.
const POLICY_VERSIONS: usize = 32;
static VERSIONS: Bounded = Bounded::new(POLICY_VERSIONS);

#[derive(Debug)]
pub struct Metrics {
    pub attest_ok: Counter,
    pub attest_failed: Counter,
    pub attest_rate_limited: Counter,
    /// Operator sign-ins refused by their own rate limit.
    pub sign_in_rate_limited: Counter,
    /// Browser sign-ins refused before any identity was involved (no or a
    /// bad flow cookie, another state, a flow too old): counted, never
    /// audited (anyone can send them).
    pub sign_in_refused_early: Counter,
    pub tasks_started: Counter,
    pub tasks_denied: Counter,
    pub tasks_ended: Counter,
    pub tokens_issued: Counter,
    pub tokens_revoked: Counter,
    pub introspections: Counter,
    pub shadow_differences: Counter,
    pub exchanges_ok: Counter,
    pub exchanges_refused: Counter,
    /// The last least-privilege report's headline numbers (gauges).
    pub lp_unused_scopes: Gauge,
    pub lp_unused_tool_tokens: Gauge,
    pub lp_overbroad: Gauge,
    pub lp_allow_to_deny: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        describe();
        let m = Self {
            attest_ok: counter!("writ_attestations_total", "outcome" => "success"),
            attest_failed: counter!("writ_attestations_total", "outcome" => "failure"),
            attest_rate_limited: counter!("writ_attestations_total", "outcome" => "rate_limited"),
            sign_in_rate_limited: counter!("writ_operator_sign_ins_total", "outcome" => "rate_limited"),
            sign_in_refused_early: counter!("writ_operator_sign_ins_total", "outcome" => "refused_before_identity"),
            tasks_started: counter!("writ_task_decisions_total", "decision" => "allow"),
            tasks_denied: counter!("writ_task_decisions_total", "decision" => "deny"),
            tasks_ended: counter!("writ_tasks_ended_total"),
            tokens_issued: counter!("writ_tokens_issued_total"),
            tokens_revoked: counter!("writ_tokens_revoked_total"),
            introspections: counter!("writ_introspections_total"),
            shadow_differences: counter!("writ_shadow_differences_total"),
            exchanges_ok: counter!("writ_token_exchanges_total", "outcome" => "issued"),
            exchanges_refused: counter!("writ_token_exchanges_total", "outcome" => "refused"),
            lp_unused_scopes: gauge!("writ_least_privilege_unused_scopes"),
            lp_unused_tool_tokens: gauge!("writ_least_privilege_unused_tool_tokens"),
            lp_overbroad: gauge!("writ_least_privilege_overbroad_policies"),
            lp_allow_to_deny: gauge!("writ_least_privilege_replay_allow_to_deny"),
        };
        // Every series is exposed from the start, at zero.
        for what in ["grants", "revocations", "tasks", "instances"] {
            counter!("writ_pruned_total", "what" => what).increment(0);
        }
        counter!("writ_audit_archived_records_total").increment(0);
        counter!("writ_audit_archive_segments_total").increment(0);
        for c in [
            &m.attest_ok,
            &m.attest_failed,
            &m.attest_rate_limited,
            &m.sign_in_rate_limited,
            &m.sign_in_refused_early,
            &m.tasks_started,
            &m.tasks_denied,
            &m.tasks_ended,
            &m.tokens_issued,
            &m.tokens_revoked,
            &m.introspections,
            &m.shadow_differences,
            &m.exchanges_ok,
            &m.exchanges_refused,
        ] {
            c.increment(0);
        }
        for g in [
            &m.lp_unused_scopes,
            &m.lp_unused_tool_tokens,
            &m.lp_overbroad,
            &m.lp_allow_to_deny,
        ] {
            g.increment(0.0);
        }
        m
    }
}

fn describe() {
    describe_counter!(
        "writ_attestations_total",
        "Attestation attempts by outcome."
    );
    describe_counter!("writ_task_decisions_total", "Task start decisions.");
    describe_counter!("writ_tasks_ended_total", "Tasks ended for any reason.");
    describe_counter!("writ_tokens_issued_total", "Tokens issued.");
    describe_counter!("writ_tokens_revoked_total", "Tokens revoked.");
    describe_counter!("writ_introspections_total", "Introspection requests.");
    describe_counter!(
        "writ_operator_sign_ins_total",
        "Operator sign-ins refused before any identity was checked, by outcome (rate_limited, refused_before_identity)."
    );
    describe_counter!(
        "writ_shadow_differences_total",
        "Decisions where the shadow policy set disagreed with the live one."
    );
    describe_counter!(
        "writ_token_exchanges_total",
        "Token exchanges (RFC 8693) by outcome."
    );
    describe_counter!(
        "writ_pruned_total",
        "Rows retention removed: expired grants, revocations of expired tokens, old ended tasks, expired instances."
    );
    describe_counter!(
        "writ_audit_archived_records_total",
        "Audit records moved from the database into signed archive segments."
    );
    describe_counter!(
        "writ_audit_archive_segments_total",
        "Audit archive segments written."
    );
    describe_gauge!(
        "writ_least_privilege_unused_scopes",
        "Scopes granted and never used, in the last least-privilege report."
    );
    describe_gauge!(
        "writ_least_privilege_unused_tool_tokens",
        "Tool tokens issued and never presented at a gateway, in the last least-privilege report."
    );
    describe_gauge!(
        "writ_least_privilege_overbroad_policies",
        "Live permits that granted scopes never used, in the last least-privilege report."
    );
    describe_gauge!(
        "writ_least_privilege_replay_allow_to_deny",
        "Recorded allows the last proposed narrower policy set would deny."
    );
}

pub fn inc(c: &Counter) {
    c.increment(1);
}

/// Sets a gauge.
pub fn set(g: &Gauge, n: u64) {
    g.set(n as f64);
}

pub fn add(c: &Counter, n: u64) {
    c.increment(n);
}

/// Counts one decision an enforcement point (`point`: broker, gateway)
/// acted on in `writ_decisions_total{point, action, verdict, policy_version}`.
pub fn decision(point: &'static str, action: &'static str, d: &Decision) {
    counter!(
        "writ_decisions_total",
        "point" => point,
        "action" => action,
        "verdict" => d.verdict().as_str(),
        "policy_version" => VERSIONS.label(d.policy_version()),
    )
    .increment(1);
}

/// Counts rows retention removed from the store, in
/// `writ_pruned_total{what}` (`grants`, `revocations`, `tasks`, `instances`).
pub fn pruned(what: &'static str, n: u64) {
    counter!("writ_pruned_total", "what" => what).increment(n);
}

/// Counts audit records moved into the archive, and its segments.
pub fn archived(records: u64) {
    counter!("writ_audit_archived_records_total").increment(records);
    counter!("writ_audit_archive_segments_total").increment(1);
}

/// Sets `writ_live_tasks`, `writ_live_grants` and `writ_approvals_pending`.
pub fn live(c: &writ_store::LiveCounts) {
    gauge!("writ_live_tasks").set(c.tasks as f64);
    gauge!("writ_live_grants").set(c.grants as f64);
    gauge!("writ_approvals_pending").set(c.approvals_pending as f64);
}
