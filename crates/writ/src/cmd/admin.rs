//! `writ admin token list|revoke`

use clap::Subcommand;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Admin credentials: list them, revoke one.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Every admin credential by name (never its value), and whether a dev
    /// start made it.
    List,
    /// Revoke an admin credential: its next use is refused. The last one
    /// not made by a dev start cannot be revoked.
    Revoke { name: String },
}

pub async fn run(g: &Global, cmd: AdminCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        AdminCmd::Token(TokenCmd::List) => print(&c.admin_tokens().await?, g.field())?,
        AdminCmd::Token(TokenCmd::Revoke { name }) => {
            c.revoke_admin_token(&name).await?;
            print(&serde_json::json!({ "revoked": name }), g.field())?;
        }
    }
    Ok(EXIT_OK)
}
