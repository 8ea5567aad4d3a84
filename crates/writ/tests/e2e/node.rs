//! `writ node` and its Workload API against real processes: who is served
//! is decided by the kernel, for the process that sends each request, and
//! attesting one peer never holds up another.
//!
//! Some tests need other processes doing precise things (connect, hand the
//! socket to a child, exec). They are this test binary run again in a
//! role: [`helper_role_for_child_processes`] does nothing unless `ROLE` is
//! set.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::json;

use crate::harness::{ADMIN, BIN, Broker};

const ROLE: &str = "WRIT_E2E_NODE_ROLE";
const SOCKET: &str = "WRIT_E2E_NODE_SOCKET";
const ALLOWED: &str = "WRIT_E2E_NODE_ALLOWED";
const NOBODY: u32 = 65534;

// --- the Workload API, as a gRPC client speaks it ---

/// FetchX509SVID over `io`: the SPIFFE IDs served, or why none were.
async fn fetch_x509(io: tokio::net::UnixStream) -> Result<Vec<String>, String> {
    let (client, conn) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.map_err(|e| format!("ready: {e}"))?;
    let req = http::Request::builder()
        .method("POST")
        .uri("http://localhost/SpiffeWorkloadAPI/FetchX509SVID")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("workload.spiffe.io", "true")
        .body(())
        .unwrap();
    let (response, mut send) = client
        .send_request(req, false)
        .map_err(|e| format!("send: {e}"))?;
    // An empty X509SVIDRequest, gRPC-framed.
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .map_err(|e| format!("send: {e}"))?;
    let response = response.await.map_err(|e| format!("response: {e}"))?;
    if let Some(status) = response.headers().get("grpc-status") {
        let message = response
            .headers()
            .get("grpc-message")
            .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
            .unwrap_or_default();
        return Err(format!("grpc-status {status:?}: {message}"));
    }
    let mut body = response.into_body();
    let mut buf = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len {
                let msg = writ_node::proto::X509svidResponse::decode(&buf[5..5 + len])
                    .map_err(|e| format!("decode: {e}"))?;
                return Ok(msg.svids.into_iter().map(|s| s.spiffe_id).collect());
            }
        }
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| format!("trailers: {e}"))?;
    Err(format!("no SVID: {trailers:?}"))
}

/// This process connects and asks, within `within`.
async fn fetch_as_this_process(socket: &Path, within: Duration) -> Result<Vec<String>, String> {
    let io = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::time::timeout(within, fetch_x509(io))
        .await
        .map_err(|_| format!("no answer within {within:?}"))?
}

// --- a broker and a node ---

async fn post(b: &Broker, path: &str, body: serde_json::Value) -> serde_json::Value {
    let resp = b
        .http()
        .post(b.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// A running `writ node` (node-1), serving the agents registered on it
/// before it started. Killed on drop.
struct Node {
    child: Child,
    socket: PathBuf,
    _stdout: BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Registers node-1 and `agents` (name, selectors), then starts the
    /// node with a socket any user can reach.
    async fn start(b: &Broker, agents: &[(&str, Vec<String>)]) -> Self {
        post(b, "/v1/nodes", json!({ "name": "node-1" })).await;
        for (name, selectors) in agents {
            post(
                b,
                "/v1/agents",
                json!({
                    "name": name,
                    "attestation": { "kind": "spiffe" },
                    "workload": { "node": "node-1", "selectors": selectors },
                }),
            )
            .await;
        }
        let jt = post(b, "/v1/nodes/node-1/join-tokens", json!({ "ttl": 600 })).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("agent.sock");
        let mut child = Command::new(BIN)
            .args([
                "node",
                "--broker",
                &b.addr,
                "--name",
                "node-1",
                "--join-token",
            ])
            .arg(jt["join_token"].as_str().unwrap())
            .arg("--socket")
            .arg(format!("unix://{}", socket.display()))
            .args(["--refresh-ms", "300", "--state-dir"])
            .arg(dir.path().join("state"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WRIT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("workload API listening on"), "{line}");
        Self {
            child,
            socket,
            _stdout: stdout,
            _dir: dir,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

fn this_exe() -> PathBuf {
    std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap()
}

/// This test binary again, in `role`.
fn helper(program: &Path, role: &str) -> Command {
    let mut c = Command::new(program);
    if program != this_exe() {
        // Run through a loader: the loader is the executable.
        c.arg(this_exe());
    }
    c.args([
        "node::helper_role_for_child_processes",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE, role);
    c
}

/// Lines a child prints, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &mpsc::Receiver<String>, prefix: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Processes that connect to the node and stay connected, each running an
/// executable of its own that is large to hash: a copy of the dynamic
/// loader, padded (sparse) to just under the largest size the node hashes,
/// running this test binary. They run as `nobody` when the tests run as
/// root. Killed on drop.
struct SlowPeers {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

/// The dynamic loader this process was started by.
fn loader() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ld-linux") || n.starts_with("ld-musl"))
        })
        .map(PathBuf::from)
        .expect("this test binary is dynamically linked")
}

impl SlowPeers {
    fn start(socket: &Path, count: usize, as_uid: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let loader = loader();
        let mut children = Vec::new();
        let mut waiting = Vec::new();
        for i in 0..count {
            let exe = dir.path().join(format!("loader-{i}"));
            std::fs::copy(&loader, &exe).unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&exe).unwrap();
            f.set_len(511 * 1024 * 1024).unwrap();
            drop(f);
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
            let mut cmd = helper(&exe, "slow-peer");
            cmd.env(SOCKET, socket).stdout(Stdio::piped());
            if as_uid != uid() {
                cmd.uid(as_uid).gid(as_uid);
            }
            let mut child = cmd.spawn().unwrap();
            waiting.push(lines_of(&mut child));
            children.push(child);
        }
        let peers = Self {
            children,
            _dir: dir,
        };
        for rx in &waiting {
            assert!(
                wait_for(rx, "CONNECTED", Duration::from_secs(30)).is_some(),
                "a slow peer did not connect"
            );
        }
        peers
    }
}

impl Drop for SlowPeers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// As who the slow peers run: another user than the workload's when the
/// tests can choose.
fn slow_peer_uid() -> u32 {
    if uid() == 0 { NOBODY } else { uid() }
}

// --- the roles ---

#[test]
fn helper_role_for_child_processes() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let socket = std::env::var(SOCKET).unwrap();
    match role.as_str() {
        // Connect, say so, and hold the connection.
        "slow-peer" => {
            let _conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            println!("CONNECTED");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        // The attack as reviewed: connect, hand the socket to a child,
        // exec an allowed binary.
        "h1-parent" => {
            let conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            let allowed = std::env::var(ALLOWED).unwrap();
            #[allow(
                clippy::zombie_processes,
                reason = "this process execs next; the child outlives what it runs"
            )]
            let _child = helper(&this_exe(), "h1-child")
                .env(SOCKET, &socket)
                .env(ALLOWED, &allowed)
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(conn)))
                .spawn()
                .unwrap();
            let err = Command::new(&allowed).arg("60").exec();
            panic!("exec {allowed}: {err}");
        }
        // The child: once its parent runs the allowed binary, ask for
        // SVIDs on the inherited socket (its standard input).
        "h1-child" => {
            use std::os::fd::AsFd as _;
            let allowed = PathBuf::from(std::env::var(ALLOWED).unwrap());
            let parent = std::os::unix::process::parent_id();
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::fs::read_link(format!("/proc/{parent}/exe")).ok() != Some(allowed.clone()) {
                assert!(Instant::now() < deadline, "the parent did not exec");
                std::thread::sleep(Duration::from_millis(5));
            }
            let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
            let conn = std::os::unix::net::UnixStream::from(fd);
            conn.set_nonblocking(true).unwrap();
            let verdict = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let io = tokio::net::UnixStream::from_std(conn).unwrap();
                    tokio::time::timeout(Duration::from_secs(60), fetch_x509(io)).await
                });
            match verdict {
                Ok(Ok(ids)) => println!("VERDICT: served {ids:?}"),
                Ok(Err(e)) => println!("VERDICT: refused ({e})"),
                Err(_) => println!("VERDICT: no answer"),
            }
            std::io::stdout().flush().unwrap();
        }
        // Connect and ask for itself.
        "fetch-self" => {
            let verdict = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fetch_as_this_process(
                    Path::new(&socket),
                    Duration::from_secs(60),
                ));
            match verdict {
                Ok(ids) => println!("VERDICT: served {ids:?}"),
                Err(e) => println!("VERDICT: refused ({e})"),
            }
            std::io::stdout().flush().unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

// --- the tests ---

/// H1. A process connects, starts a child that keeps the socket, and
/// execs a binary that has an identity here; the child then asks on the
/// inherited socket. The node attested the connection by the parent's
/// executable, which by then is the allowed one: the child must get
/// nothing, however late the node looks (here while its accept loop would
/// be busy hashing other peers' executables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_a_child_that_keeps_the_socket_gets_nothing_when_its_parent_execs_an_allowed_binary() {
    let b = Broker::start();
    let sleep = std::fs::canonicalize("/usr/bin/sleep")
        .or_else(|_| std::fs::canonicalize("/bin/sleep"))
        .unwrap();
    let node = Node::start(
        &b,
        &[
            (
                "allowed",
                vec![
                    format!("unix:uid:{}", uid()),
                    format!("unix:path:{}", sleep.display()),
                ],
            ),
            (
                "tester",
                vec![
                    format!("unix:uid:{}", uid()),
                    format!("unix:path:{}", this_exe().display()),
                ],
            ),
        ],
    )
    .await;
    // The node and this client work: this process gets its own identity.
    let own = fetch_as_this_process(&node.socket, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(own, ["spiffe://writ.local/agent/tester"]);

    let _busy = SlowPeers::start(&node.socket, 12, slow_peer_uid());
    for attempt in 1..=3 {
        let mut parent = helper(&this_exe(), "h1-parent")
            .env(SOCKET, &node.socket)
            .env(ALLOWED, &sleep)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines_of(&mut parent);
        let verdict = wait_for(&rx, "VERDICT:", Duration::from_secs(90));
        let _ = parent.kill();
        let _ = parent.wait();
        let verdict = verdict.expect("the child gave no verdict");
        assert!(
            verdict.starts_with("VERDICT: refused") && !verdict.contains("agent/allowed"),
            "attempt {attempt}: {verdict}"
        );
    }
    // The process that connected is still served as itself.
    let own = fetch_as_this_process(&node.socket, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(own, ["spiffe://writ.local/agent/tester"]);
}

/// H2. Many local processes whose executables are large to hash connect at
/// once; a legitimate workload connecting after them is still answered
/// promptly, its attestation not queued behind theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_peers_slow_to_attest_do_not_delay_a_workload() {
    let b = Broker::start();
    let node = Node::start(
        &b,
        &[(
            "workload",
            vec![
                format!("unix:uid:{}", uid()),
                format!("unix:path:{}", this_exe().display()),
            ],
        )],
    )
    .await;
    let peers_uid = slow_peer_uid();
    if peers_uid == uid() {
        // The slow peers are this user's too, and one user's hashing is
        // bounded together: what is checked is that an executable already
        // known is not held up behind them.
        eprintln!("not root: the slow peers run as this user");
        fetch_as_this_process(&node.socket, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let _busy = SlowPeers::start(&node.socket, 24, peers_uid);
    let started = Instant::now();
    let got = fetch_as_this_process(&node.socket, Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(
        got.as_deref(),
        Ok(&["spiffe://writ.local/agent/workload".to_owned()][..])
    );
    assert!(
        took < Duration::from_secs(5),
        "the workload waited {took:?} behind peers slow to attest"
    );
}

/// H1. A process in a user namespace of its own can claim another pid in
/// the credentials it sends (it holds capabilities over its own pid
/// namespace), so per-message credentials prove nothing about it: it is
/// attested by uid and gid only, never by its executable. Here this very
/// test binary, started in a new user namespace (mapped to this uid), is
/// refused the identity this binary has outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_a_process_in_another_user_namespace_is_attested_by_uid_and_gid_only() {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot make a user namespace here (unshare)");
        return;
    }
    let b = Broker::start();
    let node = Node::start(
        &b,
        &[(
            "tester",
            vec![
                format!("unix:uid:{}", uid()),
                format!("unix:path:{}", this_exe().display()),
            ],
        )],
    )
    .await;
    let own = fetch_as_this_process(&node.socket, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(own, ["spiffe://writ.local/agent/tester"]);

    let mut inside = Command::new("unshare");
    inside.args(["--user", "--map-root-user"]);
    let helper = helper(&this_exe(), "fetch-self");
    inside
        .arg(helper.get_program())
        .args(helper.get_args())
        .env(ROLE, "fetch-self")
        .env(SOCKET, &node.socket)
        .stdout(Stdio::piped());
    let mut child = inside.spawn().unwrap();
    let rx = lines_of(&mut child);
    let verdict = wait_for(&rx, "VERDICT:", Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    let verdict = verdict.expect("no verdict");
    assert!(
        verdict.starts_with("VERDICT: refused") && verdict.contains("grpc-status \"7\""),
        "{verdict}"
    );
}
