//! The embedded SQLite backend.
//!
//! One writer thread owns the only read-write connection. It takes jobs from
//! a queue, runs as many as are waiting inside one transaction (each in its
//! own savepoint, so one failing job does not spoil the others), commits once
//! with `synchronous=FULL`, and only then answers every job: group commit,
//! durable before acknowledged. Reads run on a small pool of read-only
//! connections, which WAL lets proceed beside the writer.

mod schema;
mod store;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use writ_core::Timestamp;
use writ_core::audit::{self, AuditEvent, GENESIS};

use crate::{Result, StoreError};

const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;
const READERS: usize = 4;

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
type Job = Box<dyn WriteJob>;

/// A queued write: run it in the batch's transaction, or fail it unrun.
trait WriteJob: Send {
    /// Runs the job; says whether it succeeded and how to answer once the
    /// batch's commit is known.
    fn run(self: Box<Self>, ctx: &mut WriteCtx<'_>) -> (bool, Completion);
    fn fail(self: Box<Self>, err: StoreError);
}

struct Queued<F, T> {
    f: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> WriteJob for Queued<F, T>
where
    T: Send + 'static,
    F: FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, ctx: &mut WriteCtx<'_>) -> (bool, Completion) {
        let Queued { f, reply } = *self;
        let res = f(ctx);
        let ok = res.is_ok();
        (
            ok,
            Box::new(move |commit| {
                let _ = reply.send(commit.and(res));
            }),
        )
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

/// What a write job sees: the open transaction and the audit chain head.
pub(crate) struct WriteCtx<'a> {
    pub(crate) tx: &'a rusqlite::Transaction<'a>,
    head: &'a mut (u64, String),
}

impl WriteCtx<'_> {
    /// Appends events to the chain inside the current transaction.
    pub(crate) fn audit(&mut self, now: Timestamp, events: &[AuditEvent]) -> Result<()> {
        for e in events {
            let r = audit::next_record(self.head.0, &self.head.1, now, e);
            self.tx
                .execute(
                    "INSERT INTO audit (seq, ts, event, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![r.seq as i64, r.ts.millis(), r.event, r.prev_hash, r.hash],
                )
                .map_err(db)?;
            *self.head = (r.seq, r.hash);
        }
        Ok(())
    }
}

/// The embedded store: a database file in the data directory.
pub struct SqliteStore {
    jobs: Option<mpsc::Sender<Job>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    /// Closes deterministically: the writer finishes its queue and closes
    /// its connection before this returns, so a store reopened on the same
    /// file never races a close still in flight.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path).map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(db)?;
        migrate(&mut conn)?;
        let head = load_head(&conn)?;

        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db)?;
            r.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
                .map_err(db)?;
            readers.push(Mutex::new(r));
        }

        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let writer = std::thread::Builder::new()
            .name("writ-sqlite-writer".into())
            .spawn(move || writer(conn, head, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            jobs: Some(tx),
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            writer: Some(writer),
        })
    }

    /// Runs `f` in the writer's transaction; returns once it is committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(Queued { f, reply });
        let jobs = self.jobs.as_ref().ok_or(StoreError::Closed)?;
        jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The writer connection's `(journal_mode, synchronous)`: acknowledged
    /// writes are durable only with `("wal", 2)` (FULL).
    pub async fn durability(&self) -> Result<(String, i64)> {
        self.write(|ctx| {
            let mode: String = ctx
                .tx
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map_err(db)?;
            let sync: i64 = ctx
                .tx
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .map_err(db)?;
            Ok((mode, sync))
        })
        .await
    }

    /// Runs `f` on a read-only connection off the async threads.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len().max(1);
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = readers
                .get(i)
                .ok_or(StoreError::Closed)?
                .lock()
                .map_err(|_| StoreError::Unavailable("reader lock poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    let current = usize::try_from(version).unwrap_or(usize::MAX);
    if current > schema::MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this writ understands"
        )));
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

fn load_head(conn: &Connection) -> Result<(u64, String)> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(db(e)),
        })?;
    Ok(match row {
        Some((seq, hash)) => (u64::try_from(seq).unwrap_or(0), hash),
        None => (0, GENESIS.to_owned()),
    })
}

/// The writer loop: batch, savepoint each job, commit once, then answer.
fn writer(mut conn: Connection, mut head: (u64, String), mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, &mut head, batch);
    }
}

fn run_batch(conn: &mut Connection, head: &mut (u64, String), batch: Vec<Job>) {
    let before = head.clone();
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = db(e);
            for job in batch {
                job.fail(err.clone());
            }
            return;
        }
    };
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = tx.execute_batch("SAVEPOINT job") {
            job.fail(db(e));
            continue;
        }
        let job_head = head.clone();
        let (ok, completion) = job.run(&mut WriteCtx { tx: &tx, head });
        let undo = if ok {
            tx.execute_batch("RELEASE job")
        } else {
            tx.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        if !ok || undo.is_err() {
            *head = job_head;
        }
        completions.push(completion);
    }
    let result = tx.commit().map_err(db);
    if result.is_err() {
        *head = before;
    }
    for c in completions {
        c(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn s6_wal_with_full_sync_on_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(store.durability().await.unwrap(), ("wal".to_owned(), 2));
    }
}
