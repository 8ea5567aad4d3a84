//! OAuth clients of introspection and revocation (resource servers and
//! gateways), and the keys gateways sign transaction tokens with.

use super::*;

/// `POST /v1/clients`: an OAuth client that may introspect tokens, and
/// revoke the ones of its `audiences`. With `jwks` it authenticates with
/// `private_key_jwt` (RFC 7523); without, writ makes it a secret for
/// `client_secret_basic`, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterClient {
    pub client_id: String,
    /// The client's public keys (a JWK Set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// The audiences whose tokens it may revoke.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// A registered client, as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OAuthClientInfo {
    pub client_id: String,
    /// `client_secret_basic` or `private_key_jwt`.
    pub token_endpoint_auth_method: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

/// The answer to `POST /v1/clients`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientRegistered {
    pub client_id: String,
    /// Shown once, for `client_secret_basic`; only its hash is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub token_endpoint_auth_method: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// The answer to `POST /v1/gateway/txn-keys`: the `kid` the key is
/// published under.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxnKeyPublished {
    pub kid: String,
}

/// Whether `id` can be a client id: 1 to 64 characters of
/// `[A-Za-z0-9._-]` (no `:`, which Basic authentication splits on).
pub fn valid_client_id(id: &str) -> bool {
    super::valid_gateway_name(id)
}
