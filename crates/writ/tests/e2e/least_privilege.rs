//! Least privilege proven from live enforcement data: an agent with a
//! deliberately broad policy does a narrow job through the gateway; the
//! report names what it was granted and never used, proposes the narrower
//! set, replays the window against it, installs it as a shadow set in one
//! command, and, made live, it permits every recorded legitimate call and
//! denies the broad ones tried afterwards.

use std::time::Duration;

use serde_json::Value;

use crate::gateway::{register_http_tool, upstream, wait_for_tool};
use crate::harness::{ADMIN, Broker, Opts, eventually, json};

const BROAD: &str = r#"
@id("broad-tasks")
permit (principal, action in [Action::"StartTask", Action::"ExchangeToken", Action::"DelegateTask"], resource);

@id("broad-calls")
permit (principal, action == Action::"CallTool", resource);

@id("no-deletes")
forbid (principal, action, resource)
when { context.scopes.contains("delete") };
"#;

async fn call(method: reqwest::Method, url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn report(b: &Broker, args: &[&str]) -> Value {
    let mut all = vec!["report", "least-privilege", "--since", "1h"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = b.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

fn tool<'a>(r: &'a Value, agent: &str, tool: &str) -> &'a Value {
    r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == agent)
        .unwrap_or_else(|| panic!("no agent {agent} in {r}"))["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == tool)
        .unwrap_or_else(|| panic!("no tool {tool} for {agent} in {r}"))
}

#[tokio::test]
async fn least_privilege_report_proposes_a_narrower_set_that_permits_the_recorded_calls_and_denies_broad_ones()
 {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("broad.cedar"), BROAD).unwrap();
    let b = Broker::start_with(Opts {
        policy_dir: Some(policies.path().to_owned()),
        ..Opts::default()
    });
    let up = upstream().await;
    register_http_tool(&b, "crm", &up.url).await;
    register_http_tool(&b, "ledger", &up.url).await;
    wait_for_tool(&b.gateway, "crm").await;
    b.agent("reporter", &[("team", "sales")]).await;

    // The narrow job: read customers, twice, with a task that may also
    // write to crm and read tickets.
    let inst = b.attest("reporter").await.access_token;
    let t = b
        .start_task(&inst, &["crm:read,write", "ledger:read"])
        .await
        .unwrap();
    let tok = b
        .anon()
        .exchange(&t.access_token, None, Some("crm"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let customers = format!("{}/crm/customers", b.gateway);
    // The gateway learns of the new agent with its next bundle.
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(reqwest::Method::GET, &customers, &tok).await == 200
        })
        .await,
        "the gateway never let the first call through"
    );
    assert_eq!(call(reqwest::Method::GET, &customers, &tok).await, 200);

    // A sub-agent is handed all of crm and reads one customer.
    b.agent("helper", &[]).await;
    let helper = b.attest("helper").await.access_token;
    let child = b
        .anon()
        .delegate(&t.access_token, &helper, None, Some("crm"), None)
        .await
        .unwrap()
        .access_token;
    let helper_tok = b
        .anon()
        .exchange(&child, None, Some("crm"), Some("read"))
        .await
        .unwrap()
        .access_token;
    let one = format!("{}/crm/customers/42", b.gateway);
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(reqwest::Method::GET, &one, &helper_tok).await == 200
        })
        .await
    );

    // The gateway delivers its decisions to the chain in the background.
    assert!(
        eventually(Duration::from_secs(15), || async {
            let r = report(&b, &[]);
            tool(&r, "reporter", "crm")["calls"]
                .as_array()
                .is_some_and(|c| c.first().is_some_and(|c| c["allowed"] == 2))
        })
        .await,
        "the gateway's calls never reached the report"
    );
    let r = report(&b, &["--agent", "reporter"]);
    let crm = tool(&r, "reporter", "crm");
    assert_eq!(crm["used"], serde_json::json!(["read"]), "{r}");
    assert_eq!(crm["unused"], serde_json::json!(["write"]), "{r}");
    assert_eq!(crm["calls"][0]["method"], "GET");
    assert_eq!(crm["calls"][0]["path"], "/customers");
    // Delegation: what the sub-agent was handed, used, and how deep.
    let r_all = report(&b, &[]);
    let h = tool(&r_all, "helper", "crm");
    assert_eq!(
        h["granted_by_delegations"],
        serde_json::json!(["read", "write"])
    );
    assert_eq!(h["unused"], serde_json::json!(["write"]), "{h}");
    assert_eq!(h["delegation_depth_used"], 1);
    let helper_agent = r_all["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "helper")
        .unwrap();
    assert!(helper_agent["delegation_depth_allowed"].as_u64().unwrap() >= 1);
    let ledger = tool(&r, "reporter", "ledger");
    assert_eq!(ledger["unused"], serde_json::json!(["read"]), "{r}");
    assert!(r["summary"]["unused_scopes"].as_u64().unwrap() >= 2, "{r}");
    let broad: Vec<&str> = r["overbroad_policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["policy"].as_str().unwrap())
        .collect();
    assert!(broad.contains(&"broad-tasks"), "{r}");

    let proposal = &r["proposal"];
    assert_eq!(proposal["valid"], true, "{proposal}");
    assert_eq!(proposal["forbids_kept"], 1);
    // The replay: every legitimate call still passes, nothing denied is
    // let through, and the task start that asked for more is listed.
    let replay = &r["replay"];
    assert_eq!(replay["legitimate_allow_to_deny"], 0, "{replay}");
    assert_eq!(replay["deny_to_allow"], 0, "{replay}");
    assert!(replay["replayed"].as_u64().unwrap() >= 4, "{replay}");
    // One answer: the live set, replayed on the rebuilt facts, gives every
    // verdict the enforcement points recorded.
    assert!(replay["live_checked"].as_u64().unwrap() >= 4, "{replay}");
    assert_eq!(replay["live_checked"], replay["live_agreed"], "{replay}");
    let changed = replay["changed"].as_array().unwrap();
    assert!(
        changed
            .iter()
            .any(|c| c["action"] == "StartTask" && c["agent"] == "reporter"),
        "{replay}"
    );
    assert!(
        !changed.iter().any(|c| c["action"] == "CallTool"),
        "{replay}"
    );

    // Documents, and bad input refused clearly.
    for (format, needle) in [
        ("table", "reporter"),
        ("markdown", "| reporter | crm |"),
        ("html", "<td>reporter</td>"),
    ] {
        let out = b.cli(&["report", "least-privilege", "--format", format]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(needle), "{format}: {text}");
    }
    let http = b.http();
    for bad in [
        "since=forever",
        "since=0s",
        "since=400d",
        "format=pdf",
        "agent=No%20Such",
        "colour=red",
    ] {
        let resp = http
            .get(b.url(&format!("/v1/reports/least-privilege?{bad}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{bad}: {body}"
        );
    }
    let anon = http
        .get(b.url("/v1/reports/least-privilege"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);

    // One command: the proposal installed as the shadow set, and written
    // out with its test cases, which pass.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("proposal");
    let out = b.cli(&[
        "report",
        "least-privilege",
        "--since",
        "1h",
        "--out",
        out_dir.to_str().unwrap(),
        "--install-shadow",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shadow = json(&out);
    assert!(
        shadow["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("sha256:")),
        "{shadow}"
    );
    assert!(
        shadow["files"].get("least-privilege.cedar").is_some(),
        "{shadow}"
    );
    let metrics = http
        .get(b.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("writ_least_privilege_unused_scopes ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let tests = out_dir.join("least-privilege.tests.json");
    let out = b.cli(&["policy", "test", tests.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Made live: the recorded legitimate calls pass, the broad ones the
    // old set allowed are denied.
    let out = b.cli(&["policy", "push", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inst = b.attest("reporter").await.access_token;
    let t = b.start_task(&inst, &["crm:read"]).await.unwrap();
    let tok = b
        .anon()
        .exchange(&t.access_token, None, Some("crm"), Some("read"))
        .await
        .unwrap()
        .access_token;
    // Once the gateway holds the new set, the broad call is refused...
    let admin = format!("{}/crm/admin", b.gateway);
    assert!(
        eventually(Duration::from_secs(10), || async {
            call(reqwest::Method::GET, &admin, &tok).await == 403
        })
        .await,
        "the gateway never took the proposed set"
    );
    // ...and the recorded one still passes.
    assert_eq!(call(reqwest::Method::GET, &customers, &tok).await, 200);
    assert_eq!(call(reqwest::Method::POST, &customers, &tok).await, 403);
    // The sub-agent, handed only what it used, still reads its customer,
    // and nothing else.
    let helper = b.attest("helper").await.access_token;
    let child = b
        .anon()
        .delegate(&t.access_token, &helper, None, Some("crm"), None)
        .await
        .unwrap()
        .access_token;
    let helper_tok = b
        .anon()
        .exchange(&child, None, Some("crm"), Some("read"))
        .await
        .unwrap()
        .access_token;
    assert_eq!(call(reqwest::Method::GET, &one, &helper_tok).await, 200);
    assert_eq!(
        call(reqwest::Method::GET, &customers, &helper_tok).await,
        403
    );
    assert!(
        b.start_task(&helper, &["crm:read"]).await.is_err(),
        "it never started tasks"
    );
    assert!(b.start_task(&inst, &["crm:write"]).await.is_err());
    assert!(b.start_task(&inst, &["ledger:read"]).await.is_err());
}
