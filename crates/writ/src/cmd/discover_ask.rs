//! `writ discover --plan --ask-servers`: asks each MCP server the plan
//! moves for its tools (`initialize`, then `tools/list`, every page), so
//! the plan registers the tool with its real MCP tool names as scopes. A
//! stdio server is started as its client config says (command, args, env)
//! and stopped after; an HTTP server is sent the config's headers. Each
//! answer has [`ASK_TIMEOUT`]; a server that does not answer leaves the
//! placeholder in the plan, with why.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};
use sse_stream::SseByteStream;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// How long one server has to answer everything.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(20);
/// The MCP version asked for (the server may answer with another).
const PROTOCOL_VERSION: &str = "2025-06-18";
/// Most `tools/list` pages read.
const MAX_PAGES: u64 = 20;

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "writ-discover", "version": env!("CARGO_PKG_VERSION")}
    }})
}

fn list(id: u64, cursor: Option<&str>) -> Value {
    match cursor {
        Some(c) => {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {"cursor": c}})
        }
        None => json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}),
    }
}

/// The result of answer `v`, or the server's error.
fn result(v: Value) -> Result<Value, String> {
    if let Some(e) = v.get("error") {
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("?");
        return Err(format!("the server answered with an error: {msg}"));
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| "the server's answer has no result".to_owned())
}

/// The tool names of one `tools/list` page, and the next page's cursor.
fn page(r: &Value) -> (Vec<String>, Option<String>) {
    let names = r
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let next = r
        .get("nextCursor")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (names, next)
}

/// The MCP tools the server configured as `cfg` offers.
pub async fn tools_of(cfg: &Value) -> Result<Vec<String>, String> {
    let ask = async {
        if let Some(url) = cfg.get("url").and_then(Value::as_str) {
            http(url, cfg.get("headers")).await
        } else if let Some(cmd) = cfg.get("command").and_then(Value::as_str) {
            stdio(cmd, cfg.get("args"), cfg.get("env")).await
        } else {
            Err("the config names neither a url nor a command".to_owned())
        }
    };
    tokio::time::timeout(ASK_TIMEOUT, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", ASK_TIMEOUT.as_secs())))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn pairs(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
        .collect()
}

/// A stdio server: started with its config's env added to this one's (as
/// the MCP client would), asked, and killed.
async fn stdio(
    cmd: &str,
    args: Option<&Value>,
    env: Option<&Value>,
) -> Result<Vec<String>, String> {
    let mut child = tokio::process::Command::new(cmd)
        .args(strings(args))
        .envs(pairs(env))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {cmd}: {e}"))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the server's stdio is not there".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut send = async |v: Value| {
        let mut line = v.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("the server stopped reading: {e}"))
    };
    // Reads until the answer to `id` (skipping the server's notifications
    // and requests).
    async fn answer(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        id: u64,
    ) -> Result<Value, String> {
        loop {
            let line = lines
                .next_line()
                .await
                .map_err(|e| format!("reading the server: {e}"))?
                .ok_or("the server exited before answering")?;
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v.get("id").and_then(Value::as_u64) == Some(id) && v.get("method").is_none() {
                return result(v);
            }
        }
    }
    send(initialize()).await?;
    answer(&mut lines, 1).await?;
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for id in 2..2 + MAX_PAGES {
        send(list(id, cursor.as_deref())).await?;
        let (more, next) = page(&answer(&mut lines, id).await?);
        names.extend(more);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let _ = child.kill().await;
    Ok(names)
}

/// A streamable HTTP server: POSTs with the config's headers, the session
/// the server gives, and the version it negotiated.
async fn http(url: &str, headers: Option<&Value>) -> Result<Vec<String>, String> {
    let client = reqwest::Client::builder()
        .timeout(ASK_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut extra = pairs(headers);
    let post = async |client: &reqwest::Client,
                      extra: &BTreeMap<String, String>,
                      body: &Value,
                      id: Option<u64>|
           -> Result<(Option<Value>, Option<String>), String> {
        let mut req = client
            .post(url)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        for (k, v) in extra {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the server: {}", e.without_url()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(id) = id else {
            return Ok((None, session));
        };
        let sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if !sse {
            let v: Value = resp
                .json()
                .await
                .map_err(|_| "the server answered something that is not JSON".to_owned())?;
            return Ok((Some(result(v)?), session));
        }
        let mut events = SseByteStream::new(resp.bytes_stream());
        while let Some(ev) = events.next().await {
            let Ok(ev) = ev else { break };
            let Some(v) = ev.data.and_then(|d| serde_json::from_str::<Value>(&d).ok()) else {
                continue;
            };
            if v.get("id").and_then(Value::as_u64) == Some(id) && v.get("method").is_none() {
                return Ok((Some(result(v)?), session));
            }
        }
        Err("the server's stream ended before its answer".into())
    };
    let (init, session) = post(&client, &extra, &initialize(), Some(1)).await?;
    let version = init
        .as_ref()
        .and_then(|r| r.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or(PROTOCOL_VERSION)
        .to_owned();
    if let Some(s) = session {
        extra.insert("mcp-session-id".into(), s);
    }
    extra.insert("mcp-protocol-version".into(), version);
    post(
        &client,
        &extra,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        None,
    )
    .await?;
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for id in 2..2 + MAX_PAGES {
        let (r, _) = post(&client, &extra, &list(id, cursor.as_deref()), Some(id)).await?;
        let (more, next) = page(&r.unwrap_or_default());
        names.extend(more);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if extra.contains_key("mcp-session-id") {
        let mut req = client.delete(url);
        for (k, v) in &extra {
            req = req.header(k.as_str(), v.as_str());
        }
        let _ = req.send().await;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_give_names_and_the_next_cursor() {
        let (n, c) = page(&json!({"tools": [{"name": "a"}, {"name": "b"}], "nextCursor": "x"}));
        assert_eq!(n, ["a", "b"]);
        assert_eq!(c.as_deref(), Some("x"));
        assert!(result(json!({"error": {"code": -1, "message": "no"}})).is_err());
    }

    #[tokio::test]
    async fn a_server_that_cannot_start_is_an_error_not_a_hang() {
        let e = tools_of(&json!({"command": "/nonexistent/writ-test-server"}))
            .await
            .unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
        let e = tools_of(&json!({"command": "sh", "args": ["-c", "exit 0"]}))
            .await
            .unwrap_err();
        assert!(e.contains("exited") || e.contains("stopped"), "{e}");
    }
}
