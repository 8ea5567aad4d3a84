//! Tasks, their tokens and the approvals they wait for.

use super::*;

/// An issued token, in the shape of an OAuth token response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attested {
    pub instance_id: InstanceId,
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
}

/// Longest intent a task (or a question about one, over AuthZEN) may state.
pub const MAX_INTENT: usize = 1024;
/// Longest name of the person a task acts for.
pub const MAX_ON_BEHALF_OF: usize = 256;

/// An intent, checked for shape: at most [`MAX_INTENT`] bytes, no control
/// characters. Whether one is required is the caller's to say.
pub fn check_intent(intent: &str) -> Result<(), String> {
    if intent.len() > MAX_INTENT || intent.chars().any(char::is_control) {
        return Err(format!(
            "intent must be 1 to {MAX_INTENT} printable characters"
        ));
    }
    Ok(())
}

/// Whom a task acts for, checked for shape: 1 to [`MAX_ON_BEHALF_OF`]
/// bytes, no spaces or control characters ("user:alice").
pub fn check_on_behalf_of(obo: &str) -> Result<(), String> {
    if obo.is_empty()
        || obo.len() > MAX_ON_BEHALF_OF
        || obo.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "on_behalf_of must be 1 to {MAX_ON_BEHALF_OF} characters without spaces, e.g. \"user:alice\""
        ));
    }
    Ok(())
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
    /// The operator credential that decided it (`operator:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The person the task acts for (its `on_behalf_of`) may decide it
    /// themself, signed in with single sign-on: every permit that held it
    /// says `@approval_by("on_behalf_of")`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_behalf_of_may_approve: bool,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_prompt: Option<String>,
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

/// `GET /v1/exceptions`: a live task that lives beyond the configured
/// maximum by an approved exception, with what an operator watching it
/// needs: when it ends, whose it is, why it was granted, how often used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionTask {
    pub task_id: TaskId,
    pub agent: AgentName,
    pub intent: String,
    /// The agent's `owner` attribute, else the person the task acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The justification given when the exception was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// Who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Tool tokens exchanged under it so far.
    pub uses: u64,
}
