//! Where a local MCP server's messages go (see [`crate::stdio`]): an
//! answer to the POST that asked, progress to the POST whose request
//! carries its token, a server request (sampling, elicitation, roots) to
//! the newest POST that streams, else, as other notifications, the GET
//! stream, else kept for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::mcp_messages::id_key;

/// How long a message waits for a slow client's stream before it is
/// handed elsewhere.
const SEND_WAIT: Duration = Duration::from_secs(30);
/// Messages kept for the GET stream while none is open.
pub(crate) const MAX_BACKLOG: usize = 256;
/// Longest line (one JSON-RPC message) read from a server.
const MAX_LINE: usize = crate::mcp_stream::MAX_EVENT;

/// Where the server's messages go.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// A forwarded request's id → the POST waiting for its answer.
    pub(crate) answers: HashMap<String, u64>,
    /// A progress token → the POST whose request carries it.
    pub(crate) progress: HashMap<String, u64>,
    /// POSTs waiting: their queue, and whether their client takes a stream
    /// (so other messages may go there too).
    pub(crate) posts: BTreeMap<u64, (mpsc::Sender<Value>, bool)>,
    /// The GET stream, when one is open.
    pub(crate) get: Option<mpsc::Sender<Value>>,
    /// Messages for the GET stream while none is open.
    pub(crate) backlog: VecDeque<Value>,
    next: u64,
}

/// Where one message from the server goes.
pub(crate) enum Target {
    Send(mpsc::Sender<Value>),
    Backlog,
    Drop,
}

impl Routes {
    pub(crate) fn target(&mut self, msg: &Value) -> Target {
        let Some(obj) = msg.as_object() else {
            return Target::Drop;
        };
        let is_answer = !obj.contains_key("method");
        if is_answer {
            let post = obj
                .get("id")
                .and_then(|id| self.answers.remove(&id_key(id)));
            return match post.and_then(|p| self.posts.get(&p)) {
                Some((tx, _)) => Target::Send(tx.clone()),
                // Nobody asked (or the POST is gone): nowhere to go.
                None => Target::Drop,
            };
        }
        let token = (obj.get("method").and_then(Value::as_str) == Some("notifications/progress"))
            .then(|| obj.get("params").and_then(|p| p.get("progressToken")))
            .flatten();
        let by_token = token
            .and_then(|t| self.progress.get(&id_key(t)))
            .and_then(|p| self.posts.get(p))
            .filter(|(_, streams)| *streams);
        // A server request is made while the server handles one of the
        // client's: it goes on the newest POST that streams. Other
        // notifications (logging, list changes) are the GET stream's: a
        // POST whose client never asked for them stays plain JSON.
        let is_request = obj.contains_key("id");
        let newest = || {
            self.posts
                .values()
                .rev()
                .find(|(_, streams)| *streams && is_request)
        };
        match by_token.or_else(newest) {
            Some((tx, _)) => Target::Send(tx.clone()),
            None => match &self.get {
                Some(tx) => Target::Send(tx.clone()),
                None => Target::Backlog,
            },
        }
    }

    pub(crate) fn keep_for_get(&mut self, msg: Value) {
        if self.backlog.len() >= MAX_BACKLOG {
            tracing::warn!(
                "an MCP session's client opens no stream: its oldest message is dropped"
            );
            self.backlog.pop_front();
        }
        self.backlog.push_back(msg);
    }

    /// Registers a POST waiting for answers to `requests`.
    pub(crate) fn open_post(
        &mut self,
        tx: mpsc::Sender<Value>,
        streams: bool,
        requests: &[Value],
        tokens: &[Value],
    ) -> u64 {
        self.next += 1;
        let n = self.next;
        for id in requests {
            self.answers.insert(id_key(id), n);
        }
        for t in tokens {
            self.progress.insert(id_key(t), n);
        }
        self.posts.insert(n, (tx, streams));
        n
    }

    pub(crate) fn close_post(&mut self, n: u64) {
        self.posts.remove(&n);
        self.answers.retain(|_, p| *p != n);
        self.progress.retain(|_, p| *p != n);
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

/// Hands the server's messages out as [`Routes`] says.
pub(crate) async fn route_output(
    stdout: tokio::process::ChildStdout,
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
        let target = match routes.lock() {
            Ok(mut r) => r.target(&msg),
            Err(_) => break,
        };
        let is_answer = msg.get("method").is_none();
        let undelivered = match target {
            Target::Send(tx) => match tokio::time::timeout(SEND_WAIT, tx.send(msg)).await {
                Ok(Ok(())) => None,
                Ok(Err(mpsc::error::SendError(m))) => Some(m),
                Err(_) => None,
            },
            Target::Backlog => Some(msg),
            Target::Drop => None,
        };
        if let (Some(m), false) = (undelivered, is_answer)
            && let Ok(mut r) = routes.lock()
        {
            r.keep_for_get(m);
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

    fn sent_to(t: Target, rx: &mut mpsc::Receiver<Value>) -> Option<Value> {
        match t {
            Target::Send(tx) => {
                tx.try_send(json!({"probe": true})).unwrap();
                rx.try_recv().ok()
            }
            Target::Backlog | Target::Drop => None,
        }
    }

    #[test]
    fn server_messages_go_where_the_streamable_transport_would_put_them() {
        let mut r = Routes::default();
        let (json_tx, mut json_rx) = mpsc::channel(8);
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let (b_tx, mut b_rx) = mpsc::channel(8);
        // A POST whose client takes only JSON, then two that take streams.
        r.open_post(json_tx, false, &[json!(1)], &[]);
        let a = r.open_post(a_tx, true, &[json!("a")], &[json!("tok-a")]);
        r.open_post(b_tx, true, &[json!(2)], &[]);
        // An answer goes to the POST that asked, once.
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert!(sent_to(r.target(&answer), &mut json_rx).is_some());
        assert!(matches!(r.target(&answer), Target::Drop), "asked once");
        // Progress follows its token; other messages go to the newest stream.
        let progress =
            json!({"method": "notifications/progress", "params": {"progressToken": "tok-a"}});
        assert!(sent_to(r.target(&progress), &mut a_rx).is_some());
        let sampling = json!({"jsonrpc": "2.0", "id": 9, "method": "sampling/createMessage"});
        assert!(sent_to(r.target(&sampling), &mut b_rx).is_some());
        // A notification no request asked for waits for the GET stream.
        let log = json!({"jsonrpc": "2.0", "method": "notifications/message"});
        assert!(matches!(r.target(&log), Target::Backlog));
        // With no POST streaming, the GET stream; with none, the backlog.
        r.close_post(a);
        r.posts.retain(|_, (_, streams)| !*streams);
        assert!(matches!(r.target(&sampling), Target::Backlog));
        let (get_tx, mut get_rx) = mpsc::channel(8);
        r.get = Some(get_tx);
        assert!(sent_to(r.target(&sampling), &mut get_rx).is_some());
        // The backlog is bounded: the oldest go first.
        for i in 0..MAX_BACKLOG + 5 {
            r.keep_for_get(json!({ "n": i }));
        }
        assert_eq!(r.backlog.len(), MAX_BACKLOG);
        assert_eq!(r.backlog.front().unwrap()["n"], 5);
        assert!(r.progress.is_empty(), "a closed POST leaves no route");
    }
}
