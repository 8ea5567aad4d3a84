//! MCP over streamable HTTP: every JSON-RPC message is inspected.
//! `tools/call` is decided per call (the MCP tool must be one of the
//! token's scopes, then Cedar decides with the arguments in the context);
//! a denied call becomes a JSON-RPC error and never reaches the server.
//! `tools/list` answers are filtered to the tools the call would be allowed
//! for. Batches are taken apart, so one cannot carry a forbidden call.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use writ_core::api::{Tool, Upstream};
use writ_core::mcp::{self, Kind};
use writ_policy::{CallRequest, Decision, Verdict};

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::proxy::{relay, upstream_headers};
use crate::state::Bundle;
use crate::{Enforced, Gateway};

/// How long an agent may take to send an MCP message body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest MCP message body accepted from an agent.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest upstream answer the gateway reads to inspect.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// JSON-RPC error code of a call writ refused.
pub const DENIED: i64 = -32001;

/// Which task opened each upstream MCP session: a session id is honoured
/// only for tokens of the same task (and an unknown one not at all).
#[derive(Debug, Default)]
pub(crate) struct SessionOwners(std::sync::Mutex<HashMap<String, (String, std::time::Instant)>>);

/// Most upstream sessions remembered; the idle ones go first.
const MAX_OWNED: usize = 100_000;
const OWNED_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

impl SessionOwners {
    fn check(&self, sid: &str, task: &str) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        match m.get_mut(sid) {
            Some((owner, seen)) if owner == task => {
                *seen = std::time::Instant::now();
                true
            }
            _ => false,
        }
    }

    fn bind(&self, sid: &str, task: &str) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_OWNED {
                m.retain(|_, (_, seen)| seen.elapsed() < OWNED_IDLE);
            }
            m.entry(sid.to_owned())
                .or_insert_with(|| (task.to_owned(), std::time::Instant::now()));
        }
    }
}

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

/// One MCP request's context.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub gw: &'a Gateway,
    pub bundle: &'a Bundle,
    pub caller: &'a Caller,
    pub tool: &'a Tool,
    pub path: &'a str,
}

/// What became of each message of a POST.
#[derive(Debug, Default)]
pub(crate) struct Inspected {
    /// Messages to forward, in order.
    pub forward: Vec<Value>,
    /// Error answers for refused requests.
    pub refused: Vec<Value>,
    /// Ids of forwarded `tools/list` requests.
    pub lists: HashSet<String>,
    /// Ids of forwarded requests (answers expected).
    pub requests: Vec<Value>,
    /// Whether the body was a single message (not a batch).
    pub single: bool,
}

fn rpc_error(id: &Value, code: i64, message: impl Into<String>, data: Option<Value>) -> Value {
    let mut err = json!({ "code": code, "message": message.into() });
    if let (Some(d), Some(o)) = (data, err.as_object_mut()) {
        o.insert("data".into(), d);
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": err })
}

pub(crate) fn id_key(id: &Value) -> String {
    id.to_string()
}

/// The token's scopes for a `tools/call`: `None` when the MCP tool is one
/// of them, else the refusal.
fn outside_scopes(c: Call<'_>, method: &str, mcp_tool: Option<&str>) -> Option<Decision> {
    let granted = mcp_tool.is_some_and(|t| c.caller.scopes.iter().any(|s| s == t));
    (method == "tools/call" && !granted).then(|| {
        Decision::refused(
            c.bundle.policy.version(),
            format!(
                "MCP tool {:?} is not among the token's scopes",
                mcp_tool
                    .unwrap_or_default()
                    .chars()
                    .take(128)
                    .collect::<String>()
            ),
        )
    })
}

fn call_request<'a>(
    path: &'a str,
    method: &'a str,
    mcp_tool: Option<&'a str>,
    arguments: Option<&'a str>,
) -> CallRequest<'a> {
    CallRequest {
        method: "POST",
        path,
        query: "",
        mcp_method: Some(method),
        mcp_tool,
        arguments,
    }
}

/// Decides a `tools/call` (or another gated method): the token's scopes
/// first, then policy (holding it for approval when a permit says so);
/// recorded either way.
async fn enforce_call(
    c: Call<'_>,
    method: &str,
    mcp_tool: Option<&str>,
    arguments: Option<&str>,
) -> Enforced {
    let request = call_request(c.path, method, mcp_tool, arguments);
    if let Some(refused) = outside_scopes(c, method, mcp_tool) {
        return c.gw.record_refusal(c.caller, c.tool, &request, refused);
    }
    c.gw.enforce(c.bundle, c.caller, c.tool, request).await
}

/// Whether a tool would be offered: allowed, or held for approval (the
/// agent may ask, and a person may let it through).
fn offered(c: Call<'_>, name: &str) -> bool {
    let request = call_request(c.path, "tools/call", Some(name), None);
    if outside_scopes(c, "tools/call", Some(name)).is_some() {
        return false;
    }
    match c.gw.evaluate(c.bundle, c.caller, c.tool, request).verdict() {
        Verdict::Allow | Verdict::NeedsApproval => true,
        Verdict::Deny => false,
    }
}

/// The JSON-RPC error for a refused or held message.
fn refusal(id: &Value, out: &Enforced) -> Value {
    let (d, approval) = match out {
        Enforced::Refused(d) | Enforced::Pass(d) | Enforced::Approved(d, _) => (d, None),
        Enforced::Held(d, id, status) => (d, Some((id, status))),
    };
    let mut data = json!({
        "policy_version": d.policy_version(),
        "determining_policies": d.determining_policies(),
    });
    if let (Some((approval_id, status)), Some(o)) = (approval, data.as_object_mut()) {
        o.insert("approval_id".into(), json!(approval_id));
        o.insert("approval_status".into(), json!(status));
    }
    rpc_error(id, DENIED, format!("writ: {}", out.reason()), Some(data))
}

/// Takes a POST body apart and decides each message.
pub(crate) async fn inspect(c: Call<'_>, body: &[u8]) -> Result<Inspected, Value> {
    let (messages, single) =
        mcp::parse(body).map_err(|e| rpc_error(&Value::Null, e.code, e.message, None))?;
    let mut out = Inspected {
        single,
        ..Inspected::default()
    };
    for msg in messages {
        let id = msg.get("id").cloned();
        let (method, mcp_tool, arguments) = match mcp::classify(&msg) {
            Kind::Invalid => {
                out.refused
                    .push(rpc_error(&Value::Null, -32600, "invalid request", None));
                continue;
            }
            // A response to a server request: passes through.
            Kind::Response => {
                out.forward.push(msg);
                continue;
            }
            Kind::Plumbing { method } => {
                if let Some(id) = &id {
                    if method == "tools/list" {
                        out.lists.insert(id_key(id));
                    }
                    out.requests.push(id.clone());
                }
                out.forward.push(msg);
                continue;
            }
            Kind::ToolCall {
                name: Some(name),
                arguments,
            } => ("tools/call".to_owned(), Some(name), arguments),
            Kind::ToolCall { name: None, .. } => {
                if let Some(id) = &id {
                    out.refused
                        .push(rpc_error(id, -32602, "tools/call needs params.name", None));
                }
                continue;
            }
            Kind::Other { method } => (method, None, None),
        };
        let e = enforce_call(c, &method, mcp_tool.as_deref(), arguments.as_deref()).await;
        if e.passes() {
            if let Some(id) = &id {
                out.requests.push(id.clone());
            }
            out.forward.push(msg);
        } else if let Some(id) = &id {
            out.refused.push(refusal(id, &e));
        }
    }
    Ok(out)
}

/// Filters `tools/list` results in an upstream message.
pub(crate) fn filter(c: Call<'_>, lists: &HashSet<String>, msg: &mut Value) {
    let is_list = msg.get("id").is_some_and(|id| lists.contains(&id_key(id)));
    if !is_list {
        return;
    }
    if let Some(tools) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    {
        tools.retain(|t| {
            let name = t.get("name").and_then(Value::as_str);
            name.is_some_and(|n| offered(c, n))
        });
    }
}

fn json_response(status: StatusCode, value: &Value, extra: &HeaderMap) -> Response {
    let mut resp = (status, value.to_string()).into_response();
    let h = resp.headers_mut();
    for (k, v) in extra {
        h.insert(k.clone(), v.clone());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Assembles the answer to a POST from the upstream's answers and the
/// gateway's own refusals.
pub(crate) fn answer(
    single: bool,
    mut answers: Vec<Value>,
    refused: Vec<Value>,
    extra: &HeaderMap,
) -> Response {
    answers.extend(refused);
    if answers.is_empty() {
        let mut r = StatusCode::ACCEPTED.into_response();
        for (k, v) in extra {
            r.headers_mut().insert(k.clone(), v.clone());
        }
        return r;
    }
    let body = if single && answers.len() == 1 {
        answers.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(answers)
    };
    json_response(StatusCode::OK, &body, extra)
}

pub(crate) async fn handle(
    gw: &Gateway,
    bundle: &Bundle,
    caller: &Caller,
    tool: &Tool,
    upstream: &Upstream,
    peer: SocketAddr,
    req: Request,
) -> Result<Response, GatewayError> {
    let path = req.uri().path().to_owned();
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
            let call = Call {
                gw,
                bundle,
                caller,
                tool,
                path: &path,
            };
            let inspected = match inspect(call, &body).await {
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
                    post_http(call, url, peer, &parts.headers, inspected).await
                }
                Upstream::McpStdio { command } => {
                    crate::stdio::post(call, command, &parts.headers, inspected).await
                }
                Upstream::Http { .. } | Upstream::Postgres { .. } => {
                    Err(GatewayError::NotFound("not an MCP tool".into()))
                }
            }
        }
        (Method::GET | Method::DELETE, Upstream::Mcp { url, .. }) => {
            let headers = upstream_headers(req.headers(), caller, tool, gw, peer)?;
            let resp = gw
                .upstream
                .request(req.method().clone(), url)
                .headers(headers)
                .send()
                .await
                .map_err(|e| GatewayError::BadGateway(format!("upstream of {}: {e}", tool.name)))?;
            Ok(relay(resp))
        }
        (Method::DELETE, Upstream::McpStdio { .. }) => {
            crate::stdio::delete(gw, caller, req.headers()).await
        }
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

async fn post_http(
    c: Call<'_>,
    url: &str,
    peer: SocketAddr,
    incoming: &HeaderMap,
    ins: Inspected,
) -> Result<Response, GatewayError> {
    let Call {
        gw, caller, tool, ..
    } = c;
    if ins.forward.is_empty() {
        return Ok(answer(
            ins.single,
            Vec::new(),
            ins.refused,
            &HeaderMap::new(),
        ));
    }
    let body = if ins.single && ins.forward.len() == 1 {
        ins.forward.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(ins.forward)
    };
    let mut headers = upstream_headers(incoming, caller, tool, gw, peer)?;
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
        .map_err(|e| GatewayError::BadGateway(format!("upstream of {}: {e}", tool.name)))?;
    let status = resp.status();
    if let Ok(Some(sid)) = session_of(resp.headers()) {
        gw.mcp_owners
            .bind(sid, caller.claims.task.as_deref().unwrap_or_default());
    }
    let mut keep = HeaderMap::new();
    for name in ["mcp-session-id", "mcp-protocol-version"] {
        if let Some(v) = resp.headers().get(name) {
            keep.insert(name, v.clone());
        }
    }
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if status == StatusCode::ACCEPTED {
        return Ok(answer(ins.single, Vec::new(), ins.refused, &keep));
    }
    if !status.is_success() {
        return Ok(relay(resp));
    }
    let bytes = read_bounded(resp).await?;
    if ctype.starts_with("application/json") {
        let mut v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| GatewayError::BadGateway(format!("upstream sent bad JSON: {e}")))?;
        let mut answers = match v.take() {
            Value::Array(items) => items,
            other => vec![other],
        };
        for a in &mut answers {
            filter(c, &ins.lists, a);
        }
        return Ok(answer(ins.single, answers, ins.refused, &keep));
    }
    if ctype.starts_with("text/event-stream") {
        let text = String::from_utf8_lossy(&bytes);
        let mut out = String::new();
        for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
            let mut data = String::new();
            let mut other = String::new();
            for line in event.lines() {
                if let Some(d) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                } else {
                    other.push_str(line);
                    other.push('\n');
                }
            }
            out.push_str(&other);
            if !data.is_empty() {
                match serde_json::from_str::<Value>(&data) {
                    Ok(mut m) => {
                        filter(c, &ins.lists, &mut m);
                        out.push_str(&format!("data: {m}\n"));
                    }
                    Err(_) => {
                        for l in data.lines() {
                            out.push_str(&format!("data: {l}\n"));
                        }
                    }
                }
            }
            out.push('\n');
        }
        for r in ins.refused {
            out.push_str(&format!("event: message\ndata: {r}\n\n"));
        }
        let mut resp = Response::new(Body::from(out));
        let h = resp.headers_mut();
        for (k, v) in &keep {
            h.insert(k.clone(), v.clone());
        }
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(resp);
    }
    Err(GatewayError::BadGateway(format!(
        "upstream of {} answered with content type {ctype:?}",
        tool.name
    )))
}

async fn read_bounded(resp: reqwest::Response) -> Result<bytes::Bytes, GatewayError> {
    if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(GatewayError::BadGateway("upstream answer too large".into()));
    }
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| GatewayError::BadGateway(format!("upstream: {e}")))?;
        if buf.len() + chunk.len() > MAX_ANSWER {
            return Err(GatewayError::BadGateway("upstream answer too large".into()));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(bytes::Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use super::*;

    #[test]
    fn plumbing_is_not_gated_and_calls_are() {
        for m in [
            "initialize",
            "ping",
            "tools/list",
            "notifications/initialized",
        ] {
            assert!(mcp::is_plumbing(m), "{m}");
        }
        for m in [
            "tools/call",
            "resources/read",
            "prompts/get",
            "sampling/createMessage",
        ] {
            assert!(!mcp::is_plumbing(m), "{m}");
        }
    }

    #[test]
    fn answers_keep_the_shape_of_the_request() {
        let none = HeaderMap::new();
        let one = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        let r = answer(true, vec![one.clone()], Vec::new(), &none);
        assert_eq!(r.status(), StatusCode::OK);
        let r = answer(true, Vec::new(), Vec::new(), &none);
        assert_eq!(r.status(), StatusCode::ACCEPTED, "notifications only");
        let refused = rpc_error(&json!(2), DENIED, "no", None);
        let r = answer(false, vec![one], vec![refused], &none);
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[test]
    fn errors_name_their_id_and_code() {
        let e = rpc_error(&json!("a"), DENIED, "writ: denied", Some(json!({"x": 1})));
        assert_eq!(e["id"], "a");
        assert_eq!(e["error"]["code"], DENIED);
        assert_eq!(e["error"]["data"]["x"], 1);
        assert_eq!(id_key(&json!(1)), id_key(&json!(1)));
        assert_ne!(
            id_key(&json!(1)),
            id_key(&json!("1")),
            "ids keep their type"
        );
    }
}
