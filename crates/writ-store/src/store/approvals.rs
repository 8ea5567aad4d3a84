//! Approvals: of task starts, and of single calls held at a gateway.

use super::*;

#[async_trait]
impl ApprovalStore for SqlStore {
    async fn create_pending_task(
        &self,
        task: &Task,
        approval: &Approval,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (t, a) = (task.clone(), approval.clone());
        let caps = to_json(&t.capabilities)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            task_preconditions(ctx.tx, &t)?;
            insert_task(ctx.tx, &t, &caps, a.ttl)?;
            ctx.tx
                .execute(
                    &format!("INSERT INTO approvals ({APPROVAL_COLS}, obo_may_approve) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL, ?9)"),
                    params![
                        a.approval_id.as_str(),
                        a.task_id.as_str(),
                        a.status.as_str(),
                        a.ttl,
                        a.exception,
                        a.justification,
                        a.requested_at.millis(),
                        a.expires_at.millis(),
                        a.on_behalf_of_may_approve
                    ],
                )
                .map_err(insert_err(format!("approval {}", a.approval_id)))?;
            ctx.audit(t.created_at, &audit)
        })
        .await
    }

    async fn get_approval(&self, id: &ApprovalId) -> Result<Option<Approval>> {
        let id = id.to_string();
        self.read(move |c| approval_by_id(c, &id)).await
    }

    async fn approval_for_task(&self, task: &TaskId) -> Result<Option<Approval>> {
        let id = task.to_string();
        self.read(move |c| load_approval(c, "task_id = ?1", &id))
            .await
    }

    async fn list_approvals(&self, pending_only: bool) -> Result<Vec<Approval>> {
        self.read(move |c| {
            // Both kinds in one order; the id breaks ties so the order is
            // the same on every backend.
            let sql = if pending_only {
                "SELECT id, 0 AS is_call, requested_at FROM approvals WHERE status = 'pending' \
                 UNION ALL \
                 SELECT id, 1 AS is_call, requested_at FROM call_approvals WHERE status = 'pending' \
                 ORDER BY requested_at, id"
            } else {
                "SELECT id, 0 AS is_call, requested_at FROM approvals \
                 UNION ALL \
                 SELECT id, 1 AS is_call, requested_at FROM call_approvals \
                 ORDER BY requested_at DESC, id DESC LIMIT 1000"
            };
            load_listed(c, sql, params![])
        })
        .await
    }

    async fn decide_approval(
        &self,
        id: &ApprovalId,
        approve: bool,
        reason: &str,
        decided_by: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<Approval> {
        let (id, reason, by) = (id.to_string(), reason.to_owned(), decided_by.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let a = approval_by_id(ctx.tx, &id)?.ok_or(StoreError::NotFound("approval"))?;
            if a.status != ApprovalStatus::Pending {
                return Err(StoreError::NotActive("approval already decided"));
            }
            if now >= a.expires_at {
                return Err(StoreError::NotActive("approval expired"));
            }
            let status = if approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            ctx.tx
                .execute(
                    &format!(
                        "UPDATE {} SET status = ?2, decided_at = ?3, reason = ?4, decided_by = ?5 \
                         WHERE id = ?1",
                        approval_table(&a)
                    ),
                    params![id, status.as_str(), now.millis(), reason, by],
                )
                .map_err(db)?;
            // Denying one call refuses that call, not the task it was made
            // under.
            if !approve && a.call.is_none() {
                ctx.tx
                    .execute(
                        "UPDATE tasks SET status = 'denied', ended_at = ?2, end_reason = ?3 \
                         WHERE id = ?1 AND status = 'pending_approval'",
                        params![
                            a.task_id.as_str(),
                            now.millis(),
                            format!("approval denied: {reason}")
                        ],
                    )
                    .map_err(db)?;
            }
            ctx.audit(now, &audit)?;
            approval_by_id(ctx.tx, &id)?.ok_or(StoreError::NotFound("approval"))
        })
        .await
    }

    async fn expire_approval(
        &self,
        id: &ApprovalId,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        let id = id.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let Some(a) = approval_by_id(ctx.tx, &id)? else {
                return Ok(false);
            };
            if a.status != ApprovalStatus::Pending || now < a.expires_at {
                return Ok(false);
            }
            ctx.tx
                .execute(
                    &format!(
                        "UPDATE {} SET status = 'expired', decided_at = ?2 WHERE id = ?1",
                        approval_table(&a)
                    ),
                    params![id, now.millis()],
                )
                .map_err(db)?;
            // A call that was never decided leaves its task running.
            if a.call.is_none() {
                ctx.tx
                    .execute(
                        "UPDATE tasks SET status = 'expired', ended_at = ?2, end_reason = 'approval expired' \
                         WHERE id = ?1 AND status = 'pending_approval'",
                        params![a.task_id.as_str(), now.millis()],
                    )
                    .map_err(db)?;
            }
            ctx.audit(now, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn overdue_approvals(&self, now: Timestamp, limit: u32) -> Result<Vec<ApprovalId>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, expires_at FROM approvals WHERE status = 'pending' AND expires_at <= ?1 \
                     UNION ALL \
                     SELECT id, expires_at FROM call_approvals WHERE status = 'pending' AND expires_at <= ?1 \
                     ORDER BY expires_at, id LIMIT ?2",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![now.millis(), limit], |r| r.get::<_, String>(0))
                .map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(|s| parse("approval id", &s))).collect()
        })
        .await
    }

    async fn create_call_approval(
        &self,
        approval: &Approval,
        fingerprint: &str,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (a, fingerprint) = (approval.clone(), fingerprint.to_owned());
        let call = a.call.clone().ok_or_else(|| {
            StoreError::Corrupt(format!("approval {} is not about a call", a.approval_id))
        })?;
        // Whether the call was used is the `used_at` column's alone.
        let call = to_json(&ApprovalCall {
            used_at: None,
            ..call
        })?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let task: (String, String) = ctx
                .tx
                .query_row(
                    "SELECT status, agent FROM tasks WHERE id = ?1",
                    params![a.task_id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound("task"))?;
            // A quarantine expires pending call approvals: one created
            // after it must not slip past.
            if agent_quarantined(ctx.tx, &task.1)? {
                return Err(StoreError::Quarantined);
            }
            if task.0 != "active" {
                return Err(StoreError::NotActive("task ended"));
            }
            // Both tables share one id space, which no key spans.
            let taken = ctx
                .tx
                .query_row(
                    "SELECT 1 FROM approvals WHERE id = ?1",
                    params![a.approval_id.as_str()],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!("approval {}", a.approval_id)));
            }
            ctx.tx
                .execute(
                    &format!(
                        "INSERT INTO call_approvals (fingerprint, {CALL_APPROVAL_COLS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, NULL)"
                    ),
                    params![
                        fingerprint,
                        a.approval_id.as_str(),
                        a.task_id.as_str(),
                        call,
                        a.status.as_str(),
                        a.ttl,
                        a.exception,
                        a.justification,
                        a.requested_at.millis(),
                        a.expires_at.millis()
                    ],
                )
                .map_err(insert_err(format!("approval {}", a.approval_id)))?;
            ctx.audit(a.requested_at, &audit)
        })
        .await
    }

    async fn call_approval(&self, task: &TaskId, fingerprint: &str) -> Result<Option<Approval>> {
        let (task, fingerprint) = (task.to_string(), fingerprint.to_owned());
        self.read_quick(move |c| {
            load_call_approval(
                c,
                "task_id = ?1 AND fingerprint = ?2 ORDER BY requested_at DESC, id DESC LIMIT 1",
                params![task, fingerprint],
            )
        })
        .await
    }

    async fn use_call_approval(
        &self,
        id: &ApprovalId,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        let id = id.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            // One conditional update: writes are serialized, so of two
            // callers racing for a once-only approval exactly one sees a
            // row change.
            let n = ctx
                .tx
                .execute(
                    "UPDATE call_approvals SET used_at = ?2 \
                     WHERE id = ?1 AND status = 'approved' AND used_at IS NULL",
                    params![id, now.millis()],
                )
                .map_err(db)?;
            if n == 0 {
                return Ok(false);
            }
            ctx.audit(now, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn pending_call_approvals(&self, task: &TaskId) -> Result<u32> {
        let task = task.to_string();
        self.read_quick(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM call_approvals WHERE task_id = ?1 AND status = 'pending'",
                params![task],
                |r| r.get::<_, i64>(0),
            )
            .map(saturating_count)
            .map_err(db)
        })
        .await
    }
}
