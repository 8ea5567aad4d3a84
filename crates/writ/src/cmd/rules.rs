//! `writ rules check|test`: detection rules tried before they act.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use writ_core::Timestamp;
use writ_policy::PolicySource;
use writ_policy::rules::{RuleSet, Signal, Windows, attestation_source};

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum RulesCmd {
    /// Check a rules file (or the `*.rules.toml` of a policy directory)
    /// as the broker would load it; a bad one is refused naming its line.
    Check {
        /// A `*.rules.toml` file or a policy directory.
        path: PathBuf,
    },
    /// Replay a recorded audit range against a rules file and print what
    /// would have fired, without acting (shadow mode).
    Test {
        /// A `*.rules.toml` file or a policy directory.
        #[arg(long)]
        rules: PathBuf,
        /// Replay records after this sequence number [default: from the first].
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// ...up to and including this one [default: the last].
        #[arg(long)]
        until: Option<u64>,
        /// Only records at or after this time: unix seconds, or a duration
        /// ago (`90s`, `30m`, `2h`, `1d`).
        #[arg(long)]
        since: Option<String>,
    },
}

pub async fn run(g: &Global, cmd: RulesCmd) -> anyhow::Result<u8> {
    match cmd {
        RulesCmd::Check { path } => {
            let set = load(&path)?;
            print(
                &serde_json::json!({
                    "version": set.version(),
                    "rules": set.rules(),
                }),
                g.field(),
            )?;
            Ok(EXIT_OK)
        }
        RulesCmd::Test {
            rules,
            after,
            until,
            since,
        } => {
            let set = load(&rules)?;
            let since = since.as_deref().map(since_time).transpose()?;
            let c = g.admin()?;
            let mut windows = Windows::default();
            // Sources each agent attested from, as seen in the range.
            let mut sources: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut firings = Vec::new();
            let (mut replayed, mut first, mut last) = (0u64, None, None);
            let mut cursor = after;
            'pages: loop {
                let page = c.audit(cursor, 1000).await?;
                if page.records.is_empty() {
                    break;
                }
                for r in &page.records {
                    if until.is_some_and(|u| r.seq > u) {
                        break 'pages;
                    }
                    if since.is_some_and(|s| r.ts < s) {
                        continue;
                    }
                    let Ok(event) = r.parsed() else { continue };
                    replayed += 1;
                    first.get_or_insert(r.seq);
                    last = Some(r.seq);
                    for (rule, agent) in set.matching(&event) {
                        if rule.on == Signal::NewAttestationSource {
                            let Some(src) = attestation_source(&event) else {
                                continue;
                            };
                            let seen = sources.entry(agent.to_owned()).or_default();
                            let new = !seen.contains(&src) && !seen.is_empty();
                            seen.insert(src);
                            if !new {
                                continue;
                            }
                        }
                        if let Some(f) = windows.observe(rule, agent, r.ts, r.seq) {
                            firings.push(f);
                        }
                    }
                }
                cursor = page.next;
            }
            let not_replayed: Vec<&str> = set
                .rules()
                .iter()
                .filter(|r| r.on == Signal::ExceptionExpiring)
                .map(|r| r.id.as_str())
                .collect();
            print(
                &serde_json::json!({
                    "rules_version": set.version(),
                    "records_replayed": replayed,
                    "first_seq": first,
                    "last_seq": last,
                    "would_fire": firings,
                    // Fired by the clock, not by records: nothing to replay.
                    "not_replayed": not_replayed,
                }),
                g.field(),
            )?;
            Ok(EXIT_OK)
        }
    }
}

/// A rules file, or the rules of a directory.
fn load(path: &Path) -> anyhow::Result<RuleSet> {
    if path.is_dir() {
        return RuleSet::load_dir(path)
            .with_context(|| format!("loading rules from {}", path.display()));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("rules")
        .to_owned();
    Ok(RuleSet::parse(&[PolicySource { name, text }])?)
}

/// `--since`: unix seconds, or a duration before now.
fn since_time(s: &str) -> anyhow::Result<Timestamp> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(Timestamp::from_secs(secs));
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .with_context(|| format!("--since {s:?}: unix seconds or a duration such as 30m"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--since {s:?}: the unit is s, m, h or d"),
    };
    let now = writ_core::Clock::now(&writ_core::SystemClock);
    Ok(now.add_secs(-n.saturating_mul(mult)))
}
