//! Framework evidence: each item of a security framework (OWASP NHI and
//! Agentic top tens, NIST CSF and AI RMF, MITRE ATLAS, CSA MAESTRO) mapped
//! to the checks writ can answer from its live state, with a status and
//! the audit records behind it.
//!
//! The mappings are data files (`frameworks/*.toml`, embedded), each
//! naming the framework version it follows. The checks are computed from
//! [`Facts`]: the broker's configuration, one read of the audit chain, the
//! chain's verification and the least-privilege report.

mod checks;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};

use super::Reports;
use super::{Format, MAX_RECORDS, MAX_SINCE_SECS, ReportQuery, html_escape};
use crate::error::Error;

/// A token living longer than this (seconds) counts as long-lived.
pub const LONG_LIVED_SECS: i64 = 60 * 60;
/// The longest task lifetime taken as short (seconds).
pub const SHORT_TASK_SECS: i64 = 24 * 60 * 60;
/// The deepest delegation limit taken as bounded.
pub const BOUNDED_DEPTH: u32 = 5;
/// Most audit links one piece of evidence lists (all are counted).
pub const MAX_LINKS: usize = 20;

/// The frameworks, by the name the CLI and the route take.
const FILES: [(&str, &str); 6] = [
    ("owasp-nhi", include_str!("frameworks/owasp-nhi.toml")),
    (
        "owasp-agentic",
        include_str!("frameworks/owasp-agentic.toml"),
    ),
    ("nist-ai-rmf", include_str!("frameworks/nist-ai-rmf.toml")),
    ("nist-csf", include_str!("frameworks/nist-csf.toml")),
    ("mitre-atlas", include_str!("frameworks/mitre-atlas.toml")),
    ("csa-maestro", include_str!("frameworks/csa-maestro.toml")),
];

/// Every check an item may name.
pub const CHECKS: [&str; 13] = [
    "token-lifetimes",
    "long-lived-tokens",
    "static-secrets",
    "least-privilege",
    "delegation-limits",
    "sender-constrained",
    "audit-integrity",
    "policy-enforcement",
    "revocation",
    "attestation",
    "human-approval",
    "gateway-mediation",
    "task-lifetimes",
];

/// The framework names accepted.
pub fn framework_names() -> Vec<&'static str> {
    FILES.iter().map(|(n, _)| *n).collect()
}

/// One mapping file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub framework: String,
    pub name: String,
    /// The framework version the mapping follows.
    pub version: String,
    pub items: Vec<MappedItem>,
}

/// One control, risk, technique or threat.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedItem {
    pub id: String,
    pub title: String,
    /// The checks that bear on it; none: outside what writ enforces.
    #[serde(default)]
    pub checks: Vec<String>,
    /// How writ bears on it (or why it does not), in a sentence.
    #[serde(default)]
    pub note: Option<String>,
}

/// The mapping of `name`, parsed.
pub fn mapping(name: &str) -> Result<Mapping, Error> {
    let Some((_, text)) = FILES.iter().find(|(n, _)| *n == name) else {
        return Err(Error::Invalid(format!(
            "framework must be one of {}, not {name:?}",
            framework_names().join(", ")
        )));
    };
    let m: Mapping = toml::from_str(text)
        .map_err(|e| Error::Internal(format!("the {name} mapping does not parse: {e}")))?;
    if let Some(bad) = m
        .items
        .iter()
        .flat_map(|i| &i.checks)
        .find(|c| !CHECKS.contains(&c.as_str()))
    {
        return Err(Error::Internal(format!(
            "the {name} mapping names an unknown check {bad:?}"
        )));
    }
    Ok(m)
}

/// An item's or a check's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    NotApplicable,
    Gap,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::NotApplicable => "not-applicable",
            Status::Gap => "gap",
        }
    }
}

/// A link to one audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditLink {
    pub seq: u64,
    /// The admin API address that returns the record.
    pub href: String,
}

impl AuditLink {
    fn new(seq: u64) -> Self {
        Self {
            seq,
            href: format!("/v1/audit?after={}&limit=1", seq.saturating_sub(1)),
        }
    }
}

/// One check's answer.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub check: String,
    pub status: Status,
    pub summary: String,
    pub audit: Vec<AuditLink>,
}

/// One item of the framework and its evidence.
#[derive(Clone, Debug, Serialize)]
pub struct EvidenceItem {
    pub id: String,
    pub title: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub evidence: Vec<Evidence>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EvidenceSummary {
    pub pass: u64,
    pub gap: u64,
    pub not_applicable: u64,
}

/// The evidence report.
#[derive(Clone, Debug, Serialize)]
pub struct EvidenceReport {
    pub framework: String,
    pub name: String,
    pub framework_version: String,
    pub generated_at: String,
    pub records: u64,
    /// The chain held more than [`MAX_RECORDS`]: only the newest were read.
    pub truncated: bool,
    pub summary: EvidenceSummary,
    pub items: Vec<EvidenceItem>,
}

/// Sequence numbers of some records, and how many there were.
#[derive(Clone, Debug, Default)]
pub struct Seqs {
    pub count: u64,
    pub seqs: Vec<u64>,
}

impl Seqs {
    fn push(&mut self, seq: u64) {
        self.count += 1;
        if self.seqs.len() < MAX_LINKS {
            self.seqs.push(seq);
        }
    }
    fn links(&self) -> Vec<AuditLink> {
        self.seqs.iter().copied().map(AuditLink::new).collect()
    }
}

/// What the checks are computed from.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub instance_token_ttl: i64,
    pub task_token_ttl: i64,
    pub tool_token_ttl: i64,
    pub max_task_ttl: i64,
    pub max_exception_ttl: i64,
    pub max_delegation_depth: u32,
    pub propagation_wait_secs: u64,
    pub dpop_nonces: bool,
    /// `--require-dpop`: attestations without a DPoP proof are refused.
    pub require_dpop: bool,
    /// Tokens issued bound to a DPoP key, and without a binding (bearer).
    pub bound_tokens: Seqs,
    pub bearer_tokens: Seqs,
    /// Tokens whose record does not say (issued by an older writ).
    pub unknown_binding: Seqs,
    pub records: u64,
    pub truncated: bool,
    /// The longest lifetime of a token ever issued: seconds, kind, seq.
    pub longest_token: Option<(i64, String, u64)>,
    /// Tokens issued to live longer than [`LONG_LIVED_SECS`].
    pub long_tokens: Seqs,
    /// Tools whose upstream secret the gateway injects.
    pub secret_tools: Vec<String>,
    pub secret_sets: Seqs,
    pub quarantines: Seqs,
    pub quarantined_now: Vec<String>,
    pub revocations: Seqs,
    pub refusals: Seqs,
    pub decisions_allowed: u64,
    pub decisions_denied: Seqs,
    pub policy_loads: Seqs,
    pub live_policy_version: String,
    pub attests: Seqs,
    pub attest_failures: Seqs,
    pub approvals: Seqs,
    pub tools: u64,
    pub tools_via_gateway: u64,
    pub tool_calls: Seqs,
    pub tool_calls_denied: Seqs,
    pub chain_valid: bool,
    pub chain_break: Option<(u64, String)>,
    pub checkpoints: u64,
    pub sealed_through: u64,
    pub lp_agents: u64,
    pub lp_unused_scopes: u64,
    pub lp_overbroad: Vec<String>,
    pub lp_depth_used: u32,
    pub lp_exceptions: u64,
}

impl Facts {
    /// Takes in one audit record (`ts` in seconds).
    pub fn record(&mut self, seq: u64, ts: i64, e: &AuditEvent) {
        let ok = e.outcome == Outcome::Success;
        match e.kind {
            AuditKind::TokenIssue if ok => {
                let exp = e.detail.get("exp").and_then(serde_json::Value::as_i64);
                let kind = e
                    .detail
                    .get("kind")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("token");
                match e.detail.get("binding").and_then(serde_json::Value::as_str) {
                    Some("dpop") => self.bound_tokens.push(seq),
                    Some(_) => self.bearer_tokens.push(seq),
                    None => self.unknown_binding.push(seq),
                }
                if let Some(exp) = exp {
                    let life = exp - ts;
                    if life > LONG_LIVED_SECS {
                        self.long_tokens.push(seq);
                    }
                    if self.longest_token.as_ref().is_none_or(|l| life > l.0) {
                        self.longest_token = Some((life, kind.to_owned(), seq));
                    }
                }
            }
            AuditKind::ToolSecretSet => self.secret_sets.push(seq),
            AuditKind::AgentQuarantine if ok => self.quarantines.push(seq),
            AuditKind::TokenRevoke if ok => self.revocations.push(seq),
            AuditKind::TokenRefused => self.refusals.push(seq),
            AuditKind::PolicyLoad if ok => self.policy_loads.push(seq),
            AuditKind::Attest if ok => self.attests.push(seq),
            AuditKind::Attest => self.attest_failures.push(seq),
            AuditKind::Approval => self.approvals.push(seq),
            AuditKind::ToolCall if e.outcome == Outcome::Deny => {
                self.tool_calls_denied.push(seq);
            }
            AuditKind::ToolCall if ok => self.tool_calls.push(seq),
            AuditKind::TaskStart | AuditKind::TokenExchange | AuditKind::Decision => {
                if e.outcome == Outcome::Deny {
                    self.decisions_denied.push(seq);
                } else if ok {
                    self.decisions_allowed += 1;
                }
            }
            _ => {}
        }
    }
}

fn mins(secs: i64) -> String {
    if secs >= 3600 && secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

fn ev(check: &str, status: Status, summary: String, audit: Vec<AuditLink>) -> Evidence {
    Evidence {
        check: check.to_owned(),
        status,
        summary,
        audit,
    }
}

/// One check, from the facts.
pub fn check(id: &str, f: &Facts) -> Evidence {
    let run: fn(&str, &Facts) -> Evidence = match id {
        "token-lifetimes" => checks::token_lifetimes,
        "long-lived-tokens" => checks::long_lived_tokens,
        "static-secrets" => checks::static_secrets,
        "least-privilege" => checks::least_privilege,
        "delegation-limits" => checks::delegation_limits,
        "sender-constrained" => checks::sender_constrained,
        "audit-integrity" => checks::audit_integrity,
        "policy-enforcement" => checks::policy_enforcement,
        "revocation" => checks::revocation,
        "attestation" => checks::attestation,
        "human-approval" => checks::human_approval,
        "gateway-mediation" => checks::gateway_mediation,
        "task-lifetimes" => checks::task_lifetimes,
        other => {
            return ev(
                other,
                Status::Gap,
                format!("unknown check {other:?}"),
                Vec::new(),
            );
        }
    };
    run(id, f)
}

/// The report of `m` from the facts.
pub fn assemble(m: &Mapping, f: &Facts, generated_at: String) -> EvidenceReport {
    let mut summary = EvidenceSummary::default();
    let items: Vec<EvidenceItem> = m
        .items
        .iter()
        .map(|i| {
            let evidence: Vec<Evidence> = i.checks.iter().map(|c| check(c, f)).collect();
            let status = if evidence.iter().any(|e| e.status == Status::Gap) {
                Status::Gap
            } else if evidence.iter().any(|e| e.status == Status::Pass) {
                Status::Pass
            } else {
                Status::NotApplicable
            };
            match status {
                Status::Pass => summary.pass += 1,
                Status::Gap => summary.gap += 1,
                Status::NotApplicable => summary.not_applicable += 1,
            }
            EvidenceItem {
                id: i.id.clone(),
                title: i.title.clone(),
                status,
                note: i.note.clone(),
                evidence,
            }
        })
        .collect();
    EvidenceReport {
        framework: m.framework.clone(),
        name: m.name.clone(),
        framework_version: m.version.clone(),
        generated_at,
        records: f.records,
        truncated: f.truncated,
        summary,
        items,
    }
}

impl Reports {
    /// The evidence report for `framework` (one of [`framework_names`]).
    pub async fn evidence_report(&self, framework: &str) -> Result<EvidenceReport, Error> {
        let m = mapping(framework)?;
        let f = self.evidence_facts().await?;
        Ok(assemble(&m, &f, self.now().to_rfc3339()))
    }

    async fn evidence_facts(&self) -> Result<Facts, Error> {
        const PAGE: u32 = 1000;
        let c = &self.config;
        let mut f = Facts {
            instance_token_ttl: c.instance_token_ttl,
            task_token_ttl: c.task_token_ttl,
            tool_token_ttl: c.tool_token_ttl,
            max_task_ttl: c.max_task_ttl,
            max_exception_ttl: c.max_exception_ttl,
            max_delegation_depth: c.max_delegation_depth,
            propagation_wait_secs: c.propagation_wait.as_secs(),
            dpop_nonces: c.dpop_nonces,
            require_dpop: c.require_dpop,
            live_policy_version: self.policies.live().version().to_owned(),
            ..Facts::default()
        };
        let tools = self.store.list_tools().await?;
        f.tools = tools.len() as u64;
        f.tools_via_gateway = tools
            .iter()
            .filter(|t| t.upstream.as_ref().is_some_and(|u| u.is_gateway()))
            .count() as u64;
        f.secret_tools = tools
            .iter()
            .filter(|t| t.secret_header.is_some())
            .map(|t| t.name.to_string())
            .collect();
        f.quarantined_now = self
            .store
            .list_agents()
            .await?
            .into_iter()
            .filter(|a| a.quarantined)
            .map(|a| a.name.to_string())
            .collect();
        let head = self.store.audit_head().await?;
        let mut after = head.saturating_sub(MAX_RECORDS);
        f.truncated = after > 0;
        while after < head {
            let page = self.audit.records_after(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                f.records += 1;
                // A record that does not parse breaks the chain: the
                // audit-integrity check says so.
                if let Ok(e) = r.parsed() {
                    f.record(r.seq, r.ts.secs(), &e);
                }
            }
        }
        let v = self.audit.verify().await?;
        f.chain_valid = v.valid;
        f.chain_break = v.error.map(|b| (b.seq, b.reason));
        f.checkpoints = v.checkpoints;
        f.sealed_through = v.sealed_through;
        let lp = self
            .least_privilege_report(&ReportQuery {
                since_secs: MAX_SINCE_SECS,
                agent: None,
            })
            .await?;
        f.lp_agents = lp.summary.agents;
        f.lp_unused_scopes = lp.summary.unused_scopes;
        f.lp_overbroad = lp
            .overbroad_policies
            .iter()
            .map(|o| o.policy.clone())
            .collect();
        f.lp_depth_used = lp
            .agents
            .iter()
            .map(|a| a.delegation_depth_used)
            .max()
            .unwrap_or(0);
        f.lp_exceptions = lp.agents.iter().map(|a| a.exceptions.len() as u64).sum();
        Ok(f)
    }
}

/// The report as a document (`table` is Markdown's rows as plain text).
pub fn render_evidence(r: &EvidenceReport, format: Format) -> Result<String, Error> {
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
        }
        Format::Table => {
            let _ = writeln!(
                out,
                "{} ({}) evidence, {}: {} pass, {} gap, {} not applicable",
                r.name,
                r.framework_version,
                r.generated_at,
                r.summary.pass,
                r.summary.gap,
                r.summary.not_applicable
            );
            for i in &r.items {
                let _ = writeln!(out, "{:<16} {:<15} {}", i.id, i.status.as_str(), i.title);
                for e in &i.evidence {
                    let seqs: Vec<String> = e.audit.iter().map(|a| a.seq.to_string()).collect();
                    let _ = writeln!(
                        out,
                        "    [{}] {}: {}{}",
                        e.status.as_str(),
                        e.check,
                        e.summary,
                        if seqs.is_empty() {
                            String::new()
                        } else {
                            format!(" (audit {})", seqs.join(", "))
                        }
                    );
                }
            }
        }
        Format::Markdown => {
            let md = |s: &str| s.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(
                out,
                "# {} evidence\n\nFramework version: {}. Generated {} from {} audit record(s): {} pass, {} gap, {} not applicable.\n",
                md(&r.name),
                md(&r.framework_version),
                r.generated_at,
                r.records,
                r.summary.pass,
                r.summary.gap,
                r.summary.not_applicable
            );
            let _ = writeln!(out, "| id | title | status | evidence |\n|---|---|---|---|");
            for i in &r.items {
                let mut evs: Vec<String> = i
                    .evidence
                    .iter()
                    .map(|e| {
                        let seqs: Vec<String> =
                            e.audit.iter().map(|a| format!("#{}", a.seq)).collect();
                        format!(
                            "{} ({}): {}{}",
                            e.check,
                            e.status.as_str(),
                            md(&e.summary),
                            if seqs.is_empty() {
                                String::new()
                            } else {
                                format!(" [audit {}]", seqs.join(" "))
                            }
                        )
                    })
                    .collect();
                if let Some(n) = &i.note {
                    evs.insert(0, md(n));
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    md(&i.id),
                    md(&i.title),
                    i.status.as_str(),
                    evs.join("<br>")
                );
            }
        }
        Format::Html => {
            let h = html_escape;
            let _ = writeln!(
                out,
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} evidence</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:.3em .5em;vertical-align:top;text-align:left}}.pass{{background:#dfd}}.gap{{background:#fdd}}.not-applicable{{background:#eee}}</style></head><body>",
                h(&r.name)
            );
            let _ = writeln!(
                out,
                "<h1>{} evidence</h1>\n<p>Framework version {}. Generated {} from {} audit record(s){}: {} pass, {} gap, {} not applicable.</p>",
                h(&r.name),
                h(&r.framework_version),
                h(&r.generated_at),
                r.records,
                if r.truncated { " (newest only)" } else { "" },
                r.summary.pass,
                r.summary.gap,
                r.summary.not_applicable
            );
            let _ = writeln!(
                out,
                "<table><tr><th>id</th><th>title</th><th>status</th><th>evidence</th></tr>"
            );
            for i in &r.items {
                let st = i.status.as_str();
                let _ = write!(
                    out,
                    "<tr class=\"{st}\"><td>{}</td><td>{}</td><td>{st}</td><td>",
                    h(&i.id),
                    h(&i.title)
                );
                if let Some(n) = &i.note {
                    let _ = write!(out, "<p>{}</p>", h(n));
                }
                if !i.evidence.is_empty() {
                    out.push_str("<ul>");
                    for e in &i.evidence {
                        let _ = write!(
                            out,
                            "<li><b>{}</b> ({}): {}",
                            h(&e.check),
                            e.status.as_str(),
                            h(&e.summary)
                        );
                        if !e.audit.is_empty() {
                            out.push_str(" — audit");
                            for a in &e.audit {
                                let _ = write!(out, " <a href=\"{}\">#{}</a>", h(&a.href), a.seq);
                            }
                        }
                        out.push_str("</li>");
                    }
                    out.push_str("</ul>");
                }
                out.push_str("</td></tr>\n");
            }
            out.push_str("</table></body></html>\n");
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "evidence_tests.rs"]
mod tests;
