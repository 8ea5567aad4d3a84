//! The report as a document: a terminal table, Markdown or HTML (JSON is
//! the report itself, serialised).

use std::fmt::Write as _;

use super::LeastPrivilegeReport;
use crate::error::Error;

/// How a report is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Table,
    Markdown,
    Html,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "json" => Format::Json,
            "table" => Format::Table,
            "markdown" | "md" => Format::Markdown,
            "html" => Format::Html,
            other => {
                return Err(Error::Invalid(format!(
                    "format must be one of table, json, markdown, html, not {other:?}"
                )));
            }
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Table => "text/plain; charset=utf-8",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

fn join(s: &std::collections::BTreeSet<String>) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.iter().cloned().collect::<Vec<_>>().join(" ")
    }
}

/// The rows every text form shows: agent, tool, granted, used, unused,
/// calls, depth.
fn rows(r: &LeastPrivilegeReport) -> Vec<[String; 7]> {
    let mut out = Vec::new();
    for a in &r.agents {
        for t in &a.tools {
            let calls: u64 = t.calls.iter().map(|c| c.allowed).sum();
            let denied: u64 = t.calls.iter().map(|c| c.denied).sum();
            out.push([
                if a.quarantined {
                    format!("{} (quarantined)", a.agent)
                } else {
                    a.agent.clone()
                },
                t.tool.clone(),
                join(&t.granted),
                join(&t.used),
                join(&t.unused),
                format!("{calls} allowed, {denied} denied"),
                format!("{}/{}", t.delegation_depth_used, a.delegation_depth_allowed),
            ]);
        }
    }
    out
}

const HEAD: [&str; 7] = [
    "agent", "tool", "granted", "used", "unused", "calls", "depth",
];

fn headline(r: &LeastPrivilegeReport) -> Vec<String> {
    let s = &r.summary;
    vec![
        format!(
            "window: {} .. {} (records {}..{}, {} read{})",
            r.since,
            r.generated_at,
            r.first_seq,
            r.last_seq,
            r.records,
            if r.truncated { ", truncated" } else { "" }
        ),
        format!(
            "unused scopes: {}, unused tool tokens: {}, over-broad policies: {}",
            s.unused_scopes, s.unused_tool_tokens, s.overbroad_policies
        ),
        format!(
            "proposal: {} ({} permits, {} forbids kept), replay: {} replayed, {} not replayed, {} allow->deny ({} legitimate), {} deny->allow",
            if r.proposal.valid {
                r.proposal.version.clone().unwrap_or_default()
            } else {
                format!("INVALID: {}", r.proposal.error.clone().unwrap_or_default())
            },
            r.proposal.permits.len(),
            r.proposal.forbids_kept,
            r.replay.replayed,
            r.replay.not_replayed,
            r.replay.allow_to_deny,
            r.replay.legitimate_allow_to_deny,
            r.replay.deny_to_allow
        ),
        format!(
            "replay fidelity: the live set, replayed, agrees with {} of the {} decisions it made",
            r.replay.live_agreed, r.replay.live_checked
        ),
    ]
}

fn changed_lines(r: &LeastPrivilegeReport) -> Vec<String> {
    r.replay
        .changed
        .iter()
        .map(|c| {
            format!(
                "#{} {} {} {} {}: {} -> {}",
                c.seq,
                c.action,
                c.agent,
                c.tools.join(","),
                c.what,
                c.recorded,
                c.proposed
            )
        })
        .collect()
}

fn exception_lines(r: &LeastPrivilegeReport) -> Vec<String> {
    r.agents
        .iter()
        .flat_map(|a| {
            a.exceptions.iter().map(move |e| {
                format!(
                    "{} ran task {} on {} by exception ({}s, {}): {} calls",
                    a.agent,
                    e.task,
                    e.tools.join(", "),
                    e.ttl,
                    if e.approved {
                        "approved"
                    } else {
                        "not approved"
                    },
                    e.calls
                )
            })
        })
        .collect()
}

pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The report in `format`.
pub fn render(r: &LeastPrivilegeReport, format: Format) -> Result<String, Error> {
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
        }
        Format::Table => {
            let rows = rows(r);
            let mut width = HEAD.map(str::len);
            for row in &rows {
                for (w, c) in width.iter_mut().zip(row.iter()) {
                    *w = (*w).max(c.chars().count());
                }
            }
            for l in headline(r) {
                let _ = writeln!(out, "{l}");
            }
            let _ = writeln!(out);
            let line = |cells: Vec<&str>| {
                cells
                    .iter()
                    .zip(width.iter())
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            let _ = writeln!(out, "{}", line(HEAD.to_vec()));
            for row in &rows {
                let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
            }
            for o in &r.overbroad_policies {
                let _ = writeln!(
                    out,
                    "over-broad: {} granted unused scopes to {}",
                    o.policy,
                    o.unused.join(", ")
                );
            }
            for e in exception_lines(r) {
                let _ = writeln!(out, "exception: {e}");
            }
            for c in changed_lines(r) {
                let _ = writeln!(out, "would change: {c}");
            }
        }
        Format::Markdown => {
            let _ = writeln!(out, "# Least-privilege report\n");
            for l in headline(r) {
                let _ = writeln!(out, "- {}", md_cell(&l));
            }
            let _ = writeln!(out, "\n| {} |", HEAD.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(HEAD.len()));
            for row in rows(r) {
                let cells: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            if !r.overbroad_policies.is_empty() {
                let _ = writeln!(out, "\n## Over-broad policies\n");
                for o in &r.overbroad_policies {
                    let _ = writeln!(
                        out,
                        "- `{}`: unused scopes for {}",
                        md_cell(&o.policy),
                        md_cell(&o.unused.join(", "))
                    );
                }
            }
            for e in exception_lines(r) {
                let _ = writeln!(out, "- exception: {}", md_cell(&e));
            }
            let _ = writeln!(out, "\n## Replay: decisions the proposal changes\n");
            for c in changed_lines(r) {
                let _ = writeln!(out, "- {}", md_cell(&c));
            }
            for (name, text) in &r.proposal.files {
                let _ = writeln!(
                    out,
                    "\n## Proposed `{}`\n\n```cedar\n{text}```",
                    md_cell(name)
                );
            }
        }
        Format::Html => {
            let _ = writeln!(
                out,
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Least-privilege report</title></head><body>\n<h1>Least-privilege report</h1>\n<ul>"
            );
            for l in headline(r) {
                let _ = writeln!(out, "<li>{}</li>", html_escape(&l));
            }
            let _ = writeln!(out, "</ul>\n<table>\n<tr>");
            for h in HEAD {
                let _ = write!(out, "<th>{h}</th>");
            }
            let _ = writeln!(out, "</tr>");
            for row in rows(r) {
                let _ = write!(out, "<tr>");
                for c in &row {
                    let _ = write!(out, "<td>{}</td>", html_escape(c));
                }
                let _ = writeln!(out, "</tr>");
            }
            let _ = writeln!(out, "</table>\n<h2>Over-broad policies</h2>\n<ul>");
            for o in &r.overbroad_policies {
                let _ = writeln!(
                    out,
                    "<li><code>{}</code>: {}</li>",
                    html_escape(&o.policy),
                    html_escape(&o.unused.join(", "))
                );
            }
            for e in exception_lines(r) {
                let _ = writeln!(out, "<li>exception: {}</li>", html_escape(&e));
            }
            let _ = writeln!(out, "</ul>\n<h2>Replay</h2>\n<ul>");
            for c in changed_lines(r) {
                let _ = writeln!(out, "<li>{}</li>", html_escape(&c));
            }
            let _ = writeln!(out, "</ul>");
            for (name, text) in &r.proposal.files {
                let _ = writeln!(
                    out,
                    "<h2>Proposed <code>{}</code></h2>\n<pre>{}</pre>",
                    html_escape(name),
                    html_escape(text)
                );
            }
            let _ = writeln!(out, "</body></html>");
        }
    }
    Ok(out)
}
