#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;

fn facts() -> Facts {
    Facts {
        instance_token_ttl: 15 * 60,
        task_token_ttl: 10 * 60,
        tool_token_ttl: 5 * 60,
        max_task_ttl: 8 * 3600,
        max_exception_ttl: 24 * 3600,
        max_delegation_depth: 3,
        propagation_wait_secs: 5,
        records: 40,
        chain_valid: true,
        checkpoints: 1,
        sealed_through: 30,
        live_policy_version: "v1".into(),
        tools: 1,
        tools_via_gateway: 1,
        lp_agents: 1,
        ..Facts::default()
    }
}

fn seqs(s: &[u64]) -> Seqs {
    Seqs {
        count: s.len() as u64,
        seqs: s.to_vec(),
    }
}

#[test]
fn every_mapping_file_parses_and_names_known_checks() {
    let names = framework_names();
    assert_eq!(
        names,
        [
            "owasp-nhi",
            "owasp-agentic",
            "nist-ai-rmf",
            "nist-csf",
            "mitre-atlas",
            "csa-maestro"
        ]
    );
    for name in names {
        let m = mapping(name).unwrap();
        assert_eq!(m.framework, name, "{name}: the file names its framework");
        assert!(
            !m.version.is_empty(),
            "{name}: names the version it follows"
        );
        assert!(!m.items.is_empty(), "{name}: has items");
        let mut ids = std::collections::BTreeSet::new();
        for i in &m.items {
            assert!(ids.insert(i.id.clone()), "{name}: {} twice", i.id);
            assert!(!i.title.is_empty(), "{name}: {} has a title", i.id);
            for c in &i.checks {
                assert!(CHECKS.contains(&c.as_str()), "{name}: {} names {c}", i.id);
            }
        }
    }
}

#[test]
fn every_check_is_used_and_answers() {
    let used: std::collections::BTreeSet<String> = framework_names()
        .into_iter()
        .flat_map(|n| mapping(n).unwrap().items)
        .flat_map(|i| i.checks)
        .collect();
    for c in CHECKS {
        assert!(used.contains(c), "{c} is in no mapping");
        let e = check(c, &facts());
        assert_eq!(e.check, c);
        assert!(!e.summary.is_empty());
    }
}

#[test]
fn unknown_framework_is_invalid_and_lists_the_valid_ones() {
    let err = mapping("iso-42001").unwrap_err();
    let Error::Invalid(msg) = err else {
        panic!("not invalid: {err:?}")
    };
    for n in framework_names() {
        assert!(msg.contains(n), "{msg}");
    }
}

#[test]
fn long_lived_tokens_are_a_gap_with_their_records() {
    let mut f = facts();
    assert_eq!(check("long-lived-tokens", &f).status, Status::Pass);
    f.long_tokens = seqs(&[7, 9]);
    f.longest_token = Some((2 * 3600, "task_token".into(), 9));
    let e = check("long-lived-tokens", &f);
    assert_eq!(e.status, Status::Gap);
    assert_eq!(e.audit.iter().map(|a| a.seq).collect::<Vec<_>>(), [7, 9]);
    assert_eq!(e.audit[0].href, "/v1/audit?after=6&limit=1");
    assert!(e.summary.contains("task_token, 2 h"), "{}", e.summary);
}

#[test]
fn configured_lifetimes_above_an_hour_are_a_gap() {
    let mut f = facts();
    assert_eq!(check("token-lifetimes", &f).status, Status::Pass);
    f.task_token_ttl = 2 * 3600;
    assert_eq!(check("token-lifetimes", &f).status, Status::Gap);
    f.max_task_ttl = 48 * 3600;
    assert_eq!(check("task-lifetimes", &f).status, Status::Gap);
}

#[test]
fn static_secrets_injected_by_the_gateway_are_a_gap() {
    let mut f = facts();
    assert_eq!(check("static-secrets", &f).status, Status::Pass);
    f.secret_tools = vec!["crm".into()];
    f.secret_sets = seqs(&[4]);
    let e = check("static-secrets", &f);
    assert_eq!(e.status, Status::Gap);
    assert!(e.summary.contains("crm"));
    assert_eq!(e.audit[0].seq, 4);
}

#[test]
fn broken_chain_is_a_gap_at_the_break() {
    let mut f = facts();
    assert_eq!(check("audit-integrity", &f).status, Status::Pass);
    f.chain_valid = false;
    f.chain_break = Some((12, "hash mismatch".into()));
    let e = check("audit-integrity", &f);
    assert_eq!(e.status, Status::Gap);
    assert_eq!(e.audit[0].seq, 12);
}

#[test]
fn unused_scopes_and_deep_delegation_are_gaps() {
    let mut f = facts();
    assert_eq!(check("least-privilege", &f).status, Status::Pass);
    f.lp_unused_scopes = 2;
    assert_eq!(check("least-privilege", &f).status, Status::Gap);
    f.lp_agents = 0;
    assert_eq!(check("least-privilege", &f).status, Status::NotApplicable);
    assert_eq!(check("delegation-limits", &f).status, Status::Pass);
    f.max_delegation_depth = 10;
    assert_eq!(check("delegation-limits", &f).status, Status::Gap);
}

#[test]
fn item_status_is_the_worst_of_its_checks() {
    let m = mapping("owasp-nhi").unwrap();
    let mut f = facts();
    f.secret_tools = vec!["crm".into()];
    let r = assemble(&m, &f, "now".into());
    assert_eq!(r.items.len(), m.items.len());
    let nhi7 = r.items.iter().find(|i| i.id == "NHI7:2025").unwrap();
    assert_eq!(nhi7.status, Status::Gap);
    assert_eq!(nhi7.evidence.len(), 3);
    let total = r.summary.pass + r.summary.gap + r.summary.not_applicable;
    assert_eq!(total, r.items.len() as u64);
    // An item no check bears on is not applicable.
    let csf = assemble(&mapping("nist-csf").unwrap(), &f, "now".into());
    let at = csf.items.iter().find(|i| i.id == "PR.AT").unwrap();
    assert_eq!(at.status, Status::NotApplicable);
}

#[test]
fn json_has_id_title_status_evidence_per_item() {
    let r = assemble(&mapping("mitre-atlas").unwrap(), &facts(), "now".into());
    let v: serde_json::Value =
        serde_json::from_str(&render_evidence(&r, Format::Json).unwrap()).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), r.items.len());
    for i in items {
        assert!(i["id"].is_string() && i["title"].is_string());
        assert!(["pass", "gap", "not-applicable"].contains(&i["status"].as_str().unwrap()));
        assert!(i["evidence"].is_array());
    }
}

#[test]
fn html_is_self_contained_and_escaped() {
    let mut f = facts();
    f.secret_tools = vec!["<script>alert(1)</script>".into()];
    f.secret_sets = seqs(&[3]);
    let r = assemble(&mapping("owasp-nhi").unwrap(), &f, "now".into());
    let html = render_evidence(&r, Format::Html).unwrap();
    assert!(!html.contains("<script>"));
    assert!(html.contains("&lt;script&gt;"));
    assert!(!html.contains("src="), "no external assets");
    assert!(!html.contains("<link"), "no external assets");
    assert!(html.contains("href=\"/v1/audit?after=2&amp;limit=1\""));
    let md = render_evidence(&r, Format::Markdown).unwrap();
    assert!(md.contains("| NHI7:2025 | Long-Lived Secrets | gap |"));
}

#[test]
fn the_chain_read_finds_long_tokens_secrets_refusals_and_calls() {
    use serde_json::json;
    use writ_core::audit::{AuditEvent, AuditKind, Outcome};
    let t0 = 1_795_780_800;
    let mut f = facts();
    let issue = |kind: &str, life: i64| {
        AuditEvent::new(AuditKind::TokenIssue, Outcome::Success, "system")
            .agent("a")
            .detail(json!({"kind": kind, "exp": t0 + life}))
    };
    f.record(1, t0, &issue("instance_token", 900));
    f.record(2, t0, &issue("task_token", 3 * 3600));
    f.record(3, t0, &issue("tool_token", 300));
    f.record(
        4,
        t0,
        &AuditEvent::new(AuditKind::ToolSecretSet, Outcome::Success, "admin"),
    );
    f.record(
        5,
        t0,
        &AuditEvent::new(AuditKind::TokenRefused, Outcome::Failure, "instance:i"),
    );
    f.record(
        6,
        t0,
        &AuditEvent::new(AuditKind::ToolCall, Outcome::Success, "gateway"),
    );
    f.record(
        7,
        t0,
        &AuditEvent::new(AuditKind::ToolCall, Outcome::Deny, "gateway"),
    );
    f.record(
        8,
        t0,
        &AuditEvent::new(AuditKind::TaskStart, Outcome::Deny, "instance:i"),
    );
    assert_eq!(f.long_tokens.seqs, [2]);
    assert_eq!(f.longest_token, Some((3 * 3600, "task_token".into(), 2)));
    assert_eq!(f.secret_sets.seqs, [4]);
    assert_eq!(f.refusals.seqs, [5]);
    assert_eq!(f.tool_calls.seqs, [6]);
    assert_eq!(f.tool_calls_denied.seqs, [7]);
    assert_eq!(f.decisions_denied.seqs, [8]);
    assert_eq!(check("long-lived-tokens", &f).status, Status::Gap);
    assert_eq!(check("gateway-mediation", &f).status, Status::Pass);
}

#[test]
fn links_are_capped_but_all_are_counted() {
    let mut s = Seqs::default();
    for seq in 1..=100 {
        s.push(seq);
    }
    assert_eq!(s.count, 100);
    assert_eq!(s.links().len(), MAX_LINKS);
}

/// The ATLAS ids and names the mapping uses, as ATLAS publishes them (its
/// technique pages, 2026): a renamed technique is caught here.
#[test]
fn mitre_atlas_ids_and_names_are_atlas_own() {
    let m = mapping("mitre-atlas").unwrap();
    let want = [
        ("AML.T0051", "LLM Prompt Injection"),
        ("AML.T0054", "LLM Jailbreak"),
        ("AML.T0053", "AI Agent Tool Invocation"),
        ("AML.T0055", "Unsecured Credentials"),
        ("AML.T0083", "Credentials from AI Agent Configuration"),
        ("AML.T0098", "AI Agent Tool Credential Harvesting"),
        ("AML.T0012", "Valid Accounts"),
        ("AML.T0057", "LLM Data Leakage"),
        ("AML.T0024", "Exfiltration via AI Inference API"),
        ("AML.T0010", "AI Supply Chain Compromise"),
        ("AML.T0029", "Denial of AI Service"),
        ("AML.T0048", "External Harms"),
    ];
    let r = assemble(&m, &facts(), "now".into());
    let got: Vec<(&str, &str)> = r
        .items
        .iter()
        .map(|i| (i.id.as_str(), i.title.as_str()))
        .collect();
    assert_eq!(got, want);
    assert!(
        r.framework_version.contains("2026"),
        "{}",
        r.framework_version
    );
}

/// Sender-constrained tokens can fail: a bearer token issued, or a broker
/// that would issue one, is a gap; only every token bound, under
/// `--require-dpop`, passes.
#[test]
fn sender_constrained_is_a_gap_for_bearer_tokens_and_passes_only_on_bound_ones() {
    use serde_json::json;
    use writ_core::audit::{AuditEvent, AuditKind, Outcome};
    let t0 = 1_795_780_800;
    let issue = |binding: &str| {
        AuditEvent::new(AuditKind::TokenIssue, Outcome::Success, "system")
            .agent("a")
            .detail(json!({"kind": "task_token", "exp": t0 + 600, "binding": binding}))
    };
    // Nothing issued, DPoP required: nothing to show yet.
    let mut f = facts();
    f.require_dpop = true;
    assert_eq!(
        check("sender-constrained", &f).status,
        Status::NotApplicable
    );
    // Every token bound, DPoP required: a pass, linked to the records.
    f.record(1, t0, &issue("dpop"));
    f.record(2, t0, &issue("dpop"));
    let e = check("sender-constrained", &f);
    assert_eq!(e.status, Status::Pass, "{}", e.summary);
    assert_eq!(e.audit.len(), 2);
    // One bearer token issued: a gap, linked to it.
    f.record(3, t0, &issue("bearer"));
    let e = check("sender-constrained", &f);
    assert_eq!(e.status, Status::Gap, "{}", e.summary);
    assert!(
        e.summary.contains("bearer tokens were issued"),
        "{}",
        e.summary
    );
    assert_eq!(e.audit.first().map(|l| l.seq), Some(3));
    // Only bound tokens so far, but the broker would issue bearer ones.
    let mut f = facts();
    f.record(1, t0, &issue("dpop"));
    let e = check("sender-constrained", &f);
    assert_eq!(e.status, Status::Gap, "{}", e.summary);
    assert!(e.summary.contains("--require-dpop"), "{}", e.summary);
    // A record that does not say: not a pass.
    let mut f = facts();
    f.require_dpop = true;
    f.record(
        1,
        t0,
        &AuditEvent::new(AuditKind::TokenIssue, Outcome::Success, "system")
            .detail(json!({"kind": "task_token", "exp": t0 + 600})),
    );
    assert_eq!(check("sender-constrained", &f).status, Status::Gap);
}
