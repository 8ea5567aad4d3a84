//! Taking MCP (JSON-RPC 2.0) bodies apart, as an enforcement point must
//! before deciding anything: a body is one message or a batch, and each
//! message is plumbing, a request to decide (with the MCP tool, resource or
//! prompt it names), or a response the client sends back to the server.

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
    /// A request decided by policy: its method and what it names.
    Request(Named),
}

/// What a decided request names: its method, and the MCP tool, resource or
/// prompt it is about (each `None` when the message does not name one, or
/// names it with something other than a string).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    pub method: String,
    /// `tools/call`: `params.name`.
    pub tool: Option<String>,
    /// `resources/read`, `resources/subscribe`, `resources/unsubscribe`:
    /// `params.uri`; `completion/complete` on a resource template:
    /// `params.ref.uri`.
    pub resource: Option<String>,
    /// `prompts/get`: `params.name`; `completion/complete` on a prompt:
    /// `params.ref.name`.
    pub prompt: Option<String>,
    /// As compact JSON: `tools/call` and `prompts/get`: `params.arguments`;
    /// `completion/complete`: `params.argument` (the one being completed).
    pub arguments: Option<String>,
}

impl Named {
    fn of(method: &str, params: Option<&Value>) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let field = |k: &str| params.and_then(|p| p.get(k));
        let mut n = Named {
            method: method.to_owned(),
            ..Named::default()
        };
        match method {
            "tools/call" => {
                n.tool = text(field("name"));
                n.arguments = field("arguments").map(Value::to_string);
            }
            "prompts/get" => {
                n.prompt = text(field("name"));
                n.arguments = field("arguments").map(Value::to_string);
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                n.resource = text(field("uri"));
            }
            "completion/complete" => {
                let r = field("ref");
                match r.and_then(|r| r.get("type")).and_then(Value::as_str) {
                    Some("ref/prompt") => n.prompt = text(r.and_then(|r| r.get("name"))),
                    Some("ref/resource") => n.resource = text(r.and_then(|r| r.get("uri"))),
                    _ => {}
                }
                n.arguments = field("argument").map(Value::to_string);
            }
            _ => {}
        }
        n
    }
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
    Kind::Request(Named::of(method, obj.get("params")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn named(method: &str) -> Named {
        Named {
            method: method.into(),
            ..Named::default()
        }
    }

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
                 {"id":4,"method":"resources/read"},
                 {"id":5,"method":"resources/read","params":{"uri":"file:///a"}},
                 {"id":6,"method":"prompts/get","params":{"name":"p","arguments":{"x":"1"}}},
                 {"id":7,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"x","value":"a"}}},
                 {"id":8,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"t://{x}"}}},
                 {"id":9,"method":"logging/setLevel","params":{"level":"debug"}}]"#,
        )
        .unwrap();
        assert!(!single);
        let kinds: Vec<Kind> = m.iter().map(classify).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Request(Named {
                    method: "tools/call".into(),
                    tool: Some("echo".into()),
                    arguments: Some(r#"{"a":1}"#.into()),
                    ..Named::default()
                }),
                Kind::Request(named("tools/call")),
                Kind::Response,
                Kind::Invalid,
                Kind::Plumbing {
                    method: "notifications/initialized".into()
                },
                Kind::Request(named("resources/read")),
                Kind::Request(Named {
                    resource: Some("file:///a".into()),
                    ..named("resources/read")
                }),
                Kind::Request(Named {
                    prompt: Some("p".into()),
                    arguments: Some(r#"{"x":"1"}"#.into()),
                    ..named("prompts/get")
                }),
                Kind::Request(Named {
                    prompt: Some("p".into()),
                    arguments: Some(r#"{"name":"x","value":"a"}"#.into()),
                    ..named("completion/complete")
                }),
                Kind::Request(Named {
                    resource: Some("t://{x}".into()),
                    ..named("completion/complete")
                }),
                Kind::Request(named("logging/setLevel")),
            ]
        );
    }
}
