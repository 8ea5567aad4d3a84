//! `writ approval list|approve|deny`

use clap::Subcommand;
use writ_core::ApprovalId;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum ApprovalCmd {
    /// Approvals waiting for a decision (or all of them).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Approve a task; the agent gets its token at its next heartbeat.
    Approve {
        id: ApprovalId,
        #[arg(long)]
        reason: String,
    },
    /// Deny a task.
    Deny {
        id: ApprovalId,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(g: &Global, cmd: ApprovalCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        ApprovalCmd::List { all } => print(&c.approvals(all).await?, g.field())?,
        ApprovalCmd::Approve { id, reason } => {
            print(&c.decide_approval(&id, true, &reason).await?, g.field())?
        }
        ApprovalCmd::Deny { id, reason } => {
            print(&c.decide_approval(&id, false, &reason).await?, g.field())?
        }
    }
    Ok(EXIT_OK)
}
