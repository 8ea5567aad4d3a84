//! The [`Store`] implementation, once for both databases: one method, one
//! transaction.

use async_trait::async_trait;
use writ_core::api::{Agent, Approval, ApprovalCall, ApprovalStatus, Node, Task, TaskStatus, Tool};
use writ_core::audit::{AuditEvent, AuditRecord, Outcome};
use writ_core::{AgentName, ApprovalId, InstanceId, TaskId, Timestamp, ToolName};

use crate::engine::{SqlStore, WriteCtx};
use crate::sql::{DbError, DbResult, OptionalExtension, Row, Sql, Value, db, params};
use crate::{
    DENIAL_BUCKET_SECS, DENIAL_RETENTION_SECS, DbLease, Ended, Grant, GrantKind, GrantState,
    Instance, JoinTokenError, QuarantineOutcome, Result, Store, StoreError, StoredKey,
    StoredSecret, StoredSpiffeKey, TaskEnd,
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
fn insert_err(what: String) -> impl FnOnce(DbError) -> StoreError {
    move |e| match e {
        DbError::Constraint(_) => StoreError::Conflict(what),
        e => db(e),
    }
}

const AGENT_COLS: &str =
    "name, spiffe_id, attestation, attributes, quarantined, created_at, workload";

type AgentRow = (String, String, String, String, bool, i64, Option<String>);

fn agent_row(r: &Row) -> DbResult<AgentRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn agent_from(row: AgentRow) -> Result<Agent> {
    let (name, spiffe_id, attestation, attributes, quarantined, created_at, workload) = row;
    Ok(Agent {
        name: parse("agent name", &name)?,
        spiffe_id,
        attestation: json("attestation", &attestation)?,
        attributes: json("attributes", &attributes)?,
        workload: workload.map(|w| json("workload", &w)).transpose()?,
        quarantined,
        created_at: ts(created_at),
    })
}

const NODE_COLS: &str = "name, attestation, quarantined, created_at, attested_at";

fn node_from(r: &Row) -> Result<Node> {
    Ok(Node {
        name: r.get(0).map_err(db)?,
        attestation: json("node attestation", &r.get::<_, String>(1).map_err(db)?)?,
        quarantined: r.get(2).map_err(db)?,
        created_at: ts(r.get(3).map_err(db)?),
        attested_at: r.get::<_, Option<i64>>(4).map_err(db)?.map(ts),
    })
}

const TOOL_COLS: &str = "name, audience, scopes, created_at, attributes, upstream";
const TOOL_SELECT: &str = "SELECT t.name, t.audience, t.scopes, t.created_at, t.attributes, \
                           t.upstream, s.header FROM tools t LEFT JOIN tool_secrets s ON s.tool = t.name";

type ToolRow = (
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
);

fn tool_row(r: &Row) -> DbResult<ToolRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn tool_from(row: ToolRow) -> Result<Tool> {
    let (name, audience, scopes, created_at, attributes, upstream, secret_header) = row;
    Ok(Tool {
        name: parse("tool name", &name)?,
        audience,
        scopes: json("scopes", &scopes)?,
        attributes: json("tool attributes", &attributes)?,
        upstream: upstream.map(|u| json("tool upstream", &u)).transpose()?,
        secret_header,
        created_at: ts(created_at),
    })
}

const TASK_COLS: &str = "id, agent, instance_id, intent, capabilities, on_behalf_of, status, created_at, \
                         lease_expires_at, expires_at, ended_at, end_reason, policy_version, parent_id, depth, \
                         exception, ttl";

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
    parent_id: Option<String>,
    depth: i64,
    exception: bool,
}

fn task_row(r: &Row) -> DbResult<TaskRow> {
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
        parent_id: r.get(13)?,
        depth: r.get(14)?,
        exception: r.get(15)?,
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
        parent_task_id: r
            .parent_id
            .as_deref()
            .map(|p| parse("task id", p))
            .transpose()?,
        depth: u32::try_from(r.depth)
            .map_err(|_| StoreError::Corrupt(format!("task depth {}", r.depth)))?,
        exception: r.exception,
    })
}

fn load_task(conn: &dyn Sql, id: &str) -> Result<Option<Task>> {
    conn.query_row(
        &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"),
        params![id],
        task_row,
    )
    .optional()
    .map_err(db)?
    .map(task_from)
    .transpose()
}

fn insert_grant(conn: &dyn Sql, g: &Grant) -> Result<()> {
    conn.execute(
        "INSERT INTO grants (jti, kind, agent, instance_id, task_id, issued_at, expires_at, jkt, audience) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            g.jti,
            g.kind.as_str(),
            g.agent.as_str(),
            g.instance_id.as_str(),
            g.task_id.as_ref().map(TaskId::as_str),
            g.issued_at.millis(),
            g.expires_at.millis(),
            g.jkt,
            g.audience
        ],
    )
    .map_err(insert_err(format!("grant {}", g.jti)))?;
    Ok(())
}

/// Revokes the live grants matching `filter` (a WHERE clause over `grants`
/// with `?1` bound to `arg`), feeding each to the revocation feed.
fn revoke_where(conn: &dyn Sql, filter: &str, arg: &str, now: Timestamp) -> Result<u64> {
    conn.execute(
        &format!(
            "INSERT INTO revocations (jti, expires_at, revoked_at) \
             SELECT jti, expires_at, ?2 FROM grants WHERE {filter} AND revoked_at IS NULL AND expires_at + 30000 > ?2"
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

fn agent_quarantined(conn: &dyn Sql, agent: &str) -> Result<bool> {
    conn.query_row(
        "SELECT quarantined FROM agents WHERE name = ?1",
        params![agent],
        |r| r.get::<_, bool>(0),
    )
    .optional()
    .map_err(db)?
    .ok_or(StoreError::NotFound("agent"))
}

/// Ends `root` (with `status` and `reason`) and every active descendant
/// (revoked, naming the root), and revokes every grant under all of them.
/// Returns `(grants revoked, descendants ended)`.
fn end_tree(
    conn: &dyn Sql,
    root: &str,
    status: TaskStatus,
    reason: &str,
    now: Timestamp,
) -> Result<(u64, u64)> {
    const TREE: &str = "WITH RECURSIVE tree(id) AS ( \
                          SELECT ?1 UNION ALL SELECT t.id FROM tasks t JOIN tree ON t.parent_id = tree.id)";
    conn.execute(
        "UPDATE tasks SET status = ?2, ended_at = ?3, end_reason = ?4 WHERE id = ?1 AND status = 'active'",
        params![root, status.as_str(), now.millis(), reason],
    )
    .map_err(db)?;
    let descendants = conn
        .execute(
            &format!(
                "{TREE} UPDATE tasks SET status = 'revoked', ended_at = ?2, end_reason = ?3 \
                 WHERE id IN (SELECT id FROM tree) AND id != ?1 AND status = 'active'"
            ),
            params![root, now.millis(), format!("ancestor task {root} ended")],
        )
        .map_err(db)? as u64;
    conn.execute(
        &format!(
            "{TREE} INSERT INTO revocations (jti, expires_at, revoked_at) \
             SELECT jti, expires_at, ?2 FROM grants \
             WHERE task_id IN (SELECT id FROM tree) AND revoked_at IS NULL AND expires_at + 30000 > ?2"
        ),
        params![root, now.millis()],
    )
    .map_err(db)?;
    let revoked = conn
        .execute(
            &format!(
                "{TREE} UPDATE grants SET revoked_at = ?2 \
                 WHERE task_id IN (SELECT id FROM tree) AND revoked_at IS NULL"
            ),
            params![root, now.millis()],
        )
        .map_err(db)? as u64;
    Ok((revoked, descendants))
}

/// What must hold for a task to be recorded: its agent not quarantined, its
/// instance live and the agent's own, its parent (if any) still active.
fn task_preconditions(conn: &dyn Sql, t: &Task) -> Result<()> {
    if agent_quarantined(conn, t.agent.as_str())? {
        return Err(StoreError::Quarantined);
    }
    let instance: Option<(String, i64, Option<i64>)> = conn
        .query_row(
            "SELECT agent, expires_at, revoked_at FROM instances WHERE id = ?1",
            params![t.instance_id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db)?;
    match instance {
        None => return Err(StoreError::NotFound("instance")),
        Some((agent, _, _)) if agent != t.agent.as_str() => {
            return Err(StoreError::Corrupt(
                "task names an instance of another agent".into(),
            ));
        }
        Some((_, _, Some(_))) => return Err(StoreError::InstanceRevoked),
        Some((_, expires_at, None)) if t.created_at.millis() >= expires_at => {
            return Err(StoreError::InstanceRevoked);
        }
        Some(_) => {}
    }
    if let Some(parent) = &t.parent_task_id {
        let parent_row: Option<(String, i64)> = conn
            .query_row(
                "SELECT status, CASE WHEN lease_expires_at < expires_at THEN lease_expires_at ELSE expires_at END FROM tasks WHERE id = ?1",
                params![parent.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?;
        match parent_row {
            None => return Err(StoreError::NotFound("parent task")),
            Some((status, deadline)) if status == "active" && t.created_at.millis() < deadline => {}
            Some(_) => return Err(StoreError::NotActive("parent task ended")),
        }
    }
    Ok(())
}

fn insert_task(conn: &dyn Sql, t: &Task, caps: &str, ttl: i64) -> Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO tasks ({TASK_COLS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, ?11, ?12, ?13, ?14, ?15)"
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
            t.policy_version,
            t.parent_task_id.as_ref().map(TaskId::as_str),
            i64::from(t.depth),
            t.exception,
            ttl
        ],
    )
    .map_err(insert_err(format!("task {}", t.task_id)))?;
    Ok(())
}

const APPROVAL_COLS: &str = "id, task_id, status, ttl, exception, justification, requested_at, expires_at, decided_at, reason";

fn load_approval(conn: &dyn Sql, filter: &str, arg: &str) -> Result<Option<Approval>> {
    type Row = (
        String,
        String,
        String,
        i64,
        bool,
        Option<String>,
        i64,
        i64,
        Option<i64>,
        Option<String>,
    );
    let row: Option<Row> = conn
        .query_row(
            &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE {filter}"),
            params![arg],
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
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((
        id,
        task_id,
        status,
        ttl,
        exception,
        justification,
        requested_at,
        expires_at,
        decided_at,
        reason,
    )) = row
    else {
        return Ok(None);
    };
    let task = load_task(conn, &task_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("approval {id} without its task")))?;
    Ok(Some(Approval {
        approval_id: parse("approval id", &id)?,
        task_id: parse("task id", &task_id)?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("approval status {status}")))?,
        ttl,
        exception,
        justification,
        requested_at: ts(requested_at),
        expires_at: ts(expires_at),
        decided_at: decided_at.map(ts),
        reason,
        task,
        call: None,
    }))
}

const CALL_APPROVAL_COLS: &str = "id, task_id, call, status, ttl, exception, justification, \
                                  requested_at, expires_at, decided_at, reason, used_at";

/// The first call approval `tail` (a WHERE clause, possibly ordered, over
/// `call_approvals`, with `args` bound) selects, with its task.
fn load_call_approval(conn: &dyn Sql, tail: &str, args: &[Value]) -> Result<Option<Approval>> {
    struct Raw {
        id: String,
        task_id: String,
        call: String,
        status: String,
        ttl: i64,
        exception: bool,
        justification: Option<String>,
        requested_at: i64,
        expires_at: i64,
        decided_at: Option<i64>,
        reason: Option<String>,
        used_at: Option<i64>,
    }
    let raw = conn
        .query_row(
            &format!("SELECT {CALL_APPROVAL_COLS} FROM call_approvals WHERE {tail}"),
            args,
            |r| {
                Ok(Raw {
                    id: r.get(0)?,
                    task_id: r.get(1)?,
                    call: r.get(2)?,
                    status: r.get(3)?,
                    ttl: r.get(4)?,
                    exception: r.get(5)?,
                    justification: r.get(6)?,
                    requested_at: r.get(7)?,
                    expires_at: r.get(8)?,
                    decided_at: r.get(9)?,
                    reason: r.get(10)?,
                    used_at: r.get(11)?,
                })
            },
        )
        .optional()
        .map_err(db)?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let task = load_task(conn, &raw.task_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("call approval {} without its task", raw.id)))?;
    let call = ApprovalCall {
        used_at: raw.used_at.map(ts),
        ..json("approval call", &raw.call)?
    };
    Ok(Some(Approval {
        approval_id: parse("approval id", &raw.id)?,
        task_id: parse("task id", &raw.task_id)?,
        status: ApprovalStatus::parse(&raw.status)
            .ok_or_else(|| StoreError::Corrupt(format!("approval status {}", raw.status)))?,
        ttl: raw.ttl,
        exception: raw.exception,
        justification: raw.justification,
        requested_at: ts(raw.requested_at),
        expires_at: ts(raw.expires_at),
        decided_at: raw.decided_at.map(ts),
        reason: raw.reason,
        task,
        call: Some(call),
    }))
}

/// An approval of either kind by its id (the two tables share one id
/// space); `call` is `Some` for a call approval.
fn approval_by_id(conn: &dyn Sql, id: &str) -> Result<Option<Approval>> {
    match load_approval(conn, "id = ?1", id)? {
        Some(a) => Ok(Some(a)),
        None => load_call_approval(conn, "id = ?1", params![id]),
    }
}

/// The table an approval lives in.
fn approval_table(a: &Approval) -> &'static str {
    if a.call.is_some() {
        "call_approvals"
    } else {
        "approvals"
    }
}

/// Loads the approvals a listing query selected as `(id, is_call)`.
fn load_listed(conn: &dyn Sql, sql: &str, args: &[Value]) -> Result<Vec<Approval>> {
    let listed = conn
        .rows(sql, args)
        .map_err(db)?
        .iter()
        .map(|r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
        .collect::<DbResult<Vec<_>>>()
        .map_err(db)?;
    let mut out = Vec::with_capacity(listed.len());
    for (id, is_call) in listed {
        let a = if is_call {
            load_call_approval(conn, "id = ?1", params![id])?
        } else {
            load_approval(conn, "id = ?1", &id)?
        };
        out.extend(a);
    }
    Ok(out)
}

/// The bucket (unix seconds, a multiple of [`DENIAL_BUCKET_SECS`]) a
/// refusal at `at` is counted in.
fn denial_bucket(at: Timestamp) -> i64 {
    at.millis()
        .div_euclid(1000 * DENIAL_BUCKET_SECS)
        .saturating_mul(DENIAL_BUCKET_SECS)
}

/// Counts one refusal against `agent` at `at` inside a write, and drops the
/// agent's buckets past retention: an agent's rows stay bounded however
/// fast it is refused.
fn record_denial_in(conn: &dyn Sql, agent: &str, at: Timestamp) -> Result<()> {
    let bucket = denial_bucket(at);
    // A bucket stops counting at u32::MAX, so a sum over an hour of them
    // cannot overflow 64 bits either.
    conn.execute(
        &format!(
            "INSERT INTO denials (agent, bucket, count) VALUES (?1, ?2, 1) \
             ON CONFLICT (agent, bucket) DO UPDATE SET count = \
             CASE WHEN denials.count < {max} THEN denials.count + 1 ELSE denials.count END",
            max = u32::MAX
        ),
        params![agent, bucket],
    )
    .map_err(db)?;
    conn.execute(
        "DELETE FROM denials WHERE agent = ?1 AND bucket < ?2",
        params![agent, bucket.saturating_sub(DENIAL_RETENTION_SECS)],
    )
    .map_err(db)?;
    Ok(())
}

fn saturating_count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[async_trait]
impl Store for SqlStore {
    async fn admin_token_valid(&self, hash: &str) -> Result<bool> {
        let hash = hash.to_owned();
        self.read_quick(move |c| {
            c.query_row(
                "SELECT 1 FROM admin_tokens WHERE hash = ?1",
                params![hash],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(db)
        })
        .await
    }

    async fn admin_token_count(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM admin_tokens", params![], |r| {
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
                    "INSERT INTO admin_tokens (hash, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
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
                .query_map(params![], |r| {
                    Ok(StoredKey {
                        kid: r.get(0)?,
                        alg: r.get(1)?,
                        sealed: r.get(2)?,
                        created_at: ts(r.get(3)?),
                        retired_at: r.get::<_, Option<i64>>(4)?.map(ts),
                    })
                })
                .map_err(db)?;
            rows.collect::<DbResult<Vec<_>>>().map_err(db)
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
                    params![now.millis()],
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
        let workload = a.workload.as_ref().map(to_json).transpose()?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    &format!(
                        "INSERT INTO agents ({AGENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ),
                    params![
                        a.name.as_str(),
                        a.spiffe_id,
                        attestation,
                        attributes,
                        a.quarantined,
                        a.created_at.millis(),
                        workload
                    ],
                )
                .map_err(insert_err(format!("agent {}", a.name)))?;
            ctx.audit(a.created_at, &audit)
        })
        .await
    }

    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>> {
        let name = name.to_string();
        self.read_quick(move |c| {
            c.query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE name = ?1"),
                params![name],
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
            let rows = stmt.query_map(params![], agent_row).map_err(db)?;
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
                // Tasks waiting for approval die too.
                out.ended_tasks += ctx
                    .tx
                    .execute(
                        "UPDATE tasks SET status = 'revoked', ended_at = ?2, end_reason = 'agent quarantined' \
                         WHERE agent = ?1 AND status = 'pending_approval'",
                        params![name, now.millis()],
                    )
                    .map_err(db)? as u64;
                for table in ["approvals", "call_approvals"] {
                    ctx.tx
                        .execute(
                            &format!(
                                "UPDATE {table} SET status = 'expired', decided_at = ?2, reason = 'agent quarantined' \
                                 WHERE status = 'pending' AND task_id IN (SELECT id FROM tasks WHERE agent = ?1)"
                            ),
                            params![name, now.millis()],
                        )
                        .map_err(db)?;
                }
                // Outstanding join tokens die too: a release never revives them.
                ctx.tx
                    .execute(
                        "UPDATE join_tokens SET used_at = ?2 WHERE agent = ?1 AND used_at IS NULL",
                        params![name, now.millis()],
                    )
                    .map_err(db)?;
                let active: Vec<String> = {
                    let mut stmt = ctx
                        .tx
                        .prepare("SELECT id FROM tasks WHERE agent = ?1 AND status = 'active'")
                        .map_err(db)?;
                    let rows = stmt.query_map(params![&name], |r| r.get::<_, String>(0)).map_err(db)?;
                    rows.collect::<DbResult<_>>().map_err(db)?
                };
                for id in active {
                    // A task already ended as another's descendant is skipped.
                    let still: bool = ctx
                        .tx
                        .query_row("SELECT status = 'active' FROM tasks WHERE id = ?1", params![&id], |r| r.get(0))
                        .map_err(db)?;
                    if still {
                        let (revoked, descendants) =
                            end_tree(ctx.tx, &id, TaskStatus::Revoked, "agent quarantined", now)?;
                        out.revoked_tokens += revoked;
                        out.ended_tasks += 1 + descendants;
                    }
                }
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
        let attributes = to_json(&t.attributes)?;
        let upstream = t.upstream.as_ref().map(to_json).transpose()?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    &format!("INSERT INTO tools ({TOOL_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![
                        t.name.as_str(),
                        t.audience,
                        scopes,
                        t.created_at.millis(),
                        attributes,
                        upstream
                    ],
                )
                .map_err(insert_err(format!("tool {}", t.name)))?;
            ctx.audit(t.created_at, &audit)
        })
        .await
    }

    async fn get_tool(&self, name: &ToolName) -> Result<Option<Tool>> {
        let name = name.to_string();
        self.read_quick(move |c| {
            c.query_row(
                &format!("{TOOL_SELECT} WHERE t.name = ?1"),
                params![name],
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
                .prepare(&format!("{TOOL_SELECT} ORDER BY t.name"))
                .map_err(db)?;
            let rows = stmt.query_map(params![], tool_row).map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(tool_from)).collect()
        })
        .await
    }

    async fn set_tool_secret(
        &self,
        tool: &ToolName,
        header: &str,
        sealed: Vec<u8>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (tool, header) = (tool.to_string(), header.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let known = ctx
                .tx
                .query_row("SELECT 1 FROM tools WHERE name = ?1", params![&tool], |_| Ok(()))
                .optional()
                .map_err(db)?;
            if known.is_none() {
                return Err(StoreError::NotFound("tool"));
            }
            ctx.tx
                .execute(
                    "INSERT INTO tool_secrets (tool, header, sealed, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(tool) DO UPDATE SET header = excluded.header, \
                     sealed = excluded.sealed, updated_at = excluded.updated_at",
                    params![tool, header, sealed, now.millis()],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn tool_secrets(&self) -> Result<Vec<StoredSecret>> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT tool, header, sealed FROM tool_secrets ORDER BY tool")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(db)?;
            rows.map(|r| {
                let (tool, header, sealed) = r.map_err(db)?;
                Ok(StoredSecret {
                    tool: parse("tool name", &tool)?,
                    header,
                    sealed,
                })
            })
            .collect()
        })
        .await
    }

    async fn create_gateway(
        &self,
        name: &str,
        token_hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (name, hash) = (name.to_owned(), token_hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO gateways (name, token_hash, created_at) VALUES (?1, ?2, ?3)",
                    params![name, hash, now.millis()],
                )
                .map_err(insert_err(format!("gateway {name}")))?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn gateway_by_token(&self, token_hash: &str) -> Result<Option<String>> {
        let hash = token_hash.to_owned();
        self.read_quick(move |c| {
            c.query_row(
                "SELECT name FROM gateways WHERE token_hash = ?1 AND revoked_at IS NULL",
                params![hash],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn revoke_gateway(
        &self,
        name: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let name = name.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE gateways SET revoked_at = COALESCE(revoked_at, ?1) WHERE name = ?2",
                    params![now.millis(), name],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("gateway"));
            }
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn append_gateway_decisions(
        &self,
        gateway: &str,
        first_seq: u64,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<u64> {
        let gateway = gateway.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let acked: i64 = ctx
                .tx
                .query_row(
                    "SELECT acked_seq FROM gateways WHERE name = ?1",
                    params![&gateway],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound("gateway"))?;
            let acked = acked.max(0) as u64;
            if first_seq > acked.saturating_add(1) {
                return Err(StoreError::Conflict(format!(
                    "decisions from {first_seq} would leave a gap after {acked}"
                )));
            }
            // Redelivered decisions (numbered at or below what is held) are
            // skipped: delivery is at least once, recording exactly once.
            let skip = usize::try_from(acked.saturating_add(1).saturating_sub(first_seq))
                .unwrap_or(usize::MAX);
            let fresh = events.get(skip..).unwrap_or_default();
            if fresh.is_empty() {
                return Ok(acked);
            }
            let new_acked = acked.saturating_add(fresh.len() as u64);
            ctx.audit(now, fresh)?;
            // Only decisions held for the first time count, so a
            // redelivered batch never counts a refusal twice. A name that
            // is not a valid agent name is not counted: no agent could be
            // looked up by it, and it would spoil every listing. A call held
            // for a person's approval (`detail.held`) is refused for now,
            // not misbehaviour: it does not count, as a held task start
            // does not.
            let counted = |e: &&AuditEvent| {
                e.outcome == Outcome::Deny
                    && e.detail.get("held").and_then(serde_json::Value::as_bool) != Some(true)
            };
            for e in fresh.iter().filter(counted) {
                if let Some(agent) = e.agent.as_deref().and_then(|a| a.parse::<AgentName>().ok()) {
                    record_denial_in(ctx.tx, agent.as_str(), now)?;
                }
            }
            ctx.tx
                .execute(
                    "UPDATE gateways SET acked_seq = ?1 WHERE name = ?2",
                    params![new_acked as i64, gateway],
                )
                .map_err(db)?;
            Ok(new_acked)
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

    async fn create_node(&self, node: &Node, audit: Vec<AuditEvent>) -> Result<()> {
        let n = node.clone();
        let attestation = to_json(&n.attestation)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO nodes (name, attestation, quarantined, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![n.name, attestation, n.quarantined, n.created_at.millis()],
                )
                .map_err(insert_err(format!("node {}", n.name)))?;
            ctx.audit(n.created_at, &audit)
        })
        .await
    }

    async fn get_node(&self, name: &str) -> Result<Option<Node>> {
        let name = name.to_owned();
        self.read_quick(move |c| {
            c.rows(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE name = ?1"),
                params![name],
            )
            .map_err(db)?
            .first()
            .map(node_from)
            .transpose()
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.read(|c| {
            c.rows(&format!("SELECT {NODE_COLS} FROM nodes ORDER BY name"), &[])
                .map_err(db)?
                .iter()
                .map(node_from)
                .collect()
        })
        .await
    }

    async fn set_node_quarantine(
        &self,
        name: &str,
        quarantined: bool,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let name = name.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE nodes SET quarantined = ?2 WHERE name = ?1",
                    params![name, quarantined],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("node"));
            }
            if quarantined {
                // Its credential and outstanding join tokens die; a release
                // needs a fresh attestation.
                ctx.tx
                    .execute(
                        "UPDATE nodes SET token_hash = NULL WHERE name = ?1",
                        params![name],
                    )
                    .map_err(db)?;
                ctx.tx
                    .execute(
                        "UPDATE node_join_tokens SET used_at = ?2 WHERE node = ?1 AND used_at IS NULL",
                        params![name, now.millis()],
                    )
                    .map_err(db)?;
            }
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn create_node_join_token(
        &self,
        node: &str,
        hash: &str,
        expires_at: Timestamp,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (node, hash) = (node.to_owned(), hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let q: bool = ctx
                .tx
                .query_row(
                    "SELECT quarantined FROM nodes WHERE name = ?1",
                    params![node],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound("node"))?;
            if q {
                return Err(StoreError::Quarantined);
            }
            ctx.tx
                .execute(
                    "INSERT INTO node_join_tokens (hash, node, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![hash, node, expires_at.millis(), now.millis()],
                )
                .map_err(insert_err("join token".into()))?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn attest_node(
        &self,
        node: &str,
        join_hash: &str,
        token_hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (node, join_hash, token_hash) =
            (node.to_owned(), join_hash.to_owned(), token_hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let q: bool = ctx
                .tx
                .query_row(
                    "SELECT quarantined FROM nodes WHERE name = ?1",
                    params![node],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .ok_or(JoinTokenError::Unknown)?;
            if q {
                return Err(StoreError::Quarantined);
            }
            let row: Option<(String, i64, Option<i64>)> = ctx
                .tx
                .query_row(
                    "SELECT node, expires_at, used_at FROM node_join_tokens WHERE hash = ?1",
                    params![join_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            let (owner, expires_at, used_at) = row.ok_or(JoinTokenError::Unknown)?;
            if owner != node {
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
                    "UPDATE node_join_tokens SET used_at = ?2 WHERE hash = ?1",
                    params![join_hash, now.millis()],
                )
                .map_err(db)?;
            ctx.tx
                .execute(
                    "UPDATE nodes SET token_hash = ?2, attested_at = ?3 WHERE name = ?1",
                    params![node, token_hash, now.millis()],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn node_by_token(&self, token_hash: &str) -> Result<Option<Node>> {
        let hash = token_hash.to_owned();
        self.read_quick(move |c| {
            c.rows(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE token_hash = ?1 AND quarantined = 0"),
                params![hash],
            )
            .map_err(db)?
            .first()
            .map(node_from)
            .transpose()
        })
        .await
    }

    async fn spiffe_keys(&self) -> Result<Vec<StoredSpiffeKey>> {
        self.read(|c| {
            c.rows(
                "SELECT kid, kind, sealed, cert, created_at, not_after FROM spiffe_keys ORDER BY created_at, kid",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| {
                Ok(StoredSpiffeKey {
                    kid: r.get(0).map_err(db)?,
                    kind: r.get(1).map_err(db)?,
                    sealed: r.get(2).map_err(db)?,
                    cert: r.get(3).map_err(db)?,
                    created_at: ts(r.get(4).map_err(db)?),
                    not_after: ts(r.get(5).map_err(db)?),
                })
            })
            .collect()
        })
        .await
    }

    async fn add_spiffe_key(
        &self,
        key: StoredSpiffeKey,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO spiffe_keys (kid, kind, sealed, cert, created_at, not_after) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        key.kid,
                        key.kind,
                        key.sealed,
                        key.cert,
                        key.created_at.millis(),
                        key.not_after.millis()
                    ],
                )
                .map_err(insert_err(format!("SPIFFE key {}", key.kid)))?;
            ctx.audit(now, &audit)
        })
        .await
    }

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
                    &format!("INSERT INTO approvals ({APPROVAL_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL)"),
                    params![
                        a.approval_id.as_str(),
                        a.task_id.as_str(),
                        a.status.as_str(),
                        a.ttl,
                        a.exception,
                        a.justification,
                        a.requested_at.millis(),
                        a.expires_at.millis()
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
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<Approval> {
        let (id, reason) = (id.to_string(), reason.to_owned());
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
                        "UPDATE {} SET status = ?2, decided_at = ?3, reason = ?4 WHERE id = ?1",
                        approval_table(&a)
                    ),
                    params![id, status.as_str(), now.millis(), reason],
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

    async fn record_denial(&self, agent: &AgentName, at: Timestamp) -> Result<()> {
        let agent = agent.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| record_denial_in(ctx.tx, &agent, at))
            .await
    }

    async fn denials_since(&self, agent: &AgentName, since: Timestamp) -> Result<u32> {
        let agent = agent.to_string();
        // On the path of every decision: a point read on the primary key.
        self.read_quick(move |c| {
            c.query_row(
                "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM denials \
                 WHERE agent = ?1 AND bucket >= ?2",
                params![agent, denial_bucket(since)],
                |r| r.get::<_, i64>(0),
            )
            .map(saturating_count)
            .map_err(db)
        })
        .await
    }

    async fn denial_counts(&self, since: Timestamp) -> Result<Vec<(AgentName, u32)>> {
        self.read(move |c| {
            let rows = c
                .rows(
                    "SELECT agent, CAST(SUM(count) AS BIGINT) FROM denials \
                     WHERE bucket >= ?1 GROUP BY agent",
                    params![denial_bucket(since)],
                )
                .map_err(db)?;
            let mut out = rows
                .iter()
                .map(|r| {
                    let agent: String = r.get(0).map_err(db)?;
                    let n: i64 = r.get(1).map_err(db)?;
                    Ok((
                        parse::<AgentName>("agent name", &agent)?,
                        saturating_count(n),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            // Sorted here, not in SQL: PostgreSQL would sort by the
            // database's collation, SQLite by bytes.
            out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            Ok(out)
        })
        .await
    }

    async fn clear_denials(&self, agent: &AgentName) -> Result<()> {
        let agent = agent.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute("DELETE FROM denials WHERE agent = ?1", params![agent])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn activate_policy(
        &self,
        version: &str,
        sources: &[(String, String)],
        origin: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (version, origin) = (version.to_owned(), origin.to_owned());
        let sources = to_json(&sources)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO policy_sets (version, sources, first_loaded_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                    params![version, sources, now.millis()],
                )
                .map_err(db)?;
            ctx.tx
                .execute(
                    "INSERT INTO policy_history (version, origin, loaded_at) VALUES (?1, ?2, ?3)",
                    params![version, origin, now.millis()],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn policy_history(&self, limit: u32) -> Result<Vec<writ_core::api::PolicyVersion>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare("SELECT version, origin, loaded_at FROM policy_history ORDER BY seq DESC LIMIT ?1")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![limit], |r| {
                    Ok(writ_core::api::PolicyVersion {
                        version: r.get(0)?,
                        origin: r.get(1)?,
                        loaded_at: ts(r.get(2)?),
                    })
                })
                .map_err(db)?;
            rows.collect::<DbResult<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn latest_policy(&self) -> Result<Option<(String, Vec<(String, String)>)>> {
        self.read(|c| {
            let row: Option<(String, String)> = c
                .query_row(
                    "SELECT s.version, s.sources FROM policy_history h JOIN policy_sets s ON s.version = h.version \
                     ORDER BY h.seq DESC LIMIT 1",
                    params![],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(v, s)| Ok((v, json("policy sources", &s)?))).transpose()
        })
        .await
    }

    async fn revocations_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<writ_core::api::Revocation>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT seq, jti, expires_at, revoked_at FROM revocations WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![i64::try_from(after).unwrap_or(i64::MAX), limit], |r| {
                    Ok(writ_core::api::Revocation {
                        seq: r.get::<_, i64>(0)? as u64,
                        jti: r.get(1)?,
                        expires_at: ts(r.get(2)?),
                        revoked_at: ts(r.get(3)?),
                    })
                })
                .map_err(db)?;
            rows.collect::<DbResult<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn set_shadow_policy(
        &self,
        set: Option<(String, Vec<(String, String)>)>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let row = match set {
            Some((version, sources)) => Some((version, to_json(&sources)?)),
            None => None,
        };
        self.write(move |ctx: &mut WriteCtx<'_>| {
            match &row {
                Some((version, sources)) => ctx
                    .tx
                    .execute(
                        "INSERT INTO shadow_policy (id, version, sources, set_at) VALUES (1, ?1, ?2, ?3) \
                         ON CONFLICT(id) DO UPDATE SET version = excluded.version, \
                         sources = excluded.sources, set_at = excluded.set_at",
                        params![version, sources, now.millis()],
                    )
                    .map_err(db)?,
                None => ctx
                    .tx
                    .execute("DELETE FROM shadow_policy", params![])
                    .map_err(db)?,
            };
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn shadow_policy(&self) -> Result<Option<(String, Vec<(String, String)>)>> {
        self.read(|c| {
            let row: Option<(String, String)> = c
                .query_row(
                    "SELECT version, sources FROM shadow_policy WHERE id = 1",
                    params![],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(v, s)| Ok((v, json("shadow policy sources", &s)?)))
                .transpose()
        })
        .await
    }

    async fn revocation_head(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM revocations",
                params![],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(db)
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
            rows.collect::<DbResult<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn audit_head(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", params![], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(db)
        })
        .await
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::Change>> {
        self.changes
            .as_ref()
            .map(tokio::sync::broadcast::Sender::subscribe)
    }
}
