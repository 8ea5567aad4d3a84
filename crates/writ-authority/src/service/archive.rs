//! The audit archive: records past the retention leave the database for
//! segment files (each head signed with the key the checkpoints are
//! signed with), and are read back from there.
//!
//! Order of a step: the segment is written and synced, then one store
//! transaction records how far the archive reaches and removes the
//! records up to there (the database refuses to remove any other). A
//! crash between the two leaves a segment the database does not know:
//! the next step removes it and writes it again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use writ_core::Clock;
use writ_core::archive::{
    ArchiveError, ArchiveWalk, read_segment, render_segment, segment_hash, segment_name,
    segment_paths, segment_range,
};
use writ_core::audit::{AuditRecord, Verifier};
use writ_core::token::SegmentHead;
use writ_store::Store;

use crate::error::Error;
use crate::keys::KeyService;

/// The most records one segment holds.
pub const SEGMENT_MAX: u32 = 10_000;
/// The most segments one step writes (the rest wait for the next).
const SEGMENTS_PER_STEP: usize = 4;

pub struct Archive {
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    clock: Arc<dyn Clock>,
    issuer: String,
    dir: Option<PathBuf>,
    retention: Option<i64>,
    /// Steps are this many seconds apart at least (the checkpoint
    /// interval), so segments are few and not tiny.
    every: i64,
    /// When the last step ran (unix seconds).
    last_step: std::sync::atomic::AtomicI64,
}

impl Archive {
    pub(super) fn new(h: &super::Handles) -> Self {
        Self {
            store: Arc::clone(&h.store),
            keys: Arc::clone(&h.keys),
            clock: Arc::clone(&h.clock),
            issuer: h.config.issuer.clone(),
            dir: h.config.audit_archive_dir.clone(),
            retention: h.config.audit_retention,
            every: h.config.audit_checkpoint_secs.max(1),
            last_step: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Moves the records older than the retention out of the database,
    /// up to (not including) the last signed checkpoint's record and the
    /// first record an audit sink has not acknowledged. Returns how many
    /// records were archived.
    pub async fn step(&self) -> Result<u64, Error> {
        let (Some(retention), Some(dir)) = (self.retention, &self.dir) else {
            return Ok(0);
        };
        let now = self.clock.now();
        let last = self.last_step.load(std::sync::atomic::Ordering::Relaxed);
        if now.secs() < last.saturating_add(self.every) {
            return Ok(0);
        }
        self.last_step
            .store(now.secs(), std::sync::atomic::Ordering::Relaxed);
        let cutoff = now.add_secs(-retention);
        let mut archived = 0;
        for _ in 0..SEGMENTS_PER_STEP {
            let state = self.store.audit_archive_state().await?;
            // The record a checkpoint names stays, so sealing goes on from
            // the database alone; so does every record a sink still needs.
            let Some((mut bound, _)) = self.store.last_audit_checkpoint().await? else {
                return Ok(archived);
            };
            if let Some(floor) = self.store.audit_sink_floor().await? {
                bound = bound.min(floor);
            }
            let records: Vec<AuditRecord> = self
                .store
                .audit_after(state.through, SEGMENT_MAX)
                .await?
                .into_iter()
                .take_while(|r| r.seq < bound && r.ts < cutoff)
                .collect();
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                return Ok(archived);
            };
            if first.seq != state.through.saturating_add(1) {
                return Err(Error::Internal(format!(
                    "audit archive: records up to {} are archived, but the database's next is {}",
                    state.through, first.seq
                )));
            }
            let head = SegmentHead {
                iss: self.issuer.clone(),
                first: first.seq,
                last: last.seq,
                first_prev_hash: first.prev_hash.clone(),
                last_hash: last.hash.clone(),
                prev_segment: state.segment_hash.clone(),
                iat: self.clock.now().secs(),
            };
            let token = self
                .keys
                .ring()
                .sign_segment(&head)
                .map_err(|e| Error::Internal(e.to_string()))?;
            forget_orphans(dir, state.through);
            write_segment(dir, &segment_name(first.seq, last.seq), &token, &records)
                .map_err(|e| Error::Internal(format!("audit archive in {}: {e}", dir.display())))?;
            let n = self
                .store
                .archive_audit(last.seq, &last.hash, &segment_hash(&token))
                .await?;
            archived += n;
            crate::metrics::archived(n);
            tracing::info!(first = first.seq, last = last.seq, "audit records archived");
            if records.len() < SEGMENT_MAX as usize {
                break;
            }
        }
        Ok(archived)
    }

    /// Records after `after`, from the archive while they are below what
    /// the database holds, then from the database.
    pub async fn records_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, Error> {
        let through = match &self.dir {
            Some(_) => self.store.audit_archive_state().await?.through,
            None => 0,
        };
        let mut out = Vec::new();
        if let Some(dir) = self.dir.as_deref().filter(|_| after < through) {
            let dir = dir.to_owned();
            let limit = limit as usize;
            out = tokio::task::spawn_blocking(move || archived_after(&dir, after, through, limit))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        let left = (limit as usize).saturating_sub(out.len());
        if left > 0 {
            let from = out.last().map_or(after, |r| r.seq);
            let more = self
                .store
                .audit_after(from, u32::try_from(left).unwrap_or(u32::MAX))
                .await?;
            out.extend(more);
        }
        Ok(out)
    }

    /// Walks the archive into `v` (the records up to the database's
    /// first), verifying each segment's head with every key that ever
    /// signed. `Ok` with the walk when the archive reaches exactly as far
    /// as the database says it was archived.
    pub async fn walk(&self, v: Verifier) -> Result<ArchiveWalk, ArchiveError> {
        let state = self
            .store
            .audit_archive_state()
            .await
            .map_err(|e| ArchiveError {
                segment: String::new(),
                seq: None,
                reason: e.to_string(),
            })?;
        let jwks = self.keys.ring().all_jwks();
        let mut walk = ArchiveWalk::new(v, jwks, Some(self.issuer.clone()));
        if state.through == 0 {
            return Ok(walk);
        }
        let dir = self.dir.clone().unwrap_or_default();
        let through = state.through;
        let walk = tokio::task::spawn_blocking(move || -> Result<ArchiveWalk, ArchiveError> {
            for path in archived_paths(&dir, through)? {
                walk.push(&read_segment(&path)?)?;
            }
            Ok(walk)
        })
        .await
        .map_err(|e| ArchiveError {
            segment: String::new(),
            seq: None,
            reason: e.to_string(),
        })??;
        let (seq, _) = walk.verifier.head();
        if seq != state.through || walk.last_segment != state.segment_hash {
            return Err(ArchiveError {
                segment: self
                    .dir
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                seq: Some(seq.saturating_add(1)),
                reason: format!(
                    "records up to {} were archived, but the archive here reaches {seq}{}",
                    state.through,
                    if seq == state.through {
                        " through another last segment than the one recorded"
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(walk)
    }
}

/// The segment files holding records up to `through`, in order.
fn archived_paths(dir: &Path, through: u64) -> Result<Vec<PathBuf>, ArchiveError> {
    let paths = segment_paths(dir).map_err(|e| ArchiveError {
        segment: dir.display().to_string(),
        seq: None,
        reason: format!("cannot list: {e}"),
    })?;
    Ok(paths
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(segment_range)
                .is_some_and(|(first, _)| first <= through)
        })
        .collect())
}

/// Up to `limit` archived records after `after` (all at most `through`).
fn archived_after(
    dir: &Path,
    after: u64,
    through: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>, ArchiveError> {
    let mut out = Vec::new();
    for path in archived_paths(dir, through)? {
        let last = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment_range)
            .map_or(0, |(_, last)| last);
        if last <= after {
            continue;
        }
        let seg = read_segment(&path)?;
        for r in seg.records {
            if r.seq > after && r.seq <= through && out.len() < limit {
                out.push(r);
            }
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Removes segments past what the database records as archived: written
/// by a step whose transaction did not commit.
fn forget_orphans(dir: &Path, through: u64) {
    let Ok(paths) = segment_paths(dir) else {
        return;
    };
    for p in paths {
        let first = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment_range)
            .map_or(0, |(first, _)| first);
        if first > through {
            tracing::warn!(path = %p.display(), "removing an audit segment the database does not know (an archive step that did not finish)");
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::error!(path = %p.display(), error = %e, "cannot remove an unfinished audit segment");
            }
        }
    }
}

/// Writes a segment through a temporary file, synced, then renamed (and
/// the directory synced), so a segment is whole or absent.
fn write_segment(
    dir: &Path,
    name: &str,
    head: &str,
    records: &[AuditRecord],
) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let text = render_segment(head, records).map_err(std::io::Error::other)?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}
