//! The audit archive: records moved out of the database into segment
//! files, each opened by a signed head, and how one is read and verified
//! without the database.
//!
//! A segment is a JSON-lines file named `segment-<first>-<last>.jsonl`
//! (zero-padded, so names sort in order): its first line is
//! `{"head": "<JWS>"}` (a [`SegmentHead`] signed with the broker's key),
//! every other line one [`AuditRecord`] exactly as it was stored, with
//! its hashes. Each head names the hash of the previous segment's head
//! ([`segment_hash`]), so a segment removed from the middle, or a
//! segment replaced, is found.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditRecord, GENESIS, Verifier, hex};
use crate::token::{SegmentHead, verify_segment_head};

/// Why an archive does not verify: the segment (its file name) and, when
/// one is at fault, the first bad record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit archive segment {segment}{}: {reason}", seq.map(|s| format!(", record {s}")).unwrap_or_default())]
pub struct ArchiveError {
    pub segment: String,
    pub seq: Option<u64>,
    pub reason: String,
}

/// The first line of a segment file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadLine {
    head: String,
}

/// One segment as read from its file.
#[derive(Clone, Debug)]
pub struct Segment {
    /// The file's name (what errors name).
    pub name: String,
    /// The head as signed.
    pub head_token: String,
    pub records: Vec<AuditRecord>,
}

/// The file name of the segment of records `first..=last`.
pub fn segment_name(first: u64, last: u64) -> String {
    format!("segment-{first:020}-{last:020}.jsonl")
}

/// The `(first, last)` a segment file's name says it holds.
pub fn segment_range(name: &str) -> Option<(u64, u64)> {
    let mid = name.strip_prefix("segment-")?.strip_suffix(".jsonl")?;
    let (a, b) = mid.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The hash a segment's head is named by in the next one (SHA-256 of the
/// head as signed, lowercase hex).
pub fn segment_hash(head_token: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, head_token.as_bytes()).as_ref())
}

/// The segment files in `dir`, in order (none when `dir` does not exist).
pub fn segment_paths(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for e in entries {
        let path = e?.path();
        let range = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment_range);
        if let Some((first, _)) = range {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

/// The text of a segment file.
pub fn render_segment(
    head_token: &str,
    records: &[AuditRecord],
) -> Result<String, serde_json::Error> {
    let mut out = serde_json::to_string(&HeadLine {
        head: head_token.to_owned(),
    })?;
    out.push('\n');
    for r in records {
        out.push_str(&serde_json::to_string(r)?);
        out.push('\n');
    }
    Ok(out)
}

/// Reads one segment file (its head unverified: see [`ArchiveWalk`]).
pub fn read_segment(path: &Path) -> Result<Segment, ArchiveError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad = |seq: Option<u64>, reason: String| ArchiveError {
        segment: name.clone(),
        seq,
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(None, format!("cannot read: {e}")))?;
    let mut lines = text.lines();
    let head: HeadLine = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| bad(None, "its first line is not a signed head".into()))?;
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        let r: AuditRecord = serde_json::from_str(line).map_err(|e| {
            let after = records.last().map_or(String::new(), |r: &AuditRecord| {
                format!(" (after record {})", r.seq)
            });
            bad(
                None,
                format!("line {} is not an audit record{after}: {e}", i + 2),
            )
        })?;
        records.push(r);
    }
    Ok(Segment {
        name,
        head_token: head.head,
        records,
    })
}

/// Verifies segments in order: each head's signature, its link to the
/// previous head, and every record's place in the one chain (through a
/// [`Verifier`], which the caller may go on feeding with the records
/// still in the database).
#[derive(Debug)]
pub struct ArchiveWalk {
    pub verifier: Verifier,
    /// The hash of the last segment's head (empty before the first).
    pub last_segment: String,
    pub segments: u64,
    jwks: JwkSet,
    issuer: Option<String>,
}

impl ArchiveWalk {
    /// `issuer`: the issuer the heads must name (`None`: the first head's,
    /// then the same for every other).
    pub fn new(verifier: Verifier, jwks: JwkSet, issuer: Option<String>) -> Self {
        Self {
            verifier,
            last_segment: String::new(),
            segments: 0,
            jwks,
            issuer,
        }
    }

    pub fn push(&mut self, seg: &Segment) -> Result<(), ArchiveError> {
        let bad = |seq: Option<u64>, reason: String| ArchiveError {
            segment: seg.name.clone(),
            seq,
            reason,
        };
        let head = verify_segment_head(&seg.head_token, &self.jwks, self.issuer.as_deref())
            .map_err(|e| bad(None, format!("its signed head does not verify: {e}")))?;
        self.issuer.get_or_insert_with(|| head.iss.clone());
        check_head(&head, seg, &self.last_segment, self.verifier.head())
            .map_err(|why| bad(None, why))?;
        for r in &seg.records {
            self.verifier
                .push(r)
                .map_err(|brk| bad(Some(brk.seq), brk.reason))?;
        }
        let (seq, hash) = self.verifier.head();
        if seq != head.last || hash != head.last_hash {
            return Err(bad(
                Some(seq),
                format!(
                    "its records end at {seq}, not at record {} its head was signed for",
                    head.last
                ),
            ));
        }
        self.last_segment = segment_hash(&seg.head_token);
        self.segments += 1;
        Ok(())
    }
}

/// A head's claims against its file and the segment before it.
fn check_head(
    head: &SegmentHead,
    seg: &Segment,
    prev_segment: &str,
    (seq, hash): (u64, &str),
) -> Result<(), String> {
    if head.prev_segment != prev_segment {
        return Err(if prev_segment.is_empty() {
            "it is not the first segment, but no segment before it is here".into()
        } else {
            "its head does not name the segment before it: a segment was removed or replaced".into()
        });
    }
    if head.first != seq.saturating_add(1) {
        return Err(format!(
            "it starts at record {}, the archive so far ends at {seq}",
            head.first
        ));
    }
    let expected_prev = if seq == 0 { GENESIS } else { hash };
    if head.first_prev_hash != expected_prev {
        return Err("its first record does not follow the previous segment's last".into());
    }
    if segment_range(&seg.name) != Some((head.first, head.last)) {
        return Err(format!(
            "its name does not say records {}-{} its head was signed for",
            head.first, head.last
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditKind, Outcome, next_record};
    use crate::time::Timestamp;
    use crate::token::{KeyRing, SigningKey};

    const ISS: &str = "http://writ.test";

    /// Three segments of `n` records each over one chain, signed by `ring`.
    fn archive(ring: &KeyRing, n: u64) -> Vec<Segment> {
        let mut prev = (0, GENESIS.to_owned());
        let mut prev_segment = String::new();
        let mut out = Vec::new();
        for s in 0..3 {
            let mut records = Vec::new();
            for i in 0..n {
                let e = AuditEvent::new(AuditKind::PolicyLoad, Outcome::Success, "system")
                    .reason(format!("load {s}-{i}"));
                let r = next_record(prev.0, &prev.1, Timestamp::from_secs(1_800_000_000), &e);
                prev = (r.seq, r.hash.clone());
                records.push(r);
            }
            let (first, last) = (&records[0], &records[records.len() - 1]);
            let head = ring
                .sign_segment(&SegmentHead {
                    iss: ISS.into(),
                    first: first.seq,
                    last: last.seq,
                    first_prev_hash: first.prev_hash.clone(),
                    last_hash: last.hash.clone(),
                    prev_segment: prev_segment.clone(),
                    iat: 0,
                })
                .unwrap();
            prev_segment = segment_hash(&head);
            out.push(Segment {
                name: segment_name(first.seq, last.seq),
                head_token: head,
                records,
            });
        }
        out
    }

    fn walk(ring: &KeyRing, segs: &[Segment]) -> Result<ArchiveWalk, ArchiveError> {
        let mut w = ArchiveWalk::new(Verifier::default(), ring.all_jwks(), Some(ISS.into()));
        for s in segs {
            w.push(s)?;
        }
        Ok(w)
    }

    #[test]
    fn an_archive_verifies_and_names_what_breaks_it() {
        let ring = KeyRing::new(vec![SigningKey::generate(Timestamp::from_secs(0)).unwrap()]);
        let segs = archive(&ring, 4);
        let w = walk(&ring, &segs).unwrap();
        assert_eq!((w.verifier.head().0, w.segments), (12, 3));

        let mut edited = segs.clone();
        edited[1].records[2].event = edited[1].records[2].event.replace("load", "lode");
        let e = walk(&ring, &edited).unwrap_err();
        assert_eq!(
            (e.segment.as_str(), e.seq),
            (segs[1].name.as_str(), Some(7))
        );

        let missing = [segs[0].clone(), segs[2].clone()];
        let e = walk(&ring, &missing).unwrap_err();
        assert_eq!(e.segment, segs[2].name);

        let other = KeyRing::new(vec![SigningKey::generate(Timestamp::from_secs(0)).unwrap()]);
        let mut forged = segs.clone();
        forged[0].head_token = archive(&other, 4)[0].head_token.clone();
        let e = walk(&ring, &forged).unwrap_err();
        assert_eq!(e.segment, segs[0].name);
        assert!(e.reason.contains("does not verify"), "{e}");

        // A segment file round-trips through its text.
        let dir = std::env::temp_dir().join(format!("writ-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(&segs[0].name);
        std::fs::write(
            &path,
            render_segment(&segs[0].head_token, &segs[0].records).unwrap(),
        )
        .unwrap();
        let back = read_segment(&path).unwrap();
        assert_eq!(back.records, segs[0].records);
        assert_eq!(segment_paths(&dir).unwrap(), vec![path]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
