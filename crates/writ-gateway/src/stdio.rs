//! Local MCP servers on stdio: one child process per MCP session, spawned
//! by the gateway on `initialize`, bound to the task that opened it, and
//! killed when the session ends, idles out, or the gateway stops; when its
//! task ends or its agent is quarantined (a token it was used with is
//! revoked, the task's hard end passes, the bundle marks an agent of its
//! chain quarantined, or a minute passes after the last such token
//! expired, since a task that ended after that revokes nothing the gateway
//! saw).
//!
//! The server's messages go where the streamable HTTP transport would put
//! them: an answer to the POST that asked; a progress notification to the
//! POST whose request carries its token; a server request (sampling,
//! elicitation, roots) to the newest POST still waiting whose client
//! accepts a stream; other notifications, and requests no POST can carry,
//! to the session's GET stream (kept for it, up to
//! [`crate::stdio_routes::MAX_QUEUED_BYTES`], while none is open). A POST
//! answers in JSON when only answers came, and turns into an event stream
//! as soon as anything else must go through it. The client's answers to
//! server requests are written to the server like any other message.
//!
//! Processes are a shared resource: a task may hold 8 sessions, an agent
//! 32 (over all its tasks), the gateway 256, so that one agent cannot take
//! what every other agent needs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Mutex;
use writ_core::api::Tool;

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Streams};
use crate::mcp_messages::{Inspected, answer, filter, id_key};
use crate::mcp_stream::{Owned, message_event, respond};
use crate::owner::{Owner, agent_live};
use crate::state::View;
use crate::stdio_routes::{QueueRx, SharedRoutes, Waiting, queue, route_output};

/// A session unused this long is ended.
const IDLE: Duration = Duration::from_secs(600);
/// How long an answer from the server may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a POST's event stream may go without any message (a server
/// request may wait for a person).
const STREAM_IDLE: Duration = Duration::from_secs(600);
/// Messages queued on one POST's stream (and bytes: see
/// [`crate::stdio_routes::MAX_QUEUED_BYTES`]).
const POST_QUEUE: usize = 64;
/// Messages queued on a session's GET stream.
const GET_QUEUE: usize = 1024;
/// Most sessions at once (each is a process), per agent and per task.
const MAX_SESSIONS: usize = 256;
const MAX_SESSIONS_PER_AGENT: usize = 32;
const MAX_SESSIONS_PER_TASK: usize = 8;
const SESSION_HEADER: &str = "mcp-session-id";

#[derive(Debug)]
struct Session {
    tool: String,
    owner: Owner,
    stdin: Mutex<ChildStdin>,
    child: Mutex<Child>,
    routes: SharedRoutes,
    alive: Arc<AtomicBool>,
    last_used: std::sync::Mutex<Instant>,
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// Ends dead and idle sessions, and those whose task or agent ended.
    pub(crate) async fn sweep(&self, view: &View) {
        let now = view.now().secs();
        let mut map = self.map.lock().await;
        let ended = Self::take_ended(&mut map, view, now);
        drop(map);
        end(ended).await;
    }

    fn take_ended(
        map: &mut HashMap<String, Arc<Session>>,
        view: &View,
        now: i64,
    ) -> Vec<Arc<Session>> {
        let bundle = view.bundle();
        let mut ended = Vec::new();
        map.retain(|id, s| {
            // An open stream is use: a client may only listen.
            let streaming = s.routes.lock().is_ok_and(|r| r.streaming());
            let idle = !streaming
                && s.last_used
                    .lock()
                    .map(|t| t.elapsed() > IDLE)
                    .unwrap_or(true);
            let why = if !s.alive.load(Ordering::SeqCst) {
                Some("its process exited")
            } else if idle {
                Some("it was idle")
            } else {
                s.owner.ended(now, &|jti| view.is_revoked(jti), &|id| {
                    agent_live(bundle.as_deref(), id)
                })
            };
            match why {
                Some(why) => {
                    tracing::info!(session = %id, tool = %s.tool, task = %s.owner.task, why, "MCP session ended");
                    s.alive.store(false, Ordering::SeqCst);
                    ended.push(Arc::clone(s));
                    false
                }
                None => true,
            }
        });
        ended
    }

    /// Ends every session (the gateway stops).
    pub(crate) async fn end_all(&self) {
        let ended: Vec<Arc<Session>> = {
            let mut map = self.map.lock().await;
            map.drain().map(|(_, s)| s).collect()
        };
        for s in &ended {
            s.alive.store(false, Ordering::SeqCst);
        }
        end(ended).await;
    }

    async fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().await.get(id).cloned()
    }
}

/// Kills the processes of ended sessions.
async fn end(sessions: Vec<Arc<Session>>) {
    for s in sessions {
        let _ = s.child.lock().await.kill().await;
    }
}

fn spawn_shared(
    streams: &Streams,
    command: &[String],
    tool: &str,
    secret: Option<crate::state::Secret>,
    owner: Owner,
) -> Result<Arc<Session>, GatewayError> {
    // The tool's secret, if set: the one environment variable the server
    // gets from writ (its name as set, its value unsealed by the broker).
    let injected: Option<(String, String)> = secret.and_then(|s| {
        s.value
            .to_str()
            .ok()
            .map(|v| (s.name.clone(), v.to_owned()))
    });
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
        .envs(injected)
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
    let routes: SharedRoutes = Arc::default();
    let alive = Arc::new(AtomicBool::new(true));
    let (r, a, tool_name) = (Arc::clone(&routes), Arc::clone(&alive), tool.to_owned());
    streams.spawn(async move {
        route_output(stdout, r, tool_name).await;
        a.store(false, Ordering::SeqCst);
    });
    let tool_name = tool.to_owned();
    streams.spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(tool = %tool_name, "mcp server: {line}");
        }
    });
    Ok(Arc::new(Session {
        tool: tool.to_owned(),
        owner,
        stdin: Mutex::new(stdin),
        child: Mutex::new(child),
        routes,
        alive,
        last_used: std::sync::Mutex::new(Instant::now()),
    }))
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

/// The session `headers` name, if `ctx`'s task opened it for this tool.
async fn session_for(
    ctx: &Owned,
    headers: &HeaderMap,
) -> Result<Option<(String, Arc<Session>)>, GatewayError> {
    let task = ctx.caller.claims.task.clone().unwrap_or_default();
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let s = ctx
        .gw
        .sessions
        .get(id)
        .await
        .filter(|s| {
            s.owner.task == task
                && s.tool == ctx.tool.name.as_str()
                && s.alive.load(Ordering::SeqCst)
        })
        .ok_or_else(|| GatewayError::NotFound("unknown or ended MCP session".into()))?;
    s.owner.used_with(&ctx.caller);
    if let Ok(mut t) = s.last_used.lock() {
        *t = Instant::now();
    }
    Ok(Some((id.to_owned(), s)))
}

fn accepts_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

fn session_headers(id: &str) -> HeaderMap {
    let mut extra = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(id) {
        extra.insert(SESSION_HEADER, v);
    }
    extra
}

/// The answer a request gets when the server gave none in time.
fn unanswered(id: &Value, why: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": why}})
}

pub(crate) async fn post(
    ctx: Owned,
    command: &[String],
    headers: &HeaderMap,
    mut ins: Inspected,
) -> Result<Response, GatewayError> {
    let c = ctx.call();
    let (gw, caller, tool) = (c.gw, c.caller, c.tool);
    let (session_id, session) = match session_for(&ctx, headers).await? {
        Some(found) => found,
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
            open(gw, command, tool, caller).await?
        }
    };
    let extra = session_headers(&session_id);
    let tokens: Vec<Value> = ins
        .forward
        .iter()
        .filter_map(|m| m.pointer("/params/_meta/progressToken").cloned())
        .collect();
    let (tx, mut rx) = queue(POST_QUEUE);
    let streams = accepts_stream(headers);
    // Requests go up with ids of the session's own (their answers come
    // back with the client's): two with the same id never cross.
    let waiting = match session.routes.lock() {
        Ok(mut r) => Waiting {
            routes: Arc::clone(&session.routes),
            n: r.open_post(tx, streams, &mut ins.forward, &tokens),
        },
        Err(_) => {
            return Err(GatewayError::BadGateway(format!(
                "the MCP session of tool {} is broken",
                tool.name
            )));
        }
    };
    for m in &ins.forward {
        session.write(m).await.map_err(|e| {
            tracing::warn!(tool = %tool.name, error = %e, "cannot write to an MCP server");
            GatewayError::BadGateway(format!("the MCP server of tool {} is gone", tool.name))
        })?;
    }
    let mut open: HashSet<String> = ins.requests.iter().map(id_key).collect();
    let mut answers = Vec::new();
    // JSON while only answers come; a stream once anything else must pass.
    while !open.is_empty() {
        let msg = match tokio::time::timeout(ANSWER_TIMEOUT, rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(GatewayError::BadGateway(format!(
                    "the MCP server of tool {} {}",
                    tool.name,
                    if rx.overflowed() {
                        "sent more than the client read in time"
                    } else {
                        "exited"
                    }
                )));
            }
            Err(_) => {
                return Err(GatewayError::BadGateway(format!(
                    "the MCP server of tool {} did not answer in time",
                    tool.name
                )));
            }
        };
        if msg.get("method").is_some() {
            let mut first = answers;
            first.push(msg);
            return Ok(stream_answers(ctx, waiting, rx, first, open, ins, &extra));
        }
        if let Some(id) = msg.get("id") {
            open.remove(&id_key(id));
        }
        answers.push(msg);
    }
    drop(waiting);
    for a in &mut answers {
        filter(c, a);
    }
    Ok(answer(ins.single, answers, ins.refused, &extra))
}

/// The rest of a POST's answer as an event stream: `first`, then what
/// comes until every request in `open` is answered, then the refusals.
fn stream_answers(
    ctx: Owned,
    waiting: Waiting,
    rx: QueueRx,
    first: Vec<Value>,
    open: HashSet<String>,
    ins: Inspected,
    extra: &HeaderMap,
) -> Response {
    struct State {
        rx: QueueRx,
        queued: VecDeque<Value>,
        open: HashSet<String>,
        requests: Vec<Value>,
        _waiting: Waiting,
    }
    let state = State {
        rx,
        queued: first.into(),
        open,
        requests: ins.requests,
        _waiting: waiting,
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(m) = st.queued.pop_front() {
            return Some((Ok::<_, std::convert::Infallible>(message_event(&m)), st));
        }
        if st.open.is_empty() {
            return None;
        }
        let why = match tokio::time::timeout(STREAM_IDLE, st.rx.recv()).await {
            Ok(Some(m)) => {
                if m.get("method").is_none()
                    && let Some(id) = m.get("id")
                {
                    st.open.remove(&id_key(id));
                }
                return Some((Ok(message_event(&m)), st));
            }
            Ok(None) if st.rx.overflowed() => {
                "the client did not read this stream in time: messages were dropped"
            }
            Ok(None) => "the MCP server exited",
            Err(_) => "the MCP server did not answer in time",
        };
        // Whatever is still open gets an error, then the stream ends.
        let open = std::mem::take(&mut st.open);
        st.queued = st
            .requests
            .iter()
            .filter(|id| open.contains(&id_key(id)))
            .map(|id| unanswered(id, why))
            .collect();
        let m = st.queued.pop_front()?;
        Some((Ok(message_event(&m)), st))
    });
    respond(ctx, events, ins.refused, extra)
}

/// The session's GET stream: the server's requests and notifications that
/// no POST carries, starting with those kept while none was open. A new
/// GET takes over from an older one.
pub(crate) async fn get(ctx: Owned, headers: &HeaderMap) -> Result<Response, GatewayError> {
    let Some((id, session)) = session_for(&ctx, headers).await? else {
        return Err(GatewayError::BadRequest("missing Mcp-Session-Id".into()));
    };
    if !accepts_stream(headers) {
        return Err(GatewayError::BadRequest(
            "the GET stream needs Accept: text/event-stream".into(),
        ));
    }
    let (tx, rx) = queue(GET_QUEUE);
    match session.routes.lock() {
        Ok(mut r) => {
            let mut kept = r.take_backlog().into_iter();
            for (m, size) in kept.by_ref() {
                if tx.offer(m, size).is_err() {
                    break;
                }
            }
            // What did not fit waits for the next GET stream.
            for (m, size) in kept {
                r.keep_for_get(m, size);
            }
            r.get = Some(tx);
        }
        Err(_) => {
            return Err(GatewayError::BadGateway(format!(
                "the MCP session of tool {} is broken",
                ctx.tool.name
            )));
        }
    }
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let m = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(message_event(&m)), rx))
    });
    Ok(respond(ctx, events, Vec::new(), &session_headers(&id)))
}

/// Opens a session for `caller`'s task, within the limits.
async fn open(
    gw: &Gateway,
    command: &[String],
    tool: &Tool,
    caller: &Caller,
) -> Result<(String, Arc<Session>), GatewayError> {
    // Fail closed: a server that reads its key from writ is not started
    // without it (it would run, keyless, for the whole session).
    let secret = gw.view.secret_of(tool)?;
    let id =
        writ_core::random::token_128().map_err(|e| GatewayError::Unavailable(e.to_string()))?;
    let owner = Owner::of(caller);
    // Count and insert under one lock: no race past the limits. Sessions
    // that have ended but were not swept yet do not count.
    let mut map = gw.sessions.map.lock().await;
    let ended = Sessions::take_ended(&mut map, &gw.view, gw.view.now().secs());
    let opened = within_limits(&map, &owner)
        .and_then(|()| spawn_shared(&gw.streams, command, tool.name.as_str(), secret, owner));
    if let Ok(s) = &opened {
        map.insert(id.clone(), Arc::clone(s));
    }
    drop(map);
    end(ended).await;
    Ok((id, opened?))
}

/// Whether `owner` may open one more session: 403 past its task's or its
/// agent's share, 503 when the gateway has no room left.
fn within_limits(map: &HashMap<String, Arc<Session>>, owner: &Owner) -> Result<(), GatewayError> {
    let limited = |reason: String| GatewayError::Forbidden {
        reason,
        policy_version: None,
        determining_policies: Vec::new(),
        approval_id: None,
    };
    let count = |f: &dyn Fn(&Owner) -> bool| map.values().filter(|s| f(&s.owner)).count();
    if count(&|o| o.task == owner.task) >= MAX_SESSIONS_PER_TASK {
        return Err(limited(format!(
            "a task may have at most {MAX_SESSIONS_PER_TASK} MCP sessions open"
        )));
    }
    if count(&|o| o.agent == owner.agent) >= MAX_SESSIONS_PER_AGENT {
        return Err(limited(format!(
            "an agent may have at most {MAX_SESSIONS_PER_AGENT} MCP sessions open on a gateway"
        )));
    }
    if map.len() >= MAX_SESSIONS {
        return Err(GatewayError::Unavailable("too many MCP sessions".into()));
    }
    Ok(())
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
    let owned = map.get(id).is_some_and(|s| s.owner.task == task);
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
