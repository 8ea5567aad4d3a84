//! Shared set-ups for writ's benchmarks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use writ_core::{Capability, Timestamp};
use writ_policy::{Action, AgentFacts, PolicySet, PolicySource, TaskFacts, ToolFacts};

/// `n` policies the way a large deployment has them: each names its own
/// tool and checks scopes and an agent attribute; plus the example pack's
/// general rules (no deletes, quarantine, business hours).
pub fn policy_set(n: usize) -> Result<PolicySet, writ_policy::PolicyError> {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            r#"@id("tool-{i}")
permit (principal, action == Action::"StartTask", resource == Tool::"tool-{i}")
when {{ ["read", "list"].containsAll(context.scopes) && principal has owner && principal.owner == "team-{}" }};
"#,
            i % 10
        ));
    }
    let general = include_str!("../../examples/policies/tasks.cedar");
    PolicySet::compile(vec![
        PolicySource {
            name: "tools.cedar".into(),
            text,
        },
        PolicySource {
            name: "general.cedar".into(),
            text: general.into(),
        },
    ])
}

/// The policy text of [`policy_set`], for peers that evaluate it their way.
pub fn policy_text(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            r#"@id("tool-{i}")
permit (principal, action == Action::"StartTask", resource == Tool::"tool-{i}")
when {{ ["read", "list"].containsAll(context.scopes) && principal has owner && principal.owner == "team-{}" }};
"#,
            i % 10
        ));
    }
    text.push_str(include_str!("../../examples/policies/tasks.cedar"));
    text
}

/// Decides one StartTask for `tool-{tool}` as an agent of `team-{tool % 10}`.
pub fn decide_once(set: &PolicySet, tool: usize) -> bool {
    let attrs: BTreeMap<String, String> =
        [("owner".to_owned(), format!("team-{}", tool % 10))].into();
    let tool_name = format!("tool-{tool}");
    let caps = match Capability::parse_short(&format!("{tool_name}:read")) {
        Ok(c) => [c],
        Err(_) => return false,
    };
    let facts = TaskFacts {
        action: Action::StartTask,
        agent: AgentFacts {
            name: "bench-agent",
            spiffe_id: "spiffe://writ.local/agent/bench-agent",
            attestation: "join_token",
            quarantined: false,
            attributes: &attrs,
        },
        chain: Vec::new(),
        intent: "benchmark",
        capabilities: &caps,
        on_behalf_of: None,
        ttl_secs: 600,
        attestation: "join_token",
        depth: 0,
        recent_denials: 0,
        exception: false,
        now: Timestamp::from_secs(1_795_780_800),
        request: None,
        instance: None,
        task: None,
    };
    let none = BTreeMap::new();
    let tools = [ToolFacts {
        name: &tool_name,
        audience: "https://tool.example",
        scopes: vec!["read", "list", "write"],
        attributes: &none,
    }];
    set.decide(&facts, &tools).allowed
}

/// Latency percentiles of `iterations` calls of `f`.
pub fn percentiles(iterations: usize, mut f: impl FnMut(usize)) -> (Duration, Duration, Duration) {
    let mut samples: Vec<Duration> = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        f(i);
        samples.push(t.elapsed());
    }
    samples.sort();
    let at = |q: f64| {
        let idx = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(idx).copied().unwrap_or_default()
    };
    (at(0.5), at(0.99), at(0.999))
}
