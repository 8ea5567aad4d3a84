//! What the CLI prints, and the exit codes it returns.
//!
//! Exit codes: 0 success; 1 an error (unreachable server, bad local input,
//! unexpected answer); 2 usage (from clap); 3 the server refused the request
//! (4xx: denied by policy, unauthorized, invalid); 4 an integrity check
//! failed (`writ audit verify`).

use serde::Serialize;
use writ_client::ClientError;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_REFUSED: u8 = 3;
pub const EXIT_INTEGRITY: u8 = 4;

pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e
        .downcast_ref::<ClientError>()
        .and_then(ClientError::status)
    {
        Some(s) if (400..500).contains(&s) => EXIT_REFUSED,
        _ => EXIT_ERROR,
    }
}

/// How values are printed (`--output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    Table,
    /// Pretty JSON, for scripts.
    Json,
}

static FORMAT: std::sync::OnceLock<Format> = std::sync::OnceLock::new();

/// Sets the format: the one asked for, else a table on a terminal and
/// JSON when standard output is a pipe or a file.
pub fn set_format(asked: Option<Format>) {
    let f = asked.unwrap_or_else(|| {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            Format::Table
        } else {
            Format::Json
        }
    });
    let _ = FORMAT.set(f);
}

fn format() -> Format {
    FORMAT.get().copied().unwrap_or(Format::Json)
}

/// Prints a value as a table or pretty JSON (see [`set_format`]), or one
/// top-level field of it raw.
pub fn print<T: Serialize>(value: &T, field: Option<&str>) -> anyhow::Result<()> {
    let v = serde_json::to_value(value)?;
    match field {
        None if format() == Format::Table => print!("{}", table(&v)),
        None => println!("{}", serde_json::to_string_pretty(&v)?),
        Some(f) => match v.get(f) {
            Some(serde_json::Value::String(s)) => println!("{s}"),
            Some(other) => println!("{other}"),
            None => anyhow::bail!("the response has no field {f:?}"),
        },
    }
    Ok(())
}

/// Shell `export` lines, for `eval "$(writ ... --export)"`.
pub fn print_exports(pairs: &[(&str, &str)]) {
    for (k, v) in pairs {
        println!("export {k}='{}'", v.replace('\'', "'\\''"));
    }
}

/// The widest a table cell grows before it is cut.
const MAX_CELL: usize = 60;

/// A value as text for people: a list of records as columns (one per key,
/// in first-seen order, upper-cased), a record as `KEY  value` lines,
/// anything else as its JSON.
pub fn table(v: &serde_json::Value) -> String {
    use serde_json::Value;
    let rows: Vec<Vec<(String, String)>> = match v {
        Value::Array(items) if items.iter().all(Value::is_object) => items
            .iter()
            .filter_map(Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), cell(v))).collect())
            .collect(),
        Value::Object(o) => {
            let width = o.keys().map(|k| k.chars().count()).max().unwrap_or(0);
            let mut out = String::new();
            for (k, v) in o {
                out.push_str(&format!("{:<width$}  {}\n", k.to_uppercase(), cell(v)));
            }
            return out;
        }
        other => return format!("{other}\n"),
    };
    if rows.is_empty() {
        return "(none)\n".into();
    }
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for (k, _) in row {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    // What names a row comes first.
    columns.sort_by_key(|c| !matches!(c.as_str(), "name" | "id" | "task_id" | "jti" | "seq"));
    let lookup = |row: &[(String, String)], col: &str| {
        row.iter()
            .find(|(k, _)| k == col)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| lookup(r, c).chars().count())
                .chain(std::iter::once(c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{c:<w$}  "));
        }
        format!("{}\n", l.trim_end())
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in &rows {
        out.push_str(&line(columns.iter().map(|c| lookup(r, c)).collect()));
    }
    out
}

/// One value in a cell: strings bare, the rest as compact JSON, cut to
/// [`MAX_CELL`] characters.
fn cell(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let s = s.replace(['\n', '\t'], " ");
    if s.chars().count() > MAX_CELL {
        let cut: String = s.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_print_as_aligned_columns_and_records_as_lines() {
        let v = serde_json::json!([
            {"name": "a", "attributes": {"tier": "1"}},
            {"name": "longer-name", "quarantined": true},
        ]);
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines.first(),
            Some(&"NAME         ATTRIBUTES    QUARANTINED")
        );
        assert_eq!(lines.get(1), Some(&r#"a            {"tier":"1"}"#));
        assert_eq!(
            lines.get(2),
            Some(&format!("longer-name{}true", " ".repeat(16)).as_str())
        );
        assert_eq!(table(&serde_json::json!([])), "(none)\n");
        assert_eq!(
            table(&serde_json::json!({"active": false, "jti": "x"})),
            "ACTIVE  false\nJTI     x\n"
        );
    }
}
