//! MCP over streamable HTTP: every JSON-RPC message is inspected.
//! `tools/call` is decided per call (the MCP tool must be one of the
//! token's scopes, then Cedar decides with the arguments in the context);
//! a denied call becomes a JSON-RPC error and never reaches the server.
//! `tools/list` answers are filtered to the tools the call would be allowed
//! for. Batches are taken apart, so one cannot carry a forbidden call.
//! Answers streamed as server-sent events (on a POST or the session's GET
//! stream) are relayed event by event ([`crate::mcp_stream`]), so progress,
//! server requests (sampling, elicitation, roots) and their answers flow
//! as they would without the gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use writ_core::api::{Tool, Upstream};

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::mcp_messages::{Inspected, answer, filter, inspect, json_response};
use crate::mcp_stream::{MAX_STREAMS_PER_TASK, Owned, StreamSlot, events_of, respond};
use crate::proxy::{public_base, relay, upstream_headers};
use crate::state::Bundle;

/// How long an agent may take to send an MCP message body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest MCP message body accepted from an agent.
const MAX_BODY: usize = crate::mcp_messages::MAX_MESSAGE;
/// Largest upstream answer the gateway reads to inspect.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The request's MCP session: `Err` for more than one value or a value
/// that is not visible ASCII.
fn session_of(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    let mut values = headers.get_all("mcp-session-id").iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(GatewayError::BadRequest(
            "more than one Mcp-Session-Id".into(),
        ));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| GatewayError::BadRequest("malformed Mcp-Session-Id".into()))
        })
        .transpose()
}

/// The MCP transport's defence against DNS rebinding: a request from a web
/// page (it carries `Origin`) is refused unless that origin is on the
/// tool's allow-list; other clients send none and pass.
fn check_origin(headers: &HeaderMap, tool: &Tool, upstream: &Upstream) -> Result<(), GatewayError> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(GatewayError::BadRequest("more than one Origin".into()));
    }
    let allowed = origin
        .to_str()
        .is_ok_and(|o| upstream.origins().iter().any(|a| a == o));
    if allowed {
        Ok(())
    } else {
        Err(GatewayError::Forbidden {
            reason: format!(
                "requests from this Origin may not call tool {}; an admin lists the origins a tool accepts",
                tool.name
            ),
            policy_version: None,
            determining_policies: Vec::new(),
            approval_id: None,
        })
    }
}

/// `rest`: the path below the tool's prefix, which policy sees as
/// `context.request.path`, as for plain HTTP.
#[allow(clippy::too_many_arguments, reason = "one request's context")]
pub(crate) async fn handle(
    gw: &Arc<Gateway>,
    bundle: &Arc<Bundle>,
    caller: &Caller,
    tool: &Tool,
    upstream: &Upstream,
    rest: &str,
    peer: SocketAddr,
    req: Request,
) -> Result<Response, GatewayError> {
    let path = if rest.is_empty() { "/" } else { rest }.to_owned();
    check_origin(req.headers(), tool, upstream)?;
    let task = caller.claims.task.as_deref().unwrap_or_default();
    let sid = session_of(req.headers())?;
    if let (Upstream::Mcp { .. }, Some(sid)) = (upstream, sid)
        && !gw.mcp_owners.check(sid, task)
    {
        return Err(GatewayError::NotFound(
            "unknown or ended MCP session".into(),
        ));
    }
    match (req.method().clone(), upstream) {
        (Method::POST, _) => {
            let (parts, body) = req.into_parts();
            let body = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY))
                .await
                .map_err(|_| GatewayError::BadRequest("the request body took too long".into()))?
                .map_err(|_| {
                    GatewayError::PayloadTooLarge(format!(
                        "MCP messages are limited to {MAX_BODY} bytes"
                    ))
                })?;
            // The token was checked when the headers arrived; a revocation
            // taken while the body came in still counts.
            if gw.view.is_revoked(&caller.claims.jti) {
                return Err(crate::auth::unauthorized(
                    &gw.view,
                    tool.name.as_str(),
                    Some("invalid_token"),
                    "token has been revoked",
                ));
            }
            if !gw.view.fresh() {
                return Err(GatewayError::Unavailable(
                    "the gateway's revocation view is stale; refusing until it catches up".into(),
                ));
            }
            let owned = Owned {
                gw: Arc::clone(gw),
                bundle: Arc::clone(bundle),
                caller: caller.clone(),
                tool: tool.clone(),
                path,
            };
            let inspected = match inspect(owned.call(), &body).await {
                Ok(i) => i,
                Err(e) => {
                    return Ok(json_response(
                        StatusCode::BAD_REQUEST,
                        &e,
                        &HeaderMap::new(),
                    ));
                }
            };
            match upstream {
                Upstream::Mcp { url, .. } => {
                    post_http(owned, url, peer, &parts.headers, inspected).await
                }
                Upstream::McpStdio { command, .. } => {
                    crate::stdio::post(owned, command, &parts.headers, inspected).await
                }
                Upstream::Http { .. } | Upstream::Postgres { .. } => {
                    Err(GatewayError::NotFound("not an MCP tool".into()))
                }
            }
        }
        (Method::GET | Method::DELETE, Upstream::Mcp { url, .. }) => {
            // `Last-Event-ID` is among the headers passed on: resumption
            // is the server's, within a session the task owns (checked
            // above), so that one task cannot replay another's events.
            if req.method() == Method::GET
                && sid.is_none()
                && req.headers().contains_key("last-event-id")
            {
                return Err(GatewayError::BadRequest(
                    "Last-Event-ID resumes a stream of an MCP session: send its Mcp-Session-Id"
                        .into(),
                ));
            }
            let owned = Owned {
                gw: Arc::clone(gw),
                bundle: Arc::clone(bundle),
                caller: caller.clone(),
                tool: tool.clone(),
                path,
            };
            let slot = if req.method() == Method::GET {
                Some(stream_slot(&owned)?)
            } else {
                None
            };
            let url_path = crate::txn::url_path(url);
            let asked = crate::txn::Asked {
                method: req.method().as_str(),
                path: &url_path,
            };
            let headers = upstream_headers(req.headers(), caller, tool, gw, peer, asked)?;
            let resp = gw
                .upstream
                .request(req.method().clone(), url)
                .headers(headers)
                .send()
                .await
                .map_err(|e| GatewayError::upstream(tool.name.as_str(), &e))?;
            if req.method() == Method::GET && resp.status().is_success() && is_sse(&resp) {
                let keep = kept_headers(resp.headers());
                let events = held_by(events_of(resp), slot);
                return Ok(respond(owned, events, Vec::new(), &keep));
            }
            Ok(relay(resp, url, &public_base(gw, tool)))
        }
        (Method::GET, Upstream::McpStdio { .. }) => {
            let owned = Owned {
                gw: Arc::clone(gw),
                bundle: Arc::clone(bundle),
                caller: caller.clone(),
                tool: tool.clone(),
                path,
            };
            crate::stdio::get(owned, req.headers()).await
        }
        (Method::DELETE, Upstream::McpStdio { .. }) => {
            crate::stdio::delete(gw, caller, req.headers()).await
        }
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

/// A place for one more stream of the caller's task from an HTTP upstream.
fn stream_slot(owned: &Owned) -> Result<StreamSlot, GatewayError> {
    owned
        .gw
        .mcp_streams
        .take(&owned.stream_key())
        .ok_or_else(|| GatewayError::Forbidden {
            reason: format!(
                "a task may have at most {MAX_STREAMS_PER_TASK} MCP requests or streams open at once"
            ),
            policy_version: None,
            determining_policies: Vec::new(),
            approval_id: None,
        })
}

/// `events`, holding `slot` for as long as the stream lasts.
fn held_by<S: futures_util::Stream>(
    events: S,
    slot: Option<StreamSlot>,
) -> impl futures_util::Stream<Item = S::Item> {
    use futures_util::StreamExt as _;
    events.map(move |e| {
        let _held = &slot;
        e
    })
}

/// The headers of an upstream answer the client gets.
fn kept_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut keep = HeaderMap::new();
    for name in ["mcp-session-id", "mcp-protocol-version"] {
        if let Some(v) = upstream.get(name) {
            keep.insert(name, v.clone());
        }
    }
    keep
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn is_sse(resp: &reqwest::Response) -> bool {
    content_type(resp).starts_with("text/event-stream")
}

async fn post_http(
    owned: Owned,
    url: &str,
    peer: SocketAddr,
    incoming: &HeaderMap,
    ins: Inspected,
) -> Result<Response, GatewayError> {
    let c = owned.call();
    let (gw, caller, tool) = (c.gw, c.caller, c.tool);
    if ins.forward.is_empty() {
        return Ok(answer(
            ins.single,
            Vec::new(),
            ins.refused,
            &HeaderMap::new(),
        ));
    }
    // What is left of a batch after refusals goes as the one message it
    // may be: servers of protocol versions without batches take it.
    let body = if ins.forward.len() == 1 {
        ins.forward.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(ins.forward)
    };
    let slot = stream_slot(&owned)?;
    let url_path = crate::txn::url_path(url);
    let asked = crate::txn::Asked {
        method: "POST",
        path: &url_path,
    };
    let mut headers = upstream_headers(incoming, caller, tool, gw, peer, asked)?;
    // The body is re-serialized: its length and encoding are the gateway's.
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_TYPE,
    ] {
        headers.remove(h);
    }
    let resp = gw
        .upstream
        .post(url)
        .headers(headers)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| GatewayError::upstream(tool.name.as_str(), &e))?;
    let status = resp.status();
    if let Ok(Some(sid)) = session_of(resp.headers()) {
        gw.mcp_owners
            .bind(sid, caller.claims.task.as_deref().unwrap_or_default());
    }
    let keep = kept_headers(resp.headers());
    let ctype = content_type(&resp);
    if status == StatusCode::ACCEPTED {
        return Ok(answer(ins.single, Vec::new(), ins.refused, &keep));
    }
    if !status.is_success() {
        return Ok(relay(resp, url, &public_base(gw, tool)));
    }
    if ctype.starts_with("text/event-stream") {
        // Event by event: progress and server requests arrive when sent.
        let events = held_by(events_of(resp), Some(slot));
        return Ok(respond(owned, events, ins.refused, &keep));
    }
    if ctype.starts_with("application/json") {
        let bytes = read_bounded(tool.name.as_str(), resp).await?;
        let mut v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            GatewayError::BadGateway(format!(
                "the MCP server of tool {} sent bad JSON",
                tool.name
            ))
        })?;
        let mut answers = match v.take() {
            Value::Array(items) => items,
            other => vec![other],
        };
        for a in &mut answers {
            filter(c, a);
        }
        return Ok(answer(ins.single, answers, ins.refused, &keep));
    }
    Err(GatewayError::BadGateway(format!(
        "the MCP server of tool {} answered with content type {ctype:?}",
        tool.name
    )))
}

async fn read_bounded(tool: &str, resp: reqwest::Response) -> Result<bytes::Bytes, GatewayError> {
    let too_large = || {
        GatewayError::BadGateway(format!(
            "the MCP server of tool {tool} sent an answer over {MAX_ANSWER} bytes"
        ))
    };
    if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| GatewayError::upstream(tool, &e))?;
        if buf.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(bytes::Bytes::from(buf))
}
