//! Agents (with their join tokens and quarantine) and tools (with their upstream secrets).

use super::*;

#[async_trait]
impl AgentStore for SqlStore {
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
                &format!("SELECT {AGENT_COLS} FROM agents WHERE name = ?1 AND deleted_at IS NULL"),
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
                .prepare(&format!(
                    "SELECT {AGENT_COLS} FROM agents WHERE deleted_at IS NULL ORDER BY name"
                ))
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
                    "UPDATE agents SET quarantined = ?2 WHERE name = ?1 AND deleted_at IS NULL",
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
                let (revoked, ended) =
                    end_tasks_where(ctx.tx, "agent = ?1", &name, "agent quarantined", now)?;
                out.revoked_tokens += revoked;
                out.ended_tasks += ended;
            }
            ctx.audit(now, &audit)?;
            Ok(out)
        })
        .await
    }

    async fn update_agent(
        &self,
        agent: &Agent,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let name = agent.name.to_string();
        let attestation = to_json(&agent.attestation)?;
        let attributes = to_json(&agent.attributes)?;
        let workload = agent.workload.as_ref().map(to_json).transpose()?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE agents SET attestation = ?2, attributes = ?3, workload = ?4 \
                     WHERE name = ?1 AND deleted_at IS NULL",
                    params![name, attestation, attributes, workload],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("agent"));
            }
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn delete_agent(
        &self,
        name: &AgentName,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<QuarantineOutcome> {
        let name = name.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            // Marked quarantined as well: every path that refuses a
            // quarantined agent refuses a deleted one.
            let n = ctx
                .tx
                .execute(
                    "UPDATE agents SET deleted_at = ?2, quarantined = ?3 \
                     WHERE name = ?1 AND deleted_at IS NULL",
                    params![name, now.millis(), true],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("agent"));
            }
            let mut out = QuarantineOutcome {
                revoked_tokens: revoke_where(ctx.tx, "agent = ?1", &name, now)?,
                ended_tasks: 0,
            };
            ctx.tx
                .execute(
                    "UPDATE instances SET revoked_at = ?2 WHERE agent = ?1 AND revoked_at IS NULL",
                    params![name, now.millis()],
                )
                .map_err(db)?;
            ctx.tx
                .execute(
                    "UPDATE join_tokens SET used_at = ?2 WHERE agent = ?1 AND used_at IS NULL",
                    params![name, now.millis()],
                )
                .map_err(db)?;
            let (revoked, ended) =
                end_tasks_where(ctx.tx, "agent = ?1", &name, "agent deleted", now)?;
            out.revoked_tokens += revoked;
            out.ended_tasks += ended;
            ctx.audit(now, &audit)?;
            Ok(out)
        })
        .await
    }

    async fn update_tool(
        &self,
        tool: &Tool,
        removed: Vec<writ_core::Scope>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<QuarantineOutcome> {
        let name = tool.name.clone();
        let scopes = to_json(&tool.scopes)?;
        let attributes = to_json(&tool.attributes)?;
        let upstream = tool.upstream.as_ref().map(to_json).transpose()?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE tools SET scopes = ?2, attributes = ?3, upstream = ?4 \
                     WHERE name = ?1 AND deleted_at IS NULL",
                    params![name.as_str(), scopes, attributes, upstream],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("tool"));
            }
            let out = if removed.is_empty() {
                QuarantineOutcome::default()
            } else {
                end_tasks_using(ctx.tx, &name, Some(&removed), "tool scopes removed", now)?
            };
            ctx.audit(now, &audit)?;
            Ok(out)
        })
        .await
    }

    async fn delete_tool(
        &self,
        name: &ToolName,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<QuarantineOutcome> {
        let name = name.clone();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE tools SET deleted_at = ?2 WHERE name = ?1 AND deleted_at IS NULL",
                    params![name.as_str(), now.millis()],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("tool"));
            }
            ctx.tx
                .execute(
                    "DELETE FROM tool_secrets WHERE tool = ?1",
                    params![name.as_str()],
                )
                .map_err(db)?;
            let out = end_tasks_using(ctx.tx, &name, None, "tool deleted", now)?;
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

    async fn join_token(&self, hash: &str) -> Result<Option<JoinTokenState>> {
        let hash = hash.to_owned();
        self.read_quick(move |c| {
            let row: Option<(String, i64, Option<i64>)> = c
                .query_row(
                    "SELECT agent, expires_at, used_at FROM join_tokens WHERE hash = ?1",
                    params![hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(agent, expires_at, used_at)| {
                Ok(JoinTokenState {
                    agent: parse("agent name", &agent)?,
                    expires_at: ts(expires_at),
                    used_at: used_at.map(ts),
                })
            })
            .transpose()
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
                    &format!("INSERT INTO tools ({TOOL_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                    params![
                        t.name.as_str(),
                        t.audience,
                        scopes,
                        t.created_at.millis(),
                        attributes,
                        upstream,
                        t.gateway
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
                &format!("{TOOL_SELECT} WHERE t.name = ?1 AND t.deleted_at IS NULL"),
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
                .prepare(&format!(
                    "{TOOL_SELECT} WHERE t.deleted_at IS NULL ORDER BY t.name"
                ))
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
                .query_row(
                    "SELECT 1 FROM tools WHERE name = ?1 AND deleted_at IS NULL",
                    params![&tool],
                    |_| Ok(()),
                )
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

    async fn set_tool_gateway(
        &self,
        tool: &ToolName,
        gateway: Option<&str>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (tool, gateway) = (tool.to_string(), gateway.map(str::to_owned));
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE tools SET gateway = ?1 WHERE name = ?2 AND deleted_at IS NULL",
                    params![gateway, tool],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("tool"));
            }
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
}

/// Ends every live task (active or waiting for approval) that declared
/// `tool` (with a scope in `scopes`, when given), with its descendants and
/// every grant under them.
fn end_tasks_using(
    conn: &dyn Sql,
    tool: &ToolName,
    scopes: Option<&[writ_core::Scope]>,
    reason: &str,
    now: Timestamp,
) -> Result<QuarantineOutcome> {
    let live: Vec<(String, String)> = {
        let mut stmt = conn
            .prepare(
                "SELECT id, capabilities FROM tasks \
                 WHERE status IN ('active', 'pending_approval')",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db)?;
        rows.collect::<DbResult<_>>().map_err(db)?
    };
    let mut out = QuarantineOutcome::default();
    for (id, caps) in live {
        let caps: Vec<writ_core::Capability> = json("task capabilities", &caps)?;
        let uses = caps.iter().any(|c| {
            &c.tool == tool && scopes.is_none_or(|s| s.iter().any(|x| c.scopes.contains(x)))
        });
        if uses {
            let (revoked, ended) = end_tasks_where(conn, "id = ?1", &id, reason, now)?;
            out.revoked_tokens += revoked;
            out.ended_tasks += ended;
        }
    }
    Ok(out)
}
