//! [`Sql`] over a rusqlite connection.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use crate::sql::{DbError, DbResult, Dialect, Row, Sql, Value};

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn err(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::QueryReturnedNoRows => DbError::NoRows,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            DbError::Constraint(e.to_string())
        }
        _ => DbError::Other(e.to_string()),
    }
}

fn value(v: ValueRef<'_>) -> DbResult<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| DbError::Type(e.to_string()))?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(r) => return Err(DbError::Type(format!("unexpected real {r}"))),
    })
}

impl Sql for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn batch(&self, sql: &str) -> DbResult<()> {
        self.execute_batch(sql).map_err(err)
    }

    fn exec(&self, sql: &str, args: &[Value]) -> DbResult<u64> {
        let mut stmt = self.prepare_cached(sql).map_err(err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(args))
            .map_err(err)?;
        Ok(n as u64)
    }

    fn begin(&self) -> DbResult<()> {
        self.execute_batch("BEGIN IMMEDIATE").map_err(err)
    }

    fn commit(&self) -> DbResult<()> {
        self.execute_batch("COMMIT").map_err(err)
    }

    fn rollback(&self) -> DbResult<()> {
        if self.is_autocommit() {
            return Ok(());
        }
        self.execute_batch("ROLLBACK").map_err(err)
    }

    fn schema_version(&self) -> DbResult<i64> {
        self.query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)
    }

    fn set_schema_version(&self, version: i64) -> DbResult<()> {
        self.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(err)
    }

    /// WAL with `synchronous=FULL` (2).
    fn durable_commits(&self) -> DbResult<bool> {
        let mode: String = self
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(err)?;
        let sync: i64 = self
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(err)?;
        Ok(mode == "wal" && sync == 2)
    }

    fn rows(&self, sql: &str, args: &[Value]) -> DbResult<Vec<Row>> {
        let mut stmt = self.prepare_cached(sql).map_err(err)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args)).map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            let mut row = Vec::with_capacity(width);
            for i in 0..width {
                row.push(value(r.get_ref(i).map_err(err)?)?);
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}
