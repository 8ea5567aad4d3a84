//! Shared set-ups for writ's benchmarks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use writ_core::api::{Agent, Attestation, Tool};
use writ_core::{Capability, Timestamp};
use writ_policy::{Behaviour, Facts, InstanceFacts, PolicySet, PolicySource, TaskAsk, Verdict};

/// `n` policies the way a large deployment has them: each names its own
/// tool and checks scopes and an agent attribute; plus the example pack's
/// general rules (no deletes, quarantine, business hours).
pub fn policy_set(n: usize) -> Result<PolicySet, writ_policy::PolicyError> {
    PolicySet::compile(vec![
        PolicySource {
            name: "tools.cedar".into(),
            text: (0..n).map(tool_policy).collect(),
        },
        PolicySource {
            name: "general.cedar".into(),
            text: GENERAL.into(),
        },
    ])
}

/// The general rules of [`policy_set`]: the example pack's.
pub const GENERAL: &str = include_str!("../../examples/policies/tasks.cedar");

/// The policy of [`policy_set`] that names `tool-{i}`.
pub fn tool_policy(i: usize) -> String {
    format!(
        r#"@id("tool-{i}")
permit (principal, action == Action::"StartTask", resource == Tool::"tool-{i}")
when {{ ["read", "list"].containsAll(context.scopes) && principal has owner && principal.owner == "team-{}" }};
"#,
        i % 10
    )
}

/// The policy text of [`policy_set`], for peers that evaluate it their way.
pub fn policy_text(n: usize) -> String {
    let mut text: String = (0..n).map(tool_policy).collect();
    text.push_str(GENERAL);
    text
}

/// Decides one StartTask for `tool-{tool}` as an agent of `team-{tool % 10}`,
/// the facts built as the broker builds them.
pub fn decide_once(set: &PolicySet, tool: usize) -> bool {
    let Ok(name) = "bench-agent".parse() else {
        return false;
    };
    let agent = Agent {
        name,
        spiffe_id: "spiffe://writ.local/agent/bench-agent".into(),
        attestation: Attestation::JoinToken,
        attributes: [("owner".to_owned(), format!("team-{}", tool % 10))].into(),
        workload: None,
        quarantined: false,
        created_at: Timestamp::from_secs(0),
    };
    let tool_name = format!("tool-{tool}");
    let (Ok(cap), Ok(tname)) = (
        Capability::parse_short(&format!("{tool_name}:read")),
        tool_name.parse(),
    ) else {
        return false;
    };
    let caps = [cap];
    let tool = Tool {
        name: tname,
        audience: "https://tool.example".into(),
        scopes: ["read", "list", "write"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        attributes: BTreeMap::new(),
        upstream: None,
        secret_header: None,
        gateway: None,
        created_at: Timestamp::from_secs(0),
    };
    let ask = TaskAsk {
        intent: "benchmark",
        capabilities: &caps,
        on_behalf_of: None,
        ttl: 600,
        exception: false,
    };
    let facts = Facts::start_task(
        &agent,
        InstanceFacts {
            id: "ins_benchmark00000000000000",
            attestation: "join_token",
        },
        &ask,
        vec![&tool],
        Behaviour::default(),
        Timestamp::from_secs(1_795_780_800),
    );
    set.decide(&facts).verdict() == Verdict::Allow
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
