//! Agents, their attestation and the admin answers about them.

use super::*;

/// How an agent's instances prove themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attestation {
    /// One-time join tokens minted by an admin.
    JoinToken,
    /// An identity token from a trusted OIDC issuer (a Kubernetes
    /// service-account token, a CI job token, ...).
    Oidc {
        issuer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jwks_uri: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jwks: Option<serde_json::Value>,
        audience: String,
        subject: String,
        /// Signature algorithms accepted from this issuer. Default: EdDSA.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        algorithms: Vec<String>,
    },
    /// A SPIFFE JWT-SVID for the agent: by default for its own SPIFFE ID,
    /// from a writ node (the workload it runs as is named by `workload`);
    /// with `spiffe_id`, for that ID in a federated trust domain (an
    /// existing SPIRE deployment, say), checked against its bundle.
    Spiffe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spiffe_id: Option<String>,
    },
}

impl Attestation {
    pub fn kind(&self) -> &'static str {
        match self {
            Attestation::JoinToken => "join_token",
            Attestation::Oidc { .. } => "oidc",
            Attestation::Spiffe { .. } => "spiffe",
        }
    }
}

/// Which local workloads on which node run as the agent: a workload gets
/// the agent's SVIDs when every selector matches what the node's kernel
/// says about it (`unix:uid:N`, `unix:gid:N`, `unix:path:/exe`,
/// `unix:sha256:HEX` of the executable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub node: String,
    pub selectors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub name: AgentName,
    pub attestation: Attestation,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Agent {
    pub name: AgentName,
    pub spiffe_id: String,
    pub attestation: Attestation,
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    pub quarantined: bool,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in seconds.
    pub ttl: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinTokenCreated {
    pub join_token: String,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quarantined {
    pub agent: AgentName,
    pub quarantined: bool,
    /// Grants revoked by this call.
    pub revoked_tokens: u64,
    /// Tasks ended by this call.
    pub ended_tasks: u64,
}

/// `POST /v1/attest`: exactly one proof.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    pub agent: AgentName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_token: Option<String>,
    /// A JWT-SVID for the agent's SPIFFE ID, with writ's issuer in `aud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_svid: Option<String>,
}
