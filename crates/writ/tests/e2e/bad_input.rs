//! Bad input on every endpoint: the right status, the right error form, and
//! no state change.

use reqwest::Method;
use serde_json::json;

use crate::harness::{ADMIN, Broker};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Form {
    /// RFC 9457 problem details.
    Problem,
    /// RFC 6749 §5.2.
    OAuth,
}

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    auth: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    form: Form,
}

fn case(
    what: &'static str,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: serde_json::Value,
    status: u16,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        auth: auth.map(str::to_owned),
        content_type: Some("application/json"),
        body: serde_json::to_vec(&body).unwrap(),
        status,
        form: Form::Problem,
    }
}

fn raw(
    what: &'static str,
    method: Method,
    path: &str,
    auth: Option<&str>,
    ct: Option<&'static str>,
    body: &[u8],
    status: u16,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        auth: auth.map(str::to_owned),
        content_type: ct,
        body: body.to_vec(),
        status,
        form: Form::Problem,
    }
}

fn oauth(mut c: Case) -> Case {
    c.form = Form::OAuth;
    c
}

async fn snapshot(b: &Broker) -> (u64, usize, usize) {
    let head = b.admin().audit_last(1).await.unwrap().next;
    let agents = b.admin().agents().await.unwrap().len();
    let tools = b.admin().tools().await.unwrap().len();
    (head, agents, tools)
}

#[tokio::test]
async fn every_endpoint_refuses_bad_input_cleanly() {
    let b = Broker::start();
    let inst = b.attest("demo-agent").await;
    let it = inst.access_token.as_str();
    let task = b.start_task(it, &["tickets:read"]).await.unwrap();
    let tid = task.task_id.to_string();
    let admin = Some(ADMIN);
    let big = vec![b'x'; 70 * 1024];
    let form = Some("application/x-www-form-urlencoded");
    let expired_looking = "eyJhbGciOiJFZERTQSJ9.eyJleHAiOjF9.c2ln";

    // A StartTask question over AuthZEN with this context: refused whole.
    let question = |what: &'static str, context: serde_json::Value| {
        case(
            what,
            Method::POST,
            "/access/v1/evaluation",
            admin,
            json!({"subject": {"type": "agent", "id": "demo-agent"}, "action": {"name": "StartTask"},
                   "resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read"]}},
                   "context": context}),
            400,
        )
    };

    let cases = vec![
        // /v1/agents
        raw(
            "agents: malformed json",
            Method::POST,
            "/v1/agents",
            admin,
            Some("application/json"),
            b"{\"name\": ",
            400,
        ),
        case(
            "agents: unknown field",
            Method::POST,
            "/v1/agents",
            admin,
            json!({"name": "x", "attestation": {"kind": "join_token"}, "colour": "red"}),
            400,
        ),
        case(
            "agents: wrong type",
            Method::POST,
            "/v1/agents",
            admin,
            json!({"name": 7, "attestation": {"kind": "join_token"}}),
            400,
        ),
        case(
            "agents: bad name",
            Method::POST,
            "/v1/agents",
            admin,
            json!({"name": "../etc", "attestation": {"kind": "join_token"}}),
            400,
        ),
        case(
            "agents: unknown attestation",
            Method::POST,
            "/v1/agents",
            admin,
            json!({"name": "x", "attestation": {"kind": "password"}}),
            400,
        ),
        case(
            "agents: oidc without keys",
            Method::POST,
            "/v1/agents",
            admin,
            json!({"name": "x", "attestation": {"kind": "oidc", "issuer": "https://i", "audience": "a", "subject": "s"}}),
            400,
        ),
        case(
            "agents: oidc unasked alg",
            Method::POST,
            "/v1/agents",
            admin,
            json!({"name": "x", "attestation": {"kind": "oidc", "issuer": "https://i", "jwks_uri": "https://i/k", "audience": "a", "subject": "s", "algorithms": ["HS256"]}}),
            400,
        ),
        case(
            "agents: bad attribute",
            Method::POST,
            "/v1/agents",
            admin,
            json!({"name": "x", "attestation": {"kind": "join_token"}, "attributes": {"Bad Key": "v"}}),
            400,
        ),
        case(
            "agents: duplicate",
            Method::POST,
            "/v1/agents",
            admin,
            json!({"name": "demo-agent", "attestation": {"kind": "join_token"}}),
            409,
        ),
        case(
            "agents: no auth",
            Method::POST,
            "/v1/agents",
            None,
            json!({"name": "x", "attestation": {"kind": "join_token"}}),
            401,
        ),
        case(
            "agents: agent token is not admin",
            Method::POST,
            "/v1/agents",
            Some(it),
            json!({"name": "x", "attestation": {"kind": "join_token"}}),
            401,
        ),
        case(
            "agents: wrong admin token",
            Method::GET,
            "/v1/agents",
            Some("nope"),
            json!(null),
            401,
        ),
        raw(
            "agents: oversized body",
            Method::POST,
            "/v1/agents",
            admin,
            Some("application/json"),
            &big,
            413,
        ),
        raw(
            "agents: not json",
            Method::POST,
            "/v1/agents",
            admin,
            Some("text/plain"),
            b"name=x",
            415,
        ),
        raw(
            "agents: no content type",
            Method::POST,
            "/v1/agents",
            admin,
            None,
            b"{}",
            415,
        ),
        // join tokens, quarantine
        case(
            "join-token: zero ttl",
            Method::POST,
            "/v1/agents/demo-agent/join-tokens",
            admin,
            json!({"ttl": 0}),
            400,
        ),
        case(
            "join-token: negative ttl",
            Method::POST,
            "/v1/agents/demo-agent/join-tokens",
            admin,
            json!({"ttl": -5}),
            400,
        ),
        case(
            "join-token: unknown agent",
            Method::POST,
            "/v1/agents/ghost/join-tokens",
            admin,
            json!({"ttl": 60}),
            404,
        ),
        case(
            "join-token: extra field",
            Method::POST,
            "/v1/agents/demo-agent/join-tokens",
            admin,
            json!({"ttl": 60, "uses": 5}),
            400,
        ),
        raw(
            "quarantine: no auth",
            Method::POST,
            "/v1/agents/demo-agent/quarantine",
            None,
            None,
            b"",
            401,
        ),
        raw(
            "quarantine: bad name",
            Method::POST,
            "/v1/agents/BAD!/quarantine",
            admin,
            None,
            b"",
            400,
        ),
        // tools
        case(
            "tools: no scopes",
            Method::POST,
            "/v1/tools",
            admin,
            json!({"name": "t2", "audience": "https://t2", "scopes": []}),
            400,
        ),
        case(
            "tools: bad scope",
            Method::POST,
            "/v1/tools",
            admin,
            json!({"name": "t2", "audience": "https://t2", "scopes": ["a b"]}),
            400,
        ),
        case(
            "tools: empty audience",
            Method::POST,
            "/v1/tools",
            admin,
            json!({"name": "t2", "audience": "", "scopes": ["read"]}),
            400,
        ),
        case(
            "tools: duplicate",
            Method::POST,
            "/v1/tools",
            admin,
            json!({"name": "tickets", "audience": "https://x", "scopes": ["read"]}),
            409,
        ),
        // attest
        case(
            "attest: unknown field",
            Method::POST,
            "/v1/attest",
            None,
            json!({"agent": "demo-agent", "join_token": "x", "extra": 1}),
            400,
        ),
        case(
            "attest: missing agent",
            Method::POST,
            "/v1/attest",
            None,
            json!({"join_token": "x"}),
            400,
        ),
        // tasks
        case(
            "tasks: no auth",
            Method::POST,
            "/v1/tasks",
            None,
            json!({"intent": "x", "capabilities": [{"tool": "tickets", "scopes": ["read"]}]}),
            401,
        ),
        case(
            "tasks: forged token",
            Method::POST,
            "/v1/tasks",
            Some(expired_looking),
            json!({"intent": "x", "capabilities": [{"tool": "tickets", "scopes": ["read"]}]}),
            401,
        ),
        case(
            "tasks: admin is not an agent",
            Method::POST,
            "/v1/tasks",
            admin,
            json!({"intent": "x", "capabilities": [{"tool": "tickets", "scopes": ["read"]}]}),
            401,
        ),
        case(
            "tasks: unknown field",
            Method::POST,
            "/v1/tasks",
            Some(it),
            json!({"intent": "x", "capabilities": [{"tool": "tickets", "scopes": ["read"]}], "priority": 1}),
            400,
        ),
        case(
            "tasks: capability shape",
            Method::POST,
            "/v1/tasks",
            Some(it),
            json!({"intent": "x", "capabilities": ["tickets:read"]}),
            400,
        ),
        case(
            "tasks: ttl zero",
            Method::POST,
            "/v1/tasks",
            Some(it),
            json!({"intent": "x", "capabilities": [{"tool": "tickets", "scopes": ["read"]}], "ttl": 0}),
            400,
        ),
        case(
            "tasks: obo with spaces",
            Method::POST,
            "/v1/tasks",
            Some(it),
            json!({"intent": "x", "capabilities": [{"tool": "tickets", "scopes": ["read"]}], "on_behalf_of": "alice smith"}),
            400,
        ),
        // AuthZEN questions about writ's own actions: the context holds
        // what a task start would, to the same rules.
        question(
            "authzen: on_behalf_of longer than a task's",
            json!({"intent": "x", "on_behalf_of": "u".repeat(257)}),
        ),
        question(
            "authzen: on_behalf_of with spaces",
            json!({"intent": "x", "on_behalf_of": "alice smith"}),
        ),
        question(
            "authzen: intent with a control character",
            json!({"intent": "read\u{1b}[2J"}),
        ),
        raw(
            "tasks: malformed id",
            Method::GET,
            "/v1/tasks/task_'%20OR%201=1",
            Some(it),
            None,
            b"",
            404,
        ),
        raw(
            "tasks: unknown id",
            Method::POST,
            "/v1/tasks/task_AAAAAAAAAAAAAAAAAAAAAA/heartbeat",
            Some(it),
            None,
            b"",
            404,
        ),
        raw(
            "tasks: heartbeat without auth",
            Method::POST,
            &format!("/v1/tasks/{tid}/heartbeat"),
            None,
            None,
            b"",
            401,
        ),
        raw(
            "tasks: complete with bad scheme",
            Method::POST,
            &format!("/v1/tasks/{tid}/complete"),
            None,
            None,
            b"",
            401,
        ),
        // audit, keys
        raw(
            "audit: bad query",
            Method::GET,
            "/v1/audit?after=banana",
            admin,
            None,
            b"",
            400,
        ),
        raw(
            "audit: unknown query field",
            Method::GET,
            "/v1/audit?colour=red",
            admin,
            None,
            b"",
            400,
        ),
        raw(
            "audit: no auth",
            Method::GET,
            "/v1/audit",
            None,
            None,
            b"",
            401,
        ),
        raw(
            "reports: bad since",
            Method::GET,
            "/v1/reports/least-privilege?since=forever",
            admin,
            None,
            b"",
            400,
        ),
        raw(
            "reports: unknown format",
            Method::GET,
            "/v1/reports/least-privilege?format=pdf",
            admin,
            None,
            b"",
            400,
        ),
        raw(
            "reports: unknown query field",
            Method::GET,
            "/v1/reports/least-privilege?colour=red",
            admin,
            None,
            b"",
            400,
        ),
        raw(
            "evidence: unknown framework",
            Method::GET,
            "/v1/reports/evidence?framework=iso-42001",
            admin,
            None,
            b"",
            400,
        ),
        raw(
            "evidence: no framework",
            Method::GET,
            "/v1/reports/evidence",
            admin,
            None,
            b"",
            400,
        ),
        raw(
            "evidence: unknown format",
            Method::GET,
            "/v1/reports/evidence?framework=nist-csf&format=pdf",
            admin,
            None,
            b"",
            400,
        ),
        raw(
            "evidence: no auth",
            Method::GET,
            "/v1/reports/evidence?framework=nist-csf",
            None,
            None,
            b"",
            401,
        ),
        raw(
            "reports: no auth",
            Method::GET,
            "/v1/reports/least-privilege",
            None,
            None,
            b"",
            401,
        ),
        raw(
            "keys: no auth",
            Method::POST,
            "/v1/keys/rotate",
            None,
            None,
            b"",
            401,
        ),
        // routing
        raw(
            "unknown path",
            Method::GET,
            "/v2/nothing",
            None,
            None,
            b"",
            404,
        ),
        raw(
            "wrong method",
            Method::DELETE,
            "/v1/agents",
            admin,
            None,
            b"",
            405,
        ),
        // OAuth endpoints answer in RFC 6749 form.
        oauth(raw(
            "introspect: no auth",
            Method::POST,
            "/oauth2/introspect",
            None,
            form,
            b"token=x",
            401,
        )),
        oauth(raw(
            "introspect: no token",
            Method::POST,
            "/oauth2/introspect",
            admin,
            form,
            b"",
            400,
        )),
        oauth(raw(
            "introspect: json body",
            Method::POST,
            "/oauth2/introspect",
            admin,
            Some("application/json"),
            b"{\"token\":\"x\"}",
            400,
        )),
        oauth(raw(
            "introspect: oversized",
            Method::POST,
            "/oauth2/introspect",
            admin,
            form,
            &big,
            400,
        )),
        oauth(raw(
            "revoke: no auth",
            Method::POST,
            "/oauth2/revoke",
            None,
            form,
            b"token=x",
            401,
        )),
        oauth(raw(
            "revoke: no token",
            Method::POST,
            "/oauth2/revoke",
            admin,
            form,
            b"",
            400,
        )),
        oauth(raw(
            "token: no grant type",
            Method::POST,
            "/oauth2/token",
            None,
            form,
            b"",
            400,
        )),
        oauth(raw(
            "token: unsupported grant",
            Method::POST,
            "/oauth2/token",
            None,
            form,
            b"grant_type=password&username=a&password=b",
            400,
        )),
    ];

    let before = snapshot(&b).await;
    let http = b.http();
    for c in cases {
        let mut req = http
            .request(c.method.clone(), b.url(&c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(a) = &c.auth {
            req = req.bearer_auth(a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let www = resp.headers().contains_key("www-authenticate");
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        assert_eq!(status, c.status, "{}: {body}", c.what);
        match c.form {
            Form::Problem => {
                assert_eq!(ct, "application/problem+json", "{}", c.what);
                assert_eq!(body["status"], status, "{}", c.what);
                assert!(
                    body["title"].is_string() && body["detail"].is_string(),
                    "{}: {body}",
                    c.what
                );
            }
            Form::OAuth => {
                assert!(ct.starts_with("application/json"), "{}: {ct}", c.what);
                assert!(body["error"].is_string(), "{}: {body}", c.what);
            }
        }
        if status == 401 {
            assert!(www, "{}: 401 without WWW-Authenticate", c.what);
        }
        assert!(
            !body.to_string().contains(ADMIN),
            "{}: echoes a credential",
            c.what
        );
    }
    assert_eq!(snapshot(&b).await, before, "bad input changed state");
    // And the good paths still work.
    assert!(b.active(&task.access_token).await);
}

#[tokio::test]
async fn wrong_type_messages_name_the_field() {
    let b = Broker::start();
    let r = b
        .http()
        .post(b.url("/v1/tools"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "t", "audience": "https://t", "scopes": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("scopes"),
        "{body}"
    );
}
