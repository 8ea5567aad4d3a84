//! The audit chain, the revocation feed, and changes other processes commit.

use super::*;

#[async_trait]
impl AuditStore for SqlStore {
    async fn audit_activity(
        &self,
        from: Timestamp,
        until: Timestamp,
        policies: u32,
        recent: u32,
    ) -> Result<crate::AuditActivity> {
        self.read(move |c| {
            activity::activity(c, from.millis(), until.millis(), policies, recent).map_err(db)
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

    async fn add_audit_checkpoint(&self, seq: u64, token: &str) -> Result<()> {
        let (seq, token) = (i64::try_from(seq).unwrap_or(i64::MAX), token.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO audit_checkpoints (seq, token) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![seq, token],
                )
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn audit_checkpoints(&self) -> Result<Vec<(u64, String)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT seq, token FROM audit_checkpoints ORDER BY seq")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![], |r| {
                    Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, String>(1)?))
                })
                .map_err(db)?;
            rows.collect::<DbResult<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn last_audit_checkpoint(&self) -> Result<Option<(u64, String)>> {
        self.read(|c| {
            c.query_row(
                "SELECT seq, token FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                params![],
                |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(db)
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

    fn tap_audit(&self, to: tokio::sync::mpsc::Sender<crate::TappedRecord>) -> bool {
        self.tap.set(to).is_ok()
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::Change>> {
        self.changes
            .as_ref()
            .map(tokio::sync::broadcast::Sender::subscribe)
    }
}
