//! Instances, tasks and the grants issued under them.

use super::*;
use crate::LiveCounts;

#[async_trait]
impl TaskStore for SqlStore {
    async fn create_instance(
        &self,
        instance: &Instance,
        join_token_hash: Option<&str>,
        grant: &Grant,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (i, g, jt) = (
            instance.clone(),
            grant.clone(),
            join_token_hash.map(str::to_owned),
        );
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let now = i.created_at;
            if agent_quarantined(ctx.tx, i.agent.as_str())? {
                return Err(StoreError::Quarantined);
            }
            if let Some(hash) = jt {
                let row: Option<(String, i64, Option<i64>)> = ctx
                    .tx
                    .query_row(
                        "SELECT agent, expires_at, used_at FROM join_tokens WHERE hash = ?1",
                        params![&hash],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                    .map_err(db)?;
                let (agent, expires_at, used_at) = row.ok_or(JoinTokenError::Unknown)?;
                if agent != i.agent.as_str() {
                    return Err(JoinTokenError::WrongAgent.into());
                }
                if used_at.is_some() {
                    return Err(JoinTokenError::Used.into());
                }
                if now.millis() >= expires_at {
                    return Err(JoinTokenError::Expired.into());
                }
                ctx.tx
                    .execute(
                        "UPDATE join_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
                        params![hash, now.millis()],
                    )
                    .map_err(db)?;
            }
            ctx.tx
                .execute(
                    "INSERT INTO instances (id, agent, attestation, created_at, expires_at, jkt) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        i.id.as_str(),
                        i.agent.as_str(),
                        i.attestation,
                        i.created_at.millis(),
                        i.expires_at.millis(),
                        i.jkt
                    ],
                )
                .map_err(insert_err(format!("instance {}", i.id)))?;
            insert_grant(ctx.tx, &g)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        let id = id.to_string();
        self.read_quick(move |c| {
            type Row = (String, String, String, i64, i64, Option<i64>, Option<String>);
            let row: Option<Row> = c
                .query_row(
                    "SELECT id, agent, attestation, created_at, expires_at, revoked_at, jkt FROM instances WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(id, agent, attestation, created_at, expires_at, revoked_at, jkt)| {
                Ok(Instance {
                    id: parse("instance id", &id)?,
                    agent: parse("agent name", &agent)?,
                    attestation,
                    created_at: ts(created_at),
                    expires_at: ts(expires_at),
                    revoked_at: revoked_at.map(ts),
                    jkt,
                })
            })
            .transpose()
        })
        .await
    }

    async fn live_instances(
        &self,
        agent: &AgentName,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(Instance, u64)>> {
        let agent = agent.to_string();
        self.read(move |c| {
            type Row = (String, String, String, i64, i64, Option<i64>, Option<String>, i64);
            let mut stmt = c
                .prepare(
                    "SELECT i.id, i.agent, i.attestation, i.created_at, i.expires_at, i.revoked_at, i.jkt, \
                            (SELECT COUNT(*) FROM tasks t WHERE t.agent = i.agent AND t.instance_id = i.id AND t.status = 'active') \
                     FROM instances i WHERE i.agent = ?1 AND i.revoked_at IS NULL AND i.expires_at > ?2 \
                     ORDER BY i.created_at DESC, i.id LIMIT ?3",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![agent, now.millis(), limit], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                })
                .map_err(db)?;
            rows.map(|r| {
                let (id, agent, attestation, created_at, expires_at, revoked_at, jkt, tasks): Row =
                    r.map_err(db)?;
                Ok((
                    Instance {
                        id: parse("instance id", &id)?,
                        agent: parse("agent name", &agent)?,
                        attestation,
                        created_at: ts(created_at),
                        expires_at: ts(expires_at),
                        revoked_at: revoked_at.map(ts),
                        jkt,
                    },
                    u64::try_from(tasks).unwrap_or(0),
                ))
            })
            .collect()
        })
        .await
    }

    async fn create_task(&self, task: &Task, grant: &Grant, audit: Vec<AuditEvent>) -> Result<()> {
        let (t, g) = (task.clone(), grant.clone());
        let caps = to_json(&t.capabilities)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            task_preconditions(ctx.tx, &t)?;
            insert_task(ctx.tx, &t, &caps, 0)?;
            insert_grant(ctx.tx, &g)?;
            ctx.audit(t.created_at, &audit)
        })
        .await
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>> {
        let id = id.to_string();
        self.read_quick(move |c| load_task(c, &id)).await
    }

    async fn heartbeat_task(
        &self,
        id: &TaskId,
        lease_expires_at: Timestamp,
        grant: &Grant,
        audit: Vec<AuditEvent>,
    ) -> Result<Task> {
        let (id, g) = (id.to_string(), grant.clone());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let now = g.issued_at;
            let task = load_task(ctx.tx, &id)?.ok_or(StoreError::NotFound("task"))?;
            if task.status != TaskStatus::Active {
                return Err(StoreError::NotActive(task.status.as_str()));
            }
            if now >= task.lease_expires_at || now >= task.expires_at {
                return Err(StoreError::NotActive("lapsed"));
            }
            // A heartbeat only ever extends, and never past the hard end.
            let lease = lease_expires_at
                .min(task.expires_at)
                .max(task.lease_expires_at);
            ctx.tx
                .execute(
                    "UPDATE tasks SET lease_expires_at = ?2 WHERE id = ?1",
                    params![id, lease.millis()],
                )
                .map_err(db)?;
            insert_grant(ctx.tx, &g)?;
            ctx.audit(now, &audit)?;
            Ok(Task {
                lease_expires_at: lease,
                ..task
            })
        })
        .await
    }

    async fn end_task(
        &self,
        id: &TaskId,
        end: TaskEnd,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<Option<Ended>> {
        let id = id.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let task = load_task(ctx.tx, &id)?.ok_or(StoreError::NotFound("task"))?;
            if task.status != TaskStatus::Active {
                return Ok(None);
            }
            let (status, reason) = match &end {
                TaskEnd::Completed => (TaskStatus::Completed, "completed".to_owned()),
                TaskEnd::Revoked(why) => (TaskStatus::Revoked, why.clone()),
                TaskEnd::Lapsed => {
                    if now < task.lease_expires_at && now < task.expires_at {
                        return Ok(None);
                    }
                    let why = if now >= task.expires_at {
                        "hard lifetime reached"
                    } else {
                        "lease lapsed"
                    };
                    (TaskStatus::Expired, why.to_owned())
                }
            };
            let (revoked_tokens, descendants) = end_tree(ctx.tx, &id, status, &reason, now)?;
            ctx.audit(now, &audit)?;
            Ok(Some(Ended {
                task: Task {
                    status,
                    ended_at: Some(now),
                    end_reason: Some(reason),
                    ..task
                },
                revoked_tokens,
                descendants,
            }))
        })
        .await
    }

    async fn task_tree(&self, id: &TaskId) -> Result<Vec<Task>> {
        let id = id.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "WITH RECURSIVE tree(id, d) AS ( \
                       SELECT ?1, 0 UNION ALL SELECT t.id, tree.d + 1 FROM tasks t JOIN tree ON t.parent_id = tree.id) \
                     SELECT {cols} FROM tasks JOIN tree ON tasks.id = tree.id ORDER BY tree.d, tasks.created_at",
                    cols = TASK_COLS
                        .split(", ")
                        .map(|c| format!("tasks.{}", c.trim()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .map_err(db)?;
            let rows = stmt.query_map(params![id], task_row).map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(task_from)).collect()
        })
        .await
    }

    async fn task_tree_grants(&self, id: &TaskId) -> Result<Vec<(Grant, Option<Timestamp>)>> {
        let id = id.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "WITH RECURSIVE tree(id) AS ( \
                       SELECT ?1 UNION ALL SELECT t.id FROM tasks t JOIN tree ON t.parent_id = tree.id) \
                     SELECT g.jti, g.kind, g.agent, g.instance_id, g.task_id, g.issued_at, g.expires_at, \
                            g.revoked_at, g.jkt, g.audience \
                     FROM grants g JOIN tree ON g.task_id = tree.id ORDER BY g.issued_at, g.jti",
                )
                .map_err(db)?;
            type Raw = (
                String,
                String,
                String,
                String,
                Option<String>,
                i64,
                i64,
                Option<i64>,
                Option<String>,
                Option<String>,
            );
            let rows = stmt
                .query_map(params![id], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                    ))
                })
                .map_err(db)?;
            rows.map(|r| {
                let (jti, kind, agent, instance, task, issued, expires, revoked, jkt, audience): Raw =
                    r.map_err(db)?;
                Ok((
                    Grant {
                        kind: GrantKind::parse(&kind)
                            .ok_or_else(|| StoreError::Corrupt(format!("grant kind {kind}")))?,
                        agent: parse("agent name", &agent)?,
                        instance_id: parse("instance id", &instance)?,
                        task_id: task.as_deref().map(|t| parse("task id", t)).transpose()?,
                        issued_at: ts(issued),
                        expires_at: ts(expires),
                        jti,
                        jkt,
                        audience,
                    },
                    revoked.map(ts),
                ))
            })
            .collect()
        })
        .await
    }

    async fn lapsed_tasks(&self, now: Timestamp, limit: u32) -> Result<Vec<TaskId>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id FROM tasks WHERE status = 'active' \
                     AND (lease_expires_at <= ?1 OR expires_at <= ?1) \
                     ORDER BY lease_expires_at LIMIT ?2",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![now.millis(), limit], |r| r.get::<_, String>(0))
                .map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(|s| parse("task id", &s)))
                .collect()
        })
        .await
    }

    async fn grant_state(&self, jti: &str) -> Result<Option<GrantState>> {
        let jti = jti.to_owned();
        self.read_quick(move |c| {
            struct Raw {
                jti: String,
                kind: String,
                agent: String,
                instance_id: String,
                task_id: Option<String>,
                issued_at: i64,
                expires_at: i64,
                revoked_at: Option<i64>,
                quarantined: Option<bool>,
                instance_row: Option<String>,
                instance_revoked_at: Option<i64>,
                task_status: Option<String>,
                jkt: Option<String>,
                audience: Option<String>,
                deadline: Option<i64>,
            }
            let raw = c
                .query_row(
                    "SELECT g.jti, g.kind, g.agent, g.instance_id, g.task_id, g.issued_at, g.expires_at, \
                            g.revoked_at, a.quarantined, i.id, i.revoked_at, t.status, g.jkt, g.audience, \
                            CASE WHEN t.lease_expires_at < t.expires_at THEN t.lease_expires_at ELSE t.expires_at END \
                     FROM grants g \
                     LEFT JOIN agents a ON a.name = g.agent \
                     LEFT JOIN instances i ON i.id = g.instance_id \
                     LEFT JOIN tasks t ON t.id = g.task_id \
                     WHERE g.jti = ?1",
                    params![jti],
                    |r| {
                        Ok(Raw {
                            jti: r.get(0)?,
                            kind: r.get(1)?,
                            agent: r.get(2)?,
                            instance_id: r.get(3)?,
                            task_id: r.get(4)?,
                            issued_at: r.get(5)?,
                            expires_at: r.get(6)?,
                            revoked_at: r.get(7)?,
                            quarantined: r.get(8)?,
                            instance_row: r.get(9)?,
                            instance_revoked_at: r.get(10)?,
                            task_status: r.get(11)?,
                            jkt: r.get(12)?,
                            audience: r.get(13)?,
                            deadline: r.get(14)?,
                        })
                    },
                )
                .optional()
                .map_err(db)?;
            let Some(raw) = raw else {
                return Ok(None);
            };
            let task_status = match (&raw.task_id, &raw.task_status) {
                (None, _) => None,
                (Some(_), Some(s)) => Some(
                    TaskStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("task status {s}")))?,
                ),
                // A grant whose task row is missing is treated as ended.
                (Some(_), None) => Some(TaskStatus::Revoked),
            };
            Ok(Some(GrantState {
                grant: Grant {
                    kind: GrantKind::parse(&raw.kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("grant kind {}", raw.kind)))?,
                    agent: parse("agent name", &raw.agent)?,
                    instance_id: parse("instance id", &raw.instance_id)?,
                    task_id: raw.task_id.as_deref().map(|t| parse("task id", t)).transpose()?,
                    issued_at: ts(raw.issued_at),
                    expires_at: ts(raw.expires_at),
                    jti: raw.jti,
                    jkt: raw.jkt,
                    audience: raw.audience,
                },
                revoked_at: raw.revoked_at.map(ts),
                // A missing agent or instance row counts as dead, never alive.
                agent_quarantined: raw.quarantined.unwrap_or(true),
                instance_revoked: raw.instance_row.is_none() || raw.instance_revoked_at.is_some(),
                task_deadline: match task_status {
                    Some(TaskStatus::Active) => raw.deadline.map(ts),
                    _ => None,
                },
                task_status,
            }))
        })
        .await
    }

    async fn record_grant(&self, grant: &Grant, audit: Vec<AuditEvent>) -> Result<()> {
        let g = grant.clone();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let task = g.task_id.as_ref().ok_or(StoreError::NotFound("task"))?;
            let status: String = ctx
                .tx
                .query_row(
                    "SELECT status FROM tasks WHERE id = ?1",
                    params![task.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound("task"))?;
            if status != "active" {
                return Err(StoreError::NotActive("task ended"));
            }
            let deadline: i64 = ctx
                .tx
                .query_row(
                    "SELECT CASE WHEN lease_expires_at < expires_at THEN lease_expires_at ELSE expires_at END FROM tasks WHERE id = ?1",
                    params![task.as_str()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if g.issued_at.millis() >= deadline {
                return Err(StoreError::NotActive("lapsed"));
            }
            if agent_quarantined(ctx.tx, g.agent.as_str())? {
                return Err(StoreError::Quarantined);
            }
            insert_grant(ctx.tx, &g)?;
            ctx.audit(g.issued_at, &audit)
        })
        .await
    }

    async fn revoke_grant(
        &self,
        jti: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<Option<Revoked>> {
        let jti = jti.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let live: Option<(String, String)> = ctx
                .tx
                .query_row(
                    "SELECT kind, instance_id FROM grants WHERE jti = ?1 AND revoked_at IS NULL",
                    params![&jti],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            let Some((kind, instance)) = live else {
                return Ok(None);
            };
            let mut out = Revoked {
                revoked_tokens: revoke_where(ctx.tx, "jti = ?1", &jti, now)?,
                ended_tasks: 0,
            };
            if kind == GrantKind::InstanceToken.as_str() {
                let (tokens, tasks) = end_instance(ctx.tx, &instance, "instance revoked", now)?;
                out.revoked_tokens += tokens;
                out.ended_tasks += tasks;
            }
            ctx.audit(now, &audit)?;
            Ok(Some(out))
        })
        .await
    }

    async fn activate_task(
        &self,
        id: &TaskId,
        lease_expires_at: Timestamp,
        expires_at: Timestamp,
        grant: &Grant,
        audit: Vec<AuditEvent>,
    ) -> Result<Task> {
        let (id, g) = (id.to_string(), grant.clone());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let task = load_task(ctx.tx, &id)?.ok_or(StoreError::NotFound("task"))?;
            if task.status != TaskStatus::PendingApproval {
                return Err(StoreError::NotActive(task.status.as_str()));
            }
            let approved: Option<String> = ctx
                .tx
                .query_row("SELECT status FROM approvals WHERE task_id = ?1", params![&id], |r| r.get(0))
                .optional()
                .map_err(db)?;
            if approved.as_deref() != Some("approved") {
                return Err(StoreError::NotActive("not approved"));
            }
            let probe = Task {
                created_at: g.issued_at,
                ..task.clone()
            };
            task_preconditions(ctx.tx, &probe)?;
            ctx.tx
                .execute(
                    "UPDATE tasks SET status = 'active', lease_expires_at = ?2, expires_at = ?3 WHERE id = ?1",
                    params![id, lease_expires_at.millis(), expires_at.millis()],
                )
                .map_err(db)?;
            insert_grant(ctx.tx, &g)?;
            ctx.audit(g.issued_at, &audit)?;
            Ok(Task {
                status: TaskStatus::Active,
                lease_expires_at,
                expires_at,
                ..task
            })
        })
        .await
    }

    async fn list_tasks(&self, exceptions_only: bool, limit: u32) -> Result<Vec<Task>> {
        self.read(move |c| {
            let filter = if exceptions_only {
                "WHERE exception = 1 AND status = 'active'"
            } else {
                ""
            };
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {TASK_COLS} FROM tasks {filter} ORDER BY created_at DESC LIMIT ?1"
                ))
                .map_err(db)?;
            let rows = stmt.query_map(params![limit], task_row).map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(task_from)).collect()
        })
        .await
    }

    async fn search_tasks(&self, q: &crate::TaskSearch) -> Result<(Vec<Task>, u64)> {
        let q = q.clone();
        self.read(move |c| {
            // `\` escapes the wildcards of LIKE: the text is matched as written.
            let text = q.text.as_deref().map(|t| {
                let escaped = t
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                format!("%{escaped}%")
            });
            let filter = "WHERE (CAST(?1 AS TEXT) IS NULL OR status = ?1) \
                 AND (CAST(?2 AS TEXT) IS NULL OR agent = ?2) \
                 AND (CAST(?3 AS TEXT) IS NULL OR id LIKE ?3 ESCAPE '\\' OR intent LIKE ?3 ESCAPE '\\' \
                 OR on_behalf_of LIKE ?3 ESCAPE '\\')";
            let total = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM tasks {filter}"),
                    params![q.status, q.agent, text],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(db)?;
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {TASK_COLS} FROM tasks {filter} \
                     ORDER BY created_at DESC, id LIMIT ?4 OFFSET ?5"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(
                    params![q.status, q.agent, text, q.limit, q.offset],
                    task_row,
                )
                .map_err(db)?;
            let tasks = rows
                .map(|r| r.map_err(db).and_then(task_from))
                .collect::<Result<Vec<_>>>()?;
            Ok((tasks, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    async fn live_counts(&self, now: Timestamp) -> Result<LiveCounts> {
        self.read(move |c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM tasks WHERE status = 'active'), \
                        (SELECT COUNT(*) FROM grants WHERE revoked_at IS NULL AND expires_at > ?1), \
                        (SELECT COUNT(*) FROM approvals WHERE status = 'pending') \
                        + (SELECT COUNT(*) FROM call_approvals WHERE status = 'pending')",
                params![now.millis()],
                |r| {
                    Ok(LiveCounts {
                        tasks: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        grants: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        approvals_pending: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    })
                },
            )
            .map_err(db)
        })
        .await
    }
}
