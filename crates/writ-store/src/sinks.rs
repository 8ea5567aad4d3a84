//! Audit sinks' delivery state, shared by every replica.

use async_trait::async_trait;
use writ_core::Timestamp;

use crate::Result;

/// Audit sinks: per sink, the last audit record it acknowledged and the
/// replica that delivers to it while its lease lasts.
#[async_trait]
pub trait SinkStore: Send + Sync {
    /// Makes `names` the configured sinks: a new one starts before the
    /// first record (it gets the whole chain); a sink no longer named is
    /// forgotten, so it holds back audit retention no longer.
    async fn configure_sinks(&self, names: &[String], now: Timestamp) -> Result<()>;
    /// Takes or keeps the lease on `sink` for `holder` until `until`: the
    /// sequence it acknowledged last, or `None` when another holder's
    /// lease lasts past `now` (or the sink is not configured).
    async fn claim_sink(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<u64>>;
    /// Records that `sink` acknowledged every record up to `seq`, if
    /// `holder` still holds its lease (false otherwise: another replica
    /// took over, and this one must stop). The cursor never moves back.
    async fn ack_sink(&self, sink: &str, holder: &str, seq: u64, now: Timestamp) -> Result<bool>;
    /// Records why delivery to `sink` failed last (cleared by the next
    /// acknowledgement).
    async fn sink_failed(
        &self,
        sink: &str,
        holder: &str,
        error: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Gives up `holder`'s lease on `sink` (at shutdown), so another
    /// replica takes over at once.
    async fn release_sink(&self, sink: &str, holder: &str) -> Result<()>;
    /// Every configured sink's state, by name.
    async fn sinks(&self) -> Result<Vec<SinkState>>;
    /// The lowest audit sequence some configured sink has not yet
    /// acknowledged; `None` without sinks. Audit retention must never
    /// delete a record at or after it.
    async fn audit_sink_floor(&self) -> Result<Option<u64>>;
}

/// One audit sink's delivery state ([`SinkStore::sinks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkState {
    pub name: String,
    /// The last audit sequence it acknowledged (0: none yet).
    pub acked: u64,
    /// The replica delivering to it while `lease_until` lasts.
    pub holder: Option<String>,
    pub lease_until: Timestamp,
    pub last_error: Option<String>,
    pub updated_at: Timestamp,
}
