//! In-process policy decisions at 10, 100 and 1,000 policies.
//!
//! `cargo bench -p writ-bench --bench policy` prints p50/p99/p99.9 from a
//! plain timing loop, then criterion's estimates.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

/// The allocator of the writ binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::Criterion;
use writ_bench::{decide_once, percentiles, policy_set};

fn main() {
    println!("| policies (20,000 decisions each) | p50 | p99 | p99.9 |");
    println!("|---:|---:|---:|---:|");
    let sets: Vec<(usize, writ_policy::PolicySet)> = [10, 100, 1000]
        .into_iter()
        .map(|n| (n, policy_set(n).unwrap()))
        .collect();
    for (n, set) in &sets {
        assert!(decide_once(set, 7), "the benchmark request must be allowed");
        for i in 0..2000 {
            black_box(decide_once(set, i % n));
        }
        let (p50, p99, p999) = percentiles(20_000, |i| {
            black_box(decide_once(set, i % n));
        });
        println!("| {n} | {p50:.1?} | {p99:.1?} | {p999:.1?} |");
    }

    // The peer: cedar-policy used directly, the way an integration without
    // writ's slicing would: the whole set, entities and context from JSON.
    println!();
    // A quarter of the samples: at 1,000 policies each decision takes a
    // millisecond, and 5,000 still place the p99.9 on five of them.
    println!(
        "| peer: cedar-policy, whole set, JSON inputs (5,000 decisions each) | p50 | p99 | p99.9 |"
    );
    println!("|---:|---:|---:|---:|");
    let schema = cedar_policy::Schema::from_cedarschema_str(writ_policy::SCHEMA_SRC)
        .unwrap()
        .0;
    for n in [10usize, 100, 1000] {
        let set: cedar_policy::PolicySet = writ_bench::policy_text(n).parse().unwrap();
        let (p50, p99, p999) = percentiles(5_000, |i| {
            black_box(peer_decide(&set, &schema, i % n));
        });
        println!("| {n} | {p50:.1?} | {p99:.1?} | {p999:.1?} |");
    }

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("policy_decision");
    for (n, set) in &sets {
        group.bench_function(format!("{n}_policies"), |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(decide_once(set, i % n))
            })
        });
    }
    group.finish();
    c.final_summary();
}

fn peer_decide(set: &cedar_policy::PolicySet, schema: &cedar_policy::Schema, tool: usize) -> bool {
    use serde_json::json;
    let action: cedar_policy::EntityUid = r#"Action::"StartTask""#.parse().unwrap();
    let entities = cedar_policy::Entities::from_json_value(
        json!([
            {"uid": {"type": "Agent", "id": "bench-agent"}, "parents": [], "tags": {},
             "attrs": {"spiffe_id": "spiffe://writ.local/agent/bench-agent", "attestation": "join_token",
                       "quarantined": false, "owner": format!("team-{}", tool % 10)}},
            {"uid": {"type": "Tool", "id": format!("tool-{tool}")}, "parents": [], "tags": {},
             "attrs": {"audience": "https://tool.example", "scopes": ["read", "list", "write"]}},
        ]),
        Some(schema),
    )
    .unwrap();
    let context = cedar_policy::Context::from_json_value(
        json!({
            "intent": "benchmark", "scopes": ["read"],
            "capabilities": [{"tool": format!("tool-{tool}"), "scopes": ["read"]}],
            "ttl": 600, "attestation": "join_token",
            "time": {"unix": 1_795_780_800i64, "hour": 12, "weekday": 2},
            "depth": 0, "chain": [{"__entity": {"type": "Agent", "id": "bench-agent"}}],
            "root_agent": {"__entity": {"type": "Agent", "id": "bench-agent"}},
            "behaviour": {"denials_5m": 0, "requires_approval": false}, "exception": false,
        }),
        Some((schema, &action)),
    )
    .unwrap();
    let request = cedar_policy::Request::new(
        r#"Agent::"bench-agent""#.parse().unwrap(),
        action,
        format!(r#"Tool::"tool-{tool}""#).parse().unwrap(),
        context,
        Some(schema),
    )
    .unwrap();
    cedar_policy::Authorizer::new()
        .is_authorized(&request, set, &entities)
        .decision()
        == cedar_policy::Decision::Allow
}
