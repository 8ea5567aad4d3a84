//! `writ admin token create|list|rotate|revoke`

use clap::Subcommand;
use writ_core::api::Role;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Operator credentials: create, list, rotate, revoke.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// A new named credential with a role; its secret is printed once
    /// (`--field token` prints only the secret).
    Create {
        name: String,
        /// admin (everything), operator (agents, tools, tasks, quarantine),
        /// approver (approvals), auditor (read-only audit), policy-author
        /// (policies and shadow sets).
        #[arg(long, default_value = "admin")]
        role: Role,
    },
    /// A new secret for a credential, printed once; the old one is refused
    /// at once.
    Rotate { name: String },
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
        AdminCmd::Token(TokenCmd::Create { name, role }) => {
            print(&c.create_admin_token(&name, role).await?, g.field())?;
        }
        AdminCmd::Token(TokenCmd::Rotate { name }) => {
            print(&c.rotate_admin_token(&name).await?, g.field())?;
        }
        AdminCmd::Token(TokenCmd::List) => print(&c.admin_tokens().await?, g.field())?,
        AdminCmd::Token(TokenCmd::Revoke { name }) => {
            c.revoke_admin_token(&name).await?;
            print(&serde_json::json!({ "revoked": name }), g.field())?;
        }
    }
    Ok(EXIT_OK)
}
