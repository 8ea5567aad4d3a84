//! One answer everywhere: a call a permit holds for a person is held at the
//! gateway (HTTP and MCP) and in AuthZEN on the same approval, passes once
//! (or for its window) once approved, and stays refused once denied; and
//! refusals are counted against whoever asked, once, in the store, where
//! every enforcement point sees the same count.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use writ_core::api::{RegisterTool, Upstream};

use crate::harness::{ADMIN, Broker, Opts, eventually, json};

const POLICIES: &str = r#"
@id("start") permit (principal, action == Action::"StartTask", resource);
@id("exchange") permit (principal, action == Action::"ExchangeToken", resource);
@id("delegate-reads")
permit (principal, action == Action::"DelegateTask", resource)
when { ["read"].containsAll(context.scopes) };

@id("http-reads")
permit (principal, action == Action::"CallTool", resource)
when { !(context.request has mcp_method) && context.request.method == "GET" };

@id("puts-once")
@approval("required")
permit (principal, action == Action::"CallTool", resource)
when {
  !(context.request has mcp_method) && context.request.method == "PUT" &&
  !(context.request.path like "/windowed/*") && !(context.request.path like "/brief/*")
};

@id("puts-windowed")
@approval("required")
@approval_window("300")
permit (principal, action == Action::"CallTool", resource)
when { context.request.method == "PUT" && context.request.path like "/windowed/*" };

@id("puts-brief")
@approval("required")
@approval_window("2")
permit (principal, action == Action::"CallTool", resource)
when { context.request.method == "PUT" && context.request.path like "/brief/*" };

@id("mcp-status")
permit (principal, action == Action::"CallTool", resource)
when { context.request has mcp_tool && context.request.mcp_tool == "status" };

@id("mcp-deploys")
@approval("required")
permit (principal, action == Action::"CallTool", resource)
when { context.request has mcp_tool && context.request.mcp_tool == "deploy" };

@id("no-deletes")
forbid (principal, action, resource)
when { context.scopes.contains("delete") };

@id("stop-after-many-denials")
forbid (principal, action, resource)
when { context.behaviour.denials_5m >= 10 };
"#;

fn broker() -> (Broker, tempfile::TempDir) {
    broker_with(&[])
}

fn broker_with(extra: &[&str]) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), POLICIES).unwrap();
    let mut opts = Opts {
        dev: true,
        policy_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    opts.extra.extend(extra.iter().map(|s| (*s).to_owned()));
    let b = Broker::start_with(opts);
    (b, dir)
}

/// What an upstream received: method, path (with query), body.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// An upstream that records every request and answers 200 with JSON; a
/// JSON-RPC request is answered with a result for its id (enough of an MCP
/// server for `tools/call`).
pub(crate) struct Recorder {
    pub url: String,
    seen: Seen,
}

impl Recorder {
    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

pub(crate) async fn recorder() -> Recorder {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got: Vec<u8> = Vec::new();
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    got.extend_from_slice(&buf[..n]);
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).into_owned();
                        let len: usize = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() < end + 4 + len {
                            break;
                        }
                        let body =
                            String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
                        got.drain(..end + 4 + len);
                        let mut first = head.lines().next().unwrap_or_default().split(' ');
                        let method = first.next().unwrap_or_default().to_owned();
                        let path = first.next().unwrap_or_default().to_owned();
                        let answer = match serde_json::from_str::<Value>(&body) {
                            // Listings name one item policy lets through and one it keeps back.
                            Ok(v) if v["method"] == "resources/list" => json!({
                                "jsonrpc": "2.0",
                                "id": v["id"],
                                "result": {"resources": [
                                    {"uri": "demo://runbook", "name": "runbook"},
                                    {"uri": "file:///etc/passwd", "name": "passwd"}
                                ]}
                            }),
                            Ok(v) if v.get("jsonrpc").is_some() => json!({
                                "jsonrpc": "2.0",
                                "id": v["id"],
                                "result": {"content": [{"type": "text", "text": "done"}]}
                            }),
                            _ => json!({"ok": true}),
                        }
                        .to_string();
                        sink.lock().unwrap().push((method, path, body));
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                    }
                }
            });
        }
    });
    Recorder { url, seen }
}

pub(crate) async fn register_tool(b: &Broker, name: &str, scopes: &[&str], upstream: Upstream) {
    b.admin()
        .register_tool(&RegisterTool {
            name: name.parse().unwrap(),
            audience: format!("https://{name}.example"),
            scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
            attributes: Default::default(),
            upstream: Some(upstream),
            gateway: None,
        })
        .await
        .unwrap();
    let url = format!("{}/.well-known/oauth-protected-resource/{name}", b.gateway);
    assert!(
        eventually(Duration::from_secs(10), || async {
            reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the gateway never saw tool {name}"
    );
}

/// The demo agent's task on `tool` with `scopes`, and a tool token for all
/// of them.
pub(crate) async fn tool_token(
    b: &Broker,
    tool: &str,
    scopes: &[&str],
) -> (writ_core::TaskId, String) {
    let inst = b.attest("demo-agent").await.access_token;
    let t = b
        .start_task(&inst, &[&format!("{tool}:{}", scopes.join(","))])
        .await
        .unwrap();
    let tok = b
        .anon()
        .exchange(&t.access_token, None, Some(tool), Some(&scopes.join(" ")))
        .await
        .unwrap()
        .access_token;
    (t.task_id, tok)
}

/// A call through the gateway: status and body (JSON, or Null).
pub(crate) async fn call(b: &Broker, method: &str, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", b.gateway))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 403 {
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "a refusal is a problem document"
        );
    }
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(b: &Broker, path: &str, token: &str, body: &Value) -> Value {
    let r = b
        .http()
        .post(b.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// AuthZEN for a plain HTTP call on `crm` under `task`.
fn http_question(task: &writ_core::TaskId, method: &str, path: &str) -> Value {
    json!({
        "subject": {"type": "agent", "id": "demo-agent"},
        "action": {"name": "CallTool"},
        "resource": {"type": "tool", "id": "crm", "properties": {"scopes": ["read", "write"]}},
        "context": {"task": task, "request": {"method": method, "path": path}}
    })
}

async fn pending_approvals(b: &Broker) -> Vec<Value> {
    let r: Value = b
        .http()
        .get(b.url("/v1/approvals"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r.as_array().unwrap().clone()
}

fn approval_of(problem: &Value) -> String {
    problem["approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no approval_id in {problem}"))
        .to_owned()
}

/// A gateway credential that only observes (reads the bundle).
async fn observer(b: &Broker) -> String {
    b.admin().register_gateway("observer").await.unwrap().token
}

/// Each agent's refusal count as gateways see it (`behaviour` in the bundle).
pub(crate) async fn counts(addr: &str, gateway_token: &str) -> BTreeMap<String, u64> {
    let r = reqwest::Client::new()
        .get(format!("{addr}/v1/gateway/bundle"))
        .bearer_auth(gateway_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bundle: Value = r.json().await.unwrap();
    bundle["behaviour"]
        .as_object()
        .unwrap_or_else(|| panic!("no behaviour in the bundle"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// Waits until the gateway at `url` has delivered every decision it made
/// (its refusals count only once the broker has them).
pub(crate) async fn delivered(url: &str) {
    let health = format!("{url}/healthz");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let h: Value = reqwest::get(&health).await.unwrap().json().await.unwrap();
            h["pending_decisions"] == 0
        })
        .await,
        "the gateway at {url} did not deliver its decisions"
    );
}

pub(crate) fn count_of(counts: &BTreeMap<String, u64>, agent: &str) -> u64 {
    counts.get(agent).copied().unwrap_or(0)
}

mod counts;
mod held;
mod mcp_methods;
