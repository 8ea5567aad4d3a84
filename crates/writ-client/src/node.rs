//! What a node (`writ node`) asks the broker: attestation with a join
//! token, then, with the node credential, its entries and SVIDs.

use writ_core::Secret;
use writ_core::api::{
    JwtSvidIssued, JwtSvidRequest, NodeAttest, NodeAttested, NodeEntries, X509SvidIssued,
    X509SvidRequest,
};

use crate::{Client, Result};

impl Client {
    /// Attests node `node` with its join token; the answer carries the node
    /// credential (see [`Client::node_credential`]).
    pub async fn attest_node(&self, node: &str, join_token: &Secret) -> Result<NodeAttested> {
        let body = NodeAttest {
            node: node.to_owned(),
            join_token: join_token.expose().to_owned(),
        };
        self.call(
            self.http
                .post(format!("{}/v1/node/attest", self.base))
                .json(&body),
        )
        .await
    }

    /// Attests node `node` and returns this client holding the node
    /// credential.
    pub async fn node_credential(&self, node: &str, join_token: &Secret) -> Result<Self> {
        let attested = self.attest_node(node, join_token).await?;
        Ok(Self {
            token: Some(Secret::new(attested.node_token)),
            ..self.clone()
        })
    }

    /// The entries of the workloads this node vouches for.
    pub async fn node_entries(&self) -> Result<NodeEntries> {
        self.get("/v1/node/entries").await
    }

    /// An X.509-SVID for a workload of this node.
    pub async fn x509_svid(&self, req: &X509SvidRequest) -> Result<X509SvidIssued> {
        self.post("/v1/node/x509-svid", req).await
    }

    /// A JWT-SVID for a workload of this node.
    pub async fn jwt_svid(&self, req: &JwtSvidRequest) -> Result<JwtSvidIssued> {
        self.post("/v1/node/jwt-svid", req).await
    }
}
