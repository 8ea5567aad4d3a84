//! The revocation feed: every revocation in order, resumable by sequence,
//! long-polled by enforcement points.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use writ_core::api::RevocationPage;

use super::Broker;
use crate::error::ApiError;

/// The longest a feed request waits for news.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
const PAGE: u32 = 1000;

/// The gateways following the feed, and how far each has taken it: a
/// follower's `after` says it holds everything up to there.
#[derive(Debug, Default)]
pub(crate) struct Followers {
    by_gateway: Mutex<HashMap<String, Follower>>,
    acked: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy)]
struct Follower {
    acked: u64,
    /// Live until then: the poll it is in, plus a second to come back.
    live_until: Instant,
}

impl Followers {
    fn ack(&self, gateway: &str, after: u64, wait: Duration) {
        if let Ok(mut m) = self.by_gateway.lock() {
            let f = m.entry(gateway.to_owned()).or_insert(Follower {
                acked: 0,
                live_until: Instant::now(),
            });
            f.acked = f.acked.max(after);
            f.live_until = Instant::now() + wait.min(MAX_WAIT) + Duration::from_secs(1);
        }
        self.acked.notify_waiters();
    }

    /// Whether every live follower holds `seq`.
    fn all_hold(&self, seq: u64) -> bool {
        let now = Instant::now();
        self.by_gateway.lock().map_or(true, |m| {
            m.values()
                .filter(|f| f.live_until > now)
                .all(|f| f.acked >= seq)
        })
    }
}

impl Broker {
    /// Revocations after `after`; with nothing new, waits up to `wait` for
    /// the next one. `gateway`: the follower asking (its `after` is its
    /// acknowledgement).
    pub async fn revocations(
        &self,
        gateway: Option<&str>,
        after: u64,
        wait: Duration,
    ) -> Result<RevocationPage, ApiError> {
        if let Some(g) = gateway {
            self.followers.ack(g, after, wait);
        }
        let notified = self.revoked.notified();
        tokio::pin!(notified);
        // Register for the wake-up before looking, so none is missed.
        notified.as_mut().enable();
        let mut page = self.store.revocations_after(after, PAGE).await?;
        if page.is_empty() && !wait.is_zero() {
            let _ = tokio::time::timeout(wait.min(MAX_WAIT), notified).await;
            page = self.store.revocations_after(after, PAGE).await?;
        }
        let next = page.last().map_or(after, |r| r.seq);
        Ok(RevocationPage {
            revocations: page,
            next,
        })
    }

    /// Wakes feed readers after a change that may have revoked something,
    /// then waits (bounded by `propagation_wait`) until every connected
    /// gateway holds it, so that once the change is acknowledged the next
    /// request through any live gateway is refused.
    pub(crate) async fn revocations_changed(&self) {
        self.revoked.notify_waiters();
        self.tasks_ended.notify_one();
        let head = match self.store.revocation_head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the revocation head; not waiting for gateways");
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + self.config.propagation_wait;
        loop {
            let notified = self.followers.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.followers.all_hold(head) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    seq = head,
                    "a gateway did not take a revocation in time; it fails closed once stale"
                );
                return;
            }
        }
    }
}
