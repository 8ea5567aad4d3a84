//! The delivery loop: one task per sink, reading the store after the
//! sink's cursor, sending in order, and moving the cursor only once the
//! sink acknowledged.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use writ_core::Timestamp;

use super::{Conn, SinkConfig, Sinks, lag};
use crate::service::Broker;

/// Records sent to a sink at once (one webhook body, one OTLP request).
pub const BATCH: u32 = 100;
/// How long a replica's lease on a sink lasts without renewal. It is
/// renewed once a third of it has passed, so every delivery starts with
/// two thirds of it left, more than a delivery may take
/// ([`super::ATTEMPT_TIMEOUT`]): a slow delivery never overlaps another
/// replica's.
pub const LEASE: Duration = Duration::from_secs(30);
const _: () = assert!(LEASE.as_secs() * 2 / 3 > super::ATTEMPT_TIMEOUT.as_secs());
/// How often a replica without the lease looks whether it lapsed.
const STANDBY_POLL: Duration = Duration::from_secs(2);
/// How often a sink with nothing to send looks for new records.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// The wait after the first failure; doubled after each, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The most of a failure's description kept as the sink's last error.
const MAX_ERROR_CHARS: usize = 500;

/// Delivers to every configured sink until the process ends.
pub async fn run(broker: Arc<Broker>) {
    let sinks = Arc::clone(&broker.sinks);
    if sinks.configs.is_empty() {
        return;
    }
    describe();
    let names: Vec<String> = sinks.configs.iter().map(|c| c.name.clone()).collect();
    while let Err(e) = sinks.store.configure_sinks(&names, sinks.clock.now()).await {
        tracing::error!(error = %e, "audit sinks: cannot record the configured sinks; retrying");
        tokio::time::sleep(MAX_BACKOFF).await;
    }
    // Dropped (when this task is aborted), the set aborts every loop.
    let mut loops = tokio::task::JoinSet::new();
    for cfg in sinks.configs.clone() {
        loops.spawn(sink_loop(Arc::clone(&sinks), cfg));
    }
    while loops.join_next().await.is_some() {}
}

/// Gives up this replica's leases (at a clean shutdown), so another
/// replica, or this one started again, takes over at once.
pub async fn release(sinks: &Sinks) {
    for cfg in &sinks.configs {
        if let Err(e) = sinks.store.release_sink(&cfg.name, &sinks.holder).await {
            tracing::warn!(sink = %cfg.name, error = %e, "audit sinks: cannot release the lease");
        }
    }
}

fn describe() {
    describe_gauge!(
        "writ_sink_lag_records",
        "Audit records written but not yet acknowledged by the sink."
    );
    describe_gauge!(
        "writ_sink_lag_seconds",
        "Age of the oldest audit record the sink has not acknowledged."
    );
    describe_counter!(
        "writ_sink_records_total",
        "Audit records a sink acknowledged."
    );
    describe_counter!(
        "writ_sink_failures_total",
        "Deliveries to a sink that failed (each retried)."
    );
}

/// What a sink's loop knows between rounds.
struct Held {
    /// The last record the sink acknowledged.
    cursor: u64,
    /// Until when this replica holds the lease (renewed well before).
    until: Timestamp,
}

async fn sink_loop(sinks: Arc<Sinks>, cfg: SinkConfig) {
    let mut conn = match Conn::new(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(sink = %cfg.name, error = %e, "audit sink cannot start");
            return;
        }
    };
    let mut held: Option<Held> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let now = sinks.clock.now();
        let Some(h) = claim(&sinks, &cfg.name, held.take(), now).await else {
            // Another replica delivers: report the lag it leaves.
            report_lag(&sinks, &cfg.name, None, now).await;
            tokio::time::sleep(STANDBY_POLL).await;
            continue;
        };
        let records = match sinks.store.audit_after(h.cursor, BATCH).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(sink = %cfg.name, error = %e, "audit sink: cannot read the audit chain");
                held = Some(h);
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        report_lag(&sinks, &cfg.name, Some(h.cursor), now).await;
        let Some(last) = records.last().map(|r| r.seq) else {
            held = Some(h);
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        };
        match conn.send(&records, false, now).await {
            Ok(()) => {
                backoff = FIRST_BACKOFF;
                counter!("writ_sink_records_total", "sink" => cfg.name.clone())
                    .increment(records.len() as u64);
                match sinks
                    .store
                    .ack_sink(&cfg.name, &sinks.holder, last, sinks.clock.now())
                    .await
                {
                    Ok(true) => {
                        held = Some(Held {
                            cursor: last,
                            until: h.until,
                        });
                    }
                    // Another replica took the sink over: it resends from
                    // the cursor (at least once), this one claims anew.
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(sink = %cfg.name, error = %e, "audit sink: cannot record the acknowledgement");
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
            Err(e) => {
                counter!("writ_sink_failures_total", "sink" => cfg.name.clone()).increment(1);
                tracing::warn!(sink = %cfg.name, error = %e, after = h.cursor, "audit sink: delivery failed; retrying");
                let short: String = e.chars().take(MAX_ERROR_CHARS).collect();
                let _ = sinks
                    .store
                    .sink_failed(&cfg.name, &sinks.holder, &short, sinks.clock.now())
                    .await;
                held = Some(h);
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The lease on `sink`, renewed once a third of it has passed, or taken
/// anew;
/// `None` while another replica holds it.
async fn claim(sinks: &Sinks, sink: &str, held: Option<Held>, now: Timestamp) -> Option<Held> {
    let renew_at = |until: Timestamp| until.millis() - (LEASE.as_millis() as i64) * 2 / 3;
    if let Some(h) = held
        && now.millis() < renew_at(h.until)
    {
        return Some(h);
    }
    let until = now.plus(LEASE);
    match sinks
        .store
        .claim_sink(sink, &sinks.holder, now, until)
        .await
    {
        Ok(Some(cursor)) => Some(Held { cursor, until }),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(%sink, error = %e, "audit sink: cannot take its lease");
            None
        }
    }
}

/// Sets the sink's lag gauges from the store (`cursor` when known).
async fn report_lag(sinks: &Sinks, sink: &str, cursor: Option<u64>, now: Timestamp) {
    let cursor = match cursor {
        Some(c) => c,
        None => match sinks.store.sinks().await {
            Ok(states) => match states.into_iter().find(|s| s.name == sink) {
                Some(s) => s.acked,
                None => return,
            },
            Err(_) => return,
        },
    };
    let Ok(head) = sinks.store.audit_head().await else {
        return;
    };
    if let Ok((records, secs)) = lag(sinks.store.as_ref(), cursor, head, now).await {
        gauge!("writ_sink_lag_records", "sink" => sink.to_owned()).set(records as f64);
        gauge!("writ_sink_lag_seconds", "sink" => sink.to_owned()).set(secs);
    }
}
