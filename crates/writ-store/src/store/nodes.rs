//! SPIFFE: nodes and the trust domain's keys.

use super::*;

#[async_trait]
impl NodeStore for SqlStore {
    async fn create_node(&self, node: &Node, audit: Vec<AuditEvent>) -> Result<()> {
        let n = node.clone();
        let attestation = to_json(&n.attestation)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO nodes (name, attestation, quarantined, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![n.name, attestation, n.quarantined, n.created_at.millis()],
                )
                .map_err(insert_err(format!("node {}", n.name)))?;
            ctx.audit(n.created_at, &audit)
        })
        .await
    }

    async fn get_node(&self, name: &str) -> Result<Option<Node>> {
        let name = name.to_owned();
        self.read_quick(move |c| {
            c.rows(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE name = ?1"),
                params![name],
            )
            .map_err(db)?
            .first()
            .map(node_from)
            .transpose()
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.read(|c| {
            c.rows(&format!("SELECT {NODE_COLS} FROM nodes ORDER BY name"), &[])
                .map_err(db)?
                .iter()
                .map(node_from)
                .collect()
        })
        .await
    }

    async fn set_node_quarantine(
        &self,
        name: &str,
        quarantined: bool,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let name = name.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE nodes SET quarantined = ?2 WHERE name = ?1",
                    params![name, quarantined],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("node"));
            }
            if quarantined {
                // Its credential and outstanding join tokens die; a release
                // needs a fresh attestation.
                ctx.tx
                    .execute(
                        "UPDATE nodes SET token_hash = NULL WHERE name = ?1",
                        params![name],
                    )
                    .map_err(db)?;
                ctx.tx
                    .execute(
                        "UPDATE node_join_tokens SET used_at = ?2 WHERE node = ?1 AND used_at IS NULL",
                        params![name, now.millis()],
                    )
                    .map_err(db)?;
            }
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn create_node_join_token(
        &self,
        node: &str,
        hash: &str,
        expires_at: Timestamp,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (node, hash) = (node.to_owned(), hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let q: bool = ctx
                .tx
                .query_row(
                    "SELECT quarantined FROM nodes WHERE name = ?1",
                    params![node],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound("node"))?;
            if q {
                return Err(StoreError::Quarantined);
            }
            ctx.tx
                .execute(
                    "INSERT INTO node_join_tokens (hash, node, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![hash, node, expires_at.millis(), now.millis()],
                )
                .map_err(insert_err("join token".into()))?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn attest_node(
        &self,
        node: &str,
        join_hash: &str,
        token_hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (node, join_hash, token_hash) =
            (node.to_owned(), join_hash.to_owned(), token_hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let q: bool = ctx
                .tx
                .query_row(
                    "SELECT quarantined FROM nodes WHERE name = ?1",
                    params![node],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .ok_or(JoinTokenError::Unknown)?;
            if q {
                return Err(StoreError::Quarantined);
            }
            let row: Option<(String, i64, Option<i64>)> = ctx
                .tx
                .query_row(
                    "SELECT node, expires_at, used_at FROM node_join_tokens WHERE hash = ?1",
                    params![join_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            let (owner, expires_at, used_at) = row.ok_or(JoinTokenError::Unknown)?;
            if owner != node {
                return Err(JoinTokenError::WrongAgent.into());
            }
            if used_at.is_some() {
                return Err(JoinTokenError::Used.into());
            }
            if now.millis() >= expires_at {
                return Err(JoinTokenError::Expired.into());
            }
            ctx.tx
                .execute(
                    "UPDATE node_join_tokens SET used_at = ?2 WHERE hash = ?1",
                    params![join_hash, now.millis()],
                )
                .map_err(db)?;
            ctx.tx
                .execute(
                    "UPDATE nodes SET token_hash = ?2, attested_at = ?3 WHERE name = ?1",
                    params![node, token_hash, now.millis()],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn node_by_token(&self, token_hash: &str) -> Result<Option<Node>> {
        let hash = token_hash.to_owned();
        self.read_quick(move |c| {
            c.rows(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE token_hash = ?1 AND quarantined = 0"),
                params![hash],
            )
            .map_err(db)?
            .first()
            .map(node_from)
            .transpose()
        })
        .await
    }

    async fn spiffe_keys(&self) -> Result<Vec<StoredSpiffeKey>> {
        self.read(|c| {
            c.rows(
                "SELECT kid, kind, sealed, cert, created_at, not_after FROM spiffe_keys ORDER BY created_at, kid",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| {
                Ok(StoredSpiffeKey {
                    kid: r.get(0).map_err(db)?,
                    kind: r.get(1).map_err(db)?,
                    sealed: r.get(2).map_err(db)?,
                    cert: r.get(3).map_err(db)?,
                    created_at: ts(r.get(4).map_err(db)?),
                    not_after: ts(r.get(5).map_err(db)?),
                })
            })
            .collect()
        })
        .await
    }

    async fn add_spiffe_key(
        &self,
        key: StoredSpiffeKey,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO spiffe_keys (kid, kind, sealed, cert, created_at, not_after) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        key.kid,
                        key.kind,
                        key.sealed,
                        key.cert,
                        key.created_at.millis(),
                        key.not_after.millis()
                    ],
                )
                .map_err(insert_err(format!("SPIFFE key {}", key.kid)))?;
            ctx.audit(now, &audit)
        })
        .await
    }
}
