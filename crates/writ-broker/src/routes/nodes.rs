//! SPIFFE: nodes (admin), the node API (a node credential) and the trust
//! bundle (public).

use std::sync::Arc;

use axum::Json as AxumJson;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use writ_core::api::{
    CreateJoinToken, JoinTokenCreated, JwtSvidIssued, JwtSvidRequest, Node, NodeAttest,
    NodeAttested, NodeEntries, RegisterNode, X509SvidIssued, X509SvidRequest,
};

use super::{AttestAdmitted, Op, Operate};
use crate::error::ApiError;
use crate::extract::{Json, bearer};
use crate::service::Broker;

type R<T> = Result<AxumJson<T>, ApiError>;

/// A live node credential was presented; the node.
pub struct NodeAuth(pub Node);

impl FromRequestParts<Arc<Broker>> for NodeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        // Without a bearer credential, a verified client certificate that
        // names a node stands in for it (`--tls-client-ca`).
        if token.is_none()
            && let Some(name) = super::certified(parts, crate::mtls::node_named)
        {
            return Ok(NodeAuth(broker.nodes.authenticate_named(&name).await?));
        }
        let token =
            token.ok_or_else(|| ApiError::Unauthorized("a node credential is required".into()))?;
        Ok(NodeAuth(broker.nodes.authenticate(token).await?))
    }
}

pub async fn register(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Json(req): Json<RegisterNode>,
) -> Result<(StatusCode, AxumJson<Node>), ApiError> {
    Ok((
        StatusCode::CREATED,
        AxumJson(b.nodes.register(req, &op.actor()).await?),
    ))
}

pub async fn list(State(b): State<Arc<Broker>>, _: Op<Operate>) -> R<Vec<Node>> {
    Ok(AxumJson(b.nodes.list().await?))
}

pub async fn show(
    State(b): State<Arc<Broker>>,
    _: Op<Operate>,
    Path(name): Path<String>,
) -> R<Node> {
    Ok(AxumJson(b.nodes.get(&name).await?))
}

pub async fn join_token(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
    Json(req): Json<CreateJoinToken>,
) -> Result<(StatusCode, AxumJson<JoinTokenCreated>), ApiError> {
    let created = b.nodes.create_join_token(&name, req, &op.actor()).await?;
    Ok((StatusCode::CREATED, AxumJson(created)))
}

pub async fn quarantine(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
) -> R<Node> {
    Ok(AxumJson(
        b.nodes.quarantine(&name, true, &op.actor()).await?,
    ))
}

pub async fn release(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
) -> R<Node> {
    Ok(AxumJson(
        b.nodes.quarantine(&name, false, &op.actor()).await?,
    ))
}

pub async fn attest(
    State(b): State<Arc<Broker>>,
    _: AttestAdmitted,
    Json(req): Json<NodeAttest>,
) -> R<NodeAttested> {
    Ok(AxumJson(b.nodes.attest(req).await?))
}

pub async fn entries(State(b): State<Arc<Broker>>, NodeAuth(node): NodeAuth) -> R<NodeEntries> {
    Ok(AxumJson(b.nodes.entries(&node).await?))
}

pub async fn x509_svid(
    State(b): State<Arc<Broker>>,
    NodeAuth(node): NodeAuth,
    Json(req): Json<X509SvidRequest>,
) -> R<X509SvidIssued> {
    Ok(AxumJson(b.nodes.issue_x509_svid(&node, req).await?))
}

pub async fn jwt_svid(
    State(b): State<Arc<Broker>>,
    NodeAuth(node): NodeAuth,
    Json(req): Json<JwtSvidRequest>,
) -> R<JwtSvidIssued> {
    Ok(AxumJson(b.nodes.issue_jwt_svid(&node, req).await?))
}

/// The SPIFFE bundle of the trust domain: X.509 authorities and JWT-SVID
/// keys, for anyone who verifies SVIDs.
pub async fn bundle(State(b): State<Arc<Broker>>) -> R<serde_json::Value> {
    Ok(AxumJson(b.spiffe.bundle(b.now())?))
}
