//! Audit sinks' cursors and leases: one place for every replica, so each
//! sink has one deliverer at a time and its cursor survives restarts.

use super::*;
use crate::{SinkState, SinkStore};

fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unseq(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl SinkStore for SqlStore {
    async fn configure_sinks(&self, names: &[String], now: Timestamp) -> Result<()> {
        let names = names.to_vec();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let mut stmt = ctx
                .tx
                .prepare("SELECT name FROM audit_sinks")
                .map_err(db)?;
            let known = stmt
                .query_map(params![], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<DbResult<Vec<_>>>()
                .map_err(db)?;
            drop(stmt);
            for gone in known.iter().filter(|k| !names.contains(k)) {
                ctx.tx
                    .execute("DELETE FROM audit_sinks WHERE name = ?1", params![gone])
                    .map_err(db)?;
            }
            for n in &names {
                ctx.tx
                    .execute(
                        "INSERT INTO audit_sinks (name, acked, holder, lease_until, last_error, updated_at) \
                         VALUES (?1, 0, NULL, 0, NULL, ?2) ON CONFLICT (name) DO NOTHING",
                        params![n, now.millis()],
                    )
                    .map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn claim_sink(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<u64>> {
        let (sink, holder) = (sink.to_owned(), holder.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            // Taken only when free, lapsed, or already this holder's: the
            // condition and the update are one statement, so of two
            // replicas racing for a lapsed lease one wins.
            let n = ctx
                .tx
                .execute(
                    "UPDATE audit_sinks SET holder = ?2, lease_until = ?4 WHERE name = ?1 \
                     AND (holder IS NULL OR holder = ?2 OR lease_until <= ?3)",
                    params![sink, holder, now.millis(), until.millis()],
                )
                .map_err(db)?;
            if n == 0 {
                return Ok(None);
            }
            ctx.tx
                .query_row(
                    "SELECT acked FROM audit_sinks WHERE name = ?1",
                    params![sink],
                    |r| r.get::<_, i64>(0),
                )
                .map(|a| Some(unseq(a)))
                .map_err(db)
        })
        .await
    }

    async fn ack_sink(&self, sink: &str, holder: &str, upto: u64, now: Timestamp) -> Result<bool> {
        let (sink, holder) = (sink.to_owned(), holder.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE audit_sinks SET acked = CASE WHEN acked < ?3 THEN ?3 ELSE acked END, \
                     last_error = NULL, updated_at = ?4 WHERE name = ?1 AND holder = ?2",
                    params![sink, holder, seq(upto), now.millis()],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn sink_failed(
        &self,
        sink: &str,
        holder: &str,
        error: &str,
        now: Timestamp,
    ) -> Result<()> {
        let (sink, holder, error) = (sink.to_owned(), holder.to_owned(), error.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "UPDATE audit_sinks SET last_error = ?3, updated_at = ?4 \
                     WHERE name = ?1 AND holder = ?2",
                    params![sink, holder, error, now.millis()],
                )
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn release_sink(&self, sink: &str, holder: &str) -> Result<()> {
        let (sink, holder) = (sink.to_owned(), holder.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "UPDATE audit_sinks SET holder = NULL, lease_until = 0 \
                     WHERE name = ?1 AND holder = ?2",
                    params![sink, holder],
                )
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn sinks(&self) -> Result<Vec<SinkState>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT name, acked, holder, lease_until, last_error, updated_at \
                     FROM audit_sinks ORDER BY name",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![], |r| {
                    Ok(SinkState {
                        name: r.get(0)?,
                        acked: unseq(r.get(1)?),
                        holder: r.get(2)?,
                        lease_until: ts(r.get(3)?),
                        last_error: r.get(4)?,
                        updated_at: ts(r.get(5)?),
                    })
                })
                .map_err(db)?;
            rows.collect::<DbResult<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn audit_sink_floor(&self) -> Result<Option<u64>> {
        self.read(|c| {
            c.query_row("SELECT MIN(acked) FROM audit_sinks", params![], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|m| m.map(|a| unseq(a).saturating_add(1)))
            .map_err(db)
        })
        .await
    }
}
