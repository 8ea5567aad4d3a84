//! `writ keys rotate`

use clap::Subcommand;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Add a new signing key; the old one stays published until its tokens expire.
    Rotate,
}

pub async fn run(g: &Global, cmd: KeysCmd) -> anyhow::Result<u8> {
    match cmd {
        KeysCmd::Rotate => print(&g.admin()?.rotate_keys().await?, g.field())?,
    }
    Ok(EXIT_OK)
}
