//! The SQL the store logic speaks, whichever database runs it: values,
//! rows, and the few operations a connection must offer.
//!
//! Statements are written once, in the subset SQLite and PostgreSQL share,
//! with `?N` placeholders (rewritten to `$N` for PostgreSQL). Integers are
//! 64-bit everywhere and booleans are stored as 0/1 integers, so a value
//! read back has the same shape on both.

use crate::StoreError;

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Why a statement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// A query expected a row and there was none.
    NoRows,
    /// A constraint (unique key, foreign key, not null, check) refused it.
    Constraint(String),
    /// A column held something other than what the code expected.
    Type(String),
    /// Anything else: I/O, connection, syntax.
    Other(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoRows => f.write_str("query returned no rows"),
            Self::Constraint(m) => write!(f, "constraint violated: {m}"),
            Self::Type(m) => write!(f, "unexpected column type: {m}"),
            Self::Other(m) => f.write_str(m),
        }
    }
}

pub type DbResult<T> = std::result::Result<T, DbError>;

/// Any failure the caller cannot act on makes the store unavailable.
pub(crate) fn db(e: DbError) -> StoreError {
    match e {
        DbError::Type(m) => StoreError::Corrupt(m),
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// `NoRows` as `None`, like a lookup that found nothing.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExtension<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Something that can be bound to a placeholder.
pub(crate) trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// The values bound to `?1`, `?2`, ... in order.
macro_rules! params {
    ($($e:expr),* $(,)?) => {
        &[$($crate::sql::ToValue::to_value(&$e)),*] as &[$crate::sql::Value]
    };
}
pub(crate) use params;

/// One row of a result.
#[derive(Debug, Clone, Default)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i`, converted.
    pub fn get<I, T>(&self, i: I) -> DbResult<T>
    where
        I: TryInto<usize>,
        T: FromValue,
    {
        let v = i
            .try_into()
            .ok()
            .and_then(|i| self.0.get(i))
            .ok_or_else(|| DbError::Type("column index out of range".into()))?;
        T::from_value(v)
    }
}

/// Something a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> DbResult<Self>;
}

fn mismatch<T>(want: &str, v: &Value) -> DbResult<T> {
    Err(DbError::Type(format!("expected {want}, found {v:?}")))
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Int(i) => Ok(*i),
            v => mismatch("an integer", v),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Int(i) => Ok(*i != 0),
            v => mismatch("a boolean", v),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            v => mismatch("text", v),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            v => mismatch("bytes", v),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// Which database a connection talks to, where the SQL must differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection (or the transaction open on it).
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Runs statements without parameters (DDL, transaction control).
    fn batch(&self, sql: &str) -> DbResult<()>;
    /// Runs one statement; the number of rows it changed.
    fn exec(&self, sql: &str, args: &[Value]) -> DbResult<u64>;
    /// Runs one query; every row.
    fn rows(&self, sql: &str, args: &[Value]) -> DbResult<Vec<Row>>;
    /// Opens a write transaction, holding the database's single writer
    /// lock until it ends (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: an
    /// advisory lock shared by every replica).
    fn begin(&self) -> DbResult<()>;
    fn commit(&self) -> DbResult<()>;
    fn rollback(&self) -> DbResult<()>;
    /// The number of migrations applied.
    fn schema_version(&self) -> DbResult<i64>;
    fn set_schema_version(&self, version: i64) -> DbResult<()>;
    /// Whether a commit is durable before it is acknowledged.
    fn durable_commits(&self) -> DbResult<bool>;
}

impl dyn Sql + '_ {
    pub(crate) fn execute(&self, sql: &str, args: &[Value]) -> DbResult<usize> {
        self.exec(sql, args)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The first row, mapped; `NoRows` if there is none.
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        args: &[Value],
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<T> {
        let rows = self.rows(sql, args)?;
        rows.first().map_or(Err(DbError::NoRows), f)
    }
}

/// A statement to run on a connection, possibly more than once.
pub(crate) struct Statement<'c> {
    conn: &'c dyn Sql,
    sql: String,
}

impl Statement<'_> {
    /// Every row, each mapped on its own.
    pub(crate) fn query_map<T>(
        &mut self,
        args: &[Value],
        mut f: impl FnMut(&Row) -> DbResult<T>,
    ) -> DbResult<std::vec::IntoIter<DbResult<T>>> {
        let rows = self.conn.rows(&self.sql, args)?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }
}

impl<'c> dyn Sql + 'c {
    pub(crate) fn prepare(&'c self, sql: &str) -> DbResult<Statement<'c>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_owned(),
        })
    }
}

/// `?N` placeholders as PostgreSQL's `$N`, leaving quoted text alone.
pub(crate) fn to_dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '?' => {
                out.push('$');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes_only() {
        assert_eq!(
            to_dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
    }

    #[test]
    fn values_convert_both_ways() {
        let row = Row(vec![
            Value::Int(1),
            Value::Null,
            Value::Text("x".into()),
            Value::Blob(vec![1]),
        ]);
        assert!(row.get::<_, bool>(0).unwrap());
        assert_eq!(row.get::<_, Option<i64>>(1).unwrap(), None);
        assert_eq!(row.get::<_, String>(2).unwrap(), "x");
        assert_eq!(row.get::<_, Vec<u8>>(3).unwrap(), vec![1]);
        assert!(matches!(row.get::<_, i64>(2), Err(DbError::Type(_))));
        assert!(row.get::<_, i64>(9).is_err());
        let p = params![1_i64, "a", Some(true), None::<String>];
        assert_eq!(
            p,
            &[
                Value::Int(1),
                Value::Text("a".into()),
                Value::Int(1),
                Value::Null
            ]
        );
    }
}
