//! `writ agent register|list|show|join-token|quarantine|release`

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use writ_core::AgentName;
use writ_core::api::{Attestation, RegisterAgent};

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once from the command line"
)]
pub enum AgentCmd {
    /// Register an agent (join-token attestation unless OIDC flags are given).
    Register {
        name: Option<AgentName>,
        /// Read the whole registration from a JSON file instead.
        #[arg(long, conflicts_with = "name")]
        file: Option<PathBuf>,
        /// An attribute, KEY=VALUE (repeatable): owner, environment, risk_tier, or any tag.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Attest with OIDC tokens from this issuer.
        #[arg(long)]
        oidc_issuer: Option<String>,
        #[arg(long, requires = "oidc_issuer")]
        oidc_audience: Option<String>,
        #[arg(long, requires = "oidc_issuer")]
        oidc_subject: Option<String>,
        #[arg(long, requires = "oidc_issuer")]
        oidc_jwks_uri: Option<String>,
        /// A JWKS file to trust instead of fetching jwks_uri.
        #[arg(long, requires = "oidc_issuer", conflicts_with = "oidc_jwks_uri")]
        oidc_jwks_file: Option<PathBuf>,
        /// Accepted signature algorithms (repeatable; default EdDSA).
        #[arg(long = "oidc-alg", requires = "oidc_issuer")]
        oidc_algs: Vec<String>,
        /// Attest with SPIFFE JWT-SVIDs issued through this node (`writ node`)
        /// to workloads matching every --selector.
        #[arg(long, conflicts_with = "oidc_issuer", requires = "selectors")]
        spiffe_node: Option<String>,
        /// A workload selector (repeatable): unix:uid:N, unix:gid:N,
        /// unix:path:/ABS/EXE, unix:sha256:HEX.
        #[arg(long = "selector", requires = "spiffe_node")]
        selectors: Vec<String>,
        /// Attest with JWT-SVIDs for this SPIFFE ID of a federated trust
        /// domain (`writ serve --federate`), e.g. from an existing SPIRE.
        #[arg(long, conflicts_with_all = ["oidc_issuer", "spiffe_node"])]
        spiffe_id: Option<String>,
    },
    /// List agents.
    List,
    /// Show one agent.
    Show { name: AgentName },
    /// Mint a one-time join token.
    JoinToken {
        name: AgentName,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Kill switch: revoke every live grant of the agent and refuse new ones.
    Quarantine { name: AgentName },
    /// Lift a quarantine (instances must attest again).
    Release { name: AgentName },
    /// Replace an agent's attributes (KEY=VALUE, repeatable).
    Update {
        name: AgentName,
        #[arg(long = "attr", value_name = "KEY=VALUE", required = true)]
        attrs: Vec<String>,
    },
    /// Delete an agent: its live tasks end and their tokens die, as in
    /// quarantine. Its name stays reserved.
    Delete { name: AgentName },
}

pub async fn run(g: &Global, cmd: AgentCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        AgentCmd::Register {
            name,
            file,
            attrs,
            oidc_issuer,
            oidc_audience,
            oidc_subject,
            oidc_jwks_uri,
            oidc_jwks_file,
            oidc_algs,
            spiffe_node,
            selectors,
            spiffe_id,
        } => {
            let req = if let Some(f) = file {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))?
            } else {
                let name = name.context("give an agent name or --file")?;
                let workload = spiffe_node.map(|node| writ_core::api::Workload { node, selectors });
                let attestation = match oidc_issuer {
                    None if workload.is_some() || spiffe_id.is_some() => {
                        Attestation::Spiffe { spiffe_id }
                    }
                    None => Attestation::JoinToken,
                    Some(issuer) => {
                        let jwks = match oidc_jwks_file {
                            Some(f) => Some(serde_json::from_str(
                                &std::fs::read_to_string(&f)
                                    .with_context(|| format!("reading {}", f.display()))?,
                            )?),
                            None => None,
                        };
                        Attestation::Oidc {
                            issuer,
                            jwks_uri: oidc_jwks_uri,
                            jwks,
                            audience: oidc_audience.context("--oidc-audience is required")?,
                            subject: oidc_subject.context("--oidc-subject is required")?,
                            algorithms: oidc_algs,
                        }
                    }
                };
                let mut attributes = BTreeMap::new();
                for a in attrs {
                    let Some((k, v)) = a.split_once('=') else {
                        bail!("attribute {a:?} is not KEY=VALUE");
                    };
                    attributes.insert(k.to_owned(), v.to_owned());
                }
                RegisterAgent {
                    name,
                    attestation,
                    attributes,
                    workload,
                }
            };
            print(&c.register_agent(&req).await?, g.field())?;
        }
        AgentCmd::List => print(&c.agents().await?, g.field())?,
        AgentCmd::Update { name, attrs } => {
            let req = writ_core::api::UpdateAgent {
                attestation: None,
                attributes: Some(super::tool::key_values(&attrs)?),
            };
            print(&c.update_agent(name.as_str(), &req).await?, g.field())?;
        }
        AgentCmd::Delete { name } => print(&c.delete_agent(name.as_str()).await?, g.field())?,
        AgentCmd::Show { name } => print(&c.agent(&name).await?, g.field())?,
        AgentCmd::JoinToken { name, ttl } => print(&c.join_token(&name, ttl).await?, g.field())?,
        AgentCmd::Quarantine { name } => print(&c.quarantine(&name).await?, g.field())?,
        AgentCmd::Release { name } => print(&c.release(&name).await?, g.field())?,
    }
    Ok(EXIT_OK)
}
