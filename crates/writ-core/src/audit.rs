//! The audit chain: append-only events, each hashed over its predecessor.
//!
//! `hash(n) = SHA-256("writ-audit-v1" | seq | ts | hash(n-1) | event)`, with
//! the event kept as the exact JSON text that was hashed, so verification
//! never depends on re-serialising. Any edit, deletion or reordering of a
//! record breaks the chain at that record.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Bootstrap,
    AdminTokenCreate,
    /// An admin credential was revoked (its name in `reason`).
    AdminTokenRevoke,
    AgentRegister,
    AgentQuarantine,
    AgentRelease,
    JoinTokenCreate,
    ToolRegister,
    Attest,
    TaskStart,
    TaskHeartbeat,
    TaskEnd,
    TokenIssue,
    TokenExchange,
    /// A real (validly signed) token presented the wrong way: as Bearer
    /// when bound, or with a bad, replayed or foreign DPoP proof.
    TokenRefused,
    TokenRevoke,
    /// A decision asked for by an enforcement point (AuthZEN).
    Decision,
    /// A person approved or denied a task (or the request expired).
    Approval,
    /// A shadow policy set was installed, removed, or disagreed with the live one.
    PolicyShadow,
    KeyRotate,
    PolicyLoad,
    /// A tool's upstream secret was set (never its value).
    ToolSecretSet,
    /// A gateway credential was created.
    GatewayRegister,
    /// A request through a gateway to a tool, as the gateway decided it.
    ToolCall,
    /// A dynamic credential (a database role) was created for a task.
    CredentialIssue,
    /// A dynamic credential was revoked: its sessions ended, the role dropped.
    CredentialRevoke,
    /// A node was registered, attested, quarantined or released.
    Node,
    /// An X.509- or JWT-SVID was issued to a workload through a node.
    SvidIssue,
    /// An operator credential's secret was replaced (its name in `reason`).
    AdminTokenRotate,
    /// An agent's attributes or attestation were changed.
    AgentUpdate,
    /// An agent was deleted (its live tasks ended).
    AgentDelete,
    /// A tool's scopes, attributes or upstream were changed.
    ToolUpdate,
    /// A tool was deleted (the tasks that could reach it ended).
    ToolDelete,
    /// An operator's single sign-on was refused (a bad, foreign, stale or
    /// replayed identity token, no role rule, a browser sign-in that went
    /// wrong): who it claimed to be, and why; never the token.
    OperatorSignIn,
    /// A detection rule fired: its id, what it did and the evidence (the
    /// events that tipped it) in `detail`.
    RuleFired,
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Deny,
}

/// One event, before it is chained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    pub kind: AuditKind,
    pub outcome: Outcome,
    /// Who caused it: `operator:<name>`, `instance:<id>`, `agent:<name>` or `system`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub determining_policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, outcome: Outcome, actor: impl Into<String>) -> Self {
        Self {
            kind,
            outcome,
            actor: actor.into(),
            agent: None,
            instance: None,
            task: None,
            on_behalf_of: None,
            jti: None,
            policy_version: None,
            determining_policies: Vec::new(),
            reason: None,
            detail: serde_json::Value::Null,
        }
    }

    pub fn agent(mut self, a: impl ToString) -> Self {
        self.agent = Some(a.to_string());
        self
    }
    pub fn instance(mut self, i: impl ToString) -> Self {
        self.instance = Some(i.to_string());
        self
    }
    pub fn task(mut self, t: impl ToString) -> Self {
        self.task = Some(t.to_string());
        self
    }
    pub fn on_behalf_of(mut self, h: Option<impl ToString>) -> Self {
        self.on_behalf_of = h.map(|h| h.to_string());
        self
    }
    pub fn jti(mut self, j: impl ToString) -> Self {
        self.jti = Some(j.to_string());
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    pub fn policy(mut self, version: impl Into<String>, determining: Vec<String>) -> Self {
        self.policy_version = Some(version.into());
        self.determining_policies = determining;
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d;
        self
    }

    /// The canonical text that is hashed and stored.
    pub fn to_canonical_json(&self) -> String {
        // Field order is the struct's; optional fields are omitted, so the
        // text is a pure function of the value.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// One stored, chained record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub ts: Timestamp,
    /// The event as the exact JSON text that was hashed.
    pub event: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The event, parsed. A record whose event does not parse is reported
    /// by [`verify`] as broken.
    pub fn parsed(&self) -> Result<AuditEvent, serde_json::Error> {
        serde_json::from_str(&self.event)
    }
}

/// The chain hash of one record, lowercase hex.
pub fn chain_hash(seq: u64, ts: Timestamp, prev_hash: &str, event: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"writ-audit-v1\n");
    ctx.update(seq.to_string().as_bytes());
    ctx.update(b"\n");
    ctx.update(ts.millis().to_string().as_bytes());
    ctx.update(b"\n");
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"\n");
    ctx.update(event.as_bytes());
    hex(ctx.finish().as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Builds the next record after `(prev_seq, prev_hash)`.
pub fn next_record(
    prev_seq: u64,
    prev_hash: &str,
    ts: Timestamp,
    event: &AuditEvent,
) -> AuditRecord {
    let seq = prev_seq.saturating_add(1);
    let event = event.to_canonical_json();
    let hash = chain_hash(seq, ts, prev_hash, &event);
    AuditRecord {
        seq,
        ts,
        event,
        prev_hash: prev_hash.to_owned(),
        hash,
    }
}

/// Where and why a chain failed to verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: u64,
    pub reason: String,
}

/// Incremental verifier: feed records in order from seq 1. Given signed
/// checkpoints (already verified), it also checks each record a checkpoint
/// names against the hash signed for it: a chain rewritten and re-hashed
/// by someone without the signing keys no longer matches them.
#[derive(Debug, Clone)]
pub struct Verifier {
    seq: u64,
    hash: String,
    checkpoints: std::collections::BTreeMap<u64, String>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
            checkpoints: std::collections::BTreeMap::new(),
        }
    }
}

impl Verifier {
    /// A verifier that also holds the chain to `checkpoints`, `(seq, hash)`
    /// pairs whose signatures the caller verified.
    pub fn with_checkpoints(checkpoints: impl IntoIterator<Item = (u64, String)>) -> Self {
        Self {
            checkpoints: checkpoints.into_iter().collect(),
            ..Self::default()
        }
    }

    /// A verifier that takes the chain up after record `seq`, hashed
    /// `hash` (records before it were archived and are not at hand).
    pub fn resume(
        seq: u64,
        hash: String,
        checkpoints: impl IntoIterator<Item = (u64, String)>,
    ) -> Self {
        Self {
            seq,
            hash,
            checkpoints: checkpoints.into_iter().collect(),
        }
    }

    /// After the last record: a checkpoint past the end means records were
    /// removed from the end.
    pub fn finish(&self) -> Result<(), ChainBreak> {
        match self.checkpoints.keys().next_back() {
            Some(&last) if last > self.seq => Err(ChainBreak {
                seq: self.seq.saturating_add(1),
                reason: format!(
                    "the log ends at record {} but a signed checkpoint covers record {last}: records were removed",
                    self.seq
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The highest record a checkpoint covers (0 for none).
    pub fn sealed_through(&self) -> u64 {
        self.checkpoints.keys().next_back().copied().unwrap_or(0)
    }

    pub fn push(&mut self, r: &AuditRecord) -> Result<(), ChainBreak> {
        let expected_seq = self.seq.saturating_add(1);
        let brk = |reason: String| ChainBreak { seq: r.seq, reason };
        if r.seq != expected_seq {
            return Err(ChainBreak {
                seq: expected_seq,
                reason: format!(
                    "record {expected_seq} is missing (next present is {})",
                    r.seq
                ),
            });
        }
        if r.prev_hash != self.hash {
            return Err(brk("prev_hash does not match the previous record".into()));
        }
        if chain_hash(r.seq, r.ts, &r.prev_hash, &r.event) != r.hash {
            return Err(brk("record content does not match its hash".into()));
        }
        if r.parsed().is_err() {
            return Err(brk("record event is not a valid audit event".into()));
        }
        if self.checkpoints.get(&r.seq).is_some_and(|h| *h != r.hash) {
            return Err(brk(
                "the record differs from the hash its signed checkpoint holds".into(),
            ));
        }
        self.seq = r.seq;
        self.hash.clone_from(&r.hash);
        Ok(())
    }

    /// The last verified `(seq, hash)`.
    pub fn head(&self) -> (u64, &str) {
        (self.seq, &self.hash)
    }
}

/// Checks that kept checkpoints, `(seq, prev)` in `seq` order, form an
/// unbroken list: each names as `prev` one that is there (or 0). Returns
/// the `seq` of the first that names a missing one.
pub fn checkpoint_gap(checkpoints: &[(u64, u64)]) -> Option<u64> {
    let seqs: std::collections::BTreeSet<u64> = checkpoints.iter().map(|c| c.0).collect();
    checkpoints
        .iter()
        .find(|(seq, prev)| *prev != 0 && (!seqs.contains(prev) || prev >= seq))
        .map(|c| c.0)
}

/// Verifies a whole chain from its first record.
pub fn verify<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<(u64, String), ChainBreak> {
    let mut v = Verifier::default();
    for r in records {
        v.push(r)?;
    }
    let (seq, hash) = v.head();
    Ok((seq, hash.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        let mut prev = (0, GENESIS.to_owned());
        for i in 0..n {
            let e = AuditEvent::new(AuditKind::TaskStart, Outcome::Success, "system")
                .task(format!("t{i}"));
            let r = next_record(prev.0, &prev.1, Timestamp::from_secs(i as i64), &e);
            prev = (r.seq, r.hash.clone());
            out.push(r);
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify(&c).unwrap().0, 5);
    }

    #[test]
    fn edit_delete_reorder_are_detected() {
        let mut edited = chain(5);
        edited[2].event = edited[2].event.replace("t2", "tX");
        assert_eq!(verify(&edited).unwrap_err().seq, 3);

        let mut deleted = chain(5);
        deleted.remove(2);
        assert_eq!(verify(&deleted).unwrap_err().seq, 3);

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert!(verify(&reordered).is_err());

        // Renumbering after a swap does not help: the hashes bind the order.
        let mut renumbered = chain(5);
        renumbered.swap(1, 2);
        renumbered[1].seq = 2;
        renumbered[2].seq = 3;
        assert!(verify(&renumbered).is_err());
    }

    /// Rehash from the edit on: the chain alone verifies again, which is
    /// why a checkpoint signed earlier must hold it.
    fn rewritten(mut c: Vec<AuditRecord>, at: usize) -> Vec<AuditRecord> {
        c[at].event = c[at].event.replace(&format!("t{at}"), "tX");
        for i in at..c.len() {
            if i > 0 {
                c[i].prev_hash = c[i - 1].hash.clone();
            }
            c[i].hash = chain_hash(c[i].seq, c[i].ts, &c[i].prev_hash, &c[i].event);
        }
        c
    }

    #[test]
    fn a_rewritten_and_rehashed_chain_fails_its_checkpoints() {
        let c = chain(10);
        let sealed = [(4, c[3].hash.clone()), (8, c[7].hash.clone())];
        let forged = rewritten(c.clone(), 2);
        assert!(verify(&forged).is_ok(), "the chain alone is fooled");
        let mut v = Verifier::with_checkpoints(sealed.clone());
        let brk = forged.iter().try_for_each(|r| v.push(r)).unwrap_err();
        assert_eq!(brk.seq, 4);

        // Edited past the last checkpoint: the chain holds (the tail is
        // sealed by the next checkpoint, or one kept outside writ).
        let tail = rewritten(c.clone(), 9);
        let mut v = Verifier::with_checkpoints(sealed.clone());
        assert!(tail.iter().try_for_each(|r| v.push(r)).is_ok());
        assert_eq!(v.sealed_through(), 8);

        // Cut below a checkpoint: caught at the end.
        let mut v = Verifier::with_checkpoints(sealed);
        assert!(c[..6].iter().try_for_each(|r| v.push(r)).is_ok());
        assert_eq!(v.finish().unwrap_err().seq, 7);
    }

    #[test]
    fn a_checkpoint_removed_from_the_middle_is_missed() {
        assert_eq!(checkpoint_gap(&[(4, 0), (8, 4), (12, 8)]), None);
        assert_eq!(checkpoint_gap(&[(4, 0), (12, 8)]), Some(12));
        // Two replicas checkpointing after the same one.
        assert_eq!(checkpoint_gap(&[(4, 0), (8, 4), (9, 4)]), None);
        assert_eq!(checkpoint_gap(&[(4, 4)]), Some(4));
    }
}
