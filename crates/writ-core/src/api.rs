//! The v1 wire types, shared by the broker, the client and the tests.
//!
//! Every request type rejects unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentName, InstanceId, TaskId, ToolName};
use crate::scope::{Capability, Scope};
use crate::time::Timestamp;

/// How an agent's instances prove themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attestation {
    /// One-time join tokens minted by an admin.
    JoinToken,
    /// An identity token from a trusted OIDC issuer (a Kubernetes
    /// service-account token, a CI job token, ...).
    Oidc {
        issuer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jwks_uri: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jwks: Option<serde_json::Value>,
        audience: String,
        subject: String,
        /// Signature algorithms accepted from this issuer. Default: EdDSA.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        algorithms: Vec<String>,
    },
    /// A SPIFFE JWT-SVID for the agent: by default for its own SPIFFE ID,
    /// from a writ node (the workload it runs as is named by `workload`);
    /// with `spiffe_id`, for that ID in a federated trust domain (an
    /// existing SPIRE deployment, say), checked against its bundle.
    Spiffe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spiffe_id: Option<String>,
    },
}

impl Attestation {
    pub fn kind(&self) -> &'static str {
        match self {
            Attestation::JoinToken => "join_token",
            Attestation::Oidc { .. } => "oidc",
            Attestation::Spiffe { .. } => "spiffe",
        }
    }
}

/// Which local workloads on which node run as the agent: a workload gets
/// the agent's SVIDs when every selector matches what the node's kernel
/// says about it (`unix:uid:N`, `unix:gid:N`, `unix:path:/exe`,
/// `unix:sha256:HEX` of the executable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub node: String,
    pub selectors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub name: AgentName,
    pub attestation: Attestation,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Agent {
    pub name: AgentName,
    pub spiffe_id: String,
    pub attestation: Attestation,
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    pub quarantined: bool,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in seconds.
    pub ttl: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinTokenCreated {
    pub join_token: String,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterTool {
    pub name: ToolName,
    pub audience: String,
    pub scopes: Vec<Scope>,
    /// Free-form attributes, visible to policy as tags (e.g. `data: user`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Where a gateway forwards the tool's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// The gateway that serves it (and alone gets its upstream secret);
    /// none: the gateway inside `writ serve` ([`EMBEDDED_GATEWAY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// `PUT /v1/tools/{name}/gateway`: serve a tool from another gateway
/// (none: the gateway inside `writ serve`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindTool {
    #[serde(default)]
    pub gateway: Option<String>,
}

/// The name of the gateway inside `writ serve`: it serves every tool not
/// bound to another gateway.
pub const EMBEDDED_GATEWAY: &str = "embedded";

/// Whether `name` can name a gateway: 1 to 64 characters of
/// `[A-Za-z0-9._-]`.
pub fn valid_gateway_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    pub name: ToolName,
    pub audience: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// The header a gateway injects upstream, when a secret is set (never
    /// the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_header: Option<String>,
    /// The gateway that serves it; none: [`EMBEDDED_GATEWAY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub created_at: Timestamp,
}

impl Tool {
    /// The gateway that serves it.
    pub fn gateway_name(&self) -> &str {
        self.gateway.as_deref().unwrap_or(EMBEDDED_GATEWAY)
    }

    /// Whether the gateway named `gateway` serves it: its upstream is
    /// reached through a gateway, and that gateway is the one it is bound
    /// to.
    pub fn served_by(&self, gateway: &str) -> bool {
        self.upstream.as_ref().is_some_and(Upstream::is_gateway) && self.gateway_name() == gateway
    }
}

/// A tool's upstream, as a gateway reaches it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Upstream {
    /// A plain HTTP API: `/{tool}/rest` is forwarded to `url` + `/rest`.
    Http {
        url: String,
        /// Refuse to forward (fail closed) while no secret is set.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        require_secret: bool,
    },
    /// An MCP server on streamable HTTP at `url`.
    Mcp {
        url: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        require_secret: bool,
    },
    /// A local MCP server on stdio, spawned by the gateway (one process per
    /// MCP session).
    McpStdio { command: Vec<String> },
    /// A PostgreSQL database: no gateway in between; a task granted the tool
    /// gets a role of its own (`POST /v1/tasks/{id}/credentials/{tool}`)
    /// that lives as long as the task. The admin connection is the tool's
    /// secret (`PUT /v1/tools/{name}/secret` with only a `value`).
    Postgres {
        /// Statements run as the admin after the role is created, with
        /// `{role}` standing for the new role's quoted name, e.g.
        /// `GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO {role}`.
        grants: Vec<String>,
    },
}

impl Upstream {
    pub fn is_mcp(&self) -> bool {
        matches!(self, Upstream::Mcp { .. } | Upstream::McpStdio { .. })
    }

    /// Whether a gateway serves it (a database is reached directly, with a
    /// credential of the task's own).
    pub fn is_gateway(&self) -> bool {
        !matches!(self, Upstream::Postgres { .. })
    }

    /// Whether the gateway must refuse to forward without a secret.
    pub fn requires_secret(&self) -> bool {
        match self {
            Upstream::Http { require_secret, .. } | Upstream::Mcp { require_secret, .. } => {
                *require_secret
            }
            Upstream::McpStdio { .. } | Upstream::Postgres { .. } => false,
        }
    }
}

/// `PUT /v1/tools/{name}/secret`: the credential a gateway adds to every
/// upstream request of the tool, or for a `postgres` tool (no `header`)
/// the admin connection URL that creates and drops task roles.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetToolSecret {
    #[serde(default)]
    pub header: String,
    pub value: String,
}

/// `POST /v1/tasks/{id}/credentials/{tool}`: a database role of the task's
/// own, shown once. It stops working when the task ends (the role is
/// dropped and its sessions ended) and at the task's hard end at the latest
/// (`VALID UNTIL`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbCredential {
    pub tool: ToolName,
    pub task_id: TaskId,
    pub username: String,
    pub password: String,
    /// Where to connect, with this credential in it.
    pub url: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for DbCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCredential")
            .field("tool", &self.tool)
            .field("task_id", &self.task_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SetToolSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetToolSecret")
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// The answer to setting a tool secret: never the value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToolSecretSet {
    pub tool: ToolName,
    pub header: String,
    pub updated_at: Timestamp,
}

/// A tool secret as delivered to a gateway (and to nothing else).
#[derive(Clone, Serialize, Deserialize)]
pub struct GatewaySecret {
    pub tool: ToolName,
    pub header: String,
    pub value: String,
}

impl std::fmt::Debug for GatewaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySecret")
            .field("tool", &self.tool)
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// `POST /v1/gateways`: a credential for one gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterGateway {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayRegistered {
    pub name: String,
    /// Shown once: the gateway presents it as a bearer token.
    pub token: String,
}

/// `GET /v1/gateway/bundle`: everything a gateway decides with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayBundle {
    pub issuer: String,
    pub policy_version: String,
    /// The live policy set's files, by name.
    pub files: BTreeMap<String, String>,
    pub tools: Vec<Tool>,
    pub agents: Vec<Agent>,
    /// Each agent's refusals in the last five minutes, across the
    /// deployment (`context.behaviour.denials_5m`); agents with none are
    /// left out.
    #[serde(default)]
    pub behaviour: BTreeMap<AgentName, u32>,
    /// When `behaviour` was counted. A refusal a gateway makes on counts
    /// taken before an agent's release is forgiven with the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour_at: Option<Timestamp>,
    /// The gateway the bundle was made for: it serves the tools bound to
    /// it ([`Tool::served_by`]), and gets their secrets only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// `POST /v1/gateway/approvals`: a gateway holds a call for approval and
/// asks where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldCall {
    pub task: TaskId,
    /// The scopes of the tool token the call was made with.
    pub scopes: std::collections::BTreeSet<Scope>,
    /// The call (its `window_secs` and `used_at` are the broker's to set).
    pub call: ApprovalCall,
}

/// Where a held call stands: `approved` (let it through) or `pending`,
/// `denied` or `expired` (refuse it, naming the approval).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallHeld {
    pub approval_id: crate::ids::ApprovalId,
    pub status: ApprovalStatus,
}

/// `POST /v1/gateway/decisions`: decisions a gateway made, numbered by the
/// gateway from 1 so that redelivery is idempotent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayDecisions {
    pub first_seq: u64,
    pub decisions: Vec<crate::audit::AuditEvent>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayDecisionsAck {
    /// The highest decision number the broker holds for this gateway.
    pub acked: u64,
}

/// `GET /v1/admin/tokens`: one admin credential (never its value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCredential {
    pub name: String,
    pub created_at: Timestamp,
    /// Made by `writ serve --dev`: refused by a start without `--dev`.
    pub dev: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quarantined {
    pub agent: AgentName,
    pub quarantined: bool,
    /// Grants revoked by this call.
    pub revoked_tokens: u64,
    /// Tasks ended by this call.
    pub ended_tasks: u64,
}

/// `POST /v1/attest`: exactly one proof.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    pub agent: AgentName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_token: Option<String>,
    /// A JWT-SVID for the agent's SPIFFE ID, with writ's issuer in `aud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_svid: Option<String>,
}

// --- SPIFFE: nodes and SVIDs ---

/// `POST /v1/nodes`: a host that runs `writ node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    pub name: String,
    /// How the node proves itself: join tokens (the default).
    #[serde(default = "join_token_attestation")]
    pub attestation: Attestation,
}

fn join_token_attestation() -> Attestation {
    Attestation::JoinToken
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub attestation: Attestation,
    pub quarantined: bool,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_at: Option<Timestamp>,
}

/// `POST /v1/node/attest`: a node proves itself with a join token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttest {
    pub node: String,
    pub join_token: String,
}

impl std::fmt::Debug for NodeAttest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAttest")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The node's credential for the node API (shown once; a new attestation
/// replaces it).
#[derive(Clone, Serialize, Deserialize)]
pub struct NodeAttested {
    pub node: String,
    pub node_token: String,
}

impl std::fmt::Debug for NodeAttested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAttested")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/node/entries`: the trust domain and the agents a node serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntries {
    pub trust_domain: String,
    pub entries: Vec<NodeEntry>,
}

/// An agent a node may issue SVIDs for, and to which workloads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub agent: AgentName,
    pub spiffe_id: String,
    pub selectors: Vec<String>,
}

/// `POST /v1/node/x509-svid`: a certificate for a key the node made.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509SvidRequest {
    pub agent: AgentName,
    /// The workload's key, made and kept by the node: an uncompressed
    /// P-256 point in base64url.
    pub public_key: String,
    /// The workload's selectors that matched (recorded).
    pub selectors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct X509SvidIssued {
    pub spiffe_id: String,
    /// The SVID then its issuers, DER in base64url.
    pub chain: Vec<String>,
    /// The trust domain's X.509 authorities, DER in base64url.
    pub bundle: Vec<String>,
    pub expires_at: Timestamp,
}

/// `POST /v1/node/jwt-svid`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidRequest {
    pub agent: AgentName,
    pub audience: Vec<String>,
    pub selectors: Vec<String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct JwtSvidIssued {
    pub spiffe_id: String,
    pub token: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for JwtSvidIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvidIssued")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An issued token, in the shape of an OAuth token response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attested {
    pub instance_id: InstanceId,
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    pub intent: String,
    pub capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Hard maximum lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Why a lifetime beyond the configured maximum is needed (an exception;
    /// required then, and always reviewed by a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskToken {
    pub task_id: TaskId,
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub lease_expires_at: Timestamp,
    pub scope: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Allowed, waiting for a person to approve it.
    PendingApproval,
    Active,
    Completed,
    Expired,
    Revoked,
    /// Its approval was denied.
    Denied,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::PendingApproval => "pending_approval",
            TaskStatus::Active => "active",
            TaskStatus::Completed => "completed",
            TaskStatus::Expired => "expired",
            TaskStatus::Revoked => "revoked",
            TaskStatus::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending_approval" => TaskStatus::PendingApproval,
            "denied" => TaskStatus::Denied,
            "active" => TaskStatus::Active,
            "completed" => TaskStatus::Completed,
            "expired" => TaskStatus::Expired,
            "revoked" => TaskStatus::Revoked,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Task {
    pub task_id: TaskId,
    pub agent: AgentName,
    pub instance_id: InstanceId,
    pub intent: String,
    pub capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    pub status: TaskStatus,
    pub created_at: Timestamp,
    pub lease_expires_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    pub policy_version: String,
    /// The task this one was delegated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<TaskId>,
    /// 0 for a root task, parent's depth + 1 for a delegated one.
    #[serde(default)]
    pub depth: u32,
    /// Lives beyond the configured maximum by an approved exception.
    #[serde(default)]
    pub exception: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskEnded {
    pub task_id: TaskId,
    pub status: TaskStatus,
    /// Tokens revoked across the task and its delegated tasks.
    pub revoked_tokens: u64,
    /// Delegated tasks ended with it.
    #[serde(default)]
    pub ended_descendants: u64,
}

/// RFC 7662 introspection response.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Introspection {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<crate::token::Confirmation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<crate::token::Actor>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditPage {
    pub records: Vec<crate::audit::AuditRecord>,
    /// Pass as `after` to read on.
    pub next: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditVerified {
    pub valid: bool,
    pub records: u64,
    pub head: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::audit::ChainBreak>,
    /// A signed statement of `records` and `head` (when valid): keep it
    /// outside writ and a later truncation of the log is detectable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Checkpoints the broker signed and kept as it went, each checked.
    #[serde(default)]
    pub checkpoints: u64,
    /// The last record a kept checkpoint covers: records after it are
    /// covered by the chain alone until the next checkpoint.
    #[serde(default)]
    pub sealed_through: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRotated {
    pub kid: String,
    pub previous_kid: Option<String>,
}

/// RFC 9457 problem details, as every non-OAuth endpoint answers errors.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    #[serde(rename = "type", default = "about_blank")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The policies that decided a denial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub determining_policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// A request held for a person's approval: the approval to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<crate::ids::ApprovalId>,
}

fn about_blank() -> String {
    "about:blank".into()
}

/// One entry of the revocation feed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    pub seq: u64,
    pub jti: String,
    /// When the token would have expired anyway: a follower may forget the
    /// entry after this (plus verification leeway).
    pub expires_at: Timestamp,
    pub revoked_at: Timestamp,
}

/// `GET /v1/revocations?after=SEQ`: entries after SEQ, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevocationPage {
    pub revocations: Vec<Revocation>,
    /// Pass as `after` to read on.
    pub next: u64,
    /// The newest revocation when the request came: a follower whose
    /// `next` is below it is still catching up (its view is not current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<u64>,
}

/// RFC 6749 §5.2 error, as OAuth endpoints answer errors.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OAuthErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// RFC 8693 §2.2.1 token exchange response, plus the child task's id on a
/// delegation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenExchanged {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
}

/// One time a policy set became live.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyVersion {
    pub version: String,
    /// `dir:<path>`, `push`, `embedded` or `store`.
    pub origin: String,
    pub loaded_at: Timestamp,
}

/// `PUT /v1/policies`: a whole policy set, file name to Cedar text.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushPolicies {
    pub files: BTreeMap<String, String>,
}

/// The live policy set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub version: String,
    pub policies: usize,
    pub files: BTreeMap<String, String>,
}

/// `202` from `POST /v1/tasks` (and heartbeats) while a person decides.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskPending {
    pub task_id: TaskId,
    pub status: TaskStatus,
    pub approval_id: crate::ids::ApprovalId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            _ => return None,
        })
    }
}

/// A request for a person to approve a task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    pub approval_id: crate::ids::ApprovalId,
    pub task_id: TaskId,
    pub status: ApprovalStatus,
    /// The hard lifetime the task asked for, seconds.
    pub ttl: i64,
    pub exception: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The task as requested (for a call approval: the task the call is
    /// made under).
    pub task: Task,
    /// Set when a person must approve one request through a gateway (or
    /// one an AuthZEN enforcement point asked about), not a task start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<ApprovalCall>,
}

/// The request a call approval is about: what an approver sees, and what a
/// later request must match exactly to be let through.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalCall {
    pub tool: ToolName,
    /// The agent making the call (the outermost actor of a delegation).
    pub agent: AgentName,
    pub method: String,
    /// The path below the tool's prefix.
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_tool: Option<String>,
    /// MCP arguments as compact JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// Once approved, how long the same call passes (seconds from the
    /// approval); 0: exactly once.
    pub window_secs: i64,
    /// When an approved once-only call was let through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<Timestamp>,
}

/// `POST /v1/approvals/{id}/approve|deny`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideApproval {
    pub reason: String,
}

/// RFC 8693 token exchange grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of writ's access tokens.
pub const ACCESS_TOKEN_TYPE_URN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The form of `POST /oauth2/token` (RFC 8693).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    /// With a DPoP-bound `actor_token`: a DPoP proof the sub-agent made
    /// with its own key for `POST` to the token endpoint, with `ath` of the
    /// actor token: the sub-agent takes part in its delegation.
    pub actor_token_proof: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub requested_token_type: Option<String>,
}

/// Why a token request is refused before any token in it is looked at:
/// the RFC 6749 error code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequestError {
    pub error: &'static str,
    pub description: String,
}

impl TokenRequest {
    /// The checks that need nothing but the form: the grant type, the token
    /// types, and `audience` and `resource` not both. Returns the subject
    /// token.
    pub fn check(&self) -> Result<&str, TokenRequestError> {
        let bad = |d: String| TokenRequestError {
            error: "invalid_request",
            description: d,
        };
        match self.grant_type.as_deref() {
            None => return Err(bad("grant_type is required".into())),
            Some(TOKEN_EXCHANGE_GRANT) => {}
            Some(g) => {
                return Err(TokenRequestError {
                    error: "unsupported_grant_type",
                    description: format!("grant type {g:?} is not supported"),
                });
            }
        }
        let subject = self
            .subject_token
            .as_deref()
            .ok_or_else(|| bad("subject_token is required".into()))?;
        if self.subject_token_type.as_deref() != Some(ACCESS_TOKEN_TYPE_URN) {
            return Err(bad(format!(
                "subject_token_type must be {ACCESS_TOKEN_TYPE_URN}"
            )));
        }
        if self
            .requested_token_type
            .as_deref()
            .is_some_and(|t| t != ACCESS_TOKEN_TYPE_URN)
        {
            return Err(bad(format!("only {ACCESS_TOKEN_TYPE_URN} can be issued")));
        }
        if self.actor_token.is_some()
            && self.actor_token_type.as_deref() != Some(ACCESS_TOKEN_TYPE_URN)
        {
            return Err(bad(format!(
                "actor_token_type must be {ACCESS_TOKEN_TYPE_URN}"
            )));
        }
        if self.audience.is_some() && self.resource.is_some() {
            return Err(bad("give audience or resource, not both".into()));
        }
        if self.actor_token_proof.is_some() && self.actor_token.is_none() {
            return Err(bad("actor_token_proof needs an actor_token".into()));
        }
        Ok(subject)
    }
}
