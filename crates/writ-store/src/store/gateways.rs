//! Gateway credentials and the decisions gateways deliver.

use super::*;

#[async_trait]
impl GatewayStore for SqlStore {
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

    async fn gateway_live(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.read_quick(move |c| {
            c.query_row(
                "SELECT name FROM gateways WHERE name = ?1 AND revoked_at IS NULL",
                params![name],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|found| found.is_some())
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
            // does not. A token refused for how it was presented is not a
            // decision (nor counted at the broker): only a call's counts.
            let counted = |e: &&AuditEvent| {
                e.kind == writ_core::audit::AuditKind::ToolCall
                    && e.outcome == Outcome::Deny
                    && e.detail.get("held").and_then(serde_json::Value::as_bool) != Some(true)
            };
            for e in fresh.iter().filter(counted) {
                if let Some(agent) = e.agent.as_deref().and_then(|a| a.parse::<AgentName>().ok()) {
                    let (at, seen) = decided_at(e, now);
                    record_denial_in(ctx.tx, agent.as_str(), at, seen)?;
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
}

/// When a delivered refusal was made, and when what it was decided on was
/// seen (the earlier of that and when the bundle's behaviour counts were
/// taken): the gateway's `detail.decided_at` and `detail.behaviour_at`,
/// each kept between the start of the counting retention and `now` (a
/// gateway's clock cannot put a refusal in the future, nor out of the
/// count), or `now` when the record does not say.
fn decided_at(e: &AuditEvent, now: Timestamp) -> (Timestamp, Timestamp) {
    let oldest = now.add_secs(-DENIAL_RETENTION_SECS);
    let field = |name: &str| {
        e.detail
            .get(name)
            .and_then(serde_json::Value::as_i64)
            .map(|ms| Timestamp::from_millis(ms.clamp(oldest.millis(), now.millis())))
    };
    let at = field("decided_at").unwrap_or(now);
    let seen = field("behaviour_at").map_or(at, |b| b.min(at));
    (at, seen)
}
