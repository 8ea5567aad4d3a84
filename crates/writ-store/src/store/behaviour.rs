//! Behaviour: refusals counted per agent for the whole deployment.

use super::*;

#[async_trait]
impl BehaviourStore for SqlStore {
    async fn record_denial(&self, agent: &AgentName, at: Timestamp) -> Result<()> {
        let agent = agent.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| record_denial_in(ctx.tx, &agent, at, at))
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

    async fn clear_denials(&self, agent: &AgentName, at: Timestamp) -> Result<()> {
        let agent = agent.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute("DELETE FROM denials WHERE agent = ?1", params![agent])
                .map_err(db)?;
            ctx.tx
                .execute(
                    "INSERT INTO denials_cleared (agent, at) VALUES (?1, ?2) \
                     ON CONFLICT (agent) DO UPDATE SET at = \
                     CASE WHEN denials_cleared.at < ?2 THEN ?2 ELSE denials_cleared.at END",
                    params![agent, at.millis()],
                )
                .map_err(db)?;
            Ok(())
        })
        .await
    }
}
