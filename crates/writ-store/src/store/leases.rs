//! Dynamic database credentials (roles leased to tasks).

use super::*;

#[async_trait]
impl LeaseStore for SqlStore {
    async fn create_db_lease(
        &self,
        lease: &DbLease,
        max_live: u32,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let l = lease.clone();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let live: i64 = ctx
                .tx
                .query_row(
                    "SELECT COUNT(*) FROM db_leases WHERE task_id = ?1 AND dropped_at IS NULL",
                    params![l.task_id.as_str()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if live >= i64::from(max_live) {
                return Err(StoreError::Conflict(format!(
                    "task {} already holds {live} live database roles",
                    l.task_id
                )));
            }
            let row: (String, i64) = ctx
                .tx
                .query_row(
                    "SELECT status, CASE WHEN lease_expires_at < expires_at THEN lease_expires_at ELSE expires_at END \
                     FROM tasks WHERE id = ?1",
                    params![l.task_id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound("task"))?;
            if row.0 != "active" {
                return Err(StoreError::NotActive("task ended"));
            }
            if l.created_at.millis() >= row.1 {
                return Err(StoreError::NotActive("lapsed"));
            }
            ctx.tx
                .execute(
                    "INSERT INTO db_leases (role, task_id, tool, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        l.role,
                        l.task_id.as_str(),
                        l.tool.as_str(),
                        l.created_at.millis(),
                        l.expires_at.millis()
                    ],
                )
                .map_err(insert_err(format!("database role {}", l.role)))?;
            ctx.audit(l.created_at, &audit)
        })
        .await
    }

    async fn confirm_db_lease(
        &self,
        role: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let role = role.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let row: Option<(String, i64)> = ctx
                .tx
                .query_row(
                    "SELECT t.status, CASE WHEN t.lease_expires_at < t.expires_at \
                     THEN t.lease_expires_at ELSE t.expires_at END \
                     FROM db_leases l JOIN tasks t ON t.id = l.task_id \
                     WHERE l.role = ?1 AND l.dropped_at IS NULL",
                    params![role],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            match row {
                Some((status, deadline)) if status == "active" && now.millis() < deadline => {}
                _ => return Err(StoreError::NotActive("task ended")),
            }
            ctx.tx
                .execute(
                    "UPDATE db_leases SET created = 1 WHERE role = ?1",
                    params![role],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn retry_db_lease(&self, role: &str, at: Timestamp) -> Result<()> {
        let role = role.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "UPDATE db_leases SET retry_at = ?2 WHERE role = ?1",
                    params![role, at.millis()],
                )
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn overdue_db_leases(
        &self,
        now: Timestamp,
        unconfirmed_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<DbLease>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT l.role, l.task_id, l.tool, l.created_at, l.expires_at \
                     FROM db_leases l JOIN tasks t ON t.id = l.task_id \
                     WHERE l.dropped_at IS NULL AND l.retry_at <= ?1 AND ( \
                       (l.created = 1 AND (t.status != 'active' OR l.expires_at <= ?1)) \
                       OR (l.created = 0 AND l.created_at <= ?2)) \
                     ORDER BY l.retry_at, l.created_at, l.role LIMIT ?3",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(
                    params![now.millis(), unconfirmed_before.millis(), limit],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .map_err(db)?;
            rows.map(|r| {
                let (role, task, tool, created_at, expires_at) = r.map_err(db)?;
                Ok(DbLease {
                    role,
                    task_id: parse("task id", &task)?,
                    tool: parse("tool name", &tool)?,
                    created_at: ts(created_at),
                    expires_at: ts(expires_at),
                })
            })
            .collect()
        })
        .await
    }

    async fn db_lease_dropped(
        &self,
        role: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        let role = role.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE db_leases SET dropped_at = ?2 WHERE role = ?1 AND dropped_at IS NULL",
                    params![role, now.millis()],
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
}
