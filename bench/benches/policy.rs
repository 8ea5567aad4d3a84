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

    // The bound: Cedar's own evaluation of the slice writ evaluates (the
    // tool's policy and the general ones that can apply to StartTask), the
    // request and entities built ahead, outside the timing. A slice is the
    // same whatever the size of the set, so ten tools' slices stand for
    // any: no decision in writ can cost less than this part of it.
    println!();
    println!(
        "| bound: cedar-policy's authorizer alone on writ's slice, inputs built ahead (20,000 decisions, 10 tools) | policies in the slice | p50 | p99 | p99.9 |"
    );
    println!("|---|---:|---:|---:|---:|");
    let cases: Vec<_> = (0..10).map(slice_case).collect();
    assert!(
        cases.iter().all(|(r, p, e)| authorize(r, p, e)),
        "the bound's requests must be allowed, as writ's are"
    );
    let bound = |i: usize| {
        if let Some((r, p, e)) = cases.get(i % cases.len()) {
            black_box(authorize(r, p, e));
        }
    };
    (0..2000).for_each(bound);
    let (p50, p99, p999) = percentiles(20_000, bound);
    let size = cases.first().map_or(0, |(_, p, _)| p.policies().count());
    println!("| any | {size} | {p50:.1?} | {p99:.1?} | {p999:.1?} |");

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

fn authorize(
    request: &cedar_policy::Request,
    policies: &cedar_policy::PolicySet,
    entities: &cedar_policy::Entities,
) -> bool {
    cedar_policy::Authorizer::new()
        .is_authorized(request, policies, entities)
        .decision()
        == cedar_policy::Decision::Allow
}

/// Tool `tool`'s slice of [`writ_bench::policy_set`] for StartTask (its
/// own policy and the general ones whose scope can match StartTask), and
/// a request and entities as writ's, built once.
fn slice_case(
    tool: usize,
) -> (
    cedar_policy::Request,
    cedar_policy::PolicySet,
    cedar_policy::Entities,
) {
    use serde_json::json;
    let action: cedar_policy::EntityUid = r#"Action::"StartTask""#.parse().unwrap();
    let own: cedar_policy::PolicySet = writ_bench::tool_policy(tool).parse().unwrap();
    let general: cedar_policy::PolicySet = writ_bench::GENERAL.parse().unwrap();
    let mut slice = cedar_policy::PolicySet::new();
    // Named by their @id, as writ names them (the parser numbers each text's from policy0).
    let named = |p: &cedar_policy::Policy| {
        p.new_id(cedar_policy::PolicyId::new(p.annotation("id").unwrap()))
    };
    for p in own.policies() {
        slice.add(named(p)).unwrap();
    }
    for p in general.policies() {
        let applies = match p.action_constraint() {
            cedar_policy::ActionConstraint::Any => true,
            cedar_policy::ActionConstraint::Eq(a) => a == action,
            cedar_policy::ActionConstraint::In(v) => v.contains(&action),
        };
        if applies {
            slice.add(named(p)).unwrap();
        }
    }
    // As writ builds them: the agent's and the tool's entities alone (no
    // action entities from the schema), the context attributes the slice
    // reads (scopes, time, behaviour; on_behalf_of is absent).
    let entities = cedar_policy::Entities::from_json_value(parties(tool), None).unwrap();
    let context = cedar_policy::Context::from_json_value(
        json!({
            "scopes": ["read"],
            "time": {"unix": 1_795_780_800i64, "hour": 12, "weekday": 2},
            "behaviour": {"denials_5m": 0, "requires_approval": false},
        }),
        None,
    )
    .unwrap();
    let request = start_task(tool, context, None);
    (request, slice, entities)
}

fn peer_decide(set: &cedar_policy::PolicySet, schema: &cedar_policy::Schema, tool: usize) -> bool {
    let (request, entities) = peer_inputs(schema, tool);
    authorize(&request, set, &entities)
}

/// The request and entities of one StartTask for `tool-{tool}`, parsed
/// from JSON against the schema.
fn peer_inputs(
    schema: &cedar_policy::Schema,
    tool: usize,
) -> (cedar_policy::Request, cedar_policy::Entities) {
    use serde_json::json;
    let action: cedar_policy::EntityUid = r#"Action::"StartTask""#.parse().unwrap();
    let entities = cedar_policy::Entities::from_json_value(parties(tool), Some(schema)).unwrap();
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
    let request = start_task(tool, context, Some(schema));
    (request, entities)
}

/// The agent's and the tool's entities of one StartTask for `tool-{tool}`.
fn parties(tool: usize) -> serde_json::Value {
    serde_json::json!([
        {"uid": {"type": "Agent", "id": "bench-agent"}, "parents": [], "tags": {},
         "attrs": {"spiffe_id": "spiffe://writ.local/agent/bench-agent", "attestation": "join_token",
                   "quarantined": false, "owner": format!("team-{}", tool % 10)}},
        {"uid": {"type": "Tool", "id": format!("tool-{tool}")}, "parents": [], "tags": {},
         "attrs": {"audience": "https://tool.example", "scopes": ["read", "list", "write"]}},
    ])
}

/// A StartTask of the bench agent for `tool-{tool}`, validated against
/// `schema` when one is given.
fn start_task(
    tool: usize,
    context: cedar_policy::Context,
    schema: Option<&cedar_policy::Schema>,
) -> cedar_policy::Request {
    cedar_policy::Request::new(
        r#"Agent::"bench-agent""#.parse().unwrap(),
        r#"Action::"StartTask""#.parse().unwrap(),
        format!(r#"Tool::"tool-{tool}""#).parse().unwrap(),
        context,
        schema,
    )
    .unwrap()
}
