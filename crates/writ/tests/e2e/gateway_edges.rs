//! The gateway at its edges, as an agent or a stolen gateway credential
//! meets them: upstreams that fail, paths spelled to mean something else
//! upstream, MCP sessions as a shared resource, and what a gateway
//! credential may read and record at the broker.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use writ_core::api::{RegisterTool, Upstream};

use crate::harness::{Broker, eventually};

/// Registers `name` with `upstream` (and `attrs`), then waits until the
/// embedded gateway serves it.
async fn tool(b: &Broker, name: &str, scopes: &[&str], attrs: &[(&str, &str)], up: Upstream) {
    b.admin()
        .register_tool(&RegisterTool {
            name: name.parse().unwrap(),
            audience: format!("https://{name}.example"),
            scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            upstream: Some(up),
            gateway: None,
        })
        .await
        .unwrap();
    let url = format!("{}/.well-known/oauth-protected-resource/{name}", b.gateway);
    assert!(
        eventually(Duration::from_secs(10), || async {
            reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the gateway never saw tool {name}"
    );
}

/// Registers `name`, an MCP server on stdio run with `command`, with one
/// scope, `echo`.
async fn stdio_tool(b: &Broker, name: &str, command: Vec<String>, require_secret: bool) {
    let up = Upstream::McpStdio {
        command,
        origins: Vec::new(),
        require_secret,
    };
    tool(b, name, &["echo"], &[("protocol", "mcp")], up).await;
}

/// A tool token for `tool` with `scope`, under `task_token`'s task.
pub(crate) async fn exchange(b: &Broker, task_token: &str, tool: &str, scope: &str) -> String {
    b.anon()
        .exchange(task_token, None, Some(tool), Some(scope))
        .await
        .unwrap()
        .access_token
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A server that answers every connection with bytes that are neither
/// HTTP nor TLS, then hangs up.
async fn garbage_server() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(b"SSH-2.0-nothing-like-http\r\n\r\n").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

async fn mcp_post(url: &str, token: &str, body: &str, session: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    r.send().await.unwrap()
}

/// Every way an upstream can fail (refused connection, an answer that is
/// not HTTP, a TLS handshake with something that is not TLS, an MCP server
/// that cannot be reached or started) is a 502 naming the tool, and never
/// the upstream's address, path or command.
#[tokio::test]
async fn h13_upstream_failures_name_the_tool_never_its_address() {
    let b = Broker::start();
    let closed = closed_port();
    let garbage = garbage_server().await;
    let base = "internal-base-h13";
    let http = |url: String| Upstream::Http {
        url,
        require_secret: false,
        txn_token_only: false,
    };
    tool(
        &b,
        "down",
        &["read"],
        &[],
        http(format!("http://127.0.0.1:{closed}/{base}")),
    )
    .await;
    tool(
        &b,
        "garbled",
        &["read"],
        &[],
        http(format!("http://{garbage}/{base}")),
    )
    .await;
    tool(
        &b,
        "nottls",
        &["read"],
        &[],
        http(format!("https://{garbage}/{base}")),
    )
    .await;
    tool(
        &b,
        "mcpdown",
        &["echo"],
        &[("protocol", "mcp")],
        Upstream::Mcp {
            url: format!("http://127.0.0.1:{closed}/{base}"),
            require_secret: false,
            origins: Vec::new(),
            txn_token_only: false,
        },
    )
    .await;
    stdio_tool(
        &b,
        "mcpmissing",
        vec![format!("/nonexistent/{base}/server"), "--flag".into()],
        false,
    )
    .await;
    let inst = b.attest("demo-agent").await.access_token;
    let task = b
        .start_task(
            &inst,
            &[
                "down:read",
                "garbled:read",
                "nottls:read",
                "mcpdown:echo",
                "mcpmissing:echo",
            ],
        )
        .await
        .unwrap()
        .access_token;
    let (garbage_host, garbage_port) = garbage.split_once(':').unwrap();
    let leaks = |body: &str| -> Vec<String> {
        [
            base.to_owned(),
            closed.to_string(),
            garbage_port.to_owned(),
            garbage_host.to_owned(),
            "http://".into(),
            "https://".into(),
            "/nonexistent".into(),
        ]
        .into_iter()
        .filter(|s| body.contains(s.as_str()))
        .collect()
    };
    for name in ["down", "garbled", "nottls"] {
        let tok = exchange(&b, &task, name, "read").await;
        let r = reqwest::Client::new()
            .get(format!("{}/{name}/customers/42", b.gateway))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{name}");
        let body = r.text().await.unwrap();
        assert!(body.contains(&format!("tool {name}")), "{name}: {body}");
        assert!(
            leaks(&body).is_empty(),
            "{name} leaks {:?}: {body}",
            leaks(&body)
        );
    }
    for name in ["mcpdown", "mcpmissing"] {
        let tok = exchange(&b, &task, name, "echo").await;
        let r = mcp_post(&format!("{}/{name}", b.gateway), &tok, INITIALIZE, None).await;
        assert_eq!(r.status(), 502, "{name}");
        let body = r.text().await.unwrap();
        assert!(body.contains(&format!("tool {name}")), "{name}: {body}");
        assert!(
            leaks(&body).is_empty(),
            "{name} leaks {:?}: {body}",
            leaks(&body)
        );
    }
}

/// A stdio MCP server whose key comes from writ (`--require-secret`) is
/// not started while the gateway does not hold the key: it would run
/// keyless for the whole session. The initialize is refused with 503, and
/// the server's command never ran.
#[tokio::test]
async fn a_stdio_server_that_needs_its_key_is_never_started_without_it() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    stdio_tool(
        &b,
        "keyed",
        vec![
            "sh".into(),
            "-c".into(),
            "touch \"$0\"; cat".into(),
            ran.to_str().unwrap().into(),
        ],
        true,
    )
    .await;
    let inst = b.attest("demo-agent").await.access_token;
    let task = b
        .start_task(&inst, &["keyed:echo"])
        .await
        .unwrap()
        .access_token;
    let tok = exchange(&b, &task, "keyed", "echo").await;
    let r = mcp_post(&format!("{}/keyed", b.gateway), &tok, INITIALIZE, None).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("secret of keyed"), "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ran.exists(), "the server was started without its key");
}

/// A request sent byte for byte as written (HTTP clients normalise dot
/// segments and backslashes before sending): the status code.
async fn raw_get(gateway: &str, target: &str, token: &str) -> u16 {
    use tokio::io::AsyncReadExt as _;
    let addr = gateway.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {target}: {text}"))
}

const ADMIN_FORBIDDEN: &str = r#"
@id("start") permit (principal, action == Action::"StartTask", resource);
@id("exchange") permit (principal, action == Action::"ExchangeToken", resource);
@id("reads") permit (principal, action == Action::"CallTool", resource)
when { context.request.method == "GET" };
@id("no-admin") forbid (principal, action == Action::"CallTool", resource)
when { context.request.path like "/admin*" };
"#;

/// A path-based `forbid` cannot be walked around: every traversal spelling
/// a Tomcat/Spring-family upstream would resolve into `/admin` (path
/// parameters, encoded and double-encoded dots and slashes, backslashes,
/// overlong UTF-8) is refused with 400 and reaches nothing; what is
/// forwarded is exactly the path policy decided on.
#[tokio::test]
async fn h8_semicolon_segments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), ADMIN_FORBIDDEN).unwrap();
    let b = Broker::start_with(crate::harness::Opts {
        policy_dir: Some(dir.path().to_owned()),
        ..Default::default()
    });
    let up = crate::one_answer::recorder().await;
    tool(
        &b,
        "crm",
        &["read"],
        &[],
        Upstream::Http {
            url: format!("{}/app/public", up.url),
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    let inst = b.attest("demo-agent").await.access_token;
    let task = b
        .start_task(&inst, &["crm:read"])
        .await
        .unwrap()
        .access_token;
    let tok = exchange(&b, &task, "crm", "read").await;

    assert_eq!(raw_get(&b.gateway, "/crm/reports/1", &tok).await, 200);
    assert_eq!(raw_get(&b.gateway, "/crm/admin/users", &tok).await, 403);
    for target in [
        "/crm/..;/admin/users",
        "/crm/..;jsessionid=x/admin/users",
        "/crm/..%3B/admin/users",
        "/crm/..%3b/admin/users",
        "/crm/.;/..;/admin/users",
        "/crm/reports;jsessionid=abc/..;/admin/users",
        "/crm/reports;x=1",
        "/crm/%2e%2e/admin/users",
        "/crm/%2E./admin/users",
        "/crm/reports%2f..%2fadmin",
        "/crm/reports%5c..%5cadmin",
        "/crm/reports\\..\\admin",
        "/crm/%252e%252e/admin/users",
        "/crm/%252fadmin",
        "/crm/%c0%ae%c0%ae/admin/users",
        "/crm/%u002e%u002e/admin/users",
        "/crm/admin%00/users",
        "/crm/../admin/users",
        "/crm//admin/users",
    ] {
        let status = raw_get(&b.gateway, target, &tok).await;
        assert_eq!(status, 400, "{target}");
    }
    let seen: Vec<String> = up.requests().into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(
        seen,
        ["/app/public/reports/1"],
        "only the allowed call reached the upstream, with exactly its path"
    );
}

/// A minimal MCP server on stdio: writes its PID to `$1`, then answers
/// every request (a line with a numeric `id`) with an empty result.
const MCP_SH: &str = r#"echo $$ >> "$1"
while IFS= read -r line; do
  id=$(printf '%s\n' "$line" | sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p')
  if [ -n "$id" ]; then
    printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"sh","version":"1"}}}\n' "$id"
  fi
done"#;

/// The PIDs of the MCP servers started so far, in order.
fn pids(file: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Opens an MCP session on `tool` with `token`: the status and session id.
async fn open_session(b: &Broker, tool: &str, token: &str) -> (u16, Option<String>) {
    let r = mcp_post(&format!("{}/{tool}", b.gateway), token, INITIALIZE, None).await;
    let sid = r
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), sid)
}

/// A task of `instance` on the stdio tool and a tool token for it.
async fn mcp_task(b: &Broker, instance: &str) -> (writ_core::TaskId, String) {
    let t = b.start_task(instance, &["shmcp:echo"]).await.unwrap();
    let tok = exchange(b, &t.access_token, "shmcp", "echo").await;
    (t.task_id, tok)
}

/// Stdio MCP sessions are processes shared by every agent: one agent gets
/// at most 32 however many tasks it starts, so another still gets one; and
/// a session's process is killed when its task ends or its agent is
/// quarantined, not ten idle minutes later, which also frees its place.
#[tokio::test]
async fn h6_one_agent_cannot_take_every_mcp_session() {
    let b = Broker::start();
    b.agent("other-agent", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    stdio_tool(
        &b,
        "shmcp",
        vec![
            "sh".into(),
            "-c".into(),
            MCP_SH.into(),
            "mcp-sh".into(),
            pid_file.to_str().unwrap().into(),
        ],
        false,
    )
    .await;

    // One agent, four tasks, eight sessions each: its whole share.
    let inst = b.attest("demo-agent").await.access_token;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (task, tok) = mcp_task(&b, &inst).await;
        for _ in 0..8 {
            let (status, sid) = open_session(&b, "shmcp", &tok).await;
            assert_eq!(status, 200);
            assert!(sid.is_some());
        }
        tasks.push((task, tok));
    }
    assert_eq!(pids(&pid_file).len(), 32);
    // A fifth task gets none...
    let (_fifth, fifth_tok) = mcp_task(&b, &inst).await;
    let r = mcp_post(
        &format!("{}/shmcp", b.gateway),
        &fifth_tok,
        INITIALIZE,
        None,
    )
    .await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("an agent may have at most 32"),
        "{p}"
    );
    assert_eq!(pids(&pid_file).len(), 32, "no process was started for it");
    // ...while another agent still does.
    let other = b.attest("other-agent").await.access_token;
    let (_other_task, other_tok) = mcp_task(&b, &other).await;
    let (status, other_sid) = open_session(&b, "shmcp", &other_tok).await;
    assert_eq!(status, 200);
    let other_pid = *pids(&pid_file).last().unwrap();

    // The first task ends: its eight processes are killed at once...
    let first: Vec<u32> = pids(&pid_file)[..8].to_vec();
    assert!(first.iter().all(|p| running(*p)));
    b.as_token(&inst).complete(&tasks[0].0).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            first.iter().all(|p| !running(*p))
        })
        .await,
        "the ended task's MCP servers are still running"
    );
    assert!(pids(&pid_file)[8..32].iter().all(|p| running(*p)));
    // ...and the agent has room again.
    let (status, _) = open_session(&b, "shmcp", &fifth_tok).await;
    assert_eq!(status, 200);

    // Quarantine: the other agent's session goes too, and its session id
    // answers nothing any more (its token is revoked as well).
    b.admin()
        .quarantine(&"other-agent".parse().unwrap())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { !running(other_pid) }).await,
        "a quarantined agent's MCP server is still running"
    );
    let r = mcp_post(
        &format!("{}/shmcp", b.gateway),
        &other_tok,
        r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        other_sid.as_deref(),
    )
    .await;
    assert_eq!(r.status(), 401);
}

/// Registers `name` (plain HTTP to `url`), bound to `gateway`.
pub(crate) async fn tool_on(b: &Broker, name: &str, url: &str, gateway: Option<&str>) {
    b.admin()
        .register_tool(&RegisterTool {
            name: name.parse().unwrap(),
            audience: format!("https://{name}.example"),
            scopes: vec!["read".parse().unwrap()],
            attributes: BTreeMap::new(),
            upstream: Some(Upstream::Http {
                url: url.into(),
                require_secret: false,
                txn_token_only: false,
            }),
            gateway: gateway.map(str::to_owned),
        })
        .await
        .unwrap();
}

async fn gateway_get(b: &Broker, path: &str, token: &str) -> (u16, String) {
    let r = b
        .http()
        .get(b.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A gateway credential reads the upstream secrets of the tools bound to
/// it and of no other tool; a gateway routes only its own tools; an
/// unbound tool is the embedded gateway's.
#[tokio::test]
async fn h11_a_gateway_reads_only_the_secrets_of_the_tools_it_serves() {
    let b = Broker::start();
    let edge1 = b.admin().register_gateway("edge-1").await.unwrap().token;
    let edge2 = b.admin().register_gateway("edge-2").await.unwrap().token;
    let up = crate::one_answer::recorder().await;
    // With the CLI, as a user binds a tool to a gateway.
    let out = b.cli(&[
        "tool",
        "register",
        "crm",
        "--audience",
        "https://crm.example",
        "--scope",
        "read",
        "--upstream",
        &up.url,
        "--gateway",
        "edge-1",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(crate::harness::json(&out)["gateway"], "edge-1");
    tool_on(&b, "erp", &up.url, Some("edge-2")).await;
    tool(
        &b,
        "wiki",
        &["read"],
        &[],
        Upstream::Http {
            url: up.url.clone(),
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    for name in ["crm", "erp", "wiki"] {
        b.admin()
            .set_tool_secret(
                name,
                &writ_core::api::SetToolSecret {
                    header: "x-api-key".into(),
                    value: format!("{name}-canary"),
                },
            )
            .await
            .unwrap();
    }
    for (token, mine) in [(&edge1, "crm"), (&edge2, "erp")] {
        let (status, body) = gateway_get(&b, "/v1/gateway/secrets", token).await;
        assert_eq!(status, 200);
        let secrets: Value = serde_json::from_str(&body).unwrap();
        let tools: Vec<&str> = secrets
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["tool"].as_str().unwrap())
            .collect();
        assert_eq!(tools, [mine], "{body}");
        for other in ["crm", "erp", "wiki"].into_iter().filter(|o| *o != mine) {
            assert!(!body.contains(&format!("{other}-canary")), "{body}");
        }
        let (_, bundle) = gateway_get(&b, "/v1/gateway/bundle", token).await;
        let bundle: Value = serde_json::from_str(&bundle).unwrap();
        assert_eq!(
            bundle["gateway"],
            if mine == "crm" { "edge-1" } else { "edge-2" }
        );
    }

    // Bindings that cannot be: a malformed name, a tool no gateway serves.
    for bad in [
        json!({"name": "x1", "audience": "https://x1.example", "scopes": ["read"],
               "upstream": {"kind": "http", "url": up.url}, "gateway": "edge 1"}),
        json!({"name": "x2", "audience": "https://x2.example", "scopes": ["read"],
               "gateway": "edge-1"}),
        json!({"name": "x3", "audience": "https://x3.example", "scopes": ["read"],
               "upstream": {"kind": "postgres", "grants": []}, "gateway": "edge-1"}),
    ] {
        let r = b
            .http()
            .post(b.url("/v1/tools"))
            .bearer_auth(crate::harness::ADMIN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }

    // The embedded gateway serves wiki, not crm; edge-1 serves crm, not wiki.
    let meta = |gw: &str, t: &str| format!("{gw}/.well-known/oauth-protected-resource/{t}");
    assert_eq!(
        reqwest::get(meta(&b.gateway, "crm"))
            .await
            .unwrap()
            .status(),
        404
    );
    let spool = tempfile::tempdir().unwrap();
    let gw = crate::gateway::standalone(&b.addr, &edge1, spool.path());
    assert!(
        eventually(Duration::from_secs(10), || async {
            reqwest::get(meta(&gw.url, "crm"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
    );
    assert_eq!(
        reqwest::get(meta(&gw.url, "wiki")).await.unwrap().status(),
        404
    );
    let inst = b.attest("demo-agent").await.access_token;
    let task = b
        .start_task(&inst, &["crm:read", "wiki:read"])
        .await
        .unwrap()
        .access_token;
    let crm = exchange(&b, &task, "crm", "read").await;
    let wiki = exchange(&b, &task, "wiki", "read").await;
    let get = |url: String, tok: String| async move {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(tok)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get(format!("{}/crm/a", gw.url), crm.clone()).await, 200);
    assert_eq!(get(format!("{}/wiki/a", gw.url), wiki.clone()).await, 404);
    assert_eq!(get(format!("{}/crm/a", b.gateway), crm).await, 404);
    assert_eq!(
        get(format!("{}/wiki/a", b.gateway), wiki.clone()).await,
        200
    );

    // A tool registered before bindings existed (or bound by mistake) moves
    // to another gateway, secret and all.
    let out = b.cli(&["tool", "bind", "wiki", "--gateway", "edge-1"]);
    assert!(out.status.success(), "{out:?}");
    let (_, body) = gateway_get(&b, "/v1/gateway/secrets", &edge1).await;
    assert!(body.contains("wiki-canary"), "{body}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(format!("{}/wiki/a", gw.url), wiki.clone()).await == 200
                && get(format!("{}/wiki/a", b.gateway), wiki.clone()).await == 404
        })
        .await,
        "the tool did not move to edge-1"
    );
    let out = b.cli(&["tool", "bind", "nope", "--gateway", "edge-1"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // Only an admin binds: a gateway cannot take another's tools.
    let r = b
        .http()
        .put(b.url("/v1/tools/erp/gateway"))
        .bearer_auth(&edge1)
        .json(&json!({"gateway": "edge-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// The claims of a token (unverified: the test made it).
pub(crate) fn claims(token: &str) -> Value {
    writ_core::token::insecure_peek(token).unwrap().1
}

/// A decision record is recorded as one only for a tool token writ issued,
/// for a tool the delivering gateway serves, naming that token's own agent,
/// instance, task and human, decided while it was valid. An invented record
/// is kept as a `failure` naming no one, so it counts against no agent.
#[tokio::test]
async fn h11_a_gateway_records_only_decisions_it_could_have_made() {
    let b = Broker::start();
    b.agent("victim", &[]).await;
    let edge = b.admin().register_gateway("edge-1").await.unwrap().token;
    let up = crate::one_answer::recorder().await;
    tool_on(&b, "crm", &up.url, Some("edge-1")).await;
    tool_on(&b, "wiki", &up.url, None).await;
    let inst = b.attest("demo-agent").await.access_token;
    let t = b
        .start_task(&inst, &["crm:read", "wiki:read"])
        .await
        .unwrap();
    let crm = claims(&exchange(&b, &t.access_token, "crm", "read").await);
    let wiki = claims(&exchange(&b, &t.access_token, "wiki", "read").await);
    let now = writ_core::Clock::now(&writ_core::SystemClock).millis();
    let record = |c: &Value, tool: &str, agent: &str, obo: Option<&str>, decided_at: i64| {
        let mut r = json!({
            "kind": "tool_call",
            "outcome": "deny",
            "actor": "admin",
            "agent": agent,
            "instance": c["client_id"],
            "task": c["task"],
            "jti": c["jti"],
            "reason": "refused",
            "detail": {"tool": tool, "method": "GET", "path": "/x", "decided_at": decided_at},
        });
        if let Some(h) = obo {
            r["on_behalf_of"] = json!(h);
        }
        r
    };
    let invented = json!({
        "client_id": crm["client_id"], "task": crm["task"], "jti": "made-up-jti",
    });
    let batch = json!({"first_seq": 1, "decisions": [
        record(&crm, "crm", "demo-agent", None, now),
        record(&invented, "crm", "victim", None, now),
        record(&wiki, "wiki", "demo-agent", None, now),
        record(&wiki, "crm", "demo-agent", None, now),
        record(&crm, "crm", "victim", None, now),
        record(&crm, "crm", "demo-agent", Some("user:mallory"), now),
        record(&crm, "crm", "demo-agent", None, now - 86_400_000),
    ]});
    let r = b
        .http()
        .post(b.url("/v1/gateway/decisions"))
        .bearer_auth(&edge)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["acked"], 7, "the gateway's numbering moves on");

    let page = b.admin().audit(0, 10_000).await.unwrap();
    let calls: Vec<writ_core::audit::AuditEvent> = page
        .records
        .iter()
        .map(|r| r.parsed().unwrap())
        .filter(|e| e.kind == writ_core::audit::AuditKind::ToolCall)
        .collect();
    assert_eq!(calls.len(), 7);
    assert!(calls.iter().all(|e| e.actor == "gateway:edge-1"));
    let (kept, refused) = calls.split_at(1);
    assert_eq!(kept[0].outcome, writ_core::audit::Outcome::Deny);
    assert_eq!(kept[0].agent.as_deref(), Some("demo-agent"));
    for e in refused {
        assert_eq!(e.outcome, writ_core::audit::Outcome::Failure, "{e:?}");
        assert_eq!((&e.agent, &e.task, &e.on_behalf_of), (&None, &None, &None));
        assert!(
            e.reason.as_deref().unwrap().contains("could not have made"),
            "{e:?}"
        );
    }
    assert_eq!(refused[0].detail["claimed"]["agent"], "victim");
    let counts = crate::one_answer::counts(&b.addr, &edge).await;
    assert_eq!(counts.get("demo-agent").copied(), Some(1));
    assert_eq!(counts.get("victim").copied().unwrap_or(0), 0);

    // Nor does it hold calls for approval on a tool it does not serve.
    let hold = |tool: &str| {
        json!({"task": t.task_id, "scopes": ["read"], "call": {
            "tool": tool, "agent": "demo-agent", "method": "PUT", "path": "/x", "window_secs": 0}})
    };
    let r = b
        .http()
        .post(b.url("/v1/gateway/approvals"))
        .bearer_auth(&edge)
        .json(&hold("wiki"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// A gateway credential that follows the revocation feed from an old
/// sequence, again and again, does not hold acknowledgements up: only
/// followers that keep up are waited for.
#[tokio::test]
async fn h11_a_stale_follower_does_not_delay_revocations() {
    let b = Broker::start();
    let rogue = b.admin().register_gateway("rogue").await.unwrap().token;
    let inst = b.attest("demo-agent").await.access_token;
    let t = b.start_task(&inst, &["tickets:read"]).await.unwrap();
    b.as_token(&inst).complete(&t.task_id).await.unwrap();
    let url = b.url("/v1/revocations?after=0&wait_ms=30000&follower=rogue");
    let follower = tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let _ = http.get(&url).bearer_auth(&rogue).send().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let t = b.start_task(&inst, &["tickets:read"]).await.unwrap();
        let started = std::time::Instant::now();
        b.as_token(&inst).complete(&t.task_id).await.unwrap();
        fastest = fastest.min(started.elapsed());
    }
    follower.abort();
    assert!(
        fastest < Duration::from_millis(1000),
        "a stale follower held the acknowledgement up for {fastest:?}"
    );
}
