//! What an enforcement point keeps of one request in the audit chain, so
//! that a replay decides on the facts the live decision saw: the method,
//! the path and what an MCP message names as they were; the query string
//! with the values of sensitive-looking parameters (and secret-looking
//! values) redacted; the MCP arguments as their shape (every key, booleans
//! and nulls as they were, strings and numbers replaced). Bounded, and
//! never a secret value.
//!
//! A replay can decide a request exactly when the policy set it replays
//! does not read a part the record redacted ([`PolicySet::reads_request`]):
//! otherwise the decision is not replayed, rather than guessed.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{CallRequest, PolicySet};

/// Longest path, method or MCP name kept (longer ones are cut).
pub const MAX_RECORDED_TEXT: usize = 512;
/// Longest query string kept.
pub const MAX_RECORDED_QUERY: usize = 1024;
/// Most JSON values kept of the arguments' shape.
pub const MAX_ARGUMENT_NODES: usize = 256;
/// Deepest nesting kept of the arguments' shape.
pub const MAX_ARGUMENT_DEPTH: usize = 8;

/// What stands for a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Parameter names whose values are never kept (matched as parts of the
/// lowercased name).
const SENSITIVE_NAMES: &[&str] = &[
    "token", "secret", "key", "pass", "pwd", "auth", "session", "sig", "cred", "code", "jwt",
    "bearer", "cookie", "private", "otp", "nonce",
];

/// One request as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_prompt: Option<String>,
    /// The arguments' shape: keys as they were, booleans and nulls as
    /// they were, every string and number replaced by [`REDACTED`] (or 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// The query the live decision saw is not here as it was (a value
    /// redacted or cut).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub query_redacted: bool,
    /// The arguments the live decision saw are not here as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arguments_redacted: bool,
    /// The method, path or an MCP name was cut to its first
    /// [`MAX_RECORDED_TEXT`] bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// Which parts of `context.request` a policy set reads the value of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestReads {
    pub query: bool,
    pub arguments: bool,
}

fn cut(s: &str, max: usize, redacted: &mut bool) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    *redacted = true;
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

fn sensitive_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SENSITIVE_NAMES.iter().any(|s| n.contains(s))
}

/// A value that looks like a credential whatever its name: long, and
/// mixing at least three of lower case, upper case, digits and symbols
/// (or long and all hex or digits and letters without spaces).
fn secret_looking(v: &str) -> bool {
    if v.len() < 20 {
        return false;
    }
    let classes = [
        v.chars().any(|c| c.is_ascii_lowercase()),
        v.chars().any(|c| c.is_ascii_uppercase()),
        v.chars().any(|c| c.is_ascii_digit()),
        v.chars().any(|c| !c.is_ascii_alphanumeric()),
    ];
    classes.iter().filter(|x| **x).count() >= 3
        || (v.len() >= 32 && v.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The query string with the values of sensitive-looking parameters, and
/// secret-looking values, replaced by `placeholder`.
fn redact_query(q: &str, placeholder: &str, redacted: &mut bool) -> String {
    let mut out = Vec::new();
    for pair in q.split('&') {
        match pair.split_once('=') {
            Some((k, v)) if !v.is_empty() && (sensitive_name(k) || secret_looking(v)) => {
                *redacted = true;
                out.push(format!("{k}={placeholder}"));
            }
            _ if secret_looking(pair) => {
                *redacted = true;
                out.push(placeholder.to_owned());
            }
            _ => out.push(pair.to_owned()),
        }
    }
    out.join("&")
}

/// The shape of `v`: keys kept, strings and numbers replaced, bounded.
fn shape(v: &Value, depth: usize, budget: &mut usize, redacted: &mut bool) -> Value {
    if *budget == 0 || depth > MAX_ARGUMENT_DEPTH {
        *redacted = true;
        return Value::Null;
    }
    *budget -= 1;
    match v {
        Value::Null | Value::Bool(_) => v.clone(),
        Value::Number(_) => {
            *redacted = true;
            Value::from(0)
        }
        Value::String(_) => {
            *redacted = true;
            Value::String(REDACTED.to_owned())
        }
        Value::Array(a) => {
            let mut out = Vec::new();
            for x in a {
                if *budget == 0 {
                    *redacted = true;
                    break;
                }
                out.push(shape(x, depth + 1, budget, redacted));
            }
            Value::Array(out)
        }
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, x) in o {
                if *budget == 0 {
                    *redacted = true;
                    break;
                }
                let k = cut(k, 128, redacted);
                let x = shape(x, depth + 1, budget, redacted);
                m.insert(k, x);
            }
            Value::Object(m)
        }
    }
}

impl CallRequest<'_> {
    /// What the audit chain keeps of this request (see [`RecordedRequest`]).
    pub fn record(&self) -> RecordedRequest {
        let mut was_cut = false;
        let text = |s: &str, r: &mut bool| cut(s, MAX_RECORDED_TEXT, r);
        let method = text(self.method, &mut was_cut);
        let path = text(self.path, &mut was_cut);
        let mcp_method = self.mcp_method.map(|s| text(s, &mut was_cut));
        let mcp_tool = self.mcp_tool.map(|s| text(s, &mut was_cut));
        let mcp_resource = self.mcp_resource.map(|s| text(s, &mut was_cut));
        let mcp_prompt = self.mcp_prompt.map(|s| text(s, &mut was_cut));
        let mut query_redacted = false;
        let query = redact_query(self.query, REDACTED, &mut query_redacted);
        let query = cut(&query, MAX_RECORDED_QUERY, &mut query_redacted);
        let mut arguments_redacted = false;
        let arguments = self.arguments.map(|a| {
            let mut budget = MAX_ARGUMENT_NODES;
            match serde_json::from_str::<Value>(a) {
                Ok(v) => {
                    let shaped = shape(&v, 0, &mut budget, &mut arguments_redacted);
                    // Kept whole only if the text policy saw is this one.
                    if !arguments_redacted
                        && serde_json::to_string(&shaped).ok().as_deref() != Some(a)
                    {
                        arguments_redacted = true;
                    }
                    shaped
                }
                Err(_) => {
                    arguments_redacted = true;
                    Value::String(REDACTED.to_owned())
                }
            }
        });
        RecordedRequest {
            method,
            path,
            query,
            mcp_method,
            mcp_tool,
            mcp_resource,
            mcp_prompt,
            arguments,
            query_redacted,
            arguments_redacted,
            cut: was_cut,
        }
    }
}

impl RecordedRequest {
    /// The arguments as policy would see them, when the record holds them
    /// whole (the text to hand [`RecordedRequest::request`]).
    pub fn arguments_text(&self) -> Option<String> {
        self.arguments.as_ref().map(Value::to_string)
    }

    /// The request policy sees, `arguments` from
    /// [`RecordedRequest::arguments_text`].
    pub fn request<'a>(&'a self, arguments: Option<&'a str>) -> CallRequest<'a> {
        CallRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            mcp_method: self.mcp_method.as_deref(),
            mcp_tool: self.mcp_tool.as_deref(),
            mcp_resource: self.mcp_resource.as_deref(),
            mcp_prompt: self.mcp_prompt.as_deref(),
            arguments,
        }
    }

    /// Whether `set` decides on this record exactly as on the request it
    /// was made of: it reads no part the record redacted or cut.
    pub fn replayable_by(&self, set: &PolicySet) -> bool {
        let reads = set.reads_request();
        let redacted_read =
            (self.query_redacted && reads.query) || (self.arguments_redacted && reads.arguments);
        !self.cut && !redacted_read
    }
}

/// Walks a policy's JSON form: whether it reads the value of
/// `context.request.query` or `.arguments` (a `has` test reads only
/// whether it is there, which a record keeps). Any other use of
/// `context.request` as a whole counts as reading both.
fn walk(v: &Value, under_access: bool, out: &mut RequestReads) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                // The body of an access, and the left side of that body
                // (what is accessed), are under an access.
                let access = k == "." || k == "has" || (under_access && k == "left");
                if k == "." {
                    match x.get("attr").and_then(Value::as_str) {
                        Some("query") => out.query = true,
                        Some("arguments") => out.arguments = true,
                        Some("request") if !under_access => {
                            out.query = true;
                            out.arguments = true;
                        }
                        _ => {}
                    }
                }
                walk(x, access, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                walk(x, false, out);
            }
        }
        _ => {}
    }
}

impl PolicySet {
    /// Which parts of `context.request` the set's policies read.
    pub fn reads_request(&self) -> RequestReads {
        let mut out = RequestReads::default();
        for p in self.policies.policies() {
            match p.to_json() {
                Ok(j) => walk(&j, false, &mut out),
                Err(_) => {
                    return RequestReads {
                        query: true,
                        arguments: true,
                    };
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn req<'a>(query: &'a str, arguments: Option<&'a str>) -> CallRequest<'a> {
        CallRequest {
            method: "POST",
            path: "/mcp",
            query,
            mcp_method: Some("tools/call"),
            mcp_tool: Some("echo"),
            arguments,
            ..CallRequest::default()
        }
    }

    #[test]
    fn a_plain_query_is_kept_and_replays_exactly() {
        let r = req("page=2&sort=name", None).record();
        assert_eq!(r.query, "page=2&sort=name");
        assert!(!r.query_redacted && !r.arguments_redacted);
    }

    #[test]
    fn recorded_query_never_holds_a_secret_value() {
        let r = req(
            "page=2&access_token=abc123&api_key=k&x=AKIAIOSFODNN7EXAMPLEx9/Zz",
            None,
        )
        .record();
        assert!(!r.query.contains("abc123"), "{}", r.query);
        assert!(!r.query.contains("AKIA"), "{}", r.query);
        assert!(r.query.contains("page=2"));
        assert!(r.query.contains("access_token=[redacted]"));
        assert!(r.query.contains("api_key=[redacted]"));
        assert!(r.query_redacted && !r.arguments_redacted);
    }

    #[test]
    fn recorded_arguments_keep_keys_and_booleans_never_values() {
        let r = req(
            "",
            Some(r#"{"path":"/etc/secret","force":true,"n":42,"opts":{"deep":[1,"x"]}}"#),
        )
        .record();
        let a = r.arguments.clone().unwrap();
        let text = a.to_string();
        assert!(
            !text.contains("/etc/secret") && !text.contains("42"),
            "{text}"
        );
        assert_eq!(a["force"], Value::Bool(true));
        assert_eq!(a["path"], Value::String(REDACTED.into()));
        assert!(a["opts"]["deep"].is_array());
        assert!(r.arguments_redacted && !r.query_redacted);
        // Booleans and keys only: kept whole, policy sees the same text.
        let r = req("", Some(r#"{"force":true}"#)).record();
        assert!(!r.arguments_redacted);
        assert_eq!(r.arguments_text().as_deref(), Some(r#"{"force":true}"#));
    }

    #[test]
    fn recorded_arguments_are_bounded() {
        let big: Map<String, Value> = (0..10_000)
            .map(|i| (format!("k{i}"), Value::Bool(true)))
            .collect();
        let text = Value::Object(big).to_string();
        let r = req("", Some(&text)).record();
        assert!(r.arguments.unwrap().as_object().unwrap().len() <= MAX_ARGUMENT_NODES);
        assert!(r.arguments_redacted);
        let long = "a=".to_owned() + &"b".repeat(5000);
        let r = req(&long, None).record();
        assert!(r.query.len() <= MAX_RECORDED_QUERY + 4);
    }

    fn set(text: &str) -> PolicySet {
        PolicySet::compile(vec![crate::PolicySource {
            name: "p.cedar".into(),
            text: text.into(),
        }])
        .unwrap()
    }

    #[test]
    fn a_set_that_reads_a_redacted_part_does_not_replay_it() {
        let plain = set(
            "permit (principal, action == Action::\"CallTool\", resource) when { context.request has arguments && context.request.path == \"/x\" };",
        );
        assert_eq!(plain.reads_request(), RequestReads::default());
        let q = set(
            "forbid (principal, action == Action::\"CallTool\", resource) when { context.request.query like \"*debug*\" };",
        );
        assert_eq!(
            q.reads_request(),
            RequestReads {
                query: true,
                arguments: false
            }
        );
        let a = set(
            "forbid (principal, action == Action::\"CallTool\", resource) when { context.request has arguments && context.request.arguments like \"*x*\" };",
        );
        assert_eq!(
            a.reads_request(),
            RequestReads {
                query: false,
                arguments: true
            }
        );
        let rec = req("api_key=k1", Some(r#"{"force":true}"#)).record();
        assert!(rec.replayable_by(&plain));
        assert!(!rec.replayable_by(&q));
        assert!(rec.replayable_by(&a));
        let rec = req("page=1", Some(r#"{"p":"/etc"}"#)).record();
        assert!(rec.replayable_by(&q));
        assert!(!rec.replayable_by(&a));
    }
}
