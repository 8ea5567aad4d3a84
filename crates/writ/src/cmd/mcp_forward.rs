//! The forwarding half of `writ mcp bridge`: newline-delimited JSON-RPC on
//! stdio (the MCP stdio transport) to and from the gateway's MCP proxy over
//! streamable HTTP, each request carrying the tool token and a fresh DPoP
//! proof. JSON answers, SSE streams on the POST (progress, server requests
//! such as sampling or elicitation, then the answer) and the GET stream
//! (server notifications and requests, resumed with `Last-Event-ID`) all
//! reach stdout as one message a line; the client's answers to server
//! requests go back as POSTs. An HTTP failure becomes a JSON-RPC error for
//! each request it carried, so the client never waits forever.

use std::io::{BufRead as _, Read as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sse_stream::SseByteStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use writ_core::dpop::ProofKey;
use writ_core::{Clock as _, Secret, SystemClock};

/// The longest line (one JSON-RPC message) read from the client.
pub const MAX_LINE: usize = 4 * 1024 * 1024;

const SESSION: &str = "mcp-session-id";
const PROTOCOL: &str = "mcp-protocol-version";
const NONCE: &str = "dpop-nonce";

/// The bridge's credentials, renewed in the background: the tool token it
/// presents to the gateway, and the newest task token.
pub struct Tokens(Mutex<TokenState>);

struct TokenState {
    tool: Secret,
    tool_until: Instant,
    task: Option<Secret>,
}

impl Tokens {
    pub fn new(tool: Secret, expires_in: i64) -> Self {
        Self(Mutex::new(TokenState {
            tool,
            tool_until: until(expires_in),
            task: None,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn tool(&self) -> Secret {
        self.lock().tool.clone()
    }

    pub fn set_tool_token(&self, s: Secret, expires_in: i64) {
        let mut st = self.lock();
        st.tool = s;
        st.tool_until = until(expires_in);
    }

    pub fn set_task_token(&self, s: Secret) {
        self.lock().task = Some(s);
    }

    pub fn task_token(&self) -> Option<Secret> {
        self.lock().task.clone()
    }

    /// Whether the tool token could lapse before two more rounds of
    /// `every_secs` (and some slack) have passed.
    pub fn needs_renewal(&self, every_secs: u64) -> bool {
        let left = self
            .lock()
            .tool_until
            .saturating_duration_since(Instant::now());
        left < Duration::from_secs(2 * every_secs + 15)
    }
}

fn until(expires_in: i64) -> Instant {
    Instant::now() + Duration::from_secs(u64::try_from(expires_in).unwrap_or(0))
}

/// The request ids a client message carries (a batch's too); answers to
/// the server's requests and notifications carry none.
pub fn request_ids(msg: &Value) -> Vec<Value> {
    let one = |m: &Value| match (m.get("method"), m.get("id")) {
        (Some(_), Some(id)) if !id.is_null() => Some(id.clone()),
        _ => None,
    };
    match msg {
        Value::Array(items) => items.iter().filter_map(one).collect(),
        m => one(m).into_iter().collect(),
    }
}

fn method_of(msg: &Value) -> Option<&str> {
    msg.get("method").and_then(Value::as_str)
}

/// A JSON-RPC error answer to request `id`.
pub fn error_answer(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// What an HTTP error from the gateway says, in one line: the status and
/// the problem's title and detail (never a credential: the gateway puts
/// none there).
pub fn problem_summary(status: StatusCode, body: &str) -> String {
    let mut s = format!("the gateway answered {status}");
    if let Ok(p) = serde_json::from_str::<Value>(body) {
        for k in ["title", "detail", "error_description"] {
            if let Some(t) = p.get(k).and_then(Value::as_str) {
                s.push_str(": ");
                s.push_str(&t.chars().take(300).collect::<String>());
            }
        }
    }
    s
}

/// The `protocolVersion` of an initialize result, if `msg` is one.
fn negotiated_version(msg: &Value) -> Option<String> {
    msg.get("result")?
        .get("protocolVersion")?
        .as_str()
        .map(str::to_owned)
}

/// Takes the requests that `msg` answers (a result or an error, alone or
/// in a batch) off `pending`.
fn answered(msg: &Value, pending: &mut Vec<Value>) {
    let one = |m: &Value, pending: &mut Vec<Value>| {
        if (m.get("result").is_some() || m.get("error").is_some())
            && let Some(id) = m.get("id")
        {
            pending.retain(|p| p != id);
        }
    };
    match msg {
        Value::Array(items) => items.iter().for_each(|m| one(m, pending)),
        m => one(m, pending),
    }
}

/// One line read from the client.
enum Line {
    Text(String),
    TooLong,
}

/// Reads the client's lines on a thread of its own (a blocked read of
/// stdin never holds the process up), each bounded by [`MAX_LINE`].
fn read_stdin(tx: mpsc::Sender<Line>) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        let mut buf = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        match (&mut input).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            // Skip the rest of the over-long line.
            let mut rest = Vec::new();
            if input.read_until(b'\n', &mut rest).is_err() {
                return;
            }
            Line::TooLong
        } else {
            Line::Text(String::from_utf8_lossy(&buf).into_owned())
        };
        if tx.blocking_send(line).is_err() {
            return;
        }
    }
}

/// Forwards one client's messages to one MCP tool behind the gateway.
#[derive(Clone)]
pub struct Forwarder(Arc<Inner>);

struct Inner {
    http: reqwest::Client,
    url: String,
    key: Arc<ProofKey>,
    tokens: Arc<Tokens>,
    session: Mutex<Option<String>>,
    protocol: Mutex<Option<String>>,
    nonce: Mutex<Option<String>>,
    out: mpsc::Sender<String>,
    listening: AtomicBool,
    cancel: CancellationToken,
    last_failure: Mutex<Option<String>>,
    /// Lines handed to the writer, and lines it wrote.
    sent: std::sync::atomic::AtomicU64,
    written: Arc<std::sync::atomic::AtomicU64>,
}

fn get<T: Clone>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn set<T>(m: &Mutex<Option<T>>, v: T) {
    *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v);
}

impl Forwarder {
    /// A forwarder to the MCP endpoint `url`; its answers go to stdout.
    pub fn new(
        http: reqwest::Client,
        url: String,
        key: Arc<ProofKey>,
        tokens: Arc<Tokens>,
    ) -> Self {
        let (out, mut rx) = mpsc::channel::<String>(256);
        // The writer has a thread of its own, as the reader does.
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&written);
        std::thread::spawn(move || {
            let stdout = std::io::stdout();
            while let Some(line) = rx.blocking_recv() {
                let mut w = stdout.lock();
                let wrote = w
                    .write_all(line.as_bytes())
                    .and_then(|()| w.write_all(b"\n"))
                    .and_then(|()| w.flush());
                if wrote.is_err() {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self(Arc::new(Inner {
            http,
            url,
            key,
            tokens,
            session: Mutex::default(),
            protocol: Mutex::default(),
            nonce: Mutex::default(),
            out,
            listening: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            last_failure: Mutex::default(),
            sent: std::sync::atomic::AtomicU64::new(0),
            written,
        }))
    }

    /// Reads the client's messages until stdin ends, forwarding each; or
    /// until `initialize` could not reach the tool (why, then).
    pub async fn pump_stdin(&self) -> Option<String> {
        let (tx, mut rx) = mpsc::channel::<Line>(64);
        std::thread::spawn(move || read_stdin(tx));
        while let Some(line) = rx.recv().await {
            match line {
                Line::TooLong => {
                    self.emit(&error_answer(
                        &Value::Null,
                        -32600,
                        "writ mcp bridge: a message over 4 MiB",
                    ))
                    .await;
                }
                Line::Text(t) => {
                    if let Err(why) = self.take(t).await {
                        return Some(why);
                    }
                }
            }
        }
        None
    }

    /// Forwards one line from the client. `initialize` is answered before
    /// the next line is read (the session starts with it); everything else
    /// goes concurrently, as streamable HTTP clients send it.
    async fn take(&self, line: String) -> Result<(), String> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        let msg: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => {
                self.emit(&error_answer(&Value::Null, -32700, "parse error"))
                    .await;
                return Ok(());
            }
        };
        let initialize = method_of(&msg) == Some("initialize");
        let initialized = method_of(&msg) == Some("notifications/initialized");
        let ids = request_ids(&msg);
        let body = msg.to_string();
        if initialize {
            if self.post(body, ids, true).await {
                return Ok(());
            }
            return Err(get(&self.0.last_failure).unwrap_or_default());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let ok = me.post(body, ids, false).await;
            if initialized && ok && !me.0.listening.swap(true, Ordering::SeqCst) {
                tokio::spawn(me.clone().listen());
            }
        });
        Ok(())
    }

    /// A request to the MCP endpoint with the tool token and a fresh proof.
    fn request(&self, method: Method) -> Result<reqwest::RequestBuilder, String> {
        let token = self.0.tokens.tool();
        let nonce = get(&self.0.nonce);
        let proof = self
            .0
            .key
            .proof(
                method.as_str(),
                &self.0.url,
                Some(token.expose()),
                nonce.as_deref(),
                SystemClock.now(),
            )
            .map_err(|e| format!("cannot sign a DPoP proof: {e}"))?;
        let mut r = self
            .0
            .http
            .request(method, &self.0.url)
            .header(AUTHORIZATION, format!("DPoP {}", token.expose()))
            .header("dpop", proof);
        if let Some(s) = get(&self.0.session) {
            r = r.header(SESSION, s);
        }
        if let Some(v) = get(&self.0.protocol) {
            r = r.header(PROTOCOL, v);
        }
        Ok(r)
    }

    /// Remembers a DPoP nonce the gateway sent; true when it refused the
    /// request for want of one (worth one retry).
    fn nonce_asked(&self, resp: &reqwest::Response) -> bool {
        let Some(n) = resp.headers().get(NONCE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        set(&self.0.nonce, n.to_owned());
        matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST
        )
    }

    /// POSTs one message; its answers go to stdout. False when it failed.
    async fn post(&self, body: String, ids: Vec<Value>, initialize: bool) -> bool {
        let mut retried = false;
        loop {
            let req = match self.request(Method::POST) {
                Ok(r) => r
                    .header(CONTENT_TYPE, "application/json")
                    .header(ACCEPT, "application/json, text/event-stream")
                    .body(body.clone()),
                Err(e) => {
                    self.fail(&ids, &e).await;
                    return false;
                }
            };
            let sent = tokio::select! {
                r = req.send() => r,
                () = self.0.cancel.cancelled() => return false,
            };
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.fail(
                        &ids,
                        &format!("cannot reach the gateway: {}", e.without_url()),
                    )
                    .await;
                    return false;
                }
            };
            if self.nonce_asked(&resp) && !retried {
                retried = true;
                continue;
            }
            if initialize && let Some(s) = resp.headers().get(SESSION).and_then(|v| v.to_str().ok())
            {
                set(&self.0.session, s.to_owned());
            }
            return self.answer(resp, &ids, initialize).await;
        }
    }

    async fn answer(&self, resp: reqwest::Response, ids: &[Value], initialize: bool) -> bool {
        let status = resp.status();
        if status == StatusCode::ACCEPTED {
            return true;
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            self.fail(ids, &problem_summary(status, &text)).await;
            return false;
        }
        let sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if sse {
            return self.relay_answers(resp, ids, initialize).await;
        }
        let bytes = tokio::select! {
            b = resp.bytes() => b,
            () = self.0.cancel.cancelled() => return false,
        };
        match bytes.map(|b| serde_json::from_slice::<Value>(&b)) {
            Ok(Ok(v)) => {
                self.note_version(initialize, &v);
                self.emit(&v).await;
                true
            }
            Ok(Err(_)) if ids.is_empty() => true,
            Ok(Err(_)) => {
                self.fail(ids, "the gateway answered something that is not JSON")
                    .await;
                false
            }
            Err(e) => {
                self.fail(
                    ids,
                    &format!("the gateway's answer broke off: {}", e.without_url()),
                )
                .await;
                false
            }
        }
    }

    /// Relays a POST's SSE answer; when the stream breaks off before the
    /// answers to its requests, resumes it with a GET from its last event
    /// (streamable HTTP's resumption), and failing that answers them with
    /// an error, so the client never waits forever.
    async fn relay_answers(
        &self,
        resp: reqwest::Response,
        ids: &[Value],
        initialize: bool,
    ) -> bool {
        let mut last = None;
        let mut pending = ids.to_vec();
        self.relay(resp, initialize, &mut last, &mut pending).await;
        let mut tries = 0;
        while !pending.is_empty() && !self.0.cancel.is_cancelled() && tries < 5 {
            let Some(id) = last.clone() else { break };
            tries += 1;
            let Ok(req) = self.request(Method::GET) else {
                break;
            };
            let req = req
                .header(ACCEPT, "text/event-stream")
                .header("last-event-id", id);
            let sent = tokio::select! {
                r = req.send() => r,
                () = self.0.cancel.cancelled() => return false,
            };
            match sent {
                Ok(r) if r.status().is_success() => {
                    self.relay(r, initialize, &mut last, &mut pending).await;
                }
                Ok(r) if self.nonce_asked(&r) => {}
                _ => break,
            }
        }
        if pending.is_empty() {
            return true;
        }
        if !self.0.cancel.is_cancelled() {
            self.fail(&pending, "the gateway's stream ended before the answer")
                .await;
        }
        false
    }

    fn note_version(&self, initialize: bool, v: &Value) {
        if initialize && let Some(p) = negotiated_version(v) {
            set(&self.0.protocol, p);
        }
    }

    /// Relays an SSE body's messages to stdout, keeping the last event id.
    async fn relay(
        &self,
        resp: reqwest::Response,
        initialize: bool,
        last: &mut Option<String>,
        pending: &mut Vec<Value>,
    ) {
        let mut events = SseByteStream::new(resp.bytes_stream());
        loop {
            let ev = tokio::select! {
                e = events.next() => e,
                () = self.0.cancel.cancelled() => return,
            };
            let Some(Ok(ev)) = ev else { return };
            if let Some(id) = ev.id.filter(|i| !i.is_empty()) {
                *last = Some(id);
            }
            let Some(data) = ev.data.filter(|d| !d.trim().is_empty()) else {
                continue;
            };
            match serde_json::from_str::<Value>(&data) {
                Ok(v) => {
                    self.note_version(initialize, &v);
                    answered(&v, pending);
                    self.emit(&v).await;
                }
                Err(_) => eprintln!("writ mcp bridge: skipped an event that is not JSON"),
            }
        }
    }

    /// The GET stream: the server's own messages, resumed after a break.
    async fn listen(self) {
        let mut last: Option<String> = None;
        let mut failures: u32 = 0;
        let mut retried = false;
        while !self.0.cancel.is_cancelled() && failures < 5 {
            let mut req = match self.request(Method::GET) {
                Ok(r) => r.header(ACCEPT, "text/event-stream"),
                Err(_) => return,
            };
            if let Some(id) = &last {
                req = req.header("last-event-id", id);
            }
            let sent = tokio::select! {
                r = req.send() => r,
                () = self.0.cancel.cancelled() => return,
            };
            match sent {
                Ok(resp) if self.nonce_asked(&resp) && !retried => {
                    retried = true;
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::METHOD_NOT_ALLOWED => return,
                Ok(resp) if resp.status().is_success() => {
                    failures = 0;
                    retried = false;
                    self.relay(resp, false, &mut last, &mut Vec::new()).await;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    eprintln!(
                        "writ mcp bridge: server stream: {}",
                        problem_summary(status, &text)
                    );
                    failures += 1;
                }
                Err(e) => {
                    eprintln!(
                        "writ mcp bridge: server stream: cannot reach the gateway: {}",
                        e.without_url()
                    );
                    failures += 1;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500 * u64::from(failures + 1))) => {}
                () = self.0.cancel.cancelled() => return,
            }
        }
    }

    /// One JSON-RPC error per request id; without one, a line on stderr.
    async fn fail(&self, ids: &[Value], why: &str) {
        set(&self.0.last_failure, why.to_owned());
        if ids.is_empty() {
            eprintln!("writ mcp bridge: {why}");
        }
        for id in ids {
            self.emit(&error_answer(
                id,
                -32603,
                &format!("writ mcp bridge: {why}"),
            ))
            .await;
        }
    }

    async fn emit(&self, v: &Value) {
        if self.0.out.send(v.to_string()).await.is_ok() {
            self.0.sent.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Stops forwarding and ends the MCP session at the gateway.
    pub async fn close(&self) {
        self.0.cancel.cancel();
        // What the client was sent reaches it first (a second at most).
        for _ in 0..100 {
            if self.0.written.load(Ordering::SeqCst) >= self.0.sent.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if get(&self.0.session).is_none() {
            return;
        }
        if let Ok(r) = self.request(Method::DELETE) {
            let _ = tokio::time::timeout(Duration::from_secs(2), r.send()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_carry_ids_to_answer() {
        let req = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call"});
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let answer = json!({"jsonrpc": "2.0", "id": "s1", "result": {}});
        assert_eq!(request_ids(&req), vec![json!(7)]);
        assert!(request_ids(&note).is_empty());
        assert!(
            request_ids(&answer).is_empty(),
            "an answer to the server's request"
        );
        let batch = json!([req, note, answer, {"jsonrpc": "2.0", "id": "x", "method": "ping"}]);
        assert_eq!(request_ids(&batch), vec![json!(7), json!("x")]);
    }

    #[test]
    fn an_http_failure_is_an_error_answer_naming_the_problem() {
        let s = problem_summary(
            StatusCode::FORBIDDEN,
            r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"denied by no-deletes"}"#,
        );
        assert_eq!(
            s,
            "the gateway answered 403 Forbidden: Forbidden: denied by no-deletes"
        );
        assert_eq!(
            problem_summary(StatusCode::BAD_GATEWAY, "<html>"),
            "the gateway answered 502 Bad Gateway"
        );
        let e = error_answer(&json!(3), -32603, "x");
        assert_eq!(e["id"], 3);
        assert_eq!(e["error"]["code"], -32603);
    }

    #[test]
    fn answers_take_their_requests_off_the_pending_list() {
        let mut pending = vec![json!(1), json!("b")];
        answered(
            &json!({"jsonrpc": "2.0", "method": "notifications/progress"}),
            &mut pending,
        );
        answered(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage"}),
            &mut pending,
        );
        assert_eq!(
            pending.len(),
            2,
            "a server request with the same id answers nothing"
        );
        answered(
            &json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
            &mut pending,
        );
        assert_eq!(pending, vec![json!("b")]);
        answered(
            &json!([{"jsonrpc": "2.0", "id": "b", "error": {"code": 1, "message": "x"}}]),
            &mut pending,
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn the_negotiated_version_comes_from_the_initialize_result() {
        let v = json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18"}});
        assert_eq!(negotiated_version(&v).as_deref(), Some("2025-06-18"));
        assert_eq!(negotiated_version(&json!({"id": 1, "error": {}})), None);
    }

    #[test]
    fn tool_tokens_are_renewed_before_they_lapse() {
        let t = Tokens::new(Secret::new("tool-1"), 300);
        assert!(!t.needs_renewal(40), "300 s left, renewal at 95 s");
        t.set_tool_token(Secret::new("tool-2"), 60);
        assert!(t.needs_renewal(40));
        assert_eq!(t.tool().expose(), "tool-2");
        assert!(t.task_token().is_none());
        t.set_task_token(Secret::new("task-2"));
        assert_eq!(
            t.task_token().map(|s| s.expose().to_owned()).as_deref(),
            Some("task-2")
        );
    }
}
