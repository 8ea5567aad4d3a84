//! Ends tasks whose lease or hard lifetime ran out, revoking their grants;
//! drops the database roles of tasks that are over; forgets what retention
//! lets go and archives old audit records.

use std::sync::Arc;

use crate::service::Broker;

const BATCH: u32 = 256;

pub async fn run(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep_once(&broker).await;
    }
}

/// Drops the database roles of ended tasks: at start (a crash may have
/// left some), at once when a task ends, and on every sweep interval.
pub async fn reap(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = broker.revocations.tasks_ended.notified() => {}
        }
        broker.db_credentials.reap().await;
    }
}

/// Renews the SPIFFE authorities when they pass half their life (checked
/// hourly; also at every start).
pub async fn spiffe_keys(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = broker
            .spiffe
            .rotate(broker.store.as_ref(), broker.master(), broker.now(), None)
            .await
        {
            tracing::error!(error = %e, "cannot renew the SPIFFE authorities");
        }
    }
}

/// One pass; returns how many tasks it ended.
pub async fn sweep_once(broker: &Broker) -> usize {
    if let Err(e) = broker.audit.seal().await {
        tracing::error!(error = %e, "sweep: cannot checkpoint the audit chain");
    }
    if let Err(e) = broker.attestations.flush_attest_digest().await {
        tracing::error!(error = %e, "sweep: cannot write folded attestation failures");
    }
    if let Err(e) = broker.operators.flush_sign_in_digest().await {
        tracing::error!(error = %e, "sweep: cannot write folded sign-in refusals");
    }
    if let Err(e) = broker.approvals.expire_approvals().await {
        tracing::error!(error = %e, "sweep: cannot expire approvals");
    }
    if let Err(e) = broker.operators.prune_identity_tokens().await {
        tracing::error!(error = %e, "sweep: cannot forget ended identity tokens");
    }
    crate::retention::prune(broker).await;
    if let Err(e) = broker.audit.archive_step().await {
        tracing::error!(error = %e, "sweep: cannot archive audit records");
    }
    let mut ended = 0;
    loop {
        let ids = match broker.store.lapsed_tasks(broker.now(), BATCH).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "lease sweep: cannot list lapsed tasks");
                return ended;
            }
        };
        let full = ids.len() == BATCH as usize;
        let mut progressed = false;
        for id in ids {
            match broker.tasks.end_lapsed(&id).await {
                Ok(true) => {
                    ended += 1;
                    progressed = true;
                    tracing::info!(task = %id, "task ended: lease lapsed or lifetime reached");
                }
                Ok(false) => progressed = true,
                // One task that cannot be ended must not hold up the rest;
                // the next pass tries it again.
                Err(e) => tracing::error!(task = %id, error = %e, "lease sweep: cannot end task"),
            }
        }
        if !full || !progressed {
            return ended;
        }
    }
}
