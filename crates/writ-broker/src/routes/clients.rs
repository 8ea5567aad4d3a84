//! OAuth clients of introspection and revocation, and gateways'
//! transaction-token keys.

use std::sync::Arc;

use axum::Json as AxumJson;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jsonwebtoken::jwk::Jwk;
use writ_core::api::{ClientRegistered, OAuthClientInfo, RegisterClient, TxnKeyPublished};

use super::{Administer, GatewayAuth, Op};
use crate::error::ApiError;
use crate::extract::Json;
use crate::service::Broker;

/// Registers a client; its secret (if it has one) is in this answer only.
pub async fn register(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
    Json(req): Json<RegisterClient>,
) -> Result<(StatusCode, AxumJson<ClientRegistered>), ApiError> {
    Ok((
        StatusCode::CREATED,
        AxumJson(b.clients.register_client(req, &op.actor()).await?),
    ))
}

pub async fn list(
    State(b): State<Arc<Broker>>,
    _: Op<Administer>,
) -> Result<AxumJson<Vec<OAuthClientInfo>>, ApiError> {
    Ok(AxumJson(b.clients.list_clients().await?))
}

pub async fn revoke(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    b.clients.revoke_client(&id, &op.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A gateway publishes the public key it signs transaction tokens with.
pub async fn publish_txn_key(
    State(b): State<Arc<Broker>>,
    GatewayAuth(name): GatewayAuth,
    Json(jwk): Json<Jwk>,
) -> Result<AxumJson<TxnKeyPublished>, ApiError> {
    Ok(AxumJson(b.clients.publish_txn_key(&name, &jwk).await?))
}
