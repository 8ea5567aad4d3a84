//! `writ audit tail|verify`

use std::time::Duration;

use clap::Subcommand;

use super::Global;
use crate::output::{EXIT_INTEGRITY, EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Print the last records, one JSON object a line.
    Tail {
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Keep printing new records as they are written.
        #[arg(short, long)]
        follow: bool,
    },
    /// Verify the whole hash chain; exits 4 if it is broken.
    Verify,
}

pub async fn run(g: &Global, cmd: AuditCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        AuditCmd::Tail { lines, follow } => {
            let page = c.audit_last(lines).await?;
            for r in &page.records {
                println!("{}", serde_json::to_string(r)?);
            }
            if !follow {
                return Ok(EXIT_OK);
            }
            let mut after = page.next;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let page = c.audit(after, 1000).await?;
                for r in &page.records {
                    println!("{}", serde_json::to_string(r)?);
                }
                after = page.next;
            }
        }
        AuditCmd::Verify => {
            let v = c.audit_verify().await?;
            print(&v, g.field())?;
            Ok(if v.valid { EXIT_OK } else { EXIT_INTEGRITY })
        }
    }
}
