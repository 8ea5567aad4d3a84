//! Reading, verifying and checkpointing the audit chain: a service of its
//! own, holding only the store, the signing keys, the clock and the
//! checkpoint settings.

use std::path::PathBuf;
use std::sync::Arc;

use writ_core::Clock;
use writ_core::api::{AuditPage, AuditVerified};
use writ_core::audit::{ChainBreak, Verifier, checkpoint_gap};
use writ_core::token::{Checkpoint, verify_checkpoint};
use writ_store::Store;

use crate::error::Error;
use crate::keys::KeyService;

/// Largest page of audit records per request.
pub const MAX_PAGE: u32 = 1000;

/// The audit chain as the broker reads, verifies and seals it.
pub struct Audit {
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    clock: Arc<dyn Clock>,
    issuer: String,
    checkpoints: Checkpoints,
    archive: super::archive::Archive,
}

/// When and where the chain is sealed.
struct Checkpoints {
    /// A checkpoint after this many records...
    records: u64,
    /// ...or this many seconds, whichever comes first.
    secs: i64,
    /// A copy of the latest checkpoint kept outside the store.
    file: Option<PathBuf>,
}

impl Audit {
    pub(super) fn new(h: &super::Handles) -> Self {
        let c = &h.config;
        Self {
            store: Arc::clone(&h.store),
            keys: Arc::clone(&h.keys),
            clock: Arc::clone(&h.clock),
            issuer: c.issuer.clone(),
            checkpoints: Checkpoints {
                records: c.audit_checkpoint_records,
                secs: c.audit_checkpoint_secs,
                file: c.audit_checkpoint_file.clone(),
            },
            archive: super::archive::Archive::new(h),
        }
    }

    fn now(&self) -> writ_core::Timestamp {
        self.clock.now()
    }

    /// Records after `after`; with `last`, the last `last` records instead.
    pub async fn page(
        &self,
        after: u64,
        limit: u32,
        last: Option<u32>,
    ) -> Result<AuditPage, Error> {
        let mut limit = limit.clamp(1, MAX_PAGE);
        let mut after = after;
        if let Some(n) = last {
            limit = n.clamp(1, MAX_PAGE);
            after = self
                .store
                .audit_head()
                .await?
                .saturating_sub(u64::from(limit));
        }
        let records = self.archive.records_after(after, limit).await?;
        let next = records.last().map_or(after, |r| r.seq);
        Ok(AuditPage { records, next })
    }

    /// Walks the whole chain from its first record, holding it to every
    /// checkpoint the broker signed and kept on the way.
    pub async fn verify(&self) -> Result<AuditVerified, Error> {
        let kept = self.store.audit_checkpoints().await?;
        let count = kept.len() as u64;
        let broken = |seq: u64, reason: String| AuditVerified {
            valid: false,
            records: seq.saturating_sub(1),
            head: String::new(),
            error: Some(ChainBreak { seq, reason }),
            checkpoint: None,
            checkpoints: count,
            sealed_through: 0,
        };
        let mut sealed = match self.checked_checkpoints(&kept, true) {
            Ok(s) => s,
            Err(brk) => return Ok(broken(brk.seq, brk.reason)),
        };
        // The copy outside the database: whatever was removed from the
        // database, the log must still reach it.
        match self.mirrored_checkpoint() {
            Ok(Some(m)) => sealed.push(m),
            Ok(None) => {}
            Err(brk) => return Ok(broken(brk.seq, brk.reason)),
        }
        // The archived records first (each segment's head verified), so the
        // chain is walked from its first record wherever it is kept.
        let mut v = match self.archive.walk(Verifier::with_checkpoints(sealed)).await {
            Ok(walk) => walk.verifier,
            Err(e) => return Ok(broken(e.seq.unwrap_or(1), e.to_string())),
        };
        let failed = |v: &Verifier, brk: ChainBreak| {
            let (seq, head) = v.head();
            AuditVerified {
                valid: false,
                records: seq,
                head: head.to_owned(),
                error: Some(brk),
                checkpoint: None,
                checkpoints: count,
                sealed_through: v.sealed_through(),
            }
        };
        let mut after = v.head().0;
        loop {
            let page = self.store.audit_after(after, MAX_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                if let Err(brk) = v.push(r) {
                    return Ok(failed(&v, brk));
                }
            }
        }
        if let Err(brk) = v.finish() {
            return Ok(failed(&v, brk));
        }
        let (seq, head) = v.head();
        let checkpoint = self
            .keys
            .ring()
            .sign_checkpoint(&Checkpoint {
                iss: self.issuer.clone(),
                seq,
                hash: head.to_owned(),
                iat: self.now().secs(),
                prev: 0,
            })
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(AuditVerified {
            valid: true,
            records: seq,
            head: head.to_owned(),
            error: None,
            checkpoint: Some(checkpoint),
            checkpoints: count,
            sealed_through: v.sealed_through(),
        })
    }

    /// The kept checkpoints' `(seq, hash)`, each signature verified with
    /// the issuer's keys (retired ones too) and each row's `seq` the one
    /// signed; with `whole`, the list (every kept checkpoint) unbroken.
    fn checked_checkpoints(
        &self,
        kept: &[(u64, String)],
        whole: bool,
    ) -> Result<Vec<(u64, String)>, ChainBreak> {
        let keys = self.keys.ring().all_jwks();
        let mut out = Vec::with_capacity(kept.len());
        let mut links = Vec::with_capacity(kept.len());
        for (seq, token) in kept {
            let bad = |why: String| ChainBreak {
                seq: *seq,
                reason: format!("the checkpoint kept for record {seq} {why}"),
            };
            let (c, signed) = verify_checkpoint(token, &keys, &self.issuer)
                .map_err(|e| bad(format!("does not verify: {e}")))?;
            if !signed {
                return Err(bad("is signed by a key this issuer never had".into()));
            }
            if c.seq != *seq {
                return Err(bad(format!("was signed for record {}", c.seq)));
            }
            links.push((c.seq, c.prev));
            out.push((c.seq, c.hash));
        }
        if let Some(seq) = checkpoint_gap(&links).filter(|_| whole) {
            return Err(ChainBreak {
                seq,
                reason: format!(
                    "the checkpoint before the one for record {seq} is missing: checkpoints were removed"
                ),
            });
        }
        Ok(out)
    }

    /// The head record, if the chain from the last kept checkpoint (and
    /// the copy outside the database) to `head` is intact; `None`, logged,
    /// when it is not.
    async fn unbroken_since(
        &self,
        last: Option<&(u64, String)>,
        head: u64,
    ) -> Result<Option<writ_core::audit::AuditRecord>, Error> {
        // A tamper alarm, not a failure of this pass: said loudly, and the
        // chain is left unsigned until someone looks.
        let refuse = |why: String| {
            tracing::error!(
                reason = %why,
                "the audit chain no longer matches its signed checkpoints; not checkpointing it (run `writ audit verify`)"
            );
            Ok(None)
        };
        let mut anchors = Vec::new();
        if let Some((seq, token)) = last {
            // The last one alone: the one before it is not in this list.
            match self.checked_checkpoints(&[(*seq, token.clone())], false) {
                Ok(mut c) => anchors.append(&mut c),
                Err(brk) => return refuse(brk.reason),
            }
        }
        match self.mirrored_checkpoint() {
            Ok(Some(m)) => anchors.push(m),
            Ok(None) => {}
            Err(brk) => return refuse(brk.reason),
        }
        for (seq, hash) in &anchors {
            let found = self.store.audit_after(seq.saturating_sub(1), 1).await?;
            match found.first() {
                Some(r) if r.seq == *seq && r.hash == *hash => {}
                _ => return refuse(format!("record {seq} differs from its signed checkpoint")),
            }
        }
        // From the last kept checkpoint on, every record links and hashes.
        let mut after = last.map_or(0, |(seq, _)| *seq);
        let mut prev = match anchors.first() {
            Some((_, hash)) if after > 0 => hash.clone(),
            _ => {
                after = head.saturating_sub(1);
                String::new()
            }
        };
        let mut newest = None;
        while after < head {
            let page = self.store.audit_after(after, MAX_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page {
                let sound = r.hash
                    == writ_core::audit::chain_hash(r.seq, r.ts, &r.prev_hash, &r.event)
                    && (prev.is_empty() || r.prev_hash == prev);
                if !sound {
                    return refuse(format!("record {} does not chain", r.seq));
                }
                prev.clone_from(&r.hash);
                newest = Some(r);
            }
        }
        Ok(newest)
    }

    /// The checkpoint written outside the database, verified: `None` when
    /// there is none (a new data directory, or no file configured).
    fn mirrored_checkpoint(&self) -> Result<Option<(u64, String)>, ChainBreak> {
        let Some(path) = &self.checkpoints.file else {
            return Ok(None);
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        let keys = self.keys.ring().all_jwks();
        match verify_checkpoint(text.trim(), &keys, &self.issuer) {
            Ok((c, true)) => Ok(Some((c.seq, c.hash))),
            Ok((c, false)) => Err(ChainBreak {
                seq: c.seq,
                reason: format!(
                    "the checkpoint in {} is signed by a key this issuer never had",
                    path.display()
                ),
            }),
            Err(e) => Err(ChainBreak {
                seq: 0,
                reason: format!("the checkpoint in {} does not verify: {e}", path.display()),
            }),
        }
    }

    /// Records after `after`, read from the archive for those no longer
    /// in the database.
    pub async fn records_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<writ_core::audit::AuditRecord>, Error> {
        self.archive.records_after(after, limit).await
    }

    /// Moves records past the audit retention into the archive (see
    /// [`super::archive::Archive::step`]); returns how many.
    pub async fn archive_step(&self) -> Result<u64, Error> {
        self.archive.step().await
    }

    /// Every key that ever signed (public halves): what verifies the kept
    /// checkpoints offline.
    pub fn keys(&self) -> jsonwebtoken::jwk::JwkSet {
        self.keys.ring().all_jwks()
    }

    /// The kept checkpoints, as signed.
    pub async fn checkpoint_tokens(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .store
            .audit_checkpoints()
            .await?
            .into_iter()
            .map(|(_, t)| t)
            .collect())
    }

    /// Signs and keeps a checkpoint of the chain's head when enough records
    /// (`audit_checkpoint_records`) or time (`audit_checkpoint_secs`) have
    /// passed since the last one: someone who can write the database but
    /// does not hold the signing keys can then no longer rewrite and
    /// re-hash the chain below it unseen. (Vault's audit devices rely on an
    /// outside log; a signed, kept head is this chain's equivalent.)
    pub async fn seal(&self) -> Result<Option<u64>, Error> {
        let head = self.store.audit_head().await?;
        let last = self.store.last_audit_checkpoint().await?;
        let (last_seq, last_iat) = match &last {
            Some((seq, token)) => {
                let iat = writ_core::token::insecure_peek(token)
                    .ok()
                    .and_then(|(_, c)| c.get("iat").and_then(serde_json::Value::as_i64))
                    .unwrap_or(0);
                (*seq, iat)
            }
            None => (0, 0),
        };
        let now = self.now().secs();
        let due = head > last_seq
            && (head - last_seq >= self.checkpoints.records
                || now.saturating_sub(last_iat) >= self.checkpoints.secs);
        if !due {
            return Ok(None);
        }
        // Never sign over a chain that no longer reaches what was signed
        // before: that would bless a rewrite.
        let Some(r) = self.unbroken_since(last.as_ref(), head).await? else {
            return Ok(None);
        };
        let token = self
            .keys
            .ring()
            .sign_checkpoint(&Checkpoint {
                iss: self.issuer.clone(),
                seq: r.seq,
                hash: r.hash,
                iat: now,
                prev: last_seq,
            })
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.store.add_audit_checkpoint(r.seq, &token).await?;
        if let Some(path) = &self.checkpoints.file
            && let Err(e) = write_atomically(path, &token)
        {
            tracing::error!(error = %e, path = %path.display(), "cannot write the audit checkpoint file");
        }
        Ok(Some(r.seq))
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// reader sees the old checkpoint or the new one, never half of one.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("jwt.tmp");
    std::fs::write(&tmp, format!("{text}\n"))?;
    std::fs::rename(&tmp, path)
}
