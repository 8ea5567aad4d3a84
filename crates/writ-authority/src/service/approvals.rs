//! People deciding: approvals of tasks a policy (or an exception) holds
//! back, and of single calls through a gateway that a permit annotated
//! `@approval("required")` holds.
//!
//! A held call is found again by a fingerprint of its task and request
//! facts: once approved, the same call (same task, tool, agent, method,
//! path, query, MCP method, tool and arguments) passes once, or for the
//! window its permit names (`@approval_window("SECONDS")`, counted from the
//! approval). A denied or expired approval keeps refusing that call for
//! the rest of the task; any other call is a new approval.

use writ_core::ApprovalId;
use writ_core::api::{Approval, ApprovalCall, ApprovalStatus, DecideApproval, Task, TaskStatus};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};

use std::sync::Arc;

use writ_core::{Clock, Timestamp};
use writ_store::Store;

use super::policies::Policies;
use super::subjects::Subjects;
use crate::error::Error;

/// Most call approvals one task may have waiting at once: a task cannot
/// flood approvers (nor the store) by varying its requests.
pub const MAX_PENDING_CALL_APPROVALS: u32 = 16;

/// Where a held call stands.
#[derive(Debug, Clone)]
pub enum CallApproval {
    /// Approved: let this call through.
    Approved(ApprovalId),
    /// Waiting for a person, or denied or expired: refuse it, naming the
    /// approval.
    Held(Box<Approval>),
}

/// Who asks where a held call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// An enforcement point that lets the call through when approved: a
    /// once-only approval is used up by asking.
    Enforcing,
    /// A question (an AuthZEN evaluation that does not say it enforces):
    /// it sees the approval and leaves it for the call it approves.
    Question,
}

/// The fingerprint a held call is found again by.
fn fingerprint(task: &Task, call: &ApprovalCall) -> String {
    let facts = serde_json::json!([
        task.task_id,
        call.tool,
        call.agent,
        call.method,
        call.path,
        call.query,
        call.mcp_method,
        call.mcp_tool,
        call.arguments,
    ]);
    // Named resources and prompts extend the fingerprint only when present,
    // so calls held before they were facts are found again as they were.
    let facts = match (&call.mcp_resource, &call.mcp_prompt) {
        (None, None) => facts,
        (r, p) => serde_json::json!([facts, r, p]),
    };
    super::hash_secret(&facts.to_string())
}

/// Approvals: listing and deciding them, holding calls for a person, and
/// expiring what nobody decided.
pub struct Approvals {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// How long a request waits for a person, seconds.
    ttl: i64,
    policies: Arc<Policies>,
    subjects: Arc<Subjects>,
}

impl Approvals {
    pub(super) fn new(h: &super::Handles, subjects: &Arc<Subjects>) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            ttl: h.config.approval_ttl,
            policies: Arc::clone(&h.policies),
            subjects: Arc::clone(subjects),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub async fn list(&self, all: bool) -> Result<Vec<Approval>, Error> {
        Ok(self.store.list_approvals(!all).await?)
    }

    /// Approves or denies, with a reason; both are audited.
    pub async fn decide(
        &self,
        id: &ApprovalId,
        approve: bool,
        req: DecideApproval,
        actor: &str,
    ) -> Result<Approval, Error> {
        let reason = req.reason.trim();
        if reason.is_empty() || reason.len() > 1024 || reason.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "a reason of 1 to 1024 printable characters is required".into(),
            ));
        }
        let a = self
            .store
            .get_approval(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("approval {id} not found")))?;
        let event = AuditEvent::new(
            AuditKind::Approval,
            if approve {
                Outcome::Success
            } else {
                Outcome::Deny
            },
            actor,
        )
        .agent(&a.task.agent)
        .instance(&a.task.instance_id)
        .task(&a.task_id)
        .on_behalf_of(a.task.on_behalf_of.as_ref())
        .reason(reason)
        .detail(serde_json::json!({
            "approval": id,
            "exception": a.exception,
            "justification": a.justification,
            "ttl": a.ttl,
            "call": a.call,
        }));
        Ok(self
            .store
            .decide_approval(id, approve, reason, actor, self.now(), vec![event])
            .await?)
    }

    /// Whether `who` is the person the pending approval `id`'s task acts
    /// for, and the policy that held it lets them decide it (never a held
    /// call). `false` for an approval that does not exist.
    pub async fn on_behalf_of_may_decide(
        &self,
        who: &super::Operator,
        id: &ApprovalId,
    ) -> Result<bool, Error> {
        Ok(self.store.get_approval(id).await?.is_some_and(|a| {
            a.call.is_none()
                && a.on_behalf_of_may_approve
                && a.task.on_behalf_of.as_deref() == Some(who.name.as_str())
        }))
    }

    /// Where the held call `call` under `task` stands: approved (and, for
    /// a once-only approval the asker will enforce, used up now), or held,
    /// with a new pending approval opened when none applies. `decision` is
    /// the one that held it; `actor` the enforcement point asking.
    pub async fn resolve_call_approval(
        &self,
        task: &Task,
        mut call: ApprovalCall,
        decision: &writ_policy::Decision,
        actor: &str,
        asked: Asked,
    ) -> Result<CallApproval, Error> {
        if task.status != TaskStatus::Active {
            return Err(Error::TaskEnded(format!(
                "task {} is not active ({})",
                task.task_id,
                task.status.as_str()
            )));
        }
        if call.agent != task.agent || !task.capabilities.iter().any(|c| c.tool == call.tool) {
            return Err(Error::Forbidden(
                "the call is not made by the task's agent on one of its tools".into(),
            ));
        }
        call.window_secs = decision.approval_window();
        call.used_at = None;
        let fp = fingerprint(task, &call);
        let now = self.now();
        if let Some(a) = self.store.call_approval(&task.task_id, &fp).await? {
            let window = a.call.as_ref().map_or(0, |c| c.window_secs);
            let used = a.call.as_ref().is_some_and(|c| c.used_at.is_some());
            match a.status {
                ApprovalStatus::Approved if window > 0 => {
                    let from = a.decided_at.unwrap_or(a.requested_at);
                    if now < from.add_secs(window) {
                        return Ok(CallApproval::Approved(a.approval_id));
                    }
                }
                // A question nobody enforces (an AuthZEN evaluation without
                // `enforced`) sees the approval without using it up.
                ApprovalStatus::Approved if !used && asked == Asked::Question => {
                    return Ok(CallApproval::Approved(a.approval_id));
                }
                ApprovalStatus::Approved if !used => {
                    let event = AuditEvent::new(AuditKind::Approval, Outcome::Success, actor)
                        .agent(&task.agent)
                        .instance(&task.instance_id)
                        .task(&task.task_id)
                        .reason("approved call let through once")
                        .detail(serde_json::json!({ "approval": a.approval_id }));
                    if self
                        .store
                        .use_call_approval(&a.approval_id, now, vec![event])
                        .await?
                    {
                        return Ok(CallApproval::Approved(a.approval_id));
                    }
                }
                // Used up, or its window over: the call needs a new approval.
                ApprovalStatus::Approved => {}
                ApprovalStatus::Pending if now < a.expires_at => {
                    return Ok(CallApproval::Held(Box::new(a)));
                }
                // Denied, or expired undecided (even before the sweeper
                // marks it): that call stays refused.
                ApprovalStatus::Pending | ApprovalStatus::Denied | ApprovalStatus::Expired => {
                    return Ok(CallApproval::Held(Box::new(a)));
                }
            }
        }
        if self.store.pending_call_approvals(&task.task_id).await? >= MAX_PENDING_CALL_APPROVALS {
            return Err(Error::TooMany(format!(
                "task {} already has {MAX_PENDING_CALL_APPROVALS} calls waiting for approval",
                task.task_id
            )));
        }
        let approval = Approval {
            approval_id: ApprovalId::generate()?,
            task_id: task.task_id.clone(),
            status: ApprovalStatus::Pending,
            ttl: 0,
            exception: false,
            justification: None,
            requested_at: now,
            expires_at: now.add_secs(self.ttl),
            decided_at: None,
            reason: None,
            decided_by: None,
            on_behalf_of_may_approve: false,
            task: task.clone(),
            call: Some(call),
        };
        let event = AuditEvent::new(AuditKind::Approval, Outcome::Success, actor)
            .agent(&task.agent)
            .instance(&task.instance_id)
            .task(&task.task_id)
            .on_behalf_of(task.on_behalf_of.as_ref())
            .policy(
                decision.policy_version(),
                decision.determining_policies().to_vec(),
            )
            .reason(format!("call held for approval {}", approval.approval_id))
            .detail(serde_json::json!({
                "approval": approval.approval_id,
                "call": approval.call,
            }));
        self.store
            .create_call_approval(&approval, &fp, vec![event])
            .await?;
        Ok(CallApproval::Held(Box::new(approval)))
    }

    /// Decides a call under `task` from the store's facts: what a gateway
    /// holding it decided from its token, and what AuthZEN answers.
    pub(crate) async fn call_decision(
        &self,
        task: &Task,
        scopes: std::collections::BTreeSet<writ_core::Scope>,
        call: &ApprovalCall,
    ) -> Result<writ_policy::Decision, Error> {
        let tool = self
            .store
            .get_tool(&call.tool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tool {} not found", call.tool)))?;
        let lineage = self.subjects.lineage(task).await?;
        let agents = self.subjects.lineage_agents(&lineage).await?;
        let agent = agents
            .iter()
            .find(|a| a.name == call.agent && a.name == task.agent)
            .ok_or_else(|| Error::Forbidden("the call is not made by the task's agent".into()))?;
        let attestation = self
            .subjects
            .instance_attestation(&task.instance_id)
            .await?;
        let view = writ_policy::TaskView::of_task(task, &attestation);
        let now = self.now();
        let behaviour = self.subjects.behaviour(&agent.name, now).await?;
        let request = writ_policy::CallRequest::of_approval(call);
        let facts = writ_policy::Facts::call_tool(
            writ_policy::Chain::new(agent, agents.iter()),
            &view,
            scopes,
            &tool,
            request,
            behaviour,
            now,
        );
        self.policies.decide(&self.policies.live(), &facts).await
    }

    /// Expires overdue approvals (and their tasks); returns how many.
    pub(crate) async fn expire_approvals(&self) -> Result<usize, Error> {
        let now = self.now();
        let mut n = 0;
        for id in self.store.overdue_approvals(now, 256).await? {
            let event = AuditEvent::new(AuditKind::Approval, Outcome::Failure, "system")
                .reason("approval expired undecided")
                .detail(serde_json::json!({ "approval": id }));
            if self.store.expire_approval(&id, now, vec![event]).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}
