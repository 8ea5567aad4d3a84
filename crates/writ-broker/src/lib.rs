//! The broker: writ's authorization server, policy decision point and audit
//! log, as an axum application.
//!
//! The HTTP layer (`routes`) only parses, authenticates and maps errors; the
//! decisions live in `writ-authority`, which knows nothing of HTTP and
//! answers errors in its own words; `error` turns them into responses.
//! `serve` takes a bound listener and a shutdown future, so tests start a
//! broker on port 0.

mod client_auth;
mod console;
#[cfg(test)]
mod console_tests;
mod error;
mod extract;
pub mod mtls;
#[cfg(test)]
mod one_answer_tests;
#[cfg(test)]
mod roles_tests;
mod routes;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

pub use error::{ApiError, OAuthError};
pub use writ_authority::{
    BootstrapError, Broker, BrokerConfig, DEFAULT_ATTEST_PER_MINUTE, DataDir, InitialPolicy,
    KeyService, Opened, OperatorSso, RoleRule, SsoBrowser, oidc, open, service, spiffe,
};
use writ_authority::{detect, policy_watch, replicas, sweeper};

/// Serves the broker on `listener` until `shutdown` completes; runs the
/// lease sweeper, the reaper of database roles, the policy directory watcher and (on a shared store) the
/// follower of other replicas alongside.
/// The connection limits and timeouts of `limits` hold on the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    limits: writ_listen::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = tokio::spawn(sweeper::run(Arc::clone(&broker)));
    let reaper = tokio::spawn(sweeper::reap(Arc::clone(&broker)));
    let spiffe = tokio::spawn(sweeper::spiffe_keys(Arc::clone(&broker)));
    let watcher = tokio::spawn(policy_watch::run(Arc::clone(&broker)));
    let follower = tokio::spawn(replicas::run(Arc::clone(&broker)));
    let rules = tokio::spawn(detect::run(Arc::clone(&broker)));
    let releases = tokio::spawn(detect::sweep(Arc::clone(&broker)));
    let alerts = {
        let broker = Arc::clone(&broker);
        tokio::spawn(async move { broker.detection.alerts.run().await })
    };
    let sinks = tokio::spawn(writ_authority::sinks::run(Arc::clone(&broker)));
    let app = routes::router(Arc::clone(&broker));
    let result = writ_listen::serve(listener, app, limits, shutdown, SHUTDOWN_GRACE).await;
    sweeper.abort();
    reaper.abort();
    spiffe.abort();
    watcher.abort();
    follower.abort();
    rules.abort();
    releases.abort();
    alerts.abort();
    sinks.abort();
    let _ = sinks.await;
    writ_authority::sinks::release(&broker.sinks).await;
    result
}

/// How long requests in flight may take to finish once shutdown is asked.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The application router, for in-process tests (`tower::ServiceExt::oneshot`).
pub fn router(broker: Arc<Broker>) -> axum::Router {
    routes::router(broker)
}
