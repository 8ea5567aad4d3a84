//! Following the other replicas of a shared store: what another broker
//! commits (revocations, signing keys, policy sets) is picked up here as
//! soon as the store announces it, so any replica answers as the one that
//! made the change would.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use writ_store::Change;

use crate::error::Error;
use crate::service::Broker;

pub async fn run(broker: Arc<Broker>) {
    let Some(mut changes) = broker.store.changes() else {
        return;
    };
    // Whatever changed between this replica's start and its subscription.
    let mut pending = Some(Change::Resync);
    loop {
        if let Some(change) = pending.take()
            && let Err(e) = apply(&broker, change).await
        {
            tracing::error!(error = %e, ?change, "cannot pick up a change from another replica; retrying");
            pending = Some(Change::Resync);
            // Retry soon, or at the next announcement if sooner.
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                next = changes.recv() => if let Err(RecvError::Closed) = next { return },
            }
            continue;
        }
        pending = Some(match changes.recv().await {
            Ok(c) => c,
            Err(RecvError::Lagged(_)) => Change::Resync,
            Err(RecvError::Closed) => return,
        });
    }
}

const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

async fn apply(broker: &Broker, change: Change) -> Result<(), Error> {
    match change {
        Change::Revocations => broker.revocations.wake_readers(),
        Change::Keys => broker.reload_keys().await?,
        Change::Policy => broker.policies.reload().await?,
        Change::Shadow => broker.policies.reload_shadow().await?,
        Change::Resync => {
            broker.revocations.wake_readers();
            broker.reload_keys().await?;
            broker.policies.reload().await?;
            broker.policies.reload_shadow().await?;
        }
    }
    Ok(())
}
