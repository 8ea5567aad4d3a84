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

#[tokio::test]
async fn a_held_gateway_call_is_not_forwarded_until_approved_then_passes_once() {
    let (b, _dir) = broker();
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
        },
    )
    .await;
    let gw = observer(&b).await;
    let (task, tok) = tool_token(&b, "crm", &["read", "write"]).await;

    assert_eq!(call(&b, "GET", "/crm/customers/1", &tok).await.0, 200);
    assert_eq!(up.requests().len(), 1);

    // The PUT is held: 403 naming the approval, nothing forwarded; asking
    // again finds the same pending approval.
    let (status, problem) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 403, "{problem}");
    let first = approval_of(&problem);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("held for approval"),
        "{problem}"
    );
    assert_eq!(problem["determining_policies"], json!(["puts-once"]));
    let (status, again) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 403);
    assert_eq!(
        approval_of(&again),
        first,
        "the same call, the same approval"
    );
    assert_eq!(up.requests().len(), 1, "a held call reaches nobody");

    // Approvers see the call.
    let listed = pending_approvals(&b).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let a = &listed[0];
    assert_eq!(a["approval_id"], first.as_str());
    assert_eq!(a["task_id"], task.as_str());
    assert_eq!(a["call"]["tool"], "crm");
    assert_eq!(a["call"]["agent"], "demo-agent");
    assert_eq!(a["call"]["method"], "PUT");
    assert_eq!(a["call"]["path"], "/customers/1");
    assert_eq!(a["call"]["window_secs"], 0);
    let cli = json(&b.cli(&["approval", "list"]));
    assert_eq!(cli[0]["call"]["path"], "/customers/1", "{cli}");

    // AuthZEN, asked about the same request, holds it on the same approval.
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &http_question(&task, "PUT", "/customers/1"),
    )
    .await;
    assert_eq!(d["decision"], false, "{d}");
    assert_eq!(d["context"]["reason"], "approval_required");
    assert_eq!(d["context"]["approval_id"], first.as_str());
    assert_eq!(pending_approvals(&b).await.len(), 1, "no second approval");

    // Approved: the same call passes, once.
    let out = b.cli(&["approval", "approve", &first, "--reason", "ticket CHG-7"]);
    assert!(out.status.success(), "{out:?}");
    // Asking AuthZEN about the approved call, without saying it enforces
    // the answer, sees the approval and does not use it up.
    for _ in 0..2 {
        let d = post(
            &b,
            "/access/v1/evaluation",
            ADMIN,
            &http_question(&task, "PUT", "/customers/1"),
        )
        .await;
        assert_eq!(d["decision"], true, "{d}");
        assert_eq!(d["context"]["approval_id"], first.as_str());
    }
    let (status, body) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 200, "{body}");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        ("PUT", "/customers/1")
    );

    // Used up: the identical call is held again, on a new approval, which
    // AuthZEN names too.
    let (status, problem) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 403, "{problem}");
    let second = approval_of(&problem);
    assert_ne!(second, first, "a once-only approval is not reused");
    assert_eq!(up.requests().len(), 2);
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &http_question(&task, "PUT", "/customers/1"),
    )
    .await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["approval_id"], second.as_str());

    // A different call is a different approval; denied, it stays refused,
    // at the gateway and in AuthZEN.
    let (status, problem) = call(&b, "PUT", "/crm/customers/2", &tok).await;
    assert_eq!(status, 403);
    let other = approval_of(&problem);
    assert_ne!(other, second);
    let denied = post(
        &b,
        &format!("/v1/approvals/{other}/deny"),
        ADMIN,
        &json!({"reason": "not during the freeze"}),
    )
    .await;
    assert_eq!(denied["status"], "denied");
    for _ in 0..2 {
        let (status, problem) = call(&b, "PUT", "/crm/customers/2", &tok).await;
        assert_eq!(status, 403);
        assert_eq!(approval_of(&problem), other, "a denial is not re-asked");
        assert!(
            problem["detail"].as_str().unwrap().contains("denied"),
            "{problem}"
        );
    }
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &http_question(&task, "PUT", "/customers/2"),
    )
    .await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["reason"], "approval_denied");
    assert_eq!(d["context"]["approval_id"], other.as_str());
    assert!(
        up.requests().iter().all(|(_, p, _)| p != "/customers/2"),
        "a denied call never reached the upstream"
    );

    // None of the held calls counted against the agent; a refusal does,
    // once the gateway has delivered it.
    let admin = b.admin();
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin
                .audit(0, 10_000)
                .await
                .unwrap()
                .records
                .iter()
                .filter(|r| r.event.contains("\"held\":true"))
                .count()
                >= 6
        })
        .await,
        "the held calls were not delivered"
    );
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 0);
    assert_eq!(call(&b, "DELETE", "/crm/customers/1", &tok).await.0, 403);
    assert!(
        eventually(Duration::from_secs(10), || async {
            count_of(&counts(&b.addr, &gw).await, "demo-agent") == 1
        })
        .await,
        "a refused gateway call was not counted once delivered"
    );
}

#[tokio::test]
async fn a_call_that_cannot_be_held_is_refused_but_not_counted() {
    let (b, _dir) = broker();
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
        },
    )
    .await;
    let gw = observer(&b).await;
    let (_task, tok) = tool_token(&b, "crm", &["read", "write"]).await;
    let limit = 16;
    for n in 0..limit {
        let (status, problem) = call(&b, "PUT", &format!("/crm/customers/{n}"), &tok).await;
        assert_eq!(status, 403, "{problem}");
        approval_of(&problem);
    }
    // One more distinct call: the task already has as many calls waiting
    // as it may, so this one cannot be held. It is refused, names no
    // approval, and, held or not, is not misbehaviour.
    let (status, problem) = call(&b, "PUT", "/crm/customers/overflow", &tok).await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem.get("approval_id").is_none(), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be asked for now"),
        "{problem}"
    );
    assert_eq!(pending_approvals(&b).await.len(), limit);
    assert!(up.requests().is_empty(), "nothing was forwarded");
    delivered(&b.gateway).await;
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 0);
}

#[tokio::test]
async fn an_approval_window_lets_the_same_call_through_repeatedly() {
    let (b, _dir) = broker();
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
        },
    )
    .await;
    let (task, tok) = tool_token(&b, "crm", &["read", "write"]).await;

    let (status, problem) = call(&b, "PUT", "/crm/windowed/1?force=1", &tok).await;
    assert_eq!(status, 403);
    let id = approval_of(&problem);
    let listed = pending_approvals(&b).await;
    assert_eq!(listed[0]["call"]["window_secs"], 300);
    assert_eq!(listed[0]["call"]["query"], "force=1");
    b.admin()
        .decide_approval(&id.parse().unwrap(), true, "for the migration")
        .await
        .unwrap();

    // Within the window AuthZEN says yes (and asking uses nothing up)...
    let mut q = http_question(&task, "PUT", "/windowed/1");
    q["context"]["request"]["query"] = json!("force=1");
    for _ in 0..2 {
        let d = post(&b, "/access/v1/evaluation", ADMIN, &q).await;
        assert_eq!(d["decision"], true, "{d}");
        assert_eq!(d["context"]["approval_id"], id.as_str());
    }
    // ...and the gateway lets the same call through, again and again.
    for _ in 0..3 {
        assert_eq!(
            call(&b, "PUT", "/crm/windowed/1?force=1", &tok).await.0,
            200
        );
    }
    assert_eq!(up.requests().len(), 3);
    // Another query is another call.
    let (status, problem) = call(&b, "PUT", "/crm/windowed/1?force=2", &tok).await;
    assert_eq!(status, 403);
    assert_ne!(approval_of(&problem), id);
    assert_eq!(up.requests().len(), 3);

    // A window ends: the call needs a new approval.
    let (_, problem) = call(&b, "PUT", "/crm/brief/1", &tok).await;
    let brief = approval_of(&problem);
    b.admin()
        .decide_approval(&brief.parse().unwrap(), true, "two seconds")
        .await
        .unwrap();
    assert_eq!(call(&b, "PUT", "/crm/brief/1", &tok).await.0, 200);
    assert_eq!(call(&b, "PUT", "/crm/brief/1", &tok).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, problem) = call(&b, "PUT", "/crm/brief/1", &tok).await;
    assert_eq!(status, 403, "{problem}");
    assert_ne!(approval_of(&problem), brief, "past its window");
    assert_eq!(up.requests().len(), 5);
}

#[tokio::test]
async fn a_held_mcp_tool_call_is_a_json_rpc_error_naming_the_approval() {
    let (b, _dir) = broker();
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "deployer",
        &["deploy", "status"],
        Upstream::Mcp {
            url,
            require_secret: false,
        },
    )
    .await;
    let (task, tok) = tool_token(&b, "deployer", &["deploy", "status"]).await;
    let rpc = |id: u64, tool: &str, args: Value| {
        let tok = tok.clone();
        let url = format!("{}/deployer", b.gateway);
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}
        });
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(tok)
                .header("accept", "application/json, text/event-stream")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };

    let ok = rpc(1, "status", json!({})).await;
    assert!(ok["result"].is_object(), "{ok}");
    assert_eq!(up.requests().len(), 1);

    let held = rpc(2, "deploy", json!({"env": "prod"})).await;
    assert_eq!(held["id"], 2);
    assert_eq!(held["error"]["code"], -32001, "{held}");
    let data = &held["error"]["data"];
    assert_eq!(data["approval_status"], "pending");
    let id = data["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(data["determining_policies"], json!(["mcp-deploys"]));
    assert_eq!(up.requests().len(), 1, "the held call was not forwarded");

    let listed = pending_approvals(&b).await;
    assert_eq!(listed.len(), 1);
    let c = &listed[0]["call"];
    assert_eq!(c["tool"], "deployer");
    assert_eq!(c["mcp_method"], "tools/call");
    assert_eq!(c["mcp_tool"], "deploy");
    assert_eq!(c["arguments"], r#"{"env":"prod"}"#);
    // As for plain HTTP, policy sees the path below the tool's prefix.
    assert_eq!(c["path"], "/", "{c}");

    // AuthZEN, given the same facts, names the same approval.
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &json!({
            "subject": {"type": "agent", "id": "demo-agent"},
            "action": {"name": "CallTool"},
            "resource": {"type": "tool", "id": "deployer", "properties": {"scopes": ["deploy"]}},
            "context": {"task": task, "request": {
                "method": c["method"], "path": c["path"], "mcp_method": "tools/call",
                "mcp_tool": "deploy", "arguments": {"env": "prod"}}}
        }),
    )
    .await;
    assert_eq!(d["decision"], false, "{d}");
    assert_eq!(d["context"]["reason"], "approval_required");
    assert_eq!(d["context"]["approval_id"], id.as_str());

    // Other arguments: another approval.
    let staging = rpc(3, "deploy", json!({"env": "staging"})).await;
    assert_ne!(staging["error"]["data"]["approval_id"], id.as_str());

    b.admin()
        .decide_approval(&id.parse().unwrap(), true, "release 4.2")
        .await
        .unwrap();
    let done = rpc(4, "deploy", json!({"env": "prod"})).await;
    assert_eq!(done["id"], 4);
    assert!(done["result"].is_object(), "{done}");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].2.contains("\"deploy\""), "{:?}", seen[1]);
    // Once only.
    let again = rpc(5, "deploy", json!({"env": "prod"})).await;
    assert_eq!(again["error"]["code"], -32001);
    assert_ne!(again["error"]["data"]["approval_id"], id.as_str());
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn an_undecided_call_approval_expires_and_keeps_refusing() {
    let (b, _dir) = broker_with(&["--approval-ttl", "1"]);
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
        },
    )
    .await;
    let (task, tok) = tool_token(&b, "crm", &["read", "write"]).await;
    let (status, problem) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 403);
    let id = approval_of(&problem);
    let admin = b.admin();
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.approvals(true).await.unwrap()[0].status
                == writ_core::api::ApprovalStatus::Expired
        })
        .await,
        "the approval never expired"
    );
    let e = admin
        .decide_approval(&id.parse().unwrap(), true, "too late")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409));
    for _ in 0..2 {
        let (status, problem) = call(&b, "PUT", "/crm/customers/1", &tok).await;
        assert_eq!(status, 403);
        assert_eq!(
            approval_of(&problem),
            id,
            "an expired approval is not re-asked"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("expired undecided"),
            "{problem}"
        );
    }
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &http_question(&task, "PUT", "/customers/1"),
    )
    .await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["reason"], "approval_expired");
    assert_eq!(d["context"]["approval_id"], id.as_str());
    assert!(up.requests().is_empty(), "nothing was forwarded");
    assert_eq!(admin.approvals(true).await.unwrap().len(), 1);
}

/// An enforcement point that enforces AuthZEN's `approval_required` (say,
/// while its agent polls until a person decides) is not charged a refusal
/// for it, as the gateway holding the same call is not.
#[tokio::test]
async fn an_enforced_hold_in_authzen_does_not_count_against_the_agent() {
    let (b, _dir) = broker();
    let gw = observer(&b).await;
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
        },
    )
    .await;
    let (task, _tok) = tool_token(&b, "crm", &["read", "write"]).await;
    let mut q = http_question(&task, "PUT", "/customers/1");
    q["context"]["enforced"] = json!(true);
    for _ in 0..3 {
        let d = post(&b, "/access/v1/evaluation", &gw, &q).await;
        assert_eq!(d["context"]["reason"], "approval_required");
    }
    assert_eq!(
        count_of(&counts(&b.addr, &gw).await, "demo-agent"),
        0,
        "a held call is not misbehaviour, whichever enforcement point holds it"
    );
}

#[tokio::test]
async fn a_refused_delegation_counts_against_the_planner_not_the_sub_agent() {
    let (b, _dir) = broker();
    let gw = observer(&b).await;
    b.agent("helper", &[]).await;
    let planner = b.attest("demo-agent").await.access_token;
    let helper = b.attest("helper").await.access_token;
    let root = b
        .start_task(&planner, &["tickets:read,write"])
        .await
        .unwrap();
    for _ in 0..3 {
        let e = b
            .anon()
            .exchange(
                &root.access_token,
                Some(&helper),
                None,
                Some("tickets:write"),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("access_denied"), "{e}");
    }
    let c = counts(&b.addr, &gw).await;
    assert_eq!(count_of(&c, "demo-agent"), 3, "{c:?}");
    assert_eq!(count_of(&c, "helper"), 0, "{c:?}");
    // An allowed delegation moves nothing.
    b.anon()
        .exchange(
            &root.access_token,
            Some(&helper),
            None,
            Some("tickets:read"),
        )
        .await
        .unwrap();
    // The helper's own refused request is the helper's.
    assert!(b.start_task(&helper, &["tickets:delete"]).await.is_err());
    let c = counts(&b.addr, &gw).await;
    assert_eq!(count_of(&c, "demo-agent"), 3, "{c:?}");
    assert_eq!(count_of(&c, "helper"), 1, "{c:?}");
}

#[tokio::test]
async fn an_authzen_batch_moves_nobody_unless_enforced() {
    let (b, _dir) = broker();
    let gw = observer(&b).await;
    let batch = |enforced: bool| {
        json!({
            "subject": {"type": "agent", "id": "demo-agent"},
            "action": {"name": "StartTask"},
            "context": {"intent": "clean up", "enforced": enforced},
            "evaluations": [
                {"resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["delete"]}}},
                {"resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read"]}}},
                {"resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read", "delete"]}}},
            ]
        })
    };
    let decisions = |r: &Value| -> Vec<bool> {
        r["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"].as_bool().unwrap())
            .collect()
    };
    let r = post(&b, "/access/v1/evaluations", ADMIN, &batch(false)).await;
    assert_eq!(decisions(&r), [false, true, false]);
    let r = post(&b, "/access/v1/evaluations", &gw, &batch(false)).await;
    assert_eq!(decisions(&r), [false, true, false]);
    assert_eq!(
        count_of(&counts(&b.addr, &gw).await, "demo-agent"),
        0,
        "questions count against nobody"
    );

    let r = post(&b, "/access/v1/evaluations", &gw, &batch(true)).await;
    assert_eq!(decisions(&r), [false, true, false]);
    assert_eq!(
        count_of(&counts(&b.addr, &gw).await, "demo-agent"),
        2,
        "each enforced refusal counts once; the allow does not"
    );
    let mut one = batch(true);
    one["resource"] = one["evaluations"][0]["resource"].clone();
    one.as_object_mut().unwrap().remove("evaluations");
    let d = post(&b, "/access/v1/evaluation", ADMIN, &one).await;
    assert_eq!(d["decision"], false);
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 3);
}

#[tokio::test]
async fn release_clears_the_count() {
    let (b, _dir) = broker();
    let gw = observer(&b).await;
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
        },
    )
    .await;
    let (_task, tok) = tool_token(&b, "crm", &["read"]).await;
    let inst = b.attest("demo-agent").await.access_token;
    for _ in 0..10 {
        assert_eq!(
            b.start_task(&inst, &["tickets:delete"])
                .await
                .unwrap_err()
                .status(),
            Some(403)
        );
    }
    let writ_client::ClientError::Api(p) =
        b.start_task(&inst, &["tickets:read"]).await.unwrap_err()
    else {
        panic!("not a policy denial")
    };
    assert_eq!(p.determining_policies, ["stop-after-many-denials"]);
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 11);
    // The gateway sees the count through its bundle and stops the agent too.
    assert!(
        eventually(Duration::from_secs(5), || {
            let (b, tok) = (&b, tok.clone());
            async move { call(b, "GET", "/crm/customers", &tok).await.0 == 403 }
        })
        .await,
        "the gateway never saw the count"
    );
    // (Until its next bundle refresh, it still let calls through.)
    let forwarded = up.requests().len();
    let (_, problem) = call(&b, "GET", "/crm/customers", &tok).await;
    assert_eq!(
        problem["determining_policies"],
        json!(["stop-after-many-denials"])
    );
    assert_eq!(up.requests().len(), forwarded);

    // Refusals count when the gateway delivers them: let it, then release.
    delivered(&b.gateway).await;
    let out = b.cli(&["agent", "quarantine", "demo-agent"]);
    assert!(out.status.success(), "{out:?}");
    let out = b.cli(&["agent", "release", "demo-agent"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 0);
    let inst = b.attest("demo-agent").await.access_token;
    b.start_task(&inst, &["tickets:read"]).await.unwrap();
    let (_task, tok) = tool_token(&b, "crm", &["read"]).await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let (b, tok) = (&b, tok.clone());
            async move { call(b, "GET", "/crm/customers", &tok).await.0 == 200 }
        })
        .await,
        "the gateway still stops a released agent"
    );
}
