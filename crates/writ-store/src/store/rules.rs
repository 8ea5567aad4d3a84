//! Detection rules' state: one place for every replica, so a count, a
//! firing or a release happens once for the deployment.

use super::*;

/// How long a one-off firing is remembered: longer than any task lives.
const FIRED_ONCE_RETENTION_MS: i64 = 90 * 86_400 * 1000;

fn secs(at: Timestamp) -> i64 {
    at.millis().div_euclid(1000)
}

#[async_trait]
impl crate::RuleStore for SqlStore {
    async fn count_rule_event(
        &self,
        rule: &str,
        subject: &str,
        at: Timestamp,
        window_secs: i64,
        threshold: u32,
    ) -> Result<Option<u32>> {
        let (rule, subject) = (rule.to_owned(), subject.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let tx = ctx.tx;
            let bucket = secs(at);
            let from = bucket.saturating_sub(window_secs);
            tx.execute(
                &format!(
                    "INSERT INTO rule_counts (rule, subject, bucket, count) VALUES (?1, ?2, ?3, 1) \
                     ON CONFLICT (rule, subject, bucket) DO UPDATE SET count = \
                     CASE WHEN rule_counts.count < {max} THEN rule_counts.count + 1 ELSE rule_counts.count END",
                    max = u32::MAX
                ),
                params![rule, subject, bucket],
            )
            .map_err(db)?;
            // The pair's rows stay bounded by its window, however fast it
            // is fed.
            tx.execute(
                "DELETE FROM rule_counts WHERE rule = ?1 AND subject = ?2 AND bucket <= ?3",
                params![rule, subject, from],
            )
            .map_err(db)?;
            let n = tx
                .query_row(
                    "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM rule_counts \
                     WHERE rule = ?1 AND subject = ?2",
                    params![rule, subject],
                    |r| r.get::<_, i64>(0),
                )
                .map(saturating_count)
                .map_err(db)?;
            if n < threshold {
                return Ok(None);
            }
            tx.execute(
                "DELETE FROM rule_counts WHERE rule = ?1 AND subject = ?2",
                params![rule, subject],
            )
            .map_err(db)?;
            Ok(Some(n))
        })
        .await
    }

    async fn fire_once(&self, rule: &str, subject: &str, at: Timestamp) -> Result<bool> {
        let (rule, subject) = (rule.to_owned(), subject.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "DELETE FROM rule_fired_once WHERE at < ?1",
                    params![at.millis().saturating_sub(FIRED_ONCE_RETENTION_MS)],
                )
                .map_err(db)?;
            let n = ctx
                .tx
                .execute(
                    "INSERT INTO rule_fired_once (rule, subject, at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (rule, subject) DO NOTHING",
                    params![rule, subject, at.millis()],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn note_attestation_source(
        &self,
        agent: &AgentName,
        source: &str,
        at: Timestamp,
    ) -> Result<bool> {
        let (agent, source) = (agent.to_string(), source.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let before = ctx
                .tx
                .query_row(
                    "SELECT COUNT(*) FROM attestation_sources WHERE agent = ?1",
                    params![agent],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(db)?;
            let added = ctx
                .tx
                .execute(
                    "INSERT INTO attestation_sources (agent, source, first_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (agent, source) DO NOTHING",
                    params![agent, source, at.millis()],
                )
                .map_err(db)?;
            Ok(added == 1 && before > 0)
        })
        .await
    }

    async fn schedule_release(&self, agent: &AgentName, rule: &str, at: Timestamp) -> Result<()> {
        let (agent, rule) = (agent.to_string(), rule.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO rule_releases (agent, rule, release_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (agent) DO UPDATE SET rule = ?2, release_at = ?3",
                    params![agent, rule, at.millis()],
                )
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn due_releases(&self, now: Timestamp) -> Result<Vec<(AgentName, String)>> {
        self.read(move |c| {
            let rows = c
                .rows(
                    "SELECT agent, rule FROM rule_releases WHERE release_at <= ?1 ORDER BY release_at LIMIT 100",
                    params![now.millis()],
                )
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    let agent: String = r.get(0).map_err(db)?;
                    Ok((parse("agent name", &agent)?, r.get(1).map_err(db)?))
                })
                .collect()
        })
        .await
    }

    async fn claim_release(&self, agent: &AgentName, now: Timestamp) -> Result<Option<String>> {
        let agent = agent.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let rule = ctx
                .tx
                .query_row(
                    "SELECT rule FROM rule_releases WHERE agent = ?1 AND release_at <= ?2",
                    params![agent, now.millis()],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(db)?;
            if rule.is_some() {
                ctx.tx
                    .execute("DELETE FROM rule_releases WHERE agent = ?1", params![agent])
                    .map_err(db)?;
            }
            Ok(rule)
        })
        .await
    }

    async fn cancel_release(&self, agent: &AgentName) -> Result<()> {
        let agent = agent.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute("DELETE FROM rule_releases WHERE agent = ?1", params![agent])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn hold_for_approval(
        &self,
        agent: &AgentName,
        rule: &str,
        until: Timestamp,
    ) -> Result<()> {
        let (agent, rule) = (agent.to_string(), rule.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO approval_holds (agent, rule, until_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (agent) DO UPDATE SET \
                     rule = CASE WHEN approval_holds.until_at < ?3 THEN ?2 ELSE approval_holds.rule END, \
                     until_at = CASE WHEN approval_holds.until_at < ?3 THEN ?3 ELSE approval_holds.until_at END",
                    params![agent, rule, until.millis()],
                )
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn approval_held(&self, agent: &AgentName, now: Timestamp) -> Result<bool> {
        let agent = agent.to_string();
        // On the path of every task decision: a point read on the key.
        self.read_quick(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM approval_holds WHERE agent = ?1 AND until_at > ?2",
                params![agent, now.millis()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(db)
        })
        .await
    }

    async fn approval_holds(&self, now: Timestamp) -> Result<Vec<AgentName>> {
        self.read(move |c| {
            let rows = c
                .rows(
                    "SELECT agent FROM approval_holds WHERE until_at > ?1",
                    params![now.millis()],
                )
                .map_err(db)?;
            let mut out = rows
                .iter()
                .map(|r| parse::<AgentName>("agent name", &r.get::<_, String>(0).map_err(db)?))
                .collect::<Result<Vec<_>>>()?;
            out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            Ok(out)
        })
        .await
    }

    async fn count_exception_use(&self, task: &TaskId) -> Result<u64> {
        let task = task.to_string();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "UPDATE tasks SET exception_uses = exception_uses + 1 WHERE id = ?1 AND exception = 1",
                    params![task],
                )
                .map_err(db)?;
            ctx.tx
                .query_row(
                    "SELECT exception_uses FROM tasks WHERE id = ?1",
                    params![task],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map(|n| n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
                .map_err(db)
        })
        .await
    }

    async fn exceptions(&self, limit: u32) -> Result<Vec<writ_core::api::ExceptionTask>> {
        self.read(move |c| {
            let rows = c
                .rows(
                    "SELECT t.id, t.agent, t.intent, t.on_behalf_of, t.created_at, t.expires_at, \
                     t.exception_uses, a.justification, a.decided_by, g.attributes \
                     FROM tasks t LEFT JOIN approvals a ON a.task_id = t.id \
                     LEFT JOIN agents g ON g.name = t.agent \
                     WHERE t.exception = 1 AND t.status = 'active' \
                     ORDER BY t.expires_at LIMIT ?1",
                    params![limit],
                )
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    let attributes: Option<String> = r.get(9).map_err(db)?;
                    let owner = attributes
                        .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
                        .and_then(|a| a.get("owner").and_then(|o| o.as_str()).map(str::to_owned));
                    let on_behalf_of: Option<String> = r.get(3).map_err(db)?;
                    Ok(writ_core::api::ExceptionTask {
                        task_id: parse("task id", &r.get::<_, String>(0).map_err(db)?)?,
                        agent: parse("agent name", &r.get::<_, String>(1).map_err(db)?)?,
                        intent: r.get(2).map_err(db)?,
                        owner: owner.or_else(|| on_behalf_of.clone()),
                        on_behalf_of,
                        created_at: ts(r.get(4).map_err(db)?),
                        expires_at: ts(r.get(5).map_err(db)?),
                        uses: u64::try_from(r.get::<_, i64>(6).map_err(db)?).unwrap_or(0),
                        justification: r.get(7).map_err(db)?,
                        approved_by: r.get(8).map_err(db)?,
                    })
                })
                .collect()
        })
        .await
    }
}
