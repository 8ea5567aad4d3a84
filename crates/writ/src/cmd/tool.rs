//! `writ tool register|list|bind|secret`

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use writ_core::api::{RegisterTool, SetToolSecret, Upstream};
use writ_core::{Scope, ToolName};

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Set (or replace) the header a gateway adds to every upstream request
    /// of the tool, or a postgres tool's admin connection URL (no
    /// --header). The value is read from standard input (one line), so it
    /// stays out of shell history and process listings.
    Set {
        tool: ToolName,
        /// The header, e.g. `X-Api-Key` or `Authorization` (not for a
        /// postgres tool).
        #[arg(long, default_value = "")]
        header: String,
        /// For a stdio MCP tool (`--mcp-command`): the environment variable
        /// the gateway starts the server with, holding the secret.
        #[arg(long, value_name = "NAME", conflicts_with = "header")]
        env: Option<String>,
        /// Read the value from this environment variable instead.
        #[arg(long, value_name = "VAR", conflicts_with = "from_mcp_config")]
        value_env: Option<String>,
        /// Read the value from an MCP client config (the `headers` or `env`
        /// entry --mcp-key of server --mcp-server), as `writ discover
        /// --plan` does; it is never echoed.
        #[arg(long, value_name = "FILE", requires_all = ["mcp_server", "mcp_key"])]
        from_mcp_config: Option<PathBuf>,
        #[arg(long, value_name = "NAME", requires = "from_mcp_config")]
        mcp_server: Option<String>,
        #[arg(long, value_name = "KEY", requires = "from_mcp_config")]
        mcp_key: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ToolCmd {
    /// Register a tool.
    Register {
        name: Option<ToolName>,
        /// Read the whole registration from a JSON file instead.
        #[arg(long, conflicts_with = "name")]
        file: Option<PathBuf>,
        /// The audience URI its tokens carry.
        #[arg(long)]
        audience: Option<String>,
        /// A scope the tool understands (repeatable, or comma separated).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<Scope>,
        /// An attribute, KEY=VALUE (repeatable), visible to policy as a tag.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// The upstream a gateway forwards to: an http(s) URL.
        #[arg(long, conflicts_with = "mcp_command")]
        upstream: Option<String>,
        /// The upstream speaks MCP (streamable HTTP) rather than plain HTTP.
        #[arg(long, requires = "upstream")]
        mcp: bool,
        /// Gateways refuse to forward, or to start an `--mcp-command`
        /// server, (fail closed) while no secret is set.
        #[arg(long)]
        require_secret: bool,
        /// The upstream learns who calls from the signed transaction token
        /// (`Txn-Token`) only: no informational `X-Writ-*` headers.
        #[arg(long, requires = "upstream")]
        txn_token_only: bool,
        /// A local MCP server on stdio the gateway spawns, e.g.
        /// `--mcp-command npx -y @modelcontextprotocol/server-everything`.
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        mcp_command: Vec<String>,
        /// For an MCP tool: a browser origin whose pages may call it
        /// (repeatable), e.g. `--mcp-origin https://app.example`; a
        /// request with any other `Origin` is refused [default: none].
        #[arg(long = "mcp-origin", value_name = "ORIGIN")]
        mcp_origins: Vec<String>,
        /// A PostgreSQL database: tasks get roles of their own, with these
        /// grants (repeatable; `{role}` is the new role), e.g.
        /// `--postgres-grant 'GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO {role}'`.
        #[arg(long = "postgres-grant", value_name = "STATEMENT", conflicts_with_all = ["upstream", "mcp_command"])]
        postgres_grants: Vec<String>,
        /// The gateway that serves the tool, by its `writ gateway register`
        /// name: it alone routes the tool and gets its upstream secret
        /// [default: the gateway inside `writ serve`].
        #[arg(long, value_name = "NAME", conflicts_with = "postgres_grants")]
        gateway: Option<String>,
    },
    /// Serve a tool from another gateway (it alone then routes the tool and
    /// gets its upstream secret); without --gateway, from the gateway
    /// inside `writ serve`.
    Bind {
        tool: ToolName,
        #[arg(long, value_name = "NAME")]
        gateway: Option<String>,
    },
    /// Upstream secrets a gateway injects.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// List tools.
    List,
    /// Change a tool's scopes or attributes (the audience cannot change).
    /// Tasks that declared a removed scope end, and their tokens die.
    Update {
        tool: ToolName,
        /// The new scopes, replacing the old (repeatable, or comma separated).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<Scope>,
        /// The new attributes, KEY=VALUE, replacing the old (repeatable).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
    },
    /// Delete a tool: every task that declared it ends and its tokens die.
    /// Its name stays reserved.
    Delete { tool: ToolName },
}

pub async fn run(g: &Global, cmd: ToolCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        ToolCmd::Register {
            name,
            file,
            audience,
            scopes,
            attrs,
            upstream,
            mcp,
            require_secret,
            txn_token_only,
            mcp_command,
            mcp_origins,
            postgres_grants,
            gateway,
        } => {
            let upstream = match (upstream, mcp_command.is_empty()) {
                (None, true) if !postgres_grants.is_empty() => Some(Upstream::Postgres {
                    grants: postgres_grants,
                }),
                (Some(url), _) if mcp => Some(Upstream::Mcp {
                    url,
                    require_secret,
                    origins: mcp_origins,
                    txn_token_only,
                }),
                (Some(url), _) => Some(Upstream::Http {
                    url,
                    require_secret,
                    txn_token_only,
                }),
                (None, false) => Some(Upstream::McpStdio {
                    command: mcp_command,
                    origins: mcp_origins,
                    require_secret,
                }),
                (None, true) => None,
            };
            let req = match file {
                Some(f) => serde_json::from_str(
                    &std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?,
                )
                .with_context(|| format!("parsing {}", f.display()))?,
                None => RegisterTool {
                    name: name.context("give a tool name or --file")?,
                    audience: audience.context("--audience is required")?,
                    scopes,
                    attributes: attrs
                        .iter()
                        .map(|a| {
                            a.split_once('=')
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .with_context(|| format!("attribute {a:?} is not KEY=VALUE"))
                        })
                        .collect::<anyhow::Result<_>>()?,
                    upstream,
                    gateway,
                },
            };
            print(&c.register_tool(&req).await?, g.field())?;
        }
        ToolCmd::List => print(&c.tools().await?, g.field())?,
        ToolCmd::Update {
            tool,
            scopes,
            attrs,
        } => {
            let req = writ_core::api::UpdateTool {
                scopes: (!scopes.is_empty()).then_some(scopes),
                attributes: if attrs.is_empty() {
                    None
                } else {
                    Some(key_values(&attrs)?)
                },
                upstream: None,
            };
            print(&c.update_tool(tool.as_str(), &req).await?, g.field())?;
        }
        ToolCmd::Delete { tool } => print(&c.delete_tool(tool.as_str()).await?, g.field())?,
        ToolCmd::Bind { tool, gateway } => print(
            &c.bind_tool(tool.as_str(), gateway.as_deref()).await?,
            g.field(),
        )?,
        ToolCmd::Secret(SecretCmd::Set {
            tool,
            header,
            env,
            value_env,
            from_mcp_config,
            mcp_server,
            mcp_key,
        }) => {
            let value = match value_env {
                _ if from_mcp_config.is_some() => super::discover_plan::value_from_config(
                    from_mcp_config
                        .as_deref()
                        .unwrap_or(std::path::Path::new("")),
                    mcp_server.as_deref().unwrap_or_default(),
                    mcp_key.as_deref().unwrap_or_default(),
                )?,
                Some(var) => std::env::var(&var)
                    .with_context(|| format!("environment variable {var} is not set"))?,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the secret from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            anyhow::ensure!(!value.is_empty(), "the secret is empty");
            let req = SetToolSecret {
                header: env.unwrap_or(header),
                value,
            };
            print(&c.set_tool_secret(tool.as_str(), &req).await?, g.field())?;
        }
    }
    Ok(EXIT_OK)
}

/// `KEY=VALUE` arguments as a map.
pub(crate) fn key_values(
    attrs: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    attrs
        .iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("attribute {a:?} is not KEY=VALUE"))
        })
        .collect()
}
