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

/// Prints a value as pretty JSON, or one top-level field of it raw.
pub fn print<T: Serialize>(value: &T, field: Option<&str>) -> anyhow::Result<()> {
    let v = serde_json::to_value(value)?;
    match field {
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
