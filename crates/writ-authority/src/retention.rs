//! Retention: what the sweeper forgets so the store grows with live work,
//! not with history. Each batch is its own short transaction.

use crate::service::Broker;

/// A token is forgotten this long after it expired: well past the leeway
/// any verifier gives an expiry, and past the time a gateway's decision
/// records naming it are expected back. A forgotten token is unknown,
/// which reads as inactive, never as live.
pub const GRANT_GRACE_SECS: i64 = 5 * 60;
/// Rows per transaction.
const BATCH: u32 = 500;
/// Batches per kind per sweep: the rest waits for the next sweep.
const BATCHES: usize = 20;
/// Pruning runs at most this often (seconds), whatever the sweep interval:
/// nothing here is urgent.
const EVERY_SECS: i64 = 10;

/// What one pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub grants: u64,
    pub revocations: u64,
    pub tasks: u64,
    pub instances: u64,
}

/// Forgets expired grants, revocations of expired tokens, tasks that
/// ended longer than the task retention ago, and expired instances none
/// of the remaining tasks names (at most every ten seconds).
pub async fn prune(broker: &Broker) -> Pruned {
    use std::sync::atomic::Ordering;
    let now = broker.now();
    let last = broker.last_prune.load(Ordering::Relaxed);
    if now.secs() < last.saturating_add(EVERY_SECS) {
        return Pruned::default();
    }
    broker.last_prune.store(now.secs(), Ordering::Relaxed);
    let expired = now.add_secs(-GRANT_GRACE_SECS);
    let ended = now.add_secs(-broker.config.task_retention);
    let store = &broker.store;
    // Tasks first: their grants go with them.
    let tasks = batches("tasks", || store.prune_tasks(ended, BATCH)).await;
    let grants = batches("grants", || store.prune_grants(expired, BATCH)).await;
    let revocations = batches("revocations", || store.prune_revocations(expired, BATCH)).await;
    // Instances last: one goes only once no task names it.
    let instances = batches("instances", || store.prune_instances(expired, BATCH)).await;
    Pruned {
        grants,
        revocations,
        tasks,
        instances,
    }
}

/// Runs `step` until a batch is not full (or the bound is reached);
/// counts what it removed.
async fn batches<F, Fut>(what: &'static str, mut step: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = writ_store::Result<u64>>,
{
    let mut total = 0;
    for _ in 0..BATCHES {
        match step().await {
            Ok(n) => {
                total += n;
                if n < u64::from(BATCH) {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, what, "sweep: cannot prune");
                break;
            }
        }
    }
    if total > 0 {
        crate::metrics::pruned(what, total);
        tracing::debug!(what, total, "pruned");
    }
    total
}
