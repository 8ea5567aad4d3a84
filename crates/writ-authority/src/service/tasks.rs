//! Tasks: start (a policy decision), heartbeat, complete, read.

use writ_core::api::{
    Approval, ApprovalStatus, MAX_INTENT, StartTask, Task, TaskEnded, TaskPending, TaskStatus,
    TaskToken, check_intent, check_on_behalf_of,
};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::lifetime::Lifetime;
use writ_core::scope;
use writ_core::{TaskId, Timestamp};
use writ_policy::{Facts, InstanceFacts, TaskAsk, Verdict};
use writ_store::{StoreError, TaskEnd};

use std::sync::Arc;

use writ_core::Clock;
use writ_store::Store;

use super::feed::Revocations;
use super::policies::Policies;
use super::subjects::Subjects;
use super::tokens::{Issued, Tokens};
use crate::config::BrokerConfig;

use super::{AgentCaller, Caller};
use crate::error::Error;
use crate::metrics::{self, Metrics};

const MAX_CAPABILITIES: usize = 32;

/// A task start (or a heartbeat of a pending task): a token, or a wait.
#[derive(Debug)]
pub enum Started {
    Token(TaskToken),
    Pending(TaskPending),
}

impl Started {
    /// The token, or the pending task if a person must decide first.
    pub fn into_token(self) -> Result<TaskToken, TaskPending> {
        match self {
            Started::Token(t) => Ok(t),
            Started::Pending(p) => Err(p),
        }
    }
}

/// Tasks: starting them (a decision), heartbeats, completion, reading
/// and ending them.
pub struct Tasks {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Arc<BrokerConfig>,
    policies: Arc<Policies>,
    subjects: Arc<Subjects>,
    tokens: Arc<Tokens>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
}

impl Tasks {
    pub(super) fn new(h: &super::Handles, subjects: &Arc<Subjects>, tokens: &Arc<Tokens>) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            config: Arc::clone(&h.config),
            policies: Arc::clone(&h.policies),
            subjects: Arc::clone(subjects),
            tokens: Arc::clone(tokens),
            revocations: Arc::clone(&h.revocations),
            metrics: Arc::clone(&h.metrics),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Decides and, if allowed, starts a task for the calling instance.
    pub async fn start(&self, caller: &AgentCaller, req: StartTask) -> Result<Started, Error> {
        if caller.task_id().is_some() {
            return Err(Error::Forbidden(
                "start tasks with the instance token, not a task token".into(),
            ));
        }
        let intent = checked_intent(&req)?;
        let (ttl, exception) = self.task_lifetime(&req)?;
        let capabilities = scope::normalize(&req.capabilities);
        let tools = self.tools_for(&capabilities).await?;
        let agent = self.subjects.agent(caller.agent()).await?;
        if agent.quarantined {
            return Err(Error::Quarantined("agent is quarantined".into()));
        }
        let attestation = self
            .store
            .get_instance(caller.instance_id())
            .await?
            .map(|i| i.attestation)
            .ok_or_else(|| Error::Unauthenticated("instance is not known".into()))?;

        let now = self.now();
        let policy = self.policies.live();
        let behaviour = self.subjects.behaviour(caller.agent(), now).await?;
        let ask = TaskAsk {
            intent,
            capabilities: &capabilities,
            on_behalf_of: req.on_behalf_of.as_deref(),
            ttl,
            exception,
        };
        let facts = Facts::start_task(
            &agent,
            InstanceFacts {
                id: caller.instance_id().as_str(),
                attestation: &attestation,
            },
            &ask,
            tools.iter().collect(),
            behaviour,
            now,
        );
        let decision = self.policies.decide(&policy, &facts).await?;
        let lifetime = Lifetime::new(now, ttl).capped(decision.max_ttl());
        let ttl = lifetime.secs();
        let request_detail = serde_json::json!({
            "intent": intent,
            "capabilities": capabilities,
            "ttl": ttl,
            "exception": exception,
            "justification": req.justification,
            "verdict": decision.verdict().as_str(),
            "reason": decision.reason(),
        });
        let held = match decision.verdict() {
            Verdict::Allow => false,
            Verdict::NeedsApproval => true,
            Verdict::Deny => {
                metrics::inc(&self.metrics.tasks_denied);
                // The instance asked: the refusal counts against its agent.
                self.subjects.count_denial(caller.agent(), now).await?;
                let event = AuditEvent::new(AuditKind::TaskStart, Outcome::Deny, caller.actor())
                    .agent(caller.agent())
                    .instance(caller.instance_id())
                    .on_behalf_of(req.on_behalf_of.as_ref())
                    .policy(
                        decision.policy_version(),
                        decision.determining_policies().to_vec(),
                    )
                    .reason(decision.reason())
                    .detail(request_detail);
                self.store.append_audit(now, vec![event]).await?;
                return Err(Error::Denied(decision));
            }
        };

        let task_id = TaskId::generate()?;
        let expires_at = lifetime.end();
        let task = Task {
            task_id: task_id.clone(),
            agent: agent.name.clone(),
            instance_id: caller.instance_id().clone(),
            intent: intent.to_owned(),
            capabilities,
            on_behalf_of: req.on_behalf_of,
            status: TaskStatus::Active,
            created_at: now,
            lease_expires_at: Lifetime::new(now, self.config.lease_ttl)
                .within(expires_at)
                .end(),
            expires_at,
            ended_at: None,
            end_reason: None,
            policy_version: decision.policy_version().to_owned(),
            parent_task_id: None,
            depth: 0,
            exception,
        };
        if held {
            return self
                .request_approval(
                    caller,
                    task,
                    ttl,
                    req.justification,
                    &decision,
                    request_detail,
                )
                .await
                .map(Started::Pending);
        }
        let Issued {
            token,
            grant,
            exp,
            event: issued,
        } = self
            .tokens
            .task_token(&task, &agent.spiffe_id, None, caller.jkt.clone(), None, now)?;
        let audit = vec![
            AuditEvent::new(AuditKind::TaskStart, Outcome::Success, caller.actor())
                .agent(&task.agent)
                .instance(&task.instance_id)
                .task(&task_id)
                .on_behalf_of(task.on_behalf_of.as_ref())
                .policy(
                    decision.policy_version(),
                    decision.determining_policies().to_vec(),
                )
                .reason(decision.reason())
                .detail(request_detail),
            issued,
        ];
        self.store.create_task(&task, &grant, audit).await?;
        metrics::inc(&self.metrics.tasks_started);
        metrics::inc(&self.metrics.tokens_issued);
        Ok(Started::Token(token_response(
            &task,
            token,
            now,
            exp,
            caller.jkt.is_some(),
        )))
    }

    /// The lifetime a task start asks for, and whether it is an exception
    /// (beyond the maximum, up to the longest exception, with a reason).
    fn task_lifetime(&self, req: &StartTask) -> Result<(i64, bool), Error> {
        let max = self.config.max_task_ttl;
        let max_exception = self.config.max_exception_ttl;
        let lifetime = match req.ttl {
            None => (self.config.default_task_ttl.min(max), false),
            Some(t) => {
                let t = i64::try_from(t).unwrap_or(i64::MAX);
                if t < 1 {
                    return Err(Error::Invalid("ttl must be at least 1 second".into()));
                }
                if t <= max {
                    (t, false)
                } else if t > max_exception {
                    return Err(Error::Invalid(format!(
                        "ttl exceeds the maximum task lifetime of {max} seconds and the longest exception of \
                         {max_exception} seconds"
                    )));
                } else if req
                    .justification
                    .as_deref()
                    .is_none_or(|j| j.trim().is_empty())
                {
                    return Err(Error::Invalid(format!(
                        "ttl exceeds the maximum task lifetime of {max} seconds: an exception needs a justification \
                         (and a policy that allows it, and approval)"
                    )));
                } else {
                    (t, true)
                }
            }
        };
        if req
            .justification
            .as_deref()
            .is_some_and(|j| j.len() > MAX_INTENT || j.chars().any(char::is_control))
        {
            return Err(Error::Invalid(format!(
                "justification must be at most {MAX_INTENT} printable characters"
            )));
        }
        Ok(lifetime)
    }

    /// The registered tools of `capabilities`, each holding the scopes asked.
    async fn tools_for(
        &self,
        capabilities: &[writ_core::Capability],
    ) -> Result<Vec<writ_core::api::Tool>, Error> {
        let mut tools = Vec::with_capacity(capabilities.len());
        for cap in capabilities {
            let tool = self
                .store
                .get_tool(&cap.tool)
                .await?
                .ok_or_else(|| Error::Invalid(format!("unknown tool {}", cap.tool)))?;
            if let Some(s) = cap.scopes.iter().find(|s| !tool.scopes.contains(s)) {
                return Err(Error::Invalid(format!(
                    "tool {} has no scope {s}",
                    cap.tool
                )));
            }
            tools.push(tool);
        }
        Ok(tools)
    }

    /// Extends the lease (never past the task's hard end) and returns a
    /// fresh task token.
    pub async fn heartbeat(&self, caller: &AgentCaller, id: &TaskId) -> Result<Started, Error> {
        let task = self.owned_task(caller, id).await?;
        match task.status {
            TaskStatus::PendingApproval => return self.poll_approval(caller, task).await,
            TaskStatus::Denied => {
                let why = self
                    .store
                    .approval_for_task(id)
                    .await?
                    .and_then(|a| a.reason)
                    .unwrap_or_default();
                return Err(Error::ApprovalRefused(format!("approval denied: {why}")));
            }
            TaskStatus::Expired
                if self
                    .store
                    .approval_for_task(id)
                    .await?
                    .is_some_and(|a| a.status == ApprovalStatus::Expired) =>
            {
                return Err(Error::ApprovalRefused("approval expired undecided".into()));
            }
            _ => {}
        }
        if task.status != TaskStatus::Active {
            return Err(Error::TaskEnded(format!(
                "task is not active ({})",
                task.status.as_str()
            )));
        }
        let now = self.now();
        let lease = Lifetime::new(now, self.config.lease_ttl)
            .within(task.expires_at)
            .end();
        // The renewed token names the same subject and chain, bound to the
        // key the instance proved (its instance's key).
        let lineage = self.subjects.lineage(&task).await?;
        let (sub, act) = self.subjects.subject_and_actors(&lineage)?;
        let Issued {
            token,
            grant,
            exp,
            event: issued,
        } = self
            .tokens
            .task_token(&task, &sub, act, caller.jkt.clone(), None, now)?;
        let audit = vec![
            AuditEvent::new(AuditKind::TaskHeartbeat, Outcome::Success, caller.actor())
                .agent(&task.agent)
                .instance(&task.instance_id)
                .task(id)
                .detail(serde_json::json!({ "lease_expires_at": lease })),
            issued,
        ];
        let task = self.store.heartbeat_task(id, lease, &grant, audit).await?;
        metrics::inc(&self.metrics.tokens_issued);
        Ok(Started::Token(token_response(
            &task,
            token,
            now,
            exp,
            caller.jkt.is_some(),
        )))
    }

    /// Ends a task and revokes every grant issued under it.
    pub async fn complete(&self, caller: &Caller, id: &TaskId) -> Result<TaskEnded, Error> {
        let (end, actor) = match caller {
            Caller::Operator(op) => {
                op.require(writ_core::api::Duty::Operate)?;
                self.task(id).await?;
                (
                    TaskEnd::Revoked(format!("ended by {}", op.actor())),
                    op.actor(),
                )
            }
            Caller::Agent(a) => {
                self.owned_task(a, id).await?;
                (TaskEnd::Completed, a.actor())
            }
        };
        let now = self.now();
        let task = self.task(id).await?;
        let event = AuditEvent::new(AuditKind::TaskEnd, Outcome::Success, actor)
            .agent(&task.agent)
            .instance(&task.instance_id)
            .task(id)
            .on_behalf_of(task.on_behalf_of.as_ref())
            .reason(match &end {
                TaskEnd::Revoked(why) => why.clone(),
                _ => "completed".to_owned(),
            });
        match self.store.end_task(id, end, now, vec![event]).await? {
            Some(ended) => {
                self.revocations.changed().await;
                metrics::add(&self.metrics.tasks_ended, 1 + ended.descendants);
                metrics::add(&self.metrics.tokens_revoked, ended.revoked_tokens);
                Ok(TaskEnded {
                    task_id: ended.task.task_id,
                    status: ended.task.status,
                    revoked_tokens: ended.revoked_tokens,
                    ended_descendants: ended.descendants,
                })
            }
            None => {
                let status = self.task(id).await?.status;
                Err(Error::TaskEnded(format!(
                    "task is not active ({})",
                    status.as_str()
                )))
            }
        }
    }

    /// Reads a task: its own instance or an admin.
    pub async fn show(&self, caller: &Caller, id: &TaskId) -> Result<Task, Error> {
        match caller {
            Caller::Operator(op) => {
                op.require(writ_core::api::Duty::ReadTask)?;
                self.task(id).await
            }
            Caller::Agent(a) => self.owned_task(a, id).await,
        }
    }

    /// Ends a task for a detection rule (`actor` is `rule:<id>`); `false`
    /// if it was not active.
    pub(crate) async fn end_task_by(
        &self,
        id: &TaskId,
        actor: &str,
        rule: &str,
    ) -> Result<bool, Error> {
        let now = self.now();
        let task = self.task(id).await?;
        let event = AuditEvent::new(AuditKind::TaskEnd, Outcome::Success, actor)
            .agent(&task.agent)
            .instance(&task.instance_id)
            .task(id)
            .on_behalf_of(task.on_behalf_of.as_ref())
            .reason(format!("ended by detection rule {rule}"));
        let end = TaskEnd::Revoked(format!("ended by detection rule {rule}"));
        let ended = self.store.end_task(id, end, now, vec![event]).await?;
        if let Some(e) = &ended {
            self.revocations.changed().await;
            metrics::add(&self.metrics.tasks_ended, 1 + e.descendants);
            metrics::add(&self.metrics.tokens_revoked, e.revoked_tokens);
        }
        Ok(ended.is_some())
    }

    /// Ends one lapsed task (lease or hard lifetime); `false` if it was not.
    pub(crate) async fn end_lapsed(&self, id: &TaskId) -> Result<bool, StoreError> {
        let now = self.now();
        let event = AuditEvent::new(AuditKind::TaskEnd, Outcome::Success, "system")
            .task(id)
            .reason("lease lapsed or lifetime reached");
        let ended = self
            .store
            .end_task(id, TaskEnd::Lapsed, now, vec![event])
            .await?;
        if let Some(e) = &ended {
            self.revocations.changed().await;
            metrics::add(&self.metrics.tasks_ended, 1 + e.descendants);
            metrics::add(&self.metrics.tokens_revoked, e.revoked_tokens);
        }
        Ok(ended.is_some())
    }

    /// Records an allowed task that a person must approve first.
    async fn request_approval(
        &self,
        caller: &AgentCaller,
        mut task: Task,
        ttl: i64,
        justification: Option<String>,
        decision: &writ_policy::Decision,
        detail: serde_json::Value,
    ) -> Result<TaskPending, Error> {
        let now = task.created_at;
        task.status = TaskStatus::PendingApproval;
        // The lifetime starts at approval; until then the task holds nothing.
        task.lease_expires_at = now;
        task.expires_at = now;
        let approval = Approval {
            approval_id: writ_core::ApprovalId::generate()?,
            task_id: task.task_id.clone(),
            status: ApprovalStatus::Pending,
            ttl,
            exception: task.exception,
            justification,
            requested_at: now,
            expires_at: now.add_secs(self.config.approval_ttl),
            decided_at: None,
            reason: None,
            decided_by: None,
            on_behalf_of_may_approve: decision.on_behalf_of_may_approve(),
            task: task.clone(),
            call: None,
        };
        let event = AuditEvent::new(AuditKind::TaskStart, Outcome::Success, caller.actor())
            .agent(&task.agent)
            .instance(&task.instance_id)
            .task(&task.task_id)
            .on_behalf_of(task.on_behalf_of.as_ref())
            .policy(
                decision.policy_version(),
                decision.determining_policies().to_vec(),
            )
            .reason(format!("pending approval {}", approval.approval_id))
            .detail(detail);
        self.store
            .create_pending_task(&task, &approval, vec![event])
            .await?;
        Ok(TaskPending {
            task_id: task.task_id,
            status: TaskStatus::PendingApproval,
            approval_id: approval.approval_id,
        })
    }

    /// A pending task's heartbeat: still waiting, or (once approved) its
    /// first token, with its lease and hard lifetime starting now.
    async fn poll_approval(&self, caller: &AgentCaller, task: Task) -> Result<Started, Error> {
        let approval = self
            .store
            .approval_for_task(&task.task_id)
            .await?
            .ok_or_else(|| {
                Error::Internal(format!("pending task {} without approval", task.task_id))
            })?;
        match approval.status {
            ApprovalStatus::Pending => Ok(Started::Pending(TaskPending {
                task_id: task.task_id,
                status: TaskStatus::PendingApproval,
                approval_id: approval.approval_id,
            })),
            ApprovalStatus::Denied => Err(Error::ApprovalRefused(format!(
                "approval denied: {}",
                approval.reason.unwrap_or_default()
            ))),
            ApprovalStatus::Expired => Err(Error::ApprovalRefused("approval expired".into())),
            ApprovalStatus::Approved => {
                let now = self.now();
                let expires_at = Lifetime::new(now, approval.ttl).end();
                let lease = Lifetime::new(now, self.config.lease_ttl)
                    .within(expires_at)
                    .end();
                let live = Task {
                    expires_at,
                    lease_expires_at: lease,
                    status: TaskStatus::Active,
                    ..task
                };
                let Issued {
                    token,
                    grant,
                    exp,
                    event: issued,
                } = self.tokens.task_token(
                    &live,
                    &caller.claims.sub,
                    None,
                    caller.jkt.clone(),
                    None,
                    now,
                )?;
                let audit = vec![
                    AuditEvent::new(AuditKind::TaskStart, Outcome::Success, caller.actor())
                        .agent(&live.agent)
                        .instance(&live.instance_id)
                        .task(&live.task_id)
                        .on_behalf_of(live.on_behalf_of.as_ref())
                        .reason(format!("approved ({})", approval.approval_id))
                        .detail(serde_json::json!({ "exception": live.exception, "expires_at": expires_at })),
                    issued,
                ];
                let task = self
                    .store
                    .activate_task(&live.task_id, lease, expires_at, &grant, audit)
                    .await?;
                metrics::inc(&self.metrics.tasks_started);
                metrics::inc(&self.metrics.tokens_issued);
                Ok(Started::Token(token_response(
                    &task,
                    token,
                    now,
                    exp,
                    caller.jkt.is_some(),
                )))
            }
        }
    }

    async fn task(&self, id: &TaskId) -> Result<Task, Error> {
        self.store
            .get_task(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("task {id} not found")))
    }

    /// The task, if the caller's instance runs it (or the caller holds its
    /// token). Someone else's task is "not found", not "forbidden".
    pub(crate) async fn owned_task(
        &self,
        caller: &AgentCaller,
        id: &TaskId,
    ) -> Result<Task, Error> {
        let task = self.task(id).await?;
        let owns = match caller.task_id() {
            Some(t) => t == id,
            None => &task.instance_id == caller.instance_id(),
        };
        if owns {
            Ok(task)
        } else {
            Err(Error::NotFound(format!("task {id} not found")))
        }
    }

    /// Tasks, newest first; `exceptions`: only live exceptions.
    pub async fn list(&self, exceptions: bool) -> Result<Vec<Task>, Error> {
        Ok(self.store.list_tasks(exceptions, 1000).await?)
    }

    /// Live exceptions, soonest to end first: expiry, owner,
    /// justification, approver and how often each was used.
    pub async fn exceptions(&self) -> Result<Vec<writ_core::api::ExceptionTask>, Error> {
        Ok(self.store.exceptions(1000).await?)
    }
}

/// The request's intent, capabilities and human, checked for shape: the
/// intent (trimmed) if every check passes.
fn checked_intent(req: &StartTask) -> Result<&str, Error> {
    let intent = req.intent.trim();
    if intent.is_empty() {
        return Err(Error::Invalid(format!(
            "intent must be 1 to {MAX_INTENT} printable characters"
        )));
    }
    check_intent(intent).map_err(Error::Invalid)?;
    if req.capabilities.is_empty() || req.capabilities.len() > MAX_CAPABILITIES {
        return Err(Error::Invalid(format!(
            "ask for 1 to {MAX_CAPABILITIES} capabilities"
        )));
    }
    if req.capabilities.iter().any(|c| c.scopes.is_empty()) {
        return Err(Error::Invalid(
            "every capability needs at least one scope".into(),
        ));
    }
    if let Some(obo) = &req.on_behalf_of {
        check_on_behalf_of(obo).map_err(Error::Invalid)?;
    }
    Ok(intent)
}

pub(crate) fn token_response(
    task: &Task,
    token: String,
    now: Timestamp,
    exp: Timestamp,
    bound: bool,
) -> TaskToken {
    TaskToken {
        task_id: task.task_id.clone(),
        access_token: token,
        token_type: if bound { "DPoP" } else { "Bearer" }.into(),
        expires_in: now.secs_until(exp),
        lease_expires_at: task.lease_expires_at,
        scope: scope::to_claim(&task.capabilities),
    }
}
