//! `writ attest AGENT --join-token T | --oidc-token T | --jwt-svid T`

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use writ_core::AgentName;
use writ_core::api::AttestRequest;

use super::Global;
use crate::output::{EXIT_OK, print, print_exports};

#[derive(Args, Debug)]
pub struct AttestArgs {
    /// The agent to attest as.
    agent: AgentName,
    /// A one-time join token.
    #[arg(long, env = "WRIT_JOIN_TOKEN", hide_env_values = true, conflicts_with_all = ["oidc_token", "oidc_token_file"])]
    join_token: Option<String>,
    /// An identity token from the agent's OIDC issuer.
    #[arg(long, hide_env_values = true, conflicts_with = "oidc_token_file")]
    oidc_token: Option<String>,
    /// Read the OIDC token from a file (e.g. a projected service-account token).
    #[arg(long)]
    oidc_token_file: Option<PathBuf>,
    /// A SPIFFE JWT-SVID for the agent (audience: writ's issuer), e.g. from
    /// the Workload API of `writ node`.
    #[arg(long, env = "WRIT_JWT_SVID", hide_env_values = true, conflicts_with_all = ["join_token", "oidc_token", "oidc_token_file"])]
    jwt_svid: Option<String>,
    /// Print `export WRIT_INSTANCE_TOKEN=...` for `eval`.
    #[arg(long)]
    export: bool,
}

pub async fn run(g: &Global, a: AttestArgs) -> anyhow::Result<u8> {
    let oidc_token = match a.oidc_token_file {
        Some(f) => Some(
            std::fs::read_to_string(&f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => a.oidc_token,
    };
    let req = AttestRequest {
        agent: a.agent,
        join_token: a.join_token,
        oidc_token,
        jwt_svid: a.jwt_svid,
    };
    let out = g.agent_client(None)?.attest(&req).await?;
    if a.export {
        print_exports(&[
            ("WRIT_INSTANCE_TOKEN", &out.access_token),
            ("WRIT_INSTANCE_ID", out.instance_id.as_str()),
        ]);
    } else {
        print(&out, g.field())?;
    }
    Ok(EXIT_OK)
}
