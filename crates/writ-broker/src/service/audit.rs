//! Reading and verifying the audit chain.

use writ_core::api::{AuditPage, AuditVerified};
use writ_core::audit::Verifier;

use super::Broker;
use crate::error::ApiError;

/// Largest page of audit records per request.
pub const MAX_PAGE: u32 = 1000;

impl Broker {
    /// Records after `after`; with `last`, the last `last` records instead.
    pub async fn audit_page(
        &self,
        after: u64,
        limit: u32,
        last: Option<u32>,
    ) -> Result<AuditPage, ApiError> {
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
        let records = self.store.audit_after(after, limit).await?;
        let next = records.last().map_or(after, |r| r.seq);
        Ok(AuditPage { records, next })
    }

    /// Walks the whole chain from its first record.
    pub async fn audit_verify(&self) -> Result<AuditVerified, ApiError> {
        let mut v = Verifier::default();
        let mut after = 0;
        loop {
            let page = self.store.audit_after(after, MAX_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                if let Err(brk) = v.push(r) {
                    let (seq, head) = v.head();
                    return Ok(AuditVerified {
                        valid: false,
                        records: seq,
                        head: head.to_owned(),
                        error: Some(brk),
                        checkpoint: None,
                    });
                }
            }
        }
        let (seq, head) = v.head();
        let checkpoint = self
            .keys
            .ring()
            .sign_checkpoint(&writ_core::token::Checkpoint {
                iss: self.config.issuer.clone(),
                seq,
                hash: head.to_owned(),
                iat: self.now().secs(),
            })
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(AuditVerified {
            valid: true,
            records: seq,
            head: head.to_owned(),
            error: None,
            checkpoint: Some(checkpoint),
        })
    }
}
