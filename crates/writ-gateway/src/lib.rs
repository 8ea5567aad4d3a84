//! The writ gateway: an enforcement point in front of tools.
//!
//! Every request names a tool by its first path segment (`/{tool}/...`).
//! The gateway verifies the tool token locally (JWKS, audience, lifetime,
//! DPoP binding with a replay cache, the revocation set it follows from the
//! broker), decides with Cedar over the live policy bundle and the request's
//! facts, records the decision for the broker's audit chain, and forwards:
//! plain HTTP with the tool's upstream secret injected and the agent's own
//! credentials stripped, or MCP with `tools/call` decided per call and
//! `tools/list` filtered to what the task may use.
//!
//! It fails closed: with no bundle yet, or a revocation view older than the
//! staleness bound, it refuses everything.

mod auth;
mod decide;
mod error;
mod gateway;
mod mcp;
mod mcp_messages;
mod proxy;
mod spool;
mod state;
mod stdio;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use writ_core::api::Upstream;

pub use auth::{Caller, caller_of};
pub use decide::decide_call;
pub use error::GatewayError;
pub use gateway::{Config, Gateway, StartError};
pub use state::{Bundle, View};

/// The gateway's HTTP surface.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata_root),
        )
        .route(
            "/.well-known/oauth-protected-resource/{tool}",
            get(resource_metadata),
        )
        .route("/healthz", get(healthz))
        .fallback(dispatch)
        .with_state(gw)
}

/// Serves the gateway on `listener` within `limits` until `shutdown`
/// completes (requests in flight get [`SHUTDOWN_GRACE`]; a long-lived
/// stream, an MCP SSE GET, does not hold the process up past it), then
/// stops its background work.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    limits: writ_listen::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = writ_listen::serve(
        listener,
        router(Arc::clone(&gw)),
        limits,
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await;
    gw.stop();
    served
}

/// How long requests in flight may take to finish once shutdown is asked.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn metadata_url(public_url: &str, tool: &str) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource/{tool}",
        public_url.trim_end_matches('/')
    )
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> Response {
    let body = serde_json::json!({
        "ready": gw.ready(),
        "bundle": gw.view.bundle().is_some(),
        "revocations_fresh": gw.view.fresh(),
        "pending_decisions": gw.pending_decisions(),
    });
    let status = if gw.ready() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// RFC 9728 metadata for the gateway as a whole.
async fn resource_metadata_root(State(gw): State<Arc<Gateway>>) -> Response {
    let Some(b) = gw.view.bundle() else {
        return GatewayError::Unavailable("gateway has no bundle yet".into()).into_response();
    };
    axum::Json(serde_json::json!({
        "resource": gw.view.cfg.public_url.trim_end_matches('/'),
        "authorization_servers": [b.issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
        "resource_name": "writ gateway",
    }))
    .into_response()
}

/// RFC 9728 metadata for one tool behind the gateway.
async fn resource_metadata(State(gw): State<Arc<Gateway>>, Path(tool): Path<String>) -> Response {
    let Some(b) = gw.view.bundle() else {
        return GatewayError::Unavailable("gateway has no bundle yet".into()).into_response();
    };
    let Some(t) = b.tools.get(&tool).filter(|t| t.upstream.is_some()) else {
        return GatewayError::NotFound(format!("no tool {tool} behind this gateway"))
            .into_response();
    };
    axum::Json(serde_json::json!({
        "resource": format!("{}/{}", gw.view.cfg.public_url.trim_end_matches('/'), t.name),
        "authorization_servers": [b.issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
        "scopes_supported": t.scopes,
        "resource_name": t.name,
    }))
    .into_response()
}

/// Routes `/{tool}/...` to the tool's kind of proxy.
async fn dispatch(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    match route(gw, peer, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(gw: Arc<Gateway>, peer: SocketAddr, req: Request) -> Result<Response, GatewayError> {
    let path = req.uri().path().to_owned();
    let trimmed = path.strip_prefix('/').unwrap_or(&path);
    let (tool_name, rest) = match trimmed.split_once('/') {
        Some((t, r)) => (t.to_owned(), format!("/{r}")),
        None => (trimmed.to_owned(), String::new()),
    };
    check_path(&rest)?;
    let bundle = gw
        .view
        .bundle()
        .ok_or_else(|| GatewayError::Unavailable("gateway has no policy bundle yet".into()))?;
    let tool = bundle
        .tools
        .get(&tool_name)
        .filter(|t| t.upstream.as_ref().is_some_and(Upstream::is_gateway))
        .cloned()
        .ok_or_else(|| {
            GatewayError::NotFound(format!("no tool {tool_name:?} behind this gateway"))
        })?;
    if !gw.view.fresh() {
        return Err(GatewayError::Unavailable(
            "the gateway's revocation view is stale; refusing until it catches up".into(),
        ));
    }
    let caller = auth::authenticate(
        &gw.view,
        &gw.replay,
        &gw.verified,
        &bundle,
        &tool,
        req.method(),
        &path,
        req.headers(),
    )
    .await?;
    match &tool.upstream {
        Some(Upstream::Http { url, .. }) => {
            proxy::forward(&gw, &bundle, &caller, &tool, url, &rest, peer, req).await
        }
        Some(u) => mcp::handle(&gw, &bundle, &caller, &tool, u, &rest, peer, req).await,
        None => Err(GatewayError::NotFound(format!(
            "no tool {tool_name:?} behind this gateway"
        ))),
    }
}

/// Refuses paths that would mean something else upstream than what policy
/// decided: dot segments (which an upstream URL resolves, escaping the
/// tool's base path) and encoded dots, slashes and backslashes.
fn check_path(rest: &str) -> Result<(), GatewayError> {
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        // `//` (an upstream may merge it) and percent-encoded unreserved
        // characters (an upstream may decode them) would let a request mean
        // another path than the one policy saw.
        if segment.is_empty() && i != last {
            return Err(GatewayError::BadRequest(
                "empty path segments are not allowed in tool paths".into(),
            ));
        }
        if encodes_unreserved(segment) {
            return Err(GatewayError::BadRequest(
                "percent-encoded letters, digits or -._~ are not allowed in tool paths".into(),
            ));
        }
        let lower = segment.to_ascii_lowercase();
        let decoded_dot = lower.replace("%2e", ".");
        if decoded_dot == "."
            || decoded_dot == ".."
            || lower.contains("%2f")
            || lower.contains("%5c")
            || segment.contains('\\')
        {
            return Err(GatewayError::BadRequest(
                "dot segments and encoded slashes are not allowed in tool paths".into(),
            ));
        }
    }
    Ok(())
}

fn encodes_unreserved(segment: &str) -> bool {
    let b = segment.as_bytes();
    b.windows(3).any(|w| {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            w,
            hex(w.get(1).copied().unwrap_or(0)),
            hex(w.get(2).copied().unwrap_or(0)),
        ) {
            ([b'%', _, _], Some(h), Some(l)) => {
                let c = (h * 16 + l) as u8;
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn paths_cannot_escape_the_tools_base() {
        for ok in [
            "",
            "/",
            "/customers/42",
            "/customers/",
            "/a.b/c..d",
            "/v1/x.json",
            "/a%20b",
            "/%2Bx",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "//admin",
            "/a//b",
            "/%61dmin",
            "/x%7E",
            "/..",
            "/a/../b",
            "/./a",
            "/%2e%2e/x",
            "/%2E./x",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
