//! Storage for writ: the [`Store`] trait every backend implements, its
//! records and errors, and the embedded SQLite backend.
//!
//! Every mutating call takes the audit events that record it and appends
//! them to the hash chain in the same transaction, so a change is never
//! durable without its audit record, nor the other way round. A call
//! returns only after its transaction is committed (SQLite: WAL with
//! `synchronous=FULL`; PostgreSQL: `synchronous_commit=on`).

mod aggregates;
mod engine;
mod error;
mod model;
mod postgres;
mod retention;
mod sinks;
pub mod sql;
mod sqlite;
mod store;

pub use aggregates::{
    AgentStore, ApprovalStore, AuditActivity, AuditStore, BehaviourStore, ClientStore,
    GatewayStore, KeyStore, LeaseStore, NodeStore, OAuthClient, PolicyStore, RuleStore,
    TappedRecord, TaskSearch, TaskStore,
};
pub use engine::SqlStore;
pub use error::{JoinTokenError, StoreError};
pub use model::{
    DbLease, Ended, Grant, GrantKind, GrantState, Instance, JoinTokenState, QuarantineOutcome,
    Revoked, SealedTable, SealedValue, StoredKey, StoredSecret, StoredSpiffeKey, TaskEnd,
};
pub use retention::{ArchiveState, RetentionStore};
pub use sinks::{SinkState, SinkStore};

/// A change another process committed to a shared store, which this one
/// must pick up: only stores shared by several brokers announce them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// New revocations (feed followers should look again).
    Revocations,
    /// A signing key was added or retired.
    Keys,
    /// A policy set became live.
    Policy,
    /// The shadow policy set was installed or removed.
    Shadow,
    /// Announcements may have been missed (the listener reconnected):
    /// reload everything.
    Resync,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Refusals are counted in buckets this many seconds wide (unix time
/// rounded down), so what one agent keeps is bounded whatever its rate.
pub const DENIAL_BUCKET_SECS: i64 = 10;
/// An agent's buckets this much older than a refusal being recorded for
/// it are deleted then: far more than any window policy looks at.
pub const DENIAL_RETENTION_SECS: i64 = 3600;

/// Everything the broker keeps, one trait per aggregate. Object-safe, so a
/// backend is picked at run time. Bring the traits into scope with
/// `use writ_store::prelude::*`.
pub trait Store:
    KeyStore
    + AgentStore
    + GatewayStore
    + ClientStore
    + NodeStore
    + LeaseStore
    + TaskStore
    + ApprovalStore
    + BehaviourStore
    + RuleStore
    + PolicyStore
    + AuditStore
    + SinkStore
    + RetentionStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: KeyStore
        + AgentStore
        + GatewayStore
        + ClientStore
        + NodeStore
        + LeaseStore
        + TaskStore
        + ApprovalStore
        + BehaviourStore
        + RuleStore
        + PolicyStore
        + AuditStore
        + SinkStore
        + RetentionStore
        + Send
        + Sync
        + 'static
{
}

/// The store's traits, to call any of their methods.
/// What is live at one moment ([`TaskStore::live_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveCounts {
    pub tasks: u64,
    pub grants: u64,
    pub approvals_pending: u64,
}

pub mod prelude {
    pub use crate::{
        AgentStore, ApprovalStore, AuditStore, BehaviourStore, ClientStore, GatewayStore, KeyStore,
        LeaseStore, NodeStore, PolicyStore, RetentionStore, SinkStore, Store, TaskStore,
    };
}
