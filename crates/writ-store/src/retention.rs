//! Retention: what the store forgets once it no longer matters, so that
//! it grows with live work, not with history.

use async_trait::async_trait;
use writ_core::Timestamp;

use crate::Result;

/// How far the audit log has been archived out of the database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveState {
    /// The last archived (and removed) record; 0 for none.
    pub through: u64,
    /// The hash of the last archive segment's signed head (empty for none):
    /// what the next segment's head names as its predecessor.
    pub segment_hash: String,
}

/// Pruning and the audit archive's bookkeeping. Each call is one bounded
/// transaction, so a sweep never holds the writer long.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Forgets up to `limit` grants (issued tokens) that expired before
    /// `before`. A `jti` the store no longer knows is never live: the
    /// token reads as inactive, as if never issued.
    async fn prune_grants(&self, before: Timestamp, limit: u32) -> Result<u64>;
    /// Forgets up to `limit` revocations of tokens that expired before
    /// `before`: every verifier refuses those tokens on their expiry
    /// anyway, so a feed follower that skips them misses nothing.
    async fn prune_revocations(&self, before: Timestamp, limit: u32) -> Result<u64>;
    /// Forgets up to `limit` tasks that ended before `before`, with their
    /// approvals, call approvals, grants and dropped database roles. A
    /// task stays while a child task of it stays, or while a database role
    /// made for it is not dropped yet. Tasks not ended (active, waiting
    /// for approval) are never touched.
    async fn prune_tasks(&self, before: Timestamp, limit: u32) -> Result<u64>;
    /// Forgets up to `limit` agent instances that expired before `before`
    /// and that no task names any more (their tasks were pruned first).
    /// An instance's own token expires with it, so nothing that still
    /// verifies reads a forgotten instance.
    async fn prune_instances(&self, before: Timestamp, limit: u32) -> Result<u64>;
    /// How far the audit log was archived.
    async fn audit_archive_state(&self) -> Result<ArchiveState>;
    /// Records that the audit records up to `through` (the last of them
    /// hashed `hash`) are archived in a segment whose head hashes to
    /// `segment_hash`, and removes them from the database, in one
    /// transaction; returns how many were removed. Refused (nothing
    /// changes) when `through` is not past what was archived before, when
    /// the record at `through` is not hashed `hash`, or when it is the
    /// last record (the chain's head stays in the database).
    async fn archive_audit(&self, through: u64, hash: &str, segment_hash: &str) -> Result<u64>;
}
