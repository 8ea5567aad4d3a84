//! MCP messages relayed as server-sent events, one event at a time: each
//! event's JSON-RPC message is inspected on its way (`tools/list` answers
//! filtered), its id and name kept (`Last-Event-ID` resumption), and the
//! gateway's own refusals for the same POST appended when the stream ends.
//!
//! Every message that answers with a `tools` list is filtered, whatever
//! its id: an id the server normalises (`1.0` → `1`) cannot dodge it.
//!
//! A stream ends when the token that opened it is revoked or expires, its
//! task reaches its hard end, an agent of its chain is quarantined, or
//! the gateway's revocation view goes stale (what is refused stays
//! refused); after [`MAX_STREAM`] (the client reconnects); when one event
//! passes [`MAX_EVENT`] bytes; and when the client stops reading for
//! [`MAX_STREAM`] (a slow client holds at most [`AHEAD_BYTES`] in memory:
//! the upstream is read only as fast as the client reads). A task may
//! hold [`MAX_STREAMS_PER_TASK`] streams from HTTP upstreams at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use serde_json::Value;
use sse_stream::{Sse, SseByteStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};
use writ_core::api::Tool;

use crate::auth::Caller;
use crate::gateway::Gateway;
use crate::mcp_messages::{Call, filter};
use crate::owner::{Owner, agent_live};
use crate::state::Bundle;

/// Longest a stream lasts; the client reconnects (with `Last-Event-ID`
/// where the server keeps events).
pub(crate) const MAX_STREAM: Duration = Duration::from_secs(3600);
/// Largest single event (one JSON-RPC message or batch) read from an
/// upstream, on a stream or a stdio server's line: 4 MiB, as large as a
/// message an agent may send.
pub(crate) const MAX_EVENT: usize = crate::mcp_messages::MAX_MESSAGE;
/// Events encoded ahead of a client that reads slowly, and their bytes.
const AHEAD: usize = 8;
const AHEAD_BYTES: usize = 4 * 1024 * 1024;
/// Streams a task (or a token without one) may hold open from HTTP
/// upstreams at once.
pub(crate) const MAX_STREAMS_PER_TASK: usize = 16;

/// One MCP request's context, owned, for a stream that outlives the handler.
#[derive(Clone)]
pub(crate) struct Owned {
    pub gw: Arc<Gateway>,
    pub bundle: Arc<Bundle>,
    pub caller: Caller,
    pub tool: Tool,
    pub path: String,
}

impl Owned {
    pub(crate) fn call(&self) -> Call<'_> {
        Call {
            gw: &self.gw,
            bundle: &self.bundle,
            caller: &self.caller,
            tool: &self.tool,
            path: &self.path,
        }
    }

    /// Whether the token that opened the stream still counts: as for a
    /// stdio session (`owner`), and the token itself has not expired.
    fn still_valid(&self, owner: &Owner) -> bool {
        let view = &self.gw.view;
        let now = view.now().secs();
        let bundle = view.bundle();
        view.fresh()
            && now
                <= self
                    .caller
                    .claims
                    .exp
                    .saturating_add(writ_core::token::LEEWAY_SECS)
            && owner
                .ended(now, &|jti| view.is_revoked(jti), &|id| {
                    agent_live(bundle.as_deref(), id)
                })
                .is_none()
    }

    /// Whom the streams of this request count against.
    pub(crate) fn stream_key(&self) -> String {
        match &self.caller.claims.task {
            Some(task) => format!("task:{task}"),
            None => format!("token:{}", self.caller.claims.jti),
        }
    }
}

/// The streams open from HTTP upstreams, per task.
#[derive(Debug, Default)]
pub(crate) struct OpenStreams(Arc<std::sync::Mutex<HashMap<String, usize>>>);

/// One open stream's place, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    key: String,
}

impl OpenStreams {
    /// A place for one more stream of `key`, if it has one left.
    pub(crate) fn take(&self, key: &str) -> Option<StreamSlot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(key.to_owned()).or_insert(0);
        if *n >= MAX_STREAMS_PER_TASK {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            open: Arc::clone(&self.0),
            key: key.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.open.lock()
            && let Some(n) = m.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// The events of an upstream's SSE body; an event past [`MAX_EVENT`]
/// bytes ends it with an error.
pub(crate) fn events_of(
    resp: reqwest::Response,
) -> impl Stream<Item = Result<Sse, sse_stream::Error>> + Send + 'static {
    let pending = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&pending);
    let bytes = resp.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        let held = counted.fetch_add(chunk.len(), Ordering::SeqCst) + chunk.len();
        if held > MAX_EVENT {
            return Err(std::io::Error::other(format!(
                "an event over {MAX_EVENT} bytes"
            )));
        }
        Ok(chunk)
    });
    // Bytes held count from the last event out.
    SseByteStream::new(bytes).inspect(move |_| pending.store(0, Ordering::SeqCst))
}

/// An SSE event carrying one JSON-RPC message.
pub(crate) fn message_event(msg: &Value) -> Sse {
    Sse::default().event("message").data(msg.to_string())
}

fn inspect_event(c: Call<'_>, mut ev: Sse) -> Sse {
    let parsed = ev
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok());
    if let Some(mut v) = parsed {
        match &mut v {
            Value::Array(items) => items.iter_mut().for_each(|m| filter(c, m)),
            m => filter(c, m),
        }
        ev.data = Some(v.to_string());
    }
    ev
}

/// Relays `events` to the client as they come, inspected, then `trailer`
/// (the gateway's refusals), with `keep`'s headers.
pub(crate) fn respond<S, E>(
    ctx: Owned,
    events: S,
    trailer: Vec<Value>,
    keep: &HeaderMap,
) -> Response
where
    S: Stream<Item = Result<Sse, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<(Bytes, OwnedSemaphorePermit)>(AHEAD);
    let ahead = Arc::new(Semaphore::new(AHEAD_BYTES));
    let gw = Arc::clone(&ctx.gw);
    gw.streams.spawn(async move {
        let deadline = Instant::now() + MAX_STREAM;
        let owner = Owner::of(&ctx.caller);
        let mut events = Box::pin(events);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let send = |bytes: Bytes| {
            let tx = tx.clone();
            let ahead = Arc::clone(&ahead);
            // Bytes held for the client count until its body takes them.
            let n = u32::try_from(bytes.len().min(AHEAD_BYTES)).unwrap_or(u32::MAX);
            async move {
                tokio::select! {
                    r = async {
                        let Ok(permit) = ahead.acquire_many_owned(n).await else {
                            return false;
                        };
                        tx.send((bytes, permit)).await.is_ok()
                    } => r,
                    () = sleep_until(deadline) => false,
                }
            }
        };
        loop {
            let next = tokio::select! {
                e = events.next() => e,
                // The client went away: so does the upstream stream, at once.
                () = tx.closed() => return,
                _ = tick.tick() => {
                    if ctx.still_valid(&owner) { continue } else { break }
                }
                () = sleep_until(deadline) => break,
            };
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    tracing::warn!(tool = %ctx.tool.name, error = %e, "MCP event stream broke off");
                    break;
                }
                None => break,
            };
            if !ctx.still_valid(&owner) {
                break;
            }
            let ev = inspect_event(ctx.call(), ev);
            let Ok(bytes) = ev.encode() else { continue };
            if !send(bytes).await {
                // The client went away or stopped reading.
                return;
            }
        }
        drop(events);
        for refusal in trailer {
            if let Ok(bytes) = message_event(&refusal).encode()
                && !send(bytes).await
            {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let (bytes, permit) = rx.recv().await?;
        drop(permit);
        Some((Ok::<_, std::io::Error>(bytes), rx))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    for (k, v) in keep {
        h.insert(k.clone(), v.clone());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use super::*;

    #[tokio::test]
    async fn an_event_past_the_limit_ends_the_stream_and_those_before_pass_whole() {
        let first = Bytes::from_static(b"id: 7\nevent: message\ndata: {\"jsonrpc\":\"2.0\"}\n\n");
        let chunk = Bytes::from(format!("data: {}\n", "x".repeat(1024 * 1024)));
        let chunks: Vec<Result<Bytes, std::io::Error>> = std::iter::once(Ok(first))
            .chain((0..20).map(|_| Ok(chunk.clone())))
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let resp = reqwest::Response::from(axum::http::Response::new(body));
        let got: Vec<_> = events_of(resp).collect().await;
        assert_eq!(got.len(), 2, "one event, then the error");
        let ev = got[0].as_ref().unwrap();
        assert_eq!(ev.id.as_deref(), Some("7"));
        assert_eq!(ev.data.as_deref(), Some(r#"{"jsonrpc":"2.0"}"#));
        assert!(
            got[1].is_err(),
            "an event over {MAX_EVENT} bytes is not read on"
        );
    }

    #[test]
    fn f3_a_task_holds_at_most_max_streams_per_task() {
        let open = OpenStreams::default();
        let mut held: Vec<_> = (0..MAX_STREAMS_PER_TASK)
            .map(|_| open.take("task:t1").unwrap())
            .collect();
        assert!(open.take("task:t1").is_none(), "one over the limit");
        assert!(open.take("task:t2").is_some(), "another task has its own");
        held.pop();
        assert!(
            open.take("task:t1").is_some(),
            "a closed stream gives its place back"
        );
        drop(held);
        assert_eq!(open.0.lock().unwrap().get("task:t1"), None);
    }

    #[test]
    fn events_keep_their_id_and_name() {
        let ev = Sse::default()
            .event("message")
            .id("17")
            .data(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#);
        let text = String::from_utf8(ev.encode().unwrap().to_vec()).unwrap();
        assert!(text.contains("id: 17") || text.contains("id:17"), "{text}");
        assert!(text.contains("event: message") || text.contains("event:message"));
    }
}
