//! Discovery, health and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::extract::bearer;
use crate::service::Broker;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process's metrics (the broker's, its listeners', and an embedded
/// gateway's) in the Prometheus text format or OpenMetrics: to an operator credential of
/// any role, or to anyone with `--metrics-public`.
pub async fn metrics(
    State(b): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !b.config.metrics_public {
        b.require_operator(bearer(&headers)?).await?;
    }
    // A store that cannot answer leaves the gauges at their last figures;
    // the counters are still worth a scrape.
    if let Err(e) = b.sample_live().await {
        tracing::warn!(error = %e, "metrics: live counts unavailable");
    }
    Ok(writ_listen::telemetry::response(&headers))
}

/// Who an operator credential names, for any role: a gateway asks this
/// before it shows its metrics to a credential it cannot check itself.
pub async fn whoami(
    State(b): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = b.require_operator(bearer(&headers)?).await?;
    Ok(Json(json!({ "name": who.name, "role": who.role.as_str() })))
}

/// RFC 8414 authorization server metadata.
pub async fn metadata(State(b): State<Arc<Broker>>) -> Json<serde_json::Value> {
    let c = &b.config;
    Json(json!({
        "issuer": c.issuer,
        "token_endpoint": c.url("/oauth2/token"),
        "jwks_uri": c.url("/.well-known/jwks.json"),
        "introspection_endpoint": c.url("/oauth2/introspect"),
        "revocation_endpoint": c.url("/oauth2/revoke"),
        // Required by RFC 8414 and non-empty for strict validators; writ
        // has no authorization endpoint, and `none` (OAuth 2.0 Multiple
        // Response Types) claims no flow that hands anything out there.
        "response_types_supported": ["none"],
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
        "dpop_signing_alg_values_supported": writ_core::dpop::ALGORITHM_NAMES,
        "token_endpoint_auth_methods_supported": ["none"],
        // RFC 7662/7009 client authentication, by the registered names
        // (writ's own bearer credentials work too, unadvertised: the
        // registry has no name for them).
        "introspection_endpoint_auth_methods_supported": writ_authority::service::clients::METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": writ_authority::service::clients::ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": writ_authority::service::clients::METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": writ_authority::service::clients::ASSERTION_ALGS,
        "scopes_supported": [],
    }))
}

/// The signing keys, and the keys gateways sign transaction tokens with.
pub async fn jwks(State(b): State<Arc<Broker>>) -> Result<Response, ApiError> {
    let set = b.clients.published_jwks().await?;
    let mut resp = Json(set).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(resp)
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// AuthZEN PDP metadata: exactly the endpoints served.
pub async fn authzen(State(b): State<Arc<Broker>>) -> Json<serde_json::Value> {
    use super::{
        AUTHZEN_EVALUATION, AUTHZEN_EVALUATIONS, AUTHZEN_SEARCH_ACTION, AUTHZEN_SEARCH_RESOURCE,
        AUTHZEN_SEARCH_SUBJECT,
    };
    let c = &b.config;
    Json(json!({
        "policy_decision_point": c.issuer,
        "access_evaluation_endpoint": c.url(AUTHZEN_EVALUATION),
        "access_evaluations_endpoint": c.url(AUTHZEN_EVALUATIONS),
        "search_subject_endpoint": c.url(AUTHZEN_SEARCH_SUBJECT),
        "search_resource_endpoint": c.url(AUTHZEN_SEARCH_RESOURCE),
        "search_action_endpoint": c.url(AUTHZEN_SEARCH_ACTION),
    }))
}
