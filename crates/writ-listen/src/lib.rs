//! Serving HTTP/1.1 on a TCP listener with the limits an endpoint open to
//! anyone needs.
//!
//! A client that sends its headers a byte at a time, never sends the body
//! it announced, keeps a connection open doing nothing, or opens connection
//! after connection, costs itself and not everyone else: headers must
//! arrive within [`Limits::header_timeout`], a body within
//! [`Limits::body_timeout`] of its headers, a connection with no request in
//! flight closes after [`Limits::idle_timeout`], the listener holds at most
//! [`Limits::max_connections`] connections (past that it stops accepting,
//! and the kernel's backlog waits, as Envoy's listener connection limit
//! does) and at most [`Limits::max_client_connections`] from one client
//! address (past that a new connection from it is closed at once).
//!
//! A client is its peer address; behind a reverse proxy listed in
//! [`Limits::trusted_proxies`], it is the address that proxy appended to
//! `X-Forwarded-For`. Handlers find it as a [`ClientAddr`] request
//! extension (and the peer as axum's `ConnectInfo<SocketAddr>`).
//!
//! With [`Limits::tls`], the listener speaks TLS only (see [`tls`]); the
//! handshake must finish within [`Limits::header_timeout`].

pub mod rate;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use rate::RateLimits;
pub use tls::{PeerCertificates, Tls, TlsError};

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one listener allows. [`Limits::default`] holds for most
/// deployments; each has a `--limit-*` flag.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections held at once; past this, accepting waits.
    pub max_connections: usize,
    /// Connections held at once from one client address; past this, a new
    /// one from it is closed at once.
    pub max_client_connections: usize,
    /// How long a request's headers may take to arrive.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive, from its headers.
    pub body_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// TLS on this listener; `None` serves plaintext.
    pub tls: Option<Tls>,
    /// Requests a minute per credential and per client (see [`rate`]).
    pub rate: RateLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_client_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            tls: None,
            rate: RateLimits::default(),
        }
    }
}

impl Limits {
    /// The client behind a request from `peer`: `peer` itself, or, when
    /// `peer` is a trusted proxy, the nearest address in `X-Forwarded-For`
    /// that is not one (each proxy appends the address it saw; only the
    /// ones trusted proxies appended can be believed).
    pub fn client_of(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else { return peer };
            for part in v.split(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) => hops.push(ip),
                    // Malformed: nothing before it can be believed.
                    Err(_) => hops.clear(),
                }
            }
        }
        hops.into_iter()
            .rev()
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer)
    }
}

/// The client a request came from (see [`Limits::client_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Serves `app` on `listener` within `limits` until `shutdown` completes;
/// requests in flight then get `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    telemetry::install();
    let limiter = Arc::new(rate::Limiter::new(limits.rate));
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = Arc::new(Clients::default());
    let (stop, stopping) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it
                    // was taken: wait a moment rather than spin.
                    tracing::debug!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let slot = if limits.trusted_proxies.contains(&peer.ip()) {
            None
        } else {
            match Clients::take(&clients, peer.ip(), limits.max_client_connections) {
                Some(s) => Some(s),
                None => {
                    tracing::debug!(client = %peer.ip(), "client is at its connection limit; closing");
                    drop(tcp);
                    continue;
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            app: app.clone(),
            limits: Arc::clone(&limits),
            limiter: Arc::clone(&limiter),
            peer,
            stopping: stopping.clone(),
        };
        conns.spawn(async move {
            match limits_tls(&conn.limits) {
                None => conn.run(tcp, None).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(conn.limits.header_timeout, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let peer_certs = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|c| PeerCertificates(Arc::new(c.to_vec())));
                            conn.run(stream, peer_certs).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(client = %peer.ip(), "TLS handshake timed out");
                        }
                    }
                }
            }
            drop(slot);
            drop(permit);
        });
    }
    let _ = stop.send(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        conns.abort_all();
    }
    Ok(())
}

/// The acceptor for a TLS listener.
fn limits_tls(limits: &Limits) -> Option<tokio_rustls::TlsAcceptor> {
    limits
        .tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(Arc::clone(&t.config)))
}

/// Connections held per client address.
#[derive(Default)]
struct Clients {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its client's count; given back on drop.
struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    fn take(clients: &Arc<Clients>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut held = clients.held.lock().ok()?;
        let n = held.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: Arc::clone(clients),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.clients.held.lock()
            && let Some(n) = held.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

struct Connection {
    app: Router,
    limits: Arc<Limits>,
    limiter: Arc<rate::Limiter>,
    peer: SocketAddr,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn run<S>(mut self, tcp: S, peer_certs: Option<PeerCertificates>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let start = Instant::now();
        let last_read = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let io = TokioIo::new(Tracked {
            inner: tcp,
            start,
            last_read: Arc::clone(&last_read),
        });
        let (app, limits, peer) = (self.app, Arc::clone(&self.limits), self.peer);
        let limiter = Arc::clone(&self.limiter);
        let flights = Arc::clone(&in_flight);
        let service = hyper::service::service_fn(move |req: axum::http::Request<Incoming>| {
            let (app, limits, limiter) = (app.clone(), Arc::clone(&limits), Arc::clone(&limiter));
            let peer_certs = peer_certs.clone();
            let guard = Flight::start(&flights);
            async move {
                let (mut parts, body) = req.into_parts();
                let client = limits.client_of(peer.ip(), &parts.headers);
                // Health checks come from load balancers, often many a
                // second from one address: never limited.
                let refused = if parts.uri.path() == "/healthz" {
                    None
                } else {
                    {
                        let cert = peer_certs
                            .as_ref()
                            .and_then(|c| c.0.first())
                            .map(|d| d.as_ref());
                        limiter
                            .check(client, &parts.headers, cert, Instant::now())
                            .err()
                    }
                };
                parts.extensions.insert(ConnectInfo(peer));
                parts.extensions.insert(ClientAddr(client));
                if let Some(c) = &peer_certs {
                    parts.extensions.insert(c.clone());
                }
                let body = axum::body::Body::new(Deadline {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
                });
                let req = axum::http::Request::from_parts(parts, body);
                let res = match refused {
                    Some(r) => Ok(r.response()),
                    None => app.oneshot(req).await,
                };
                res.map(|r| {
                    r.map(|b| {
                        axum::body::Body::new(Guarded {
                            inner: b,
                            _flight: guard,
                        })
                    })
                })
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .keep_alive(true);
        let conn = http.serve_connection(io, service);
        tokio::pin!(conn);
        let idle = self.limits.idle_timeout;
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                changed = self.stopping.changed(), if !closing => {
                    if changed.is_err() || *self.stopping.borrow() {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                () = tokio::time::sleep(tick), if !closing => {
                    let quiet = start
                        .elapsed()
                        .saturating_sub(Duration::from_millis(last_read.load(Ordering::Relaxed)));
                    if in_flight.load(Ordering::Acquire) == 0 && quiet >= idle {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// A request in flight on a connection, until its response body is done.
struct Flight(Arc<AtomicUsize>);

impl Flight {
    fn start(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(n))
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight while it
/// streams (a long-lived event stream is not an idle connection).
struct Guarded {
    inner: axum::body::Body,
    _flight: Flight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that must arrive in full before its deadline.
struct Deadline {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BoxError::from(
                "the request body did not arrive in time",
            ))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's stream, noting when the client last sent anything.
struct Tracked<S> {
    inner: S,
    start: Instant,
    last_read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let out = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let at = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_read.store(at, Ordering::Relaxed);
        }
        out
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;
    use tokio::net::TcpStream;

    fn headers(xff: &[&str]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let limits = Limits {
            trusted_proxies: vec![proxy, "10.0.0.2".parse().unwrap()],
            ..Limits::default()
        };
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // Not a proxy: its header is not believed.
        assert_eq!(limits.client_of(other, &headers(&["203.0.113.7"])), other);
        // A proxy: the address it appended.
        assert_eq!(limits.client_of(proxy, &headers(&["203.0.113.7"])), client);
        // A client's own forged entry before it does not count.
        assert_eq!(
            limits.client_of(proxy, &headers(&["198.51.100.1, 203.0.113.7"])),
            client
        );
        // Two trusted proxies in a row.
        assert_eq!(
            limits.client_of(proxy, &headers(&["198.51.100.1", "203.0.113.7, 10.0.0.2"])),
            client
        );
        // Nothing believable: the proxy itself.
        assert_eq!(limits.client_of(proxy, &headers(&[])), proxy);
        assert_eq!(limits.client_of(proxy, &headers(&["nonsense"])), proxy);
    }

    /// A server with short timeouts; a body handler echoes what it read.
    async fn server(limits: Limits) -> SocketAddr {
        let app = Router::new().route(
            "/",
            axum::routing::post(|body: Bytes| async move { body }).get(|| async { "ok" }),
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(
            l,
            app,
            limits,
            std::future::pending(),
            Duration::from_secs(1),
        ));
        addr
    }

    async fn closed_within(c: &mut TcpStream, wait: Duration) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(wait, c.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    fn short() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = server(short()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // Kept alive, then idle past the limit: closed.
        assert!(closed_within(&mut c, Duration::from_secs(3)).await);
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_ends_the_request() {
        use tokio::io::AsyncWriteExt as _;
        let addr = server(short()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        assert!(closed_within(&mut c, Duration::from_secs(3)).await);
        // Headers that never end: closed too.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        assert!(closed_within(&mut c, Duration::from_secs(3)).await);
    }

    #[test]
    fn a_client_holds_at_most_its_share_of_connections() {
        let clients = Arc::new(Clients::default());
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let a = Clients::take(&clients, ip, 2).unwrap();
        let _b = Clients::take(&clients, ip, 2).unwrap();
        assert!(Clients::take(&clients, ip, 2).is_none());
        assert!(Clients::take(&clients, "127.0.0.3".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(Clients::take(&clients, ip, 2).is_some());
    }
}
