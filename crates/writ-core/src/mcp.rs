//! Taking MCP (JSON-RPC 2.0) bodies apart, as an enforcement point must
//! before deciding anything: a body is one message or a batch, and each
//! message is plumbing, a tool call (with its tool name and arguments),
//! another method, or a response the client sends back to the server.

use serde_json::Value;

/// Why a body is not JSON-RPC at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// -32700 (parse error) or -32600 (invalid request).
    pub code: i64,
    pub message: String,
}

/// What one message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Not an object, a `method` that is not a string, or neither a method
    /// nor a result: invalid, never forwarded.
    Invalid,
    /// No `method`, a `result` or an `error`: a response to a server
    /// request.
    Response,
    /// Protocol plumbing (`initialize`, `ping`, `tools/list`,
    /// `notifications/*`, ...): no decision of its own.
    Plumbing { method: String },
    /// `tools/call`: the tool's name (None when missing or not a string)
    /// and its arguments as compact JSON.
    ToolCall {
        name: Option<String>,
        arguments: Option<String>,
    },
    /// Any other method: decided as such.
    Other { method: String },
}

/// Methods that need no decision of their own.
pub fn is_plumbing(method: &str) -> bool {
    matches!(
        method,
        "initialize" | "server/discover" | "ping" | "tools/list"
    ) || method.starts_with("notifications/")
}

/// A body as messages, and whether it was a single one (not a batch).
pub fn parse(body: &[u8]) -> Result<(Vec<Value>, bool), RpcError> {
    let parsed: Value = serde_json::from_slice(body).map_err(|e| RpcError {
        code: -32700,
        message: format!("parse error: {e}"),
    })?;
    match parsed {
        Value::Array(items) if !items.is_empty() => Ok((items, false)),
        Value::Array(_) => Err(RpcError {
            code: -32600,
            message: "empty batch".into(),
        }),
        obj @ Value::Object(_) => Ok((vec![obj], true)),
        _ => Err(RpcError {
            code: -32600,
            message: "invalid request".into(),
        }),
    }
}

/// What a message is.
pub fn classify(msg: &Value) -> Kind {
    let Some(obj) = msg.as_object() else {
        return Kind::Invalid;
    };
    let Some(method) = obj.get("method") else {
        // A response to a server request carries a result or an error.
        return if obj.contains_key("result") || obj.contains_key("error") {
            Kind::Response
        } else {
            Kind::Invalid
        };
    };
    let Some(method) = method.as_str() else {
        return Kind::Invalid;
    };
    if is_plumbing(method) {
        return Kind::Plumbing {
            method: method.to_owned(),
        };
    }
    if method == "tools/call" {
        let params = obj.get("params");
        return Kind::ToolCall {
            name: params
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            arguments: params
                .and_then(|p| p.get("arguments"))
                .map(Value::to_string),
        };
    }
    Kind::Other {
        method: method.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn bodies_and_messages() {
        assert_eq!(parse(b"nope").unwrap_err().code, -32700);
        assert_eq!(parse(b"[]").unwrap_err().code, -32600);
        assert_eq!(parse(b"3").unwrap_err().code, -32600);
        let (m, single) = parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert!(single && m.len() == 1);
        let (m, single) = parse(
            br#"[{"id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":1}}},
                 {"id":2,"method":"tools/call","params":{"name":7}},
                 {"id":3,"result":{}}, 5, {"method":"notifications/initialized"},
                 {"id":4,"method":"resources/read"}]"#,
        )
        .unwrap();
        assert!(!single);
        let kinds: Vec<Kind> = m.iter().map(classify).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::ToolCall {
                    name: Some("echo".into()),
                    arguments: Some(r#"{"a":1}"#.into())
                },
                Kind::ToolCall {
                    name: None,
                    arguments: None
                },
                Kind::Response,
                Kind::Invalid,
                Kind::Plumbing {
                    method: "notifications/initialized".into()
                },
                Kind::Other {
                    method: "resources/read".into()
                },
            ]
        );
    }
}
