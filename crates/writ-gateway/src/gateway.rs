//! A running gateway: its configuration, what it knows of the broker, its
//! caches and the tasks that keep them current.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use writ_core::{Clock, Secret};

use crate::state::View;
use crate::{auth, owner, spool, stdio};

/// How often MCP sessions are looked at when nothing changes.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How a gateway is run.
#[derive(Clone)]
pub struct Config {
    /// The broker's base URL.
    pub broker: String,
    /// The gateway credential (`POST /v1/gateways`); `None` when the
    /// gateway authenticates with a client certificate instead.
    pub token: Option<Secret>,
    /// The base URL agents address the gateway by (DPoP `htu`, metadata).
    pub public_url: String,
    /// Past this age of its revocation view, the gateway refuses everything.
    pub staleness: Duration,
    /// How often the bundle (policies, tools, agents, secrets) is refreshed.
    pub refresh: Duration,
    /// Where undelivered decisions are kept across restarts.
    pub spool_dir: Option<PathBuf>,
    /// The TLS configuration of the link to the broker, instead of the
    /// default (the system's CAs, or `--ca-file`'s).
    pub broker_tls: Option<writ_client::TlsClientConfig>,
    /// `/metrics` answers anyone; else an operator credential (any role),
    /// which the broker confirms.
    pub metrics_public: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("broker", &self.broker)
            .field("token", &"<redacted>")
            .field("public_url", &self.public_url)
            .field("staleness", &self.staleness)
            .field("refresh", &self.refresh)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

impl Config {
    /// A gateway that authenticates to the broker with the client
    /// certificate every client of this process presents
    /// ([`writ_client::present_client_certificate`]), not a credential.
    pub fn with_client_certificate(broker: String, public_url: String) -> Self {
        Self {
            token: None,
            ..Self::new(broker, Secret::new(String::new()), public_url)
        }
    }

    pub fn new(broker: String, token: impl Into<Secret>, public_url: String) -> Self {
        Self {
            broker,
            token: Some(token.into()),
            public_url,
            staleness: Duration::from_secs(5),
            refresh: Duration::from_secs(1),
            spool_dir: None,
            broker_tls: None,
            metrics_public: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("gateway HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("decision spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("transaction-token key: {0}")]
    Key(String),
}

/// A running gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    pub view: Arc<View>,
    pub(crate) replay: auth::Replay,
    pub(crate) verified: auth::Verified,
    pub(crate) spool: Arc<spool::Spool>,
    pub(crate) upstream: reqwest::Client,
    pub(crate) sessions: stdio::Sessions,
    pub(crate) mcp_owners: owner::SessionOwners,
    /// The key it signs transaction tokens with (made at start, kept in
    /// memory only, published through the broker's JWKS).
    pub(crate) txn: Arc<writ_core::txn::TxnSigner>,
    pub(crate) mcp_streams: crate::mcp_stream::OpenStreams,
    /// What keeps the view current (bundle, JWKS, revocations, decision
    /// delivery, session sweeping): owned here, stopped by [`Gateway::stop`].
    background: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// The tasks that serve requests past their handler (event streams
    /// relayed, stdio servers' output read): spawned here only, ended by
    /// [`Gateway::stop`] and awaited by [`Gateway::shutdown`].
    pub(crate) streams: Streams,
}

/// The gateway's tasks that outlive a request's handler.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    tracker: tokio_util::task::TaskTracker,
    stopping: tokio_util::sync::CancellationToken,
}

impl Streams {
    /// Runs `work` until it ends or the gateway stops.
    pub(crate) fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let stopping = self.stopping.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                () = work => {}
            }
        });
    }
}

impl Gateway {
    /// Builds the gateway and starts following the broker (bundle, JWKS,
    /// revocations, decision delivery) in the background.
    pub fn start(cfg: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StartError> {
        let spool = Arc::new(spool::Spool::open(cfg.spool_dir.clone())?);
        let txn = Arc::new(
            writ_core::txn::TxnSigner::generate(clock.now())
                .map_err(|e| StartError::Key(e.to_string()))?,
        );
        let view = Arc::new(View::new(cfg, clock)?);
        let upstream = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()?;
        let gw = Arc::new(Self {
            view: Arc::clone(&view),
            replay: auth::Replay::default(),
            verified: auth::Verified::default(),
            spool: Arc::clone(&spool),
            upstream,
            sessions: stdio::Sessions::default(),
            mcp_owners: owner::SessionOwners::default(),
            txn: Arc::clone(&txn),
            mcp_streams: crate::mcp_stream::OpenStreams::default(),
            background: std::sync::Mutex::new(tokio::task::JoinSet::new()),
            streams: Streams::default(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        let v = Arc::clone(&view);
        tasks.spawn(async move {
            // The first bundle and JWKS as soon as the broker answers,
            // with the transaction-token key published first: nothing is
            // forwarded before a tool can verify what comes with it.
            let mut backoff = Duration::from_millis(50);
            let mut published = false;
            loop {
                if !published {
                    match crate::txn::publish(&v, &txn).await {
                        Ok(()) => published = true,
                        Err(e) => {
                            tracing::warn!(error = %e, "gateway cannot publish its transaction-token key yet");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            continue;
                        }
                    }
                }
                let b = v.refresh_bundle().await;
                let j = v.refresh_jwks().await;
                match (b, j) {
                    (Ok(()), Ok(())) => break,
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "gateway cannot load its bundle yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            tracing::info!("gateway bundle loaded");
            v.follow_bundle().await;
        });
        tasks.spawn(Arc::clone(&view).follow_revocations());
        tasks.spawn(spool.run(Arc::clone(&view)));
        // The sweeper does not keep the gateway alive. It looks when
        // revocations or the bundle change (a task ended, an agent was
        // quarantined), and every few seconds for what time ends.
        let sweeper = Arc::downgrade(&gw);
        let v = Arc::clone(&view);
        tasks.spawn(async move {
            loop {
                let _ = tokio::time::timeout(SWEEP_EVERY, v.changed.notified()).await;
                let Some(gw) = sweeper.upgrade() else { return };
                gw.sessions.sweep(&gw.view).await;
            }
        });
        match gw.background.lock() {
            Ok(mut g) => *g = tasks,
            Err(p) => *p.into_inner() = tasks,
        }
        Ok(gw)
    }

    /// Stops following the broker. Undelivered decisions stay in the spool
    /// (on disk when it has a directory) for the next start.
    pub fn stop(&self) {
        match self.background.lock() {
            Ok(mut g) => g.abort_all(),
            Err(p) => p.into_inner().abort_all(),
        }
        self.streams.stopping.cancel();
        self.streams.tracker.close();
    }

    /// Stops (see [`Gateway::stop`]), ends every stdio session (its
    /// process killed), and waits, up to `grace`, for the tasks that
    /// served streams to end.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop();
        self.sessions.end_all().await;
        if tokio::time::timeout(grace, self.streams.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("gateway stream tasks still running after shutdown");
        }
    }

    /// Whether the gateway can decide now (bundle loaded, revocations fresh).
    pub fn ready(&self) -> bool {
        self.view.bundle().is_some() && self.view.fresh()
    }

    /// Undelivered decisions.
    pub fn pending_decisions(&self) -> usize {
        self.spool.pending()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    /// What serves a stream past its handler ends when the gateway stops,
    /// and shutdown can wait for it: nothing is left running detached.
    #[tokio::test]
    async fn stream_tasks_end_when_the_gateway_stops() {
        let streams = Streams::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        streams.spawn(async move {
            let _held = tx;
            std::future::pending::<()>().await;
        });
        assert!(!streams.tracker.is_empty());
        streams.stopping.cancel();
        streams.tracker.close();
        tokio::time::timeout(Duration::from_secs(5), streams.tracker.wait())
            .await
            .unwrap();
        assert!(rx.await.is_err(), "the task was dropped, not left running");
    }
}
