//! Admin credentials and the broker's signing keys.

use super::*;
use crate::{SealedTable, SealedValue};

#[async_trait]
impl KeyStore for SqlStore {
    async fn admin_token(&self, hash: &str) -> Result<Option<AdminCredential>> {
        let hash = hash.to_owned();
        self.read_quick(move |c| {
            c.query_row(
                "SELECT name, created_at, dev, role, expires_at, 0 FROM admin_tokens WHERE hash = ?1 \
                 UNION ALL SELECT name, created_at, dev, role, expires_at, 1 \
                 FROM console_sessions WHERE hash = ?1",
                params![hash],
                admin_credential,
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminCredential>> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT name, created_at, dev, role, expires_at, 0 FROM admin_tokens")
                .map_err(db)?;
            let mut out = stmt
                .query_map(params![], admin_credential)
                .map_err(db)?
                .collect::<DbResult<Vec<_>>>()
                .map_err(db)?;
            // Sorted here: the databases' collations differ.
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn console_sessions(&self, now: Timestamp) -> Result<Vec<AdminCredential>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT name, created_at, dev, role, expires_at, 1 FROM console_sessions \
                     WHERE expires_at > ?1",
                )
                .map_err(db)?;
            let mut out = stmt
                .query_map(params![now.millis()], admin_credential)
                .map_err(db)?
                .collect::<DbResult<Vec<_>>>()
                .map_err(db)?;
            out.sort_by(|a, b| {
                (a.name.as_str(), a.created_at.millis())
                    .cmp(&(b.name.as_str(), b.created_at.millis()))
            });
            Ok(out)
        })
        .await
    }

    async fn admin_token_count(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM admin_tokens \
                 WHERE dev = 0 AND role = 'admin' AND expires_at IS NULL",
                params![],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(db)
        })
        .await
    }

    async fn add_admin_token(
        &self,
        name: &str,
        hash: &str,
        role: Role,
        dev: bool,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            if dev {
                ctx.tx
                    .execute("DELETE FROM admin_tokens WHERE dev = 1", params![])
                    .map_err(db)?;
                // The replaced dev credential's console sessions end too.
                ctx.tx
                    .execute("DELETE FROM console_sessions WHERE dev = 1", params![])
                    .map_err(db)?;
            }
            if credential_taken(ctx, &name, &hash)? {
                return Err(StoreError::Conflict(format!(
                    "admin credential {name} (or one with the same secret)"
                )));
            }
            ctx.tx
                .execute(
                    "INSERT INTO admin_tokens (hash, created_at, name, dev, role) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![hash, now.millis(), name, i64::from(dev), role.as_str()],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn revoke_admin_token(
        &self,
        name: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let found = ctx
                .tx
                .query_row(
                    "SELECT dev, role, expires_at FROM admin_tokens WHERE name = ?1",
                    params![&name],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)?;
            let Some((dev, role, expires)) = found else {
                // No credential of that name (a session replaced, a dev
                // credential gone): the console sessions of the name end
                // all the same.
                let n = ctx
                    .tx
                    .execute(
                        "DELETE FROM console_sessions WHERE name = ?1",
                        params![&name],
                    )
                    .map_err(db)?;
                if n == 0 {
                    return Ok(false);
                }
                ctx.audit(now, &audit)?;
                return Ok(true);
            };
            if dev == 0 && role == Role::Admin.as_str() && expires.is_none() {
                let others = ctx
                    .tx
                    .query_row(
                        "SELECT COUNT(*) FROM admin_tokens \
                         WHERE dev = 0 AND role = 'admin' AND expires_at IS NULL \
                         AND name <> ?1",
                        params![&name],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(db)?;
                if others == 0 {
                    return Err(StoreError::LastAdminCredential(name));
                }
            }
            ctx.tx
                .execute("DELETE FROM admin_tokens WHERE name = ?1", params![&name])
                .map_err(db)?;
            // The console sessions it signed in end with it.
            ctx.tx
                .execute(
                    "DELETE FROM console_sessions WHERE name = ?1",
                    params![&name],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn add_operator_session(
        &self,
        name: &str,
        hash: &str,
        role: Role,
        expires_at: Timestamp,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            // Sessions that have ended go; so does this person's last one.
            ctx.tx
                .execute(
                    "DELETE FROM admin_tokens WHERE expires_at IS NOT NULL \
                     AND (expires_at <= ?1 OR name = ?2)",
                    params![now.millis(), &name],
                )
                .map_err(db)?;
            // The console sessions made from the replaced session end with
            // it (a demoted admin keeps no admin console session).
            ctx.tx
                .execute(
                    "DELETE FROM console_sessions WHERE name = ?1",
                    params![&name],
                )
                .map_err(db)?;
            if credential_taken(ctx, &name, &hash)? {
                return Err(StoreError::Conflict(format!(
                    "operator credential {name} exists and is not a sign-on session"
                )));
            }
            ctx.tx
                .execute(
                    "INSERT INTO admin_tokens (hash, created_at, name, dev, role, expires_at) \
                     VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                    params![hash, now.millis(), name, role.as_str(), expires_at.millis()],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn use_identity_token(
        &self,
        key: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let key = key.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            // An expired row is no replay: it is replaced (the token
            // itself is refused as stale by then).
            ctx.tx
                .execute(
                    "DELETE FROM used_identity_tokens WHERE key = ?1 AND expires_at < ?2",
                    params![&key, now.millis()],
                )
                .map_err(db)?;
            // A conflict is no error here (an error would abort the
            // transaction on PostgreSQL): no row inserted is a replay.
            let n = ctx
                .tx
                .execute(
                    "INSERT INTO used_identity_tokens (key, expires_at) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO NOTHING",
                    params![key, expires_at.millis()],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn prune_identity_tokens(&self, now: Timestamp) -> Result<u64> {
        // Looked for first: the sweeper calls this every pass, and most
        // passes have nothing to write.
        let due = self
            .read_quick(move |c| {
                c.query_row(
                    "SELECT 1 FROM used_identity_tokens WHERE expires_at < ?1 LIMIT 1",
                    params![now.millis()],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)
            })
            .await?;
        if due.is_none() {
            return Ok(0);
        }
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let n = ctx
                .tx
                .execute(
                    "DELETE FROM used_identity_tokens WHERE expires_at < ?1",
                    params![now.millis()],
                )
                .map_err(db)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn add_console_session(
        &self,
        session: &AdminCredential,
        hash: &str,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        // Without an end, a session ends at once (never lives forever).
        let expires_at = session.expires_at.unwrap_or(session.created_at);
        let (name, hash, role, dev, now) = (
            session.name.clone(),
            hash.to_owned(),
            session.role,
            session.dev,
            session.created_at,
        );
        self.write(move |ctx: &mut WriteCtx<'_>| {
            ctx.tx
                .execute(
                    "DELETE FROM console_sessions WHERE expires_at <= ?1",
                    params![now.millis()],
                )
                .map_err(db)?;
            let taken = ctx
                .tx
                .query_row(
                    "SELECT 1 FROM admin_tokens WHERE hash = ?1 \
                     UNION ALL SELECT 1 FROM console_sessions WHERE hash = ?1",
                    params![&hash],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)?;
            if taken.is_some() {
                return Err(StoreError::Conflict(
                    "an operator credential with the same secret".into(),
                ));
            }
            ctx.tx
                .execute(
                    "INSERT INTO console_sessions (hash, name, role, dev, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        hash,
                        name,
                        role.as_str(),
                        i64::from(dev),
                        now.millis(),
                        expires_at.millis()
                    ],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)
        })
        .await
    }

    async fn end_console_session(
        &self,
        hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        let hash = hash.to_owned();
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let mut n = ctx
                .tx
                .execute(
                    "DELETE FROM console_sessions WHERE hash = ?1",
                    params![&hash],
                )
                .map_err(db)?;
            if n == 0 {
                // A single sign-on session kept in the cookie: only a
                // credential with an end, and only the one with this
                // secret (never one found by name).
                let name = ctx
                    .tx
                    .query_row(
                        "SELECT name FROM admin_tokens WHERE hash = ?1 AND expires_at IS NOT NULL",
                        params![&hash],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()
                    .map_err(db)?;
                if let Some(name) = name {
                    n = ctx
                        .tx
                        .execute(
                            "DELETE FROM admin_tokens WHERE hash = ?1 AND expires_at IS NOT NULL",
                            params![&hash],
                        )
                        .map_err(db)?;
                    // The console sessions made from it end with it.
                    ctx.tx
                        .execute(
                            "DELETE FROM console_sessions WHERE name = ?1",
                            params![&name],
                        )
                        .map_err(db)?;
                }
            }
            if n == 0 {
                return Ok(false);
            }
            ctx.audit(now, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn rotate_admin_token(
        &self,
        name: &str,
        hash: &str,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.write(move |ctx: &mut WriteCtx<'_>| {
            let taken = ctx
                .tx
                .query_row(
                    "SELECT 1 FROM admin_tokens WHERE hash = ?1",
                    params![&hash],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)?;
            if taken.is_some() {
                return Err(StoreError::Conflict(
                    "an admin credential with the same secret".into(),
                ));
            }
            let n = ctx
                .tx
                .execute(
                    "UPDATE admin_tokens SET hash = ?2 WHERE name = ?1",
                    params![&name, &hash],
                )
                .map_err(db)?;
            if n == 0 {
                // No credential of that name: its console sessions end
                // (recorded), and there is nothing to rotate.
                let ended = ctx
                    .tx
                    .execute(
                        "DELETE FROM console_sessions WHERE name = ?1",
                        params![&name],
                    )
                    .map_err(db)?;
                if ended > 0 {
                    ctx.audit(now, &audit)?;
                }
                return Ok(false);
            }
            // A rotated secret ends the console sessions it signed in.
            ctx.tx
                .execute(
                    "DELETE FROM console_sessions WHERE name = ?1",
                    params![&name],
                )
                .map_err(db)?;
            ctx.audit(now, &audit)?;
            Ok(true)
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

    async fn sealed_values(&self) -> Result<Vec<SealedValue>> {
        self.read(|c| {
            let mut out = Vec::new();
            let queries: [(SealedTable, &str); 3] = [
                (
                    SealedTable::SigningKey,
                    "SELECT kid, '', sealed FROM signing_keys ORDER BY kid",
                ),
                (
                    SealedTable::SpiffeKey,
                    "SELECT kid, '', sealed FROM spiffe_keys ORDER BY kid",
                ),
                (
                    SealedTable::ToolSecret,
                    "SELECT tool, header, sealed FROM tool_secrets ORDER BY tool, header",
                ),
            ];
            for (table, sql) in queries {
                let mut stmt = c.prepare(sql).map_err(db)?;
                let rows = stmt
                    .query_map(params![], |r| {
                        Ok(SealedValue {
                            table,
                            id: r.get(0)?,
                            header: r.get(1)?,
                            sealed: r.get(2)?,
                        })
                    })
                    .map_err(db)?;
                out.extend(rows.collect::<DbResult<Vec<_>>>().map_err(db)?);
            }
            Ok(out)
        })
        .await
    }

    async fn reseal(
        &self,
        values: Vec<SealedValue>,
        now: Timestamp,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        self.write(move |ctx: &mut WriteCtx<'_>| {
            for v in &values {
                let changed = match v.table {
                    SealedTable::SigningKey => ctx.tx.execute(
                        "UPDATE signing_keys SET sealed = ?1 WHERE kid = ?2",
                        params![v.sealed, v.id],
                    ),
                    SealedTable::SpiffeKey => ctx.tx.execute(
                        "UPDATE spiffe_keys SET sealed = ?1 WHERE kid = ?2",
                        params![v.sealed, v.id],
                    ),
                    SealedTable::ToolSecret => ctx.tx.execute(
                        "UPDATE tool_secrets SET sealed = ?1 WHERE tool = ?2 AND header = ?3",
                        params![v.sealed, v.id, v.header],
                    ),
                }
                .map_err(db)?;
                if changed != 1 {
                    return Err(StoreError::Conflict(format!(
                        "{:?} {} changed during the re-sealing; nothing was changed",
                        v.table, v.id
                    )));
                }
            }
            ctx.audit(now, &audit)
        })
        .await
    }
}

fn admin_credential(r: &Row) -> DbResult<AdminCredential> {
    Ok(AdminCredential {
        name: r.get(0)?,
        created_at: Timestamp::from_millis(r.get(1)?),
        dev: r.get::<_, i64>(2)? != 0,
        // An unknown role (written by a newer version) fails closed.
        role: {
            let role: String = r.get(3)?;
            Role::parse(&role).ok_or_else(|| DbError::Type(format!("unknown role {role:?}")))?
        },
        expires_at: r.get::<_, Option<i64>>(4)?.map(Timestamp::from_millis),
        console_session: r.get::<_, i64>(5)? != 0,
    })
}

/// Whether an operator credential has this name or this secret's hash.
fn credential_taken(ctx: &WriteCtx<'_>, name: &str, hash: &str) -> Result<bool> {
    ctx.tx
        .query_row(
            "SELECT 1 FROM admin_tokens WHERE name = ?1 OR hash = ?2",
            params![name, hash],
            |_| Ok(()),
        )
        .optional()
        .map(|found| found.is_some())
        .map_err(db)
}
