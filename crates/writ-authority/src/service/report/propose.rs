//! The narrower policy set: one permit per agent, tool and action for
//! exactly the legitimate traffic observed (allowed and completed, from
//! agents not quarantined in the window), every grant limited to the
//! scopes that were used; the live set's forbids kept. And `writ policy
//! test` cases generated from that traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Value, json};
use writ_core::api::{Agent, Tool};
use writ_policy::Action;

use super::observe::{CallShape, Decided, Recorded};

/// The file the generated permits are written to.
pub const PERMITS_FILE: &str = "least-privilege.cedar";
/// The live set's forbids, kept.
pub const FORBIDS_FILE: &str = "live-forbids.cedar";
/// The generated `writ policy test` cases.
pub const TESTS_FILE: &str = "least-privilege.tests.json";

/// What legitimate traffic one agent had on one tool.
#[derive(Debug, Default)]
pub(crate) struct Legit {
    pub started: bool,
    /// Started by exception (beyond the maximum lifetime, approved): the
    /// longest lifetime asked for, seconds.
    pub exception: Option<i64>,
    pub exchanged: bool,
    /// Deepest delegation that handed this agent the tool.
    pub delegated: Option<u32>,
    pub calls: BTreeMap<CallShape, (bool, i64)>,
    /// Scopes of tokens that made a completed call.
    pub call_scopes: BTreeSet<String>,
    pub exchange_scopes: BTreeSet<String>,
}

impl Legit {
    /// The scopes a grant is limited to.
    pub fn used(&self) -> BTreeSet<String> {
        if self.calls.is_empty() {
            self.exchange_scopes.clone()
        } else {
            self.call_scopes.clone()
        }
    }
}

/// The legitimate traffic in `decided`, by (agent, tool).
pub(crate) fn legitimate(
    decided: &[Decided],
    quarantined: &BTreeSet<String>,
) -> BTreeMap<(String, String), Legit> {
    let mut out: BTreeMap<(String, String), Legit> = BTreeMap::new();
    let fine = |a: &str| !quarantined.contains(a);
    for d in decided.iter().filter(|d| d.completed) {
        match &d.what {
            Recorded::Start {
                agent,
                capabilities,
                exception,
                ttl,
                ..
            } if fine(agent) => {
                for c in capabilities {
                    let l = out.entry((agent.clone(), c.tool.to_string())).or_default();
                    if *exception {
                        l.exception = Some(l.exception.unwrap_or(0).max(*ttl));
                    } else {
                        l.started = true;
                    }
                }
            }
            Recorded::Exchange {
                agent,
                tool,
                scopes,
                ..
            } if fine(agent) => {
                let l = out.entry((agent.clone(), tool.clone())).or_default();
                l.exchanged = true;
                l.exchange_scopes.extend(scopes.iter().cloned());
            }
            Recorded::Delegate {
                planner,
                actor,
                capabilities,
                depth,
                ..
            } if fine(actor) && fine(planner) => {
                for c in capabilities {
                    let l = out.entry((actor.clone(), c.tool.to_string())).or_default();
                    l.delegated = Some(l.delegated.unwrap_or(0).max(*depth));
                }
            }
            Recorded::Call {
                agent,
                tool,
                scopes,
                call,
                approved,
                ..
            } if fine(agent) => {
                let l = out.entry((agent.clone(), tool.clone())).or_default();
                l.call_scopes.extend(scopes.iter().cloned());
                let e = l.calls.entry(call.clone()).or_insert((true, d.ts.secs()));
                // Approval stays required only if every pass was approved.
                e.0 &= *approved;
            }
            // An AuthZEN decision an enforcement point enforced is use.
            Recorded::Evaluated {
                action,
                seen,
                approved,
            } if fine(&seen.agent) => {
                let l = out
                    .entry((seen.agent.clone(), seen.tool.clone()))
                    .or_default();
                match (action, &seen.request) {
                    (Action::CallTool, Some(r)) => {
                        l.call_scopes.extend(seen.scopes.iter().cloned());
                        let e = l
                            .calls
                            .entry(CallShape::of(r))
                            .or_insert((true, d.ts.secs()));
                        e.0 &= *approved;
                    }
                    (Action::ExchangeToken, _) => {
                        l.exchanged = true;
                        l.exchange_scopes.extend(seen.scopes.iter().cloned());
                    }
                    (Action::StartTask, _) => l.started = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// A Cedar string literal.
pub(crate) fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn set_lit(scopes: &BTreeSet<String>) -> String {
    let items: Vec<String> = scopes.iter().map(|s| lit(s)).collect();
    format!("[{}]", items.join(", "))
}

fn call_condition(c: &CallShape) -> String {
    let mut parts = vec![
        format!("context.request.method == {}", lit(&c.method)),
        format!("context.request.path == {}", lit(&c.path)),
    ];
    match &c.mcp_method {
        Some(m) => parts.push(format!(
            "context.request has mcp_method && context.request.mcp_method == {}",
            lit(m)
        )),
        None => parts.push("!(context.request has mcp_method)".into()),
    }
    for (attr, v) in [
        ("mcp_tool", &c.mcp_tool),
        ("mcp_resource", &c.mcp_resource),
        ("mcp_prompt", &c.mcp_prompt),
    ] {
        if let Some(v) = v {
            parts.push(format!(
                "context.request has {attr} && context.request.{attr} == {}",
                lit(v)
            ));
        }
    }
    format!("({})", parts.join(" && "))
}

#[allow(clippy::too_many_arguments, reason = "the parts of one permit")]
fn permit(
    out: &mut String,
    id: &str,
    note: &str,
    annotations: &[&str],
    agent: &str,
    action: &str,
    tool: &str,
    when: &str,
) {
    let _ = writeln!(out, "// {note}");
    let _ = writeln!(out, "@id({})", lit(id));
    for a in annotations {
        let _ = writeln!(out, "{a}");
    }
    let _ = writeln!(
        out,
        "permit (\n  principal == Agent::{},\n  action == Action::{},\n  resource == Tool::{}\n)\nwhen {{\n  {when}\n}};\n",
        lit(agent),
        lit(action),
        lit(tool)
    );
}

/// The generated permits, as one Cedar file, and their ids.
pub(crate) fn permits(legit: &BTreeMap<(String, String), Legit>) -> (String, Vec<String>) {
    let mut out = String::from(
        "// Generated by `writ report least-privilege`: exactly the traffic observed,\n\
         // each grant limited to the scopes that were used.\n\n",
    );
    let mut ids = Vec::new();
    for ((agent, tool), l) in legit {
        let used = l.used();
        if used.is_empty() {
            continue;
        }
        let scopes = format!("{}.containsAll(context.scopes)", set_lit(&used));
        let mut add =
            |out: &mut String, suffix: &str, note: &str, ann: &[&str], action: &str, when: &str| {
                let id = format!("lp:{agent}:{tool}:{suffix}");
                permit(out, &id, note, ann, agent, action, tool, when);
                ids.push(id);
            };
        if l.started {
            add(
                &mut out,
                "start",
                &format!("{agent} started tasks on {tool}"),
                &[],
                "StartTask",
                &scopes,
            );
        }
        if let Some(ttl) = l.exception {
            // Traffic ran under an exception: the proposal keeps allowing
            // it, still only with approval (writ holds every exception).
            add(
                &mut out,
                "start-exception",
                &format!(
                    "{agent} started tasks on {tool} beyond the maximum lifetime by exception \
                     (up to {ttl}s), each approved"
                ),
                &["@exception(\"allowed\")"],
                "StartTask",
                &format!("context.exception && {scopes}"),
            );
        }
        if l.exchanged {
            add(
                &mut out,
                "exchange",
                &format!("{agent} exchanged its task token for {tool}"),
                &[],
                "ExchangeToken",
                &scopes,
            );
        }
        if let Some(depth) = l.delegated {
            add(
                &mut out,
                "delegate",
                &format!("{agent} was handed {tool} by delegation, at depth {depth} at most"),
                &[],
                "DelegateTask",
                &format!("context.depth <= {depth} && {scopes}"),
            );
        }
        for approved in [false, true] {
            let shapes: Vec<String> = l
                .calls
                .iter()
                .filter(|(_, (a, _))| *a == approved)
                .map(|(c, _)| call_condition(c))
                .collect();
            if shapes.is_empty() {
                continue;
            }
            let when = format!("{scopes} &&\n  ({})", shapes.join(" ||\n   "));
            let (suffix, ann, note): (&str, &[&str], String) = if approved {
                (
                    "call-approved",
                    &["@approval(\"required\")"],
                    format!("{agent}'s calls to {tool} that a person approved"),
                )
            } else {
                ("call", &[], format!("{agent}'s calls to {tool}"))
            };
            add(&mut out, suffix, &note, ann, "CallTool", &when);
        }
    }
    (out, ids)
}

/// The live forbids as one Cedar file (each with its id), if any.
pub(crate) fn forbids(live: &[(String, String)]) -> Option<String> {
    if live.is_empty() {
        return None;
    }
    let mut out = String::from("// The live set's forbids, kept as they are.\n\n");
    for (id, text) in live {
        if !text.contains("@id(") {
            let _ = writeln!(out, "@id({})", lit(id));
        }
        let _ = writeln!(out, "{}\n", text.trim());
    }
    Some(out)
}

fn agent_spec(a: Option<&Agent>, name: &str) -> Value {
    match a {
        Some(a) => json!({
            "name": name,
            "attestation": a.attestation.kind(),
            "attributes": a.attributes,
        }),
        None => json!({ "name": name }),
    }
}

fn tool_spec(t: Option<&Tool>, name: &str) -> Value {
    match t {
        Some(t) => json!({
            "name": name,
            "audience": t.audience,
            "scopes": t.scopes,
            "attributes": t.attributes,
        }),
        None => json!({ "name": name }),
    }
}

/// `writ policy test` cases: every legitimate call and grant must be
/// allowed (or held, where a person approved it), and every scope granted
/// but never used, and a request never seen, must be denied.
pub(crate) fn cases(
    legit: &BTreeMap<(String, String), Legit>,
    granted: &BTreeMap<(String, String), BTreeSet<String>>,
    agents: &BTreeMap<String, Agent>,
    tools: &BTreeMap<String, Tool>,
) -> Value {
    let mut cases = Vec::new();
    for ((agent, tool), l) in legit {
        let used = l.used();
        if used.is_empty() {
            continue;
        }
        let a = agent_spec(agents.get(agent), agent);
        let t = tool_spec(tools.get(tool), tool);
        if l.started {
            cases.push(json!({
                "name": format!("{agent} starts a task on {tool} with the scopes it used"),
                "action": "StartTask", "agent": a, "tool": t, "scopes": used, "expect": "allow",
            }));
        }
        if let Some(ttl) = l.exception {
            cases.push(json!({
                "name": format!("{agent} starts a task on {tool} by exception, held for approval"),
                "action": "StartTask", "agent": a, "tool": t, "scopes": used,
                "ttl": ttl, "exception": true, "expect": "needs_approval",
            }));
            if !l.started {
                cases.push(json!({
                    "name": format!("{agent} starts a task on {tool} without the exception it always had"),
                    "action": "StartTask", "agent": a, "tool": t, "scopes": used, "expect": "deny",
                }));
            }
        }
        for (c, (approved, at)) in &l.calls {
            cases.push(json!({
                "name": format!("{agent} calls {tool}: {} {}{}", c.method, c.path,
                    c.mcp_tool.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()),
                "action": "CallTool", "agent": a, "tool": t, "scopes": used, "now": at,
                "request": {"method": c.method, "path": c.path, "mcp_method": c.mcp_method, "mcp_tool": c.mcp_tool,
                    "mcp_resource": c.mcp_resource, "mcp_prompt": c.mcp_prompt},
                "expect": if *approved { "needs_approval" } else { "allow" },
            }));
        }
        if let Some((_, at)) = l.calls.values().next() {
            cases.push(json!({
                "name": format!("{agent} calls {tool} in a way never seen"),
                "action": "CallTool", "agent": a, "tool": t, "scopes": used, "now": at,
                "request": {"method": "DELETE", "path": "/writ-least-privilege/never-seen"},
                "expect": "deny",
            }));
        }
    }
    for ((agent, tool), g) in granted {
        let used = legit
            .get(&(agent.clone(), tool.clone()))
            .map(Legit::used)
            .unwrap_or_default();
        for scope in g.difference(&used) {
            cases.push(json!({
                "name": format!("{agent} asks for {tool}:{scope}, granted and never used"),
                "action": "StartTask",
                "agent": agent_spec(agents.get(agent), agent),
                "tool": tool_spec(tools.get(tool), tool),
                "scopes": [scope],
                "expect": "deny",
            }));
        }
    }
    json!({ "policy_dir": ".", "cases": cases })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(lit("a\"b\\c\n"), "\"a\\\"b\\\\c\\u{a}\"");
    }
}
