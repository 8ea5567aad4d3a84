//! Calls a permit holds for a person: held at the gateway and in AuthZEN on
//! one approval, let through once (or for a window) when approved.

use super::*;

#[tokio::test]
async fn a_held_gateway_call_is_not_forwarded_until_approved_then_passes_once() {
    let (b, _dir) = broker();
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    let gw = observer(&b).await;
    let (task, tok) = tool_token(&b, "crm", &["read", "write"]).await;

    assert_eq!(call(&b, "GET", "/crm/customers/1", &tok).await.0, 200);
    assert_eq!(up.requests().len(), 1);

    // The PUT is held: 403 naming the approval, nothing forwarded; asking
    // again finds the same pending approval.
    let (status, problem) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 403, "{problem}");
    let first = approval_of(&problem);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("held for approval"),
        "{problem}"
    );
    assert_eq!(problem["determining_policies"], json!(["puts-once"]));
    let (status, again) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 403);
    assert_eq!(
        approval_of(&again),
        first,
        "the same call, the same approval"
    );
    assert_eq!(up.requests().len(), 1, "a held call reaches nobody");

    // Approvers see the call.
    let listed = pending_approvals(&b).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let a = &listed[0];
    assert_eq!(a["approval_id"], first.as_str());
    assert_eq!(a["task_id"], task.as_str());
    assert_eq!(a["call"]["tool"], "crm");
    assert_eq!(a["call"]["agent"], "demo-agent");
    assert_eq!(a["call"]["method"], "PUT");
    assert_eq!(a["call"]["path"], "/customers/1");
    assert_eq!(a["call"]["window_secs"], 0);
    let cli = json(&b.cli(&["approval", "list"]));
    assert_eq!(cli[0]["call"]["path"], "/customers/1", "{cli}");

    // AuthZEN, asked about the same request, holds it on the same approval.
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &http_question(&task, "PUT", "/customers/1"),
    )
    .await;
    assert_eq!(d["decision"], false, "{d}");
    assert_eq!(d["context"]["reason"], "approval_required");
    assert_eq!(d["context"]["approval_id"], first.as_str());
    assert_eq!(pending_approvals(&b).await.len(), 1, "no second approval");

    // Approved: the same call passes, once.
    let out = b.cli(&["approval", "approve", &first, "--reason", "ticket CHG-7"]);
    assert!(out.status.success(), "{out:?}");
    // Asking AuthZEN about the approved call, without saying it enforces
    // the answer, sees the approval and does not use it up.
    for _ in 0..2 {
        let d = post(
            &b,
            "/access/v1/evaluation",
            ADMIN,
            &http_question(&task, "PUT", "/customers/1"),
        )
        .await;
        assert_eq!(d["decision"], true, "{d}");
        assert_eq!(d["context"]["approval_id"], first.as_str());
    }
    let (status, body) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 200, "{body}");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        ("PUT", "/customers/1")
    );

    // Used up: the identical call is held again, on a new approval, which
    // AuthZEN names too.
    let (status, problem) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 403, "{problem}");
    let second = approval_of(&problem);
    assert_ne!(second, first, "a once-only approval is not reused");
    assert_eq!(up.requests().len(), 2);
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &http_question(&task, "PUT", "/customers/1"),
    )
    .await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["approval_id"], second.as_str());

    // A different call is a different approval; denied, it stays refused,
    // at the gateway and in AuthZEN.
    let (status, problem) = call(&b, "PUT", "/crm/customers/2", &tok).await;
    assert_eq!(status, 403);
    let other = approval_of(&problem);
    assert_ne!(other, second);
    let denied = post(
        &b,
        &format!("/v1/approvals/{other}/deny"),
        ADMIN,
        &json!({"reason": "not during the freeze"}),
    )
    .await;
    assert_eq!(denied["status"], "denied");
    for _ in 0..2 {
        let (status, problem) = call(&b, "PUT", "/crm/customers/2", &tok).await;
        assert_eq!(status, 403);
        assert_eq!(approval_of(&problem), other, "a denial is not re-asked");
        assert!(
            problem["detail"].as_str().unwrap().contains("denied"),
            "{problem}"
        );
    }
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &http_question(&task, "PUT", "/customers/2"),
    )
    .await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["reason"], "approval_denied");
    assert_eq!(d["context"]["approval_id"], other.as_str());
    assert!(
        up.requests().iter().all(|(_, p, _)| p != "/customers/2"),
        "a denied call never reached the upstream"
    );

    // None of the held calls counted against the agent; a refusal does,
    // once the gateway has delivered it.
    let admin = b.admin();
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin
                .audit(0, 10_000)
                .await
                .unwrap()
                .records
                .iter()
                .filter(|r| r.event.contains("\"held\":true"))
                .count()
                >= 6
        })
        .await,
        "the held calls were not delivered"
    );
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 0);
    assert_eq!(call(&b, "DELETE", "/crm/customers/1", &tok).await.0, 403);
    assert!(
        eventually(Duration::from_secs(10), || async {
            count_of(&counts(&b.addr, &gw).await, "demo-agent") == 1
        })
        .await,
        "a refused gateway call was not counted once delivered"
    );
}

#[tokio::test]
async fn a_call_that_cannot_be_held_is_refused_but_not_counted() {
    let (b, _dir) = broker();
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    let gw = observer(&b).await;
    let (_task, tok) = tool_token(&b, "crm", &["read", "write"]).await;
    let limit = 16;
    for n in 0..limit {
        let (status, problem) = call(&b, "PUT", &format!("/crm/customers/{n}"), &tok).await;
        assert_eq!(status, 403, "{problem}");
        approval_of(&problem);
    }
    // One more distinct call: the task already has as many calls waiting
    // as it may, so this one cannot be held. It is refused, names no
    // approval, and, held or not, is not misbehaviour.
    let (status, problem) = call(&b, "PUT", "/crm/customers/overflow", &tok).await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem.get("approval_id").is_none(), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be asked for now"),
        "{problem}"
    );
    assert_eq!(pending_approvals(&b).await.len(), limit);
    assert!(up.requests().is_empty(), "nothing was forwarded");
    delivered(&b.gateway).await;
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 0);
}

#[tokio::test]
async fn an_approval_window_lets_the_same_call_through_repeatedly() {
    let (b, _dir) = broker();
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    let (task, tok) = tool_token(&b, "crm", &["read", "write"]).await;

    let (status, problem) = call(&b, "PUT", "/crm/windowed/1?force=1", &tok).await;
    assert_eq!(status, 403);
    let id = approval_of(&problem);
    let listed = pending_approvals(&b).await;
    assert_eq!(listed[0]["call"]["window_secs"], 300);
    assert_eq!(listed[0]["call"]["query"], "force=1");
    b.admin()
        .decide_approval(&id.parse().unwrap(), true, "for the migration")
        .await
        .unwrap();

    // Within the window AuthZEN says yes (and asking uses nothing up)...
    let mut q = http_question(&task, "PUT", "/windowed/1");
    q["context"]["request"]["query"] = json!("force=1");
    for _ in 0..2 {
        let d = post(&b, "/access/v1/evaluation", ADMIN, &q).await;
        assert_eq!(d["decision"], true, "{d}");
        assert_eq!(d["context"]["approval_id"], id.as_str());
    }
    // ...and the gateway lets the same call through, again and again.
    for _ in 0..3 {
        assert_eq!(
            call(&b, "PUT", "/crm/windowed/1?force=1", &tok).await.0,
            200
        );
    }
    assert_eq!(up.requests().len(), 3);
    // Another query is another call.
    let (status, problem) = call(&b, "PUT", "/crm/windowed/1?force=2", &tok).await;
    assert_eq!(status, 403);
    assert_ne!(approval_of(&problem), id);
    assert_eq!(up.requests().len(), 3);

    // A window ends: the call needs a new approval.
    let (_, problem) = call(&b, "PUT", "/crm/brief/1", &tok).await;
    let brief = approval_of(&problem);
    b.admin()
        .decide_approval(&brief.parse().unwrap(), true, "two seconds")
        .await
        .unwrap();
    assert_eq!(call(&b, "PUT", "/crm/brief/1", &tok).await.0, 200);
    assert_eq!(call(&b, "PUT", "/crm/brief/1", &tok).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, problem) = call(&b, "PUT", "/crm/brief/1", &tok).await;
    assert_eq!(status, 403, "{problem}");
    assert_ne!(approval_of(&problem), brief, "past its window");
    assert_eq!(up.requests().len(), 5);
}

#[tokio::test]
async fn a_held_mcp_tool_call_is_a_json_rpc_error_naming_the_approval() {
    let (b, _dir) = broker();
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "deployer",
        &["deploy", "status"],
        Upstream::Mcp {
            url,
            require_secret: false,
            origins: Vec::new(),
            txn_token_only: false,
        },
    )
    .await;
    let (task, tok) = tool_token(&b, "deployer", &["deploy", "status"]).await;
    let rpc = |id: u64, tool: &str, args: Value| {
        let tok = tok.clone();
        let url = format!("{}/deployer", b.gateway);
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}
        });
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(tok)
                .header("accept", "application/json, text/event-stream")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };

    let ok = rpc(1, "status", json!({})).await;
    assert!(ok["result"].is_object(), "{ok}");
    assert_eq!(up.requests().len(), 1);

    let held = rpc(2, "deploy", json!({"env": "prod"})).await;
    assert_eq!(held["id"], 2);
    assert_eq!(held["error"]["code"], -32001, "{held}");
    let data = &held["error"]["data"];
    assert_eq!(data["approval_status"], "pending");
    let id = data["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(data["determining_policies"], json!(["mcp-deploys"]));
    assert_eq!(up.requests().len(), 1, "the held call was not forwarded");

    let listed = pending_approvals(&b).await;
    assert_eq!(listed.len(), 1);
    let c = &listed[0]["call"];
    assert_eq!(c["tool"], "deployer");
    assert_eq!(c["mcp_method"], "tools/call");
    assert_eq!(c["mcp_tool"], "deploy");
    assert_eq!(c["arguments"], r#"{"env":"prod"}"#);
    // As for plain HTTP, policy sees the path below the tool's prefix.
    assert_eq!(c["path"], "/", "{c}");

    // AuthZEN, given the same facts, names the same approval.
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &json!({
            "subject": {"type": "agent", "id": "demo-agent"},
            "action": {"name": "CallTool"},
            "resource": {"type": "tool", "id": "deployer", "properties": {"scopes": ["deploy"]}},
            "context": {"task": task, "request": {
                "method": c["method"], "path": c["path"], "mcp_method": "tools/call",
                "mcp_tool": "deploy", "arguments": {"env": "prod"}}}
        }),
    )
    .await;
    assert_eq!(d["decision"], false, "{d}");
    assert_eq!(d["context"]["reason"], "approval_required");
    assert_eq!(d["context"]["approval_id"], id.as_str());

    // Other arguments: another approval.
    let staging = rpc(3, "deploy", json!({"env": "staging"})).await;
    assert_ne!(staging["error"]["data"]["approval_id"], id.as_str());

    b.admin()
        .decide_approval(&id.parse().unwrap(), true, "release 4.2")
        .await
        .unwrap();
    let done = rpc(4, "deploy", json!({"env": "prod"})).await;
    assert_eq!(done["id"], 4);
    assert!(done["result"].is_object(), "{done}");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].2.contains("\"deploy\""), "{:?}", seen[1]);
    // Once only.
    let again = rpc(5, "deploy", json!({"env": "prod"})).await;
    assert_eq!(again["error"]["code"], -32001);
    assert_ne!(again["error"]["data"]["approval_id"], id.as_str());
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn an_undecided_call_approval_expires_and_keeps_refusing() {
    let (b, _dir) = broker_with(&["--approval-ttl", "1"]);
    let up = recorder().await;
    let url = up.url.clone();
    register_tool(
        &b,
        "crm",
        &["read", "write"],
        Upstream::Http {
            url,
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    let (task, tok) = tool_token(&b, "crm", &["read", "write"]).await;
    let (status, problem) = call(&b, "PUT", "/crm/customers/1", &tok).await;
    assert_eq!(status, 403);
    let id = approval_of(&problem);
    let admin = b.admin();
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.approvals(true).await.unwrap()[0].status
                == writ_core::api::ApprovalStatus::Expired
        })
        .await,
        "the approval never expired"
    );
    let e = admin
        .decide_approval(&id.parse().unwrap(), true, "too late")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409));
    for _ in 0..2 {
        let (status, problem) = call(&b, "PUT", "/crm/customers/1", &tok).await;
        assert_eq!(status, 403);
        assert_eq!(
            approval_of(&problem),
            id,
            "an expired approval is not re-asked"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("expired undecided"),
            "{problem}"
        );
    }
    let d = post(
        &b,
        "/access/v1/evaluation",
        ADMIN,
        &http_question(&task, "PUT", "/customers/1"),
    )
    .await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["reason"], "approval_expired");
    assert_eq!(d["context"]["approval_id"], id.as_str());
    assert!(up.requests().is_empty(), "nothing was forwarded");
    assert_eq!(admin.approvals(true).await.unwrap().len(), 1);
}

/// The MCP transport's defence against DNS rebinding, at the gateway: a
/// request a web page makes (it carries `Origin`) reaches the server only
/// from an origin the tool lists; clients that send no `Origin` pass.
#[tokio::test]
async fn an_mcp_request_from_a_web_page_needs_an_allowed_origin() {
    let (b, _dir) = broker();
    let up = recorder().await;
    // An origin must be exactly scheme://host[:port], lower case.
    let bad = b
        .admin()
        .register_tool(&RegisterTool {
            name: "sloppy".parse().unwrap(),
            audience: "urn:mcp:sloppy".into(),
            scopes: vec!["status".parse().unwrap()],
            attributes: Default::default(),
            upstream: Some(Upstream::Mcp {
                url: up.url.clone(),
                require_secret: false,
                origins: vec!["https://App.example/".into()],
                txn_token_only: false,
            }),
            gateway: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400), "{bad}");
    register_tool(
        &b,
        "deployer",
        &["deploy", "status"],
        Upstream::Mcp {
            url: up.url.clone(),
            require_secret: false,
            origins: vec!["https://app.example".into()],
            txn_token_only: false,
        },
    )
    .await;
    let (_task, tok) = tool_token(&b, "deployer", &["status"]).await;
    let send = |origins: &[&str]| {
        let mut r = reqwest::Client::new()
            .post(format!("{}/deployer", b.gateway))
            .bearer_auth(&tok)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "status", "arguments": {}}
            }));
        for o in origins {
            r = r.header("origin", *o);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(&["https://evil.example"]).await, 403);
    assert_eq!(send(&["null"]).await, 403);
    assert_eq!(
        send(&["https://app.example", "https://evil.example"]).await,
        400
    );
    assert!(
        up.requests().is_empty(),
        "a refused page reached the server"
    );
    assert_eq!(send(&["https://app.example"]).await, 200);
    assert_eq!(send(&[]).await, 200);
    assert_eq!(up.requests().len(), 2);
}
