//! The syslog sink: each audit record one RFC 5424 message, framed by
//! octet counting (RFC 6587 §3.4.1), over TCP or TLS (RFC 5425). A batch
//! counts as acknowledged once written and flushed to the connection.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME writ PROCID KIND [writ@32473 seq=".."
//! outcome=".." actor=".."] {the record as JSON}`: the facility is the
//! sink's (13, log audit, unless set); the severity is notice (5) for a
//! refusal or failure, informational (6) otherwise. 32473 is the
//! enterprise number RFC 5612 reserves for examples.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use writ_core::Timestamp;
use writ_core::audit::AuditRecord;

use super::SyslogTarget;

/// The structured data ID of writ's parameters.
const SD_ID: &str = "writ@32473";

pub(super) struct Syslog {
    target: SyslogTarget,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conn: Option<Conn>,
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    fn io(&mut self) -> &mut (dyn Io + Unpin + Send) {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.as_mut(),
        }
    }

    /// Whether the receiver closed (or reset) the connection, found by
    /// a read that does not wait: a syslog receiver never sends, so only
    /// its end (or TLS's own messages, which a TLS read takes in) is ever
    /// there to read. Checked before writing, so that records are not
    /// written into a connection already dead.
    async fn closed(&mut self) -> bool {
        let mut b = [0_u8; 64];
        match tokio::time::timeout(std::time::Duration::ZERO, self.io().read(&mut b)).await {
            Err(_) => false,
            Ok(Ok(n)) => n == 0,
            Ok(Err(_)) => true,
        }
    }
}

/// A connection both ways.
trait Io: AsyncRead + AsyncWrite {}
impl<T: AsyncRead + AsyncWrite> Io for T {}

impl Syslog {
    pub(super) fn new(target: SyslogTarget) -> Result<Self, String> {
        let tls = match &target.tls {
            None => None,
            Some(t) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(&t.ca_file)
                    .map_err(|e| format!("syslog CA file {}: {e}", t.ca_file.display()))?;
                for c in certs {
                    let c =
                        c.map_err(|e| format!("syslog CA file {}: {e}", t.ca_file.display()))?;
                    roots.add(c).map_err(|e| format!("syslog CA: {e}"))?;
                }
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                let name = ServerName::try_from(t.server_name.clone())
                    .map_err(|e| format!("syslog server name {:?}: {e}", t.server_name))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Self {
            target,
            tls,
            conn: None,
        })
    }

    async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect(&self.target.address)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.target.address))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Conn::Tcp(tcp)),
            Some((connector, name)) => connector
                .connect(name.clone(), tcp)
                .await
                .map(|s| Conn::Tls(Box::new(s)))
                .map_err(|e| format!("TLS with {}: {e}", self.target.address)),
        }
    }

    pub(super) async fn send(
        &mut self,
        records: &[AuditRecord],
        now: Timestamp,
    ) -> Result<(), String> {
        let mut frames = Vec::new();
        for r in records {
            let msg = message(&self.target, r, now)?;
            frames.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            frames.extend_from_slice(msg.as_bytes());
        }
        let open = match self.conn.take() {
            Some(mut c) => (!c.closed().await).then_some(c),
            None => None,
        };
        let mut conn = match open {
            Some(c) => c,
            None => self.connect().await?,
        };
        let w = conn.io();
        let written = async {
            w.write_all(&frames).await?;
            w.flush().await
        }
        .await;
        match written {
            Ok(()) => {
                self.conn = Some(conn);
                Ok(())
            }
            Err(e) => Err(format!("writing to {}: {e}", self.target.address)),
        }
    }
}

/// One record as an RFC 5424 message (without its frame).
pub(super) fn message(t: &SyslogTarget, r: &AuditRecord, now: Timestamp) -> Result<String, String> {
    let event: serde_json::Value =
        serde_json::from_str(&r.event).map_err(|e| format!("audit record {}: {e}", r.seq))?;
    let field = |k: &str| event.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let outcome = field("outcome");
    let severity = if matches!(outcome, "deny" | "failure") {
        5
    } else {
        6
    };
    let pri = u16::from(t.facility) * 8 + severity;
    let msgid = header_field(field("kind"), 32);
    let ts = if r.seq == 0 { now } else { r.ts };
    let body = serde_json::json!({
        "seq": r.seq,
        "ts": r.ts,
        "event": event,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    });
    Ok(format!(
        "<{pri}>1 {} {} writ {} {msgid} [{SD_ID} seq=\"{}\" outcome=\"{}\" actor=\"{}\"] {body}",
        rfc3339_millis(ts),
        header_field(&t.hostname, 255),
        std::process::id(),
        r.seq,
        sd_escape(outcome),
        sd_escape(field("actor")),
    ))
}

/// A header field: printable US-ASCII without spaces, at most `max`
/// characters; `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() { "-".to_owned() } else { v }
}

/// A structured-data parameter value: `"`, `\` and `]` escaped.
fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn rfc3339_millis(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    format!(
        "{}.{:03}Z",
        s.trim_end_matches('Z'),
        t.millis().rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_an_rfc5424_message() {
        let t = SyslogTarget {
            address: "x:1".into(),
            tls: None,
            facility: 13,
            hostname: "host a".into(),
        };
        let r = AuditRecord {
            seq: 7,
            ts: Timestamp::from_millis(1_800_000_000_123),
            event: r#"{"kind":"task_start","outcome":"deny","actor":"a\"]b"}"#.into(),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let m = message(&t, &r, Timestamp::from_millis(0)).unwrap();
        let pid = std::process::id();
        assert!(
            m.starts_with(&format!(
                "<109>1 2027-01-15T08:00:00.123Z hosta writ {pid} task_start \
                 [writ@32473 seq=\"7\" outcome=\"deny\" actor=\"a\\\"\\]b\"] {{"
            )),
            "{m}"
        );
    }
}
