//! Local MCP servers on stdio: one child process per MCP session, spawned
//! by the gateway on `initialize`, bound to the task that opened it, and
//! killed when the session ends, idles out, or the gateway stops.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, oneshot};

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::mcp_messages::{Call, Inspected, answer, filter, id_key};

/// A session unused this long is ended.
const IDLE: Duration = Duration::from_secs(600);
/// How long an answer from the server may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// Most sessions at once (each is a process), and per task.
const MAX_SESSIONS: usize = 256;
const MAX_SESSIONS_PER_TASK: usize = 8;
const SESSION_HEADER: &str = "mcp-session-id";

type Pending = std::sync::Mutex<HashMap<String, oneshot::Sender<Value>>>;

#[derive(Debug)]
struct Session {
    tool: String,
    /// The task that opened it: no other task may use it.
    task: String,
    stdin: Mutex<ChildStdin>,
    child: Mutex<Child>,
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
    last_used: std::sync::Mutex<Instant>,
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// Ends dead and idle sessions.
    pub async fn sweep(&self) {
        let mut map = self.map.lock().await;
        let mut ended = Vec::new();
        map.retain(|_, s| {
            let idle = s
                .last_used
                .lock()
                .map(|t| t.elapsed() > IDLE)
                .unwrap_or(true);
            let keep = s.alive.load(Ordering::SeqCst) && !idle;
            if !keep {
                ended.push(Arc::clone(s));
            }
            keep
        });
        drop(map);
        for s in ended {
            let _ = s.child.lock().await.kill().await;
        }
    }

    async fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().await.get(id).cloned()
    }
}

fn spawn_shared(command: &[String], tool: &str, task: &str) -> Result<Arc<Session>, GatewayError> {
    let (program, args) = command.split_first().ok_or_else(|| {
        GatewayError::BadGateway(format!("tool {tool} has no MCP server command"))
    })?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Nothing of the gateway's environment (credentials, key paths)
        // reaches the server: only what a program needs to run.
        .env_clear()
        .envs(
            ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"]
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            // The command line is the operator's, not the agent's business.
            tracing::warn!(tool, error = %e, "cannot start an MCP server");
            GatewayError::BadGateway(format!("the MCP server of tool {tool} cannot be started"))
        })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(GatewayError::BadGateway(format!(
            "the MCP server of tool {tool} cannot be started"
        )));
    };
    let pending: Arc<Pending> = Arc::default();
    let alive = Arc::new(AtomicBool::new(true));
    let (p, a) = (Arc::clone(&pending), Arc::clone(&alive));
    let stdin = Mutex::new(stdin);
    let tool_name = tool.to_owned();
    // Answers are routed to their waiting request by id. Requests from the
    // server (sampling, roots) are not supported through the gateway and are
    // answered with an error so the server does not wait for ever.
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<Value>(64);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                tracing::debug!(tool = %tool_name, "MCP server wrote a non-JSON line");
                continue;
            };
            let id = msg.get("id").cloned();
            let is_request = msg.get("method").is_some();
            match (id, is_request) {
                (Some(id), false) => {
                    let sender = p.lock().ok().and_then(|mut m| m.remove(&id_key(&id)));
                    if let Some(s) = sender {
                        let _ = s.send(msg);
                    }
                }
                (Some(id), true) => {
                    let _ = reply_tx
                        .send(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "not supported through the writ gateway"}}))
                        .await;
                }
                (None, _) => {}
            }
        }
        a.store(false, Ordering::SeqCst);
        if let Ok(mut m) = p.lock() {
            m.clear();
        }
    });
    let tool_name = tool.to_owned();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(tool = %tool_name, "mcp server: {line}");
        }
    });
    let session = Arc::new(Session {
        tool: tool.to_owned(),
        task: task.to_owned(),
        stdin,
        child: Mutex::new(child),
        pending,
        alive,
        last_used: std::sync::Mutex::new(Instant::now()),
    });
    let writer = Arc::downgrade(&session);
    tokio::spawn(async move {
        while let Some(reply) = reply_rx.recv().await {
            let Some(s) = writer.upgrade() else { break };
            if s.write(&reply).await.is_err() {
                break;
            }
        }
    });
    Ok(session)
}

impl Session {
    async fn write(&self, msg: &Value) -> std::io::Result<()> {
        let mut line = msg.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await
    }
}

pub(crate) async fn post(
    c: Call<'_>,
    command: &[String],
    headers: &HeaderMap,
    ins: Inspected,
) -> Result<Response, GatewayError> {
    let Call {
        gw, caller, tool, ..
    } = c;
    let task = caller.claims.task.clone().unwrap_or_default();
    let given = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    let (session_id, session) = match given {
        Some(id) => {
            let s = gw
                .sessions
                .get(id)
                .await
                .filter(|s| {
                    s.task == task && s.tool == tool.name.as_str() && s.alive.load(Ordering::SeqCst)
                })
                .ok_or_else(|| GatewayError::NotFound("unknown or ended MCP session".into()))?;
            (id.to_owned(), s)
        }
        None => {
            let initializing = ins
                .forward
                .iter()
                .any(|m| m.get("method").and_then(Value::as_str) == Some("initialize"));
            if !initializing {
                return Err(GatewayError::BadRequest(
                    "missing Mcp-Session-Id (start with initialize)".into(),
                ));
            }
            let id = writ_core::random::token_128()
                .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
            // Count and insert under one lock: no race past the limits.
            let mut map = gw.sessions.map.lock().await;
            if map.len() >= MAX_SESSIONS {
                return Err(GatewayError::Unavailable("too many MCP sessions".into()));
            }
            if map.values().filter(|s| s.task == task).count() >= MAX_SESSIONS_PER_TASK {
                return Err(GatewayError::Forbidden {
                    reason: format!(
                        "a task may have at most {MAX_SESSIONS_PER_TASK} MCP sessions open"
                    ),
                    policy_version: None,
                    determining_policies: Vec::new(),
                    approval_id: None,
                });
            }
            let s = spawn_shared(command, tool.name.as_str(), &task)?;
            map.insert(id.clone(), Arc::clone(&s));
            drop(map);
            (id, s)
        }
    };
    if let Ok(mut t) = session.last_used.lock() {
        *t = Instant::now();
    }
    let mut waiting = Vec::new();
    for id in &ins.requests {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = session.pending.lock() {
            m.insert(id_key(id), tx);
        }
        waiting.push(rx);
    }
    for m in &ins.forward {
        session.write(m).await.map_err(|e| {
            tracing::warn!(tool = %tool.name, error = %e, "cannot write to an MCP server");
            GatewayError::BadGateway(format!("the MCP server of tool {} is gone", tool.name))
        })?;
    }
    let mut answers = Vec::new();
    for rx in waiting {
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(mut a)) => {
                filter(c, &ins.lists, &mut a);
                answers.push(a);
            }
            Ok(Err(_)) => {
                return Err(GatewayError::BadGateway(format!(
                    "the MCP server of tool {} exited",
                    tool.name
                )));
            }
            Err(_) => {
                return Err(GatewayError::BadGateway(format!(
                    "the MCP server of tool {} did not answer in time",
                    tool.name
                )));
            }
        }
    }
    let mut extra = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        extra.insert(SESSION_HEADER, v);
    }
    Ok(answer(ins.single, answers, ins.refused, &extra))
}

pub(crate) async fn delete(
    gw: &Gateway,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Response, GatewayError> {
    let task = caller.claims.task.clone().unwrap_or_default();
    let id = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| GatewayError::BadRequest("missing Mcp-Session-Id".into()))?;
    let mut map = gw.sessions.map.lock().await;
    let owned = map.get(id).is_some_and(|s| s.task == task);
    if !owned {
        return Err(GatewayError::NotFound("unknown MCP session".into()));
    }
    let s = map.remove(id);
    drop(map);
    if let Some(s) = s {
        let _ = s.child.lock().await.kill().await;
    }
    Ok(StatusCode::OK.into_response())
}
