//! The node's side of the broker's node API.

use std::time::Duration;

use serde::de::DeserializeOwned;
use writ_core::api::{
    JwtSvidIssued, JwtSvidRequest, NodeAttest, NodeAttested, NodeEntries, X509SvidIssued,
    X509SvidRequest,
};

use crate::NodeError;

/// Why a broker call failed: the node's credential was refused (the node
/// was quarantined or re-attested elsewhere), the agent was refused, or
/// the broker could not be reached.
#[derive(Debug)]
pub enum CallError {
    Unauthorized,
    Forbidden(String),
    Other(String),
}

pub struct BrokerClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn http() -> Result<reqwest::Client, NodeError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| NodeError::Broker(e.to_string()))
}

impl BrokerClient {
    /// A client with a credential kept from an earlier attestation.
    pub fn resume(base: &str, token: String) -> Result<Self, NodeError> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: http()?,
        })
    }

    /// The node's credential, to keep across restarts.
    pub fn credential(&self) -> &str {
        &self.token
    }

    /// Attests the node with its join token.
    pub async fn attest(
        base: &str,
        node: &str,
        join_token: &writ_core::Secret,
    ) -> Result<Self, NodeError> {
        let base = base.trim_end_matches('/').to_owned();
        let http = http()?;
        let resp = http
            .post(format!("{base}/v1/node/attest"))
            .json(&NodeAttest {
                node: node.to_owned(),
                join_token: join_token.expose().to_owned(),
            })
            .send()
            .await
            .map_err(|e| NodeError::Broker(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(NodeError::Broker(format!(
                "attestation refused ({status}): {body}"
            )));
        }
        let attested: NodeAttested = resp
            .json()
            .await
            .map_err(|e| NodeError::Broker(e.to_string()))?;
        Ok(Self {
            base,
            token: attested.node_token,
            http,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CallError::Other(e.to_string()))?;
        match resp.status() {
            s if s.is_success() => resp
                .json()
                .await
                .map_err(|e| CallError::Other(e.to_string())),
            reqwest::StatusCode::UNAUTHORIZED => Err(CallError::Unauthorized),
            reqwest::StatusCode::FORBIDDEN => {
                Err(CallError::Forbidden(resp.text().await.unwrap_or_default()))
            }
            s => Err(CallError::Other(format!(
                "{s}: {}",
                resp.text().await.unwrap_or_default()
            ))),
        }
    }

    pub async fn entries(&self) -> Result<NodeEntries, CallError> {
        self.call(self.http.get(format!("{}/v1/node/entries", self.base)))
            .await
    }

    pub async fn bundle(&self) -> Result<serde_json::Value, CallError> {
        self.call(self.http.get(format!("{}/v1/bundle", self.base)))
            .await
    }

    pub async fn x509_svid(&self, req: &X509SvidRequest) -> Result<X509SvidIssued, CallError> {
        self.call(
            self.http
                .post(format!("{}/v1/node/x509-svid", self.base))
                .json(req),
        )
        .await
    }

    pub async fn jwt_svid(&self, req: &JwtSvidRequest) -> Result<JwtSvidIssued, CallError> {
        self.call(
            self.http
                .post(format!("{}/v1/node/jwt-svid", self.base))
                .json(req),
        )
        .await
    }
}
