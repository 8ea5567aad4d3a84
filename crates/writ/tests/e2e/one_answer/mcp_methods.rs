//! Every MCP request is decided with facts of its own, under the shipped
//! example pack: a task holding an MCP server may list and read its
//! resources and prompts (a listing shows only what it may read), while
//! calling a tool still needs the tool's scope; AuthZEN, asked the same
//! question, gives the same answer.

use serde_json::{Value, json};
use writ_core::api::{RegisterTool, Upstream};

use super::{post, recorder};
use crate::harness::{ADMIN, Broker, eventually};

/// An MCP server registered as the example pack expects one
/// (`protocol=mcp`), with the MCP tools `status` and `deploy`.
async fn register(b: &Broker, url: String) {
    b.admin()
        .register_tool(&RegisterTool {
            name: "ops".parse().unwrap(),
            audience: "https://ops.example".into(),
            scopes: ["status", "deploy"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            attributes: [("protocol".to_owned(), "mcp".to_owned())].into(),
            upstream: Some(Upstream::Mcp {
                url,
                require_secret: false,
                origins: Vec::new(),
                txn_token_only: false,
            }),
            gateway: None,
        })
        .await
        .unwrap();
    let meta = format!("{}/.well-known/oauth-protected-resource/ops", b.gateway);
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            reqwest::get(&meta).await.is_ok_and(|r| r.status() == 200)
        })
        .await
    );
}

async fn rpc(b: &Broker, tok: &str, id: u64, method: &str, params: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/ops", b.gateway))
        .bearer_auth(tok)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{method}");
    r.json().await.unwrap()
}

/// AuthZEN's answer to the same MCP request, under `task`, with the token's
/// scopes.
async fn authzen(b: &Broker, task: &writ_core::TaskId, request: Value) -> Value {
    post(
        b,
        "/access/v1/evaluation",
        ADMIN,
        &json!({
            "subject": {"type": "agent", "id": "demo-agent"},
            "action": {"name": "CallTool"},
            "resource": {"type": "tool", "id": "ops", "properties": {"scopes": ["status"]}},
            "context": {"task": task, "request": request}
        }),
    )
    .await
}

#[tokio::test]
async fn a_task_holding_an_mcp_server_reads_its_resources_and_prompts_but_calls_only_its_tools() {
    let b = Broker::start();
    let up = recorder().await;
    register(&b, up.url.clone()).await;
    let inst = b.attest("demo-agent").await.access_token;
    let task = b.start_task(&inst, &["ops:status"]).await.unwrap();
    let tok = b
        .anon()
        .exchange(&task.access_token, None, Some("ops"), Some("status"))
        .await
        .unwrap()
        .access_token;

    // Allowed, and forwarded: the lists, a resource, a prompt, a completion,
    // the log level, and the tool the token holds.
    let allowed = [
        ("resources/list", json!({})),
        ("resources/templates/list", json!({})),
        ("resources/read", json!({"uri": "demo://runbook"})),
        ("resources/subscribe", json!({"uri": "demo://runbook"})),
        ("prompts/list", json!({})),
        (
            "prompts/get",
            json!({"name": "incident", "arguments": {"sev": "2"}}),
        ),
        (
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "incident"},
                   "argument": {"name": "sev", "value": "1"}}),
        ),
        ("logging/setLevel", json!({"level": "debug"})),
        ("tools/call", json!({"name": "status", "arguments": {}})),
    ];
    for (i, (method, params)) in allowed.iter().enumerate() {
        let a = rpc(&b, &tok, i as u64, method, params.clone()).await;
        assert!(a["result"].is_object(), "{method}: {a}");
    }
    assert_eq!(up.requests().len(), allowed.len());

    // A listing shows only what a read would be allowed for.
    let listed = rpc(&b, &tok, 50, "resources/list", json!({})).await;
    assert_eq!(
        listed["result"]["resources"],
        json!([{"uri": "demo://runbook", "name": "runbook"}]),
        "{listed}"
    );

    // Refused, and never forwarded: a tool outside the token's scopes, a
    // host file by URI, a prompt carrying a private key, a method the pack
    // does not name.
    let refused = [
        (
            "tools/call",
            json!({"name": "deploy", "arguments": {}}),
            None,
        ),
        (
            "resources/read",
            json!({"uri": "file:///etc/passwd"}),
            Some("no-host-files"),
        ),
        (
            "prompts/get",
            json!({"name": "incident", "arguments": {"key": "-----BEGIN PRIVATE KEY-----"}}),
            Some("no-private-keys-in-arguments"),
        ),
        ("tasks/list", json!({}), None),
    ];
    for (i, (method, params, policy)) in refused.iter().enumerate() {
        let a = rpc(&b, &tok, 100 + i as u64, method, params.clone()).await;
        assert_eq!(a["error"]["code"], -32001, "{method}: {a}");
        let determining = &a["error"]["data"]["determining_policies"];
        match policy {
            Some(p) => assert_eq!(determining, &json!([p]), "{method}"),
            None => assert_eq!(determining, &json!([]), "{method}"),
        }
    }
    assert_eq!(
        up.requests().len(),
        allowed.len() + 1,
        "nothing refused was forwarded"
    );

    // AuthZEN, asked about the same requests, answers the same, for the
    // same policies.
    let questions = [
        (
            json!({"method": "POST", "path": "/", "mcp_method": "resources/read",
                   "mcp_resource": "demo://runbook"}),
            true,
            "gateway-mcp-reads",
        ),
        (
            json!({"method": "POST", "path": "/", "mcp_method": "prompts/get",
                   "mcp_prompt": "incident", "arguments": {"sev": "2"}}),
            true,
            "gateway-mcp-reads",
        ),
        (
            json!({"method": "POST", "path": "/", "mcp_method": "tools/call",
                   "mcp_tool": "status", "arguments": {}}),
            true,
            "gateway-mcp-calls",
        ),
        (
            json!({"method": "POST", "path": "/", "mcp_method": "resources/read",
                   "mcp_resource": "file:///etc/passwd"}),
            false,
            "no-host-files",
        ),
    ];
    for (request, allow, policy) in questions {
        let d = authzen(&b, &task.task_id, request.clone()).await;
        assert_eq!(d["decision"], allow, "{request}: {d}");
        assert_eq!(
            d["context"]["determining_policies"],
            json!([policy]),
            "{request}: {d}"
        );
    }
    // A tool outside the token's scopes: the gateway refused it before
    // policy, and policy refuses it too.
    let d = authzen(
        &b,
        &task.task_id,
        json!({"method": "POST", "path": "/", "mcp_method": "tools/call",
               "mcp_tool": "deploy", "arguments": {}}),
    )
    .await;
    assert_eq!(d["decision"], false, "{d}");

    // The gateway's records keep each MCP request's arguments as their
    // shape (keys, never a value), and the least-privilege replay decides
    // on them: the live set, replayed, gives every verdict it gave; the
    // refusal whose policy reads the arguments' values is counted, not
    // guessed.
    let audit = || async {
        b.http()
            .get(b.url("/v1/audit?limit=1000"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        eventually(std::time::Duration::from_secs(15), || async {
            audit().await.contains("no-private-keys-in-arguments")
        })
        .await,
        "the gateway's records never reached the chain"
    );
    let text = audit().await;
    assert!(!text.contains("PRIVATE KEY"), "a recorded argument value");
    assert!(text.contains("[redacted]"), "the arguments' shape: {text}");
    let out = b.cli(&["report", "least-privilege", "--format", "json"]);
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let replay = &r["replay"];
    assert_eq!(replay["live_checked"], replay["live_agreed"], "{replay}");
    assert!(
        replay["redacted_dependent"].as_u64().unwrap() >= 1,
        "{replay}"
    );
}
