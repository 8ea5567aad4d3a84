//! Records the store keeps beside the API types of `writ_core::api`.

use serde::{Deserialize, Serialize};
use writ_core::api::TaskStatus;
use writ_core::{AgentName, InstanceId, TaskId, Timestamp};

/// A signing key as stored: the private key sealed under the master key.
#[derive(Clone, Debug)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub sealed: Vec<u8>,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

/// Where a value sealed under the master key is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedTable {
    /// A token signing key (`id` its kid).
    SigningKey,
    /// A SPIFFE authority's key (`id` its kid).
    SpiffeKey,
    /// A tool's upstream secret (`id` the tool, `header` its header; an
    /// empty header is a postgres tool's admin connection).
    ToolSecret,
}

/// One value sealed under the master key, wherever it is kept: what a
/// master-key rotation opens with the old key and seals with the new.
#[derive(Clone)]
pub struct SealedValue {
    pub table: SealedTable,
    pub id: String,
    pub header: String,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedValue")
            .field("table", &self.table)
            .field("id", &self.id)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// A tool's upstream secret as stored: the value sealed under the master key.
#[derive(Clone)]
pub struct StoredSecret {
    pub tool: writ_core::ToolName,
    pub header: String,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("tool", &self.tool)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// A key of the trust domain's SPIFFE authorities, sealed under the
/// master key: the X.509 CA (`kind` `x509-ca`, with its certificate) or a
/// JWT-SVID signing key (`jwt-svid`).
#[derive(Clone)]
pub struct StoredSpiffeKey {
    pub kid: String,
    pub kind: String,
    pub sealed: Vec<u8>,
    pub cert: Option<Vec<u8>>,
    pub created_at: Timestamp,
    pub not_after: Timestamp,
}

impl std::fmt::Debug for StoredSpiffeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSpiffeKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A database role created for a task (a dynamic credential): recorded
/// before the role exists, so a crash in between leaves a lease to clean up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbLease {
    pub role: String,
    pub task_id: TaskId,
    pub tool: writ_core::ToolName,
    pub created_at: Timestamp,
    /// The task's hard end: the role's `VALID UNTIL`.
    pub expires_at: Timestamp,
}

/// A join token as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTokenState {
    /// The agent it attests.
    pub agent: AgentName,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

impl JoinTokenState {
    /// Why it cannot attest `agent` at `now`, checked in the order the
    /// store checks them when it consumes the token.
    pub fn refusal(&self, agent: &AgentName, now: Timestamp) -> Option<crate::JoinTokenError> {
        if &self.agent != agent {
            Some(crate::JoinTokenError::WrongAgent)
        } else if self.used_at.is_some() {
            Some(crate::JoinTokenError::Used)
        } else if now >= self.expires_at {
            Some(crate::JoinTokenError::Expired)
        } else {
            None
        }
    }
}

/// One attested instance of an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub agent: AgentName,
    pub attestation: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// The DPoP key thumbprint its tokens are bound to, if any.
    pub jkt: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    InstanceToken,
    TaskToken,
    /// A token exchanged for one tool (RFC 8693).
    ToolToken,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::InstanceToken => "instance_token",
            GrantKind::TaskToken => "task_token",
            GrantKind::ToolToken => "tool_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "instance_token" => Some(GrantKind::InstanceToken),
            "task_token" => Some(GrantKind::TaskToken),
            "tool_token" => Some(GrantKind::ToolToken),
            _ => None,
        }
    }
}

/// Anything issued: its issuance record, committed before it is returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub jti: String,
    pub kind: GrantKind,
    pub agent: AgentName,
    pub instance_id: InstanceId,
    pub task_id: Option<TaskId>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// The DPoP key thumbprint the token is bound to (`cnf.jkt`).
    pub jkt: Option<String>,
    /// For tool tokens: the tool's audience.
    pub audience: Option<String>,
}

/// A grant and everything that decides whether it is still alive.
#[derive(Clone, Debug, PartialEq)]
pub struct GrantState {
    pub grant: Grant,
    pub revoked_at: Option<Timestamp>,
    pub agent_quarantined: bool,
    pub instance_revoked: bool,
    pub task_status: Option<TaskStatus>,
    /// The task's lease and hard end, for task-scoped grants.
    pub task_deadline: Option<Timestamp>,
}

impl GrantState {
    /// Alive: not revoked, not expired, its agent not quarantined, its
    /// instance not revoked, and its task (if any) active.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none()
            && now < self.grant.expires_at
            && !self.agent_quarantined
            && !self.instance_revoked
            && self.task_status.is_none_or(|s| s == TaskStatus::Active)
            // A lapsed lease kills the task's grants at once, not when the
            // sweeper gets to it.
            && self.task_deadline.is_none_or(|d| now < d)
    }
}

/// How a task ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskEnd {
    /// The instance (or an admin) completed it.
    Completed,
    /// Ended by an admin or a kill switch.
    Revoked(String),
    /// Its lease or hard lifetime ran out; ends only if that is still so.
    Lapsed,
}

/// What ending a task (and its descendants) changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    /// The task itself, as it ended.
    pub task: writ_core::api::Task,
    /// Grants revoked across the task and every descendant.
    pub revoked_tokens: u64,
    /// Descendant tasks ended with it.
    pub descendants: u64,
}

/// What revoking a grant changed: the grant itself and, for an instance
/// token, everything issued on the instance's authority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Grants revoked: the one named, and for an instance token every
    /// grant of the instance and of the tasks that ended with it.
    pub revoked_tokens: u64,
    /// Tasks ended (an instance's tasks and their descendants).
    pub ended_tasks: u64,
}

/// What a quarantine changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuarantineOutcome {
    pub revoked_tokens: u64,
    pub ended_tasks: u64,
}
