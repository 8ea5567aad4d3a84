//! Least privilege, proven from the audit chain: per agent and tool, what
//! was granted (task starts, exchanges, delegations) against what was used
//! (gateway calls, exchanges, enforced AuthZEN decisions); the narrower
//! policy set that permits exactly the legitimate traffic observed, with
//! `writ policy test` cases; and that set replayed against every recorded
//! decision of the window through the same fact builder and `decide` the
//! live enforcement points use.
//!
//! It reads the chain (never the rows retention prunes): tasks are read
//! from their start records, tool tokens from their issue records. A task
//! started before the window is looked up in the store, if it is still
//! there; a decision whose task, agent or tool cannot be found is counted
//! as not replayed, never guessed.

mod evidence;
mod observe;
mod propose;
mod render;
mod replay;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use writ_core::Timestamp;
use writ_core::api::{Agent, Tool};
use writ_policy::{FileKind, PolicySet, PolicySource};

pub use evidence::{EvidenceReport, Status as EvidenceStatus, framework_names, render_evidence};
pub use observe::CallShape;
pub use propose::{FORBIDS_FILE, PERMITS_FILE, TESTS_FILE};
use render::html_escape;
pub use render::{Format, render};

use std::sync::Arc;

use writ_core::Clock;
use writ_store::Store;

use super::audit::Audit;
use super::policies::Policies;
use crate::config::BrokerConfig;
use crate::error::Error;
use crate::metrics::{self, Metrics};

/// The longest window a report reads.
pub const MAX_SINCE_SECS: i64 = 366 * 24 * 3600;
/// The window when none is given.
pub const DEFAULT_SINCE_SECS: i64 = 24 * 3600;
/// Most records one report reads.
pub const MAX_RECORDS: u64 = 1_000_000;
/// Most changed decisions listed (all are counted).
pub const MAX_LISTED: usize = 1000;

/// What a report is asked for.
#[derive(Clone, Debug)]
pub struct ReportQuery {
    /// How far back, seconds.
    pub since_secs: i64,
    pub agent: Option<writ_core::AgentName>,
}

/// Parses a duration such as `90s`, `15m`, `24h` or `7d` (a bare number
/// is seconds), between one second and [`MAX_SINCE_SECS`].
pub fn parse_since(s: &str) -> Result<i64, Error> {
    let bad = || {
        Error::Invalid(format!(
            "since must be a duration like 90s, 15m, 24h or 7d (at most 366d), not {s:?}"
        ))
    };
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (s.get(..i).ok_or_else(bad)?, s.get(i..).ok_or_else(bad)?),
        None => (s, "s"),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    if !(1..=MAX_SINCE_SECS).contains(&secs) {
        return Err(bad());
    }
    Ok(secs)
}

/// One call shape and how often it was seen.
#[derive(Clone, Debug, Serialize)]
pub struct CallUse {
    #[serde(flatten)]
    pub call: CallShape,
    pub allowed: u64,
    pub denied: u64,
    pub approved: u64,
}

/// One agent's grants and use of one tool.
#[derive(Clone, Debug, Serialize)]
pub struct ToolReport {
    pub tool: String,
    pub granted: BTreeSet<String>,
    pub granted_by_tasks: BTreeSet<String>,
    pub granted_by_exchanges: BTreeSet<String>,
    pub granted_by_delegations: BTreeSet<String>,
    pub used: BTreeSet<String>,
    /// Granted and never used.
    pub unused: BTreeSet<String>,
    pub calls: Vec<CallUse>,
    pub exchanges_allowed: u64,
    pub exchanges_denied: u64,
    pub authzen_allowed: u64,
    pub authzen_denied: u64,
    pub tool_tokens: u64,
    /// Tool tokens issued and never presented at a gateway.
    pub tool_tokens_unused: u64,
    /// The live permits that allowed a grant here.
    pub permitted_by: BTreeSet<String>,
    pub delegation_depth_used: u32,
}

/// One agent.
#[derive(Clone, Debug, Serialize)]
pub struct AgentReport {
    pub agent: String,
    /// Quarantined now or at some point of the window: its traffic is not
    /// taken as legitimate.
    pub quarantined: bool,
    pub tools: Vec<ToolReport>,
    /// Root tasks that lived beyond the maximum by exception, and the
    /// calls each made.
    pub exceptions: Vec<ExceptionUse>,
    pub delegation_depth_used: u32,
    pub delegation_depth_allowed: u32,
}

/// A task that lived beyond the maximum by exception, and its use.
#[derive(Clone, Debug, Serialize)]
pub struct ExceptionUse {
    pub task: String,
    /// The tools it was for.
    pub tools: Vec<String>,
    /// The lifetime asked for, seconds.
    pub ttl: i64,
    /// A person approved it (an exception always needs one).
    pub approved: bool,
    /// Calls through a gateway that passed under it.
    pub calls: u64,
}

/// A live permit that allowed more than was ever used.
#[derive(Clone, Debug, Serialize)]
pub struct OverBroad {
    pub policy: String,
    /// `agent/tool` pairs it granted scopes to that were never used.
    pub unused: Vec<String>,
}

/// A recorded decision the proposal would decide otherwise.
#[derive(Clone, Debug, Serialize)]
pub struct Changed {
    pub seq: u64,
    pub at: String,
    pub action: &'static str,
    pub agent: String,
    pub tools: Vec<String>,
    pub what: String,
    pub recorded: String,
    pub proposed: String,
    pub reason: String,
}

/// The proposal's effect on the window's recorded decisions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Replay {
    pub decisions: u64,
    pub replayed: u64,
    /// Recorded decisions that could not be rebuilt (their task, agent or
    /// tool is gone, or an AuthZEN question in the user's vocabulary).
    pub not_replayed: u64,
    pub unchanged: u64,
    /// Allowed when recorded, denied (or held) by the proposal.
    pub allow_to_deny: u64,
    /// Of those, legitimate calls (allowed and completed, by agents not
    /// quarantined): 0 by construction, the proposal permits them.
    pub legitimate_allow_to_deny: u64,
    /// Denied when recorded, allowed by the proposal (must be 0).
    pub deny_to_allow: u64,
    /// Not replayed because the set replayed reads a part of the request
    /// its record redacted (a sensitive query value, MCP argument values):
    /// its verdict would be a guess.
    pub redacted_dependent: u64,
    pub changed: Vec<Changed>,
    /// The live set replayed against the decisions it made itself: the
    /// rebuilt facts must give the recorded verdict. A disagreement means
    /// replay saw something the enforcement point did not (or the reverse).
    pub live_checked: u64,
    pub live_agreed: u64,
    pub live_disagreements: Vec<Changed>,
}

/// The proposed set.
#[derive(Clone, Debug, Serialize)]
pub struct Proposal {
    /// Validated against writ's schema (and the live set's own).
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub permits: Vec<String>,
    pub forbids_kept: usize,
    /// The set's files, ready for `writ policy shadow` or `push`.
    pub files: BTreeMap<String, String>,
    /// `writ policy test` cases (JSON), run against these files.
    pub tests: serde_json::Value,
}

/// The headline numbers (also exported as metrics).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub agents: u64,
    pub unused_scopes: u64,
    pub unused_tool_tokens: u64,
    pub overbroad_policies: u64,
    pub allow_to_deny: u64,
}

/// The least-privilege report.
#[derive(Clone, Debug, Serialize)]
pub struct LeastPrivilegeReport {
    pub generated_at: String,
    pub since: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    /// The window held more than [`MAX_RECORDS`]: only the newest were read.
    pub truncated: bool,
    pub live_policy_version: String,
    pub summary: Summary,
    pub agents: Vec<AgentReport>,
    pub overbroad_policies: Vec<OverBroad>,
    pub proposal: Proposal,
    pub replay: Replay,
}

/// Reports: least privilege (granted against used, a narrower proposal
/// and its replay) and framework evidence, read from the audit chain.
pub struct Reports {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Arc<BrokerConfig>,
    policies: Arc<Policies>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
}

impl Reports {
    pub(in crate::service) fn new(h: &super::Handles, audit: &Arc<Audit>) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            config: Arc::clone(&h.config),
            policies: Arc::clone(&h.policies),
            audit: Arc::clone(audit),
            metrics: Arc::clone(&h.metrics),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The least-privilege report over the last `since_secs` of the chain;
    /// its headline numbers become the gauges.
    pub async fn least_privilege(&self, q: &ReportQuery) -> Result<LeastPrivilegeReport, Error> {
        let r = self.least_privilege_report(q).await?;
        metrics::set(&self.metrics.lp_unused_scopes, r.summary.unused_scopes);
        metrics::set(
            &self.metrics.lp_unused_tool_tokens,
            r.summary.unused_tool_tokens,
        );
        metrics::set(&self.metrics.lp_overbroad, r.summary.overbroad_policies);
        metrics::set(&self.metrics.lp_allow_to_deny, r.summary.allow_to_deny);
        Ok(r)
    }

    /// The report, without touching the gauges (the evidence report reads
    /// it over its own window).
    pub(crate) async fn least_privilege_report(
        &self,
        q: &ReportQuery,
    ) -> Result<LeastPrivilegeReport, Error> {
        let now = self.now();
        let since = now.add_secs(-q.since_secs);
        let tools: BTreeMap<String, Tool> = self
            .store
            .list_tools()
            .await?
            .into_iter()
            .map(|t| (t.name.to_string(), t))
            .collect();
        let agents: BTreeMap<String, Agent> = self
            .store
            .list_agents()
            .await?
            .into_iter()
            .map(|a| (a.name.to_string(), a))
            .collect();
        let by_audience: BTreeMap<String, String> = tools
            .values()
            .map(|t| (t.audience.clone(), t.name.to_string()))
            .collect();
        let (mut seen, truncated) = self.observe(since, &by_audience).await?;
        self.scopes_from_store(&mut seen).await?;
        seen.quarantined.extend(
            agents
                .values()
                .filter(|a| a.quarantined)
                .map(|a| a.name.to_string()),
        );
        if let Some(only) = &q.agent {
            let only = only.to_string();
            seen.usage.retain(|(a, _), _| *a == only);
            seen.decided.retain(|d| d.agent() == only);
            seen.exceptions.retain(|x| x.agent == only);
        }
        let live = self.policies.live();
        let legit = propose::legitimate(&seen.decided, &seen.quarantined);
        let proposal = self.proposal(&live, &legit, &seen, &agents, &tools);
        let replay = match proposal.1.as_ref() {
            Some(set) => {
                self.replay(set, &live, &seen, &legit, &agents, &tools)
                    .await?
            }
            None => Replay::default(),
        };
        let (agent_reports, overbroad) =
            self.agent_reports(&seen, &live.permit_ids(), self.config.max_delegation_depth);
        let summary = Summary {
            agents: agent_reports.len() as u64,
            unused_scopes: agent_reports
                .iter()
                .flat_map(|a| &a.tools)
                .map(|t| t.unused.len() as u64)
                .sum(),
            unused_tool_tokens: agent_reports
                .iter()
                .flat_map(|a| &a.tools)
                .map(|t| t.tool_tokens_unused)
                .sum(),
            overbroad_policies: overbroad.len() as u64,
            allow_to_deny: replay.allow_to_deny,
        };
        Ok(LeastPrivilegeReport {
            generated_at: now.to_rfc3339(),
            since: since.to_rfc3339(),
            first_seq: seen.first_seq,
            last_seq: seen.last_seq,
            records: seen.records,
            truncated,
            live_policy_version: live.version().to_owned(),
            summary,
            agents: agent_reports,
            overbroad_policies: overbroad,
            proposal: proposal.0,
            replay,
        })
    }

    /// Reads the chain from the first record at or after `since`.
    async fn observe(
        &self,
        since: Timestamp,
        by_audience: &BTreeMap<String, String>,
    ) -> Result<(observe::Observed, bool), Error> {
        const PAGE: u32 = 1000;
        let head = self.store.audit_head().await?;
        // Refusals in the five minutes before the window count in the
        // behaviour its first decisions saw.
        let warm = since.add_secs(-super::DENIAL_WINDOW_SECS);
        let since_window = since;
        let since = warm;
        // The first record at or after `since`: the chain is in time order.
        let (mut lo, mut hi) = (1u64, head.saturating_add(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.audit.records_after(mid.saturating_sub(1), 1).await?;
            match r.first() {
                Some(r) if r.ts < since => lo = r.seq.saturating_add(1).max(mid + 1),
                _ => hi = mid,
            }
        }
        let mut after = lo.saturating_sub(1);
        let truncated = head.saturating_sub(after) > MAX_RECORDS;
        if truncated {
            after = head.saturating_sub(MAX_RECORDS);
        }
        let mut seen = observe::Observed::default();
        while after < head {
            let page = self.audit.records_after(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                // A record that does not parse breaks the chain: `writ
                // audit verify` says so; the report skips it.
                match r.parsed() {
                    Ok(e) if r.ts < since_window => seen.charge(r.ts, &e),
                    Ok(e) => seen.push(r.seq, r.ts, &e, by_audience),
                    Err(_) => {}
                }
            }
        }
        seen.finish();
        Ok((seen, truncated))
    }

    /// Calls whose token and task were both issued before the window carry
    /// no scopes the chain read can tell: the task's scopes for the tool,
    /// from the store while it still holds the task, stand in.
    async fn scopes_from_store(&self, seen: &mut observe::Observed) -> Result<(), Error> {
        let mut tasks: BTreeMap<String, Option<writ_core::api::Task>> = BTreeMap::new();
        for d in &mut seen.decided {
            let observe::Recorded::Call {
                agent,
                task,
                tool,
                scopes,
                ..
            } = &mut d.what
            else {
                continue;
            };
            if !scopes.is_empty() {
                continue;
            }
            if !tasks.contains_key(task.as_str()) {
                let found = match task.parse() {
                    Ok(id) => self.store.get_task(&id).await?,
                    Err(_) => None,
                };
                tasks.insert(task.clone(), found);
            }
            let Some(Some(t)) = tasks.get(task.as_str()) else {
                continue;
            };
            if let Some(c) = t.capabilities.iter().find(|c| c.tool.as_str() == tool) {
                scopes.extend(c.scopes.iter().map(|s| s.as_str().to_owned()));
                if d.completed
                    && let Some(u) = seen.usage.get_mut(&(agent.clone(), tool.clone()))
                {
                    u.used_by_calls.extend(scopes.iter().cloned());
                }
            }
        }
        Ok(())
    }

    fn proposal(
        &self,
        live: &PolicySet,
        legit: &BTreeMap<(String, String), propose::Legit>,
        seen: &observe::Observed,
        agents: &BTreeMap<String, Agent>,
        tools: &BTreeMap<String, Tool>,
    ) -> (Proposal, Option<PolicySet>) {
        let (permits_text, permits) = propose::permits(legit);
        let live_forbids = live.forbids();
        let mut files = BTreeMap::new();
        files.insert(PERMITS_FILE.to_owned(), permits_text);
        if let Some(f) = propose::forbids(&live_forbids) {
            files.insert(FORBIDS_FILE.to_owned(), f);
        }
        // The user's own schema and entities, so their vocabulary compiles.
        for s in live.sources() {
            if matches!(
                FileKind::of(&s.name),
                Some(FileKind::Schema | FileKind::Entities)
            ) {
                files.insert(s.name.clone(), s.text.clone());
            }
        }
        let granted: BTreeMap<(String, String), BTreeSet<String>> = seen
            .usage
            .iter()
            .filter(|((a, _), _)| !seen.quarantined.contains(a))
            .map(|(k, u)| (k.clone(), u.granted()))
            .collect();
        let tests = propose::cases(legit, &granted, agents, tools);
        let sources: Vec<PolicySource> = files
            .iter()
            .map(|(name, text)| PolicySource {
                name: name.clone(),
                text: text.clone(),
            })
            .collect();
        let (valid, error, set) = match PolicySet::compile(sources) {
            Ok(set) => (true, None, Some(set)),
            Err(e) => (false, Some(e.to_string()), None),
        };
        (
            Proposal {
                valid,
                error,
                version: set.as_ref().map(|s| s.version().to_owned()),
                permits,
                forbids_kept: live_forbids.len(),
                files,
                tests,
            },
            set,
        )
    }

    fn agent_reports(
        &self,
        seen: &observe::Observed,
        live_permits: &[String],
        depth_allowed: u32,
    ) -> (Vec<AgentReport>, Vec<OverBroad>) {
        let mut agents: BTreeMap<String, AgentReport> = BTreeMap::new();
        let mut overbroad: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((agent, tool), u) in &seen.usage {
            let used = u.used();
            let granted = u.granted();
            let unused: BTreeSet<String> = granted.difference(&used).cloned().collect();
            if !unused.is_empty() {
                for p in u.permitted_by.iter().filter(|p| live_permits.contains(p)) {
                    overbroad
                        .entry(p.clone())
                        .or_default()
                        .push(format!("{agent}/{tool}"));
                }
            }
            let a = agents.entry(agent.clone()).or_insert_with(|| AgentReport {
                agent: agent.clone(),
                quarantined: seen.quarantined.contains(agent),
                tools: Vec::new(),
                exceptions: seen
                    .exceptions
                    .iter()
                    .filter(|x| x.agent == *agent)
                    .map(|x| ExceptionUse {
                        task: x.task.clone(),
                        tools: x.tools.clone(),
                        ttl: x.ttl,
                        approved: seen.approved_tasks.contains(&x.task),
                        calls: seen.calls_by_task.get(&x.task).copied().unwrap_or(0),
                    })
                    .collect(),
                delegation_depth_used: 0,
                delegation_depth_allowed: depth_allowed,
            });
            a.delegation_depth_used = a.delegation_depth_used.max(u.depth);
            a.tools.push(ToolReport {
                tool: tool.clone(),
                granted,
                granted_by_tasks: u.granted_tasks.clone(),
                granted_by_exchanges: u.granted_exchanges.clone(),
                granted_by_delegations: u.granted_delegations.clone(),
                used,
                unused,
                calls: u
                    .calls
                    .iter()
                    .map(|(c, (allowed, denied, approved))| CallUse {
                        call: c.clone(),
                        allowed: *allowed,
                        denied: *denied,
                        approved: *approved,
                    })
                    .collect(),
                exchanges_allowed: u.exchanges.0,
                exchanges_denied: u.exchanges.1,
                authzen_allowed: u.authzen.0,
                authzen_denied: u.authzen.1,
                tool_tokens: u.tokens.len() as u64,
                tool_tokens_unused: u.tokens.difference(&u.tokens_presented).count() as u64,
                permitted_by: u.permitted_by.clone(),
                delegation_depth_used: u.depth,
            });
        }
        (
            agents.into_values().collect(),
            overbroad
                .into_iter()
                .map(|(policy, unused)| OverBroad { policy, unused })
                .collect(),
        )
    }
}

impl observe::Decided {
    /// The agent the decision was about (a delegation's: the sub-agent).
    pub(crate) fn agent(&self) -> &str {
        match &self.what {
            observe::Recorded::Start { agent, .. }
            | observe::Recorded::Exchange { agent, .. }
            | observe::Recorded::Call { agent, .. } => agent,
            observe::Recorded::Delegate { actor, .. } => actor,
            observe::Recorded::Evaluated { seen, .. } => &seen.agent,
        }
    }
}

#[cfg(test)]
mod tests;
