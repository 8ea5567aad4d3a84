//! The [`Store`] implementation, once for both databases: one method, one
//! transaction.

mod activity;
mod agents;
mod approvals;
mod audit;
mod behaviour;
mod clients;
mod gateways;
mod keys;
mod leases;
mod nodes;
mod policies;
mod retention;
mod rules;
mod sinks;
mod tasks;

use async_trait::async_trait;
use writ_core::api::{
    AdminCredential, Agent, Approval, ApprovalCall, ApprovalStatus, Node, Role, Task, TaskStatus,
    Tool,
};
use writ_core::audit::{AuditEvent, AuditRecord, Outcome};
use writ_core::{AgentName, ApprovalId, InstanceId, TaskId, Timestamp, ToolName};

use crate::engine::{SqlStore, WriteCtx};
#[allow(
    unused_imports,
    reason = "the aggregates' modules take these with `use super::*`"
)]
use crate::prelude::*;
use crate::sql::{DbError, DbResult, OptionalExtension, Row, Sql, Value, db, params};
use crate::{
    DENIAL_BUCKET_SECS, DENIAL_RETENTION_SECS, DbLease, Ended, Grant, GrantKind, GrantState,
    Instance, JoinTokenError, JoinTokenState, OAuthClient, QuarantineOutcome, Result, Revoked,
    StoreError, StoredKey, StoredSecret, StoredSpiffeKey, TaskEnd,
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

const TOOL_COLS: &str = "name, audience, scopes, created_at, attributes, upstream, gateway";
const TOOL_SELECT: &str = "SELECT t.name, t.audience, t.scopes, t.created_at, t.attributes, \
                           t.upstream, s.header, t.gateway FROM tools t LEFT JOIN tool_secrets s ON s.tool = t.name";

type ToolRow = (
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
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
        r.get(7)?,
    ))
}

fn tool_from(row: ToolRow) -> Result<Tool> {
    let (name, audience, scopes, created_at, attributes, upstream, secret_header, gateway) = row;
    Ok(Tool {
        name: parse("tool name", &name)?,
        audience,
        scopes: json("scopes", &scopes)?,
        attributes: json("tool attributes", &attributes)?,
        upstream: upstream.map(|u| json("tool upstream", &u)).transpose()?,
        secret_header,
        gateway,
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

/// Ends every task matching `filter` (a WHERE clause over `tasks` with `?1`
/// bound to `arg`), all for `reason`: a task waiting for approval is
/// revoked and its approval expires, a call held for approval expires, and
/// an active task ends with every task delegated from it, at any depth, and
/// every grant under them. The one way a kill switch ends tasks, so that a
/// quarantine and a revoked instance leave nothing behind either.
/// Returns `(grants revoked, tasks ended)`.
fn end_tasks_where(
    conn: &dyn Sql,
    filter: &str,
    arg: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(u64, u64)> {
    let mut ended = conn
        .execute(
            &format!(
                "UPDATE tasks SET status = 'revoked', ended_at = ?2, end_reason = ?3 \
                 WHERE {filter} AND status = 'pending_approval'"
            ),
            params![arg, now.millis(), reason],
        )
        .map_err(db)? as u64;
    for table in ["approvals", "call_approvals"] {
        conn.execute(
            &format!(
                "UPDATE {table} SET status = 'expired', decided_at = ?2, reason = ?3 \
                 WHERE status = 'pending' AND task_id IN (SELECT id FROM tasks WHERE {filter})"
            ),
            params![arg, now.millis(), reason],
        )
        .map_err(db)?;
    }
    let active: Vec<String> = {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT id FROM tasks WHERE {filter} AND status = 'active'"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![arg], |r| r.get::<_, String>(0))
            .map_err(db)?;
        rows.collect::<DbResult<_>>().map_err(db)?
    };
    let mut revoked = 0;
    for id in active {
        // A task already ended as another's descendant is skipped.
        let still: bool = conn
            .query_row(
                "SELECT status = 'active' FROM tasks WHERE id = ?1",
                params![&id],
                |r| r.get(0),
            )
            .map_err(db)?;
        if still {
            let (tokens, descendants) = end_tree(conn, &id, TaskStatus::Revoked, reason, now)?;
            revoked += tokens;
            ended += 1 + descendants;
        }
    }
    Ok((revoked, ended))
}

/// Revokes an instance and everything that hangs from it: its grants, and
/// (through [`end_tasks_where`]) its tasks and every task delegated from
/// them. As Vault revokes a token's children with it: an instance's tasks
/// exist on its authority, so they cannot outlive it.
/// Returns `(grants revoked, tasks ended)`.
fn end_instance(
    conn: &dyn Sql,
    instance: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(u64, u64)> {
    conn.execute(
        "UPDATE instances SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![instance, now.millis()],
    )
    .map_err(db)?;
    let grants = revoke_where(conn, "instance_id = ?1", instance, now)?;
    let (tokens, tasks) = end_tasks_where(conn, "instance_id = ?1", instance, reason, now)?;
    Ok((grants + tokens, tasks))
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
        Option<String>,
        bool,
    );
    let row: Option<Row> = conn
        .query_row(
            &format!(
                "SELECT {APPROVAL_COLS}, decided_by, obo_may_approve FROM approvals WHERE {filter}"
            ),
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
                    r.get(10)?,
                    r.get(11)?,
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
        decided_by,
        obo_may_approve,
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
        decided_by,
        on_behalf_of_may_approve: obo_may_approve,
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
        decided_by: Option<String>,
    }
    let raw = conn
        .query_row(
            &format!("SELECT {CALL_APPROVAL_COLS}, decided_by FROM call_approvals WHERE {tail}"),
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
                    decided_by: r.get(12)?,
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
        decided_by: raw.decided_by,
        on_behalf_of_may_approve: false,
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
fn record_denial_in(conn: &dyn Sql, agent: &str, at: Timestamp, seen: Timestamp) -> Result<()> {
    // Made before the agent was last released, or on what was known before
    // it (`seen`): forgiven with the rest.
    let cleared = conn
        .query_row(
            "SELECT at FROM denials_cleared WHERE agent = ?1",
            params![agent],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(db)?;
    if cleared.is_some_and(|c| seen.millis() < c) {
        return Ok(());
    }
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
