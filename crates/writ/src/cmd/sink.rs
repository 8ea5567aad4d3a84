//! `writ sink list|test`: the audit sinks the broker streams to.

use clap::Subcommand;

use super::Global;
use crate::output::{EXIT_ERROR, EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum SinkCmd {
    /// Every configured sink: kind, target, cursor, lag and last error
    /// (an auditor credential is enough; secrets are never shown).
    List,
    /// Send one test event through a sink and report whether it got
    /// through (admin); exits 1 if it did not.
    Test { name: String },
}

pub async fn run(g: &Global, cmd: SinkCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        SinkCmd::List => {
            print(&c.sinks().await?, g.field())?;
            Ok(EXIT_OK)
        }
        SinkCmd::Test { name } => {
            let r = c.test_sink(&name).await?;
            print(&r, g.field())?;
            Ok(if r.delivered { EXIT_OK } else { EXIT_ERROR })
        }
    }
}
