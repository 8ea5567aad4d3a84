//! The audit chain, signing keys and policy sets.

use super::*;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditPage {
    pub records: Vec<crate::audit::AuditRecord>,
    /// Pass as `after` to read on.
    pub next: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditVerified {
    pub valid: bool,
    pub records: u64,
    pub head: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::audit::ChainBreak>,
    /// A signed statement of `records` and `head` (when valid): keep it
    /// outside writ and a later truncation of the log is detectable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Checkpoints the broker signed and kept as it went, each checked.
    #[serde(default)]
    pub checkpoints: u64,
    /// The last record a kept checkpoint covers: records after it are
    /// covered by the chain alone until the next checkpoint.
    #[serde(default)]
    pub sealed_through: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRotated {
    pub kid: String,
    pub previous_kid: Option<String>,
}

/// One time a policy set became live.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyVersion {
    pub version: String,
    /// `dir:<path>`, `push`, `embedded` or `store`.
    pub origin: String,
    pub loaded_at: Timestamp,
}

/// `PUT /v1/policies`: a whole policy set, file name to Cedar text.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushPolicies {
    pub files: BTreeMap<String, String>,
}

/// The live policy set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub version: String,
    pub policies: usize,
    pub files: BTreeMap<String, String>,
}

/// `GET /v1/sinks`: one audit sink and how far behind it is (never its
/// secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkInfo {
    pub name: String,
    /// `webhook`, `syslog` or `otlp`.
    pub kind: String,
    /// Where records go: a URL without its credentials, or `host:port`.
    pub target: String,
    /// The last audit sequence the sink acknowledged.
    pub cursor: u64,
    /// The last audit sequence written.
    pub head: u64,
    /// Records written but not yet acknowledged.
    pub lag_records: u64,
    /// How long ago the oldest unacknowledged record was written, seconds.
    pub lag_seconds: f64,
    /// Why the last delivery failed, until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The replica delivering to it, while its lease lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// `POST /v1/sinks/{name}/test`: whether a test event got through.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTested {
    pub name: String,
    pub delivered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the attempt took, milliseconds.
    pub millis: u64,
}
