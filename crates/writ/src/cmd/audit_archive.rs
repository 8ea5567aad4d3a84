//! `writ audit verify --archive DIR`: the audit archive verified here,
//! without the broker and without the database (or with the database, to
//! see the chain go on from the archive into the records it still holds).

use std::path::Path;

use writ_core::archive::{ArchiveError, ArchiveWalk, read_segment, segment_paths};
use writ_core::audit::Verifier;
use writ_store::prelude::*;

use super::Global;
use crate::output::{EXIT_INTEGRITY, EXIT_OK, print};

/// Verifies the archive in `dir` with the keys in `keys` (a JWKS file, or
/// the broker's when none is given), then, given a `database`, the records
/// it still holds.
pub async fn verify(
    g: &Global,
    dir: &Path,
    keys: Option<&Path>,
    database: Option<&str>,
) -> anyhow::Result<u8> {
    let jwks = match keys {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a JWKS: {e}", path.display()))?
        }
        None => serde_json::from_value(g.admin()?.audit_keys().await?)?,
    };
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let mut walk = ArchiveWalk::new(Verifier::default(), jwks, None);
    let dir_owned = dir.to_owned();
    let walked = tokio::task::spawn_blocking(move || -> Result<ArchiveWalk, ArchiveError> {
        let paths = segment_paths(&dir_owned).map_err(|e| ArchiveError {
            segment: dir_owned.display().to_string(),
            seq: None,
            reason: format!("cannot list: {e}"),
        })?;
        for p in paths {
            walk.push(&read_segment(&p)?)?;
        }
        Ok(walk)
    })
    .await?;
    let walk = match walked {
        Ok(w) => w,
        Err(e) => return refuse(g, &e.to_string(), e.seq, e.segment.as_str()),
    };
    let (archived, last_hash) = walk.verifier.head();
    let mut report = serde_json::json!({
        "valid": true,
        "segments": walk.segments,
        "archived_records": archived,
        "archive_head": last_hash,
    });
    if let Some(url) = database {
        match continue_into(url, walk).await? {
            Ok((records, head)) => {
                if let Some(o) = report.as_object_mut() {
                    o.insert("records".into(), records.into());
                    o.insert("head".into(), head.into());
                }
            }
            Err((seq, why)) => return refuse(g, &why, Some(seq), "database"),
        }
    }
    print(&report, g.field())?;
    Ok(EXIT_OK)
}

fn refuse(g: &Global, why: &str, seq: Option<u64>, at: &str) -> anyhow::Result<u8> {
    eprintln!("error: {why}");
    print(
        &serde_json::json!({
            "valid": false,
            "error": { "seq": seq, "at": at, "reason": why },
        }),
        g.field(),
    )?;
    Ok(EXIT_INTEGRITY)
}

/// Goes on from the archive into the database's records: the database
/// must record the archive as reaching where it does, and its first record
/// must follow the archive's last. `Ok(Err((seq, why)))` for a break.
async fn continue_into(
    url: &str,
    walk: ArchiveWalk,
) -> anyhow::Result<Result<(u64, String), (u64, String)>> {
    let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        writ_store::SqlStore::connect_postgres(url).await?
    } else {
        if !Path::new(url).is_file() {
            anyhow::bail!("{url} is not a database file");
        }
        writ_store::SqlStore::open_sqlite(Path::new(url))?
    };
    let state = store.audit_archive_state().await?;
    let (seq, _) = walk.verifier.head();
    if state.through != seq || state.segment_hash != walk.last_segment {
        return Ok(Err((
            seq.saturating_add(1),
            format!(
                "the database says records up to {} were archived (last segment {}); the archive here reaches {seq} (last segment {})",
                state.through,
                short(&state.segment_hash),
                short(&walk.last_segment)
            ),
        )));
    }
    let mut v = walk.verifier;
    let mut after = seq;
    loop {
        let page = store.audit_after(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            if let Err(brk) = v.push(r) {
                return Ok(Err((brk.seq, brk.to_string())));
            }
        }
    }
    let (records, head) = v.head();
    Ok(Ok((records, head.to_owned())))
}

fn short(h: &str) -> &str {
    if h.is_empty() {
        "none"
    } else {
        h.get(..16).unwrap_or(h)
    }
}
