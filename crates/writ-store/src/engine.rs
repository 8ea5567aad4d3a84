//! The engine both backends share.
//!
//! One writer thread owns the only read-write connection. It takes jobs from
//! a queue, runs as many as are waiting inside one transaction (each in its
//! own savepoint, so one failing job does not spoil the others), commits once
//! with a durable commit, and only then answers every job: group commit,
//! durable before acknowledged. Each batch reads the head of the audit chain
//! inside its transaction, so several processes writing one database (broker
//! replicas on PostgreSQL, whose transactions take one advisory lock) extend
//! a single chain. Reads run on a small pool of other connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};
use writ_core::Timestamp;
use writ_core::audit::{self, AuditEvent, GENESIS};

use crate::sql::{DbResult, Sql, db};
use crate::{Change, Result, StoreError};

const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;

/// A connection the engine can own and move to its threads.
pub(crate) type Conn = Box<dyn Sql + Send>;

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
    pub(crate) tx: &'a dyn Sql,
    head: &'a mut (u64, String),
    /// The records written, for the tap (only when one is set).
    written: Option<&'a mut Vec<crate::TappedRecord>>,
}

/// Where committed audit records are copied, as they are written: a
/// bounded queue that never holds the writer up (a full queue drops the
/// copy and counts it in `writ_audit_tap_dropped_total`).
pub(crate) type Tap = Arc<std::sync::OnceLock<mpsc::Sender<crate::TappedRecord>>>;

impl WriteCtx<'_> {
    /// Appends events to the chain inside the current transaction.
    pub(crate) fn audit(&mut self, now: Timestamp, events: &[AuditEvent]) -> Result<()> {
        for e in events {
            let r = audit::next_record(self.head.0, &self.head.1, now, e);
            self.tx
                .exec(
                    "INSERT INTO audit (seq, ts, event, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                    crate::sql::params![r.seq as i64, r.ts.millis(), r.event, r.prev_hash, r.hash],
                )
                .map_err(db)?;
            if let Some(w) = self.written.as_deref_mut() {
                w.push(crate::TappedRecord {
                    seq: r.seq,
                    ts: now,
                    event: e.clone(),
                });
            }
            *self.head = (r.seq, r.hash);
        }
        Ok(())
    }
}

/// A store on a SQL database: the embedded SQLite file
/// ([`SqlStore::open_sqlite`]) or a PostgreSQL server shared by replicas
/// ([`SqlStore::connect_postgres`]).
pub struct SqlStore {
    jobs: Option<mpsc::Sender<Job>>,
    readers: Arc<Vec<Mutex<Conn>>>,
    next_reader: AtomicUsize,
    writer: Option<std::thread::JoinHandle<()>>,
    pub(crate) changes: Option<broadcast::Sender<Change>>,
    /// Background threads to stop on drop (the PostgreSQL listener).
    pub(crate) stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Point lookups may run on the calling thread: the backend answers
    /// them from memory in microseconds (SQLite's page cache), so a hop to
    /// a blocking thread and back would cost more than the lookup.
    pub(crate) inline_reads: bool,
    pub(crate) tap: Tap,
}

impl Drop for SqlStore {
    /// Closes deterministically: the writer finishes its queue and closes
    /// its connection before this returns, so a store reopened on the same
    /// file never races a close still in flight.
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.store(true, Ordering::Relaxed);
        }
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // Connections are closed on a thread of their own: a PostgreSQL
        // client blocks to close and must not do so on an async thread.
        let readers = std::mem::take(&mut self.readers);
        let slot = Arc::new(Mutex::new(Some(readers)));
        let theirs = Arc::clone(&slot);
        let closed = std::thread::Builder::new()
            .name("writ-store-close".into())
            .spawn(move || {
                let taken = theirs.lock().ok().and_then(|mut s| s.take());
                drop(taken);
            })
            .map(|closer| closer.join().is_ok())
            .unwrap_or(false);
        if !closed {
            // No thread to close them on: leak them rather than close a
            // PostgreSQL client on what may be an async thread.
            if let Ok(mut s) = slot.lock() {
                std::mem::forget(s.take());
            }
        }
    }
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Migrates the database on `writer`, then starts the engine.
    pub(crate) fn start(
        writer: Conn,
        readers: Vec<Conn>,
        migrations: &'static [&'static str],
        name: &str,
    ) -> Result<Self> {
        migrate(writer.as_ref(), migrations)?;
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let tap: Tap = Arc::default();
        let writer_tap = Arc::clone(&tap);
        let writer = std::thread::Builder::new()
            .name(format!("writ-{name}-writer"))
            .spawn(move || writer_loop(writer, rx, &writer_tap))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            jobs: Some(tx),
            readers: Arc::new(readers.into_iter().map(Mutex::new).collect()),
            next_reader: AtomicUsize::new(0),
            writer: Some(writer),
            changes: None,
            stop: None,
            inline_reads: false,
            tap,
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

    /// Whether the writer's commits are durable before they are
    /// acknowledged (SQLite: WAL with `synchronous=FULL`; PostgreSQL:
    /// `synchronous_commit` on).
    pub async fn durable_commits(&self) -> Result<bool> {
        self.write(|ctx| ctx.tx.durable_commits().map_err(db)).await
    }

    /// Runs a point lookup: on the calling thread when the backend allows
    /// it and a read connection is free, else as [`SqlStore::read`].
    pub(crate) async fn read_quick<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T> + Send + 'static,
    {
        if self.inline_reads {
            for reader in self.readers.iter() {
                if let Ok(conn) = reader.try_lock() {
                    return f(conn.as_ref());
                }
            }
        }
        self.read(f).await
    }

    /// Runs `f` on a read connection off the async threads.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T> + Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len().max(1);
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = readers
                .get(i)
                .ok_or(StoreError::Closed)?
                .lock()
                .map_err(|_| StoreError::Unavailable("reader lock poisoned".into()))?;
            f(conn.as_ref())
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

/// Applies the migrations `conn` has not seen yet, each in its own
/// transaction (which, on PostgreSQL, holds the writers' lock: replicas
/// starting together migrate once).
fn migrate(conn: &dyn Sql, migrations: &[&str]) -> Result<()> {
    loop {
        conn.begin().map_err(db)?;
        let step = (|| -> Result<bool> {
            let version = conn.schema_version().map_err(db)?;
            let current = usize::try_from(version).unwrap_or(usize::MAX);
            if current > migrations.len() {
                return Err(StoreError::Corrupt(format!(
                    "database schema version {version} is newer than this writ understands"
                )));
            }
            let Some(sql) = migrations.get(current) else {
                return Ok(false);
            };
            conn.batch(sql).map_err(db)?;
            conn.set_schema_version(version + 1).map_err(db)?;
            Ok(true)
        })();
        match step {
            Ok(more) => {
                conn.commit().map_err(db)?;
                if !more {
                    return Ok(());
                }
            }
            Err(e) => {
                let _ = conn.rollback();
                return Err(e);
            }
        }
    }
}

fn load_head(conn: &dyn Sql) -> DbResult<(u64, String)> {
    let rows = conn.rows("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?;
    Ok(match rows.first() {
        Some(r) => (u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?),
        None => (0, GENESIS.to_owned()),
    })
}

/// The writer loop: batch, savepoint each job, commit once, then answer.
fn writer_loop(conn: Conn, mut rx: mpsc::Receiver<Job>, tap: &Tap) {
    let mut last = 0;
    while let Some(first) = rx.blocking_recv() {
        // Under concurrent load (the last batch had company), give the
        // request threads a turn first so this commit carries more jobs:
        // one durable commit is the dearest step of a write. A lone
        // writer is never held back.
        if last > 1 {
            std::thread::yield_now();
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        last = batch.len();
        run_batch(conn.as_ref(), batch, tap.get());
    }
}

fn run_batch(conn: &dyn Sql, batch: Vec<Job>, tap: Option<&mpsc::Sender<crate::TappedRecord>>) {
    let started = std::time::Instant::now();
    metrics::histogram!("writ_store_commit_batch_jobs").record(batch.len() as f64);
    let begun = conn.begin().and_then(|()| load_head(conn));
    let mut head = match begun {
        Ok(head) => head,
        Err(e) => {
            let _ = conn.rollback();
            let err = db(e);
            for job in batch {
                job.fail(err.clone());
            }
            return;
        }
    };
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    let mut written: Vec<crate::TappedRecord> = Vec::new();
    // A savepoint step that fails leaves the transaction in a state no
    // later job may build on (PostgreSQL would even turn the COMMIT of an
    // aborted transaction into a silent ROLLBACK): the whole batch fails.
    let mut broken: Option<StoreError> = None;
    for job in batch {
        if let Some(e) = &broken {
            job.fail(e.clone());
            continue;
        }
        if let Err(e) = conn.batch("SAVEPOINT job") {
            let e = db(e);
            job.fail(e.clone());
            broken = Some(e);
            continue;
        }
        let job_head = head.clone();
        let job_written = written.len();
        let (ok, completion) = job.run(&mut WriteCtx {
            tx: conn,
            head: &mut head,
            written: tap.is_some().then_some(&mut written),
        });
        let undo = if ok {
            conn.batch("RELEASE SAVEPOINT job")
        } else {
            conn.batch("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
        };
        if !ok {
            head = job_head;
            written.truncate(job_written);
        }
        if let Err(e) = undo {
            broken = Some(db(e));
        }
        completions.push(completion);
    }
    let result = match broken {
        Some(e) => Err(e),
        None => conn.commit().map_err(db),
    };
    if result.is_err() {
        let _ = conn.rollback();
    }
    metrics::histogram!(
        "writ_store_commit_duration_seconds",
        "result" => if result.is_ok() { "committed" } else { "failed" },
    )
    .record(started.elapsed().as_secs_f64());
    for c in completions {
        c(result.clone());
    }
    if let (Some(tap), Ok(())) = (tap, &result) {
        for r in written {
            if tap.try_send(r).is_err() {
                metrics::counter!("writ_audit_tap_dropped_total").increment(1);
            }
        }
    }
}
