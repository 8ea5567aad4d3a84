//! Transaction tokens to tools (draft-ietf-oauth-transaction-tokens): for
//! each forwarded call, a token signed with the gateway's own key (made at
//! start, published through the broker's JWKS) that says who calls, for
//! which task, intent and human, through which delegation chain, and what
//! was asked. A tool verifies it with the broker's JWKS; the `X-Writ-*`
//! headers beside it are informational only.

use std::net::SocketAddr;

use axum::http::HeaderValue;
use writ_core::api::Tool;
use writ_core::txn::{RequestContext, TXN_TOKEN_SECS, TxnClaims, TxnContext, TxnSigner};

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::state::{BrokerCall, SyncError, View};

/// Publishes the gateway's key with the broker.
pub(crate) async fn publish(view: &View, signer: &TxnSigner) -> Result<(), SyncError> {
    let jwk = serde_json::to_value(signer.jwk()).map_err(SyncError::TxnKey)?;
    view.broker()
        .publish_txn_key(&jwk)
        .await
        .map_err(BrokerCall::to("/v1/gateway/txn-keys"))?;
    Ok(())
}

/// What a call asked, for its transaction token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// The `Txn-Token` header value for one forwarded call.
pub(crate) fn header(
    gw: &Gateway,
    caller: &Caller,
    tool: &Tool,
    asked: Asked<'_>,
    peer: SocketAddr,
) -> Result<HeaderValue, GatewayError> {
    let fail = |why: String| GatewayError::Unavailable(format!("transaction token: {why}"));
    let random = || writ_core::random::token_128().map_err(|e| fail(e.to_string()));
    let now = gw.view.now().secs();
    let c = &caller.claims;
    let claims = TxnClaims {
        iss: c.iss.clone(),
        aud: tool.audience.clone(),
        iat: now,
        exp: now.saturating_add(TXN_TOKEN_SECS),
        jti: random()?,
        txn: random()?,
        sub: c.sub.clone(),
        scope: c.scope.clone(),
        req_wl: gw.view.public_url().to_owned(),
        tctx: TxnContext {
            tool: tool.name.to_string(),
            task: c.task.clone(),
            intent: c.intent.clone(),
            obo: c.obo.clone(),
            act: c.act.clone(),
            method: asked.method.to_owned(),
            path: asked.path.to_owned(),
        },
        rctx: RequestContext {
            req_ip: peer.ip().to_string(),
        },
    };
    let token = gw.txn.sign(&claims).map_err(|e| fail(e.to_string()))?;
    HeaderValue::from_str(&token).map_err(|e| fail(e.to_string()))
}

/// The path of an upstream URL (what an MCP call asks of its server).
pub(crate) fn url_path(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/".into())
}
