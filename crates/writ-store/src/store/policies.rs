//! Policy sets: the live one's history and the shadow set.

use super::*;

#[async_trait]
impl PolicyStore for SqlStore {
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

    async fn policy_sources(&self, version: &str) -> Result<Option<Vec<(String, String)>>> {
        let version = version.to_owned();
        self.read(move |c| {
            let row: Option<String> = c
                .query_row(
                    "SELECT sources FROM policy_sets WHERE version = ?1",
                    params![version],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            row.map(|s| json("policy sources", &s)).transpose()
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
}
