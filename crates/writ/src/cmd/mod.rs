//! The subcommands, one file each.

mod admin;
mod agent;
mod approval;
mod attest;
mod audit;
mod audit_archive;
mod client;
mod completions;
mod discover;
mod discover_ask;
mod discover_plan;
mod dpop;
mod gateway;
mod keys;
mod limits;
mod login;
mod mcp;
mod mcp_forward;
mod node;
pub(crate) mod otel;
mod policy;
mod policy_cases;
mod report;
mod rules;
mod serve;
mod sink;
mod task;
mod tls;
mod token;
mod tool;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use writ_client::Client;
use writ_core::Secret;

/// writ: just-in-time, task-scoped credentials for AI agents, with every
/// request checked against policy.
#[derive(Parser, Debug)]
#[command(name = "writ", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    pub fn worker_threads(&self) -> usize {
        match &self.command {
            Command::Serve(s) => s.worker_threads.unwrap_or_else(default_threads),
            Command::Gateway(_) | Command::Node(_) => default_threads(),
            _ => 1,
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Options every client command shares.
#[derive(Args, Debug)]
pub struct Global {
    /// Address of the writ broker.
    #[arg(
        long,
        global = true,
        env = "WRIT_ADDR",
        default_value = "http://127.0.0.1:8750"
    )]
    pub addr: String,
    /// Admin credential [default: the session `writ login` stored].
    #[arg(long, global = true, env = "WRIT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where `writ login` keeps the operator session (mode 0600)
    /// [default: $XDG_CONFIG_HOME/writ/session.json or ~/.config/writ/session.json].
    #[arg(long, global = true, env = "WRIT_SESSION_FILE")]
    pub session_file: Option<std::path::PathBuf>,
    /// Print only this top-level field of the response.
    #[arg(long, global = true)]
    pub field: Option<String>,
    /// A DPoP key file (from `writ dpop keygen`): bind tokens to it at
    /// attestation, and prove possession with every agent request.
    #[arg(long, global = true, env = "WRIT_DPOP_KEY")]
    pub dpop_key: Option<std::path::PathBuf>,
    /// How lists and records are printed: `table` for people, `json` for
    /// scripts [default: table on a terminal, json otherwise].
    #[arg(long, global = true, env = "WRIT_OUTPUT", value_enum)]
    pub output: Option<crate::output::Format>,
    /// CA certificates (PEM) to trust for https connections instead of the
    /// system's: the broker's, from the CLI, a gateway or a node.
    #[arg(long, global = true, env = "WRIT_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM chain) to present to a broker that asks
    /// for one (`writ serve --tls-client-ca`): with the SAN
    /// `urn:writ:gateway:NAME` it authenticates `writ gateway` without a
    /// credential.
    #[arg(
        long,
        global = true,
        env = "WRIT_TLS_CLIENT_CERT",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of `--tls-client-cert`.
    #[arg(
        long,
        global = true,
        env = "WRIT_TLS_CLIENT_KEY",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<std::path::PathBuf>,
    /// How `serve`, `gateway` and `node run` log to stderr: `text` lines,
    /// or one JSON object a line with the same fields [default: text].
    #[arg(long, global = true, env = "WRIT_LOG_FORMAT", value_enum)]
    pub log_format: Option<serve::LogFormat>,
    /// Keep no metrics (`/metrics` answers empty): for measuring what
    /// keeping them costs (`bench/overhead.sh`).
    #[arg(long, global = true, env = "WRIT_NO_METRICS", hide = true)]
    pub no_metrics: bool,
}

impl Global {
    /// A client with the admin credential.
    pub fn admin(&self) -> anyhow::Result<Client> {
        let token = self.operator_token().context(
            "an admin credential is needed: set WRIT_TOKEN, pass --token or sign in with `writ login`",
        )?;
        Ok(Client::new(&self.addr, Some(Secret::new(token)))?)
    }

    /// A client with the given agent credential (proving the DPoP key if
    /// one is configured), else the admin one, else none.
    pub fn client_with(&self, token: Option<&str>) -> anyhow::Result<Client> {
        match token {
            Some(t) => self.agent_client(Some(t)),
            None => Ok(Client::new(
                &self.addr,
                self.operator_token().map(Secret::new),
            )?),
        }
    }

    /// A client for agent requests: the token, and the DPoP key if any.
    pub fn agent_client(&self, token: Option<&str>) -> anyhow::Result<Client> {
        let c = Client::new(&self.addr, token.map(Secret::new))?;
        Ok(match &self.dpop_key {
            Some(path) => c.with_dpop(std::sync::Arc::new(dpop::load(path)?)),
            None => c,
        })
    }

    /// `--token` / `WRIT_TOKEN`, else the stored sign-on session for this
    /// broker (if it has not ended).
    pub fn operator_token(&self) -> Option<String> {
        self.token.clone().or_else(|| login::session_token(self))
    }

    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker.
    Serve(Box<serve::ServeArgs>),
    /// Register and manage agents.
    #[command(subcommand)]
    Agent(agent::AgentCmd),
    /// Register and list tools.
    #[command(subcommand)]
    Tool(tool::ToolCmd),
    /// Attest as an agent instance and get an instance token.
    Attest(attest::AttestArgs),
    /// Start, keep alive, complete and read tasks.
    #[command(subcommand)]
    Task(task::TaskCmd),
    /// Inspect, introspect and revoke tokens.
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Read and verify the audit chain.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Admin credentials.
    #[command(subcommand)]
    Admin(admin::AdminCmd),
    /// Decide tasks that wait for a person.
    #[command(subcommand)]
    Approval(approval::ApprovalCmd),
    /// Validate, push and list policy sets.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Detection rules: check a rules file, or replay recorded audit
    /// against one to see what would fire.
    #[command(subcommand)]
    Rules(rules::RulesCmd),
    /// Audit sinks: list them with their lag, or send a test event.
    #[command(subcommand)]
    Sink(sink::SinkCmd),
    /// Reports: documents the broker writes from its audit chain.
    #[command(subcommand)]
    Report(report::ReportCmd),
    /// DPoP keys for agents.
    #[command(subcommand)]
    Dpop(dpop::DpopCmd),
    /// Run a standalone gateway in front of tools (or create its credential).
    Gateway(gateway::GatewayArgs),
    /// Find the standing secrets agents still hold (offline, no broker):
    /// environment, `.env` and config files, MCP client configs.
    Discover(discover::DiscoverArgs),
    /// MCP: `writ mcp bridge TOOL` puts a stock MCP client (stdio) behind
    /// writ's gateway.
    #[command(subcommand)]
    Mcp(mcp::McpCmd),
    /// OAuth clients of introspection and revocation (resource servers).
    #[command(subcommand)]
    Client(client::ClientCmd),
    /// Run the node agent (the SPIFFE Workload API for this host), or
    /// register and manage nodes.
    Node(node::NodeArgs),
    /// Sign in as an operator with the identity provider the broker names
    /// (device authorization grant); the session is stored for later commands.
    Login(login::LoginArgs),
    /// Forget the stored sign-on session.
    Logout,
    /// Print shell completions (bash, zsh, fish, ...).
    Completions(completions::CompletionsArgs),
    /// Print the manual page, or write one per command to a directory.
    Man(completions::ManArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    tls::trust_ca_file(g.ca_file.as_deref())?;
    tls::present_client_certificate(g.tls_client_cert.as_deref(), g.tls_client_key.as_deref())?;
    crate::output::set_format(g.output);
    serve::set_log_format(g.log_format.unwrap_or_default());
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Agent(c) => agent::run(g, c).await,
        Command::Tool(c) => tool::run(g, c).await,
        Command::Attest(a) => attest::run(g, a).await,
        Command::Task(c) => task::run(g, c).await,
        Command::Token(c) => token::run(g, c).await,
        Command::Audit(c) => audit::run(g, c).await,
        Command::Keys(c) => keys::run(g, c).await,
        Command::Admin(c) => admin::run(g, c).await,
        Command::Dpop(c) => dpop::run(g, c),
        Command::Policy(c) => policy::run(g, c).await,
        Command::Report(c) => report::run(g, c).await,
        Command::Rules(c) => rules::run(g, c).await,
        Command::Sink(c) => sink::run(g, c).await,
        Command::Approval(c) => approval::run(g, c).await,
        Command::Gateway(a) => gateway::run(g, a).await,
        Command::Client(c) => client::run(g, c).await,
        Command::Node(a) => node::run(g, a).await,
        Command::Mcp(c) => mcp::run(g, c).await,
        Command::Discover(a) => discover::run(g, a).await,
        Command::Login(a) => login::login(g, a).await,
        Command::Logout => login::logout(g),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(a),
    }
}
