//! Retention: pruning what no longer matters, and the audit archive's
//! bookkeeping (one bounded transaction per call).

use super::*;
use crate::{ArchiveState, RetentionStore};

fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Ended tasks that nothing still needs: no child task left, no database
/// role still to drop.
const PRUNABLE_TASKS: &str = "SELECT t.id FROM tasks t \
     WHERE t.ended_at IS NOT NULL AND t.ended_at < ?1 \
     AND t.status NOT IN ('active', 'pending_approval') \
     AND NOT EXISTS (SELECT 1 FROM tasks c WHERE c.parent_id = t.id) \
     AND NOT EXISTS (SELECT 1 FROM db_leases l WHERE l.task_id = t.id AND l.dropped_at IS NULL) \
     ORDER BY t.ended_at LIMIT ?2";

#[async_trait]
impl RetentionStore for SqlStore {
    async fn prune_grants(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "DELETE FROM grants WHERE jti IN \
                     (SELECT jti FROM grants WHERE expires_at < ?1 ORDER BY expires_at LIMIT ?2)",
                    params![before.millis(), limit],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }

    async fn prune_revocations(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.write(move |ctx: &mut WriteCtx<'_>| {
            // The newest revocation stays, whatever its expiry: the feed's
            // head never moves back, so no follower is ever ahead of it.
            let n = ctx
                .tx
                .execute(
                    "DELETE FROM revocations WHERE seq IN \
                     (SELECT seq FROM revocations WHERE expires_at < ?1 \
                      AND seq < (SELECT MAX(seq) FROM revocations) ORDER BY seq LIMIT ?2)",
                    params![before.millis(), limit],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }

    async fn prune_tasks(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let ids = ctx
                .tx
                .prepare(PRUNABLE_TASKS)
                .map_err(db)?
                .query_map(params![before.millis(), limit], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<DbResult<Vec<_>>>()
                .map_err(db)?;
            for id in &ids {
                for sql in [
                    "DELETE FROM call_approvals WHERE task_id = ?1",
                    "DELETE FROM approvals WHERE task_id = ?1",
                    "DELETE FROM db_leases WHERE task_id = ?1",
                    "DELETE FROM grants WHERE task_id = ?1",
                    "DELETE FROM tasks WHERE id = ?1",
                ] {
                    ctx.tx.execute(sql, params![id]).map_err(db)?;
                }
            }
            Ok(ids.len() as u64)
        })
        .await
    }

    async fn prune_instances(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "DELETE FROM instances WHERE id IN \
                     (SELECT i.id FROM instances i WHERE i.expires_at < ?1 \
                      AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.instance_id = i.id) \
                      ORDER BY i.expires_at LIMIT ?2)",
                    params![before.millis(), limit],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }

    async fn audit_archive_state(&self) -> Result<ArchiveState> {
        self.read(|c| {
            let row = c
                .query_row(
                    "SELECT archived_through, segment_hash FROM audit_archive WHERE id = 1",
                    params![],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(db)?;
            Ok(
                row.map_or_else(ArchiveState::default, |(through, segment_hash)| {
                    ArchiveState {
                        through: u64::try_from(through).unwrap_or(0),
                        segment_hash,
                    }
                }),
            )
        })
        .await
    }

    async fn archive_audit(&self, through: u64, hash: &str, segment_hash: &str) -> Result<u64> {
        let (hash, segment_hash) = (hash.to_owned(), segment_hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let refuse = |why: String| Err(StoreError::ArchiveRefused(why));
            let before = ctx
                .tx
                .query_row(
                    "SELECT archived_through FROM audit_archive WHERE id = 1",
                    params![],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map_err(db)?
                .unwrap_or(0);
            if seq(through) <= before {
                return refuse(format!(
                    "records up to {before} are archived already, not past {through}"
                ));
            }
            let found = ctx
                .tx
                .query_row(
                    "SELECT hash, (SELECT MAX(seq) FROM audit) FROM audit WHERE seq = ?1",
                    params![seq(through)],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(db)?;
            match found {
                None => return refuse(format!("record {through} is not in the log")),
                Some((h, _)) if h != hash => {
                    return refuse(format!("record {through} is not the one archived"));
                }
                Some((_, head)) if head <= seq(through) => {
                    return refuse(format!("record {through} is the chain's head"));
                }
                Some(_) => {}
            }
            ctx.tx
                .execute(
                    "INSERT INTO audit_archive (id, archived_through, segment_hash) VALUES (1, ?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET archived_through = ?1, segment_hash = ?2",
                    params![seq(through), segment_hash],
                )
                .map_err(db)?;
            let n = ctx
                .tx
                .execute(
                    "DELETE FROM audit WHERE seq > ?1 AND seq <= ?2",
                    params![before, seq(through)],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }
}
