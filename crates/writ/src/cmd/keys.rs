//! `writ keys rotate`

use clap::Subcommand;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Add a new signing key; the old one stays published until its tokens expire.
    Rotate {
        /// Rotate the SPIFFE trust domain's X.509 authority and JWT-SVID key
        /// instead (the old ones stay in the bundle until they expire).
        #[arg(long)]
        spiffe: bool,
    },
}

pub async fn run(g: &Global, cmd: KeysCmd) -> anyhow::Result<u8> {
    match cmd {
        KeysCmd::Rotate { spiffe: false } => print(&g.admin()?.rotate_keys().await?, g.field())?,
        KeysCmd::Rotate { spiffe: true } => {
            print(&g.admin()?.rotate_spiffe_keys().await?, g.field())?;
        }
    }
    Ok(EXIT_OK)
}
