//! `writ node`: run the node agent (the SPIFFE Workload API for this
//! host's workloads), or register and manage nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    cmd: Option<NodeCmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Register a node (admin).
    Register { name: String },
    /// List nodes (admin).
    List,
    /// Mint a one-time join token for a node (admin).
    JoinToken {
        name: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Stop everything a node serves (admin): its credential dies, its
    /// workloads get nothing more.
    Quarantine { name: String },
    /// Lift a node's quarantine (it must attest again).
    Release { name: String },
    /// Print the trust domain's SPIFFE bundle.
    Bundle,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The broker's URL [default: --addr / WRIT_ADDR].
    #[arg(long, env = "WRIT_BROKER")]
    broker: Option<String>,
    /// This node's registered name.
    #[arg(long, env = "WRIT_NODE_NAME")]
    name: Option<String>,
    /// A one-time join token from `writ node join-token NAME` (prefer the
    /// environment variable: a command line is visible to every user).
    #[arg(long, env = "WRIT_NODE_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Where to serve the Workload API.
    #[arg(
        long,
        env = "WRIT_NODE_SOCKET",
        default_value = "unix:///run/writ/agent.sock"
    )]
    socket: String,
    /// Where the node keeps its credential across restarts.
    #[arg(long, env = "WRIT_NODE_STATE_DIR", default_value = "./writ-node-state")]
    state_dir: PathBuf,
    /// How often entries are fetched and SVIDs checked for renewal, in
    /// milliseconds.
    #[arg(long, env = "WRIT_NODE_REFRESH_MS", default_value_t = 5000)]
    refresh_ms: u64,
}

pub async fn run(g: &Global, args: NodeArgs) -> anyhow::Result<u8> {
    if let Some(cmd) = args.cmd {
        let c = g.admin()?;
        match cmd {
            NodeCmd::Register { name } => print(&c.register_node(&name).await?, g.field())?,
            NodeCmd::List => print(&c.nodes().await?, g.field())?,
            NodeCmd::JoinToken { name, ttl } => {
                print(&c.node_join_token(&name, ttl).await?, g.field())?;
            }
            NodeCmd::Quarantine { name } => print(&c.quarantine_node(&name).await?, g.field())?,
            NodeCmd::Release { name } => print(&c.release_node(&name).await?, g.field())?,
            NodeCmd::Bundle => print(&c.spiffe_bundle().await?, g.field())?,
        }
        return Ok(EXIT_OK);
    }
    super::serve::init_tracing(None, super::otel::SampleRatio::default(), "writ-node")?;
    let a = args.run;
    let name = a
        .name
        .context("the node's name is needed: --name (from `writ node register NAME`)")?;
    let join_token = a.join_token.map(writ_core::Secret::new);
    let socket = a.socket.strip_prefix("unix://").unwrap_or(&a.socket);
    anyhow::ensure!(
        socket.starts_with('/'),
        "--socket must be an absolute path or unix:///absolute/path"
    );
    let config = writ_node::NodeConfig {
        broker: a.broker.unwrap_or_else(|| g.addr.clone()),
        name,
        join_token,
        state_dir: a.state_dir,
        socket: PathBuf::from(socket),
        refresh: Duration::from_millis(a.refresh_ms.max(100)),
    };
    writ_node::run(config, super::serve::shutdown_signal()).await?;
    Ok(EXIT_OK)
}
