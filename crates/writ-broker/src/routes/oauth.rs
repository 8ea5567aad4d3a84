//! `/oauth2/*`: answers in the RFC 6749 error form.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::OAuthError;
use crate::extract::{Form, dpop_proof, presented};
use crate::service::exchange::{TokenRequest, TokenResponse};
use crate::service::{Broker, Caller};

fn no_store(resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn caller(b: &Broker, headers: &HeaderMap, path: &str) -> Result<Caller, OAuthError> {
    let p = presented(headers)
        .map_err(OAuthError::from)?
        .ok_or_else(|| OAuthError::invalid_token("the caller must authenticate"))?;
    Ok(b.caller(&p, "POST", path).await?)
}

/// RFC 8693 token exchange, the grant type writ issues tokens for here.
pub async fn token(
    State(b): State<Arc<Broker>>,
    headers: HeaderMap,
    Form(form): Form<TokenRequest>,
) -> Result<Response, OAuthError> {
    let proof = dpop_proof(&headers).map_err(OAuthError::from)?;
    let out: TokenResponse = b.token_exchange(form, proof).await?;
    Ok(no_store(Json(out)))
}

#[derive(Deserialize)]
pub struct TokenForm {
    token: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "RFC 7662/7009 allow the hint; writ needs none")]
    token_type_hint: Option<String>,
}

/// RFC 7662. Only an admin or a gateway may introspect.
pub async fn introspect(
    State(b): State<Arc<Broker>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, OAuthError> {
    let gateway = match crate::extract::bearer(&headers) {
        Ok(Some(t)) if t.starts_with("wgw_") => b.require_gateway(Some(t)).await.is_ok(),
        _ => false,
    };
    if gateway {
        let token = form
            .token
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        return Ok(no_store(Json(b.introspect(&token).await?)));
    }
    match caller(&b, &headers, "/oauth2/introspect").await? {
        Caller::Operator(op) => op.require(writ_core::api::Duty::Operate)?,
        Caller::Agent(_) => {
            return Err(OAuthError::invalid_token(
                "introspection needs an operator credential",
            ));
        }
    }
    let token = form
        .token
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    Ok(no_store(Json(b.introspect(&token).await?)))
}

/// RFC 7009. An admin may revoke any token; an agent its own instance's.
pub async fn revoke(
    State(b): State<Arc<Broker>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, OAuthError> {
    let caller = caller(&b, &headers, "/oauth2/revoke").await?;
    let token = form
        .token
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    b.revoke(&caller, &token).await?;
    Ok(no_store(()))
}
