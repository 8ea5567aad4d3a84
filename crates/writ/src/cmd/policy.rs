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
    /// Run policy test cases (TOML or JSON), offline; exits 3 on a mismatch.
    Test {
        file: PathBuf,
        /// The policies to test (default: the file's policy_dir).
        #[arg(long)]
        policy_dir: Option<PathBuf>,
    },
    /// Which policies permit and forbid each case's request, and the decision.
    Explain {
        file: PathBuf,
        #[arg(long)]
        policy_dir: Option<PathBuf>,
        /// Only the case with this name.
        #[arg(long)]
        case: Option<String>,
    },
    /// Show the live policy set.
    Show,
    /// List the policy versions that have been live, newest first.
    History,
    /// Shadow mode: DIR decides beside the live set on real traffic, with
    /// every difference audited and counted (`--clear` to stop).
    Shadow {
        #[arg(required_unless_present = "clear")]
        dir: Option<PathBuf>,
        #[arg(long)]
        clear: bool,
    },
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
        PolicyCmd::Test { file, policy_dir } => {
            let (cases, set) = super::policy_cases::load(&file, policy_dir.as_deref())?;
            let (mut passed, mut failed) = (0, 0);
            for case in &cases.cases {
                let d = writ_policy::cases::with_facts(case, |f| set.decide(f))?;
                let problems = case.mismatches(&d);
                if problems.is_empty() {
                    passed += 1;
                    println!("ok   {}", case.name);
                } else {
                    failed += 1;
                    println!("FAIL {}", case.name);
                    for p in problems {
                        println!("  {p}");
                    }
                }
            }
            println!("policy {}: {passed} passed, {failed} failed", set.version());
            Ok(if failed == 0 { EXIT_OK } else { EXIT_REFUSED })
        }
        PolicyCmd::Explain {
            file,
            policy_dir,
            case,
        } => {
            let (cases, set) = super::policy_cases::load(&file, policy_dir.as_deref())?;
            let mut out = Vec::new();
            for c in cases
                .cases
                .iter()
                .filter(|c| case.as_ref().is_none_or(|n| *n == c.name))
            {
                let e = writ_policy::cases::with_facts(c, |f| set.explain(f))?
                    .map_err(|e| anyhow::anyhow!("case {:?}: {e}", c.name))?;
                out.push(serde_json::json!({
                    "case": c.name,
                    "decision": e.decision.verdict().as_str(),
                    "reason": e.decision.reason(),
                    "policy_version": e.decision.policy_version(),
                    "tools": e.tools,
                }));
            }
            print(&out, g.field())?;
            Ok(EXIT_OK)
        }
        PolicyCmd::Show => {
            print(&g.admin()?.policies().await?, g.field())?;
            Ok(EXIT_OK)
        }
        PolicyCmd::Shadow { dir, clear } => {
            let c = g.admin()?;
            match (dir, clear) {
                (_, true) => {
                    c.clear_shadow().await?;
                    print(&serde_json::json!({ "shadow": null }), g.field())?;
                }
                (Some(dir), false) => {
                    let files: BTreeMap<String, String> = PolicySet::read_dir(&dir)?
                        .into_iter()
                        .map(|s| (s.name, s.text))
                        .collect();
                    print(&c.push_shadow(&PushPolicies { files }).await?, g.field())?;
                }
                (None, false) => anyhow::bail!("give a directory or --clear"),
            }
            Ok(EXIT_OK)
        }
        PolicyCmd::History => {
            print(&g.admin()?.policy_history().await?, g.field())?;
            Ok(EXIT_OK)
        }
    }
}
