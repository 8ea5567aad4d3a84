//! Between the Workload API socket and the HTTP/2 server: many gRPC
//! clients on Unix sockets (gRPC C-core since 1.57, and so Python's
//! `grpcio` and py-spiffe; grpc-java; Swift) send the socket's path,
//! percent-encoded, as the `:authority` of every request. The HTTP/2
//! server refuses any authority that is not `host[:port]`, resetting the
//! stream. This shim decodes each header block the client sends (HPACK,
//! with the client's dynamic table), puts `localhost` in place of an
//! authority that is not one, and passes the block on re-encoded without
//! indexing; every other frame, and everything the server sends, passes
//! through untouched. The peer credentials of the real socket go with the
//! connection, so workload attestation still sees the real caller; and
//! every byte read from the client is checked to come from the process
//! attested ([`SenderChecked`]).

use std::io;
use std::os::fd::{AsRawFd as _, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream, Interest, ReadBuf,
};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tonic::transport::server::Connected;

const PREFACE_LEN: usize = 24;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame taken: the server's (default) maximum frame size, so
/// a connection never holds more than this in the shim.
const MAX_FRAME: usize = 16_384;
/// The frames this shim writes stay within the same size.
const OUT_FRAME: usize = 16_384;
/// A header block larger than this is refused (the connection closes).
const MAX_BLOCK: usize = 16_384;
/// The decoded header list may not exceed the server's limit (HTTP/2
/// counts each field as name + value + 32).
const MAX_HEADER_LIST: usize = 16_384;

/// One accepted connection, as the gRPC server sees it: who connected,
/// attested when it did.
pub struct Shimmed {
    io: DuplexStream,
    info: crate::attestor::Peer,
}

impl Connected for Shimmed {
    type ConnectInfo = crate::attestor::Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Shimmed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shimmed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The identity of whoever sends on a connection, as the kernel states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sender {
    pid: i32,
    uid: u32,
    gid: u32,
}

/// The client's side of a connection, read with the credentials the
/// kernel attaches to everything sent on a Unix socket (`SO_PASSCRED`, set
/// on the listening socket so that no byte arrives without them). The
/// kernel never returns the writes of two processes in one read, so every
/// byte passed on is known to come from `expect`: the process that
/// connected, and was attested. Anything from another process (a child
/// that inherited the socket, or one it was passed to) ends the
/// connection: the identity attested is that process's alone.
struct SenderChecked {
    half: OwnedReadHalf,
    expect: Sender,
}

/// Why a connection is cut.
fn foreign(got: Option<Sender>) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("sent by a process other than the one attested ({got:?})"),
    )
}

/// One `recvmsg` into `into`: the bytes read, and who sent them.
fn receive(fd: RawFd, into: &mut [u8]) -> io::Result<(usize, Option<Sender>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg};
    let mut space = nix::cmsg_space!(UnixCredentials);
    let mut iov = [io::IoSliceMut::new(into)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut sender = None;
    // There is room for the credentials only: descriptors sent along do
    // not fit, so the kernel closes them and reports the truncation, which
    // ends the connection.
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::ScmCredentials(c) => {
                sender = Some(Sender {
                    pid: c.pid(),
                    uid: c.uid(),
                    gid: c.gid(),
                });
            }
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
                return Err(bad("descriptors sent on the Workload API socket"));
            }
            _ => {}
        }
    }
    Ok((msg.bytes, sender))
}

impl AsyncRead for SenderChecked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let stream: &UnixStream = this.half.as_ref();
        loop {
            std::task::ready!(stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match stream.try_io(Interest::READABLE, || receive(stream.as_raw_fd(), unfilled)) {
                Ok((0, _)) => return Poll::Ready(Ok(())),
                Ok((n, sender)) => {
                    if sender != Some(this.expect) {
                        return Poll::Ready(Err(foreign(sender)));
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Has the listening socket attach the sender's credentials to everything
/// sent to its connections (inherited by each accepted socket; before a
/// connection is accepted the kernel attaches them anyway).
pub fn pass_credentials(listener: &impl std::os::fd::AsFd) -> io::Result<()> {
    nix::sys::socket::setsockopt(listener, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(io::Error::from)
}

/// Attests the peer (within [`crate::attestor::ATTEST_TIME`] and its uid's
/// share of the work), then puts the shim between the socket and the
/// server. `None`: the connection is closed unanswered (its uid has too
/// many being attested, or the process ran another executable while it
/// was being attested).
pub async fn admit(stream: UnixStream, gate: Arc<crate::attestor::Gate>) -> Option<Shimmed> {
    let cred = stream.peer_cred().ok()?;
    let Some(ticket) = gate.enter(cred.uid()) else {
        tracing::warn!(
            uid = cred.uid(),
            "too many Workload API connections of one uid being attested; one closed"
        );
        return None;
    };
    pass_credentials(&stream).ok()?;
    let info =
        crate::attestor::attest(&stream, cred.pid(), cred.uid(), cred.gid(), &ticket).await?;
    drop(ticket);
    let expect = Sender {
        pid: cred.pid().unwrap_or(0),
        uid: cred.uid(),
        gid: cred.gid(),
    };
    Some(wrap(stream, expect, info))
}

/// Puts the shim between the socket and the server.
fn wrap(stream: UnixStream, expect: Sender, info: crate::attestor::Peer) -> Shimmed {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (client_r, mut client_w) = stream.into_split();
    let (mut server_r, mut server_w) = tokio::io::split(ours);
    let to_client = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    });
    let to_client_abort = to_client.abort_handle();
    let to_server = tokio::spawn(async move {
        let from = SenderChecked {
            half: client_r,
            expect,
        };
        match rewrite(from, &mut server_w).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                // Nothing more goes either way.
                tracing::warn!(error = %e, "workload API connection cut");
                to_client_abort.abort();
            }
            Err(e) => tracing::debug!(error = %e, "workload API connection closed by the shim"),
        }
        // Whatever happened, the server sees the end of the connection.
        let _ = server_w.shutdown().await;
    });
    tokio::spawn(async move {
        let _ = to_client.await;
        to_server.abort();
    });
    Shimmed { io: theirs, info }
}

fn bad(m: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.to_owned())
}

/// A header block being assembled from HEADERS and CONTINUATION frames.
struct Pending {
    stream: [u8; 4],
    flags: u8,
    priority: Vec<u8>,
    block: Vec<u8>,
}

const PREFACE: &[u8; PREFACE_LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn rewrite(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    let mut preface = [0u8; PREFACE_LEN];
    from.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(bad("not HTTP/2"));
    }
    to.write_all(&preface).await?;
    let mut decoder = hpack::Decoder::new();
    let mut pending: Option<Pending> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let [l0, l1, l2, ty, flags, s0, s1, s2, s3] = head;
        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        if len > MAX_FRAME {
            return Err(bad("frame too large"));
        }
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        let stream = [s0, s1, s2, s3];
        match (ty, pending.take()) {
            (HEADERS, None) => {
                let mut body = payload.as_slice();
                if flags & PADDED != 0 {
                    let (&pad, rest) = body.split_first().ok_or_else(|| bad("bad padding"))?;
                    body = rest
                        .get(
                            ..rest
                                .len()
                                .checked_sub(usize::from(pad))
                                .ok_or_else(|| bad("bad padding"))?,
                        )
                        .ok_or_else(|| bad("bad padding"))?;
                }
                let mut priority = Vec::new();
                if flags & PRIORITY != 0 {
                    let (p, rest) = body
                        .split_at_checked(5)
                        .ok_or_else(|| bad("bad priority"))?;
                    priority = p.to_vec();
                    body = rest;
                }
                if body.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                let p = Pending {
                    stream,
                    flags,
                    priority,
                    block: body.to_vec(),
                };
                if flags & END_HEADERS != 0 {
                    emit(&mut to, &mut decoder, p).await?;
                } else {
                    pending = Some(p);
                }
            }
            (CONTINUATION, Some(mut p)) if stream == p.stream => {
                p.block.extend_from_slice(&payload);
                if p.block.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                if flags & END_HEADERS != 0 {
                    emit(&mut to, &mut decoder, p).await?;
                } else {
                    pending = Some(p);
                }
            }
            (_, Some(_)) | (CONTINUATION, None) => {
                return Err(bad("interleaved header block"));
            }
            (_, None) => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
            }
        }
    }
    to.flush().await
}

/// Decodes one header block with the client's table, within the header
/// list budget; a block the decoder cannot take (it panics on some
/// malformed input) ends the connection.
fn decode(decoder: &mut hpack::Decoder<'_>, block: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut fields = Vec::new();
    let mut size = 0usize;
    let mut over = false;
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decoder.decode_with_cb(block, |name, value| {
            size = size.saturating_add(name.len() + value.len() + 32);
            if size > MAX_HEADER_LIST {
                over = true;
            } else {
                fields.push((name.into_owned(), value.into_owned()));
            }
        })
    }));
    match decoded {
        Ok(Ok(())) if !over => Ok(fields),
        Ok(Ok(())) => Err(bad("header list too large")),
        Ok(Err(e)) => Err(bad(&format!("bad header block: {e:?}"))),
        Err(_) => Err(bad("bad header block")),
    }
}

/// Whether `value` is a valid `host[:port]` authority.
fn valid_authority(value: &[u8]) -> bool {
    tonic::codegen::http::uri::Authority::try_from(value).is_ok()
}

/// Re-encodes one header block (literal fields without indexing, so the
/// server's table never changes) and writes it as HEADERS (and
/// CONTINUATION) frames.
async fn emit(
    to: &mut (impl AsyncWrite + Unpin),
    decoder: &mut hpack::Decoder<'_>,
    p: Pending,
) -> io::Result<()> {
    let fields = decode(decoder, &p.block)?;
    let mut block = Vec::with_capacity(p.block.len() + 32);
    for (name, value) in &fields {
        let value: &[u8] = if name.as_slice() == b":authority" && !valid_authority(value) {
            b"localhost"
        } else {
            value
        };
        // Literal header field without indexing, new name (RFC 7541 6.2.2).
        block.push(0);
        hpack::encoder::encode_integer_into(name.len(), 7, 0, &mut block)?;
        block.extend_from_slice(name);
        hpack::encoder::encode_integer_into(value.len(), 7, 0, &mut block)?;
        block.extend_from_slice(value);
    }
    let mut body = p.priority.clone();
    body.extend_from_slice(&block);
    let mut chunks = body.chunks(OUT_FRAME).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let (ty, mut flags) = if first {
            (HEADERS, p.flags & (END_STREAM | PRIORITY))
        } else {
            (CONTINUATION, 0)
        };
        if last {
            flags |= END_HEADERS;
        }
        let len = chunk.len();
        let head = [
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            ty,
            flags,
            p.stream[0],
            p.stream[1],
            p.stream[2],
            p.stream[3],
        ];
        to.write_all(&head).await?;
        to.write_all(chunk).await?;
        first = false;
    }
    if body.is_empty() {
        // An empty block still needs its HEADERS frame.
        let head = [
            0,
            0,
            0,
            HEADERS,
            (p.flags & END_STREAM) | END_HEADERS,
            p.stream[0],
            p.stream[1],
            p.stream[2],
            p.stream[3],
        ];
        to.write_all(&head).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes from the process that connected pass, those written before
    /// the connection was accepted included; the first byte from any other
    /// process (here a child that inherited the socket) ends the reading.
    #[tokio::test]
    async fn h1_only_the_process_that_connected_may_send() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        pass_credentials(&listener).unwrap();
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        client.write_all(b"early").unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let cred = server.peer_cred().unwrap();
        let expect = Sender {
            pid: cred.pid().unwrap(),
            uid: cred.uid(),
            gid: cred.gid(),
        };
        assert_eq!(expect.pid, std::process::id() as i32);
        let (half, _w) = server.into_split();
        let mut from = SenderChecked { half, expect };
        let mut got = [0u8; 5];
        from.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early");
        client.write_all(b"late").unwrap();
        let mut got = [0u8; 4];
        from.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"late");

        // A child holding the same socket writes: refused, though its
        // parent (the process that connected) is still there.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf child >&0")
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                client.try_clone().unwrap(),
            )))
            .status()
            .unwrap();
        assert!(status.success());
        let mut rest = Vec::new();
        let err = from.read_to_end(&mut rest).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[test]
    fn socket_paths_are_not_authorities_and_hosts_are() {
        assert!(!valid_authority(b"tmp%2Fsp%2Fagent.sock"));
        assert!(!valid_authority(b"/run/writ/agent.sock"));
        assert!(valid_authority(b"localhost"));
        assert!(valid_authority(b"127.0.0.1:8080"));
    }

    fn frame(ty: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            ty,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    /// Oversized frames, oversized header lists and blocks the decoder
    /// cannot take close the connection instead of growing or crashing it.
    #[tokio::test]
    async fn hostile_input_closes_the_connection() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut too_big = preface.clone();
        too_big.extend_from_slice(&frame(0, 0, &vec![0; MAX_FRAME + 1]));
        // One large literal in the table, then many references to it.
        let mut amplify = vec![0x40, 0x01, b'x', 0x7f];
        hpack::encoder::encode_integer_into(4000, 7, 0, &mut amplify).unwrap();
        amplify.extend(std::iter::repeat_n(b'y', 4000));
        amplify.extend(std::iter::repeat_n(0xbe, 2000));
        let mut list = preface.clone();
        list.extend_from_slice(&frame(HEADERS, END_HEADERS, &amplify));
        // A table size update cut short.
        let mut cut = preface.clone();
        cut.extend_from_slice(&frame(HEADERS, END_HEADERS, &[0x3f]));
        let mut not_h2 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        not_h2.resize(PREFACE_LEN + 9, b' ');
        for (input, what) in [
            (too_big, "frame"),
            (list, "list"),
            (cut, "cut"),
            (not_h2, "not h2"),
        ] {
            let mut out = Vec::new();
            let r = rewrite(input.as_slice(), &mut out).await;
            assert!(r.is_err(), "{what}: {r:?}");
            assert!(out.len() <= PREFACE_LEN, "{what}: something was passed on");
        }
    }

    /// A HEADERS frame with a socket path as authority comes out with
    /// `localhost` and every other field unchanged.
    #[tokio::test]
    async fn the_authority_is_rewritten_and_the_rest_kept() {
        let mut enc = hpack::Encoder::new();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":authority", b"%2Frun%2Fwrit%2Fagent.sock"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b"workload.spiffe.io", b"true"),
        ];
        let block = enc.encode(fields.clone());
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let len = block.len();
        input.extend_from_slice(&[
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            HEADERS,
            END_HEADERS,
            0,
            0,
            0,
            1,
        ]);
        input.extend_from_slice(&block);
        // A DATA frame passes as it is.
        input.extend_from_slice(&[0, 0, 2, 0, END_STREAM, 0, 0, 0, 1, 7, 7]);
        let mut out = Vec::new();
        rewrite(input.as_slice(), &mut out).await.unwrap();
        assert_eq!(&out[..PREFACE_LEN], &input[..PREFACE_LEN]);
        let rest = &out[PREFACE_LEN..];
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        assert_eq!(rest[3], HEADERS);
        assert_eq!(rest[4], END_HEADERS);
        let decoded = hpack::Decoder::new().decode(&rest[9..9 + len]).unwrap();
        let got: Vec<(&[u8], &[u8])> = decoded
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(got[1], (&b":authority"[..], &b"localhost"[..]));
        assert_eq!(got[0], fields[0]);
        assert_eq!(got[2], fields[2]);
        assert_eq!(got[3], fields[3]);
        assert_eq!(
            &rest[9 + len..],
            &[0, 0, 2, 0, END_STREAM, 0, 0, 0, 1, 7, 7]
        );
    }
}
