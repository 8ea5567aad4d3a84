//! One trait per aggregate of the store (keys and credentials, agents,
//! gateways, OAuth clients, nodes, leases, tasks, approvals, behaviour,
//! rules, policies, audit), and the few records only they use. [`Store`]
//! is all of them at once.
//!
//! [`Store`]: crate::Store

use async_trait::async_trait;
use writ_core::api::AdminCredential;
use writ_core::api::{Agent, Approval, Node, Task, Tool};
use writ_core::audit::{AuditEvent, AuditRecord};
use writ_core::{AgentName, ApprovalId, InstanceId, TaskId, Timestamp, ToolName};

use crate::{
    Change, DbLease, Ended, Grant, GrantState, Instance, JoinTokenState, LiveCounts,
    QuarantineOutcome, Result, Revoked, SealedValue, StoredKey, StoredSecret, StoredSpiffeKey,
    TaskEnd,
};

/// Admin credentials and the broker's signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The admin credential whose secret hashes to `hash`.
    async fn admin_token(&self, hash: &str) -> Result<Option<AdminCredential>>;
    /// Every admin credential, by name.
    async fn admin_tokens(&self) -> Result<Vec<AdminCredential>>;
    /// The console sessions live at `now` (names and roles, never their
    /// secrets), each marked `console_session`.
    async fn console_sessions(
        &self,
        now: Timestamp,
    ) -> Result<Vec<writ_core::api::AdminCredential>>;
    /// Credentials of role `admin` not made by a dev start.
    async fn admin_token_count(&self) -> Result<u64>;
    /// Adds the admin credential `name` (a [`StoreError::Conflict`] if the
    /// name is taken). A dev credential replaces every other dev one (and
    /// ends their console sessions): a dev start leaves one behind, not
    /// one per start.
    async fn add_admin_token(
        &self,
        name: &str,
        hash: &str,
        role: writ_core::api::Role,
        dev: bool,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Adds a single sign-on session: the operator credential `name` of
    /// `role`, refused from `expires_at` on. It replaces an earlier session
    /// of the same name (and every ended one) and ends the console
    /// sessions of the name; a [`StoreError::Conflict`]
    /// if a credential that is not a session has the name.
    async fn add_operator_session(
        &self,
        name: &str,
        hash: &str,
        role: writ_core::api::Role,
        expires_at: Timestamp,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Records that the identity token `key` (a hash naming it) signed an
    /// operator in, remembered until `expires_at`: `false` if it did
    /// before (a replay).
    async fn use_identity_token(
        &self,
        key: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool>;
    /// Forgets the identity tokens remembered until before `now` (they
    /// are refused as stale by then); returns how many.
    async fn prune_identity_tokens(&self, now: Timestamp) -> Result<u64>;
    /// Adds a console session: a secret hashing to `hash` that stands for
    /// the operator credential `session.name` of `session.role` until
    /// `session.expires_at` (the sessions of a name end with its
    /// credential's revocation or rotation); `session.dev` when a dev
    /// start made that credential (so the session, too, counts only on a
    /// dev start); made at `session.created_at`. Ended sessions are swept
    /// away. [`Self::admin_token`] finds a session by its hash as it finds
    /// a credential. A session without an end ends at once.
    async fn add_console_session(
        &self,
        session: &writ_core::api::AdminCredential,
        hash: &str,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Ends the console session hashing to `hash` (sign-out), or the
    /// single sign-on session hashing to it: `false` if there is none. It
    /// ends exactly the session with that secret, in whichever table it
    /// is; a credential without an end is never touched.
    async fn end_console_session(
        &self,
        hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool>;
    /// Replaces the secret of the credential `name` with one hashing to
    /// `hash`: the old secret is refused from the commit on, and the
    /// console sessions of the name end. `false` if there is no such
    /// credential (its console sessions, if any, end all the same).
    async fn rotate_admin_token(
        &self,
        name: &str,
        hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool>;
    /// Removes the admin credential `name` and ends the console sessions
    /// of the name (even when no credential has it): `false` if there was
    /// neither; a
    /// [`StoreError::LastAdminCredential`] if it is the last one of role
    /// `admin` not made by a dev start (the deployment would have no way in).
    async fn revoke_admin_token(
        &self,
        name: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool>;
    async fn signing_keys(&self) -> Result<Vec<StoredKey>>;
    /// Adds a key and retires every other unretired key at `now`.
    async fn add_signing_key(
        &self,
        key: StoredKey,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Every value sealed under the master key: signing keys, SPIFFE
    /// authority keys, tool secrets.
    async fn sealed_values(&self) -> Result<Vec<SealedValue>>;
    /// Replaces sealed values (a master-key rotation), all or none: a
    /// [`StoreError::Conflict`] if one of them no longer exists.
    async fn reseal(
        &self,
        values: Vec<SealedValue>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
}

/// Agents (with their join tokens and quarantine) and tools (with their upstream secrets).
#[async_trait]
pub trait AgentStore: Send + Sync {
    async fn create_agent(&self, agent: &Agent, audit: Vec<AuditEvent>) -> Result<()>;
    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>>;
    async fn list_agents(&self) -> Result<Vec<Agent>>;
    /// Replaces an agent's attestation, attributes and workload (its name,
    /// SPIFFE ID and quarantine stay). [`StoreError::NotFound`] if there is
    /// no such live agent.
    async fn update_agent(
        &self,
        agent: &Agent,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Deletes an agent: every live grant, instance, join token and task of
    /// it ends at once, as in quarantine, and it is gone from every listing.
    /// Its name stays reserved (the audit keeps naming it).
    async fn delete_agent(
        &self,
        name: &AgentName,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<QuarantineOutcome>;
    /// Replaces a tool's scopes, attributes and upstream (its name, audience
    /// and gateway stay). Tasks that declared a scope in `removed` end (and
    /// every grant under them dies).
    async fn update_tool(
        &self,
        tool: &Tool,
        removed: Vec<writ_core::Scope>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<QuarantineOutcome>;
    /// Deletes a tool: every task that declared it ends (and every grant
    /// under them dies), its upstream secret is dropped, and it is gone from
    /// every listing. Its name stays reserved.
    async fn delete_tool(
        &self,
        name: &ToolName,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<QuarantineOutcome>;
    /// Quarantine (revoking every live grant, instance and task of the agent
    /// at once, and expiring its pending approvals of both kinds) or release
    /// an agent.
    async fn set_quarantine(
        &self,
        name: &AgentName,
        quarantined: bool,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<QuarantineOutcome>;
    async fn create_join_token(
        &self,
        agent: &AgentName,
        hash: &str,
        expires_at: Timestamp,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// A join token (by its hash) as it stands, read without consuming it:
    /// what an attestation checks before it does anything else.
    /// Attestation consumes it with [`TaskStore::create_instance`], which
    /// checks it again in its own transaction.
    async fn join_token(&self, hash: &str) -> Result<Option<JoinTokenState>>;
    async fn create_tool(&self, tool: &Tool, audit: Vec<AuditEvent>) -> Result<()>;
    async fn get_tool(&self, name: &ToolName) -> Result<Option<Tool>>;
    async fn list_tools(&self) -> Result<Vec<Tool>>;
    /// Sets (or replaces) a tool's upstream secret, sealed by the caller.
    /// `NotFound` for an unknown tool.
    async fn set_tool_secret(
        &self,
        tool: &ToolName,
        header: &str,
        sealed: Vec<u8>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    async fn tool_secrets(&self) -> Result<Vec<StoredSecret>>;
    /// Binds a tool to the gateway that serves it (`None`: the embedded
    /// one); `NotFound` for an unknown tool.
    async fn set_tool_gateway(
        &self,
        tool: &ToolName,
        gateway: Option<&str>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
}

/// Gateway credentials and the decisions gateways deliver.
#[async_trait]
pub trait GatewayStore: Send + Sync {
    /// A gateway credential (by the hash of its token).
    async fn create_gateway(
        &self,
        name: &str,
        token_hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// The gateway a live (not revoked) credential belongs to.
    async fn gateway_by_token(&self, token_hash: &str) -> Result<Option<String>>;
    /// Whether gateway `name` is registered and not revoked.
    async fn gateway_live(&self, name: &str) -> Result<bool>;
    /// Revokes a gateway's credential; `NotFound` for an unknown gateway.
    async fn revoke_gateway(
        &self,
        name: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Appends a gateway's decisions numbered from `first_seq`, skipping the
    /// ones already held; returns the highest number held. A batch that
    /// would leave a gap is a `Conflict`. Each newly held refusal that
    /// names an agent counts against it at `now` (see
    /// [`Store::record_denial`]).
    async fn append_gateway_decisions(
        &self,
        gateway: &str,
        first_seq: u64,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<u64>;
}

/// An OAuth client of introspection and revocation (a resource server or
/// a gateway), as stored: never its secret, only the secret's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    /// SHA-256 of its secret (`client_secret_basic`), hex.
    pub secret_hash: Option<String>,
    /// Its public JWKS, JSON (`private_key_jwt`).
    pub jwks: Option<String>,
    /// The audiences whose tokens it may revoke.
    pub audiences: Vec<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// OAuth clients, the client assertions they used, and the keys gateways
/// sign transaction tokens with.
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Adds a client; a `Conflict` if its id is taken.
    async fn create_client(
        &self,
        client: OAuthClient,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// A client by id, revoked or not.
    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>>;
    /// Every client, by id.
    async fn clients(&self) -> Result<Vec<OAuthClient>>;
    /// Revokes a client; `NotFound` for an unknown one.
    async fn revoke_client(
        &self,
        client_id: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Records that `client_id` used the assertion `jti`, valid until
    /// `expires_at`: `false` if it was used before (a replay). Forgets
    /// assertions expired at `now`.
    async fn use_client_assertion(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool>;
    /// Publishes a gateway's transaction-token key (a public JWK, JSON):
    /// the gateway's older keys but the newest one before it are dropped.
    async fn put_gateway_key(
        &self,
        gateway: &str,
        kid: &str,
        jwk: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// The published transaction-token keys (public JWKs, JSON) of every
    /// gateway whose credential is live.
    async fn gateway_keys(&self) -> Result<Vec<String>>;
}

/// SPIFFE: nodes and the trust domain's keys.
#[async_trait]
pub trait NodeStore: Send + Sync {
    async fn create_node(&self, node: &Node, audit: Vec<AuditEvent>) -> Result<()>;
    async fn get_node(&self, name: &str) -> Result<Option<Node>>;
    async fn list_nodes(&self) -> Result<Vec<Node>>;
    /// Quarantines (also revoking its credential and outstanding join
    /// tokens) or releases a node; `NotFound` for an unknown one.
    async fn set_node_quarantine(
        &self,
        name: &str,
        quarantined: bool,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    async fn create_node_join_token(
        &self,
        node: &str,
        hash: &str,
        expires_at: Timestamp,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Consumes a node join token (exactly once) and makes `token_hash` the
    /// node's credential, replacing any earlier one.
    async fn attest_node(
        &self,
        node: &str,
        join_hash: &str,
        token_hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// The node a live credential belongs to (a quarantined node has none).
    async fn node_by_token(&self, token_hash: &str) -> Result<Option<Node>>;
    async fn spiffe_keys(&self) -> Result<Vec<StoredSpiffeKey>>;
    async fn add_spiffe_key(
        &self,
        key: StoredSpiffeKey,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
}

/// Dynamic database credentials (roles leased to tasks).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Records a role about to be created for an active task; refused with
    /// `NotActive` if the task ended (or lapsed) first, and with `Conflict`
    /// when the task already holds `max_live` roles.
    async fn create_db_lease(
        &self,
        lease: &DbLease,
        max_live: u32,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Records that the lease's role now exists; `NotActive` if its task
    /// ended meanwhile (the caller then drops the role itself).
    async fn confirm_db_lease(
        &self,
        role: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// Leases whose role must go, oldest first: not dropped yet, not to be
    /// retried before `now`, and either confirmed with their task no longer
    /// active or their end reached, or never confirmed and recorded before
    /// `unconfirmed_before` (their creation failed or was cut short).
    async fn overdue_db_leases(
        &self,
        now: Timestamp,
        unconfirmed_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<DbLease>>;
    /// Puts a lease whose role could not be dropped back until `at`.
    async fn retry_db_lease(&self, role: &str, at: Timestamp) -> Result<()>;
    /// Marks a lease's role dropped; `false` if it already was (another
    /// replica dropped it first).
    async fn db_lease_dropped(
        &self,
        role: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool>;
}

/// Instances, tasks and the grants issued under them.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// What is live at `now`, for the metrics' gauges: active tasks,
    /// grants neither revoked nor expired, approvals pending.
    async fn live_counts(&self, now: Timestamp) -> Result<LiveCounts>;
    /// Records an attested instance and its token. With a join token hash,
    /// the join token is consumed in the same transaction (exactly once).
    async fn create_instance(
        &self,
        instance: &Instance,
        join_token_hash: Option<&str>,
        grant: &Grant,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    async fn get_instance(&self, id: &InstanceId) -> Result<Option<Instance>>;
    /// An agent's instances neither revoked nor expired at `now`, newest
    /// first (at most `limit`), each with how many active tasks it runs.
    async fn live_instances(
        &self,
        agent: &AgentName,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(Instance, u64)>>;
    /// Records a started task and its token; refused if the agent is
    /// quarantined, the instance revoked, or (for a delegated task) the
    /// parent no longer active by then.
    async fn create_task(&self, task: &Task, grant: &Grant, audit: Vec<AuditEvent>) -> Result<()>;
    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>>;
    /// Extends an active task's lease and records its fresh token.
    async fn heartbeat_task(
        &self,
        id: &TaskId,
        lease_expires_at: Timestamp,
        grant: &Grant,
        audit: Vec<AuditEvent>,
    ) -> Result<Task>;
    /// Ends an active task and every active task delegated from it (at any
    /// depth), revoking every grant under all of them, in one transaction.
    /// `None` when it was not active (or, for [`TaskEnd::Lapsed`], not
    /// lapsed after all).
    async fn end_task(
        &self,
        id: &TaskId,
        end: TaskEnd,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<Option<Ended>>;
    /// A task and all its descendants, root first.
    async fn task_tree(&self, id: &TaskId) -> Result<Vec<Task>>;
    /// The tokens issued under a task and all its descendants, with when
    /// each was revoked (if it was), oldest first.
    async fn task_tree_grants(&self, id: &TaskId) -> Result<Vec<(Grant, Option<Timestamp>)>>;
    /// Active tasks whose lease or hard lifetime has run out.
    async fn lapsed_tasks(&self, now: Timestamp, limit: u32) -> Result<Vec<TaskId>>;
    async fn grant_state(&self, jti: &str) -> Result<Option<GrantState>>;
    /// Records a token issued under an active task (a tool token); refused
    /// with `NotActive` if the task ended first.
    async fn record_grant(&self, grant: &Grant, audit: Vec<AuditEvent>) -> Result<()>;
    /// Revokes one grant; `None` (and nothing recorded) if it was unknown
    /// or already revoked. Revoking an instance token revokes the instance:
    /// every grant it holds, and every task it started ends (revoked, with
    /// its descendants and their grants), in the same transaction.
    async fn revoke_grant(
        &self,
        jti: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<Option<Revoked>>;
    /// Turns an approved pending task active: its lease and hard end start
    /// now, and its first token is recorded.
    async fn activate_task(
        &self,
        id: &TaskId,
        lease_expires_at: Timestamp,
        expires_at: Timestamp,
        grant: &Grant,
        audit: Vec<AuditEvent>,
    ) -> Result<Task>;
    /// Tasks, newest first; optionally only live exceptions.
    async fn list_tasks(&self, exceptions_only: bool, limit: u32) -> Result<Vec<Task>>;
    /// The tasks that match `q`, newest first, from `q.offset`, at most
    /// `q.limit`; and how many match in all.
    async fn search_tasks(&self, q: &TaskSearch) -> Result<(Vec<Task>, u64)>;
}

/// What [`TaskStore::search_tasks`] looks for: every field given must
/// match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskSearch {
    /// The status as stored (`active`, `completed`, ...).
    pub status: Option<String>,
    pub agent: Option<String>,
    /// A part of the task's id, intent or `on_behalf_of` (as written:
    /// `%` and `_` are not wildcards).
    pub text: Option<String>,
    pub offset: u32,
    pub limit: u32,
}

/// Approvals: of task starts, and of single calls held at a gateway.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Records a task waiting for approval, and its approval request.
    async fn create_pending_task(
        &self,
        task: &Task,
        approval: &Approval,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// An approval of either kind: a task start's or a call's.
    async fn get_approval(&self, id: &ApprovalId) -> Result<Option<Approval>>;
    /// The approval a task's start waits for (never a call approval).
    async fn approval_for_task(&self, task: &TaskId) -> Result<Option<Approval>>;
    /// Approvals of both kinds: pending ones oldest first, or all of them
    /// newest first (at most 1000).
    async fn list_approvals(&self, pending_only: bool) -> Result<Vec<Approval>>;
    /// Approves or denies a pending, unexpired approval; denying a task
    /// start ends its task as `denied` (denying a call leaves the task be).
    /// `NotActive` when it was already decided or expired.
    async fn decide_approval(
        &self,
        id: &ApprovalId,
        approve: bool,
        reason: &str,
        decided_by: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<Approval>;
    /// Expires one pending approval past its deadline (and, for a task
    /// start, its task). `false` if it was no longer pending.
    async fn expire_approval(
        &self,
        id: &ApprovalId,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool>;
    /// Pending approvals of both kinds past their deadline, earliest first.
    async fn overdue_approvals(&self, now: Timestamp, limit: u32) -> Result<Vec<ApprovalId>>;
    /// Records a pending call approval (`approval.call` is `Some`), found
    /// again by its task and `fingerprint`. Refused with `NotFound` for an
    /// unknown task, `Quarantined` when its agent is, `NotActive` when the
    /// task is no longer active, and `Conflict` for an id already taken by
    /// either kind of approval.
    async fn create_call_approval(
        &self,
        approval: &Approval,
        fingerprint: &str,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// The newest call approval (by requested_at, then id) of `task` with
    /// `fingerprint`, whatever its status.
    async fn call_approval(&self, task: &TaskId, fingerprint: &str) -> Result<Option<Approval>>;
    /// Marks an approved call approval used at `now` (for once-only
    /// approvals). `false` when it is not approved or was used already
    /// (exactly one of two concurrent callers gets `true`); its audit
    /// events are appended only with `true`.
    async fn use_call_approval(
        &self,
        id: &ApprovalId,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool>;
    /// How many call approvals of `task` are pending (a bound on how many
    /// one task may open).
    async fn pending_call_approvals(&self, task: &TaskId) -> Result<u32>;
}

/// Behaviour: refusals counted per agent for the whole deployment.
#[async_trait]
pub trait BehaviourStore: Send + Sync {
    /// Counts one refusal against `agent` at `at`, and forgets the agent's
    /// refusals older than [`DENIAL_RETENTION_SECS`] before it.
    async fn record_denial(&self, agent: &AgentName, at: Timestamp) -> Result<()>;
    /// Refusals of `agent` in buckets starting at or after `since` rounded
    /// down to its bucket (saturating at `u32::MAX`).
    async fn denials_since(&self, agent: &AgentName, since: Timestamp) -> Result<u32>;
    /// Every agent with refusals since `since` (same rounding), and how
    /// many, by agent name.
    async fn denial_counts(&self, since: Timestamp) -> Result<Vec<(AgentName, u32)>>;
    /// Forgets every refusal of `agent` (when an operator releases it at
    /// `at`); a refusal recorded later but made before `at` (a gateway's,
    /// delivered late) is not counted either.
    async fn clear_denials(&self, agent: &AgentName, at: Timestamp) -> Result<()>;
}

/// Detection rules' state, shared by every replica: counts in windows,
/// one-off firings, attestation sources seen, automatic releases, approval
/// holds, and exception tasks' use.
#[async_trait]
pub trait RuleStore: Send + Sync {
    /// Counts one event of `rule` against `subject` at `at` (in one-second
    /// buckets) and drops that pair's buckets outside the window. When the
    /// events after `at - window_secs` reach `threshold`, forgets them and
    /// returns their count: the rule fires once per threshold's worth of
    /// events, whichever replica counted them.
    async fn count_rule_event(
        &self,
        rule: &str,
        subject: &str,
        at: Timestamp,
        window_secs: i64,
        threshold: u32,
    ) -> Result<Option<u32>>;
    /// Remembers that `rule` fired for `subject`; false if it already had.
    async fn fire_once(&self, rule: &str, subject: &str, at: Timestamp) -> Result<bool>;
    /// Remembers that `agent` attested from `source`; true when the source
    /// is new and the agent had attested from another one before.
    async fn note_attestation_source(
        &self,
        agent: &AgentName,
        source: &str,
        at: Timestamp,
    ) -> Result<bool>;
    /// Releases `agent` from quarantine at `at` (replacing any earlier
    /// schedule), on behalf of `rule`.
    async fn schedule_release(&self, agent: &AgentName, rule: &str, at: Timestamp) -> Result<()>;
    /// Releases due at `now`: `(agent, rule)`.
    async fn due_releases(&self, now: Timestamp) -> Result<Vec<(AgentName, String)>>;
    /// Takes a due release off the schedule: the rule that scheduled it,
    /// or `None` if none is due (another replica took it, or it was
    /// cancelled).
    async fn claim_release(&self, agent: &AgentName, now: Timestamp) -> Result<Option<String>>;
    /// Forgets a scheduled release (an operator released or quarantined
    /// the agent by hand).
    async fn cancel_release(&self, agent: &AgentName) -> Result<()>;
    /// Holds `agent`'s tasks for approval until `until` (the later of this
    /// and any hold already there).
    async fn hold_for_approval(
        &self,
        agent: &AgentName,
        rule: &str,
        until: Timestamp,
    ) -> Result<()>;
    /// Whether a hold on `agent` lasts past `now`.
    async fn approval_held(&self, agent: &AgentName, now: Timestamp) -> Result<bool>;
    /// Every agent held past `now`, by name.
    async fn approval_holds(&self, now: Timestamp) -> Result<Vec<AgentName>>;
    /// Counts one use of the exception task `task`; returns the new count.
    async fn count_exception_use(&self, task: &TaskId) -> Result<u64>;
    /// Live exception tasks with their justification and uses.
    async fn exceptions(&self, limit: u32) -> Result<Vec<writ_core::api::ExceptionTask>>;
}

/// Policy sets: the live one's history and the shadow set.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Records that a policy set (file name to text) became live.
    async fn activate_policy(
        &self,
        version: &str,
        sources: &[(String, String)],
        origin: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// The most recent activations, newest first.
    async fn policy_history(&self, limit: u32) -> Result<Vec<writ_core::api::PolicyVersion>>;
    /// The sources of a policy set that was once live, by version.
    async fn policy_sources(&self, version: &str) -> Result<Option<Vec<(String, String)>>>;
    /// The set that was live last, if any: `(version, sources)`.
    async fn latest_policy(&self) -> Result<Option<(String, Vec<(String, String)>)>>;
    /// Appends events that record no other change (a denial, a failure).
    /// Installs (`Some`) or removes (`None`) the shadow policy set.
    async fn set_shadow_policy(
        &self,
        set: Option<(String, Vec<(String, String)>)>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()>;
    /// The shadow policy set, if one is installed: version and sources.
    async fn shadow_policy(&self) -> Result<Option<(String, Vec<(String, String)>)>>;
}

/// An audit record as it was committed, for whoever taps the stream.
#[derive(Clone, Debug)]
pub struct TappedRecord {
    pub seq: u64,
    pub ts: Timestamp,
    pub event: AuditEvent,
}

/// Decisions over a time range, counted in the store over every record of
/// the range ([`AuditStore::audit_activity`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditActivity {
    /// Per minute of the range that had any (minute 0 starts at `from`):
    /// `(minute, allowed, denied)`. Allowed: a decision record (`decision`,
    /// `tool_call`, `task_start`, `token_exchange`) that succeeded;
    /// denied: any record whose outcome is `deny`.
    pub minutes: Vec<(u32, u64, u64)>,
    /// Denied records by each policy that decided them (`(no policy)`:
    /// none did), most first, then by name; at most the limit asked for.
    pub denied_by: Vec<(String, u64)>,
    /// The newest denied records of the range, newest first.
    pub recent_denials: Vec<AuditRecord>,
}

/// The audit chain, the revocation feed, and changes other processes commit.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Decisions per minute and denials by policy over `[from, until)`,
    /// grouped by the database over every record of the range (no scan
    /// limit), with the `recent` newest denials and at most `policies`
    /// policies. Records are found by time from their place in the chain,
    /// which follows time to within minutes.
    async fn audit_activity(
        &self,
        from: Timestamp,
        until: Timestamp,
        policies: u32,
        recent: u32,
    ) -> Result<AuditActivity>;
    /// Revocations after `after`, in order (the feed gateways follow).
    async fn revocations_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<writ_core::api::Revocation>>;
    /// The sequence number of the latest revocation (0 for none).
    async fn revocation_head(&self) -> Result<u64>;
    async fn append_audit(&self, now: Timestamp, audit: Vec<AuditEvent>) -> Result<()>;
    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>>;
    /// The sequence number of the last record (0 when empty).
    async fn audit_head(&self) -> Result<u64>;
    /// Keeps a signed checkpoint of the chain at `seq` (the token as
    /// signed); a second one at the same `seq` is ignored.
    async fn add_audit_checkpoint(&self, seq: u64, token: &str) -> Result<()>;
    /// Every kept checkpoint, `(seq, token)` by `seq`.
    async fn audit_checkpoints(&self) -> Result<Vec<(u64, String)>>;
    /// The kept checkpoint with the highest `seq`.
    async fn last_audit_checkpoint(&self) -> Result<Option<(u64, String)>>;
    /// Changes committed by other processes sharing this store; `None`
    /// when this process is the only writer.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
    /// Copies every audit record this process commits, once committed, to
    /// `to` (a bounded queue: when it is full the copy is dropped and
    /// counted, the writer never waits). One tap per store: false if one
    /// is already set.
    fn tap_audit(&self, _to: tokio::sync::mpsc::Sender<TappedRecord>) -> bool {
        false
    }
}
