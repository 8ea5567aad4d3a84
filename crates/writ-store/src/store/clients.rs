//! OAuth clients of introspection and revocation, the assertions they
//! used, and gateways' transaction-token keys.

use super::*;

/// Most transaction-token keys a gateway has published at once: the one it
/// signs with and the one before it (tokens it signed are seconds long).
const KEYS_PER_GATEWAY: i64 = 2;

fn client_row(r: &Row) -> DbResult<(OAuthClientRow, String)> {
    Ok((
        OAuthClientRow {
            client_id: r.get(0)?,
            secret_hash: r.get(1)?,
            jwks: r.get(2)?,
            created_at: r.get(4)?,
            revoked_at: r.get(5)?,
        },
        r.get(3)?,
    ))
}

struct OAuthClientRow {
    client_id: String,
    secret_hash: Option<String>,
    jwks: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
}

fn client_of((row, audiences): (OAuthClientRow, String)) -> Result<OAuthClient> {
    Ok(OAuthClient {
        audiences: json("client audiences", &audiences)?,
        client_id: row.client_id,
        secret_hash: row.secret_hash,
        jwks: row.jwks,
        created_at: ts(row.created_at),
        revoked_at: row.revoked_at.map(ts),
    })
}

const CLIENT_COLS: &str =
    "client_id, secret_hash, jwks, audiences, created_at, revoked_at FROM oauth_clients";

#[async_trait]
impl ClientStore for SqlStore {
    async fn create_client(
        &self,
        client: OAuthClient,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let audiences = to_json(&client.audiences)?;
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO oauth_clients (client_id, secret_hash, jwks, audiences, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        &client.client_id,
                        client.secret_hash,
                        client.jwks,
                        audiences,
                        client.created_at.millis()
                    ],
                )
                .map_err(insert_err(format!("client {}", client.client_id)))?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>> {
        let id = client_id.to_owned();
        let row = self
            .read_quick(move |c| {
                c.query_row(
                    &format!("SELECT {CLIENT_COLS} WHERE client_id = ?1"),
                    params![id],
                    client_row,
                )
                .optional()
                .map_err(db)
            })
            .await?;
        row.map(client_of).transpose()
    }

    async fn clients(&self) -> Result<Vec<OAuthClient>> {
        let rows = self
            .read(|c| {
                let mut stmt = c.prepare(&format!("SELECT {CLIENT_COLS}")).map_err(db)?;
                stmt.query_map(params![], client_row)
                    .map_err(db)?
                    .collect::<DbResult<Vec<_>>>()
                    .map_err(db)
            })
            .await?;
        let mut out = rows
            .into_iter()
            .map(client_of)
            .collect::<Result<Vec<_>>>()?;
        // Sorted here: the databases' collations differ.
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(out)
    }

    async fn revoke_client(
        &self,
        client_id: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let id = client_id.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "UPDATE oauth_clients SET revoked_at = COALESCE(revoked_at, ?1) WHERE client_id = ?2",
                    params![now.millis(), id],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound("client"));
            }
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn use_client_assertion(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let (id, jti) = (client_id.to_owned(), jti.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "DELETE FROM client_assertions WHERE expires_at < ?1",
                    params![now.millis()],
                )
                .map_err(db)?;
            // A conflict is no error here (an error would abort the
            // transaction on PostgreSQL): no row inserted is a replay.
            let n = ctx
                .tx
                .execute(
                    "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (client_id, jti) DO NOTHING",
                    params![id, jti, expires_at.millis()],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn put_gateway_key(
        &self,
        gateway: &str,
        kid: &str,
        jwk: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (gateway, kid, jwk) = (gateway.to_owned(), kid.to_owned(), jwk.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "INSERT INTO gateway_keys (kid, gateway, jwk, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![&kid, &gateway, jwk, now.millis()],
                )
                .map_err(insert_err(format!("gateway key {kid}")))?;
            ctx.tx
                .execute(
                    "DELETE FROM gateway_keys WHERE gateway = ?1 AND kid NOT IN \
                     (SELECT kid FROM gateway_keys WHERE gateway = ?1 \
                      ORDER BY created_at DESC, kid LIMIT ?2)",
                    params![&gateway, KEYS_PER_GATEWAY],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn gateway_keys(&self) -> Result<Vec<String>> {
        self.read_quick(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT k.jwk FROM gateway_keys k JOIN gateways g ON g.name = k.gateway \
                     WHERE g.revoked_at IS NULL ORDER BY k.kid",
                )
                .map_err(db)?;
            stmt.query_map(params![], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<DbResult<Vec<_>>>()
                .map_err(db)
        })
        .await
    }
}
