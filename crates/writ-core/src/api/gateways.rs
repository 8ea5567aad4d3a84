//! What gateways read from the broker and deliver to it.

use super::*;

/// `POST /v1/gateways`: a credential for one gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterGateway {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayRegistered {
    pub name: String,
    /// Shown once: the gateway presents it as a bearer token.
    pub token: String,
}

/// `GET /v1/gateway/bundle`: everything a gateway decides with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayBundle {
    pub issuer: String,
    pub policy_version: String,
    /// The live policy set's files, by name.
    pub files: BTreeMap<String, String>,
    pub tools: Vec<Tool>,
    pub agents: Vec<Agent>,
    /// Each agent's refusals in the last five minutes, across the
    /// deployment (`context.behaviour.denials_5m`); agents with none are
    /// left out.
    #[serde(default)]
    pub behaviour: BTreeMap<AgentName, u32>,
    /// When `behaviour` was counted. A refusal a gateway makes on counts
    /// taken before an agent's release is forgiven with the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour_at: Option<Timestamp>,
    /// Agents a detection rule holds for approval at `behaviour_at`
    /// (`context.behaviour.requires_approval`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub held_for_approval: std::collections::BTreeSet<AgentName>,
    /// The gateway the bundle was made for: it serves the tools bound to
    /// it ([`Tool::served_by`]), and gets their secrets only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// `POST /v1/gateway/approvals`: a gateway holds a call for approval and
/// asks where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldCall {
    pub task: TaskId,
    /// The scopes of the tool token the call was made with.
    pub scopes: std::collections::BTreeSet<Scope>,
    /// The call (its `window_secs` and `used_at` are the broker's to set).
    pub call: ApprovalCall,
}

/// Where a held call stands: `approved` (let it through) or `pending`,
/// `denied` or `expired` (refuse it, naming the approval).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallHeld {
    pub approval_id: crate::ids::ApprovalId,
    pub status: ApprovalStatus,
}

/// `POST /v1/gateway/decisions`: decisions a gateway made, numbered by the
/// gateway from 1 so that redelivery is idempotent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayDecisions {
    pub first_seq: u64,
    pub decisions: Vec<crate::audit::AuditEvent>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayDecisionsAck {
    /// The highest decision number the broker holds for this gateway.
    pub acked: u64,
}

/// One entry of the revocation feed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    pub seq: u64,
    pub jti: String,
    /// When the token would have expired anyway: a follower may forget the
    /// entry after this (plus verification leeway).
    pub expires_at: Timestamp,
    pub revoked_at: Timestamp,
}

/// `GET /v1/revocations?after=SEQ`: entries after SEQ, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevocationPage {
    pub revocations: Vec<Revocation>,
    /// Pass as `after` to read on.
    pub next: u64,
    /// The newest revocation when the request came: a follower whose
    /// `next` is below it is still catching up (its view is not current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<u64>,
}
