#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use writ_core::Timestamp;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_policy::{PolicySet, PolicySource};

use super::observe::Observed;
use super::*;

const T0: i64 = 1_795_780_800;

fn audiences() -> BTreeMap<String, String> {
    [
        ("https://crm.example".to_owned(), "crm".to_owned()),
        ("https://ledger.example".to_owned(), "ledger".to_owned()),
    ]
    .into()
}

/// A task start for `agent` asking `caps`, an exchange for crm:read, its
/// tool token, and calls with that token.
fn story(seen: &mut Observed, agent: &str, task: &str, calls: &[(&str, &str, Outcome)]) {
    let aud = audiences();
    let mut seq = seen.last_seq;
    let mut push = |e: AuditEvent| {
        seq += 1;
        seen.push(seq, Timestamp::from_secs(T0 + seq as i64), &e, &aud);
    };
    push(
        AuditEvent::new(AuditKind::TaskStart, Outcome::Success, "instance:i1")
            .agent(agent)
            .instance("i1")
            .task(task)
            .policy("v1", vec!["broad".into()])
            .detail(json!({
                "intent": "read customers",
                "capabilities": [{"tool": "crm", "scopes": ["read", "write"]}, {"tool": "ledger", "scopes": ["read"]}],
                "ttl": 600, "exception": false, "verdict": "allow",
            })),
    );
    push(
        AuditEvent::new(AuditKind::TokenExchange, Outcome::Success, "instance:i1")
            .agent(agent)
            .task(task)
            .jti("task-jti")
            .policy("v1", vec!["broad".into()])
            .detail(json!({"tool": "crm", "scope": ["read"], "verdict": "allow"})),
    );
    push(
        AuditEvent::new(AuditKind::TokenIssue, Outcome::Success, "system")
            .agent(agent)
            .task(task)
            .jti(format!("{task}-tool"))
            .detail(json!({"kind": "tool_token", "aud": "https://crm.example", "scope": "read"})),
    );
    for (method, path, outcome) in calls {
        push(
            AuditEvent::new(AuditKind::ToolCall, *outcome, "gateway:embedded")
                .agent(agent)
                .task(task)
                .jti(format!("{task}-tool"))
                .detail(json!({
                    "tool": "crm", "method": method, "path": path,
                    "verdict": if *outcome == Outcome::Success { "allow" } else { "deny" },
                    "held": false,
                })),
        );
    }
}

#[test]
fn since_takes_durations_and_refuses_the_rest() {
    assert_eq!(parse_since("90s").unwrap(), 90);
    assert_eq!(parse_since("15m").unwrap(), 900);
    assert_eq!(parse_since("24h").unwrap(), 86_400);
    assert_eq!(parse_since("7d").unwrap(), 604_800);
    assert_eq!(parse_since("120").unwrap(), 120);
    for bad in [
        "",
        "0s",
        "-1h",
        "1y",
        "h",
        "367d",
        "99999999999999999999d",
        "1h30m",
    ] {
        assert!(parse_since(bad).is_err(), "{bad}");
    }
    assert!(Format::parse("pdf").is_err());
    assert_eq!(Format::parse("md").unwrap(), Format::Markdown);
}

#[test]
fn granted_and_never_used_scopes_are_named() {
    let mut seen = Observed::default();
    story(
        &mut seen,
        "reporter",
        "t1",
        &[("GET", "/customers", Outcome::Success)],
    );
    let crm = &seen.usage[&("reporter".to_owned(), "crm".to_owned())];
    assert_eq!(
        crm.granted(),
        BTreeSet::from(["read".into(), "write".into()])
    );
    assert_eq!(crm.used(), BTreeSet::from(["read".to_owned()]));
    let ledger = &seen.usage[&("reporter".to_owned(), "ledger".to_owned())];
    assert!(ledger.used().is_empty());
    assert_eq!(ledger.granted(), BTreeSet::from(["read".to_owned()]));
    assert!(crm.permitted_by.contains("broad"));
}

fn proposal_of(seen: &Observed, forbids: &[(String, String)]) -> PolicySet {
    let legit = propose::legitimate(&seen.decided, &seen.quarantined);
    let (text, _) = propose::permits(&legit);
    let mut sources = vec![PolicySource {
        name: PERMITS_FILE.into(),
        text,
    }];
    if let Some(f) = propose::forbids(forbids) {
        sources.push(PolicySource {
            name: FORBIDS_FILE.into(),
            text: f,
        });
    }
    PolicySet::compile(sources).unwrap()
}

#[test]
fn the_proposal_is_valid_cedar_and_permits_only_what_was_seen() {
    let mut seen = Observed::default();
    story(
        &mut seen,
        "reporter",
        "t1",
        &[
            ("GET", "/customers", Outcome::Success),
            ("GET", "/a \"quoted\\\" path", Outcome::Success),
            ("DELETE", "/customers", Outcome::Deny),
        ],
    );
    let set = proposal_of(&seen, &[]);
    let ids = set.permit_ids();
    assert_eq!(
        ids,
        vec![
            "lp:reporter:crm:call".to_owned(),
            "lp:reporter:crm:exchange".to_owned(),
            "lp:reporter:crm:start".to_owned(),
        ]
    );
    let text = &set.sources()[0].text;
    assert!(
        text.contains("context.request.path == \"/customers\""),
        "{text}"
    );
    assert!(
        !text.contains("DELETE"),
        "a denied call is not permitted: {text}"
    );
    assert!(
        !text.contains("ledger"),
        "an unused tool gets nothing: {text}"
    );
    assert!(
        !text.contains("\"write\""),
        "an unused scope gets nothing: {text}"
    );
}

#[test]
fn quarantined_agents_traffic_is_not_legitimate() {
    let mut seen = Observed::default();
    story(
        &mut seen,
        "good",
        "t1",
        &[("GET", "/customers", Outcome::Success)],
    );
    story(
        &mut seen,
        "bad",
        "t2",
        &[("GET", "/everything", Outcome::Success)],
    );
    let e = AuditEvent::new(AuditKind::AgentQuarantine, Outcome::Success, "admin").agent("bad");
    seen.push(99, Timestamp::from_secs(T0 + 99), &e, &audiences());
    assert!(seen.quarantined.contains("bad"));
    let set = proposal_of(&seen, &[]);
    assert!(set.permit_ids().iter().all(|id| !id.contains(":bad:")));
}

#[test]
fn the_live_forbids_are_kept() {
    let mut seen = Observed::default();
    story(
        &mut seen,
        "reporter",
        "t1",
        &[("GET", "/customers", Outcome::Success)],
    );
    let live = PolicySet::compile(vec![PolicySource {
        name: "live.cedar".into(),
        text: "permit (principal, action, resource);\n\
               @id(\"no-deletes\") forbid (principal, action, resource) when { context.scopes.contains(\"delete\") };\n\
               forbid (principal, action, resource) when { context.depth > 5 };"
            .into(),
    }])
    .unwrap();
    let forbids = live.forbids();
    assert_eq!(forbids.len(), 2);
    let set = proposal_of(&seen, &forbids);
    let all = set.ids();
    assert!(all.contains("no-deletes"));
    assert!(all.contains("live.cedar#2"), "{all:?}");
}

#[test]
fn generated_cases_expect_the_proposal_to_allow_use_and_deny_the_unused() {
    let mut seen = Observed::default();
    story(
        &mut seen,
        "reporter",
        "t1",
        &[("GET", "/customers", Outcome::Success)],
    );
    let legit = propose::legitimate(&seen.decided, &seen.quarantined);
    let granted = seen
        .usage
        .iter()
        .map(|(k, u)| (k.clone(), u.granted()))
        .collect();
    let cases = propose::cases(&legit, &granted, &BTreeMap::new(), &BTreeMap::new());
    let cases = cases["cases"].as_array().unwrap();
    let expect = |name: &str| {
        cases
            .iter()
            .find(|c| c["name"].as_str().unwrap().contains(name))
            .unwrap_or_else(|| panic!("no case {name}: {cases:?}"))["expect"]
            .clone()
    };
    assert_eq!(expect("GET /customers"), "allow");
    assert_eq!(expect("never seen"), "deny");
    assert_eq!(expect("crm:write"), "deny");
    assert_eq!(expect("ledger:read"), "deny");
    assert_eq!(expect("starts a task on crm"), "allow");
}

#[test]
fn documents_escape_what_agents_chose() {
    let mut seen = Observed::default();
    story(
        &mut seen,
        "reporter",
        "t1",
        &[("GET", "/<script>|x", Outcome::Success)],
    );
    let report = LeastPrivilegeReport {
        generated_at: "now".into(),
        since: "then".into(),
        first_seq: 1,
        last_seq: 4,
        records: 4,
        truncated: false,
        live_policy_version: "v1".into(),
        summary: Summary::default(),
        agents: Vec::new(),
        overbroad_policies: Vec::new(),
        proposal: Proposal {
            valid: true,
            error: None,
            version: None,
            permits: Vec::new(),
            forbids_kept: 0,
            files: [("p.cedar".to_owned(), "<script>".to_owned())].into(),
            tests: json!({}),
        },
        replay: Replay::default(),
    };
    let html = render(&report, Format::Html).unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"));
    let v: serde_json::Value =
        serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
    assert_eq!(v["proposal"]["valid"], true);
}

#[test]
fn mcp_calls_are_permitted_by_what_they_name() {
    let mut seen = Observed::default();
    story(&mut seen, "reporter", "t1", &[]);
    let e = AuditEvent::new(AuditKind::ToolCall, Outcome::Success, "gateway:embedded")
        .agent("reporter")
        .task("t1")
        .jti("t1-tool")
        .detail(json!({
            "tool": "crm", "method": "POST", "path": "/mcp",
            "mcp_method": "resources/read", "mcp_resource": "file:///customers.csv",
            "verdict": "allow", "held": false,
        }));
    seen.push(50, Timestamp::from_secs(T0 + 50), &e, &audiences());
    let set = proposal_of(&seen, &[]);
    let text = &set.sources()[0].text;
    assert!(
        text.contains("context.request.mcp_method == \"resources/read\"")
            && text.contains("context.request.mcp_resource == \"file:///customers.csv\""),
        "{text}"
    );
}

#[test]
fn exceptions_are_listed_with_their_use() {
    let mut seen = Observed::default();
    let start = AuditEvent::new(AuditKind::TaskStart, Outcome::Success, "instance:i1")
        .agent("reporter")
        .instance("i1")
        .task("long")
        .detail(json!({
            "intent": "overnight batch",
            "capabilities": [{"tool": "crm", "scopes": ["read"]}],
            "ttl": 86400, "exception": true, "verdict": "allow",
        }));
    seen.push(1, Timestamp::from_secs(T0), &start, &audiences());
    let call = AuditEvent::new(AuditKind::ToolCall, Outcome::Success, "gateway:embedded")
        .agent("reporter")
        .task("long")
        .detail(json!({"tool": "crm", "method": "GET", "path": "/x", "verdict": "allow"}));
    seen.push(2, Timestamp::from_secs(T0 + 1), &call, &audiences());
    let e: Vec<(&str, &str, i64)> = seen
        .exceptions
        .iter()
        .map(|x| (x.task.as_str(), x.agent.as_str(), x.ttl))
        .collect();
    assert_eq!(e, vec![("long", "reporter", 86400)]);
    assert_eq!(seen.exceptions[0].tools, vec!["crm".to_owned()]);
    assert_eq!(seen.calls_by_task.get("long"), Some(&1));
    // The task's own scopes stand in for a token issued before the window.
    let crm = &seen.usage[&("reporter".to_owned(), "crm".to_owned())];
    assert_eq!(crm.used(), BTreeSet::from(["read".to_owned()]));
}

#[test]
fn replayed_behaviour_counts_the_refusals_before_each_decision() {
    let mut seen = Observed::default();
    story(
        &mut seen,
        "reporter",
        "t1",
        &[
            ("GET", "/a", Outcome::Deny),
            ("GET", "/b", Outcome::Deny),
            ("GET", "/c", Outcome::Success),
        ],
    );
    let calls: Vec<u32> = seen
        .decided
        .iter()
        .filter(|d| matches!(d.what, super::observe::Recorded::Call { .. }))
        .map(|d| d.denials_5m)
        .collect();
    assert_eq!(calls, vec![0, 1, 2]);
    // A release forgives; refusals older than five minutes fall out.
    let release =
        AuditEvent::new(AuditKind::AgentRelease, Outcome::Success, "admin").agent("reporter");
    seen.push(40, Timestamp::from_secs(T0 + 40), &release, &audiences());
    story(
        &mut seen,
        "reporter",
        "t2",
        &[("GET", "/d", Outcome::Success)],
    );
    assert_eq!(seen.decided.last().unwrap().denials_5m, 0);
    let mut old = Observed::default();
    story(&mut old, "reporter", "t3", &[("GET", "/a", Outcome::Deny)]);
    let late = AuditEvent::new(AuditKind::ToolCall, Outcome::Success, "gateway:embedded")
        .agent("reporter")
        .task("t3")
        .detail(json!({"tool": "crm", "method": "GET", "path": "/x", "verdict": "allow"}));
    old.push(500, Timestamp::from_secs(T0 + 600), &late, &audiences());
    assert_eq!(old.decided.last().unwrap().denials_5m, 0);
}
