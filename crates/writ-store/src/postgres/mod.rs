//! The PostgreSQL backend: one database shared by any number of broker
//! replicas.
//!
//! Each replica runs the same engine as SQLite (one writer connection with
//! group commit, a few read connections). Write transactions take one
//! advisory lock, so writers on every replica are serialized the way
//! SQLite's single writer is: the audit chain stays one chain, and
//! sequence numbers are assigned in commit order. Sessions run with
//! `synchronous_commit = on`. Triggers announce what other replicas must
//! pick up (revocations, signing keys, policy sets) with `NOTIFY`; a
//! listener thread per replica turns them into [`Change`]s.

mod schema;
mod tls;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, Config, Statement};

use tls::Target;
use tokio::sync::broadcast;

use crate::engine::{Conn, SqlStore};
use crate::sql::{DbError, DbResult, Dialect, Row, Sql, Value, to_dollar_placeholders};
use crate::{Change, Result, StoreError};

const READERS: usize = 4;
/// The advisory lock every write transaction holds ("writ" in ASCII).
const WRITE_LOCK: i64 = 0x7772_6974;
const CHANNEL: &str = "writ_changes";
const RESYNC_EVERY: Duration = Duration::from_secs(60);

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT4 => i32::try_from(*i)?.to_sql_checked(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql_checked(ty, out),
                Type::BOOL => (*i != 0).to_sql_checked(ty, out),
                _ => i.to_sql_checked(ty, out),
            },
            Value::Text(s) => s.to_sql_checked(ty, out),
            Value::Blob(b) => b.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn err(e: postgres::Error) -> DbError {
    let constraint = e.code().is_some_and(|c| c.code().starts_with("23"));
    let message = match e.as_db_error() {
        Some(d) => format!("postgres: {}: {}", d.code().code(), d.message()),
        None => format!("postgres: {e}"),
    };
    if constraint {
        DbError::Constraint(message)
    } else {
        DbError::Other(message)
    }
}

fn value(row: &postgres::Row, i: usize, ty: &Type) -> DbResult<Value> {
    fn get<'a, T: postgres::types::FromSql<'a>>(
        row: &'a postgres::Row,
        i: usize,
    ) -> DbResult<Option<T>> {
        row.try_get(i).map_err(|e| DbError::Type(e.to_string()))
    }
    let v = match *ty {
        Type::INT8 => get::<i64>(row, i)?.map(Value::Int),
        Type::INT4 => get::<i32>(row, i)?.map(|v| Value::Int(i64::from(v))),
        Type::INT2 => get::<i16>(row, i)?.map(|v| Value::Int(i64::from(v))),
        Type::BOOL => get::<bool>(row, i)?.map(|v| Value::Int(i64::from(v))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            get::<String>(row, i)?.map(Value::Text)
        }
        Type::BYTEA => get::<Vec<u8>>(row, i)?.map(Value::Blob),
        ref other => return Err(DbError::Type(format!("column of type {other}"))),
    };
    Ok(v.unwrap_or(Value::Null))
}

/// One connection, reconnected when it drops between transactions.
pub(crate) struct PgConn {
    config: Target,
    client: RefCell<Option<Client>>,
    /// SQL (as written) to its prepared statement on this connection.
    prepared: RefCell<HashMap<String, Statement>>,
    in_tx: Cell<bool>,
}

impl PgConn {
    fn connect(config: &Target) -> DbResult<Client> {
        let mut client = config.connect().map_err(err)?;
        client
            .batch_execute(
                "SET synchronous_commit = on; SET TIME ZONE 'UTC'; SET client_min_messages = warning",
            )
            .map_err(err)?;
        Ok(client)
    }

    fn open(config: &Target) -> DbResult<Self> {
        Ok(Self {
            client: RefCell::new(Some(Self::connect(config)?)),
            config: config.clone(),
            prepared: RefCell::new(HashMap::new()),
            in_tx: Cell::new(false),
        })
    }

    /// Runs `f` on a live client. A connection lost outside a transaction
    /// is replaced (also when the loss only shows as `f` fails: an idle
    /// client learns that the server went away on its next call, and `f`
    /// then runs again on a new connection, which is safe outside a
    /// transaction); inside one, the transaction is lost and so is the call.
    fn with<T>(&self, mut f: impl FnMut(&mut Client) -> DbResult<T>) -> DbResult<T> {
        let mut slot = self.client.borrow_mut();
        for attempt in 0..2 {
            let closed = slot.as_ref().is_none_or(Client::is_closed);
            if closed {
                if self.in_tx.get() {
                    return Err(DbError::Other(
                        "postgres: connection lost during a transaction".into(),
                    ));
                }
                self.prepared.borrow_mut().clear();
                *slot = Some(Self::connect(&self.config)?);
            }
            let client = slot
                .as_mut()
                .ok_or_else(|| DbError::Other("postgres: not connected".into()))?;
            let result = f(client);
            let lost = result.is_err() && client.is_closed() && !self.in_tx.get();
            if !lost || attempt == 1 {
                return result;
            }
        }
        Err(DbError::Other("postgres: not connected".into()))
    }

    fn statement(&self, client: &mut Client, sql: &str) -> DbResult<Statement> {
        if let Some(s) = self.prepared.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = client.prepare(&to_dollar_placeholders(sql)).map_err(err)?;
        self.prepared
            .borrow_mut()
            .insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

fn bind(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Sql for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn batch(&self, sql: &str) -> DbResult<()> {
        self.with(|c| c.batch_execute(sql).map_err(err))
    }

    fn exec(&self, sql: &str, args: &[Value]) -> DbResult<u64> {
        self.with(|c| {
            let stmt = self.statement(c, sql)?;
            c.execute(&stmt, &bind(args)).map_err(err)
        })
    }

    fn rows(&self, sql: &str, args: &[Value]) -> DbResult<Vec<Row>> {
        self.with(|c| {
            let stmt = self.statement(c, sql)?;
            let rows = c.query(&stmt, &bind(args)).map_err(err)?;
            rows.iter()
                .map(|r| {
                    r.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, col)| value(r, i, col.type_()))
                        .collect::<DbResult<Vec<_>>>()
                        .map(Row)
                })
                .collect()
        })
    }

    fn begin(&self) -> DbResult<()> {
        // In a transaction from here on, whatever happens next: a lock wait
        // that fails (cancelled, timed out) leaves an aborted transaction
        // that `rollback` must end.
        self.batch("BEGIN")?;
        self.in_tx.set(true);
        self.batch(&format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})"))
    }

    fn commit(&self) -> DbResult<()> {
        let r = self.batch("COMMIT");
        self.in_tx.set(false);
        r
    }

    fn rollback(&self) -> DbResult<()> {
        if !self.in_tx.get() {
            return Ok(());
        }
        self.in_tx.set(false);
        let mut slot = self.client.borrow_mut();
        match slot.as_mut() {
            Some(c) if !c.is_closed() => c.batch_execute("ROLLBACK").map_err(err),
            _ => Ok(()),
        }
    }

    fn schema_version(&self) -> DbResult<i64> {
        self.batch(
            "CREATE TABLE IF NOT EXISTS writ_schema (version BIGINT NOT NULL); \
             INSERT INTO writ_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM writ_schema)",
        )?;
        let rows = self.rows("SELECT version FROM writ_schema", &[])?;
        rows.first().map_or(Ok(0), |r| r.get(0))
    }

    fn set_schema_version(&self, version: i64) -> DbResult<()> {
        self.exec(
            "UPDATE writ_schema SET version = ?1",
            &[Value::Int(version)],
        )
        .map(|_| ())
    }

    /// Anything but `synchronous_commit = off` waits for the local flush.
    fn durable_commits(&self) -> DbResult<bool> {
        let rows = self.rows("SELECT current_setting('synchronous_commit')", &[])?;
        let setting: String = rows.first().ok_or(DbError::NoRows).and_then(|r| r.get(0))?;
        Ok(setting != "off")
    }
}

fn config(url: &str) -> Result<Target> {
    Target::parse(url, finish)
        .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL address: {e}")))
}

fn finish(config: &mut Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("writ");
    }
    // A connection that died without a word (a half-open TCP connection)
    // is noticed within a minute rather than the system's two hours.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(20))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
}

fn unavailable(e: DbError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqlStore {
    /// Connects to PostgreSQL at `url` (`postgres://user:password@host/db`
    /// or `host=... dbname=...`), migrating the schema if needed.
    pub async fn connect_postgres(url: &str) -> Result<Self> {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || Self::connect_postgres_blocking(&url))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    fn connect_postgres_blocking(url: &str) -> Result<Self> {
        let config = config(url)?;
        let writer = PgConn::open(&config).map_err(unavailable)?;
        let mut readers: Vec<Conn> = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Box::new(PgConn::open(&config).map_err(unavailable)?));
        }
        let mut store = Self::start(Box::new(writer), readers, schema::MIGRATIONS, "postgres")?;
        let (tx, _) = broadcast::channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            config,
            tx: tx.clone(),
            stop: Arc::clone(&stop),
        };
        let first = listener.connect().map_err(unavailable)?;
        std::thread::Builder::new()
            .name("writ-postgres-listener".into())
            .spawn(move || listener.run(first))
            .map_err(|e| StoreError::Unavailable(format!("cannot start listener: {e}")))?;
        store.changes = Some(tx);
        store.stop = Some(stop);
        Ok(store)
    }
}

/// Turns `NOTIFY writ_changes` into [`Change`]s, reconnecting (and asking
/// for a full reload, since announcements may have been missed) when the
/// connection drops.
struct Listener {
    config: Target,
    tx: broadcast::Sender<Change>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn connect(&self) -> DbResult<Client> {
        let mut client = PgConn::connect(&self.config)?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(err)?;
        Ok(client)
    }

    fn run(self, first: Client) {
        let mut client = Some(first);
        let mut last_resync = std::time::Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            // A safety net under the announcements: whatever may have been
            // missed is picked up within a minute.
            if last_resync.elapsed() >= RESYNC_EVERY {
                last_resync = std::time::Instant::now();
                let _ = self.tx.send(Change::Resync);
            }
            let Some(c) = client.as_mut() else {
                std::thread::sleep(Duration::from_millis(500));
                match self.connect() {
                    Ok(c) => {
                        client = Some(c);
                        let _ = self.tx.send(Change::Resync);
                    }
                    Err(e) => tracing::warn!(error = %e, "postgres listener cannot reconnect"),
                }
                continue;
            };
            let mut lost = false;
            {
                let mut notes = c.notifications();
                let mut iter = notes.timeout_iter(Duration::from_millis(250));
                loop {
                    match iter.next() {
                        Ok(Some(n)) => {
                            let change = match n.payload() {
                                "revocations" => Change::Revocations,
                                "keys" => Change::Keys,
                                "policy" => Change::Policy,
                                "shadow" => Change::Shadow,
                                _ => Change::Resync,
                            };
                            let _ = self.tx.send(change);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "postgres listener lost its connection");
                            lost = true;
                            break;
                        }
                    }
                }
            }
            if lost || c.is_closed() {
                client = None;
            }
        }
    }
}
