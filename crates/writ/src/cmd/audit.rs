//! `writ audit tail|verify`

use std::time::Duration;

use clap::Subcommand;

use super::Global;
use crate::output::{EXIT_INTEGRITY, EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Print the last records, one JSON object a line.
    Tail {
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Keep printing new records as they are written.
        #[arg(short, long)]
        follow: bool,
    },
    /// Verify the whole hash chain; exits 4 if it is broken. With
    /// --checkpoint, also check the log against the checkpoint saved there
    /// last time (truncation is detected), then save the new one.
    ///
    /// With --keys (a JWKS file saved from `writ audit keys`), the records
    /// and the checkpoints the broker kept are also checked here, with
    /// those public keys alone, without trusting the broker's answer.
    ///
    /// With --archive DIR, the audit archive there is verified here instead,
    /// without the broker: each segment's signed head (with --keys, or the
    /// broker's keys), the link from each segment to the one before, and
    /// the chain across them; with --database (the SQLite file or a
    /// postgres:// URL), on into the records the database still holds.
    Verify {
        #[arg(long, conflicts_with = "archive")]
        checkpoint: Option<std::path::PathBuf>,
        #[arg(long)]
        keys: Option<std::path::PathBuf>,
        #[arg(long)]
        archive: Option<std::path::PathBuf>,
        #[arg(long, requires = "archive")]
        database: Option<String>,
    },
    /// Print every key that signed for this issuer (public halves, retired
    /// ones included) as a JWKS: save it to verify checkpoints offline.
    Keys,
}

pub async fn run(g: &Global, cmd: AuditCmd) -> anyhow::Result<u8> {
    if let AuditCmd::Verify {
        archive: Some(dir),
        keys,
        database,
        ..
    } = &cmd
    {
        return super::audit_archive::verify(g, dir, keys.as_deref(), database.as_deref()).await;
    }
    let c = g.admin()?;
    match cmd {
        AuditCmd::Tail { lines, follow } => {
            let page = c.audit_last(lines).await?;
            for r in &page.records {
                println!("{}", serde_json::to_string(r)?);
            }
            if !follow {
                return Ok(EXIT_OK);
            }
            let mut after = page.next;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let page = c.audit(after, 1000).await?;
                for r in &page.records {
                    println!("{}", serde_json::to_string(r)?);
                }
                after = page.next;
            }
        }
        AuditCmd::Keys => {
            print(&c.audit_keys().await?, g.field())?;
            Ok(EXIT_OK)
        }
        AuditCmd::Verify {
            checkpoint, keys, ..
        } => {
            let v = c.audit_verify().await?;
            if !v.valid {
                print(&v, g.field())?;
                return Ok(EXIT_INTEGRITY);
            }
            let mut report = serde_json::to_value(&v)?;
            if let Some(path) = keys {
                match verify_here(&c, &path).await? {
                    Ok(note) => {
                        if let Some(obj) = report.as_object_mut() {
                            obj.insert("verified_here".into(), note);
                        }
                    }
                    Err(problem) => {
                        eprintln!("error: {problem}");
                        print(&report, g.field())?;
                        return Ok(EXIT_INTEGRITY);
                    }
                }
            }
            if let Some(path) = checkpoint {
                match check_checkpoint(&c, &path, &v).await? {
                    Ok(note) => {
                        if let Some(obj) = report.as_object_mut() {
                            obj.insert("checkpoint_check".into(), note);
                        }
                    }
                    Err(problem) => {
                        eprintln!("error: {problem}");
                        print(&report, g.field())?;
                        return Ok(EXIT_INTEGRITY);
                    }
                }
                if let Some(token) = &v.checkpoint {
                    write_private(&path, token)?;
                }
            }
            print(&report, g.field())?;
            Ok(EXIT_OK)
        }
    }
}

/// Walks the whole log here and holds it to the checkpoints the broker
/// kept, each verified with the keys in the JWKS file at `keys`. The outer
/// `Err` is a failure to check; the inner one an integrity problem.
async fn verify_here(
    c: &writ_client::Client,
    keys: &std::path::Path,
) -> anyhow::Result<Result<serde_json::Value, String>> {
    use writ_core::audit::{Verifier, checkpoint_gap};
    let text = std::fs::read_to_string(keys)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", keys.display()))?;
    let jwks = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a JWKS: {e}", keys.display()))?;
    let meta = c.metadata().await?;
    let issuer = meta
        .get("issuer")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let mut sealed = Vec::new();
    let mut links = Vec::new();
    for token in c.audit_checkpoints().await? {
        match writ_core::token::verify_checkpoint(&token, &jwks, issuer) {
            Ok((cp, true)) => {
                links.push((cp.seq, cp.prev));
                sealed.push((cp.seq, cp.hash));
            }
            Ok((cp, false)) => {
                return Ok(Err(format!(
                    "the checkpoint of record {} is signed by a key not in {}",
                    cp.seq,
                    keys.display()
                )));
            }
            Err(e) => return Ok(Err(format!("a kept checkpoint does not verify: {e}"))),
        }
    }
    if let Some(seq) = checkpoint_gap(&links) {
        return Ok(Err(format!(
            "the checkpoint before the one for record {seq} is missing"
        )));
    }
    let count = sealed.len();
    let mut v = Verifier::with_checkpoints(sealed);
    let mut after = 0;
    loop {
        let page = c.audit(after, 1000).await?;
        if page.records.is_empty() {
            break;
        }
        for r in &page.records {
            if let Err(brk) = v.push(r) {
                return Ok(Err(brk.to_string()));
            }
        }
        after = page.next;
    }
    if let Err(brk) = v.finish() {
        return Ok(Err(brk.to_string()));
    }
    Ok(Ok(serde_json::json!({
        "records": v.head().0,
        "checkpoints": count,
        "sealed_through": v.sealed_through(),
    })))
}

/// Compares the log with the checkpoint saved at `path` (if any). The outer
/// `Err` is a failure to check; the inner one an integrity problem.
async fn check_checkpoint(
    c: &writ_client::Client,
    path: &std::path::Path,
    v: &writ_core::api::AuditVerified,
) -> anyhow::Result<Result<serde_json::Value, String>> {
    let Ok(saved) = std::fs::read_to_string(path) else {
        return Ok(Ok(serde_json::json!({ "previous": null })));
    };
    let meta = c.metadata().await?;
    let issuer = meta
        .get("issuer")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let jwks = serde_json::from_value(c.jwks().await?)?;
    let (cp, signed) = match writ_core::token::verify_checkpoint(saved.trim(), &jwks, issuer) {
        Ok(x) => x,
        Err(e) => return Ok(Err(format!("the saved checkpoint does not verify: {e}"))),
    };
    if v.records < cp.seq {
        return Ok(Err(format!(
            "the audit log was truncated: the checkpoint saw {} records, the log has {}",
            cp.seq, v.records
        )));
    }
    let page = c.audit(cp.seq.saturating_sub(1), 1).await?;
    match page.records.first() {
        Some(r) if r.seq == cp.seq && r.hash == cp.hash => {}
        _ => {
            return Ok(Err(format!(
                "record {} differs from the checkpoint",
                cp.seq
            )));
        }
    }
    Ok(Ok(serde_json::json!({
        "previous_seq": cp.seq,
        "signature": if signed { "valid" } else { "key retired; seq and hash checked" },
    })))
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}
