//! The webhook sink: audit records `POST`ed as JSON batches, in order,
//! signed like alerts (see [`crate::alert`]): `X-Writ-Timestamp` (unix
//! seconds) and `X-Writ-Signature: sha256=<hex>`, the HMAC-SHA256 under
//! the sink's secret of `"<timestamp>.<body>"`. Any 2xx acknowledges the
//! whole batch.
//!
//! The body: `{"type": "writ.audit", "sink": NAME, "records": [{"seq",
//! "ts", "event", "prev_hash", "hash"}, ...]}` (`"writ.sink_test"` for
//! the event `writ sink test` sends).

use serde::Serialize;
use writ_core::Secret;
use writ_core::audit::AuditRecord;

pub(super) struct Webhook {
    client: reqwest::Client,
    sink: String,
    url: String,
    secret: Secret,
}

/// One record as sent: its event as JSON, not as text.
#[derive(Serialize)]
struct Sent<'a> {
    seq: u64,
    ts: writ_core::Timestamp,
    event: serde_json::Value,
    prev_hash: &'a str,
    hash: &'a str,
}

impl Webhook {
    pub(super) fn new(sink: &str, url: &str, secret: Secret) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(super::ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Self {
            client,
            sink: sink.to_owned(),
            url: url.to_owned(),
            secret,
        })
    }

    pub(super) async fn send(
        &self,
        records: &[AuditRecord],
        test: bool,
        now: writ_core::Timestamp,
    ) -> Result<(), String> {
        let body = self.body(records, test)?;
        let ts = now.secs();
        let sig = crate::alert::signature(self.secret.expose(), ts, &body);
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-writ-timestamp", ts.to_string())
            .header("x-writ-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| super::http_error("webhook", e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {status}"))
        }
    }

    fn body(&self, records: &[AuditRecord], test: bool) -> Result<String, String> {
        let sent = records
            .iter()
            .map(|r| {
                Ok(Sent {
                    seq: r.seq,
                    ts: r.ts,
                    event: serde_json::from_str(&r.event)
                        .map_err(|e| format!("audit record {}: {e}", r.seq))?,
                    prev_hash: &r.prev_hash,
                    hash: &r.hash,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        serde_json::to_string(&serde_json::json!({
            "type": if test { "writ.sink_test" } else { "writ.audit" },
            "sink": self.sink,
            "records": sent,
        }))
        .map_err(|e| e.to_string())
    }
}
