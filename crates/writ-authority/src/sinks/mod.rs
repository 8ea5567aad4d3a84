//! Audit sinks: every audit record streamed, in order and at least once,
//! to the tools operators already run: a signed webhook, syslog (RFC 5424
//! over TCP or TLS) and OTLP logs.
//!
//! Each sink has a durable cursor in the store (the last record it
//! acknowledged) and a lease, so that of several replicas one delivers to
//! it at a time, and a restart resumes where the sink left off. Delivery
//! reads the store after the cursor in a task of its own: a sink that is
//! down never holds up a decision or an audit write; it falls behind, and
//! its lag is on `/metrics` (`writ_sink_lag_records`,
//! `writ_sink_lag_seconds`). Audit retention must keep every record from
//! [`writ_store::SinkStore::audit_sink_floor`] on.

mod deliver;
mod otlp;
mod syslog;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use writ_core::api::{SinkInfo, SinkTested};
use writ_core::audit::AuditRecord;
use writ_core::{Clock, Secret, Timestamp};
use writ_store::Store;

use crate::error::Error;

pub use deliver::{release, run};

/// How long one delivery (a batch, or a test event) may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One configured sink.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Its name: the key of its cursor, and its metrics' `sink` label.
    pub name: String,
    pub target: Target,
}

/// Where a sink's records go.
#[derive(Clone, Debug)]
pub enum Target {
    /// `POST` of JSON batches, signed with HMAC-SHA256 under `secret`.
    Webhook { url: String, secret: Secret },
    /// RFC 5424 messages, octet-counted (RFC 6587), over TCP or TLS.
    Syslog(SyslogTarget),
    /// OTLP/HTTP (protobuf) logs to `endpoint`'s `/v1/logs`.
    Otlp { endpoint: String },
}

#[derive(Clone, Debug)]
pub struct SyslogTarget {
    /// `host:port`.
    pub address: String,
    /// TLS with the receiver's certificate checked; `None`: plain TCP.
    pub tls: Option<SyslogTls>,
    /// The syslog facility (0 to 23) [13, log audit].
    pub facility: u8,
    /// The HOSTNAME field [this host's name].
    pub hostname: String,
}

#[derive(Clone, Debug)]
pub struct SyslogTls {
    /// The CA certificates (PEM) the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// The name the receiver's certificate must carry [the address's host].
    pub server_name: String,
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "webhook",
            Target::Syslog(_) => "syslog",
            Target::Otlp { .. } => "otlp",
        }
    }

    /// Where records go, safe to show: no credentials, query or secret.
    pub fn display(&self) -> String {
        match self {
            Target::Webhook { url, .. } | Target::Otlp { endpoint: url } => bare_url(url),
            Target::Syslog(s) => {
                let scheme = if s.tls.is_some() { "tls" } else { "tcp" };
                format!("{scheme}://{}", s.address)
            }
        }
    }
}

/// `url` without user information, query or fragment.
fn bare_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// An HTTP failure in words: its causes, never its URL (which may carry
/// a token).
fn http_error(what: &str, e: reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("{what} timed out");
    }
    let e = e.without_url();
    let mut out = format!("{what} unreachable: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// One open way to a sink: its connection or client, kept between
/// batches.
enum Conn {
    Webhook(webhook::Webhook),
    Syslog(syslog::Syslog),
    Otlp(otlp::Otlp),
}

impl Conn {
    fn new(cfg: &SinkConfig) -> Result<Self, String> {
        Ok(match &cfg.target {
            Target::Webhook { url, secret } => {
                Conn::Webhook(webhook::Webhook::new(&cfg.name, url, secret.clone())?)
            }
            Target::Syslog(s) => Conn::Syslog(syslog::Syslog::new(s.clone())?),
            Target::Otlp { endpoint } => Conn::Otlp(otlp::Otlp::new(endpoint)?),
        })
    }

    /// Sends `records`; `Ok` once the sink acknowledged them all.
    async fn send(
        &mut self,
        records: &[AuditRecord],
        test: bool,
        now: Timestamp,
    ) -> Result<(), String> {
        let sent = async {
            match self {
                Conn::Webhook(w) => w.send(records, test, now).await,
                Conn::Syslog(s) => s.send(records, now).await,
                Conn::Otlp(o) => o.send(records, now).await,
            }
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, sent)
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()))
    }
}

/// The configured sinks, their status and their test.
pub struct Sinks {
    configs: Vec<SinkConfig>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// This replica, as the holder of sinks' leases.
    holder: String,
}

impl Sinks {
    pub fn new(configs: Vec<SinkConfig>, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        // A store of this process alone: a restart takes its leases back
        // at once. Replicas of a shared store each have their own name.
        let holder = if store.changes().is_some() {
            format!(
                "replica-{}-{}",
                std::process::id(),
                writ_core::random::token_256()
                    .map(|t| t.chars().take(8).collect::<String>())
                    .unwrap_or_default()
            )
        } else {
            "local".to_owned()
        };
        Self {
            configs,
            store,
            clock,
            holder,
        }
    }

    pub fn configs(&self) -> &[SinkConfig] {
        &self.configs
    }

    /// Every configured sink with its cursor and lag (never its secret).
    pub async fn list(&self) -> Result<Vec<SinkInfo>, Error> {
        let states = self.store.sinks().await?;
        let head = self.store.audit_head().await?;
        let now = self.clock.now();
        let mut out = Vec::with_capacity(self.configs.len());
        for cfg in &self.configs {
            let state = states.iter().find(|s| s.name == cfg.name);
            let cursor = state.map_or(0, |s| s.acked);
            let (lag_records, lag_seconds) = lag(self.store.as_ref(), cursor, head, now).await?;
            out.push(SinkInfo {
                name: cfg.name.clone(),
                kind: cfg.target.kind().to_owned(),
                target: cfg.target.display(),
                cursor,
                head,
                lag_records,
                lag_seconds,
                last_error: state.and_then(|s| s.last_error.clone()),
                holder: state
                    .filter(|s| s.lease_until > now)
                    .and_then(|s| s.holder.clone()),
            });
        }
        Ok(out)
    }

    /// Sends one test event (sequence 0, kind `sink_test`) through the
    /// sink named `name`, past its cursor, and says how it went.
    pub async fn test(&self, name: &str, actor: &str) -> Result<SinkTested, Error> {
        let cfg = self
            .configs
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NotFound(format!("no sink named {name:?}")))?;
        let now = self.clock.now();
        let event = serde_json::json!({
            "kind": "sink_test",
            "outcome": "success",
            "actor": actor,
            "detail": { "sink": name },
        });
        let record = AuditRecord {
            seq: 0,
            ts: now,
            event: event.to_string(),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let started = Instant::now();
        let result = match Conn::new(cfg) {
            Ok(mut conn) => conn.send(std::slice::from_ref(&record), true, now).await,
            Err(e) => Err(e),
        };
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(SinkTested {
            name: name.to_owned(),
            delivered: result.is_ok(),
            error: result.err(),
            millis,
        })
    }
}

/// Records behind `head` after `cursor`, and the age of the oldest.
async fn lag(
    store: &dyn Store,
    cursor: u64,
    head: u64,
    now: Timestamp,
) -> Result<(u64, f64), Error> {
    let behind = head.saturating_sub(cursor);
    if behind == 0 {
        return Ok((0, 0.0));
    }
    let oldest = store.audit_after(cursor, 1).await?;
    let secs = oldest.first().map_or(0.0, |r| {
        (now.millis().saturating_sub(r.ts.millis())).max(0) as f64 / 1000.0
    });
    Ok((behind, secs))
}
