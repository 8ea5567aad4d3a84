//! `writ node`: the node agent. It attests its host to the broker with a
//! join token, then serves the SPIFFE Workload API on a Unix socket. A
//! workload that connects is identified by the kernel (the socket's peer
//! credentials: uid, gid, pid, and from the pid its executable and that
//! file's SHA-256), never by anything it says; it gets the SVIDs of every
//! agent registered on this node whose selectors all match, and nothing
//! otherwise. Only the process that connected may ask on its connection
//! (the kernel names the sender of every byte), and only while it runs
//! what it ran when it connected.
//!
//! Keys are made here and never leave the node: the broker signs a
//! certificate for the public key. X.509-SVIDs are renewed at half their
//! life and pushed to every open stream.

mod attestor;
mod authority;
mod broker;
mod process;
mod service;
mod state;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use writ_core::Secret;

use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

/// The generated Workload API types and server.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "generated code"
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("broker: {0}")]
    Broker(#[source] broker::CallError),
    #[error("broker: attestation refused: {0}")]
    Attest(#[source] writ_client::ClientError),
    #[error(
        "broker: no usable node credential: a join token is needed (writ node join-token NAME)"
    )]
    NoJoinToken,
    #[error("socket {path}: {message}")]
    Socket { path: String, message: String },
    #[error("serving the Workload API: {0}")]
    Serve(String),
    #[error("state directory {path}: {message}")]
    State { path: String, message: String },
    #[error("the broker refused this node's credential (quarantined?); stopped")]
    CutOff,
}

/// How the node runs.
#[derive(Clone)]
pub struct NodeConfig {
    /// The broker's base URL.
    pub broker: String,
    /// This node's registered name.
    pub name: String,
    /// A one-time join token for the first attestation (not needed once
    /// the node holds a credential in `state_dir`).
    pub join_token: Option<writ_core::Secret>,
    /// Where the node keeps its credential across restarts (mode 0600).
    pub state_dir: PathBuf,
    /// The Workload API socket (a path; `unix://` is stripped).
    pub socket: PathBuf,
    /// How often entries are fetched and SVIDs checked for renewal.
    pub refresh: Duration,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("broker", &self.broker)
            .field("name", &self.name)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// The node's credential: the one kept from an earlier start if the broker
/// still takes it, else a fresh attestation with the join token (kept).
async fn credential(config: &NodeConfig) -> Result<writ_client::Client, NodeError> {
    let state = |e: std::io::Error| NodeError::State {
        path: config.state_dir.display().to_string(),
        message: e.to_string(),
    };
    let file = config.state_dir.join("node.credential");
    if let Ok(token) = std::fs::read_to_string(&file).map(Secret::from) {
        let broker = broker::resume(&config.broker, Secret::new(token.expose().trim()))?;
        match broker.node_entries().await.map_err(broker::CallError::from) {
            Ok(_) => {
                tracing::info!(node = %config.name, "node credential kept from an earlier start");
                return Ok(broker);
            }
            Err(broker::CallError::Unauthorized) => {
                tracing::warn!("the kept node credential was refused; attesting again");
            }
            Err(e) => return Err(NodeError::Broker(e)),
        }
    }
    let join = config.join_token.as_ref().ok_or(NodeError::NoJoinToken)?;
    let broker = broker::attest(&config.broker, &config.name, join).await?;
    tracing::info!(node = %config.name, "node attested");
    std::fs::create_dir_all(&config.state_dir).map_err(state)?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = config.state_dir.join("node.credential.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(state)?;
        let credential = broker.token().map(Secret::expose).unwrap_or_default();
        f.write_all(credential.as_bytes()).map_err(state)?;
        f.sync_all().map_err(state)?;
        std::fs::rename(&tmp, &file).map_err(state)?;
    }
    Ok(broker)
}

/// Attests, then serves until `shutdown` completes, or until the broker
/// refuses the node's credential (quarantine): then it stops with an error.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let broker = credential(&config).await?;
    let state = Arc::new(state::State::new(broker));
    let gate = Arc::new(attestor::Gate::default());
    state.refresh().await;
    let refresher = {
        let state = Arc::clone(&state);
        let every = config.refresh;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                state.refresh().await;
            }
        })
    };

    let path = &config.socket;
    let socket_err = |e: std::io::Error| NodeError::Socket {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(socket_err)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(socket_err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(socket_err)?;
    authority::pass_credentials(&listener).map_err(socket_err)?;
    // Any local process may ask; what it gets depends on who it is.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
            .map_err(socket_err)?;
    }
    println!("workload API listening on unix://{}", path.display());
    // Stop when the broker cuts the node off, so a supervisor notices.
    let cut_off = {
        let state = Arc::clone(&state);
        async move {
            let mut v = state.watch();
            while !state.cut_off() {
                if v.changed().await.is_err() {
                    break;
                }
            }
        }
    };
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = cut_off => {}
        }
    };
    let (admitted, incoming) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio::spawn(accept(listener, gate, admitted));
    let served = tonic::transport::Server::builder()
        .add_service(
            proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(
                service::WorkloadApi::new(Arc::clone(&state)),
            ),
        )
        .serve_with_incoming_shutdown(
            ReceiverStream::new(incoming).map(Ok::<_, std::io::Error>),
            shutdown,
        )
        .await;
    acceptor.abort();
    refresher.abort();
    let _ = std::fs::remove_file(path);
    served.map_err(|e| NodeError::Serve(e.to_string()))?;
    if state.cut_off() {
        let _ = std::fs::remove_file(config.state_dir.join("node.credential"));
        return Err(NodeError::CutOff);
    }
    Ok(())
}

/// Accepts connections as they come and attests each in a task of its own:
/// a peer that is slow to attest (a large executable to hash) delays
/// nobody else. Attested connections go to the server through `admitted`.
async fn accept(
    listener: tokio::net::UnixListener,
    gate: Arc<attestor::Gate>,
    admitted: tokio::sync::mpsc::Sender<authority::Shimmed>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let gate = Arc::clone(&gate);
                let admitted = admitted.clone();
                tokio::spawn(async move {
                    if let Some(conn) = authority::admit(stream, gate).await {
                        let _ = admitted.send(conn).await;
                    }
                });
            }
            Err(e) => {
                if admitted.is_closed() {
                    return;
                }
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a workload API connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
