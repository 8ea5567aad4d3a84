//! What a standalone or embedded gateway asks the broker, with its gateway
//! credential: the bundle, the upstream secrets, the JWKS, the revocation
//! feed, decision delivery and held calls.

use writ_core::api::{
    CallHeld, GatewayBundle, GatewayDecisions, GatewayDecisionsAck, GatewaySecret, HoldCall,
    RevocationPage,
};

use crate::{Client, Result};

impl Client {
    /// The gateway's bundle: policy set, tools, agents.
    pub async fn gateway_bundle(&self) -> Result<GatewayBundle> {
        self.get("/v1/gateway/bundle").await
    }

    /// Publishes the public key the gateway signs transaction tokens with.
    pub async fn publish_txn_key(
        &self,
        jwk: &serde_json::Value,
    ) -> Result<writ_core::api::TxnKeyPublished> {
        self.post("/v1/gateway/txn-keys", jwk).await
    }

    /// The upstream secrets the gateway injects.
    pub async fn gateway_secrets(&self) -> Result<Vec<GatewaySecret>> {
        self.get("/v1/gateway/secrets").await
    }

    /// One long-poll of the revocation feed as a gateway process: entries
    /// after `after`, waiting up to `wait_ms`; `follower` names this process
    /// among the gateways sharing one credential.
    pub async fn follow_revocations(
        &self,
        after: u64,
        wait_ms: u64,
        follower: &str,
    ) -> Result<RevocationPage> {
        self.get(&format!(
            "/v1/revocations?after={after}&wait_ms={wait_ms}&follower={follower}"
        ))
        .await
    }

    /// Delivers a batch of the gateway's decisions to the audit log.
    pub async fn deliver_decisions(&self, req: &GatewayDecisions) -> Result<GatewayDecisionsAck> {
        self.post("/v1/gateway/decisions", req).await
    }

    /// Holds a call for a person's approval.
    pub async fn hold_call(&self, req: &HoldCall) -> Result<CallHeld> {
        self.post("/v1/gateway/approvals", req).await
    }
}
