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
    Agent, Approval, ApprovalCall, ApprovalStatus, Attestation, Task, TaskStatus, Tool,
};
use writ_core::audit::{self, AuditEvent, AuditKind, AuditRecord, Outcome};
use writ_core::{AgentName, ApprovalId, Capability, InstanceId, TaskId, Timestamp, ToolName};
use writ_store::{
    DbLease, Grant, GrantKind, GrantState, Instance, JoinTokenError, QuarantineOutcome, Revoked,
    Store, StoreError, StoredKey, TaskEnd,
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
fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

fn name(s: &str) -> AgentName {
    s.parse::<AgentName>().unwrap()
}

fn ev(kind: AuditKind) -> AuditEvent {
    AuditEvent::new(kind, Outcome::Success, "admin")
}

fn agent_record(n: &str, created_at: Timestamp) -> Agent {
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

async fn register(s: &dyn Store, n: &str) -> AgentName {
    let a = agent_record(n, at(0));
    s.create_agent(&a, vec![ev(AuditKind::AgentRegister).agent(n)])
        .await
        .unwrap();
    a.name
}

async fn join_token(s: &dyn Store, agent: &AgentName, hash: &str, expires_at: Timestamp) {
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

fn instance_and_grant(agent: &AgentName, jti: &str, now: Timestamp) -> (Instance, Grant) {
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

fn attest_events(inst: &Instance, jti: &str) -> Vec<AuditEvent> {
    vec![
        ev(AuditKind::Attest).agent(&inst.agent).instance(&inst.id),
        ev(AuditKind::TokenIssue).instance(&inst.id).jti(jti),
    ]
}

/// Attests an instance of `agent` (consuming `join` if given) with an
/// instance token `jti`.
async fn attest(
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

fn task_and_grant(
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

async fn start_task(
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

async fn heartbeat(
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

async fn end(s: &dyn Store, task: &TaskId, how: TaskEnd, now: Timestamp) -> Option<(Task, u64)> {
    s.end_task(task, how, now, vec![ev(AuditKind::TaskEnd).task(task)])
        .await
        .unwrap()
        .map(|e| (e.task, e.revoked_tokens))
}

async fn grant(s: &dyn Store, jti: &str) -> GrantState {
    s.grant_state(jti)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("grant {jti} is missing"))
}

async fn task_of(s: &dyn Store, id: &TaskId) -> Task {
    s.get_task(id).await.unwrap().unwrap()
}

async fn all_audit(s: &dyn Store) -> Vec<AuditRecord> {
    s.audit_after(0, u32::MAX).await.unwrap()
}

async fn audit_len(s: &dyn Store) -> usize {
    all_audit(s).await.len()
}

/// Verifies the whole chain, checks seqs are exactly 1..=n, returns n.
async fn assert_chain(s: &dyn Store) -> u64 {
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

fn sorted_ids(mut v: Vec<TaskId>) -> Vec<TaskId> {
    v.sort();
    v
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------------------
// Admin tokens, signing keys, tools.
// ---------------------------------------------------------------------------

pub async fn admin_tokens(s: Arc<dyn Store>) {
    let s = &*s;
    let create = || vec![ev(AuditKind::AdminTokenCreate)];
    assert_eq!(s.admin_token_count().await.unwrap(), 0);
    assert_eq!(s.admin_token("h1").await.unwrap(), None);
    s.add_admin_token("ops", "h1", false, at(0), create())
        .await
        .unwrap();
    s.add_admin_token("ci", "h2", false, at(1), create())
        .await
        .unwrap();
    let ops = s.admin_token("h1").await.unwrap().unwrap();
    assert_eq!((ops.name.as_str(), ops.dev), ("ops", false));
    assert!(s.admin_token("h2").await.unwrap().is_some());
    assert_eq!(s.admin_token("h3").await.unwrap(), None);
    assert_eq!(s.admin_token_count().await.unwrap(), 2);
    // A name or a secret is taken once.
    let before = audit_len(s).await;
    assert!(matches!(
        s.add_admin_token("ops", "h9", false, at(2), create()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_admin_token("other", "h2", false, at(2), create())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_len(s).await, before, "a refused add records nothing");

    // A dev credential replaces the last dev one, and is not counted.
    s.add_admin_token("dev", "d1", true, at(3), create())
        .await
        .unwrap();
    s.add_admin_token("dev", "d2", true, at(4), create())
        .await
        .unwrap();
    assert_eq!(s.admin_token("d1").await.unwrap(), None);
    assert!(s.admin_token("d2").await.unwrap().unwrap().dev);
    assert_eq!(s.admin_token_count().await.unwrap(), 2);
    let names: Vec<_> = s
        .admin_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.dev))
        .collect();
    assert_eq!(
        names,
        [
            ("ci".to_owned(), false),
            ("dev".to_owned(), true),
            ("ops".to_owned(), false)
        ]
    );

    // Revoked: gone. Unknown: false. The last one not made by a dev start
    // stays, and the refusal records nothing.
    let revoke = || vec![ev(AuditKind::AdminTokenRevoke)];
    assert!(s.revoke_admin_token("dev", at(5), revoke()).await.unwrap());
    assert!(s.revoke_admin_token("ci", at(5), revoke()).await.unwrap());
    assert!(!s.revoke_admin_token("ci", at(5), revoke()).await.unwrap());
    assert_eq!(s.admin_token("h2").await.unwrap(), None);
    let before = audit_len(s).await;
    assert!(matches!(
        s.revoke_admin_token("ops", at(6), revoke()).await,
        Err(StoreError::LastAdminCredential(_))
    ));
    assert_eq!(audit_len(s).await, before);
    assert!(s.admin_token("h1").await.unwrap().is_some());
    assert_chain(s).await;
}

pub async fn audit_checkpoints_are_kept_once_per_record(s: Arc<dyn Store>) {
    let s = &*s;
    assert_eq!(s.last_audit_checkpoint().await.unwrap(), None);
    s.add_audit_checkpoint(4, "cp4").await.unwrap();
    s.add_audit_checkpoint(12, "cp12").await.unwrap();
    s.add_audit_checkpoint(8, "cp8").await.unwrap();
    // A second one for the same record (another replica) is ignored.
    s.add_audit_checkpoint(8, "cp8-again").await.unwrap();
    assert_eq!(
        s.audit_checkpoints().await.unwrap(),
        vec![
            (4, "cp4".to_owned()),
            (8, "cp8".to_owned()),
            (12, "cp12".to_owned())
        ]
    );
    assert_eq!(
        s.last_audit_checkpoint().await.unwrap(),
        Some((12, "cp12".to_owned()))
    );
}

pub async fn signing_keys_rotate_atomically(s: Arc<dyn Store>) {
    let s = &*s;
    let key = |kid: &str, t: Timestamp| StoredKey {
        kid: kid.to_owned(),
        alg: "EdDSA".to_owned(),
        sealed: vec![1, 2, 3, kid.len() as u8],
        created_at: t,
        retired_at: None,
    };
    s.add_signing_key(key("k1", at(0)), at(0), vec![ev(AuditKind::KeyRotate)])
        .await
        .unwrap();
    s.add_signing_key(key("k2", at(10)), at(10), vec![ev(AuditKind::KeyRotate)])
        .await
        .unwrap();
    let keys = s.signing_keys().await.unwrap();
    let by_kid: BTreeMap<&str, &StoredKey> = keys.iter().map(|k| (k.kid.as_str(), k)).collect();
    assert_eq!(by_kid.len(), 2);
    assert_eq!(by_kid["k1"].retired_at, Some(at(10)));
    assert_eq!(by_kid["k2"].retired_at, None);
    assert_eq!(by_kid["k2"].sealed, vec![1, 2, 3, 2]);
    assert_eq!(by_kid["k2"].alg, "EdDSA");

    // A duplicate kid fails as a whole: k2 is not retired by it, no audit.
    let before = audit_len(s).await;
    let err = s
        .add_signing_key(key("k2", at(20)), at(20), vec![ev(AuditKind::KeyRotate)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let keys = s.signing_keys().await.unwrap();
    let k2 = keys.iter().find(|k| k.kid == "k2").unwrap();
    assert_eq!(
        k2.retired_at, None,
        "a failed rotation retired the current key"
    );
    assert_eq!(audit_len(s).await, before);
    assert_chain(s).await;
}

pub async fn tools_create_get_list(s: Arc<dyn Store>) {
    let s = &*s;
    let tool = |n: &str, aud: &str| Tool {
        name: n.parse::<ToolName>().unwrap(),
        audience: aud.to_owned(),
        scopes: vec!["read".parse().unwrap(), "write".parse().unwrap()],
        attributes: [("data".to_owned(), "user".to_owned())].into(),
        upstream: Some(writ_core::api::Upstream::Http {
            url: format!("{aud}/v1"),
            require_secret: true,
        }),
        secret_header: None,
        gateway: None,
        created_at: at(5),
    };
    let github = tool("github", "https://api.github.test");
    let jira = tool("jira", "https://jira.test");
    s.create_tool(&jira, vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    s.create_tool(&github, vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    assert_eq!(
        s.get_tool(&github.name).await.unwrap(),
        Some(github.clone())
    );
    assert_eq!(s.get_tool(&"nope".parse().unwrap()).await.unwrap(), None);
    let mut listed = s.list_tools().await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![github.clone(), jira]);

    let before = audit_len(s).await;
    let err = s
        .create_tool(
            &tool("github", "https://evil.test"),
            vec![ev(AuditKind::ToolRegister)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.get_tool(&github.name).await.unwrap(), Some(github));
    assert_eq!(audit_len(s).await, before);
}

/// A tool keeps the gateway it is bound to (migration 13); one bound to
/// none is the embedded gateway's, which is how tools registered before
/// the binding existed read back.
pub async fn h11_tools_keep_the_gateway_that_serves_them(s: Arc<dyn Store>) {
    let s = &*s;
    let tool = |n: &str, gateway: Option<&str>| Tool {
        name: n.parse::<ToolName>().unwrap(),
        audience: format!("https://{n}.test"),
        scopes: vec!["read".parse().unwrap()],
        attributes: Default::default(),
        upstream: Some(writ_core::api::Upstream::Http {
            url: format!("https://{n}.internal"),
            require_secret: false,
        }),
        secret_header: None,
        gateway: gateway.map(str::to_owned),
        created_at: at(5),
    };
    let edge = tool("crm", Some("edge-1"));
    let plain = tool("wiki", None);
    for t in [&edge, &plain] {
        s.create_tool(t, vec![ev(AuditKind::ToolRegister)])
            .await
            .unwrap();
    }
    let got = s.get_tool(&edge.name).await.unwrap().unwrap();
    assert_eq!(got, edge);
    assert!(got.served_by("edge-1") && !got.served_by("embedded"));
    let listed = s.list_tools().await.unwrap();
    let wiki = listed.iter().find(|t| t.name == plain.name).unwrap();
    assert_eq!(wiki.gateway, None);
    assert!(wiki.served_by("embedded") && !wiki.served_by("edge-1"));

    // Rebound, and back; an unknown tool is refused with nothing written.
    s.set_tool_gateway(
        &plain.name,
        Some("edge-2"),
        at(6),
        vec![ev(AuditKind::ToolRegister)],
    )
    .await
    .unwrap();
    let got = s.get_tool(&plain.name).await.unwrap().unwrap();
    assert_eq!(got.gateway.as_deref(), Some("edge-2"));
    s.set_tool_gateway(&edge.name, None, at(7), vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    assert_eq!(s.get_tool(&edge.name).await.unwrap().unwrap().gateway, None);
    let before = audit_len(s).await;
    let err = s
        .set_tool_gateway(
            &"nope".parse().unwrap(),
            Some("edge-1"),
            at(8),
            vec![ev(AuditKind::ToolRegister)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(audit_len(s).await, before);
    assert_chain(s).await;
}

/// Tool secrets are kept sealed as given, replaced in place, and reported
/// by header only; an unknown tool is refused with nothing written.
pub async fn tool_secrets_set_replace_list(s: Arc<dyn Store>) {
    let s = &*s;
    let tool = Tool {
        name: "crm".parse().unwrap(),
        audience: "https://crm.test".into(),
        scopes: vec!["read".parse().unwrap()],
        attributes: Default::default(),
        upstream: None,
        secret_header: None,
        gateway: None,
        created_at: at(5),
    };
    s.create_tool(&tool, vec![]).await.unwrap();
    let before = audit_len(s).await;
    let err = s
        .set_tool_secret(
            &"nope".parse().unwrap(),
            "x-api-key",
            vec![1],
            at(6),
            vec![ev(AuditKind::ToolSecretSet)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(audit_len(s).await, before);
    s.set_tool_secret(
        &tool.name,
        "x-api-key",
        vec![1, 2, 3],
        at(6),
        vec![ev(AuditKind::ToolSecretSet)],
    )
    .await
    .unwrap();
    s.set_tool_secret(
        &tool.name,
        "authorization",
        vec![4, 5],
        at(7),
        vec![ev(AuditKind::ToolSecretSet)],
    )
    .await
    .unwrap();
    let all = s.tool_secrets().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].header, "authorization");
    assert_eq!(all[0].sealed, vec![4, 5]);
    assert_eq!(
        s.get_tool(&tool.name)
            .await
            .unwrap()
            .unwrap()
            .secret_header
            .as_deref(),
        Some("authorization")
    );
    assert_eq!(audit_len(s).await, before + 2);
}

/// The shadow policy set is kept, replaced and removed, with its audit.
pub async fn shadow_policy_round_trip(s: Arc<dyn Store>) {
    let s = &*s;
    assert_eq!(s.shadow_policy().await.unwrap(), None);
    let before = audit_len(s).await;
    let files = vec![(
        "a.cedar".to_owned(),
        "permit (principal, action, resource);".to_owned(),
    )];
    s.set_shadow_policy(
        Some(("v1".into(), files.clone())),
        at(1),
        vec![ev(AuditKind::PolicyShadow)],
    )
    .await
    .unwrap();
    s.set_shadow_policy(
        Some(("v2".into(), files.clone())),
        at(2),
        vec![ev(AuditKind::PolicyShadow)],
    )
    .await
    .unwrap();
    assert_eq!(s.shadow_policy().await.unwrap(), Some(("v2".into(), files)));
    s.set_shadow_policy(None, at(3), vec![ev(AuditKind::PolicyShadow)])
        .await
        .unwrap();
    assert_eq!(s.shadow_policy().await.unwrap(), None);
    assert_eq!(audit_len(s).await, before + 3);
}

/// A gateway's decisions are recorded once each, in order: redelivery is
/// skipped, a gap is refused with nothing written.
pub async fn gateway_decisions_are_recorded_once(s: Arc<dyn Store>) {
    let s = &*s;
    s.create_gateway("gw-1", "hash-1", at(1), vec![])
        .await
        .unwrap();
    assert!(matches!(
        s.create_gateway("gw-1", "hash-2", at(1), vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.gateway_by_token("hash-1").await.unwrap().as_deref(),
        Some("gw-1")
    );
    assert_eq!(s.gateway_by_token("hash-2").await.unwrap(), None);
    let before = audit_len(s).await;
    let evs = |n: usize| vec![ev(AuditKind::ToolCall); n];
    assert_eq!(
        s.append_gateway_decisions("gw-1", 1, vec![], at(2))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.append_gateway_decisions("gw-1", 1, evs(3), at(2))
            .await
            .unwrap(),
        3
    );
    // 2..=5: 2 and 3 are held already, 4 and 5 are new.
    assert_eq!(
        s.append_gateway_decisions("gw-1", 2, evs(4), at(3))
            .await
            .unwrap(),
        5
    );
    assert_eq!(audit_len(s).await, before + 5);
    assert!(matches!(
        s.append_gateway_decisions("gw-1", 9, evs(1), at(4)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.append_gateway_decisions("nope", 1, evs(1), at(4)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(audit_len(s).await, before + 5);
    // A revoked credential resolves to nothing; revoking twice is fine.
    s.revoke_gateway("gw-1", at(5), vec![]).await.unwrap();
    s.revoke_gateway("gw-1", at(6), vec![]).await.unwrap();
    assert_eq!(s.gateway_by_token("hash-1").await.unwrap(), None);
    assert!(matches!(
        s.revoke_gateway("nope", at(6), vec![]).await,
        Err(StoreError::NotFound(_))
    ));
}

// ---------------------------------------------------------------------------
// 1. Agents.
// ---------------------------------------------------------------------------

pub async fn agents_create_get_list(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(s.list_agents().await.unwrap().is_empty());
    let beta = agent_record("beta", at(2));
    let alpha = agent_record("alpha", at(1));
    s.create_agent(&beta, vec![ev(AuditKind::AgentRegister)])
        .await
        .unwrap();
    s.create_agent(&alpha, vec![ev(AuditKind::AgentRegister)])
        .await
        .unwrap();

    assert_eq!(s.get_agent(&alpha.name).await.unwrap(), Some(alpha.clone()));
    assert_eq!(s.get_agent(&beta.name).await.unwrap(), Some(beta.clone()));
    assert_eq!(s.get_agent(&name("gamma")).await.unwrap(), None);

    let mut listed = s.list_agents().await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![alpha, beta]);
    assert_eq!(assert_chain(s).await, 2);
}

pub async fn agent_duplicate_name_conflicts(s: Arc<dyn Store>) {
    let s = &*s;
    let original = agent_record("alpha", at(1));
    s.create_agent(&original, vec![ev(AuditKind::AgentRegister)])
        .await
        .unwrap();
    let audit_before = all_audit(s).await;

    let mut imposter = agent_record("alpha", at(9));
    imposter.spiffe_id = "spiffe://evil.test/agent/alpha".to_owned();
    imposter
        .attributes
        .insert("team".to_owned(), "evil".to_owned());
    imposter.quarantined = true;
    let err = s
        .create_agent(&imposter, vec![ev(AuditKind::AgentRegister)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    assert_eq!(
        s.get_agent(&original.name).await.unwrap(),
        Some(original.clone())
    );
    assert_eq!(s.list_agents().await.unwrap(), vec![original]);
    assert_eq!(
        all_audit(s).await,
        audit_before,
        "a refused write changed the audit log"
    );
}

// ---------------------------------------------------------------------------
// 2. Join tokens.
// ---------------------------------------------------------------------------

pub async fn join_token_is_consumed_once(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    join_token(s, &alpha, "jt-1", at(600)).await;

    let inst = attest(s, &alpha, Some("jt-1"), "jti_1", at(10))
        .await
        .unwrap();
    assert_eq!(s.get_instance(&inst.id).await.unwrap(), Some(inst.clone()));
    let g = grant(s, "jti_1").await;
    assert_eq!(g.grant.kind, GrantKind::InstanceToken);
    assert_eq!(g.grant.instance_id, inst.id);
    assert_eq!(g.grant.task_id, None);
    assert_eq!(g.revoked_at, None);
    assert_eq!(g.task_status, None);
    assert!(g.is_live(at(10)));

    let before = audit_len(s).await;
    let (second, second_grant) = instance_and_grant(&alpha, "jti_2", at(20));
    let err = s
        .create_instance(
            &second,
            Some("jt-1"),
            &second_grant,
            attest_events(&second, "jti_2"),
        )
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::JoinToken(JoinTokenError::Used));
    assert_eq!(s.get_instance(&second.id).await.unwrap(), None);
    assert_eq!(s.grant_state("jti_2").await.unwrap(), None);
    assert_eq!(audit_len(s).await, before);
    // The first instance is untouched by the refused second use.
    assert_eq!(s.get_instance(&inst.id).await.unwrap(), Some(inst));
    assert_chain(s).await;
}

/// H13: attestation reads a join token before anything else (so that an
/// unknown agent and an unknown token cost the same), without consuming
/// it, and refuses it for the same reasons, in the same order, as the
/// store does when it consumes it.
pub async fn h13_a_join_token_is_read_without_being_consumed(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    join_token(s, &alpha, "jt-1", at(600)).await;
    let before = audit_len(s).await;
    assert_eq!(s.join_token("jt-unknown").await.unwrap(), None);
    let jt = s.join_token("jt-1").await.unwrap().unwrap();
    assert_eq!(jt.agent, alpha);
    assert_eq!(jt.expires_at, at(600));
    assert_eq!(jt.used_at, None);
    assert_eq!(jt.refusal(&alpha, at(1)), None);
    assert_eq!(jt.refusal(&beta, at(1)), Some(JoinTokenError::WrongAgent));
    assert_eq!(jt.refusal(&alpha, at(600)), Some(JoinTokenError::Expired));
    assert_eq!(s.join_token("jt-1").await.unwrap(), Some(jt));
    assert_eq!(audit_len(s).await, before, "reading records nothing");

    attest(s, &alpha, Some("jt-1"), "jti_1", at(2))
        .await
        .unwrap();
    let used = s.join_token("jt-1").await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(at(2)));
    assert_eq!(used.refusal(&alpha, at(3)), Some(JoinTokenError::Used));
    assert_eq!(
        attest(s, &alpha, Some("jt-1"), "jti_2", at(3))
            .await
            .unwrap_err(),
        StoreError::JoinToken(JoinTokenError::Used)
    );
}

pub async fn join_token_refusals(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    join_token(s, &alpha, "jt-expiring", at(60)).await;
    join_token(s, &alpha, "jt-alpha", at(600)).await;

    let refused = |join: &'static str, agent: AgentName, jti: &'static str, now: Timestamp| async move {
        let before = audit_len(s).await;
        let (inst, g) = instance_and_grant(&agent, jti, now);
        let err = s
            .create_instance(&inst, Some(join), &g, attest_events(&inst, jti))
            .await
            .unwrap_err();
        assert_eq!(
            s.get_instance(&inst.id).await.unwrap(),
            None,
            "{join}: instance left behind"
        );
        assert_eq!(
            s.grant_state(jti).await.unwrap(),
            None,
            "{join}: grant left behind"
        );
        assert_eq!(
            audit_len(s).await,
            before,
            "{join}: audit appended on failure"
        );
        err
    };

    // Expired: at the expiry instant and after it.
    assert_eq!(
        refused("jt-expiring", alpha.clone(), "jti_e1", at(60)).await,
        StoreError::JoinToken(JoinTokenError::Expired)
    );
    assert_eq!(
        refused("jt-expiring", alpha.clone(), "jti_e2", at(61)).await,
        StoreError::JoinToken(JoinTokenError::Expired)
    );
    // Another agent's token.
    assert_eq!(
        refused("jt-alpha", beta.clone(), "jti_w", at(10)).await,
        StoreError::JoinToken(JoinTokenError::WrongAgent)
    );
    // Unknown token.
    assert_eq!(
        refused("jt-nope", alpha.clone(), "jti_u", at(10)).await,
        StoreError::JoinToken(JoinTokenError::Unknown)
    );

    // None of the refusals consumed the token it named.
    attest(s, &alpha, Some("jt-alpha"), "jti_ok", at(10))
        .await
        .unwrap();
    // A token one millisecond before its expiry still works.
    join_token(s, &alpha, "jt-edge", at(60)).await;
    attest(
        s,
        &alpha,
        Some("jt-edge"),
        "jti_edge",
        Timestamp::from_millis(at(60).millis() - 1),
    )
    .await
    .unwrap();
    assert_chain(s).await;
}

pub async fn join_token_creation_rules(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    join_token(s, &alpha, "jt-1", at(600)).await;
    let before = audit_len(s).await;

    let err = s
        .create_join_token(
            &alpha,
            "jt-1",
            at(900),
            at(1),
            vec![ev(AuditKind::JoinTokenCreate)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let err = s
        .create_join_token(
            &name("ghost"),
            "jt-2",
            at(900),
            at(1),
            vec![ev(AuditKind::JoinTokenCreate)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(audit_len(s).await, before);

    // The duplicate did not extend or reset the original token: it still
    // expires at 600.
    let (inst, g) = instance_and_grant(&alpha, "jti_late", at(700));
    let err = s
        .create_instance(&inst, Some("jt-1"), &g, attest_events(&inst, "jti_late"))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::JoinToken(JoinTokenError::Expired));

    // A quarantined agent gets no join tokens.
    s.set_quarantine(&alpha, true, at(2), vec![ev(AuditKind::AgentQuarantine)])
        .await
        .unwrap();
    let before = audit_len(s).await;
    let err = s
        .create_join_token(
            &alpha,
            "jt-3",
            at(900),
            at(3),
            vec![ev(AuditKind::JoinTokenCreate)],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Quarantined);
    assert_eq!(audit_len(s).await, before);
}

/// A child task delegated from `parent` to the instance `inst`.
async fn delegate(
    s: &dyn Store,
    parent: &Task,
    inst: &Instance,
    jti: &str,
    now: Timestamp,
) -> Result<Task, StoreError> {
    let (mut task, grant) =
        task_and_grant(inst, jti, now, parent.lease_expires_at, parent.expires_at);
    task.parent_task_id = Some(parent.task_id.clone());
    task.depth = parent.depth + 1;
    let audit = vec![ev(AuditKind::TaskStart).task(&task.task_id).jti(jti)];
    s.create_task(&task, &grant, audit).await?;
    Ok(task)
}

/// Ending a task ends its whole delegation tree, revoking every grant in
/// it, in one call; a dead parent takes no new children.
pub async fn delegation_tree_ends_as_one(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let gamma = register(s, "gamma").await;
    let ia = attest(s, &alpha, None, "jti_ia", at(1)).await.unwrap();
    let ib = attest(s, &beta, None, "jti_ib", at(1)).await.unwrap();
    let ic = attest(s, &gamma, None, "jti_ic", at(1)).await.unwrap();
    let root = start_task(s, &ia, "jti_root", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let sibling = start_task(s, &ia, "jti_sib", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let child = delegate(s, &root, &ib, "jti_child", at(3)).await.unwrap();
    let grandchild = delegate(s, &child, &ic, "jti_grand", at(4)).await.unwrap();
    assert_eq!(grandchild.depth, 2);

    let tree = s.task_tree(&root.task_id).await.unwrap();
    let ids: Vec<&TaskId> = tree.iter().map(|t| &t.task_id).collect();
    assert_eq!(ids, [&root.task_id, &child.task_id, &grandchild.task_id]);
    assert_eq!(tree[1].parent_task_id.as_ref(), Some(&root.task_id));

    let ended = s
        .end_task(
            &root.task_id,
            TaskEnd::Completed,
            at(10),
            vec![ev(AuditKind::TaskEnd)],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.descendants, 2);
    assert_eq!(ended.revoked_tokens, 3);
    for jti in ["jti_root", "jti_child", "jti_grand"] {
        assert!(
            !grant(s, jti).await.is_live(at(11)),
            "{jti} outlived its tree"
        );
    }
    assert!(
        grant(s, "jti_sib").await.is_live(at(11)),
        "a sibling tree is untouched"
    );
    assert!(
        grant(s, "jti_ib").await.is_live(at(11)),
        "instances live on"
    );
    assert_eq!(task_of(s, &child.task_id).await.status, TaskStatus::Revoked);
    assert_eq!(
        task_of(s, &grandchild.task_id).await.status,
        TaskStatus::Revoked
    );
    assert_eq!(
        task_of(s, &sibling.task_id).await.status,
        TaskStatus::Active
    );

    let before = audit_len(s).await;
    let err = delegate(s, &root, &ib, "jti_late", at(12))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_late").await.unwrap(), None);
    assert_eq!(audit_len(s).await, before);
}

/// Quarantining an agent ends the tasks delegated from its tasks, even
/// when other agents run them.
pub async fn quarantine_cascades_into_delegated_tasks(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let ia = attest(s, &alpha, None, "jti_ia", at(1)).await.unwrap();
    let ib = attest(s, &beta, None, "jti_ib", at(1)).await.unwrap();
    let root = start_task(s, &ia, "jti_root", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let child = delegate(s, &root, &ib, "jti_child", at(3)).await.unwrap();
    let own = start_task(s, &ib, "jti_own", at(3), at(600), at(3_600))
        .await
        .unwrap();
    let out = s
        .set_quarantine(&alpha, true, at(10), vec![ev(AuditKind::AgentQuarantine)])
        .await
        .unwrap();
    assert_eq!(out.ended_tasks, 2);
    assert!(!grant(s, "jti_child").await.is_live(at(11)));
    assert_eq!(task_of(s, &child.task_id).await.status, TaskStatus::Revoked);
    assert!(
        grant(s, "jti_own").await.is_live(at(11)),
        "beta's own work is untouched"
    );
    assert_eq!(task_of(s, &own.task_id).await.status, TaskStatus::Active);
}

/// H12: revoking an instance token revokes the instance, and what it
/// started dies with it: its tasks (active and waiting for approval), their
/// tool tokens, the tasks delegated from them and their tokens, and calls
/// held for approval. Other instances, of the same agent or another, and a
/// sub-agent's own work are untouched.
pub async fn h12_revoking_an_instance_token_ends_the_instance_and_its_tasks(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    let ia = attest(s, &alpha, None, "jti_ia", at(1)).await.unwrap();
    let ia2 = attest(s, &alpha, None, "jti_ia2", at(1)).await.unwrap();
    let ib = attest(s, &beta, None, "jti_ib", at(1)).await.unwrap();
    let root = start_task(s, &ia, "jti_root", at(2), at(600), at(3_600))
        .await
        .unwrap();
    let tool = Grant {
        jti: "jti_tool".into(),
        kind: GrantKind::ToolToken,
        agent: alpha.clone(),
        instance_id: ia.id.clone(),
        task_id: Some(root.task_id.clone()),
        issued_at: at(3),
        expires_at: at(300),
        jkt: None,
        audience: Some("https://github.example".into()),
    };
    s.record_grant(&tool, vec![ev(AuditKind::TokenIssue).jti("jti_tool")])
        .await
        .unwrap();
    let child = delegate(s, &root, &ib, "jti_child", at(3)).await.unwrap();
    let held = call_approval_record(&root, "/a", at(4));
    hold_call(s, &held, "fp1").await.unwrap();
    let (mut waiting, _) = task_and_grant(&ia, "unused", at(4), at(600), at(3_600));
    waiting.status = TaskStatus::PendingApproval;
    let approval = Approval {
        approval_id: ApprovalId::generate().unwrap(),
        task_id: waiting.task_id.clone(),
        status: ApprovalStatus::Pending,
        ttl: 3_600,
        exception: false,
        justification: None,
        requested_at: at(4),
        expires_at: at(604),
        decided_at: None,
        reason: None,
        task: waiting.clone(),
        call: None,
    };
    s.create_pending_task(&waiting, &approval, vec![ev(AuditKind::Approval)])
        .await
        .unwrap();
    let sibling = start_task(s, &ia2, "jti_sibling", at(5), at(600), at(3_600))
        .await
        .unwrap();
    let own = start_task(s, &ib, "jti_own", at(5), at(600), at(3_600))
        .await
        .unwrap();
    let head = s.revocation_head().await.unwrap();
    let before = audit_len(s).await;

    let out = s
        .revoke_grant(
            "jti_ia",
            at(10),
            vec![ev(AuditKind::TokenRevoke).jti("jti_ia")],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        Some(Revoked {
            revoked_tokens: 4,
            ended_tasks: 3
        }),
        "the instance token, the task token, its tool token and the child's token; \
         the task, its child and the task waiting for approval"
    );
    assert_eq!(audit_len(s).await, before + 1);
    assert_eq!(
        s.get_instance(&ia.id).await.unwrap().unwrap().revoked_at,
        Some(at(10))
    );
    for jti in ["jti_ia", "jti_root", "jti_tool", "jti_child"] {
        let g = grant(s, jti).await;
        assert_eq!(g.revoked_at, Some(at(10)), "{jti}");
        assert!(!g.is_live(at(10)), "{jti}");
    }
    let root_now = task_of(s, &root.task_id).await;
    assert_eq!(root_now.status, TaskStatus::Revoked);
    assert_eq!(root_now.end_reason.as_deref(), Some("instance revoked"));
    assert_eq!(task_of(s, &child.task_id).await.status, TaskStatus::Revoked);
    let w = task_of(s, &waiting.task_id).await;
    assert_eq!(w.status, TaskStatus::Revoked);
    assert_eq!(w.end_reason.as_deref(), Some("instance revoked"));
    for id in [&approval.approval_id, &held.approval_id] {
        let a = s.get_approval(id).await.unwrap().unwrap();
        assert_eq!(a.status, ApprovalStatus::Expired);
        assert_eq!(a.reason.as_deref(), Some("instance revoked"));
    }
    // Every revoked token reaches the feed gateways follow.
    let fed: BTreeSet<String> = s
        .revocations_after(head, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.jti)
        .collect();
    for jti in ["jti_ia", "jti_root", "jti_tool", "jti_child"] {
        assert!(fed.contains(jti), "{jti} is not in the feed");
    }

    // Nothing revives it: no heartbeat, no tool token, no new task.
    assert_eq!(
        heartbeat(s, &root, "jti_hb", at(11), at(700)).await,
        Err(StoreError::NotActive("revoked"))
    );
    let mut again = tool.clone();
    again.jti = "jti_tool2".into();
    again.issued_at = at(11);
    assert!(s.record_grant(&again, vec![]).await.is_err());
    assert_eq!(
        start_task(s, &ia, "jti_new", at(11), at(600), at(3_600))
            .await
            .unwrap_err(),
        StoreError::InstanceRevoked
    );

    // The rest carries on.
    for jti in ["jti_ia2", "jti_sibling", "jti_ib", "jti_own"] {
        assert!(grant(s, jti).await.is_live(at(11)), "{jti}");
    }
    assert_eq!(
        task_of(s, &sibling.task_id).await.status,
        TaskStatus::Active
    );
    assert_eq!(task_of(s, &own.task_id).await.status, TaskStatus::Active);

    // Revoking it again changes and records nothing.
    assert_eq!(
        s.revoke_grant("jti_ia", at(12), vec![ev(AuditKind::TokenRevoke)])
            .await
            .unwrap(),
        None
    );
    assert_eq!(audit_len(s).await, before + 1);
    assert_chain(s).await;
}

/// A failure after the token check (a duplicate instance id or jti) rolls
/// the consumption back with everything else.
pub async fn failed_attest_does_not_consume_join_token(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    join_token(s, &alpha, "jt-1", at(600)).await;
    let existing = attest(s, &alpha, None, "jti_taken", at(1)).await.unwrap();
    let before = audit_len(s).await;

    // Duplicate jti.
    let (inst, g) = instance_and_grant(&alpha, "jti_taken", at(2));
    let err = s
        .create_instance(&inst, Some("jt-1"), &g, attest_events(&inst, "jti_taken"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.get_instance(&inst.id).await.unwrap(), None);
    assert_eq!(grant(s, "jti_taken").await.grant.instance_id, existing.id);

    // Duplicate instance id.
    let (mut inst, g) = instance_and_grant(&alpha, "jti_fresh", at(3));
    inst.id = existing.id.clone();
    let g = Grant {
        instance_id: existing.id.clone(),
        ..g
    };
    let err = s
        .create_instance(&inst, Some("jt-1"), &g, attest_events(&inst, "jti_fresh"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_fresh").await.unwrap(), None);
    assert_eq!(s.get_instance(&existing.id).await.unwrap(), Some(existing));
    assert_eq!(audit_len(s).await, before);

    // The token is still good, once.
    attest(s, &alpha, Some("jt-1"), "jti_ok", at(4))
        .await
        .unwrap();
    assert_eq!(
        attest(s, &alpha, Some("jt-1"), "jti_again", at(5))
            .await
            .unwrap_err(),
        StoreError::JoinToken(JoinTokenError::Used)
    );
    assert_chain(s).await;
}

pub async fn join_token_race_has_one_winner(s: Arc<dyn Store>) {
    let alpha = register(&*s, "alpha").await;
    join_token(&*s, &alpha, "jt-race", at(600)).await;
    let before = audit_len(&*s).await;

    let mut handles = Vec::new();
    for n in 0..20 {
        let s = Arc::clone(&s);
        let alpha = alpha.clone();
        handles.push(tokio::spawn(async move {
            let jti = format!("jti_{n}");
            let (inst, g) = instance_and_grant(&alpha, &jti, at(10));
            let res = s
                .create_instance(&inst, Some("jt-race"), &g, attest_events(&inst, &jti))
                .await;
            (inst, jti, res)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for h in handles {
        let (inst, jti, res) = h.await.unwrap();
        match res {
            Ok(()) => winners.push((inst, jti)),
            Err(e) => {
                assert_eq!(e, StoreError::JoinToken(JoinTokenError::Used));
                losers.push((inst, jti));
            }
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{} attestations won the race",
        winners.len()
    );
    assert_eq!(losers.len(), 19);

    let (inst, jti) = &winners[0];
    assert_eq!(s.get_instance(&inst.id).await.unwrap().as_ref(), Some(inst));
    assert!(grant(&*s, jti).await.is_live(at(10)));
    for (inst, jti) in &losers {
        assert_eq!(s.get_instance(&inst.id).await.unwrap(), None);
        assert_eq!(s.grant_state(jti).await.unwrap(), None);
    }
    // Exactly the winner's two events were appended.
    assert_eq!(audit_len(&*s).await, before + 2);
    assert_chain(&*s).await;
}

// ---------------------------------------------------------------------------
// 3. Tasks.
// ---------------------------------------------------------------------------

pub async fn task_round_trip(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_i", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t", at(1), at(61), at(301))
        .await
        .unwrap();
    assert_eq!(task_of(s, &task.task_id).await, task);
    assert_eq!(
        s.get_task(&TaskId::generate().unwrap()).await.unwrap(),
        None
    );
    let g = grant(s, "jti_t").await;
    assert_eq!(g.grant.kind, GrantKind::TaskToken);
    assert_eq!(g.grant.task_id.as_ref(), Some(&task.task_id));
    assert_eq!(g.task_status, Some(TaskStatus::Active));
    assert!(g.is_live(at(1)));
    assert!(!g.is_live(at(61)), "a grant must die at its own expiry");

    // A task on an unknown instance is refused and leaves nothing behind.
    let (ghost, _) = instance_and_grant(&alpha, "unused", at(0));
    let before = audit_len(s).await;
    let err = start_task(s, &ghost, "jti_ghost", at(2), at(62), at(302))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_ghost").await.unwrap(), None);
    assert_eq!(audit_len(s).await, before);

    // A duplicate task id is a conflict.
    let (mut dup, dup_grant) = task_and_grant(&inst, "jti_dup", at(3), at(63), at(303));
    dup.task_id = task.task_id.clone();
    let dup_grant = Grant {
        task_id: Some(task.task_id.clone()),
        ..dup_grant
    };
    let err = s
        .create_task(&dup, &dup_grant, vec![ev(AuditKind::TaskStart)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_dup").await.unwrap(), None);
    assert_eq!(task_of(s, &task.task_id).await, task);
    assert_eq!(audit_len(s).await, before);
}

/// Nodes: registered once, attested with a join token exactly once (the
/// credential replaced by each attestation), found by their credential
/// until quarantined; the trust domain's keys round-trip.
pub async fn nodes_and_spiffe_keys(s: Arc<dyn Store>) {
    let s = &*s;
    let node = |n: &str| writ_core::api::Node {
        name: n.to_owned(),
        attestation: writ_core::api::Attestation::JoinToken,
        quarantined: false,
        created_at: at(0),
        attested_at: None,
    };
    s.create_node(&node("node-b"), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    s.create_node(&node("node-a"), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    let dup = s
        .create_node(&node("node-a"), vec![ev(AuditKind::Node)])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let names: Vec<String> = s
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["node-a", "node-b"]);
    assert_eq!(s.get_node("node-a").await.unwrap(), Some(node("node-a")));
    assert_eq!(s.get_node("nope").await.unwrap(), None);

    s.create_node_join_token("node-a", "jt-a", at(100), at(1), vec![])
        .await
        .unwrap();
    let wrong = s
        .attest_node("node-b", "jt-a", "cred-x", at(2), vec![])
        .await;
    assert!(
        matches!(
            wrong,
            Err(StoreError::JoinToken(JoinTokenError::WrongAgent))
        ),
        "{wrong:?}"
    );
    let unknown = s
        .attest_node("node-a", "jt-zz", "cred-x", at(2), vec![])
        .await;
    assert!(
        matches!(unknown, Err(StoreError::JoinToken(JoinTokenError::Unknown))),
        "{unknown:?}"
    );
    s.attest_node("node-a", "jt-a", "cred-1", at(3), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    let again = s
        .attest_node("node-a", "jt-a", "cred-2", at(4), vec![])
        .await;
    assert!(
        matches!(again, Err(StoreError::JoinToken(JoinTokenError::Used))),
        "{again:?}"
    );
    let found = s.node_by_token("cred-1").await.unwrap().unwrap();
    assert_eq!(
        (found.name.as_str(), found.attested_at),
        ("node-a", Some(at(3)))
    );
    s.create_node_join_token("node-a", "jt-late", at(10), at(5), vec![])
        .await
        .unwrap();
    let late = s
        .attest_node("node-a", "jt-late", "cred-3", at(10), vec![])
        .await;
    assert!(
        matches!(late, Err(StoreError::JoinToken(JoinTokenError::Expired))),
        "{late:?}"
    );

    // Quarantine: the credential and outstanding join tokens die.
    s.create_node_join_token("node-a", "jt-q", at(100), at(6), vec![])
        .await
        .unwrap();
    s.set_node_quarantine("node-a", true, at(7), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    assert_eq!(s.node_by_token("cred-1").await.unwrap(), None);
    let q = s
        .attest_node("node-a", "jt-q", "cred-4", at(8), vec![])
        .await;
    assert!(matches!(q, Err(StoreError::Quarantined)), "{q:?}");
    let q = s
        .create_node_join_token("node-a", "jt-q2", at(100), at(8), vec![])
        .await;
    assert!(matches!(q, Err(StoreError::Quarantined)), "{q:?}");
    s.set_node_quarantine("node-a", false, at(9), vec![ev(AuditKind::Node)])
        .await
        .unwrap();
    assert_eq!(
        s.node_by_token("cred-1").await.unwrap(),
        None,
        "a release revives nothing"
    );
    let released_old = s
        .attest_node("node-a", "jt-q", "cred-5", at(10), vec![])
        .await;
    assert!(
        matches!(
            released_old,
            Err(StoreError::JoinToken(JoinTokenError::Used))
        ),
        "{released_old:?}"
    );
    let missing = s.set_node_quarantine("nope", true, at(11), vec![]).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    let key = |kid: &str, kind: &str, cert: Option<Vec<u8>>| writ_store::StoredSpiffeKey {
        kid: kid.to_owned(),
        kind: kind.to_owned(),
        sealed: vec![1, 2, 3],
        cert,
        created_at: at(1),
        not_after: at(1_000),
    };
    s.add_spiffe_key(
        key("ca-1", "x509-ca", Some(vec![0x30, 0x01])),
        at(1),
        vec![ev(AuditKind::KeyRotate)],
    )
    .await
    .unwrap();
    s.add_spiffe_key(
        key("jwt-1", "jwt-svid", None),
        at(1),
        vec![ev(AuditKind::KeyRotate)],
    )
    .await
    .unwrap();
    let keys = s.spiffe_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid, "ca-1");
    assert_eq!(keys[0].cert.as_deref(), Some(&[0x30, 0x01][..]));
    assert_eq!(
        (keys[1].kind.as_str(), keys[1].cert.as_ref()),
        ("jwt-svid", None)
    );
    assert_eq!(keys[1].sealed, vec![1, 2, 3]);
    assert_eq!(keys[1].not_after, at(1_000));
    assert_chain(s).await;
}

/// A database role's lease: recorded only for an active task and within a
/// cap, confirmed once the role exists, overdue once its task ends or its
/// hard end passes (or, never confirmed, after a grace), retried later when
/// a drop fails, dropped once.
pub async fn db_leases_follow_their_task(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let db = Tool {
        name: "warehouse".parse::<ToolName>().unwrap(),
        audience: "postgres://warehouse".to_owned(),
        scopes: vec!["read".parse().unwrap()],
        attributes: BTreeMap::new(),
        upstream: Some(writ_core::api::Upstream::Postgres {
            grants: vec!["GRANT pg_read_all_data TO {role}".to_owned()],
        }),
        secret_header: None,
        gateway: None,
        created_at: at(0),
    };
    s.create_tool(&db, vec![ev(AuditKind::ToolRegister)])
        .await
        .unwrap();
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t1", at(1), at(61), at(3_600))
        .await
        .unwrap();
    let other = start_task(s, &inst, "jti_t2", at(1), at(61), at(3_600))
        .await
        .unwrap();
    let lease = |role: &str, t: &Task, now: Timestamp| DbLease {
        role: role.to_owned(),
        task_id: t.task_id.clone(),
        tool: db.name.clone(),
        created_at: now,
        expires_at: t.expires_at,
    };
    let roles = |v: Vec<DbLease>| v.into_iter().map(|l| l.role).collect::<Vec<_>>();
    let before = audit_len(s).await;
    s.create_db_lease(&lease("writ_a", &task, at(2)), 8, vec![])
        .await
        .unwrap();
    s.create_db_lease(&lease("writ_b", &other, at(2)), 8, vec![])
        .await
        .unwrap();
    let dup = s
        .create_db_lease(&lease("writ_a", &other, at(3)), 8, vec![])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let capped = s
        .create_db_lease(&lease("writ_x", &task, at(3)), 1, vec![])
        .await;
    assert!(matches!(capped, Err(StoreError::Conflict(_))), "{capped:?}");
    // Past the lease of the task (61 s), no new role.
    let late = s
        .create_db_lease(&lease("writ_c", &task, at(70)), 8, vec![])
        .await;
    assert!(matches!(late, Err(StoreError::NotActive(_))), "{late:?}");

    // Unconfirmed and young: left to the request creating it.
    assert!(
        s.overdue_db_leases(at(3_600), at(0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    for role in ["writ_a", "writ_b"] {
        s.confirm_db_lease(role, at(3), vec![ev(AuditKind::CredentialIssue)])
            .await
            .unwrap();
    }
    assert_eq!(audit_len(s).await, before + 2);
    assert!(
        s.overdue_db_leases(at(10), at(0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Past the hard end, both are overdue, whatever the task's status.
    assert_eq!(
        roles(s.overdue_db_leases(at(3_600), at(0), 100).await.unwrap()),
        ["writ_a", "writ_b"]
    );
    end(s, &task.task_id, TaskEnd::Completed, at(20))
        .await
        .unwrap();
    let overdue = s.overdue_db_leases(at(21), at(0), 100).await.unwrap();
    assert_eq!(overdue, vec![lease("writ_a", &task, at(2))]);
    // A failed drop waits for its retry time.
    s.retry_db_lease("writ_a", at(50)).await.unwrap();
    assert!(
        s.overdue_db_leases(at(22), at(0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        roles(s.overdue_db_leases(at(50), at(0), 100).await.unwrap()),
        ["writ_a"]
    );

    assert!(
        s.db_lease_dropped("writ_a", at(51), vec![ev(AuditKind::CredentialRevoke)])
            .await
            .unwrap()
    );
    let n = audit_len(s).await;
    assert!(
        !s.db_lease_dropped("writ_a", at(52), vec![ev(AuditKind::CredentialRevoke)])
            .await
            .unwrap()
    );
    assert_eq!(audit_len(s).await, n, "a second drop is not recorded");
    assert!(
        s.overdue_db_leases(at(53), at(0), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let ended = s
        .create_db_lease(&lease("writ_d", &task, at(54)), 8, vec![])
        .await;
    assert!(matches!(ended, Err(StoreError::NotActive(_))), "{ended:?}");

    // Never confirmed: overdue once older than the grace, task or not.
    s.create_db_lease(&lease("writ_e", &other, at(30)), 8, vec![])
        .await
        .unwrap();
    assert!(
        s.overdue_db_leases(at(31), at(29), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        roles(s.overdue_db_leases(at(40), at(30), 100).await.unwrap()),
        ["writ_e"]
    );
    // A confirmation after the task ended is refused.
    s.create_db_lease(&lease("writ_f", &other, at(31)), 8, vec![])
        .await
        .unwrap();
    end(s, &other.task_id, TaskEnd::Completed, at(32))
        .await
        .unwrap();
    let refused = s
        .confirm_db_lease("writ_f", at(33), vec![ev(AuditKind::CredentialIssue)])
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotActive(_))),
        "{refused:?}"
    );
    assert_chain(s).await;
}

pub async fn end_task_revokes_its_grants(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t1", at(1), at(61), at(3_600))
        .await
        .unwrap();
    heartbeat(s, &task, "jti_t2", at(30), at(90)).await.unwrap();
    heartbeat(s, &task, "jti_t3", at(60), at(120))
        .await
        .unwrap();
    let other = start_task(s, &inst, "jti_other", at(2), at(62), at(3_600))
        .await
        .unwrap();

    let (ended, revoked) = end(s, &task.task_id, TaskEnd::Completed, at(100))
        .await
        .unwrap();
    assert_eq!(revoked, 3);
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.ended_at, Some(at(100)));
    assert!(ended.end_reason.is_some());
    assert_eq!(task_of(s, &task.task_id).await, ended);

    for jti in ["jti_t1", "jti_t2", "jti_t3"] {
        let g = grant(s, jti).await;
        assert_eq!(g.revoked_at, Some(at(100)), "{jti}");
        assert_eq!(g.task_status, Some(TaskStatus::Completed), "{jti}");
        assert!(!g.is_live(at(100)), "{jti}");
        assert!(
            !g.is_live(at(50)),
            "{jti}: a revoked grant is dead at any time"
        );
    }
    // Siblings are untouched: the instance token and the other task's token.
    assert!(grant(s, "jti_inst").await.is_live(at(100)));
    let g = grant(s, "jti_other").await;
    assert_eq!(g.revoked_at, None);
    assert!(g.is_live(at(61)));
    assert_eq!(task_of(s, &other.task_id).await.status, TaskStatus::Active);

    // Ending again, in any way, is a no-op that reports None.
    let before = all_audit(s).await;
    assert_eq!(
        end(s, &task.task_id, TaskEnd::Completed, at(200)).await,
        None
    );
    assert_eq!(
        end(s, &task.task_id, TaskEnd::Revoked("again".into()), at(200)).await,
        None
    );
    assert_eq!(
        end(s, &task.task_id, TaskEnd::Lapsed, at(9_999)).await,
        None
    );
    assert_eq!(task_of(s, &task.task_id).await, ended);
    assert_eq!(grant(s, "jti_t1").await.revoked_at, Some(at(100)));
    assert_eq!(
        all_audit(s).await,
        before,
        "a no-op end appended audit records"
    );

    // An admin revocation records its reason.
    let (revoked_task, n) = end(
        s,
        &other.task_id,
        TaskEnd::Revoked("kill switch".into()),
        at(101),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(revoked_task.status, TaskStatus::Revoked);
    assert_eq!(revoked_task.end_reason.as_deref(), Some("kill switch"));
    assert_eq!(task_of(s, &other.task_id).await, revoked_task);

    // Unknown task.
    let err = s
        .end_task(
            &TaskId::generate().unwrap(),
            TaskEnd::Completed,
            at(102),
            vec![],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_chain(s).await;
}

pub async fn heartbeat_extends_lease_within_lifetime(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t0", at(0), at(60), at(300))
        .await
        .unwrap();

    let t = heartbeat(s, &task, "jti_t1", at(30), at(90)).await.unwrap();
    assert_eq!(t.lease_expires_at, at(90));
    assert_eq!(t.status, TaskStatus::Active);
    assert_eq!(task_of(s, &task.task_id).await.lease_expires_at, at(90));
    let g = grant(s, "jti_t1").await;
    assert_eq!(g.grant.task_id.as_ref(), Some(&task.task_id));
    assert!(g.is_live(at(31)));

    // Asking past the hard lifetime gets the hard lifetime.
    let t = heartbeat(s, &task, "jti_t2", at(80), at(10_000))
        .await
        .unwrap();
    assert_eq!(t.lease_expires_at, at(300));
    assert_eq!(t.expires_at, at(300));
    assert_eq!(task_of(s, &task.task_id).await.lease_expires_at, at(300));

    // A heartbeat with a jti already in use fails whole: lease unchanged.
    let before = audit_len(s).await;
    let err = heartbeat(s, &task, "jti_t1", at(90), at(200))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(task_of(s, &task.task_id).await.lease_expires_at, at(300));
    assert_eq!(audit_len(s).await, before);

    // At the end of the hard lifetime it is too late.
    let err = heartbeat(s, &task, "jti_late", at(300), at(400))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_late").await.unwrap(), None);

    // Unknown task.
    let (ghost, _) = task_and_grant(&inst, "unused", at(0), at(60), at(300));
    let err = heartbeat(s, &ghost, "jti_ghost", at(10), at(70))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_ghost").await.unwrap(), None);
    assert_eq!(audit_len(s).await, before);
    assert_chain(s).await;
}

pub async fn heartbeat_after_end_is_refused(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t0", at(0), at(60), at(300))
        .await
        .unwrap();
    end(s, &task.task_id, TaskEnd::Completed, at(10))
        .await
        .unwrap();

    let before = audit_len(s).await;
    let err = heartbeat(s, &task, "jti_t1", at(20), at(80))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(s.grant_state("jti_t1").await.unwrap(), None);
    let t = task_of(s, &task.task_id).await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.lease_expires_at, at(60));
    assert_eq!(audit_len(s).await, before);
}

pub async fn lapsed_tasks_are_reaped_and_only_they(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let a = start_task(s, &inst, "jti_a", at(0), at(60), at(3_600))
        .await
        .unwrap();
    let b = start_task(s, &inst, "jti_b", at(0), at(120), at(3_600))
        .await
        .unwrap();
    let c = start_task(s, &inst, "jti_c", at(0), at(600), at(3_600))
        .await
        .unwrap();
    // D started with a short lease but kept it alive.
    let d = start_task(s, &inst, "jti_d", at(0), at(60), at(3_600))
        .await
        .unwrap();
    heartbeat(s, &d, "jti_d2", at(50), at(200)).await.unwrap();
    // E lapsed but was completed before anyone reaped it.
    let e = start_task(s, &inst, "jti_e", at(0), at(30), at(3_600))
        .await
        .unwrap();
    end(s, &e.task_id, TaskEnd::Completed, at(20))
        .await
        .unwrap();

    assert!(s.lapsed_tasks(at(59), 100).await.unwrap().is_empty());
    assert_eq!(
        s.lapsed_tasks(at(60), 100).await.unwrap(),
        vec![a.task_id.clone()]
    );
    assert_eq!(
        sorted_ids(s.lapsed_tasks(at(130), 100).await.unwrap()),
        sorted_ids(vec![a.task_id.clone(), b.task_id.clone()])
    );
    let limited = s.lapsed_tasks(at(130), 1).await.unwrap();
    assert_eq!(limited.len(), 1);
    assert!(limited[0] == a.task_id || limited[0] == b.task_id);

    // Lapsed does not end a task whose lease is still in the future, even
    // when asked to directly.
    assert_eq!(end(s, &c.task_id, TaskEnd::Lapsed, at(130)).await, None);
    assert_eq!(end(s, &d.task_id, TaskEnd::Lapsed, at(130)).await, None);
    for (t, jti) in [(&c, "jti_c"), (&d, "jti_d2")] {
        assert_eq!(task_of(s, &t.task_id).await.status, TaskStatus::Active);
        assert!(grant(s, jti).await.is_live(at(130)), "{jti}");
    }

    // Reap everything lapsed at 130.
    for id in s.lapsed_tasks(at(130), 100).await.unwrap() {
        let (t, n) = end(s, &id, TaskEnd::Lapsed, at(130)).await.unwrap();
        assert_eq!(t.status, TaskStatus::Expired);
        assert_eq!(t.ended_at, Some(at(130)));
        assert_eq!(n, 1);
    }
    for (t, jti) in [(&a, "jti_a"), (&b, "jti_b")] {
        assert_eq!(task_of(s, &t.task_id).await.status, TaskStatus::Expired);
        let g = grant(s, jti).await;
        assert_eq!(g.revoked_at, Some(at(130)), "{jti}");
        assert_eq!(g.task_status, Some(TaskStatus::Expired));
    }
    assert_eq!(task_of(s, &c.task_id).await.status, TaskStatus::Active);
    assert_eq!(task_of(s, &d.task_id).await.status, TaskStatus::Active);
    assert_eq!(task_of(s, &e.task_id).await.status, TaskStatus::Completed);
    assert!(s.lapsed_tasks(at(130), 100).await.unwrap().is_empty());

    // A heartbeat cannot revive a lapsed lease.
    let f = start_task(s, &inst, "jti_f", at(0), at(100), at(3_600))
        .await
        .unwrap();
    let err = heartbeat(s, &f, "jti_f2", at(100), at(200))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(task_of(s, &f.task_id).await.lease_expires_at, at(100));

    // Later, D and C lapse in turn.
    assert_eq!(
        sorted_ids(s.lapsed_tasks(at(600), 100).await.unwrap()),
        sorted_ids(vec![
            c.task_id.clone(),
            d.task_id.clone(),
            f.task_id.clone()
        ])
    );
    assert_chain(s).await;
}

/// The trait promises `lapsed_tasks` finds tasks whose lease *or* hard
/// lifetime has run out, and `end_task(Lapsed)` ends a task past its hard
/// lifetime even when its lease is still in the future.
pub async fn lapsed_tasks_include_hard_lifetime(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    // Lease (600) beyond the hard lifetime (100): nothing in the Store
    // contract forbids recording it.
    let t = start_task(s, &inst, "jti_t", at(0), at(600), at(100))
        .await
        .unwrap();
    assert!(s.lapsed_tasks(at(99), 100).await.unwrap().is_empty());
    assert_eq!(
        s.lapsed_tasks(at(100), 100).await.unwrap(),
        vec![t.task_id.clone()],
        "a task past its hard lifetime is not reported by lapsed_tasks"
    );
    let (ended, _) = end(s, &t.task_id, TaskEnd::Lapsed, at(100)).await.unwrap();
    assert_eq!(ended.status, TaskStatus::Expired);
}

// ---------------------------------------------------------------------------
// 4. Quarantine.
// ---------------------------------------------------------------------------

pub async fn quarantine_revokes_everything_and_release_restores(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let beta = register(s, "beta").await;
    join_token(s, &alpha, "jt-first", at(3_600)).await;
    join_token(s, &alpha, "jt-later", at(3_600)).await;

    let i1 = attest(s, &alpha, Some("jt-first"), "jti_i1", at(1))
        .await
        .unwrap();
    let i2 = attest(s, &alpha, None, "jti_i2", at(2)).await.unwrap();
    let t1 = start_task(s, &i1, "jti_t1", at(3), at(600), at(3_600))
        .await
        .unwrap();
    heartbeat(s, &t1, "jti_t1b", at(10), at(700)).await.unwrap();
    let t2 = start_task(s, &i2, "jti_t2", at(4), at(600), at(3_600))
        .await
        .unwrap();
    let done = start_task(s, &i1, "jti_done", at(5), at(600), at(3_600))
        .await
        .unwrap();
    let (done, _) = end(s, &done.task_id, TaskEnd::Completed, at(6))
        .await
        .unwrap();

    let bi = attest(s, &beta, None, "jti_bi", at(1)).await.unwrap();
    let bt = start_task(s, &bi, "jti_bt", at(3), at(600), at(3_600))
        .await
        .unwrap();

    let before = audit_len(s).await;
    let out = s
        .set_quarantine(
            &alpha,
            true,
            at(100),
            vec![ev(AuditKind::AgentQuarantine).agent(&alpha)],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        QuarantineOutcome {
            revoked_tokens: 5,
            ended_tasks: 2
        }
    );
    assert_eq!(audit_len(s).await, before + 1);
    assert!(s.get_agent(&alpha).await.unwrap().unwrap().quarantined);
    assert!(!s.get_agent(&beta).await.unwrap().unwrap().quarantined);

    for jti in ["jti_i1", "jti_i2", "jti_t1", "jti_t1b", "jti_t2"] {
        let g = grant(s, jti).await;
        assert_eq!(g.revoked_at, Some(at(100)), "{jti}");
        assert!(g.agent_quarantined, "{jti}");
        assert!(g.instance_revoked, "{jti}");
        assert!(!g.is_live(at(100)), "{jti}");
    }
    // Already revoked before: keeps its original revocation time.
    assert_eq!(grant(s, "jti_done").await.revoked_at, Some(at(6)));
    for i in [&i1, &i2] {
        assert_eq!(
            s.get_instance(&i.id).await.unwrap().unwrap().revoked_at,
            Some(at(100))
        );
    }
    for t in [&t1, &t2] {
        let t = task_of(s, &t.task_id).await;
        assert_eq!(t.status, TaskStatus::Revoked);
        assert_eq!(t.ended_at, Some(at(100)));
        assert!(t.end_reason.is_some());
    }
    assert_eq!(task_of(s, &done.task_id).await, done);

    // Another agent is untouched.
    assert!(grant(s, "jti_bi").await.is_live(at(100)));
    assert!(grant(s, "jti_bt").await.is_live(at(100)));
    assert_eq!(
        s.get_instance(&bi.id).await.unwrap().unwrap().revoked_at,
        None
    );
    assert_eq!(task_of(s, &bt.task_id).await.status, TaskStatus::Active);

    // While quarantined: no new tasks, no new instances, nothing lingers.
    let before = audit_len(s).await;
    let err = start_task(s, &i1, "jti_q1", at(110), at(700), at(3_600))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Quarantined);
    assert_eq!(s.grant_state("jti_q1").await.unwrap(), None);
    let (qi, qg) = instance_and_grant(&alpha, "jti_q2", at(110));
    assert_eq!(
        s.create_instance(&qi, None, &qg, attest_events(&qi, "jti_q2"))
            .await
            .unwrap_err(),
        StoreError::Quarantined
    );
    let (qi2, qg2) = instance_and_grant(&alpha, "jti_q3", at(110));
    assert_eq!(
        s.create_instance(&qi2, Some("jt-later"), &qg2, attest_events(&qi2, "jti_q3"))
            .await
            .unwrap_err(),
        StoreError::Quarantined
    );
    for (i, jti) in [(&qi, "jti_q2"), (&qi2, "jti_q3")] {
        assert_eq!(s.get_instance(&i.id).await.unwrap(), None);
        assert_eq!(s.grant_state(jti).await.unwrap(), None);
    }
    let err = heartbeat(s, &t1, "jti_q4", at(110), at(800))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotActive(_)), "{err:?}");
    assert_eq!(end(s, &t1.task_id, TaskEnd::Completed, at(110)).await, None);
    assert_eq!(audit_len(s).await, before);

    // Quarantining again changes nothing more.
    let again = s
        .set_quarantine(&alpha, true, at(120), vec![ev(AuditKind::AgentQuarantine)])
        .await
        .unwrap();
    assert_eq!(again, QuarantineOutcome::default());
    assert_eq!(grant(s, "jti_i1").await.revoked_at, Some(at(100)));

    // Release.
    let out = s
        .set_quarantine(
            &alpha,
            false,
            at(200),
            vec![ev(AuditKind::AgentRelease).agent(&alpha)],
        )
        .await
        .unwrap();
    assert_eq!(out, QuarantineOutcome::default());
    assert!(!s.get_agent(&alpha).await.unwrap().unwrap().quarantined);
    // What was revoked stays revoked.
    for jti in ["jti_i1", "jti_t1", "jti_t1b"] {
        let g = grant(s, jti).await;
        assert!(!g.agent_quarantined, "{jti}");
        assert!(!g.is_live(at(200)), "{jti}");
    }
    assert_eq!(task_of(s, &t1.task_id).await.status, TaskStatus::Revoked);
    let err = start_task(s, &i1, "jti_r1", at(210), at(800), at(3_600))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::InstanceRevoked);
    // Join tokens outstanding at quarantine were burned: a release does not
    // revive them. A join token minted after the release works.
    let (li, lg) = instance_and_grant(&alpha, "jti_r0", at(205));
    assert_eq!(
        s.create_instance(&li, Some("jt-later"), &lg, attest_events(&li, "jti_r0"))
            .await
            .unwrap_err(),
        StoreError::JoinToken(JoinTokenError::Used)
    );
    join_token(s, &alpha, "jt-after-release", at(3_600)).await;
    let fresh = attest(s, &alpha, Some("jt-after-release"), "jti_r2", at(210))
        .await
        .unwrap();
    let t = start_task(s, &fresh, "jti_r3", at(211), at(800), at(3_600))
        .await
        .unwrap();
    assert!(grant(s, "jti_r3").await.is_live(at(211)));
    assert_eq!(task_of(s, &t.task_id).await.status, TaskStatus::Active);

    // Unknown agent.
    let err = s
        .set_quarantine(
            &name("ghost"),
            true,
            at(300),
            vec![ev(AuditKind::AgentQuarantine)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_chain(s).await;
}

pub async fn revoke_single_grant(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t", at(0), at(60), at(300))
        .await
        .unwrap();
    let before = audit_len(s).await;
    assert_eq!(
        s.revoke_grant(
            "jti_t",
            at(5),
            vec![ev(AuditKind::TokenRevoke).jti("jti_t")]
        )
        .await
        .unwrap(),
        Some(Revoked {
            revoked_tokens: 1,
            ended_tasks: 0
        })
    );
    assert_eq!(audit_len(s).await, before + 1);
    let g = grant(s, "jti_t").await;
    assert_eq!(g.revoked_at, Some(at(5)));
    assert!(!g.is_live(at(5)));
    // The task itself carries on, and so does the instance token.
    assert_eq!(task_of(s, &task.task_id).await.status, TaskStatus::Active);
    assert!(grant(s, "jti_inst").await.is_live(at(5)));

    // Already revoked, or unknown: false, nothing recorded.
    assert!(
        s.revoke_grant("jti_t", at(6), vec![ev(AuditKind::TokenRevoke)])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.revoke_grant("jti_nope", at(6), vec![ev(AuditKind::TokenRevoke)])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(grant(s, "jti_t").await.revoked_at, Some(at(5)));
    assert_eq!(audit_len(s).await, before + 1);
    assert_eq!(s.grant_state("jti_nope").await.unwrap(), None);

    // Ending the task counts only what was still unrevoked.
    let (_, n) = end(s, &task.task_id, TaskEnd::Completed, at(10))
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(grant(s, "jti_t").await.revoked_at, Some(at(5)));
    assert_chain(s).await;
}

// ---------------------------------------------------------------------------
// 5. Audit chain.
// ---------------------------------------------------------------------------

pub async fn audit_chain_survives_concurrent_writes(s: Arc<dyn Store>) {
    register(&*s, "taken").await;
    let before = audit_len(&*s).await;

    let mut handles = Vec::new();
    for n in 0..200u32 {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            // Every tenth writer also registers an agent, and every tenth
            // tries (and fails) to register a taken name, so successful and
            // failing jobs share group-commit batches.
            if n % 10 == 0 {
                let a = agent_record(&format!("agent-{n}"), at(i64::from(n)));
                s.create_agent(
                    &a,
                    vec![ev(AuditKind::AgentRegister).detail(serde_json::json!({ "agent": n }))],
                )
                .await
                .unwrap();
            }
            if n % 10 == 5 {
                let err = s
                    .create_agent(
                        &agent_record("taken", at(i64::from(n))),
                        vec![ev(AuditKind::AgentRegister).detail(serde_json::json!({ "dup": n }))],
                    )
                    .await
                    .unwrap_err();
                assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
            }
            let events = vec![
                AuditEvent::new(AuditKind::PolicyLoad, Outcome::Deny, "system")
                    .detail(serde_json::json!({ "n": n, "part": 0 })),
                AuditEvent::new(AuditKind::PolicyLoad, Outcome::Deny, "system")
                    .detail(serde_json::json!({ "n": n, "part": 1 })),
            ];
            s.append_audit(at(i64::from(n)), events).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }

    let n = assert_chain(&*s).await;
    assert_eq!(n as usize, before + 200 * 2 + 20);
    let records = all_audit(&*s).await;
    let mut appended = BTreeSet::new();
    let mut registered = BTreeSet::new();
    for r in &records[before..] {
        let e = r.parsed().unwrap();
        if let Some(n) = e.detail.get("n").and_then(serde_json::Value::as_u64) {
            let part = e.detail["part"].as_u64().unwrap();
            assert!(
                appended.insert((n, part)),
                "event {n}/{part} appended twice"
            );
            assert_eq!(r.ts, at(n as i64));
        } else if let Some(n) = e.detail.get("agent").and_then(serde_json::Value::as_u64) {
            registered.insert(n);
        } else {
            panic!("unexpected audit event {}", r.event);
        }
    }
    assert_eq!(appended.len(), 400);
    // The two events of one call are adjacent: a call's events are not
    // interleaved with another's.
    for w in records[before..].windows(2) {
        let (a, b) = (w[0].parsed().unwrap(), w[1].parsed().unwrap());
        if a.detail.get("part").and_then(serde_json::Value::as_u64) == Some(0) {
            assert_eq!(b.detail["n"], a.detail["n"]);
            assert_eq!(b.detail["part"], 1);
        }
    }
    assert_eq!(registered, (0..200).step_by(10).collect::<BTreeSet<u64>>());
    assert_eq!(s.list_agents().await.unwrap().len(), 21);
}

pub async fn failed_writes_append_no_audit(s: Arc<dyn Store>) {
    let s = &*s;
    let alpha = register(s, "alpha").await;
    let inst = attest(s, &alpha, None, "jti_inst", at(0)).await.unwrap();
    let task = start_task(s, &inst, "jti_t", at(0), at(60), at(300))
        .await
        .unwrap();
    end(s, &task.task_id, TaskEnd::Completed, at(1))
        .await
        .unwrap();
    let before = all_audit(s).await;

    let err = s
        .create_agent(
            &agent_record("alpha", at(2)),
            vec![ev(AuditKind::AgentRegister)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(
        attest(s, &alpha, Some("jt-none"), "jti_x1", at(2))
            .await
            .is_err()
    );
    assert!(
        attest(s, &name("ghost"), None, "jti_x2", at(2))
            .await
            .is_err()
    );
    assert!(heartbeat(s, &task, "jti_x3", at(2), at(60)).await.is_err());
    assert!(
        start_task(s, &inst, "jti_t", at(2), at(60), at(300))
            .await
            .is_err()
    );
    assert!(
        s.create_join_token(
            &name("ghost"),
            "jt",
            at(60),
            at(2),
            vec![ev(AuditKind::JoinTokenCreate)]
        )
        .await
        .is_err()
    );
    assert!(
        s.set_quarantine(
            &name("ghost"),
            true,
            at(2),
            vec![ev(AuditKind::AgentQuarantine)]
        )
        .await
        .is_err()
    );

    assert_eq!(
        all_audit(s).await,
        before,
        "a failed write appended audit records"
    );
    // And the chain carries on from the same head.
    s.append_audit(at(3), vec![ev(AuditKind::PolicyLoad)])
        .await
        .unwrap();
    let after = all_audit(s).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after.last().unwrap().prev_hash, before.last().unwrap().hash);
    assert_chain(s).await;
}

pub async fn audit_pages(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(all_audit(s).await.is_empty());
    assert_eq!(s.audit_head().await.unwrap(), 0);
    s.append_audit(at(0), vec![]).await.unwrap();
    assert!(
        all_audit(s).await.is_empty(),
        "an empty append made a record"
    );
    assert_eq!(s.audit_head().await.unwrap(), 0);
    let events: Vec<AuditEvent> = (0..10)
        .map(|i| ev(AuditKind::PolicyLoad).reason(format!("r{i}")))
        .collect();
    s.append_audit(at(1), events.clone()).await.unwrap();

    let all = all_audit(s).await;
    assert_eq!(all.len(), 10);
    assert_eq!(all[0].prev_hash, audit::GENESIS);
    for (r, e) in all.iter().zip(&events) {
        assert_eq!(r.event, e.to_canonical_json());
        assert_eq!(r.parsed().unwrap(), *e);
        assert_eq!(r.ts, at(1));
    }
    let page = s.audit_after(5, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    assert_eq!(page, all[5..8].to_vec());
    assert!(s.audit_after(10, 5).await.unwrap().is_empty());
    assert!(s.audit_after(0, 0).await.unwrap().is_empty());

    // Reading the chain page by page verifies like reading it whole.
    let mut v = audit::Verifier::default();
    let mut after = 0;
    loop {
        let page = s.audit_after(after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            v.push(r).unwrap();
        }
    }
    assert_eq!(v.head().0, 10);
    assert_eq!(v.head().1, all[9].hash);
}

/// A cursor past the end reads nothing, however large it is.
pub async fn audit_after_huge_cursor_is_empty(s: Arc<dyn Store>) {
    let s = &*s;
    s.append_audit(
        at(0),
        vec![ev(AuditKind::PolicyLoad), ev(AuditKind::PolicyLoad)],
    )
    .await
    .unwrap();
    assert!(s.audit_after(2, 10).await.unwrap().is_empty());
    for cursor in [
        u64::from(u32::MAX),
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX,
    ] {
        let page = s.audit_after(cursor, 10).await.unwrap();
        assert!(
            page.is_empty(),
            "audit_after({cursor}) returned seqs {:?}",
            page.iter().map(|r| r.seq).collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------
// 6. Durability across reopen.
// ---------------------------------------------------------------------------

pub async fn durable_across_reopen(h: &dyn Harness) {
    let s = h.open().await;
    let alpha = register(&*s, "alpha").await;
    join_token(&*s, &alpha, "jt-1", at(600)).await;
    join_token(&*s, &alpha, "jt-2", at(600)).await;
    let inst = attest(&*s, &alpha, Some("jt-1"), "jti_inst", at(1))
        .await
        .unwrap();
    let task = start_task(&*s, &inst, "jti_t", at(2), at(60), at(300))
        .await
        .unwrap();
    let done = start_task(&*s, &inst, "jti_done", at(3), at(60), at(300))
        .await
        .unwrap();
    let (done, _) = end(&*s, &done.task_id, TaskEnd::Completed, at(4))
        .await
        .unwrap();
    s.add_admin_token(
        "ops",
        "admin-hash",
        false,
        at(0),
        vec![ev(AuditKind::AdminTokenCreate)],
    )
    .await
    .unwrap();
    let agent = s.get_agent(&alpha).await.unwrap();
    let records = all_audit(&*s).await;
    let head = assert_chain(&*s).await;
    drop(s);

    let s = h.open().await;
    assert_eq!(s.get_agent(&alpha).await.unwrap(), agent);
    assert_eq!(s.get_instance(&inst.id).await.unwrap(), Some(inst.clone()));
    assert_eq!(task_of(&*s, &task.task_id).await, task);
    assert_eq!(task_of(&*s, &done.task_id).await, done);
    assert!(grant(&*s, "jti_t").await.is_live(at(5)));
    assert_eq!(grant(&*s, "jti_done").await.revoked_at, Some(at(4)));
    assert!(s.admin_token("admin-hash").await.unwrap().is_some());
    assert_eq!(all_audit(&*s).await, records);
    // Consumed join tokens stay consumed; unused ones stay usable.
    assert_eq!(
        attest(&*s, &alpha, Some("jt-1"), "jti_x", at(6))
            .await
            .unwrap_err(),
        StoreError::JoinToken(JoinTokenError::Used)
    );
    attest(&*s, &alpha, Some("jt-2"), "jti_inst2", at(6))
        .await
        .unwrap();

    // The chain continues from the stored head.
    s.append_audit(at(7), vec![ev(AuditKind::PolicyLoad)])
        .await
        .unwrap();
    let after = all_audit(&*s).await;
    let first_new = &after[records.len()];
    assert_eq!(first_new.seq, head + 1);
    assert_eq!(first_new.prev_hash, records.last().unwrap().hash);
    let head2 = assert_chain(&*s).await;
    assert_eq!(head2, head + 3);
    drop(s);

    // And once more.
    let s = h.open().await;
    assert_eq!(assert_chain(&*s).await, head2);
    s.append_audit(at(8), vec![ev(AuditKind::PolicyLoad)])
        .await
        .unwrap();
    assert_eq!(assert_chain(&*s).await, head2 + 1);
}

// ---------------------------------------------------------------------------
// 7. Tamper detection.
// ---------------------------------------------------------------------------

/// Writes a few distinguishable records and closes the store; returns them.
async fn seed_audit(h: &dyn Harness) -> Vec<AuditRecord> {
    let s = h.open().await;
    register(&*s, "alpha").await;
    for i in 0..5 {
        s.append_audit(
            at(i),
            vec![ev(AuditKind::PolicyLoad).reason(format!("load-{i}"))],
        )
        .await
        .unwrap();
    }
    let records = all_audit(&*s).await;
    assert_eq!(records.len(), 6);
    assert_chain(&*s).await;
    records
}

async fn reopened_chain(h: &dyn Harness) -> Vec<AuditRecord> {
    let s = h.open().await;
    all_audit(&*s).await
}

pub async fn audit_table_is_append_only(h: &dyn Harness) {
    let records = seed_audit(h).await;
    let upd = h
        .exec_raw("UPDATE audit SET event = '{}' WHERE seq = 2")
        .await;
    assert!(upd.is_err(), "UPDATE of the audit table succeeded: {upd:?}");
    let del = h.exec_raw("DELETE FROM audit WHERE seq = 2").await;
    assert!(
        del.is_err(),
        "DELETE from the audit table succeeded: {del:?}"
    );
    assert_eq!(reopened_chain(h).await, records);
    let s = h.open().await;
    assert_chain(&*s).await;
}

pub async fn tamper_edit_is_detected(h: &dyn Harness) {
    let records = seed_audit(h).await;
    h.drop_audit_guards().await;
    let edited = records[2].event.replace("load-1", "load-X");
    assert_ne!(edited, records[2].event);
    let n = h
        .exec_raw(&format!(
            "UPDATE audit SET event = {} WHERE seq = 3",
            sql_str(&edited)
        ))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let chain = reopened_chain(h).await;
    assert_eq!(chain[2].event, edited, "the edit did not reach the store");
    let brk = audit::verify(&chain).unwrap_err();
    assert_eq!(brk.seq, 3, "{brk}");
}

/// Rewriting a record's hash to match its edited event moves the break to
/// the next record, whose `prev_hash` no longer matches.
pub async fn tamper_edit_with_rehash_is_detected(h: &dyn Harness) {
    let records = seed_audit(h).await;
    h.drop_audit_guards().await;
    let r = &records[2];
    let edited = r.event.replace("load-1", "load-X");
    let rehash = audit::chain_hash(r.seq, r.ts, &r.prev_hash, &edited);
    let n = h
        .exec_raw(&format!(
            "UPDATE audit SET event = {}, hash = {} WHERE seq = 3",
            sql_str(&edited),
            sql_str(&rehash)
        ))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let brk = audit::verify(&reopened_chain(h).await).unwrap_err();
    assert_eq!(brk.seq, 4, "{brk}");
}

pub async fn tamper_delete_is_detected(h: &dyn Harness) {
    let records = seed_audit(h).await;
    h.drop_audit_guards().await;
    let n = h.exec_raw("DELETE FROM audit WHERE seq = 3").await.unwrap();
    assert_eq!(n, 1);
    let chain = reopened_chain(h).await;
    assert_eq!(chain.len(), records.len() - 1);
    let brk = audit::verify(&chain).unwrap_err();
    assert_eq!(brk.seq, 3, "{brk}");
}

pub async fn tamper_swap_is_detected(h: &dyn Harness) {
    let records = seed_audit(h).await;
    h.drop_audit_guards().await;
    let (a, b) = (&records[2], &records[3]);
    for (target, source) in [(a, b), (b, a)] {
        let n = h
            .exec_raw(&format!(
                "UPDATE audit SET event = {}, hash = {} WHERE seq = {}",
                sql_str(&source.event),
                sql_str(&source.hash),
                target.seq
            ))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let chain = reopened_chain(h).await;
    assert_eq!(chain[2].event, b.event);
    assert_eq!(chain[3].event, a.event);
    let brk = audit::verify(&chain).unwrap_err();
    assert_eq!(brk.seq, 3, "{brk}");
}

// ---------------------------------------------------------------------------
// Call approvals: one request through a gateway held for a person.
// ---------------------------------------------------------------------------

/// A pending call approval of `task`, requested at `requested_at` and open
/// for five minutes.
fn call_approval_record(task: &Task, path: &str, requested_at: Timestamp) -> Approval {
    Approval {
        approval_id: ApprovalId::generate().unwrap(),
        task_id: task.task_id.clone(),
        status: ApprovalStatus::Pending,
        ttl: 0,
        exception: false,
        justification: Some("needs a person".to_owned()),
        requested_at,
        expires_at: requested_at.add_secs(300),
        decided_at: None,
        reason: None,
        task: task.clone(),
        call: Some(ApprovalCall {
            tool: "github".parse::<ToolName>().unwrap(),
            agent: task.agent.clone(),
            method: "DELETE".to_owned(),
            path: path.to_owned(),
            query: String::new(),
            mcp_method: None,
            mcp_tool: None,
            arguments: None,
            window_secs: 0,
            used_at: None,
        }),
    }
}

async fn hold_call(s: &dyn Store, a: &Approval, fingerprint: &str) -> Result<(), StoreError> {
    let audit = vec![ev(AuditKind::Approval).task(&a.task_id)];
    s.create_call_approval(a, fingerprint, audit).await
}

async fn decide(
    s: &dyn Store,
    id: &ApprovalId,
    approve: bool,
    now: Timestamp,
) -> Result<Approval, StoreError> {
    let audit = vec![ev(AuditKind::Approval)];
    s.decide_approval(id, approve, "looked at it", now, audit)
        .await
}

/// An agent with one active task, for the call approval checks.
async fn agent_with_task(s: &dyn Store, n: &str) -> Task {
    let agent = register(s, n).await;
    let inst = attest(s, &agent, None, &format!("jti_{n}_i"), at(1))
        .await
        .unwrap();
    start_task(s, &inst, &format!("jti_{n}_t"), at(2), at(3_000), at(7_200))
        .await
        .unwrap()
}

/// A task waiting for its start to be approved, and that approval.
async fn pending_task(s: &dyn Store, n: &str, requested_at: Timestamp) -> (Task, Approval) {
    let agent = register(s, n).await;
    let inst = attest(s, &agent, None, &format!("jti_{n}_i"), at(1))
        .await
        .unwrap();
    let (mut task, _) = task_and_grant(&inst, "unused", requested_at, at(600), at(3_600));
    task.status = TaskStatus::PendingApproval;
    let approval = Approval {
        approval_id: ApprovalId::generate().unwrap(),
        task_id: task.task_id.clone(),
        status: ApprovalStatus::Pending,
        ttl: 3_600,
        exception: false,
        justification: None,
        requested_at,
        expires_at: requested_at.add_secs(600),
        decided_at: None,
        reason: None,
        task: task.clone(),
        call: None,
    };
    s.create_pending_task(&task, &approval, vec![ev(AuditKind::Approval)])
        .await
        .unwrap();
    (task, approval)
}

/// Call approvals are found by task and fingerprint (newest first), listed
/// beside task approvals, decided without touching their task, and used
/// once.
pub async fn call_approvals_round_trip(s: Arc<dyn Store>) {
    let s = &*s;
    let task = agent_with_task(s, "alpha").await;
    let a1 = call_approval_record(&task, "/repos/x", at(10));
    let a2 = call_approval_record(&task, "/repos/x", at(20));
    let a3 = call_approval_record(&task, "/repos/y", at(15));
    hold_call(s, &a1, "fp-x").await.unwrap();
    hold_call(s, &a2, "fp-x").await.unwrap();
    hold_call(s, &a3, "fp-y").await.unwrap();

    // Found by task and fingerprint: the newest of that fingerprint.
    assert_eq!(
        s.call_approval(&task.task_id, "fp-x").await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(
        s.call_approval(&task.task_id, "fp-y").await.unwrap(),
        Some(a3.clone())
    );
    assert_eq!(s.call_approval(&task.task_id, "fp-z").await.unwrap(), None);
    // Read back exactly as recorded, in the shared id space.
    assert_eq!(
        s.get_approval(&a1.approval_id).await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(s.pending_call_approvals(&task.task_id).await.unwrap(), 3);
    // `approval_for_task` is about task starts only.
    assert_eq!(s.approval_for_task(&task.task_id).await.unwrap(), None);

    // Refusals: no call, an unknown task, an id already taken (by either kind).
    let mut no_call = call_approval_record(&task, "/x", at(30));
    no_call.call = None;
    assert!(hold_call(s, &no_call, "fp").await.is_err());
    let mut orphan = call_approval_record(&task, "/x", at(30));
    orphan.task_id = TaskId::generate().unwrap();
    assert_eq!(
        hold_call(s, &orphan, "fp").await,
        Err(StoreError::NotFound("task"))
    );
    assert!(matches!(
        hold_call(s, &a1, "fp-x").await,
        Err(StoreError::Conflict(_))
    ));
    let (_, start) = pending_task(s, "beta", at(12)).await;
    let mut taken = call_approval_record(&task, "/x", at(30));
    taken.approval_id = start.approval_id.clone();
    assert!(matches!(
        hold_call(s, &taken, "fp").await,
        Err(StoreError::Conflict(_))
    ));

    // Both kinds listed: pending oldest first, all newest first.
    let ids = |v: Vec<Approval>| v.into_iter().map(|a| a.approval_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_approvals(true).await.unwrap()),
        vec![
            a1.approval_id.clone(),
            start.approval_id.clone(),
            a3.approval_id.clone(),
            a2.approval_id.clone()
        ]
    );
    let all = s.list_approvals(false).await.unwrap();
    assert_eq!(all.iter().filter(|a| a.call.is_some()).count(), 3);
    assert_eq!(
        ids(all),
        vec![
            a2.approval_id.clone(),
            a3.approval_id.clone(),
            start.approval_id.clone(),
            a1.approval_id.clone()
        ]
    );

    // Approve one, deny another: the task stays active either way.
    let before = audit_len(s).await;
    let approved = decide(s, &a2.approval_id, true, at(40)).await.unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_at, Some(at(40)));
    assert_eq!(approved.reason.as_deref(), Some("looked at it"));
    assert_eq!(approved.call.as_ref().unwrap().used_at, None);
    let denied = decide(s, &a3.approval_id, false, at(41)).await.unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert_eq!(task_of(s, &task.task_id).await.status, TaskStatus::Active);
    assert_eq!(audit_len(s).await, before + 2);
    assert_eq!(
        decide(s, &a2.approval_id, false, at(42)).await,
        Err(StoreError::NotActive("approval already decided"))
    );
    assert_eq!(s.pending_call_approvals(&task.task_id).await.unwrap(), 1);
    assert_eq!(
        ids(s.list_approvals(true).await.unwrap()),
        vec![a1.approval_id.clone(), start.approval_id.clone()]
    );

    // Used once: the second use, and any use of one not approved, is false.
    let used = |id: &ApprovalId, n: i64| {
        let id = id.clone();
        async move {
            s.use_call_approval(&id, at(n), vec![ev(AuditKind::ToolCall)])
                .await
                .unwrap()
        }
    };
    assert!(
        !used(&a1.approval_id, 50).await,
        "a pending approval was used"
    );
    assert!(
        !used(&a3.approval_id, 50).await,
        "a denied approval was used"
    );
    assert!(
        !used(&start.approval_id, 50).await,
        "a task approval was used"
    );
    let before = audit_len(s).await;
    assert!(used(&a2.approval_id, 51).await);
    assert!(!used(&a2.approval_id, 52).await, "used twice");
    assert_eq!(audit_len(s).await, before + 1);
    let after = s.get_approval(&a2.approval_id).await.unwrap().unwrap();
    assert_eq!(after.call.unwrap().used_at, Some(at(51)));
    // Still the newest of its fingerprint, used or not.
    let found = s
        .call_approval(&task.task_id, "fp-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.approval_id, a2.approval_id);
    assert_eq!(found.call.unwrap().used_at, Some(at(51)));
    assert_chain(s).await;
}

/// A pending call approval past its deadline cannot be decided; it is
/// listed as overdue and expires without touching its task.
pub async fn call_approvals_expire(s: Arc<dyn Store>) {
    let s = &*s;
    let task = agent_with_task(s, "alpha").await;
    let a = call_approval_record(&task, "/repos/x", at(10));
    hold_call(s, &a, "fp").await.unwrap();
    let (_, start) = pending_task(s, "beta", at(20)).await;
    let deadline = a.expires_at;
    assert!(
        s.overdue_approvals(deadline.add_secs(-1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !s.expire_approval(&a.approval_id, deadline.add_secs(-1), vec![])
            .await
            .unwrap()
    );
    assert_eq!(
        decide(s, &a.approval_id, true, deadline).await,
        Err(StoreError::NotActive("approval expired"))
    );
    // Both kinds are overdue, earliest deadline first.
    assert_eq!(
        s.overdue_approvals(start.expires_at, 10).await.unwrap(),
        vec![a.approval_id.clone(), start.approval_id.clone()]
    );
    assert_eq!(
        s.overdue_approvals(start.expires_at, 1).await.unwrap(),
        vec![a.approval_id.clone()]
    );
    let before = audit_len(s).await;
    assert!(
        s.expire_approval(&a.approval_id, deadline, vec![ev(AuditKind::Approval)])
            .await
            .unwrap()
    );
    assert!(
        !s.expire_approval(&a.approval_id, deadline, vec![ev(AuditKind::Approval)])
            .await
            .unwrap()
    );
    assert_eq!(audit_len(s).await, before + 1);
    let expired = s.get_approval(&a.approval_id).await.unwrap().unwrap();
    assert_eq!(expired.status, ApprovalStatus::Expired);
    assert_eq!(expired.decided_at, Some(deadline));
    assert_eq!(task_of(s, &task.task_id).await.status, TaskStatus::Active);
    assert_eq!(s.pending_call_approvals(&task.task_id).await.unwrap(), 0);
    assert!(
        !s.use_call_approval(&a.approval_id, deadline, vec![])
            .await
            .unwrap()
    );
    assert_eq!(
        decide(s, &a.approval_id, true, deadline).await,
        Err(StoreError::NotActive("approval already decided"))
    );
    assert_eq!(
        s.overdue_approvals(start.expires_at, 10).await.unwrap(),
        vec![start.approval_id.clone()]
    );
    assert_chain(s).await;
}

/// Of many callers racing to use one once-only approval, exactly one wins.
pub async fn call_approval_is_used_once_under_race(s: Arc<dyn Store>) {
    let task = agent_with_task(&*s, "alpha").await;
    let a = call_approval_record(&task, "/repos/x", at(10));
    hold_call(&*s, &a, "fp").await.unwrap();
    decide(&*s, &a.approval_id, true, at(11)).await.unwrap();
    let before = audit_len(&*s).await;
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let (s, id) = (Arc::clone(&s), a.approval_id.clone());
            tokio::spawn(async move {
                s.use_call_approval(&id, at(20 + i), vec![ev(AuditKind::ToolCall)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        wins += usize::from(r.await.unwrap());
    }
    assert_eq!(wins, 1, "{wins} callers used a once-only approval");
    assert_eq!(audit_len(&*s).await, before + 1);
    assert_chain(&*s).await;
}

/// Quarantining an agent expires its pending call approvals (not decided
/// ones), and no new one can be opened for it.
pub async fn quarantine_expires_pending_call_approvals(s: Arc<dyn Store>) {
    let s = &*s;
    let task = agent_with_task(s, "alpha").await;
    let other = agent_with_task(s, "beta").await;
    let p1 = call_approval_record(&task, "/a", at(10));
    let p2 = call_approval_record(&task, "/b", at(11));
    let ok = call_approval_record(&task, "/c", at(12));
    let theirs = call_approval_record(&other, "/a", at(13));
    for (a, fp) in [(&p1, "fp1"), (&p2, "fp2"), (&ok, "fp3"), (&theirs, "fp1")] {
        hold_call(s, a, fp).await.unwrap();
    }
    decide(s, &ok.approval_id, true, at(20)).await.unwrap();
    s.set_quarantine(
        &task.agent,
        true,
        at(30),
        vec![ev(AuditKind::AgentQuarantine)],
    )
    .await
    .unwrap();
    for p in [&p1, &p2] {
        let a = s.get_approval(&p.approval_id).await.unwrap().unwrap();
        assert_eq!(a.status, ApprovalStatus::Expired);
        assert_eq!(a.reason.as_deref(), Some("agent quarantined"));
        assert_eq!(a.decided_at, Some(at(30)));
        assert_eq!(
            decide(s, &p.approval_id, true, at(31)).await,
            Err(StoreError::NotActive("approval already decided"))
        );
    }
    let a = s.get_approval(&ok.approval_id).await.unwrap().unwrap();
    assert_eq!(a.status, ApprovalStatus::Approved);
    assert_eq!(s.pending_call_approvals(&task.task_id).await.unwrap(), 0);
    // Another agent's are untouched.
    assert_eq!(s.pending_call_approvals(&other.task_id).await.unwrap(), 1);
    let late = call_approval_record(&task, "/d", at(32));
    assert_eq!(
        hold_call(s, &late, "fp4").await,
        Err(StoreError::Quarantined)
    );
    assert_chain(s).await;
}

// ---------------------------------------------------------------------------
// Behaviour: refusals counted per agent.
// ---------------------------------------------------------------------------

/// Refusals are counted in 10-second buckets, per agent, kept for an hour,
/// and forgotten on request. None of it is audited by the store.
pub async fn denials_are_counted_in_buckets(s: Arc<dyn Store>) {
    let s = &*s;
    let (a, b) = (name("alpha"), name("beta"));
    let before = audit_len(s).await;
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 0);
    assert!(s.denial_counts(at(0)).await.unwrap().is_empty());
    // T0 is a multiple of 10 s: 0..10 is one bucket, 10..20 the next.
    for t in [
        at(1),
        at(5),
        Timestamp::from_millis(at(10).millis() - 1),
        at(12),
    ] {
        s.record_denial(&a, t).await.unwrap();
    }
    s.record_denial(&b, at(3)).await.unwrap();
    s.record_denial(&b, at(25)).await.unwrap();
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 4);
    // `since` is rounded down to its bucket.
    assert_eq!(s.denials_since(&a, at(9)).await.unwrap(), 4);
    assert_eq!(s.denials_since(&a, at(10)).await.unwrap(), 1);
    assert_eq!(s.denials_since(&a, at(19)).await.unwrap(), 1);
    assert_eq!(s.denials_since(&a, at(20)).await.unwrap(), 0);
    assert_eq!(s.denials_since(&a, at(-300)).await.unwrap(), 4);
    assert_eq!(s.denials_since(&name("gamma"), at(0)).await.unwrap(), 0);
    assert_eq!(
        s.denial_counts(at(0)).await.unwrap(),
        vec![(a.clone(), 4), (b.clone(), 2)]
    );
    assert_eq!(
        s.denial_counts(at(15)).await.unwrap(),
        vec![(a.clone(), 1), (b.clone(), 1)]
    );
    assert_eq!(s.denial_counts(at(20)).await.unwrap(), vec![(b.clone(), 1)]);

    // An hour on, the agent's old buckets are gone; another agent's stay.
    s.record_denial(&a, at(3_615)).await.unwrap();
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 2);
    s.record_denial(&a, at(3_625)).await.unwrap();
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 2);
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 2);

    s.clear_denials(&b, at(3_630)).await.unwrap();
    s.clear_denials(&name("gamma"), at(3_630)).await.unwrap();
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 0);
    assert_eq!(s.denial_counts(at(0)).await.unwrap(), vec![(a.clone(), 2)]);
    // A refusal made before the release, recorded after it (a gateway's,
    // delivered late), is forgiven with the rest; one made after counts.
    s.record_denial(&b, at(3_629)).await.unwrap();
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 0);
    s.record_denial(&b, at(3_631)).await.unwrap();
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 1);
    // An earlier release does not move the line back.
    s.clear_denials(&b, at(3_000)).await.unwrap();
    s.record_denial(&b, at(3_100)).await.unwrap();
    assert_eq!(s.denials_since(&b, at(0)).await.unwrap(), 0);
    assert_eq!(audit_len(s).await, before);
}

/// Many refusals at once all count, in a bounded number of rows.
pub async fn denials_under_concurrent_load(s: Arc<dyn Store>) {
    let a = name("alpha");
    let writers: Vec<_> = (0..200i64)
        .map(|i| {
            let (s, a) = (Arc::clone(&s), a.clone());
            tokio::spawn(async move { s.record_denial(&a, at(i % 30)).await.unwrap() })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 200);
    assert_eq!(s.denials_since(&a, at(20)).await.unwrap(), 60);
}

/// A gateway's refusals count against the agents they name, once each,
/// however often the batch is delivered.
pub async fn gateway_refusals_count_once(s: Arc<dyn Store>) {
    let s = &*s;
    s.create_gateway("gw-1", "hash-1", at(1), vec![])
        .await
        .unwrap();
    let call = |outcome: Outcome, agent: Option<&str>| {
        let e = AuditEvent::new(AuditKind::ToolCall, outcome, "gateway:gw-1");
        match agent {
            Some(a) => e.agent(a),
            None => e,
        }
    };
    let batch = vec![
        call(Outcome::Deny, Some("alpha")),
        call(Outcome::Success, Some("alpha")),
        call(Outcome::Deny, None),
        call(Outcome::Deny, Some("beta")),
        // Not an agent name: recorded in the audit, never counted.
        call(Outcome::Deny, Some("Not An Agent")),
        // Held for a person's approval: refused for now, not counted.
        call(Outcome::Deny, Some("beta")).detail(serde_json::json!({"held": true})),
    ];
    let (a, b) = (name("alpha"), name("beta"));
    assert_eq!(
        s.append_gateway_decisions("gw-1", 1, batch.clone(), at(100))
            .await
            .unwrap(),
        6
    );
    let counts = || async { s.denial_counts(at(0)).await.unwrap() };
    assert_eq!(counts().await, vec![(a.clone(), 1), (b.clone(), 1)]);
    // Redelivered whole: nothing new is counted.
    assert_eq!(
        s.append_gateway_decisions("gw-1", 1, batch.clone(), at(110))
            .await
            .unwrap(),
        6
    );
    assert_eq!(counts().await, vec![(a.clone(), 1), (b.clone(), 1)]);
    // Partly redelivered: only 7 and 8 are new.
    let mut more = batch[3..].to_vec();
    more.push(call(Outcome::Deny, Some("alpha")));
    more.push(call(Outcome::Deny, Some("alpha")));
    assert_eq!(
        s.append_gateway_decisions("gw-1", 4, more, at(120))
            .await
            .unwrap(),
        8
    );
    assert_eq!(counts().await, vec![(a.clone(), 3), (b.clone(), 1)]);
    // Counted at the time they were appended.
    assert_eq!(s.denials_since(&a, at(120)).await.unwrap(), 2);
    // A refused batch (a gap) counts nothing.
    assert!(
        s.append_gateway_decisions(
            "gw-1",
            10,
            vec![call(Outcome::Deny, Some("alpha"))],
            at(130)
        )
        .await
        .is_err()
    );
    assert_eq!(s.denials_since(&a, at(0)).await.unwrap(), 3);
    assert_chain(s).await;
}

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
                audit_checkpoints_are_kept_once_per_record,
                signing_keys_rotate_atomically,
                tools_create_get_list,
                h11_tools_keep_the_gateway_that_serves_them,
                tool_secrets_set_replace_list,
                gateway_decisions_are_recorded_once,
                call_approvals_round_trip,
                call_approvals_expire,
                call_approval_is_used_once_under_race,
                quarantine_expires_pending_call_approvals,
                denials_are_counted_in_buckets,
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
                quarantine_revokes_everything_and_release_restores,
                revoke_single_grant,
                delegation_tree_ends_as_one,
                quarantine_cascades_into_delegated_tasks,
                h12_revoking_an_instance_token_ends_the_instance_and_its_tasks,
                audit_chain_survives_concurrent_writes,
                failed_writes_append_no_audit,
                audit_pages,
                audit_after_huge_cursor_is_empty,
            ];
            harness: [
                durable_across_reopen,
                audit_table_is_append_only,
                tamper_edit_is_detected,
                tamper_edit_with_rehash_is_detected,
                tamper_delete_is_detected,
                tamper_swap_is_detected,
            ];
        }
    };
}

mod sqlite {
    use std::path::PathBuf;
    use std::sync::Arc;

    use async_trait::async_trait;
    use writ_store::SqlStore;
    use writ_store::prelude::*;

    pub struct SqliteHarness {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl SqliteHarness {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("writ.db");
            Self { _dir: dir, path }
        }

        fn raw(&self) -> rusqlite::Connection {
            rusqlite::Connection::open(&self.path).unwrap()
        }
    }

    #[async_trait]
    impl super::Harness for SqliteHarness {
        /// Opens a new store on the harness's file.
        async fn open(&self) -> Arc<dyn Store> {
            Arc::new(SqlStore::open_sqlite(&self.path).unwrap())
        }

        async fn exec_raw(&self, sql: &str) -> Result<u64, String> {
            self.raw()
                .execute(sql, [])
                .map(|n| n as u64)
                .map_err(|e| e.to_string())
        }

        async fn drop_audit_guards(&self) {
            self.raw()
                .execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
                .unwrap();
        }
    }

    const CLOSE_RACE_CHILD: &str = "WRIT_STORE_CLOSE_RACE_CHILD";
    const ROUNDS: i64 = 200;

    /// Opens, uses and drops `SqlStore`s in a loop on a few threads.
    fn close_race_child() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = dir.path().join(format!("close-race-{t}.db"));
                let handle = rt.handle().clone();
                std::thread::spawn(move || {
                    for i in 0..ROUNDS {
                        let store = SqlStore::open_sqlite(&path).unwrap();
                        handle.block_on(async {
                            store
                                .append_audit(
                                    super::at(i),
                                    vec![super::ev(super::AuditKind::PolicyLoad)],
                                )
                                .await
                                .unwrap();
                            store.audit_after(0, 1).await.unwrap();
                        });
                        drop(store);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// Dropping a `SqlStore` must never hang. Today the drop closes the
    /// reader connections on the dropping thread while the writer thread
    /// closes the writer connection in the background (possibly while the
    /// next store on the same file is opening); with the bundled SQLite
    /// 3.51.1 that is an ABBA deadlock in the unix VFS (`unixClose` holds
    /// the global VFS mutex and waits for the inode mutex; `sqlite3WalClose`
    /// -> `unixLock` -> `unixIsSharingShmNode` holds the inode mutex and
    /// waits for the global one), after which every SQLite call in the
    /// process hangs. Fixed in SQLite 3.51.2. Runs in a child process so a
    /// hang cannot take the other checks with it.
    #[test]
    fn store_drop_does_not_deadlock() {
        if std::env::var_os(CLOSE_RACE_CHILD).is_some() {
            close_race_child();
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite::store_drop_does_not_deadlock",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CLOSE_RACE_CHILD, "1")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("opening and dropping SqlStores hung (SQLite unix-VFS close deadlock)");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(status.success(), "close-race child failed: {status}");
    }

    every_check!(Some(SqliteHarness::new()));
}

/// The same suite against a real PostgreSQL server: one fresh database per
/// test on the server named by `WRIT_TEST_POSTGRES` (a superuser URL;
/// `scripts/postgres.sh` starts one, and `scripts/test.sh` always sets it).
/// Without it the PostgreSQL checks are skipped, except under CI, where
/// they fail.
mod postgres {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;
    use writ_store::SqlStore;
    use writ_store::prelude::*;

    pub struct PgHarness {
        admin: String,
        url: String,
        db: String,
    }

    /// Runs blocking client work off the async threads.
    fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    fn client(url: &str) -> ::postgres::Client {
        ::postgres::Client::connect(url, ::postgres::NoTls).unwrap()
    }

    /// `url` with its database replaced by `db`.
    pub fn with_db(url: &str, db: &str) -> String {
        let (base, _) = url.rsplit_once('/').unwrap();
        format!("{base}/{db}")
    }

    /// A fresh, empty database on the test server, or `None` to skip.
    pub fn fresh_database() -> Option<(String, String, String)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Ok(admin) = std::env::var("WRIT_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "WRIT_TEST_POSTGRES is not set: CI must run the PostgreSQL checks"
            );
            eprintln!(
                "skipped: WRIT_TEST_POSTGRES is not set (scripts/postgres.sh starts a server)"
            );
            return None;
        };
        let db = format!(
            "writ_t{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .unwrap()
                .subsec_nanos()
        );
        let (a, d) = (admin.clone(), db.clone());
        blocking(move || {
            client(&a)
                .batch_execute(&format!("CREATE DATABASE {d}"))
                .unwrap()
        });
        let url = with_db(&admin, &db);
        Some((admin, url, db))
    }

    impl PgHarness {
        pub fn new() -> Option<Self> {
            let (admin, url, db) = fresh_database()?;
            Some(Self { admin, url, db })
        }
    }

    impl Drop for PgHarness {
        fn drop(&mut self) {
            let (admin, db) = (self.admin.clone(), self.db.clone());
            blocking(move || {
                let _ = client(&admin)
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
            });
        }
    }

    #[async_trait]
    impl super::Harness for PgHarness {
        async fn open(&self) -> Arc<dyn Store> {
            Arc::new(SqlStore::connect_postgres(&self.url).await.unwrap())
        }

        async fn exec_raw(&self, sql: &str) -> Result<u64, String> {
            let (url, sql) = (self.url.clone(), sql.to_owned());
            blocking(move || {
                client(&url)
                    .execute(sql.as_str(), &[])
                    .map_err(|e| e.to_string())
            })
        }

        async fn drop_audit_guards(&self) {
            let url = self.url.clone();
            blocking(move || {
                client(&url)
                    .batch_execute(
                        "DROP TRIGGER audit_no_update ON audit; DROP TRIGGER audit_no_truncate ON audit;",
                    )
                    .unwrap();
            });
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn s6_postgres_commits_are_synchronous() {
        let Some(h) = PgHarness::new() else { return };
        let store = SqlStore::connect_postgres(&h.url).await.unwrap();
        assert!(store.durable_commits().await.unwrap());
    }

    /// A write whose wait for the writers' lock is cancelled (a statement
    /// or lock timeout, an operator's `pg_cancel_backend`) fails alone: the
    /// next write goes through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_cancelled_lock_wait_does_not_wedge_the_writer() {
        let Some(h) = PgHarness::new() else { return };
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect_postgres(&h.url).await.unwrap());
        let e = || vec![super::ev(super::AuditKind::PolicyLoad)];
        store.append_audit(super::at(0), e()).await.unwrap();

        // Another session holds the writers' lock.
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let url = h.url.clone();
        let holder = std::thread::spawn(move || {
            let mut c = client(&url);
            let mut tx = c.transaction().unwrap();
            tx.batch_execute("SELECT pg_advisory_xact_lock(2003986804)")
                .unwrap();
            held_tx.send(()).unwrap();
            hold_rx.recv().unwrap();
            tx.commit().unwrap();
        });
        held_rx.recv().unwrap();
        let waiting = {
            let s = Arc::clone(&store);
            tokio::spawn(async move { s.append_audit(super::at(1), e()).await })
        };
        // Cancel the writer's wait once it is waiting.
        let url = h.url.clone();
        blocking(move || {
            let mut c = client(&url);
            for _ in 0..200 {
                let rows = c
                    .query(
                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = 'writ' AND wait_event_type = 'Lock'",
                        &[],
                    )
                    .unwrap();
                if !rows.is_empty() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            panic!("the writer never waited for the lock");
        });
        assert!(
            waiting.await.unwrap().is_err(),
            "the cancelled write succeeded"
        );
        hold_tx.send(()).unwrap();
        holder.join().unwrap();
        store
            .append_audit(super::at(2), vec![super::ev(super::AuditKind::PolicyLoad)])
            .await
            .expect("the writer is wedged after a cancelled lock wait");
        assert_eq!(super::assert_chain(&*store).await, 2);
    }

    /// Two stores on one database (two broker replicas) writing at once
    /// extend one chain, and each hears of the other's revocations.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_share_one_chain_and_announce_revocations() {
        use writ_store::Change;
        let Some(h) = PgHarness::new() else { return };
        let a: Arc<dyn Store> = Arc::new(SqlStore::connect_postgres(&h.url).await.unwrap());
        let b: Arc<dyn Store> = Arc::new(SqlStore::connect_postgres(&h.url).await.unwrap());
        let mut heard_by_b = b.changes().expect("a shared store announces changes");

        let mut writers = Vec::new();
        for n in 0..100u32 {
            let s = Arc::clone(if n % 2 == 0 { &a } else { &b });
            writers.push(tokio::spawn(async move {
                let e =
                    super::ev(super::AuditKind::PolicyLoad).detail(serde_json::json!({ "n": n }));
                s.append_audit(super::at(i64::from(n)), vec![e.clone(), e])
                    .await
                    .unwrap();
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(super::assert_chain(&*a).await, 200);
        assert_eq!(super::assert_chain(&*b).await, 200);

        // A grant revoked through A reaches B's feed and B's listener.
        let agent = super::register(&*a, "shared").await;
        super::attest(&*a, &agent, None, "jti-shared", super::at(1))
            .await
            .unwrap();
        assert!(
            a.revoke_grant("jti-shared", super::at(5), vec![])
                .await
                .unwrap()
                .is_some()
        );
        let change = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match heard_by_b.recv().await.unwrap() {
                    Change::Revocations => break,
                    _ => continue,
                }
            }
        })
        .await;
        assert!(change.is_ok(), "B never heard of the revocation");
        let feed = b.revocations_after(0, 100).await.unwrap();
        assert!(feed.iter().any(|r| r.jti == "jti-shared"), "{feed:?}");
    }

    every_check!(PgHarness::new());
}

/// A revoked grant never becomes active again, whatever follows: heartbeats,
/// new tasks, quarantine and release, ending, revoking again, time passing.
mod revoked_stays_revoked {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Heartbeat,
        NewTask,
        Quarantine,
        Release,
        End,
        RevokeAgain,
        Wait(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Heartbeat),
            Just(Op::NewTask),
            Just(Op::Quarantine),
            Just(Op::Release),
            Just(Op::End),
            Just(Op::RevokeAgain),
            (1..200i64).prop_map(Op::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn a_revoked_grant_is_never_live_again(ops in prop::collection::vec(op(), 1..12)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store: Arc<dyn Store> = Arc::new(writ_store::SqlStore::open_sqlite(&dir.path().join("p.db")).unwrap());
                let s = &*store;
                let alpha = register(s, "alpha").await;
                let inst = attest(s, &alpha, None, "jti_i", at(1)).await.unwrap();
                let task = start_task(s, &inst, "jti_t", at(2), at(600), at(3_600)).await.unwrap();
                assert!(s.revoke_grant("jti_t", at(3), vec![ev(AuditKind::TokenRevoke)]).await.unwrap().is_some());
                let mut now = 3;
                for (n, op) in ops.iter().enumerate() {
                    now += 1;
                    let jti = format!("jti_op{n}");
                    match op {
                        Op::Heartbeat => {
                            let _ = heartbeat(s, &task, &jti, at(now), at(now + 120)).await;
                        }
                        Op::NewTask => {
                            let _ = start_task(s, &inst, &jti, at(now), at(now + 120), at(now + 3_600)).await;
                        }
                        Op::Quarantine => {
                            let _ = s.set_quarantine(&alpha, true, at(now), vec![ev(AuditKind::AgentQuarantine)]).await;
                        }
                        Op::Release => {
                            let _ = s.set_quarantine(&alpha, false, at(now), vec![ev(AuditKind::AgentRelease)]).await;
                        }
                        Op::End => {
                            let _ = end(s, &task.task_id, TaskEnd::Completed, at(now)).await;
                        }
                        Op::RevokeAgain => {
                            let again = s.revoke_grant("jti_t", at(now), vec![ev(AuditKind::TokenRevoke)]).await.unwrap();
                            assert!(again.is_none(), "a revoked grant was revoked twice");
                        }
                        Op::Wait(secs) => now += secs,
                    }
                    let g = grant(s, "jti_t").await;
                    assert!(g.revoked_at.is_some());
                    assert!(!g.is_live(at(now)), "revoked grant live again after {op:?}");
                }
            });
        }
    }
}
