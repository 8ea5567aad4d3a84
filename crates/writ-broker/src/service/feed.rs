//! The revocation feed: every revocation in order, resumable by sequence,
//! long-polled by enforcement points.

use std::time::Duration;

use writ_core::api::RevocationPage;

use super::Broker;
use crate::error::ApiError;

/// The longest a feed request waits for news.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
const PAGE: u32 = 1000;

impl Broker {
    /// Revocations after `after`; with nothing new, waits up to `wait` for
    /// the next one.
    pub async fn revocations(
        &self,
        after: u64,
        wait: Duration,
    ) -> Result<RevocationPage, ApiError> {
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

    /// Wakes feed readers after a change that may have revoked something.
    pub(crate) fn revocations_changed(&self) {
        self.revoked.notify_waiters();
    }
}
