//! Alerts out: a rule's `alert` action posted to the operator's webhook,
//! signed, retried with backoff, and never on the path of a decision.
//!
//! The body is JSON, `{"type": "writ.rule_fired", "ts": ..., "event":
//! {the audit event}}`. Two headers let the receiver check it came from
//! this broker and is fresh: `X-Writ-Timestamp` (unix seconds) and
//! `X-Writ-Signature: sha256=<hex>`, the HMAC-SHA256 under the shared
//! secret of `"<timestamp>.<body>"`.

use std::time::Duration;

use aws_lc_rs::hmac;
use writ_core::audit::{AuditEvent, hex};
use writ_core::{Secret, Timestamp};

/// Alerts waiting to be posted; beyond it, dropped (and counted).
pub const ALERT_QUEUE: usize = 256;
/// Attempts per alert.
pub const ATTEMPTS: u32 = 5;
/// The wait before the second attempt; doubled for each after.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where alerts go: a URL and the secret their signature is made with.
#[derive(Clone, Debug)]
pub struct AlertWebhook {
    pub url: String,
    pub secret: Secret,
}

struct Pending {
    ts: Timestamp,
    body: String,
}

/// The queue of alerts and its one sender.
pub struct Alerts {
    webhook: Option<AlertWebhook>,
    tx: tokio::sync::mpsc::Sender<Pending>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Pending>>>,
}

impl Alerts {
    pub fn new(webhook: Option<AlertWebhook>) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(ALERT_QUEUE);
        Self {
            webhook,
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Queues `event` for the webhook, if there is one; never waits.
    pub fn send(&self, now: Timestamp, event: &AuditEvent) {
        if self.webhook.is_none() {
            return;
        }
        let body = serde_json::json!({
            "type": "writ.rule_fired",
            "ts": now,
            "event": event,
        })
        .to_string();
        if self.tx.try_send(Pending { ts: now, body }).is_err() {
            metrics::counter!("writ_alerts_dropped_total").increment(1);
            tracing::warn!("alert queue full: an alert was dropped (its audit record stays)");
        }
    }

    /// Posts queued alerts until the process ends (one caller only).
    pub async fn run(&self) {
        let (Some(hook), Some(mut rx)) = (
            self.webhook.clone(),
            self.rx.lock().ok().and_then(|mut r| r.take()),
        ) else {
            return;
        };
        let client = match reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the alert webhook client");
                return;
            }
        };
        while let Some(p) = rx.recv().await {
            let ok = deliver(&client, &hook, &p).await;
            metrics::counter!(
                "writ_alerts_delivered_total",
                "result" => if ok { "delivered" } else { "failed" },
            )
            .increment(1);
        }
    }
}

/// `sha256=<hex>` of `"<unix secs>.<body>"` under `secret`.
pub fn signature(secret: &str, ts_secs: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(ts_secs.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    format!("sha256={}", hex(ctx.sign().as_ref()))
}

async fn deliver(client: &reqwest::Client, hook: &AlertWebhook, p: &Pending) -> bool {
    let ts = p.ts.millis().div_euclid(1000);
    let sig = signature(hook.secret.expose(), ts, &p.body);
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-writ-timestamp", ts.to_string())
            .header("x-writ-signature", &sig)
            .body(p.body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                let s = r.status();
                tracing::warn!(status = %s, attempt, "alert webhook refused an alert");
                // The receiver says the alert itself is wrong: resending it
                // will not help.
                if s.is_client_error() && s != 408 && s != 429 {
                    return false;
                }
            }
            Err(e) => tracing::warn!(error = %e, attempt, "alert webhook unreachable"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 shape: key "Jefe"; the message here is ours.
        let s = signature("Jefe", 1, "what do ya want for nothing?");
        assert!(s.starts_with("sha256="));
        assert_eq!(s.len(), 7 + 64);
        assert_ne!(s, signature("Jefe", 2, "what do ya want for nothing?"));
        assert_ne!(s, signature("jefe", 1, "what do ya want for nothing?"));
    }
}
