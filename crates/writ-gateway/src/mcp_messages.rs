//! MCP messages, whatever carries them (streamable HTTP or a local stdio
//! server): a POST body taken apart, each request decided with the facts
//! writ-policy builds from it (its method and the MCP tool, resource or
//! prompt it names), listing answers filtered, and the answer
//! assembled in the shape of the request.
//!
//! A request id must be a string or an integer within ±(2^53 − 1): other
//! ids (`1.0`, `1e0`, larger integers) may come back from a server in
//! another form. Whatever its id, every message answering with a listing
//! is filtered.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use writ_core::api::Tool;
use writ_core::mcp::{self, Kind, Named};
use writ_policy::{CallRequest, Decision, Verdict};

use crate::auth::Caller;
use crate::decide::Enforced;
use crate::gateway::Gateway;
use crate::state::Bundle;

/// Largest MCP message (one JSON-RPC message or batch) the gateway takes
/// from an agent or reads as one event or line from a server: 4 MiB.
pub(crate) const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// JSON-RPC error code of a call writ refused.
pub const DENIED: i64 = -32001;

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

/// Largest integer id: beyond it, JSON numbers lose precision in many
/// implementations.
const MAX_SAFE_ID: i64 = (1 << 53) - 1;

/// Whether a request id is one every party reads the same: a string or
/// an integer within ±[`MAX_SAFE_ID`].
pub(crate) fn valid_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.as_i64().is_some_and(|i| i.abs() <= MAX_SAFE_ID),
        _ => false,
    }
}

/// The token's scopes for a `tools/call`: `None` when the MCP tool is one
/// of them (or the request is not a tool call), else the refusal.
fn outside_scopes(c: Call<'_>, request: &CallRequest<'_>) -> Option<Decision> {
    let mcp_tool = request.mcp_tool;
    let granted = mcp_tool.is_some_and(|t| c.caller.scopes.iter().any(|s| s == t));
    (request.mcp_method == Some("tools/call") && !granted).then(|| {
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

/// Decides a request (`tools/call`, `resources/read`, ...): for a tool
/// call the token's scopes first, then policy (holding it for approval when
/// a permit says so); recorded either way.
async fn enforce_call(c: Call<'_>, named: &Named) -> Enforced {
    let request = CallRequest::mcp(c.path, named);
    if let Some(refused) = outside_scopes(c, &request) {
        return c
            .gw
            .record_refusal(c.bundle, c.caller, c.tool, &request, refused);
    }
    c.gw.enforce(c.bundle, c.caller, c.tool, request).await
}

/// Whether a listed item would be offered: asking for it (`named`) is
/// allowed, or held for approval (the agent may ask, and a person may let
/// it through).
fn offered(c: Call<'_>, named: &Named) -> bool {
    let request = CallRequest::mcp(c.path, named);
    if outside_scopes(c, &request).is_some() {
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
        Enforced::Refused(d)
        | Enforced::Unheld(d, _)
        | Enforced::Pass(d)
        | Enforced::Approved(d, _) => (d, None),
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
        if msg.get("method").is_some() && id.as_ref().is_some_and(|id| !valid_id(id)) {
            out.refused.push(rpc_error(
                &Value::Null,
                -32600,
                "invalid request: an id must be a string or an integer within ±(2^53 - 1)",
                None,
            ));
            continue;
        }
        let named = match mcp::classify(&msg) {
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
            Kind::Plumbing { .. } => {
                if let Some(id) = &id {
                    out.requests.push(id.clone());
                }
                out.forward.push(msg);
                continue;
            }
            Kind::Request(n) if n.method == "tools/call" && n.tool.is_none() => {
                if let Some(id) = &id {
                    out.refused
                        .push(rpc_error(id, -32602, "tools/call needs params.name", None));
                }
                continue;
            }
            Kind::Request(n) => n,
        };
        let e = enforce_call(c, &named).await;
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

/// Filters an upstream message that answers with a listing, whatever its
/// id (or method): an id the server rewrote (`1.0` → `1`) or took from
/// another request cannot carry an unfiltered list past. Keeps only the
/// offered items: the tools of a `tools/list` result a `tools/call` would
/// be allowed for, the resources of a `resources/list` result a
/// `resources/read` would be, the prompts of a `prompts/list` result a
/// `prompts/get` would be.
pub(crate) fn filter(c: Call<'_>, msg: &mut Value) {
    let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    let kinds = [
        ("tools", "name", "tools/call"),
        ("resources", "uri", "resources/read"),
        ("prompts", "name", "prompts/get"),
    ];
    for (key, field, method) in kinds {
        let Some(items) = result.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        items.retain(|item| {
            let Some(named) = item.get(field).and_then(Value::as_str) else {
                return false;
            };
            let mut n = Named {
                method: method.to_owned(),
                ..Named::default()
            };
            match key {
                "tools" => n.tool = Some(named.to_owned()),
                "resources" => n.resource = Some(named.to_owned()),
                _ => n.prompt = Some(named.to_owned()),
            }
            offered(c, &n)
        });
    }
}

pub(crate) fn json_response(status: StatusCode, value: &Value, extra: &HeaderMap) -> Response {
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
    fn f2_request_ids_a_server_may_rewrite_are_refused() {
        for ok in [
            json!("1"),
            json!(1),
            json!(-7),
            json!(MAX_SAFE_ID),
            json!(-MAX_SAFE_ID),
        ] {
            assert!(valid_id(&ok), "{ok}");
        }
        let rewritten: Value = serde_json::from_str(
            "[1.0, 1e0, 9007199254740993, 9007199254740992, null, {}, [1], true]",
        )
        .unwrap();
        for bad in rewritten.as_array().unwrap() {
            assert!(!valid_id(bad), "{bad}");
        }
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
