//! Where a local MCP server's messages go (see [`crate::stdio`]): an
//! answer to the POST that asked, progress to the POST whose request
//! carries its token, a server request (sampling, elicitation, roots) to
//! the newest POST that streams, else, as other notifications, the GET
//! stream, else kept for it.
//!
//! The client's request ids are not the server's: each request goes up
//! with an id unique in its session and its answer comes back with the
//! client's id, so two requests with the same id (on two POSTs) each get
//! their own answer.
//!
//! Memory is bounded by bytes: each client stream (a POST's or the GET's)
//! queues at most [`MAX_QUEUED_BYTES`] (one message always fits) and the
//! messages kept for the GET stream too, the oldest dropped first. The
//! server's output is never held up by a slow client: a POST whose client
//! does not keep up ends with an error; a GET stream that does not keep up
//! ends, and what it missed is kept for the next one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::mcp_messages::id_key;

/// Bytes of messages queued for one client stream, and kept for the GET
/// stream while none is open.
pub(crate) const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Longest line (one JSON-RPC message) read from a server.
const MAX_LINE: usize = crate::mcp_stream::MAX_EVENT;

/// What a queue holds, shared by its two ends.
#[derive(Debug, Default)]
struct Held {
    bytes: AtomicUsize,
    /// A message was refused for want of room: the stream is incomplete.
    overflowed: AtomicBool,
}

/// The sending end of a client stream's queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueTx {
    tx: mpsc::Sender<(Value, usize)>,
    held: Arc<Held>,
}

/// The receiving end of a client stream's queue.
#[derive(Debug)]
pub(crate) struct QueueRx {
    rx: mpsc::Receiver<(Value, usize)>,
    held: Arc<Held>,
}

/// Why a message was not queued (it is handed back).
#[derive(Debug)]
pub(crate) enum Unqueued {
    /// The queue has no room (messages or bytes).
    Full(Value),
    /// Its stream is gone.
    Closed(Value),
}

/// A queue of at most `count` messages and [`MAX_QUEUED_BYTES`].
pub(crate) fn queue(count: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(count.max(1));
    let held = Arc::new(Held::default());
    (
        QueueTx {
            tx,
            held: Arc::clone(&held),
        },
        QueueRx { rx, held },
    )
}

impl QueueTx {
    /// Queues `msg` (`size` bytes) without waiting.
    pub(crate) fn offer(&self, msg: Value, size: usize) -> Result<(), Unqueued> {
        if self.tx.is_closed() {
            return Err(Unqueued::Closed(msg));
        }
        let before = self.held.bytes.fetch_add(size, Ordering::SeqCst);
        if before > 0 && before.saturating_add(size) > MAX_QUEUED_BYTES {
            self.held.bytes.fetch_sub(size, Ordering::SeqCst);
            return Err(Unqueued::Full(msg));
        }
        self.tx.try_send((msg, size)).map_err(|e| {
            self.held.bytes.fetch_sub(size, Ordering::SeqCst);
            match e {
                mpsc::error::TrySendError::Full((m, _)) => Unqueued::Full(m),
                mpsc::error::TrySendError::Closed((m, _)) => Unqueued::Closed(m),
            }
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl QueueRx {
    pub(crate) async fn recv(&mut self) -> Option<Value> {
        let (m, size) = self.rx.recv().await?;
        self.held.bytes.fetch_sub(size, Ordering::SeqCst);
        Some(m)
    }

    /// Whether messages for this stream were dropped because its client
    /// did not keep up.
    pub(crate) fn overflowed(&self) -> bool {
        self.held.overflowed.load(Ordering::SeqCst)
    }
}

/// A request forwarded to the server, waiting for its answer.
#[derive(Debug)]
pub(crate) struct Asked {
    /// The POST waiting.
    post: u64,
    /// The id the client gave it.
    client_id: Value,
}

/// Where the server's messages go.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// A forwarded request's id, as the server knows it → who asked.
    pub(crate) answers: HashMap<String, Asked>,
    /// A progress token → the POST whose request carries it.
    pub(crate) progress: HashMap<String, u64>,
    /// POSTs waiting: their queue, and whether their client takes a stream
    /// (so other messages may go there too).
    pub(crate) posts: BTreeMap<u64, (QueueTx, bool)>,
    /// The GET stream, when one is open.
    pub(crate) get: Option<QueueTx>,
    /// Messages for the GET stream while none is open, with their size.
    pub(crate) backlog: VecDeque<(Value, usize)>,
    backlog_bytes: usize,
    next: u64,
    /// The last id given to a request sent to the server.
    next_id: u64,
}

/// Where one message from the server goes.
pub(crate) enum Target {
    Post(u64, QueueTx),
    Get,
    Backlog,
    Drop,
}

impl Routes {
    /// Where `msg` goes; an answer gets its client's id back.
    pub(crate) fn target(&mut self, msg: &mut Value) -> Target {
        let Some(obj) = msg.as_object_mut() else {
            return Target::Drop;
        };
        let is_answer = !obj.contains_key("method");
        if is_answer {
            let asked = obj
                .get("id")
                .and_then(|id| self.answers.remove(&id_key(id)));
            let Some(asked) = asked else {
                // Nobody asked: nowhere to go.
                return Target::Drop;
            };
            obj.insert("id".into(), asked.client_id);
            return match self.posts.get(&asked.post) {
                Some((tx, _)) => Target::Post(asked.post, tx.clone()),
                // The POST is gone.
                None => Target::Drop,
            };
        }
        let token = (obj.get("method").and_then(Value::as_str) == Some("notifications/progress"))
            .then(|| obj.get("params").and_then(|p| p.get("progressToken")))
            .flatten();
        let by_token = token
            .and_then(|t| self.progress.get(&id_key(t)))
            .and_then(|p| self.posts.get(p).map(|q| (*p, q)))
            .filter(|(_, (_, streams))| *streams);
        // A server request is made while the server handles one of the
        // client's: it goes on the newest POST that streams. Other
        // notifications (logging, list changes) are the GET stream's: a
        // POST whose client never asked for them stays plain JSON.
        let is_request = obj.contains_key("id");
        let newest = || {
            self.posts
                .iter()
                .rev()
                .find(|(_, (_, streams))| *streams && is_request)
                .map(|(p, q)| (*p, q))
        };
        match by_token.or_else(newest) {
            Some((p, (tx, _))) => Target::Post(p, tx.clone()),
            None => match &self.get {
                Some(_) => Target::Get,
                None => Target::Backlog,
            },
        }
    }

    /// Keeps a message for the next GET stream, dropping the oldest past
    /// [`MAX_QUEUED_BYTES`].
    pub(crate) fn keep_for_get(&mut self, msg: Value, size: usize) {
        while !self.backlog.is_empty() && self.backlog_bytes.saturating_add(size) > MAX_QUEUED_BYTES
        {
            tracing::warn!(
                "an MCP session's client does not read its stream: its oldest message is dropped"
            );
            if let Some((_, s)) = self.backlog.pop_front() {
                self.backlog_bytes = self.backlog_bytes.saturating_sub(s);
            }
        }
        self.backlog_bytes = self.backlog_bytes.saturating_add(size);
        self.backlog.push_back((msg, size));
    }

    /// The messages kept for the GET stream, taken.
    pub(crate) fn take_backlog(&mut self) -> VecDeque<(Value, usize)> {
        self.backlog_bytes = 0;
        std::mem::take(&mut self.backlog)
    }

    /// Whether a client stream is open (the session is in use).
    pub(crate) fn streaming(&self) -> bool {
        !self.posts.is_empty() || self.get.as_ref().is_some_and(|g| !g.is_closed())
    }

    /// Registers a POST waiting for answers to the requests of `forward`,
    /// giving each an id of the session's own (the client's comes back on
    /// its answer); a cancellation names the request by that id too.
    pub(crate) fn open_post(
        &mut self,
        tx: QueueTx,
        streams: bool,
        forward: &mut [Value],
        tokens: &[Value],
    ) -> u64 {
        self.next += 1;
        let n = self.next;
        for msg in forward.iter_mut() {
            let Some(obj) = msg.as_object_mut() else {
                continue;
            };
            let method = obj.get("method").and_then(Value::as_str);
            if method == Some("notifications/cancelled") {
                let upstream = obj
                    .get("params")
                    .and_then(|p| p.get("requestId"))
                    .and_then(|asked| self.upstream_id(asked));
                if let (Some(up), Some(p)) = (upstream, obj.get_mut("params")) {
                    p["requestId"] = up;
                }
                continue;
            }
            if method.is_none() {
                continue;
            }
            let Some(client_id) = obj.get("id").cloned() else {
                continue;
            };
            self.next_id += 1;
            let up = Value::from(self.next_id);
            self.answers
                .insert(id_key(&up), Asked { post: n, client_id });
            obj.insert("id".into(), up);
        }
        for t in tokens {
            self.progress.insert(id_key(t), n);
        }
        self.posts.insert(n, (tx, streams));
        n
    }

    /// The server's id of the newest pending request the client calls `id`.
    fn upstream_id(&self, id: &Value) -> Option<Value> {
        let key = id_key(id);
        self.answers
            .iter()
            .filter(|(_, a)| id_key(&a.client_id) == key)
            .filter_map(|(up, _)| up.parse::<u64>().ok())
            .max()
            .map(Value::from)
    }

    pub(crate) fn close_post(&mut self, n: u64) {
        self.posts.remove(&n);
        self.answers.retain(|_, a| a.post != n);
        self.progress.retain(|_, p| *p != n);
    }

    /// Hands one message out without waiting: what no POST takes goes to
    /// the GET stream, or is kept for it (answers excepted).
    pub(crate) fn deliver(&mut self, mut msg: Value, size: usize) {
        let target = self.target(&mut msg);
        let is_answer = msg.get("method").is_none();
        let unqueued = match target {
            Target::Post(n, tx) => match tx.offer(msg, size) {
                Ok(()) => None,
                Err(Unqueued::Full(m)) => {
                    // Its client does not keep up: that POST ends with an
                    // error rather than hold the session up.
                    tracing::warn!(
                        "an MCP client does not read its POST's stream: the stream is ended"
                    );
                    tx.held.overflowed.store(true, Ordering::SeqCst);
                    self.close_post(n);
                    Some(m)
                }
                Err(Unqueued::Closed(m)) => Some(m),
            },
            Target::Get | Target::Backlog => Some(msg),
            Target::Drop => None,
        };
        if let (Some(m), false) = (unqueued, is_answer) {
            self.send_to_get(m, size);
        }
    }

    /// Sends a message on the GET stream, or keeps it for the next one.
    fn send_to_get(&mut self, msg: Value, size: usize) {
        let Some(get) = &self.get else {
            return self.keep_for_get(msg, size);
        };
        match get.offer(msg, size) {
            Ok(()) => {}
            Err(Unqueued::Full(m)) => {
                // The GET stream ends; the next one gets what it missed.
                tracing::warn!("an MCP client does not read its GET stream: the stream is ended");
                self.get = None;
                self.keep_for_get(m, size);
            }
            Err(Unqueued::Closed(m)) => {
                self.get = None;
                self.keep_for_get(m, size);
            }
        }
    }
}

pub(crate) type SharedRoutes = Arc<std::sync::Mutex<Routes>>;

/// A POST's place in the routes, given up when its answer is done.
pub(crate) struct Waiting {
    pub(crate) routes: SharedRoutes,
    pub(crate) n: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Ok(mut r) = self.routes.lock() {
            r.close_post(self.n);
        }
    }
}

/// Hands the server's messages out as [`Routes`] says, never waiting for
/// a client.
pub(crate) async fn route_output<R: AsyncRead + Unpin>(
    stdout: R,
    routes: SharedRoutes,
    tool: String,
) {
    let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(tool = %tool, error = %e, "MCP server output unreadable; ending the session");
                break;
            }
        };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            tracing::debug!(tool = %tool, "MCP server wrote a non-JSON line");
            continue;
        };
        match routes.lock() {
            Ok(mut r) => r.deliver(msg, line.len()),
            Err(_) => break,
        }
    }
    // The server is gone: every stream waiting on it ends.
    if let Ok(mut r) = routes.lock() {
        *r = Routes::default();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use serde_json::json;

    use super::*;

    fn sent_to(t: Target, rx: &mut QueueRx) -> Option<Value> {
        match t {
            Target::Post(_, tx) => {
                tx.offer(json!({"probe": true}), 1).unwrap();
                let mut got = None;
                if let Ok((m, _)) = rx.rx.try_recv() {
                    got = Some(m);
                }
                got
            }
            Target::Get | Target::Backlog | Target::Drop => None,
        }
    }

    fn request(id: Value, method: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": method})
    }

    #[test]
    fn server_messages_go_where_the_streamable_transport_would_put_them() {
        let mut r = Routes::default();
        let (json_tx, mut json_rx) = queue(8);
        let (a_tx, mut a_rx) = queue(8);
        let (b_tx, mut b_rx) = queue(8);
        // A POST whose client takes only JSON, then two that take streams.
        let mut first = [request(json!(1), "ping")];
        r.open_post(json_tx, false, &mut first, &[]);
        let a = r.open_post(
            a_tx,
            true,
            &mut [request(json!("a"), "ping")],
            &[json!("tok-a")],
        );
        r.open_post(b_tx, true, &mut [request(json!(2), "ping")], &[]);
        // An answer goes to the POST that asked, once, with the client's id.
        let mut answer = json!({"jsonrpc": "2.0", "id": first[0]["id"].clone(), "result": {}});
        let mut again = answer.clone();
        assert!(sent_to(r.target(&mut answer), &mut json_rx).is_some());
        assert_eq!(answer["id"], 1);
        assert!(matches!(r.target(&mut again), Target::Drop), "asked once");
        // Progress follows its token; other messages go to the newest stream.
        let mut progress =
            json!({"method": "notifications/progress", "params": {"progressToken": "tok-a"}});
        assert!(sent_to(r.target(&mut progress), &mut a_rx).is_some());
        let mut sampling = request(json!(9), "sampling/createMessage");
        assert!(sent_to(r.target(&mut sampling), &mut b_rx).is_some());
        // A notification no request asked for waits for the GET stream.
        let mut log = json!({"jsonrpc": "2.0", "method": "notifications/message"});
        assert!(matches!(r.target(&mut log), Target::Backlog));
        // With no POST streaming, the GET stream; with none, the backlog.
        r.close_post(a);
        r.posts.retain(|_, (_, streams)| !*streams);
        assert!(matches!(r.target(&mut sampling), Target::Backlog));
        let (get_tx, _get_rx) = queue(8);
        r.get = Some(get_tx);
        assert!(matches!(r.target(&mut sampling), Target::Get));
        assert!(r.progress.is_empty(), "a closed POST leaves no route");
    }

    #[test]
    fn f1_two_requests_with_the_same_id_each_get_their_own_answer() {
        let mut r = Routes::default();
        let (call_tx, mut call_rx) = queue(8);
        let (list_tx, mut list_rx) = queue(8);
        let mut call = [request(json!(1), "tools/call")];
        let mut list = [request(json!(1), "tools/list")];
        r.open_post(call_tx, true, &mut call, &[]);
        r.open_post(list_tx, true, &mut list, &[]);
        assert_ne!(call[0]["id"], list[0]["id"], "the server sees two ids");
        // The server answers the list first, then the call.
        let listed =
            json!({"jsonrpc": "2.0", "id": list[0]["id"].clone(), "result": {"tools": []}});
        r.deliver(listed, 10);
        let called =
            json!({"jsonrpc": "2.0", "id": call[0]["id"].clone(), "result": {"content": []}});
        r.deliver(called, 10);
        let (got_list, _) = list_rx.rx.try_recv().unwrap();
        let (got_call, _) = call_rx.rx.try_recv().unwrap();
        assert!(got_list["result"]["tools"].is_array());
        assert!(got_call["result"]["content"].is_array());
        assert_eq!(
            (got_list["id"].clone(), got_call["id"].clone()),
            (json!(1), json!(1))
        );
        assert!(list_rx.rx.try_recv().is_err() && call_rx.rx.try_recv().is_err());
        // A cancellation names the request as the server knows it.
        let (c_tx, _c_rx) = queue(8);
        let mut slow = [request(json!("s"), "tools/call")];
        r.open_post(c_tx.clone(), true, &mut slow, &[]);
        let mut cancel = [
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                 "params": {"requestId": "s"}}),
        ];
        r.open_post(c_tx, false, &mut cancel, &[]);
        assert_eq!(cancel[0]["params"]["requestId"], slow[0]["id"]);
    }

    #[test]
    fn f3_queues_and_the_backlog_are_bounded_by_bytes() {
        let big = MAX_QUEUED_BYTES / 2 + 1;
        // One message always fits; a second past the bytes does not.
        let (tx, mut rx) = queue(64);
        tx.offer(json!(1), big).unwrap();
        assert!(matches!(tx.offer(json!(2), big), Err(Unqueued::Full(_))));
        assert!(rx.rx.try_recv().is_ok());
        rx.held.bytes.fetch_sub(big, Ordering::SeqCst);
        tx.offer(json!(3), big).unwrap();
        // The backlog drops its oldest past the bytes.
        let mut r = Routes::default();
        for i in 0..5 {
            r.keep_for_get(json!({ "n": i }), big);
        }
        assert_eq!(r.backlog.len(), 1);
        assert_eq!(r.backlog.front().unwrap().0["n"], 4);
        for i in 0..10 {
            r.keep_for_get(json!({ "n": i }), MAX_QUEUED_BYTES / 4);
        }
        assert!(r.backlog_bytes <= MAX_QUEUED_BYTES);
        assert_eq!(r.backlog.front().unwrap().0["n"], 6);
        assert_eq!(r.take_backlog().len(), 4);
        assert_eq!(r.backlog_bytes, 0);
    }

    #[tokio::test]
    async fn f6_a_slow_client_never_holds_the_session_up() {
        let routes: SharedRoutes = Arc::default();
        let (post_tx, post_rx) = queue(2);
        let (get_tx, mut get_rx) = queue(64);
        let mut call = [request(json!(1), "tools/call")];
        {
            let mut r = routes.lock().unwrap();
            r.open_post(post_tx, true, &mut call, &[]);
            r.get = Some(get_tx);
        }
        let (mut server, stdout) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(route_output(stdout, Arc::clone(&routes), "t".into()));
        // Sampling requests for the POST nobody reads, then a notification.
        let mut out = String::new();
        for i in 0..5 {
            out.push_str(&format!(
                "{}\n",
                request(json!(100 + i), "sampling/createMessage")
            ));
        }
        out.push_str("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n");
        tokio::io::AsyncWriteExt::write_all(&mut server, out.as_bytes())
            .await
            .unwrap();
        // Everything is handed out at once: the POST ended with an error,
        // what it could not take goes to the GET stream.
        let first = tokio::time::timeout(std::time::Duration::from_secs(2), get_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first["id"], 102);
        assert!(post_rx.overflowed(), "the POST's stream ends with an error");
        assert!(routes.lock().unwrap().posts.is_empty());
        let mut rest = Vec::new();
        for _ in 0..3 {
            rest.push(get_rx.recv().await.unwrap());
        }
        assert_eq!(rest[2]["method"], "notifications/message");
        drop(server);
        task.await.unwrap();
    }

    #[test]
    fn f7_an_open_stream_counts_as_use() {
        let mut r = Routes::default();
        assert!(!r.streaming());
        let (get_tx, get_rx) = queue(8);
        r.get = Some(get_tx);
        assert!(r.streaming(), "an open GET stream");
        drop(get_rx);
        assert!(!r.streaming(), "a GET stream the client closed");
        let (tx, _rx) = queue(8);
        let n = r.open_post(tx, true, &mut [], &[]);
        assert!(r.streaming(), "a POST waiting");
        r.close_post(n);
        assert!(!r.streaming());
    }
}
