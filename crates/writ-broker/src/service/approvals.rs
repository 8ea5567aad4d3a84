//! People deciding: approvals of tasks a policy (or an exception) holds back.

use writ_core::ApprovalId;
use writ_core::api::{Approval, DecideApproval, Task};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};

use super::Broker;
use crate::error::ApiError;

impl Broker {
    pub async fn approvals(&self, all: bool) -> Result<Vec<Approval>, ApiError> {
        Ok(self.store.list_approvals(!all).await?)
    }

    /// Approves or denies, with a reason; both are audited.
    pub async fn decide_approval(
        &self,
        id: &ApprovalId,
        approve: bool,
        req: DecideApproval,
    ) -> Result<Approval, ApiError> {
        let reason = req.reason.trim();
        if reason.is_empty() || reason.len() > 1024 || reason.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(
                "a reason of 1 to 1024 printable characters is required".into(),
            ));
        }
        let a = self
            .store
            .get_approval(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("approval {id} not found")))?;
        let event = AuditEvent::new(
            AuditKind::Approval,
            if approve {
                Outcome::Success
            } else {
                Outcome::Deny
            },
            "admin",
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
        }));
        Ok(self
            .store
            .decide_approval(id, approve, reason, self.now(), vec![event])
            .await?)
    }

    /// Expires overdue approvals (and their tasks); returns how many.
    pub(crate) async fn expire_approvals(&self) -> Result<usize, ApiError> {
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

    /// Tasks, newest first; `exceptions`: only live exceptions.
    pub async fn tasks(&self, exceptions: bool) -> Result<Vec<Task>, ApiError> {
        Ok(self.store.list_tasks(exceptions, 1000).await?)
    }
}
