//! Promise 6, one answer: the same request gets the same verdict, the same
//! determining policies and the same policy version at every enforcement
//! point. A property test generates agents, tools, tasks (with delegation
//! chains), request facts and behaviour counts, drives the real broker
//! operations (task start, token exchange, delegation), the gateway's own
//! decision function (from its bundle and a real tool token), and AuthZEN,
//! and compares them case by case. The generator is seeded, so every run
//! checks the same cases and a failure names its case.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use writ_core::api::{
    AttestRequest, CreateJoinToken, RegisterAgent, RegisterTool, StartTask, TokenRequest,
};
use writ_core::audit::{AuditKind, AuditRecord};
use writ_core::token::{AccessClaims, TokenKind};
use writ_core::{Capability, ManualClock, Timestamp};
use writ_policy::{CallRequest, PolicySet, PolicySource, Verdict};

use crate::service::authzen::{APPROVAL_REQUIRED, Evaluation};
use crate::service::exchange::{ACCESS_TOKEN_TYPE, GRANT_TYPE};
use crate::service::tasks::Started;
use crate::service::{AgentCaller, Broker};
use crate::{BrokerConfig, DataDir};

/// A Tuesday, noon UTC.
const T0: Timestamp = Timestamp::from_secs(1_795_780_800);

/// Policies beside the shipped example pack, written to read every fact
/// that differed between enforcement points before: the task's parent,
/// start and remaining lifetime, the instance, the chain, the behaviour
/// count, the request, and approval at every action.
const TEST_POLICIES: &str = r#"
// The shared refusal count, decided on at every enforcement point (the
// example pack leaves stopping to its detection rules now).
@id("stop-after-many-denials")
forbid (principal, action, resource)
when { context.behaviour.denials_5m >= 10 };

@id("setup-tasks")
permit (principal, action == Action::"StartTask", resource)
when { context.intent == "setup" };

@id("held-starts") @approval("required")
permit (principal, action == Action::"StartTask", resource)
when { context.intent == "needs a person" };

@id("setup-delegations")
permit (principal, action == Action::"DelegateTask", resource)
when { context.intent == "setup" };

@id("held-late-delegations") @approval("required")
permit (principal, action == Action::"DelegateTask", resource)
when { context has task && context.task has started_at && context.task.started_at < context.time.unix - 50 };

@id("held-short-exchanges") @approval("required") @approval_window("60")
permit (principal, action == Action::"ExchangeToken", resource)
when { context.ttl < 200 };

@id("held-puts") @approval("required")
permit (principal, action == Action::"CallTool", resource)
when { context.request.method == "PUT" && context.scopes.contains("write") };

@id("calls-from-old-tasks")
forbid (principal, action == Action::"CallTool", resource)
when { context has task && context.task has started_at && context.time.unix - context.task.started_at > 90 };

@id("no-calls-from-grandchildren")
forbid (principal, action == Action::"CallTool", resource)
when { context has task && context.task has parent && context.task.depth > 1 };

@id("calls-need-an-instance")
forbid (principal, action == Action::"CallTool", resource)
when { !(context has instance && context.instance.agent == principal) };

@id("short-lived-calls")
forbid (principal, action == Action::"CallTool", resource)
when { context.ttl < 120 };

@id("high-risk-sub-agents-call-nothing")
forbid (principal, action == Action::"CallTool", resource)
when { principal has risk_tier && principal.risk_tier == "high" && context.depth > 0 };

@id("mallory-roots")
forbid (principal, action, resource)
when { context.root_agent has owner && context.root_agent.owner == "mallory" && context.depth > 0 };

@id("calls-with-the-whole-task")
forbid (principal, action == Action::"CallTool", resource)
when { context has task && context.task.capabilities == context.capabilities && context.request.method == "DELETE" };
"#;

/// One generated case: every fact the enforcement points see.
#[derive(Debug, Clone)]
struct Case {
    planner_risk: Option<&'static str>,
    planner_owner: Option<&'static str>,
    helper_risk: Option<&'static str>,
    tool_scopes: BTreeSet<&'static str>,
    tool_data_user: bool,
    /// Held by the setup task (a subset of the tool's scopes).
    held: BTreeSet<&'static str>,
    obo: Option<&'static str>,
    day: i64,
    hour: i64,
    ttl: u64,
    /// Delegations between the root task and the leaf the checks run on.
    chain: usize,
    elapsed: u64,
    denials: u32,
    start_intent: &'static str,
    start_scopes: BTreeSet<&'static str>,
    /// Asked of the leaf (a subset of `held`).
    ask: BTreeSet<&'static str>,
    method: &'static str,
    path: &'static str,
    mcp: Option<(&'static str, &'static str)>,
}

const SCOPES: [&str; 5] = ["read", "list", "write", "comment", "delete"];

fn subset(of: Vec<&'static str>) -> impl Strategy<Value = BTreeSet<&'static str>> {
    let n = of.len();
    proptest::sample::subsequence(of, 1..=n).prop_map(|v| v.into_iter().collect())
}

fn case() -> impl Strategy<Value = Case> {
    let risk = prop_oneof![Just(None), Just(Some("low")), Just(Some("high"))];
    // Every tool has `read`; a task never holds `delete` (the example
    // pack forbids it at the start, and the later checks need a task).
    let tool = subset(SCOPES.to_vec()).prop_map(|mut s| {
        s.insert("read");
        s
    });
    tool.prop_flat_map(move |tool_scopes| {
        let list: Vec<&'static str> = tool_scopes.iter().copied().collect();
        let holdable: Vec<&'static str> = list.iter().copied().filter(|s| *s != "delete").collect();
        let held = subset(holdable);
        (
            Just(tool_scopes),
            held.prop_flat_map(|held| {
                let l: Vec<&'static str> = held.iter().copied().collect();
                (Just(held), subset(l))
            }),
            subset(list),
        )
    })
    .prop_flat_map(move |(tool_scopes, (held, ask), start_scopes)| {
        (
            (
                risk.clone(),
                prop_oneof![Just(None), Just(Some("mallory")), Just(Some("team-a"))],
                risk.clone(),
                prop::bool::weighted(0.25),
                prop_oneof![1 => Just(None), 3 => Just(Some("user:alice"))],
                0..7i64,
                prop_oneof![2 => 9..17i64, 1 => 0..24i64],
            ),
            (
                prop_oneof![1 => Just(150u64), 2 => Just(400u64), 2 => Just(900u64)],
                prop_oneof![2 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize)],
                prop_oneof![
                    Just(0u64),
                    Just(40u64),
                    Just(70u64),
                    Just(91u64),
                    Just(100u64)
                ],
                prop_oneof![
                    4 => Just(0u32),
                    1 => Just(9u32),
                    1 => Just(10u32),
                    1 => Just(12u32)
                ],
                prop_oneof![
                    Just("setup"),
                    Just("summarise tickets"),
                    Just("needs a person")
                ],
                prop_oneof![
                    1 => Just("GET"),
                    1 => Just("POST"),
                    2 => Just("PUT"),
                    1 => Just("DELETE")
                ],
                prop_oneof![Just("/tickets/1"), Just("/admin")],
                prop_oneof![
                    3 => Just(None),
                    2 => Just(Some(("tools/call", "read"))),
                    1 => Just(Some(("tools/call", "get-env"))),
                    1 => Just(Some(("resources/read", ""))),
                    1 => Just(Some(("resources/read", "ui://tickets/1"))),
                    1 => Just(Some(("resources/read", "file:///etc/passwd"))),
                    1 => Just(Some(("prompts/get", "summarise"))),
                    1 => Just(Some(("prompts/get", "exfiltrate")))
                ],
            ),
            Just((tool_scopes, held, ask, start_scopes)),
        )
    })
    .prop_map(
        |(
            (planner_risk, planner_owner, helper_risk, tool_data_user, obo, day, hour),
            (ttl, chain, elapsed, denials, start_intent, method, path, mcp),
            (tool_scopes, held, ask, start_scopes),
        )| Case {
            planner_risk,
            planner_owner,
            helper_risk,
            tool_scopes,
            tool_data_user,
            held,
            obo,
            day,
            hour,
            ttl,
            chain,
            elapsed,
            denials,
            start_intent,
            start_scopes,
            ask,
            method,
            path,
            mcp,
        },
    )
}

/// What an enforcement point answered, comparably.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    verdict: Verdict,
    policies: Vec<String>,
    version: String,
}

struct World {
    broker: Arc<Broker>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let policy = PolicySet::compile(vec![
        PolicySource {
            name: "examples.cedar".into(),
            text: include_str!("../../../examples/policies/tasks.cedar").into(),
        },
        PolicySource {
            name: "one-answer.cedar".into(),
            text: TEST_POLICIES.into(),
        },
    ])
    .unwrap();
    let opened = crate::open(
        &DataDir::new(dir.path()),
        BrokerConfig::new("http://writ.test"),
        crate::InitialPolicy::Set {
            set: policy,
            origin: "test".into(),
        },
        Arc::new(clock.clone()),
        None,
    )
    .await
    .unwrap();
    World {
        broker: opened.broker,
        clock,
        _dir: dir,
    }
}

fn set(scopes: &BTreeSet<&str>) -> String {
    scopes.iter().copied().collect::<Vec<_>>().join(",")
}

async fn register_agent(b: &Broker, name: &str, attrs: &[(&str, Option<&str>)]) {
    let attributes: serde_json::Map<String, serde_json::Value> = attrs
        .iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), serde_json::json!(v))))
        .collect();
    b.registry
        .register_agent(
            serde_json::from_value::<RegisterAgent>(serde_json::json!({
                "name": name,
                "attestation": {"kind": "join_token"},
                "attributes": attributes,
            }))
            .unwrap(),
            "operator:test",
        )
        .await
        .unwrap();
}

/// An attested instance of `agent`: its token and the broker's caller.
async fn attest(b: &Broker, agent: &str) -> (String, AgentCaller) {
    let name: writ_core::AgentName = agent.parse().unwrap();
    let jt = b
        .registry
        .create_join_token(&name, CreateJoinToken { ttl: 600 }, "operator:test")
        .await
        .unwrap();
    let att = b
        .attestations
        .attest(
            AttestRequest {
                agent: name,
                join_token: Some(jt.join_token),
                oidc_token: None,
                jwt_svid: None,
            },
            None,
        )
        .await
        .unwrap();
    let caller = b
        .tokens
        .authenticate(
            &crate::extract::Presented {
                token: &att.access_token,
                dpop: false,
                proof: None,
            },
            "POST",
            "/v1/tasks",
            TokenKind::Instance,
        )
        .await
        .unwrap();
    (att.access_token, caller)
}

fn exchange(subject: &str, actor: Option<&str>, tool: &str, scope: &str) -> TokenRequest {
    TokenRequest {
        grant_type: Some(GRANT_TYPE.into()),
        subject_token: Some(subject.into()),
        subject_token_type: Some(ACCESS_TOKEN_TYPE.into()),
        actor_token: actor.map(str::to_owned),
        actor_token_type: actor.map(|_| ACCESS_TOKEN_TYPE.to_owned()),
        actor_token_proof: None,
        audience: Some(tool.into()),
        resource: None,
        scope: Some(scope.into()),
        requested_token_type: None,
    }
}

/// The broker's own answer: the verdict its audit record names, with the
/// policies and version it records. `None` when the request was refused
/// before policy was asked (no verdict recorded).
async fn audited(b: &Broker, since: u64, kind: AuditKind) -> Option<Answer> {
    let records: Vec<AuditRecord> = b.store.audit_after(since, 100).await.unwrap();
    let r = records
        .iter()
        .rev()
        .map(|r| r.parsed().unwrap())
        .find(|e| e.kind == kind && e.detail.get("verdict").is_some())?;
    let verdict = match r.detail["verdict"].as_str()? {
        "allow" => Verdict::Allow,
        "deny" => Verdict::Deny,
        "needs_approval" => Verdict::NeedsApproval,
        other => panic!("unknown verdict {other}"),
    };
    let mut policies = r.determining_policies.clone();
    policies.sort();
    Some(Answer {
        verdict,
        policies,
        version: r.policy_version.clone().unwrap_or_default(),
    })
}

/// AuthZEN's answer to the same request.
async fn authzen(b: &Broker, e: serde_json::Value) -> Answer {
    let e: Evaluation = serde_json::from_value(e).unwrap();
    let r = b.authzen.evaluate(e, "admin").await.unwrap();
    let verdict = match (r.decision, r.context.reason.as_str()) {
        (true, _) => Verdict::Allow,
        (false, APPROVAL_REQUIRED) => Verdict::NeedsApproval,
        (false, _) => Verdict::Deny,
    };
    let mut policies = r.context.determining_policies;
    policies.sort();
    Answer {
        verdict,
        policies,
        version: r.context.policy_version,
    }
}

fn answer_of(d: &writ_policy::Decision) -> Answer {
    let mut policies = d.determining_policies().to_vec();
    policies.sort();
    Answer {
        verdict: d.verdict(),
        policies,
        version: d.policy_version().to_owned(),
    }
}

/// How many comparisons each action got, and of which verdicts: the test
/// fails if the generator stops reaching a verdict at an action.
#[derive(Debug, Default)]
struct Seen(std::collections::BTreeMap<(&'static str, &'static str), usize>);

impl Seen {
    fn add(&mut self, action: &'static str, a: &Answer) {
        *self.0.entry((action, a.verdict.as_str())).or_default() += 1;
    }
}

/// Runs one case against a fresh world; compares every enforcement point.
async fn check(n: usize, c: &Case, seen: &mut Seen) -> Result<(), String> {
    let w = world().await;
    let b = &*w.broker;
    let tool = format!("t{n}");
    let planner = format!("p{n}");
    let helper = format!("h{n}");
    let mut tool_scopes: Vec<&str> = c.tool_scopes.iter().copied().collect();
    tool_scopes.sort_unstable();
    let mut attributes = serde_json::Map::new();
    if c.tool_data_user {
        attributes.insert("data".into(), "user".into());
    }
    b.registry
        .register_tool(
            serde_json::from_value::<RegisterTool>(serde_json::json!({
                "name": tool,
                "audience": format!("https://{tool}.example"),
                "scopes": tool_scopes,
                "attributes": attributes,
            }))
            .unwrap(),
            "operator:test",
        )
        .await
        .unwrap();
    register_agent(
        b,
        &planner,
        &[("risk_tier", c.planner_risk), ("owner", c.planner_owner)],
    )
    .await;
    register_agent(b, &helper, &[("risk_tier", c.helper_risk)]).await;
    for i in 0..c.chain {
        register_agent(b, &format!("c{n}-{i}"), &[]).await;
    }
    w.clock
        .set(T0.add_secs(c.day * 86_400 + (c.hour - 12) * 3600));
    let (_, planner_caller) = attest(b, &planner).await;
    let (helper_token, helper_caller) = attest(b, &helper).await;

    // The task the later checks run under, and its delegation chain.
    let setup = StartTask {
        intent: "setup".into(),
        capabilities: vec![Capability::parse_short(&format!("{tool}:{}", set(&c.held))).unwrap()],
        on_behalf_of: c.obo.map(str::to_owned),
        ttl: Some(c.ttl),
        justification: None,
    };
    let leaf = match b.tasks.start(&planner_caller, setup).await {
        Ok(Started::Token(t)) => Some(t.access_token),
        _ => None,
    };
    let mut leaf = leaf.map(|t| (t, planner.clone()));
    for i in 0..c.chain {
        let Some((token, _)) = &leaf else { break };
        let name = format!("c{n}-{i}");
        let (actor_token, _) = attest(b, &name).await;
        let scope = c
            .held
            .iter()
            .map(|s| format!("{tool}:{s}"))
            .collect::<Vec<_>>()
            .join(" ");
        leaf = b
            .exchange
            .token_exchange(exchange(token, Some(&actor_token), &tool, &scope), None)
            .await
            .ok()
            .map(|r| (r.access_token, name));
    }
    w.clock.advance(Duration::from_secs(c.elapsed));
    // Behaviour: the case's count for every agent involved.
    let now = b.now();
    for agent in [&planner, &helper] {
        for _ in 0..c.denials {
            b.store
                .record_denial(&agent.parse().unwrap(), now)
                .await
                .unwrap();
        }
    }
    let instance_of = |caller: &AgentCaller| caller.instance_id().to_string();
    let ask_scopes: Vec<&str> = c.ask.iter().copied().collect();

    // StartTask: the broker's start against AuthZEN, AuthZEN first (it
    // counts nothing; a refused start counts against the planner).
    let start_scopes: Vec<&str> = c.start_scopes.iter().copied().collect();
    let az = authzen(
        b,
        serde_json::json!({
            "subject": {"type": "instance", "id": instance_of(&planner_caller)},
            "action": {"name": "StartTask"},
            "resource": {"type": "tool", "id": tool, "properties": {"scopes": start_scopes}},
            "context": {"intent": c.start_intent, "on_behalf_of": c.obo, "ttl": c.ttl},
        }),
    )
    .await;
    let head = b.store.audit_head().await.unwrap();
    let start = StartTask {
        intent: c.start_intent.into(),
        capabilities: vec![
            Capability::parse_short(&format!("{tool}:{}", set(&c.start_scopes))).unwrap(),
        ],
        on_behalf_of: c.obo.map(str::to_owned),
        ttl: Some(c.ttl),
        justification: None,
    };
    let _ = b.tasks.start(&planner_caller, start).await;
    let broker = audited(b, head, AuditKind::TaskStart)
        .await
        .ok_or("the task start recorded no verdict")?;
    if broker != az {
        return Err(format!("StartTask: broker {broker:?} but AuthZEN {az:?}"));
    }
    seen.add("StartTask", &az);

    let Some((leaf_token, leaf_agent)) = leaf else {
        return Ok(());
    };
    let leaf_claims: AccessClaims = b.tokens.verify_token(&leaf_token, TokenKind::Task).unwrap();
    let leaf_task = leaf_claims.task.clone().unwrap();
    let leaf_instance = leaf_claims.client_id.clone();

    // ExchangeToken.
    let az = authzen(
        b,
        serde_json::json!({
            "subject": {"type": "instance", "id": leaf_instance},
            "action": {"name": "ExchangeToken"},
            "resource": {"type": "tool", "id": tool, "properties": {"scopes": ask_scopes}},
            "context": {"task": leaf_task},
        }),
    )
    .await;
    let head = b.store.audit_head().await.unwrap();
    let tool_token = b
        .exchange
        .token_exchange(
            exchange(&leaf_token, None, &tool, &ask_scopes.join(" ")),
            None,
        )
        .await
        .ok()
        .map(|r| r.access_token);
    let broker = audited(b, head, AuditKind::TokenExchange)
        .await
        .ok_or("the exchange recorded no verdict")?;
    if broker != az {
        return Err(format!(
            "ExchangeToken: broker {broker:?} but AuthZEN {az:?}"
        ));
    }
    seen.add("ExchangeToken", &az);

    // DelegateTask: to a fresh sub-agent, by the leaf's holder.
    let az = authzen(
        b,
        serde_json::json!({
            "subject": {"type": "instance", "id": instance_of(&helper_caller)},
            "action": {"name": "DelegateTask"},
            "resource": {"type": "tool", "id": tool, "properties": {"scopes": ask_scopes}},
            "context": {"task": leaf_task},
        }),
    )
    .await;
    let head = b.store.audit_head().await.unwrap();
    let delegated = b
        .exchange
        .token_exchange(
            exchange(
                &leaf_token,
                Some(&helper_token),
                &tool,
                &ask_scopes
                    .iter()
                    .map(|s| format!("{tool}:{s}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            None,
        )
        .await;
    let broker = audited(b, head, AuditKind::TokenExchange)
        .await
        .ok_or_else(|| format!("the delegation recorded no verdict: {:?}", delegated.err()))?;
    if broker != az {
        return Err(format!(
            "DelegateTask: broker {broker:?} but AuthZEN {az:?}"
        ));
    }
    seen.add("DelegateTask", &az);

    // CallTool: the gateway's decision function, from its bundle and the
    // real tool token, against AuthZEN.
    let Some(tool_token) = tool_token else {
        return Ok(());
    };
    let (_, payload) = writ_core::token::insecure_peek(&tool_token).unwrap();
    let claims: Arc<AccessClaims> = Arc::new(serde_json::from_value(payload).unwrap());
    let bundle = writ_gateway::Bundle::compile(
        b.gateways
            .gateway_bundle(writ_core::api::EMBEDDED_GATEWAY)
            .await
            .unwrap(),
        None,
    )
    .unwrap();
    let caller = writ_gateway::caller_of(&bundle, Arc::clone(&claims)).unwrap();
    assert_eq!(caller.agent.name.as_str(), leaf_agent);
    let tool_record = bundle.tools.get(&tool).unwrap().clone();
    let (mcp_method, named) = match c.mcp {
        Some((m, "")) => (Some(m), None),
        Some((m, t)) => (Some(m), Some(t)),
        None => (None, None),
    };
    let names = |method: &str| named.filter(|_| mcp_method == Some(method));
    let (mcp_tool, mcp_resource, mcp_prompt) = (
        names("tools/call"),
        names("resources/read"),
        names("prompts/get"),
    );
    let arguments = mcp_tool.or(mcp_prompt).map(|_| r#"{"q":"x"}"#);
    let request = CallRequest {
        method: c.method,
        path: c.path,
        query: "",
        mcp_method,
        mcp_tool,
        mcp_resource,
        mcp_prompt,
        arguments,
    };
    let gateway = answer_of(&writ_gateway::decide_call(
        &bundle,
        &caller,
        &tool_record,
        request,
        b.now(),
    ));
    let token_scopes: Vec<String> = claims
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .map(str::to_owned)
        .collect();
    let mut req = serde_json::json!({"method": c.method, "path": c.path, "query": ""});
    if let Some(m) = mcp_method {
        req["mcp_method"] = m.into();
    }
    if let Some(t) = mcp_tool {
        req["mcp_tool"] = t.into();
    }
    if let Some(r) = mcp_resource {
        req["mcp_resource"] = r.into();
    }
    if let Some(p) = mcp_prompt {
        req["mcp_prompt"] = p.into();
    }
    if arguments.is_some() {
        req["arguments"] = serde_json::json!({"q": "x"});
    }
    let az = authzen(
        b,
        serde_json::json!({
            "subject": {"type": "agent", "id": leaf_agent},
            "action": {"name": "CallTool"},
            "resource": {"type": "tool", "id": tool, "properties": {"scopes": token_scopes}},
            "context": {"task": leaf_task, "request": req},
        }),
    )
    .await;
    if gateway != az {
        return Err(format!("CallTool: gateway {gateway:?} but AuthZEN {az:?}"));
    }
    seen.add("CallTool", &az);
    Ok(())
}

#[test]
fn promise_6_one_answer_at_every_enforcement_point() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        cases: 160,
        failure_persistence: None,
        // Each case starts a broker: shrinking would take minutes; the
        // failing case is printed whole instead.
        max_shrink_iters: 0,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let seen = std::cell::RefCell::new(Seen::default());
    let n = std::cell::Cell::new(0usize);
    let result = runner.run(&case(), |c| {
        n.set(n.get() + 1);
        rt.block_on(check(n.get(), &c, &mut seen.borrow_mut()))
            .map_err(|e| TestCaseError::fail(format!("{e}\n  case: {c:?}")))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must reach every verdict the actions can give here,
    // or the comparison proves less than it says.
    let seen = seen.into_inner();
    eprintln!("compared, by action and verdict: {seen:?}");
    for (action, verdicts) in [
        ("StartTask", &["allow", "deny", "needs_approval"][..]),
        ("ExchangeToken", &["allow", "deny", "needs_approval"][..]),
        ("DelegateTask", &["allow", "deny", "needs_approval"][..]),
        ("CallTool", &["allow", "deny", "needs_approval"][..]),
    ] {
        for v in verdicts {
            assert!(
                seen.0.get(&(action, v)).copied().unwrap_or(0) > 0,
                "no case reached {action} = {v}: {seen:?}"
            );
        }
    }
}
