//! The OTLP logs sink: each audit record one log record, sent over
//! OTLP/HTTP in protobuf (the encoding the OpenTelemetry Collector and
//! the trace exporter of `--otlp-endpoint` speak) to the endpoint's
//! `/v1/logs`. A 2xx answer acknowledges the batch.
//!
//! A record's body is the event as JSON; its attributes `writ.audit.seq`,
//! `writ.audit.kind`, `writ.audit.outcome`, `writ.audit.actor` and
//! `writ.audit.hash`; its event name `writ.audit` (`writ.sink_test` for
//! the event `writ sink test` sends); its severity WARN for a refusal or
//! failure, INFO otherwise.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use writ_core::Timestamp;
use writ_core::audit::AuditRecord;

/// OpenTelemetry's severity numbers for INFO and WARN.
const SEVERITY_INFO: i32 = 9;
const SEVERITY_WARN: i32 = 13;

pub(super) struct Otlp {
    client: reqwest::Client,
    url: String,
}

impl Otlp {
    pub(super) fn new(endpoint: &str) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(super::ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the OTLP client: {e}"))?;
        Ok(Self {
            client,
            url: logs_url(endpoint),
        })
    }

    pub(super) async fn send(&self, records: &[AuditRecord], now: Timestamp) -> Result<(), String> {
        let body = request(records, now)?.encode_to_vec();
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .map_err(|e| super::http_error("collector", e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {status}"))
        }
    }
}

/// The logs URL under a collector's base URL (as `--otlp-endpoint` is).
pub(crate) fn logs_url(endpoint: &str) -> String {
    format!("{}/v1/logs", endpoint.trim_end_matches('/'))
}

fn text(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s.to_owned())),
    })
}

fn attr(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value,
        ..KeyValue::default()
    }
}

fn nanos(t: Timestamp) -> u64 {
    u64::try_from(t.millis())
        .unwrap_or(0)
        .saturating_mul(1_000_000)
}

fn request(records: &[AuditRecord], now: Timestamp) -> Result<ExportLogsServiceRequest, String> {
    let mut logs = Vec::with_capacity(records.len());
    for r in records {
        let event: serde_json::Value =
            serde_json::from_str(&r.event).map_err(|e| format!("audit record {}: {e}", r.seq))?;
        let field = |k: &str| event.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let outcome = field("outcome");
        let warn = matches!(outcome, "deny" | "failure");
        logs.push(LogRecord {
            time_unix_nano: nanos(if r.seq == 0 { now } else { r.ts }),
            observed_time_unix_nano: nanos(now),
            severity_number: if warn { SEVERITY_WARN } else { SEVERITY_INFO },
            severity_text: if warn { "WARN" } else { "INFO" }.to_owned(),
            body: text(&r.event),
            attributes: vec![
                attr(
                    "writ.audit.seq",
                    Some(AnyValue {
                        value: Some(Value::IntValue(i64::try_from(r.seq).unwrap_or(i64::MAX))),
                    }),
                ),
                attr("writ.audit.kind", text(field("kind"))),
                attr("writ.audit.outcome", text(outcome)),
                attr("writ.audit.actor", text(field("actor"))),
                attr("writ.audit.hash", text(&r.hash)),
            ],
            event_name: if r.seq == 0 {
                "writ.sink_test"
            } else {
                "writ.audit"
            }
            .to_owned(),
            ..LogRecord::default()
        });
    }
    Ok(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![attr("service.name", text("writ-broker"))],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "writ.audit".to_owned(),
                    ..InstrumentationScope::default()
                }),
                log_records: logs,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    })
}
