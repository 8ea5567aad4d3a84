//! `/oauth2/*`: answers in the RFC 6749 error form.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::client_auth::{self, FormFields};
use crate::error::OAuthError;
use crate::extract::{Form, dpop_proof, presented};
use crate::service::clients::AuthenticatedClient;
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
    let out: TokenResponse = b.exchange.token_exchange(form, proof).await?;
    Ok(no_store(Json(out)))
}

#[derive(Deserialize)]
pub struct TokenForm {
    token: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "RFC 7662/7009 allow the hint; writ needs none")]
    token_type_hint: Option<String>,
    // Client authentication (RFC 6749 §2.3.1, RFC 7523 §2.2).
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_assertion_type: Option<String>,
    #[serde(default)]
    client_assertion: Option<String>,
}

impl TokenForm {
    fn token(&self) -> Result<&str, OAuthError> {
        self.token
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("token is required"))
    }

    fn client_fields(&self) -> FormFields<'_> {
        FormFields {
            client_id: self.client_id.as_deref(),
            client_assertion_type: self.client_assertion_type.as_deref(),
            client_assertion: self.client_assertion.as_deref(),
        }
    }
}

/// The client this request authenticates as with `client_secret_basic`
/// or `private_key_jwt`, if it uses one.
async fn client(
    b: &Broker,
    headers: &HeaderMap,
    form: &TokenForm,
    path: &str,
) -> Result<Option<AuthenticatedClient>, OAuthError> {
    match client_auth::credentials(headers, &form.client_fields())? {
        None => Ok(None),
        Some(creds) => Ok(Some(
            b.clients
                .authenticate_client(creds, &b.config.url(path))
                .await?,
        )),
    }
}

/// RFC 7662. An authenticated client (resource server, gateway), or an
/// admin or gateway bearer credential, may introspect.
pub async fn introspect(
    State(b): State<Arc<Broker>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, OAuthError> {
    if client(&b, &headers, &form, "/oauth2/introspect")
        .await?
        .is_some()
    {
        return Ok(no_store(Json(b.tokens.introspect(form.token()?).await?)));
    }
    let gateway = match crate::extract::bearer(&headers) {
        Ok(Some(t)) if t.starts_with("wgw_") => b.gateways.require_gateway(Some(t)).await.is_ok(),
        _ => false,
    };
    if gateway {
        return Ok(no_store(Json(b.tokens.introspect(form.token()?).await?)));
    }
    match caller(&b, &headers, "/oauth2/introspect").await? {
        Caller::Operator(op) => op.require(writ_core::api::Duty::Operate)?,
        Caller::Agent(_) => {
            return Err(OAuthError::invalid_token(
                "introspection needs an operator credential",
            ));
        }
    }
    Ok(no_store(Json(b.tokens.introspect(form.token()?).await?)))
}

/// RFC 7009. An admin may revoke any token; an agent its own instance's;
/// an authenticated client the tokens of its audiences.
pub async fn revoke(
    State(b): State<Arc<Broker>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, OAuthError> {
    if let Some(c) = client(&b, &headers, &form, "/oauth2/revoke").await? {
        b.clients.revoke_for_client(&c, form.token()?).await?;
        return Ok(no_store(()));
    }
    let caller = caller(&b, &headers, "/oauth2/revoke").await?;
    b.tokens.revoke(&caller, form.token()?).await?;
    Ok(no_store(()))
}
