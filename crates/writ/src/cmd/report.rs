//! `writ report least-privilege` and `writ report evidence`

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use writ_core::api::PushPolicies;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum ReportCmd {
    /// Per agent and tool: scopes granted against scopes used, over-broad
    /// policies, and a narrower policy set that permits exactly the
    /// legitimate traffic seen, replayed against every recorded decision.
    LeastPrivilege {
        /// How far back: 90s, 15m, 24h, 7d (default 24h).
        #[arg(long)]
        since: Option<String>,
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
        /// table, json, markdown or html.
        #[arg(long, default_value = "table")]
        format: String,
        /// Write the proposed policy set and its `writ policy test` cases
        /// into this directory (created if missing).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Install the proposed set as the shadow set, so live traffic
        /// keeps measuring it (`writ policy shadow --clear` to stop).
        #[arg(long)]
        install_shadow: bool,
    },
    /// A security framework's items (OWASP NHI and Agentic top tens, NIST
    /// CSF 2.0 and AI RMF, MITRE ATLAS, CSA MAESTRO), each with the live
    /// evidence writ holds for it and a status: pass, gap or
    /// not-applicable, with links to audit records.
    Evidence {
        /// owasp-nhi, owasp-agentic, nist-ai-rmf, nist-csf, mitre-atlas or
        /// csa-maestro.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
            writ_authority::service::report::framework_names()
        ))]
        framework: String,
        /// table, json, markdown or html.
        #[arg(long, default_value = "table", value_parser = ["table", "json", "markdown", "html"])]
        format: String,
    },
}

/// What the CLI reads of the JSON report.
#[derive(serde::Deserialize)]
struct Report {
    proposal: Proposal,
}

#[derive(serde::Deserialize)]
struct Proposal {
    valid: bool,
    #[serde(default)]
    error: Option<String>,
    files: std::collections::BTreeMap<String, String>,
    tests: serde_json::Value,
}

pub async fn run(g: &Global, cmd: ReportCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        ReportCmd::Evidence { framework, format } => {
            let doc = c.evidence_report(&framework, &format).await?;
            print!("{doc}");
            if !doc.ends_with('\n') {
                println!();
            }
            Ok(EXIT_OK)
        }
        ReportCmd::LeastPrivilege {
            since,
            agent,
            format,
            out,
            install_shadow,
        } => {
            let doc = c
                .least_privilege_report(since.as_deref(), agent.as_deref(), &format)
                .await?;
            if out.is_none() && !install_shadow {
                print!("{doc}");
                if !doc.ends_with('\n') {
                    println!();
                }
                return Ok(EXIT_OK);
            }
            // The proposal travels in the JSON form.
            let json = if format == "json" {
                doc.clone()
            } else {
                c.least_privilege_report(since.as_deref(), agent.as_deref(), "json")
                    .await?
            };
            let report: Report =
                serde_json::from_str(&json).context("the broker's report carries no proposal")?;
            let proposal = report.proposal;
            let files = proposal.files;
            if let Some(dir) = &out {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for (name, text) in &files {
                    // Names come from the broker: keep them to plain file names.
                    anyhow::ensure!(
                        !name.contains(['/', '\\']) && !name.starts_with('.'),
                        "refusing to write a proposed file named {name:?}"
                    );
                    std::fs::write(dir.join(name), text)?;
                }
                std::fs::write(
                    dir.join("least-privilege.tests.json"),
                    serde_json::to_string_pretty(&proposal.tests)?,
                )?;
                eprintln!("wrote the proposed set to {}", dir.display());
            }
            if install_shadow {
                anyhow::ensure!(
                    proposal.valid,
                    "the proposed set is not valid: {}",
                    proposal.error.unwrap_or_default()
                );
                print(&c.push_shadow(&PushPolicies { files }).await?, g.field())?;
            } else {
                print!("{doc}");
            }
            Ok(EXIT_OK)
        }
    }
}
