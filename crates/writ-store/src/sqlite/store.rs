//! The [`Store`] implementation for SQLite: one method, one transaction.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use writ_core::api::{Agent, Task, TaskStatus, Tool};
use writ_core::audit::{AuditEvent, AuditRecord};
use writ_core::{AgentName, InstanceId, TaskId, Timestamp, ToolName};

use super::{SqliteStore, WriteCtx, db};
use crate::{
    Grant, GrantKind, GrantState, Instance, JoinTokenError, QuarantineOutcome, Result, Store,
    StoreError, StoredKey, TaskEnd,
};

fn ts(v: i64) -> Timestamp {
    Timestamp::from_millis(v)
}

fn json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad {what}: {s:?}")))
}

/// A unique-constraint failure becomes `Conflict(what)`.
fn insert_err(what: String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(what)
        }
        _ => db(e),
    }
}

const AGENT_COLS: &str = "name, spiffe_id, attestation, attributes, quarantined, created_at";

fn agent_row(r: &Row<'_>) -> rusqlite::Result<(String, String, String, String, bool, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn agent_from(row: (String, String, String, String, bool, i64)) -> Result<Agent> {
    let (name, spiffe_id, attestation, attributes, quarantined, created_at) = row;
    Ok(Agent {
        name: parse("agent name", &name)?,
        spiffe_id,
        attestation: json("attestation", &attestation)?,
        attributes: json("attributes", &attributes)?,
        quarantined,
        created_at: ts(created_at),
    })
}

const TOOL_COLS: &str = "name, audience, scopes, created_at";

fn tool_row(r: &Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn tool_from(row: (String, String, String, i64)) -> Result<Tool> {
    let (name, audience, scopes, created_at) = row;
    Ok(Tool {
        name: parse("tool name", &name)?,
        audience,
        scopes: json("scopes", &scopes)?,
        created_at: ts(created_at),
    })
}

const TASK_COLS: &str = "id, agent, instance_id, intent, capabilities, on_behalf_of, status, created_at, \
                         lease_expires_at, expires_at, ended_at, end_reason, policy_version";

struct TaskRow {
    id: String,
    agent: String,
    instance_id: String,
    intent: String,
    capabilities: String,
    on_behalf_of: Option<String>,
    status: String,
    created_at: i64,
    lease_expires_at: i64,
    expires_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
    policy_version: String,
}

fn task_row(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        agent: r.get(1)?,
        instance_id: r.get(2)?,
        intent: r.get(3)?,
        capabilities: r.get(4)?,
        on_behalf_of: r.get(5)?,
        status: r.get(6)?,
        created_at: r.get(7)?,
        lease_expires_at: r.get(8)?,
        expires_at: r.get(9)?,
        ended_at: r.get(10)?,
        end_reason: r.get(11)?,
        policy_version: r.get(12)?,
    })
}

fn task_from(r: TaskRow) -> Result<Task> {
    Ok(Task {
        task_id: parse("task id", &r.id)?,
        agent: parse("agent name", &r.agent)?,
        instance_id: parse("instance id", &r.instance_id)?,
        intent: r.intent,
        capabilities: json("capabilities", &r.capabilities)?,
        on_behalf_of: r.on_behalf_of,
        status: TaskStatus::parse(&r.status)
            .ok_or_else(|| StoreError::Corrupt(format!("task status {}", r.status)))?,
        created_at: ts(r.created_at),
        lease_expires_at: ts(r.lease_expires_at),
        expires_at: ts(r.expires_at),
        ended_at: r.ended_at.map(ts),
        end_reason: r.end_reason,
        policy_version: r.policy_version,
    })
}

fn load_task(conn: &Connection, id: &str) -> Result<Option<Task>> {
    conn.query_row(
        &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"),
        [id],
        task_row,
    )
    .optional()
    .map_err(db)?
    .map(task_from)
    .transpose()
}

fn insert_grant(conn: &Connection, g: &Grant) -> Result<()> {
    conn.execute(
        "INSERT INTO grants (jti, kind, agent, instance_id, task_id, issued_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            g.jti,
            g.kind.as_str(),
            g.agent.as_str(),
            g.instance_id.as_str(),
            g.task_id.as_ref().map(TaskId::as_str),
            g.issued_at.millis(),
            g.expires_at.millis()
        ],
    )
    .map_err(insert_err(format!("grant {}", g.jti)))?;
    Ok(())
}

/// Revokes the live grants matching `filter` (a WHERE clause over `grants`
/// with `?1` bound to `arg`), feeding each to the revocation feed.
fn revoke_where(conn: &Connection, filter: &str, arg: &str, now: Timestamp) -> Result<u64> {
    conn.execute(
        &format!(
            "INSERT INTO revocations (jti, expires_at, revoked_at) \
             SELECT jti, expires_at, ?2 FROM grants WHERE {filter} AND revoked_at IS NULL AND expires_at > ?2"
        ),
        params![arg, now.millis()],
    )
    .map_err(db)?;
    let n = conn
        .execute(
            &format!("UPDATE grants SET revoked_at = ?2 WHERE {filter} AND revoked_at IS NULL"),
            params![arg, now.millis()],
        )
        .map_err(db)?;
    Ok(n as u64)
}

fn agent_quarantined(conn: &Connection, agent: &str) -> Result<bool> {
    conn.query_row(
        "SELECT quarantined FROM agents WHERE name = ?1",
        [agent],
        |r| r.get::<_, bool>(0),
    )
    .optional()
    .map_err(db)?
    .ok_or(StoreError::NotFound("agent"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn admin_token_valid(&self, hash: &str) -> Result<bool> {
        let hash = hash.to_owned();
        self.read(move |c| {
            c.query_row("SELECT 1 FROM admin_tokens WHERE hash = ?1", [hash], |_| {
                Ok(())
            })
            .optional()
            .map(|o| o.is_some())
            .map_err(db)
        })
        .await
    }

    async fn admin_token_count(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM admin_tokens", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(db)
        })
        .await
    }

    async fn add_admin_token(
        &self,
        hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let hash = hash.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT OR IGNORE INTO admin_tokens (hash, created_at) VALUES (?1, ?2)",
                    params![hash, now.millis()],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT kid, alg, sealed, created_at, retired_at FROM signing_keys ORDER BY created_at")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(StoredKey {
                        kid: r.get(0)?,
                        alg: r.get(1)?,
                        sealed: r.get(2)?,
                        created_at: ts(r.get(3)?),
                        retired_at: r.get::<_, Option<i64>>(4)?.map(ts),
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn add_signing_key(
        &self,
        key: StoredKey,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
                    [now.millis()],
                )
                .map_err(db)?;
            ctx.tx
                .execute(
                    "INSERT INTO signing_keys (kid, alg, sealed, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![key.kid, key.alg, key.sealed, key.created_at.millis()],
                )
                .map_err(insert_err(format!("signing key {}", key.kid)))?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn create_agent(&self, agent: &Agent, audit: Vec<AuditEvent>) -> Result<()> {
        let a = agent.clone();
        let attestation = to_json(&a.attestation)?;
        let attributes = to_json(&a.attributes)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    &format!("INSERT INTO agents ({AGENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![
                        a.name.as_str(),
                        a.spiffe_id,
                        attestation,
                        attributes,
                        a.quarantined,
                        a.created_at.millis()
                    ],
                )
                .map_err(insert_err(format!("agent {}", a.name)))?;
            ctx.audit(a.created_at, &audit)
        })
        .await
    }

    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE name = ?1"),
                [name],
                agent_row,
            )
            .optional()
            .map_err(db)?
            .map(agent_from)
            .transpose()
        })
        .await
    }

    async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(&format!("SELECT {AGENT_COLS} FROM agents ORDER BY name"))
                .map_err(db)?;
            let rows = stmt.query_map([], agent_row).map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(agent_from)).collect()
        })
        .await
    }

    async fn set_quarantine(
        &self,
        name: &AgentName,
        quarantined: bool,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<QuarantineOutcome> {
        let name = name.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let changed = ctx
                .tx
                .execute(
                    "UPDATE agents SET quarantined = ?2 WHERE name = ?1",
                    params![name, quarantined],
                )
                .map_err(db)?;
            if changed == 0 {
                return Err(StoreError::NotFound("agent"));
            }
            let mut out = QuarantineOutcome::default();
            if quarantined {
                out.revoked_tokens = revoke_where(ctx.tx, "agent = ?1", &name, now)?;
                ctx.tx
                    .execute(
                        "UPDATE instances SET revoked_at = ?2 WHERE agent = ?1 AND revoked_at IS NULL",
                        params![name, now.millis()],
                    )
                    .map_err(db)?;
                // Outstanding join tokens die too: a release never revives them.
                ctx.tx
                    .execute(
                        "UPDATE join_tokens SET used_at = ?2 WHERE agent = ?1 AND used_at IS NULL",
                        params![name, now.millis()],
                    )
                    .map_err(db)?;
                out.ended_tasks = ctx
                    .tx
                    .execute(
                        "UPDATE tasks SET status = 'revoked', ended_at = ?2, end_reason = 'agent quarantined' \
                         WHERE agent = ?1 AND status = 'active'",
                        params![name, now.millis()],
                    )
                    .map_err(db)? as u64;
            }
            ctx.audit(now, &audit)?;
            Ok(out)
        })
        .await
    }

    async fn create_join_token(
        &self,
        agent: &AgentName,
        hash: &str,
        expires_at: Timestamp,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (agent, hash) = (agent.to_string(), hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            if agent_quarantined(ctx.tx, &agent)? {
                return Err(StoreError::Quarantined);
            }
            ctx.tx
                .execute(
                    "INSERT INTO join_tokens (hash, agent, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![hash, agent, expires_at.millis(), now.millis()],
                )
                .map_err(insert_err("join token".into()))?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn create_tool(&self, tool: &Tool, audit: Vec<AuditEvent>) -> Result<()> {
        let t = tool.clone();
        let scopes = to_json(&t.scopes)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    &format!("INSERT INTO tools ({TOOL_COLS}) VALUES (?1, ?2, ?3, ?4)"),
                    params![t.name.as_str(), t.audience, scopes, t.created_at.millis()],
                )
                .map_err(insert_err(format!("tool {}", t.name)))?;
            ctx.audit(t.created_at, &audit)
        })
        .await
    }

    async fn get_tool(&self, name: &ToolName) -> Result<Option<Tool>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {TOOL_COLS} FROM tools WHERE name = ?1"),
                [name],
                tool_row,
            )
            .optional()
            .map_err(db)?
            .map(tool_from)
            .transpose()
        })
        .await
    }

    async fn list_tools(&self) -> Result<Vec<Tool>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(&format!("SELECT {TOOL_COLS} FROM tools ORDER BY name"))
                .map_err(db)?;
            let rows = stmt.query_map([], tool_row).map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(tool_from)).collect()
        })
        .await
    }

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
                        [&hash],
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
                    "INSERT INTO instances (id, agent, attestation, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        i.id.as_str(),
                        i.agent.as_str(),
                        i.attestation,
                        i.created_at.millis(),
                        i.expires_at.millis()
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
        self.read(move |c| {
            let row: Option<(String, String, String, i64, i64, Option<i64>)> = c
                .query_row(
                    "SELECT id, agent, attestation, created_at, expires_at, revoked_at FROM instances WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(id, agent, attestation, created_at, expires_at, revoked_at)| {
                Ok(Instance {
                    id: parse("instance id", &id)?,
                    agent: parse("agent name", &agent)?,
                    attestation,
                    created_at: ts(created_at),
                    expires_at: ts(expires_at),
                    revoked_at: revoked_at.map(ts),
                })
            })
            .transpose()
        })
        .await
    }

    async fn create_task(&self, task: &Task, grant: &Grant, audit: Vec<AuditEvent>) -> Result<()> {
        let (t, g) = (task.clone(), grant.clone());
        let caps = to_json(&t.capabilities)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            if agent_quarantined(ctx.tx, t.agent.as_str())? {
                return Err(StoreError::Quarantined);
            }
            let instance: Option<(String, i64, Option<i64>)> = ctx
                .tx
                .query_row(
                    "SELECT agent, expires_at, revoked_at FROM instances WHERE id = ?1",
                    [t.instance_id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            match instance {
                None => return Err(StoreError::NotFound("instance")),
                Some((agent, _, _)) if agent != t.agent.as_str() => {
                    return Err(StoreError::Corrupt("task names an instance of another agent".into()));
                }
                Some((_, _, Some(_))) => return Err(StoreError::InstanceRevoked),
                Some((_, expires_at, None)) if t.created_at.millis() >= expires_at => {
                    return Err(StoreError::InstanceRevoked);
                }
                Some(_) => {}
            }
            ctx.tx
                .execute(
                    &format!(
                        "INSERT INTO tasks ({TASK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, ?11)"
                    ),
                    params![
                        t.task_id.as_str(),
                        t.agent.as_str(),
                        t.instance_id.as_str(),
                        t.intent,
                        caps,
                        t.on_behalf_of,
                        t.status.as_str(),
                        t.created_at.millis(),
                        t.lease_expires_at.millis(),
                        t.expires_at.millis(),
                        t.policy_version
                    ],
                )
                .map_err(insert_err(format!("task {}", t.task_id)))?;
            insert_grant(ctx.tx, &g)?;
            ctx.audit(t.created_at, &audit)
        })
        .await
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>> {
        let id = id.to_string();
        self.read(move |c| load_task(c, &id)).await
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
    ) -> Result<Option<(Task, u64)>> {
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
            ctx.tx
                .execute(
                    "UPDATE tasks SET status = ?2, ended_at = ?3, end_reason = ?4 WHERE id = ?1",
                    params![id, status.as_str(), now.millis(), reason],
                )
                .map_err(db)?;
            let revoked = revoke_where(ctx.tx, "task_id = ?1", &id, now)?;
            ctx.audit(now, &audit)?;
            Ok(Some((
                Task {
                    status,
                    ended_at: Some(now),
                    end_reason: Some(reason),
                    ..task
                },
                revoked,
            )))
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
        self.read(move |c| {
            type Row = (
                String,
                String,
                String,
                String,
                Option<String>,
                i64,
                i64,
                Option<i64>,
                Option<bool>,
                Option<String>,
                Option<i64>,
                Option<String>,
            );
            let row: Option<Row> = c
                .query_row(
                    "SELECT g.jti, g.kind, g.agent, g.instance_id, g.task_id, g.issued_at, g.expires_at, \
                            g.revoked_at, a.quarantined, i.id, i.revoked_at, t.status \
                     FROM grants g \
                     LEFT JOIN agents a ON a.name = g.agent \
                     LEFT JOIN instances i ON i.id = g.instance_id \
                     LEFT JOIN tasks t ON t.id = g.task_id \
                     WHERE g.jti = ?1",
                    [jti],
                    |r| {
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
                            r.get(10)?,
                            r.get(11)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)?;
            let Some((jti, kind, agent, instance_id, task_id, issued, expires, revoked, quarantined, inst_id, inst_revoked, status)) =
                row
            else {
                return Ok(None);
            };
            let task_status = match (&task_id, status) {
                (None, _) => None,
                (Some(_), Some(s)) => Some(TaskStatus::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("task status {s}")))?),
                // A grant whose task row is missing is treated as ended.
                (Some(_), None) => Some(TaskStatus::Revoked),
            };
            Ok(Some(GrantState {
                grant: Grant {
                    jti,
                    kind: GrantKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("grant kind {kind}")))?,
                    agent: parse("agent name", &agent)?,
                    instance_id: parse("instance id", &instance_id)?,
                    task_id: task_id.as_deref().map(|t| parse("task id", t)).transpose()?,
                    issued_at: ts(issued),
                    expires_at: ts(expires),
                },
                revoked_at: revoked.map(ts),
                // A missing agent or instance row counts as dead, never alive.
                agent_quarantined: quarantined.unwrap_or(true),
                instance_revoked: inst_id.is_none() || inst_revoked.is_some(),
                task_status,
            }))
        })
        .await
    }

    async fn revoke_grant(
        &self,
        jti: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        let jti = jti.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = revoke_where(ctx.tx, "jti = ?1", &jti, now)?;
            if n > 0 {
                ctx.audit(now, &audit)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn append_audit(&self, now: Timestamp, audit: Vec<AuditEvent>) -> Result<()> {
        self.write(move |ctx: &mut WriteCtx<'_>| ctx.audit(now, &audit))
            .await
    }

    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare("SELECT seq, ts, event, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![i64::try_from(after).unwrap_or(i64::MAX), limit], |r| {
                    Ok(AuditRecord {
                        seq: r.get::<_, i64>(0)? as u64,
                        ts: ts(r.get(1)?),
                        event: r.get(2)?,
                        prev_hash: r.get(3)?,
                        hash: r.get(4)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn audit_head(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(db)
        })
        .await
    }
}
