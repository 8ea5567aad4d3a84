//! `writ client register|list|revoke`: OAuth clients of introspection and
//! revocation (resource servers; gateways may also authenticate with
//! their own credential as the secret).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use writ_core::api::RegisterClient;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Register a client. Without --jwks it authenticates with
    /// `client_secret_basic`: its secret is printed once, and only its hash
    /// is kept. With --jwks, with `private_key_jwt` (RFC 7523) signed by
    /// one of those keys (ES256 or EdDSA).
    Register {
        client_id: String,
        /// A JSON file holding the client's public JWK Set.
        #[arg(long, value_name = "FILE")]
        jwks: Option<PathBuf>,
        /// An audience whose tokens the client may revoke (repeatable).
        #[arg(long = "audience", value_name = "URI")]
        audiences: Vec<String>,
    },
    /// List clients (never their secrets).
    List,
    /// Revoke a client: it can no longer authenticate.
    Revoke { client_id: String },
}

pub async fn run(g: &Global, cmd: ClientCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        ClientCmd::Register {
            client_id,
            jwks,
            audiences,
        } => {
            let jwks = match jwks {
                None => None,
                Some(f) => Some(
                    serde_json::from_str(
                        &std::fs::read_to_string(&f)
                            .with_context(|| format!("reading {}", f.display()))?,
                    )
                    .with_context(|| format!("parsing {}", f.display()))?,
                ),
            };
            let req = RegisterClient {
                client_id,
                jwks,
                audiences,
            };
            print(&c.register_client(&req).await?, g.field())?;
        }
        ClientCmd::List => print(&c.list_clients().await?, g.field())?,
        ClientCmd::Revoke { client_id } => {
            c.revoke_client(&client_id).await?;
            print(
                &serde_json::json!({ "client_id": client_id, "revoked": true }),
                g.field(),
            )?;
        }
    }
    Ok(EXIT_OK)
}
