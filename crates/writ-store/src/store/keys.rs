//! Admin credentials and the broker's signing keys.

use super::*;

#[async_trait]
impl KeyStore for SqlStore {
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
}
