//! `writ policy validate|push|show|history`

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use writ_core::api::PushPolicies;
use writ_policy::PolicySet;

use super::Global;
use crate::output::{EXIT_OK, EXIT_REFUSED, print};

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Check a directory of *.cedar files against writ's schema, offline.
    Validate { dir: PathBuf },
    /// Upload a directory as the live policy set (validated by the broker).
    Push { dir: PathBuf },
    /// Show the live policy set.
    Show,
    /// List the policy versions that have been live, newest first.
    History,
}

pub async fn run(g: &Global, cmd: PolicyCmd) -> anyhow::Result<u8> {
    match cmd {
        PolicyCmd::Validate { dir } => match PolicySet::load_dir(&dir) {
            Ok(set) => {
                print(
                    &serde_json::json!({ "valid": true, "version": set.version(), "policies": set.len() }),
                    g.field(),
                )?;
                Ok(EXIT_OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(EXIT_REFUSED)
            }
        },
        PolicyCmd::Push { dir } => {
            let files: BTreeMap<String, String> = PolicySet::read_dir(&dir)?
                .into_iter()
                .map(|s| (s.name, s.text))
                .collect();
            print(
                &g.admin()?.push_policies(&PushPolicies { files }).await?,
                g.field(),
            )?;
            Ok(EXIT_OK)
        }
        PolicyCmd::Show => {
            print(&g.admin()?.policies().await?, g.field())?;
            Ok(EXIT_OK)
        }
        PolicyCmd::History => {
            print(&g.admin()?.policy_history().await?, g.field())?;
            Ok(EXIT_OK)
        }
    }
}
