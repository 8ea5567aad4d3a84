//! SPIFFE: nodes and the SVIDs they ask for.

use super::*;

/// `POST /v1/nodes`: a host that runs `writ node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    pub name: String,
    /// How the node proves itself: join tokens (the default).
    #[serde(default = "join_token_attestation")]
    pub attestation: Attestation,
}

fn join_token_attestation() -> Attestation {
    Attestation::JoinToken
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub attestation: Attestation,
    pub quarantined: bool,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_at: Option<Timestamp>,
}

/// `POST /v1/node/attest`: a node proves itself with a join token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttest {
    pub node: String,
    pub join_token: String,
}

impl std::fmt::Debug for NodeAttest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAttest")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The node's credential for the node API (shown once; a new attestation
/// replaces it).
#[derive(Clone, Serialize, Deserialize)]
pub struct NodeAttested {
    pub node: String,
    pub node_token: String,
}

impl std::fmt::Debug for NodeAttested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAttested")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/node/entries`: the trust domain and the agents a node serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntries {
    pub trust_domain: String,
    pub entries: Vec<NodeEntry>,
}

/// An agent a node may issue SVIDs for, and to which workloads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub agent: AgentName,
    pub spiffe_id: String,
    pub selectors: Vec<String>,
}

/// `POST /v1/node/x509-svid`: a certificate for a key the node made.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509SvidRequest {
    pub agent: AgentName,
    /// The workload's key, made and kept by the node: an uncompressed
    /// P-256 point in base64url.
    pub public_key: String,
    /// The workload's selectors that matched (recorded).
    pub selectors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct X509SvidIssued {
    pub spiffe_id: String,
    /// The SVID then its issuers, DER in base64url.
    pub chain: Vec<String>,
    /// The trust domain's X.509 authorities, DER in base64url.
    pub bundle: Vec<String>,
    pub expires_at: Timestamp,
}

/// `POST /v1/node/jwt-svid`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidRequest {
    pub agent: AgentName,
    pub audience: Vec<String>,
    pub selectors: Vec<String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct JwtSvidIssued {
    pub spiffe_id: String,
    pub token: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for JwtSvidIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvidIssued")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
