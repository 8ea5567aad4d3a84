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
mod mcp_stream;
mod owner;
mod proxy;
mod spool;
mod state;
mod stdio;
mod stdio_routes;
mod txn;

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
pub use state::{BrokerCall, Bundle, SyncError, View};

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
        .route("/metrics", get(metrics))
        .fallback(dispatch)
        .layer(axum::middleware::from_fn_with_state(
            ("gateway", "/{tool}"),
            writ_listen::telemetry::track,
        ))
        .with_state(gw)
}

/// Serves the gateway on `listener` within `limits` until `shutdown`
/// completes (requests in flight get [`SHUTDOWN_GRACE`]; a long-lived
/// stream, an MCP SSE GET, does not hold the process up past it), then
/// stops its background work, ends its stdio sessions and waits for its
/// stream tasks ([`Gateway::shutdown`]).
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
    gw.shutdown(SHUTDOWN_GRACE).await;
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

/// The process's metrics in the Prometheus text format (a gateway inside
/// the broker shares them with it): to anyone with `--metrics-public`,
/// else to an operator credential of any role, which the broker confirms
/// (`GET /v1/admin/whoami`) at each scrape.
async fn metrics(State(gw): State<Arc<Gateway>>, headers: axum::http::HeaderMap) -> Response {
    if !gw.view.cfg.metrics_public {
        let unauthorized = |detail: &str| {
            GatewayError::Unauthorized {
                error: Some("invalid_token"),
                detail: detail.to_owned(),
                metadata: format!(
                    "{}/.well-known/oauth-protected-resource",
                    gw.view.cfg.public_url.trim_end_matches('/')
                ),
            }
            .into_response()
        };
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return unauthorized("metrics need an operator credential (Bearer)");
        };
        match gw.view.broker().with_token(token).whoami().await {
            Ok(_) => {}
            Err(e) if matches!(e.status(), Some(401 | 403)) => {
                return unauthorized("not an operator credential");
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: the broker could not confirm a credential");
                return GatewayError::Unavailable(
                    "the broker cannot confirm the credential now".into(),
                )
                .into_response();
            }
        }
    }
    let (revocations, bundle) = gw.view.ages();
    if let Some(age) = revocations {
        metrics::gauge!(writ_listen::telemetry::REVOCATION_VIEW_AGE).set(age);
    }
    if let Some(age) = bundle {
        metrics::gauge!(writ_listen::telemetry::BUNDLE_AGE).set(age);
    }
    writ_listen::telemetry::response(&headers)
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
    let Some(t) = b.served(&tool) else {
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
    let tool = bundle.served(&tool_name).cloned().ok_or_else(|| {
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
        &gw.spool,
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
/// decided. Envoy's hardening for path-based authorization normalises dot
/// segments and refuses escaped slashes and backslashes
/// (`path_with_escaped_slashes_action: REJECT_REQUEST`), but leaves `;`
/// alone, which servers of the Tomcat/Spring family read as the start of
/// path parameters (`/..;/admin` is `/../admin` there). writ forwards the
/// path exactly as written, so it refuses, rather than rewrites, every
/// spelling an upstream could resolve differently, as Spring Security's
/// `StrictHttpFirewall` does:
/// - `//` (merged by some servers), `.` and `..` segments, in any encoding;
/// - `;` and `%3B` anywhere (path parameters, `;jsessionid=`);
/// - `%2F`, `%5C` and `\` (a segment that becomes two);
/// - `%25` (a second round of decoding: `%252e` is `%2e` is `.`);
/// - percent-encoded unreserved characters (decoded by some servers
///   only), control characters, malformed escapes and escapes that do not
///   decode to UTF-8 (overlong forms of `.` and `/`).
fn check_path(rest: &str) -> Result<(), GatewayError> {
    let refuse = |why: &str| {
        Err(GatewayError::BadRequest(format!(
            "{why} are not allowed in tool paths"
        )))
    };
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() && i != last {
            return refuse("empty path segments");
        }
        let Some(decoded) = percent_decoded(segment) else {
            return refuse("malformed percent-encodings");
        };
        if segment.contains(';') || decoded.contains(';') {
            return refuse("path parameters (;)");
        }
        if decoded.contains('%') {
            return refuse("encoded percent signs (double encoding)");
        }
        if segment.contains('\\') || decoded.contains('/') || decoded.contains('\\') {
            return refuse("encoded slashes and backslashes");
        }
        if decoded.chars().any(char::is_control) {
            return refuse("control characters");
        }
        if decoded == "." || decoded == ".." {
            return refuse("dot segments");
        }
        if encodes_unreserved(segment) {
            return refuse("percent-encoded letters, digits or -._~");
        }
    }
    Ok(())
}

/// `segment` with its percent-escapes decoded, or `None` when an escape is
/// malformed or the bytes are not UTF-8.
fn percent_decoded(segment: &str) -> Option<String> {
    let hex = |c: u8| (c as char).to_digit(16);
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let h = hex(*b.get(i + 1)?)?;
            let l = hex(*b.get(i + 2)?)?;
            out.push(u8::try_from(h * 16 + l).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
            "/%zz",
            "/a%2",
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

    /// The known traversal spellings: path parameters (Tomcat, Spring,
    /// Jetty), encoded and double-encoded dots and slashes, backslashes,
    /// overlong UTF-8, IIS `%u` escapes, NUL.
    #[test]
    fn h8_semicolon_segments_are_refused() {
        for bad in [
            "/..;/admin",
            "/a/..;/admin",
            "/..%3B/admin",
            "/..%3b/admin",
            "/.;/admin",
            "/%2e%2e;/admin",
            "/public;jsessionid=abc/../admin",
            "/public;jsessionid=abc",
            "/public;/x",
            "/x;a=b/y",
            "/public%3Bx",
            "/%2e%2e/admin",
            "/%2E%2e/admin",
            "/.%2e/admin",
            "/a%2fadmin",
            "/a%2Fadmin",
            "/a%5cadmin",
            "/a\\admin",
            "/..\\admin",
            "/%252e%252e/admin",
            "/%252fadmin",
            "/a%25",
            "/%c0%ae%c0%ae/admin",
            "/%c0%afadmin",
            "/%u002e%u002e/admin",
            "/admin%00.json",
            "/a%0d%0aX-Injected:1",
            "/../admin",
            "/./admin",
            "//admin",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for ok in ["/public/a.b", "/caf%C3%A9", "/a%20b/c", "/%2Bx", "/a/"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
    }
}
