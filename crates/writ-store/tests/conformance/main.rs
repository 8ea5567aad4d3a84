//! Conformance suite for the [`Store`] trait.
//!
//! Every check is a backend-neutral `async fn` that takes an
//! `Arc<dyn Store>` (or, for the checks that close and reopen the database or
//! tamper with it underneath the store, a [`Harness`]). The `sqlite` module
//! at the bottom runs the whole suite against [`SqlStore`]; another
//! backend runs it by implementing [`Harness`] and invoking the same
//! `conformance_tests!` macro.
//!
//! Time is always a fixed [`Timestamp`], never the wall clock.

// The checks are plain `async fn`s rather than `#[test]` functions (so that
// any backend can call them), which the workspace's test exemptions for
// these lints do not cover. A failed check is meant to panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation panics"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use writ_core::api::{
    AdminCredential, Agent, Approval, ApprovalCall, ApprovalStatus, Attestation, Role, Task,
    TaskStatus, Tool,
};
use writ_core::audit::{self, AuditEvent, AuditKind, AuditRecord, Outcome};
use writ_core::{AgentName, ApprovalId, Capability, InstanceId, TaskId, Timestamp, ToolName};
use writ_store::{
    DbLease, Grant, GrantKind, GrantState, Instance, JoinTokenError, QuarantineOutcome, Revoked,
    Store, StoreError, StoredKey, TaskEnd, TaskSearch,
};

// ---------------------------------------------------------------------------
// Harness: what a backend provides to run the suite.
// ---------------------------------------------------------------------------

/// One database for one test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens the store over this test's database (again, after a drop).
    async fn open(&self) -> Arc<dyn Store>;
    /// Runs one SQL statement on the raw database, bypassing the store;
    /// returns the number of rows changed. The store must be dropped first.
    async fn exec_raw(&self, sql: &str) -> Result<u64, String>;
    /// Removes whatever guards the audit table against UPDATE and DELETE.
    async fn drop_audit_guards(&self);
}

// ---------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------

const T0: i64 = 1_800_000_000;

/// `T0 + secs`.
pub(crate) fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

pub(crate) fn name(s: &str) -> AgentName {
    s.parse::<AgentName>().unwrap()
}

pub(crate) fn ev(kind: AuditKind) -> AuditEvent {
    AuditEvent::new(kind, Outcome::Success, "admin")
}

pub(crate) fn agent_record(n: &str, created_at: Timestamp) -> Agent {
    Agent {
        name: name(n),
        spiffe_id: format!("spiffe://writ.test/agent/{n}"),
        attestation: Attestation::JoinToken,
        attributes: BTreeMap::from([("team".to_owned(), "infra".to_owned())]),
        workload: None,
        quarantined: false,
        created_at,
    }
}

pub(crate) async fn register(s: &dyn Store, n: &str) -> AgentName {
    let a = agent_record(n, at(0));
    s.create_agent(&a, vec![ev(AuditKind::AgentRegister).agent(n)])
        .await
        .unwrap();
    a.name
}

pub(crate) async fn join_token(
    s: &dyn Store,
    agent: &AgentName,
    hash: &str,
    expires_at: Timestamp,
) {
    s.create_join_token(
        agent,
        hash,
        expires_at,
        at(0),
        vec![ev(AuditKind::JoinTokenCreate).agent(agent)],
    )
    .await
    .unwrap();
}

pub(crate) fn instance_and_grant(
    agent: &AgentName,
    jti: &str,
    now: Timestamp,
) -> (Instance, Grant) {
    let inst = Instance {
        id: InstanceId::generate().unwrap(),
        agent: agent.clone(),
        attestation: "join_token".to_owned(),
        created_at: now,
        expires_at: now.add_secs(86_400),
        revoked_at: None,
        jkt: None,
    };
    let grant = Grant {
        jti: jti.to_owned(),
        kind: GrantKind::InstanceToken,
        agent: agent.clone(),
        instance_id: inst.id.clone(),
        task_id: None,
        issued_at: now,
        expires_at: now.add_secs(3_600),
        jkt: None,
        audience: None,
    };
    (inst, grant)
}

pub(crate) fn attest_events(inst: &Instance, jti: &str) -> Vec<AuditEvent> {
    vec![
        ev(AuditKind::Attest).agent(&inst.agent).instance(&inst.id),
        ev(AuditKind::TokenIssue).instance(&inst.id).jti(jti),
    ]
}

/// Attests an instance of `agent` (consuming `join` if given) with an
/// instance token `jti`.
pub(crate) async fn attest(
    s: &dyn Store,
    agent: &AgentName,
    join: Option<&str>,
    jti: &str,
    now: Timestamp,
) -> Result<Instance, StoreError> {
    let (inst, grant) = instance_and_grant(agent, jti, now);
    s.create_instance(&inst, join, &grant, attest_events(&inst, jti))
        .await?;
    Ok(inst)
}

pub(crate) fn task_and_grant(
    inst: &Instance,
    jti: &str,
    now: Timestamp,
    lease: Timestamp,
    expires: Timestamp,
) -> (Task, Grant) {
    let task = Task {
        task_id: TaskId::generate().unwrap(),
        agent: inst.agent.clone(),
        instance_id: inst.id.clone(),
        intent: "triage the open issues".to_owned(),
        capabilities: vec![Capability::parse_short("github:read,write").unwrap()],
        on_behalf_of: Some("user:alice".to_owned()),
        status: TaskStatus::Active,
        created_at: now,
        lease_expires_at: lease,
        expires_at: expires,
        ended_at: None,
        end_reason: None,
        policy_version: "policy-v1".to_owned(),
        parent_task_id: None,
        depth: 0,
        exception: false,
    };
    let grant = Grant {
        jti: jti.to_owned(),
        kind: GrantKind::TaskToken,
        agent: inst.agent.clone(),
        instance_id: inst.id.clone(),
        task_id: Some(task.task_id.clone()),
        issued_at: now,
        expires_at: lease,
        jkt: None,
        audience: None,
    };
    (task, grant)
}

pub(crate) async fn start_task(
    s: &dyn Store,
    inst: &Instance,
    jti: &str,
    now: Timestamp,
    lease: Timestamp,
    expires: Timestamp,
) -> Result<Task, StoreError> {
    let (task, grant) = task_and_grant(inst, jti, now, lease, expires);
    let audit = vec![ev(AuditKind::TaskStart).task(&task.task_id).jti(jti)];
    s.create_task(&task, &grant, audit).await?;
    Ok(task)
}

pub(crate) async fn heartbeat(
    s: &dyn Store,
    task: &Task,
    jti: &str,
    now: Timestamp,
    lease: Timestamp,
) -> Result<Task, StoreError> {
    let grant = Grant {
        jti: jti.to_owned(),
        kind: GrantKind::TaskToken,
        agent: task.agent.clone(),
        instance_id: task.instance_id.clone(),
        task_id: Some(task.task_id.clone()),
        issued_at: now,
        expires_at: lease,
        jkt: None,
        audience: None,
    };
    let audit = vec![ev(AuditKind::TaskHeartbeat).task(&task.task_id).jti(jti)];
    s.heartbeat_task(&task.task_id, lease, &grant, audit).await
}

pub(crate) async fn end(
    s: &dyn Store,
    task: &TaskId,
    how: TaskEnd,
    now: Timestamp,
) -> Option<(Task, u64)> {
    s.end_task(task, how, now, vec![ev(AuditKind::TaskEnd).task(task)])
        .await
        .unwrap()
        .map(|e| (e.task, e.revoked_tokens))
}

pub(crate) async fn grant(s: &dyn Store, jti: &str) -> GrantState {
    s.grant_state(jti)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("grant {jti} is missing"))
}

pub(crate) async fn task_of(s: &dyn Store, id: &TaskId) -> Task {
    s.get_task(id).await.unwrap().unwrap()
}

pub(crate) async fn all_audit(s: &dyn Store) -> Vec<AuditRecord> {
    s.audit_after(0, u32::MAX).await.unwrap()
}

pub(crate) async fn audit_len(s: &dyn Store) -> usize {
    all_audit(s).await.len()
}

/// Verifies the whole chain, checks seqs are exactly 1..=n, returns n.
pub(crate) async fn assert_chain(s: &dyn Store) -> u64 {
    let records = all_audit(s).await;
    let (head, _) =
        audit::verify(&records).unwrap_or_else(|e| panic!("chain does not verify: {e}"));
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    let expected: Vec<u64> = (1..=records.len() as u64).collect();
    assert_eq!(seqs, expected, "audit seqs are not contiguous from 1");
    assert_eq!(head, records.len() as u64);
    assert_eq!(
        s.audit_head().await.unwrap(),
        head,
        "audit_head disagrees with the chain"
    );
    head
}

pub(crate) fn sorted_ids(mut v: Vec<TaskId>) -> Vec<TaskId> {
    v.sort();
    v
}

pub(crate) fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

mod activity;
mod agents;
mod approvals;
mod audit_chain;
mod behaviour;
mod clients;
mod durability;
mod join_tokens;
mod keys;
mod quarantine;
mod retention;
mod rules;
mod sinks;
mod tamper;
mod tasks;

pub use activity::*;
pub use agents::*;
pub use approvals::*;
pub use audit_chain::*;
pub use behaviour::*;
pub use clients::*;
pub use durability::*;
pub use join_tokens::*;
pub use keys::*;
pub use quarantine::*;
pub use retention::*;
pub use rules::*;
pub use sinks::*;
pub use tamper::*;
pub use tasks::*;

// ---------------------------------------------------------------------------
// Running the suite.
// ---------------------------------------------------------------------------

/// Expands to one `#[tokio::test]` per check, opening a fresh database from
/// `$harness` (an expression yielding a [`Harness`]) for each.
macro_rules! conformance_tests {
    ($harness:expr; store: [$($store_test:ident),* $(,)?]; harness: [$($harness_test:ident),* $(,)?] $(;)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $store_test() {
                let Some(h) = $harness else { return };
                super::$store_test(super::Harness::open(&h).await).await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $harness_test() {
                let Some(h) = $harness else { return };
                super::$harness_test(&h).await;
            }
        )*
    };
}

/// Every check of the suite, for one backend's harness.
macro_rules! every_check {
    ($harness:expr) => {
        conformance_tests! {
            $harness;
        store: [
                admin_tokens,
                operator_credentials_have_roles_and_rotate,
                operator_sessions_end_and_are_replaced,
                an_identity_token_signs_in_once,
                console_sessions_end_with_sign_out_and_their_credential,
                sign_out_ends_exactly_the_session_with_its_secret,
                console_sessions_end_with_their_source_and_are_listed,
                tasks_are_searched_and_paged_in_the_store,
                deleting_an_agent_ends_its_tasks_and_tokens,
                deleting_or_narrowing_a_tool_ends_the_tasks_using_it,
                oauth_clients_create_list_revoke,
                client_assertions_are_used_once,
                gateway_keys_are_published_while_their_gateway_lives,
                audit_checkpoints_are_kept_once_per_record,
                signing_keys_rotate_atomically,
                sealed_values_are_resealed_all_or_none,
                tools_create_get_list,
                h11_tools_keep_the_gateway_that_serves_them,
                tool_secrets_set_replace_list,
                gateway_decisions_are_recorded_once,
                call_approvals_round_trip,
                call_approvals_expire,
                call_approval_is_used_once_under_race,
                quarantine_expires_pending_call_approvals,
                denials_are_counted_in_buckets,
                rule_counts_fire_once_per_threshold_per_agent,
                rule_counts_fire_once_under_concurrent_load,
                rule_state_round_trip,
                sink_cursor_advances_only_by_its_holder,
                sink_lease_has_one_holder_under_race,
                audit_sink_floor_is_the_lowest_unacknowledged,
                pruned_grants_read_as_unknown_never_live,
                pruned_revocations_keep_the_feed_head,
                pruned_tasks_are_only_old_ended_ones,
                pruned_instances_are_expired_and_unreferenced,
                audit_tap_sees_committed_records_and_never_blocks,
                denials_under_concurrent_load,
                gateway_refusals_count_once,
                shadow_policy_round_trip,
                agents_create_get_list,
                agent_duplicate_name_conflicts,
                join_token_is_consumed_once,
                join_token_refusals,
                h13_a_join_token_is_read_without_being_consumed,
                join_token_creation_rules,
                failed_attest_does_not_consume_join_token,
                join_token_race_has_one_winner,
                task_round_trip,
                end_task_revokes_its_grants,
                db_leases_follow_their_task,
                nodes_and_spiffe_keys,
                heartbeat_extends_lease_within_lifetime,
                heartbeat_after_end_is_refused,
                lapsed_tasks_are_reaped_and_only_they,
                lapsed_tasks_include_hard_lifetime,
                live_counts_follow_tasks_and_grants,
                quarantine_revokes_everything_and_release_restores,
                revoke_single_grant,
                delegation_tree_ends_as_one,
                console_reads_tree_tokens_instances_and_policy_sources,
                quarantine_cascades_into_delegated_tasks,
                h12_revoking_an_instance_token_ends_the_instance_and_its_tasks,
                audit_chain_survives_concurrent_writes,
                failed_writes_append_no_audit,
                audit_pages,
                decisions_over_time_are_grouped_in_the_store_over_the_whole_range,
                audit_after_huge_cursor_is_empty,
            ];
            harness: [
                durable_across_reopen,
                audit_table_is_append_only,
                audit_records_leave_only_once_archived,
                tamper_edit_is_detected,
                tamper_edit_with_rehash_is_detected,
                tamper_delete_is_detected,
                tamper_swap_is_detected,
            ];
        }
    };
}

mod sqlite;

mod postgres;

mod revoked_stays_revoked;
