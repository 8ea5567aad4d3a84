//! Routes for gateways and for managing them.

use std::sync::Arc;

use axum::Json as AxumJson;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use writ_core::ToolName;
use writ_core::api::{
    CallHeld, GatewayBundle, GatewayDecisions, GatewayDecisionsAck, GatewayRegistered,
    GatewaySecret, HoldCall, RegisterGateway, SetToolSecret, ToolSecretSet,
};

use super::{Administer, GatewayAuth, Op, Operate};
use crate::error::ApiError;
use crate::extract::Json;
use crate::service::Broker;

type R<T> = Result<AxumJson<T>, ApiError>;

pub async fn register(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
    Json(req): Json<RegisterGateway>,
) -> Result<(StatusCode, AxumJson<GatewayRegistered>), ApiError> {
    Ok((
        StatusCode::CREATED,
        AxumJson(b.gateways.register_gateway(req, &op.actor()).await?),
    ))
}

pub async fn revoke(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    b.gateways.revoke_gateway(&name, &op.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_secret(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
    Json(req): Json<SetToolSecret>,
) -> R<ToolSecretSet> {
    let tool: ToolName = name
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("{e}")))?;
    Ok(AxumJson(
        b.gateways.set_tool_secret(&tool, req, &op.actor()).await?,
    ))
}

pub async fn bundle(
    State(b): State<Arc<Broker>>,
    GatewayAuth(name): GatewayAuth,
) -> R<GatewayBundle> {
    Ok(AxumJson(b.gateways.gateway_bundle(&name).await?))
}

/// Upstream secrets: a gateway credential only, never an admin one, and
/// only for the tools that gateway serves.
pub async fn secrets(
    State(b): State<Arc<Broker>>,
    GatewayAuth(name): GatewayAuth,
) -> R<Vec<GatewaySecret>> {
    Ok(AxumJson(b.gateways.gateway_secrets(&name).await?))
}

pub async fn decisions(
    State(b): State<Arc<Broker>>,
    GatewayAuth(name): GatewayAuth,
    Json(batch): Json<GatewayDecisions>,
) -> R<GatewayDecisionsAck> {
    Ok(AxumJson(b.gateways.gateway_decisions(&name, batch).await?))
}

/// A gateway holds a call for approval: where it stands.
pub async fn hold_call(
    State(b): State<Arc<Broker>>,
    GatewayAuth(name): GatewayAuth,
    Json(req): Json<HoldCall>,
) -> R<CallHeld> {
    Ok(AxumJson(b.gateways.gateway_hold_call(&name, req).await?))
}
