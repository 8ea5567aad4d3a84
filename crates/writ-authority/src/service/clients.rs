//! OAuth clients of introspection and revocation: registering them,
//! authenticating them (`client_secret_basic`, `private_key_jwt`), what
//! they may revoke; and the transaction-token keys gateways publish
//! through the broker's JWKS.

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use writ_core::api::{
    ClientRegistered, OAuthClientInfo, RegisterClient, TxnKeyPublished, valid_client_id,
};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::random;
use writ_core::token::{AccessClaims, TokenKind, verify_client_assertion};
use writ_store::OAuthClient;

use std::sync::Arc;

use writ_core::{Clock, Timestamp};
use writ_store::Store;

use super::gateway::Gateways;
use super::hash_secret;
use super::tokens::Tokens;
use crate::config::BrokerConfig;
use crate::error::Error;
use crate::keys::KeyService;

/// How a client authenticated (RFC 6749 §2.3, RFC 7523 §2.2).
#[derive(Debug)]
pub enum ClientCredentials {
    /// `client_secret_basic`: id and secret, already form-decoded.
    Basic { client_id: String, secret: String },
    /// `private_key_jwt`: the assertion, and the `client_id` the form
    /// named, if any.
    Assertion {
        assertion: String,
        client_id: Option<String>,
    },
}

/// An authenticated client: what it may revoke.
#[derive(Debug)]
pub struct AuthenticatedClient {
    pub client_id: String,
    /// A gateway authenticates with its own credential as the secret.
    pub gateway: bool,
    audiences: Vec<String>,
}

/// The client authentication methods of introspection and revocation, by
/// their registered names (writ's own bearer credentials are accepted
/// too; the registry has no name for them).
pub const METHODS: &[&str] = &["client_secret_basic", "private_key_jwt"];
/// What a `private_key_jwt` assertion may be signed with, by name.
pub const ASSERTION_ALGS: &[&str] = &["EdDSA", "Ed25519", "ES256"];

/// Algorithms a client assertion may be signed with (`Ed25519` is read
/// as `EdDSA`).
const ASSERTION_ALGORITHMS: &[Algorithm] = &[Algorithm::EdDSA, Algorithm::ES256];

/// Longest JWKS a client may register.
const MAX_CLIENT_JWKS: usize = 16 * 1024;

fn invalid_client() -> Error {
    Error::InvalidClient("client authentication failed".into())
}

/// OAuth clients of introspection and revocation, and the JWKS that
/// publishes writ's keys and gateways' transaction-token keys.
pub struct Clients {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Arc<BrokerConfig>,
    keys: Arc<KeyService>,
    tokens: Arc<Tokens>,
    gateways: Arc<Gateways>,
}

impl Clients {
    pub(super) fn new(h: &super::Handles, tokens: &Arc<Tokens>, gateways: &Arc<Gateways>) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            config: Arc::clone(&h.config),
            keys: Arc::clone(&h.keys),
            tokens: Arc::clone(tokens),
            gateways: Arc::clone(gateways),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// `POST /v1/clients`.
    pub async fn register_client(
        &self,
        req: RegisterClient,
        actor: &str,
    ) -> Result<ClientRegistered, Error> {
        if !valid_client_id(&req.client_id) {
            return Err(Error::Invalid(
                "client_id must be 1-64 characters of [A-Za-z0-9._-]".into(),
            ));
        }
        if req.audiences.iter().any(|a| a.is_empty() || a.len() > 512) {
            return Err(Error::Invalid(
                "an audience must be 1-512 characters".into(),
            ));
        }
        let (secret, jwks) = match req.jwks {
            None => (Some(format!("wcs_{}", random::token_256()?)), None),
            Some(v) => {
                let set: JwkSet = serde_json::from_value(v.clone())
                    .map_err(|e| Error::Invalid(format!("jwks is not a JWK Set: {e}")))?;
                check_client_jwks(&set)?;
                let text = v.to_string();
                if text.len() > MAX_CLIENT_JWKS {
                    return Err(Error::Invalid(format!(
                        "jwks is larger than {MAX_CLIENT_JWKS} bytes"
                    )));
                }
                (None, Some(text))
            }
        };
        let method = auth_method(jwks.is_some());
        let event = AuditEvent::new(AuditKind::GatewayRegister, Outcome::Success, actor)
            .reason("OAuth client registered")
            .detail(serde_json::json!({
                "client_id": req.client_id, "method": method, "audiences": req.audiences,
            }));
        let now = self.now();
        self.store
            .create_client(
                OAuthClient {
                    client_id: req.client_id.clone(),
                    secret_hash: secret.as_deref().map(hash_secret),
                    jwks,
                    audiences: req.audiences.clone(),
                    created_at: now,
                    revoked_at: None,
                },
                now,
                vec![event],
            )
            .await?;
        Ok(ClientRegistered {
            client_id: req.client_id,
            client_secret: secret,
            token_endpoint_auth_method: method.into(),
            audiences: req.audiences,
        })
    }

    pub async fn list_clients(&self) -> Result<Vec<OAuthClientInfo>, Error> {
        Ok(self
            .store
            .clients()
            .await?
            .into_iter()
            .map(|c| OAuthClientInfo {
                token_endpoint_auth_method: auth_method(c.jwks.is_some()).into(),
                client_id: c.client_id,
                audiences: c.audiences,
                created_at: c.created_at,
                revoked_at: c.revoked_at,
            })
            .collect())
    }

    pub async fn revoke_client(&self, client_id: &str, actor: &str) -> Result<(), Error> {
        let event = AuditEvent::new(AuditKind::GatewayRegister, Outcome::Success, actor)
            .reason("OAuth client revoked")
            .detail(serde_json::json!({ "client_id": client_id, "revoked": true }));
        self.store
            .revoke_client(client_id, self.now(), vec![event])
            .await?;
        Ok(())
    }

    /// Authenticates a client at `endpoint` (its URL: a client assertion's
    /// `aud` is the endpoint or the issuer). Any failure is
    /// `invalid_client`, and changes nothing but the record of an
    /// assertion's `jti`.
    pub async fn authenticate_client(
        &self,
        creds: ClientCredentials,
        endpoint: &str,
    ) -> Result<AuthenticatedClient, Error> {
        match creds {
            ClientCredentials::Basic { client_id, secret } => {
                if let Some(c) = self.live_client(&client_id).await? {
                    let ok = c.secret_hash.as_deref().is_some_and(|h| {
                        aws_lc_rs::constant_time::verify_slices_are_equal(
                            h.as_bytes(),
                            hash_secret(&secret).as_bytes(),
                        )
                        .is_ok()
                    });
                    return if ok {
                        Ok(AuthenticatedClient {
                            client_id: c.client_id,
                            gateway: false,
                            audiences: c.audiences,
                        })
                    } else {
                        Err(invalid_client())
                    };
                }
                // A gateway: its name and its credential.
                match self.gateways.require_gateway(Some(&secret)).await {
                    Ok(name) if name == client_id => Ok(AuthenticatedClient {
                        audiences: self.gateway_audiences(&name).await?,
                        client_id: name,
                        gateway: true,
                    }),
                    _ => Err(invalid_client()),
                }
            }
            ClientCredentials::Assertion {
                assertion,
                client_id,
            } => {
                // Whose it claims to be: read before verifying, to find
                // the keys; everything is checked against them after.
                let (_, claims) = writ_core::token::insecure_peek(&assertion).map_err(|_| {
                    Error::InvalidClient("the client assertion is malformed".into())
                })?;
                let Some(iss) = claims.get("iss").and_then(|v| v.as_str()) else {
                    return Err(Error::InvalidClient(
                        "the client assertion has no iss".into(),
                    ));
                };
                if client_id.as_deref().is_some_and(|id| id != iss) {
                    return Err(Error::InvalidClient(
                        "client_id is not the client assertion's issuer".into(),
                    ));
                }
                let c = self.live_client(iss).await?.ok_or_else(invalid_client)?;
                let Some(jwks) = c.jwks.as_deref() else {
                    return Err(invalid_client());
                };
                let set: JwkSet =
                    serde_json::from_str(jwks).map_err(|e| Error::Internal(e.to_string()))?;
                let issuer = self.config.issuer.clone();
                let now = self.now();
                let verified = verify_client_assertion(
                    &assertion,
                    &set,
                    &c.client_id,
                    &[endpoint, issuer.as_str(), issuer.trim_end_matches('/')],
                    ASSERTION_ALGORITHMS,
                    now,
                )
                .map_err(|e| Error::InvalidClient(format!("client assertion refused: {e}")))?;
                let fresh = self
                    .store
                    .use_client_assertion(
                        &c.client_id,
                        &verified.jti,
                        writ_core::Timestamp::from_secs(verified.exp),
                        now,
                    )
                    .await?;
                if !fresh {
                    return Err(Error::InvalidClient(
                        "client assertion refused: its jti was used before".into(),
                    ));
                }
                Ok(AuthenticatedClient {
                    client_id: c.client_id,
                    gateway: false,
                    audiences: c.audiences,
                })
            }
        }
    }

    async fn live_client(&self, client_id: &str) -> Result<Option<OAuthClient>, Error> {
        Ok(self
            .store
            .client(client_id)
            .await?
            .filter(|c| c.revoked_at.is_none()))
    }

    /// The audiences of the tools a gateway serves.
    async fn gateway_audiences(&self, gateway: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .store
            .list_tools()
            .await?
            .into_iter()
            .filter(|t| t.served_by(gateway))
            .map(|t| t.audience)
            .collect())
    }

    /// RFC 7009 for an authenticated client: only tokens of its audiences
    /// (refused otherwise, RFC 7009 §2.1); a token that does not verify is
    /// already invalid.
    pub async fn revoke_for_client(
        &self,
        client: &AuthenticatedClient,
        token: &str,
    ) -> Result<(), Error> {
        let Ok(claims) = self.tokens.verify_token_for(token, TokenKind::Any, None) else {
            return Ok(());
        };
        let Some(state) = self.store.grant_state(&claims.jti).await? else {
            return Ok(());
        };
        let actor = if client.gateway {
            format!("gateway:{}", client.client_id)
        } else {
            format!("client:{}", client.client_id)
        };
        if !client.may_revoke(&claims) {
            let event = AuditEvent::new(AuditKind::TokenRevoke, Outcome::Deny, actor)
                .agent(&state.grant.agent)
                .jti(&claims.jti)
                .reason("the token's audience is not the client's");
            self.store.append_audit(self.now(), vec![event]).await?;
            return Err(Error::Forbidden(
                "the token was not issued for this client's audiences".into(),
            ));
        }
        self.tokens.revoke_grant_as(actor, &claims, state).await
    }

    /// Publishes a gateway's transaction-token key in the JWKS.
    pub async fn publish_txn_key(
        &self,
        gateway: &str,
        submitted: &Jwk,
    ) -> Result<TxnKeyPublished, Error> {
        let jwk = writ_core::txn::published_txn_jwk(submitted).map_err(|_| {
            Error::Invalid("a transaction-token key must be a public P-256 JWK".into())
        })?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let text = serde_json::to_string(&jwk).map_err(|e| Error::Internal(e.to_string()))?;
        let event = AuditEvent::new(
            AuditKind::KeyRotate,
            Outcome::Success,
            format!("gateway:{gateway}"),
        )
        .reason("gateway transaction-token key published")
        .detail(serde_json::json!({ "gateway": gateway, "kid": kid }));
        match self
            .store
            .put_gateway_key(gateway, &kid, &text, self.now(), vec![event])
            .await
        {
            // The same key again (a gateway retrying): published already.
            Ok(()) | Err(writ_store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(TxnKeyPublished { kid })
    }

    /// The JWKS: the signing keys, then the transaction-token keys of
    /// every live gateway.
    pub async fn published_jwks(&self) -> Result<JwkSet, Error> {
        let mut set = self
            .keys
            .ring()
            .jwks(self.now(), self.config.max_token_lifetime());
        for text in self.store.gateway_keys().await? {
            match serde_json::from_str::<Jwk>(&text) {
                Ok(k) => set.keys.push(k),
                Err(e) => tracing::error!(error = %e, "a stored gateway key is unreadable"),
            }
        }
        Ok(set)
    }
}

impl AuthenticatedClient {
    fn may_revoke(&self, claims: &AccessClaims) -> bool {
        self.audiences.contains(&claims.aud)
    }
}

fn auth_method(jwks: bool) -> &'static str {
    if jwks {
        "private_key_jwt"
    } else {
        "client_secret_basic"
    }
}

/// A client's JWKS: public keys only, each usable for an assertion.
fn check_client_jwks(set: &JwkSet) -> Result<(), Error> {
    if set.keys.is_empty() {
        return Err(Error::Invalid("jwks has no key".into()));
    }
    for k in &set.keys {
        jsonwebtoken::DecodingKey::from_jwk(k)
            .map_err(|_| Error::Invalid("jwks holds a key that cannot verify signatures".into()))?;
        if !matches!(
            k.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)
                | jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_)
        ) {
            return Err(Error::Invalid(
                "jwks keys must be EC P-256 or OKP Ed25519 (ES256, EdDSA)".into(),
            ));
        }
    }
    Ok(())
}
