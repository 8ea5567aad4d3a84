//! `writ gateway`: run a standalone gateway, or create its credential.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use writ_core::SystemClock;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GatewayArgs {
    #[command(subcommand)]
    cmd: Option<GatewayCmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum GatewayCmd {
    /// Create a credential for a standalone gateway (admin; shown once).
    Register { name: String },
    /// Revoke a gateway's credential (admin): its next call to the broker
    /// is refused and it fails closed once its view is stale.
    Revoke { name: String },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The broker's URL [default: --addr / WRIT_ADDR].
    #[arg(long, env = "WRIT_BROKER")]
    broker: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "WRIT_GATEWAY_LISTEN", default_value = "127.0.0.1:8751")]
    listen: SocketAddr,
    /// The gateway credential from `writ gateway register`.
    #[arg(long, env = "WRIT_GATEWAY_TOKEN", hide_env_values = true)]
    gateway_token: Option<String>,
    /// The URL agents address this gateway by [default: http://<listen>].
    #[arg(long, env = "WRIT_GATEWAY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Refuse everything once the revocation view is older than this, in
    /// milliseconds.
    #[arg(long, env = "WRIT_GATEWAY_STALENESS_MS", default_value_t = 5000)]
    staleness_ms: u64,
    /// Where decisions wait while the broker is unreachable.
    #[arg(
        long,
        env = "WRIT_GATEWAY_SPOOL_DIR",
        default_value = "./writ-gateway-spool"
    )]
    spool_dir: PathBuf,
    /// Serve `/metrics` to anyone; without it, an operator credential of
    /// any role is needed (the broker confirms it).
    #[arg(long, env = "WRIT_METRICS_PUBLIC")]
    metrics_public: bool,
    /// Export traces (OTLP over HTTP, protobuf) to the collector at this
    /// base URL, continue the agent's W3C `traceparent` and pass the
    /// gateway's own to the upstream [default: off].
    #[arg(long, env = "WRIT_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The share of traces starting here that are exported, 0.0 to 1.0;
    /// an agent's sampled `traceparent` is always followed (parent-based).
    #[arg(
        long,
        env = "WRIT_OTLP_SAMPLE_RATIO",
        default_value = "1.0",
        allow_negative_numbers = true
    )]
    otlp_sample_ratio: super::otel::SampleRatio,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
    #[command(flatten)]
    tls: super::tls::TlsArgs,
}

pub async fn run(g: &Global, args: GatewayArgs) -> anyhow::Result<u8> {
    match args.cmd {
        Some(GatewayCmd::Register { name }) => {
            print(&g.admin()?.register_gateway(&name).await?, g.field())?;
            return Ok(EXIT_OK);
        }
        Some(GatewayCmd::Revoke { name }) => {
            g.admin()?.revoke_gateway(&name).await?;
            print(
                &serde_json::json!({ "gateway": name, "revoked": true }),
                g.field(),
            )?;
            return Ok(EXIT_OK);
        }
        None => {}
    }
    let a = args.run;
    super::serve::init_tracing(
        a.otlp_endpoint.as_deref(),
        a.otlp_sample_ratio,
        "writ-gateway",
    )?;
    // A credential, or a client certificate naming the gateway.
    let token = match (a.gateway_token, g.tls_client_cert.is_some()) {
        (Some(t), _) => Some(t),
        (None, true) => None,
        (None, false) => anyhow::bail!(
            "a gateway credential is needed: set WRIT_GATEWAY_TOKEN (from `writ gateway register NAME`), \
             or present a client certificate naming the gateway (--tls-client-cert)"
        ),
    };
    let mut limits = a.limits.limits()?;
    limits.tls = super::tls::load(
        a.tls.tls_cert.as_deref(),
        a.tls.tls_key.as_deref(),
        a.tls.tls_client_ca.as_deref(),
    )?;
    super::tls::check_plaintext(
        "the gateway",
        a.listen,
        limits.tls.as_ref(),
        a.tls.insecure_plaintext,
    )?;
    let scheme = super::tls::scheme(limits.tls.as_ref());
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    let bound = listener.local_addr()?;
    let public = a
        .public_url
        .unwrap_or_else(|| format!("{scheme}://{bound}"));
    let broker = a.broker.unwrap_or_else(|| g.addr.clone());
    let mut cfg = match token {
        Some(t) => writ_gateway::Config::new(broker, t, public),
        None => writ_gateway::Config::with_client_certificate(broker, public),
    };
    cfg.staleness = Duration::from_millis(a.staleness_ms.max(100));
    cfg.spool_dir = Some(a.spool_dir);
    cfg.metrics_public = a.metrics_public;
    let gw = writ_gateway::Gateway::start(cfg, Arc::new(SystemClock))?;
    println!("gateway listening on {scheme}://{bound}");
    writ_gateway::serve(gw, listener, limits, super::serve::shutdown_signal()).await?;
    super::otel::shutdown().await;
    Ok(EXIT_OK)
}
