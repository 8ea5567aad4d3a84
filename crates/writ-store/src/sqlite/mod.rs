//! The embedded SQLite backend: one database file, WAL with
//! `synchronous=FULL`, the writer beside read-only connections.

mod conn;
mod schema;

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::engine::{Conn, SqlStore};
use crate::{Result, StoreError};

const READERS: usize = 4;

fn open_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Plans that do not depend on bound values. Without this, a statement
/// whose plan looked at a parameter (a `LIMIT ?`, a term compared against
/// a partial index) is compiled again on every execution with new values,
/// which made SQL parsing a tenth of the CPU of task issuance.
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(drop)
    .map_err(open_err)
}

impl SqlStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open_sqlite(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(open_err)?;
        // The writer checkpoints the WAL into the database itself once the
        // WAL holds 4,000 pages (16 MiB at 4 KiB) rather than SQLite's
        // 1,000: hot pages (index roots, the audit chain's head) are written
        // back once per checkpoint however often they changed, so fewer
        // checkpoints write less. Issuance 9-12% faster at 32 connections,
        // the p99 a fifth higher (BENCHMARKS.md); durability is the same,
        // every commit is in the WAL and synced before it is answered.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 4000;",
        )
        .map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        stable_plans(&conn)?;

        let mut readers: Vec<Conn> = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            r.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
                .map_err(open_err)?;
            r.set_prepared_statement_cache_capacity(64);
            stable_plans(&r)?;
            readers.push(Box::new(r));
        }
        let mut store = Self::start(Box::new(conn), readers, schema::MIGRATIONS, "sqlite")?;
        store.inline_reads = true;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn s6_wal_with_full_sync_on_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open_sqlite(&dir.path().join("t.db")).unwrap();
        assert!(store.durable_commits().await.unwrap());
    }
}
