//! The node's link to the broker: a [`writ_client::Client`] with the node's
//! timeouts, and what a refused call means to the node.

use std::time::Duration;

use writ_client::{Client, ClientError, ClientOptions};
use writ_core::Secret;

use crate::NodeError;

/// Why a broker call failed: the node's credential was refused (the node
/// was quarantined or re-attested elsewhere), the agent was refused, the
/// broker could not be reached or answered otherwise, or what it sent
/// could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the broker refused the node's credential")]
    Unauthorized,
    #[error("the broker refused: {0}")]
    Forbidden(#[source] ClientError),
    #[error("{0}")]
    Other(#[source] ClientError),
    #[error("cannot make a key")]
    Key,
    #[error("{0}")]
    Chain(#[source] base64::DecodeError),
}

impl From<ClientError> for CallError {
    fn from(e: ClientError) -> Self {
        match e.status() {
            Some(401) => CallError::Unauthorized,
            Some(403) => CallError::Forbidden(e),
            _ => CallError::Other(e),
        }
    }
}

/// Every broker call gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the broker at `base`, presenting `token` when given.
fn client(base: &str, token: Option<Secret>) -> Result<Client, NodeError> {
    Client::with_options(base, token, ClientOptions::service(None, TIMEOUT))
        .map_err(|e| NodeError::Broker(CallError::Other(e)))
}

/// A client with a credential kept from an earlier attestation.
pub fn resume(base: &str, token: Secret) -> Result<Client, NodeError> {
    client(base, Some(token))
}

/// Attests the node with its join token; the client holds the node
/// credential.
pub async fn attest(base: &str, node: &str, join_token: &Secret) -> Result<Client, NodeError> {
    client(base, None)?
        .node_credential(node, join_token)
        .await
        .map_err(NodeError::Attest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> ClientError {
        ClientError::Unexpected {
            status,
            message: "no".into(),
        }
    }

    #[test]
    fn refusals_are_told_apart() {
        assert!(matches!(
            CallError::from(answered(401)),
            CallError::Unauthorized
        ));
        assert!(matches!(
            CallError::from(answered(403)),
            CallError::Forbidden(m) if m.to_string().contains("no")
        ));
        assert!(matches!(
            CallError::from(answered(503)),
            CallError::Other(_)
        ));
        let unreachable = ClientError::Connect {
            addr: "http://x".into(),
            message: "refused".into(),
        };
        assert!(matches!(CallError::from(unreachable), CallError::Other(_)));
    }
}
