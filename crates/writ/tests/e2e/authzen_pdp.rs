//! writ as a general AuthZEN PDP, as an application or a gateway meets it:
//! the real binary serving `examples/authzen` over HTTP. The OpenID interop
//! vectors are sent as published, then one test per wire rule, search, and
//! entity data pushed through the API.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{ADMIN, Broker, Opts};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn examples() -> PathBuf {
    repo().join("examples/authzen")
}

fn pdp() -> Broker {
    Broker::start_with(Opts {
        policy_dir: Some(examples()),
        ..Opts::default()
    })
}

/// A POST with a bearer credential: status, headers and JSON body.
async fn post_raw(
    b: &Broker,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
    content_type: &str,
    request_id: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = b
        .http()
        .post(b.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(id) = request_id {
        r = r.header("x-request-id", id);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

async fn post(b: &Broker, path: &str, body: &Value) -> (u16, Value) {
    let (s, _, v) = post_raw(
        b,
        path,
        Some(ADMIN),
        serde_json::to_vec(body).unwrap(),
        "application/json",
        None,
    )
    .await;
    (s, v)
}

const RICK: &str = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const MORTY: &str = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const SUMMER: &str = "CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
const JERRY: &str = "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";

fn create_todo(subject: &str) -> Value {
    json!({"subject": {"type": "user", "id": subject}, "action": {"name": "can_create_todo"},
           "resource": {"type": "todo", "id": "todo-1"}})
}

/// The interop vectors, each request sent as the file has it, with an
/// admin credential (the Todo file) and a gateway credential (the gateway
/// file): every one answers as expected.
#[tokio::test]
async fn the_openid_interop_vectors_pass_as_published() {
    let b = pdp();
    let gateway = b.admin().register_gateway("interop").await.unwrap().token;
    let files = [
        ("todo-1.0-implementers-draft.json", ADMIN.to_owned(), 40),
        ("api-gateway-decisions.json", gateway, 25),
    ];
    for (file, token, expected_count) in files {
        let text =
            std::fs::read_to_string(repo().join("interop/authzen-vectors").join(file)).unwrap();
        let vectors: Value = serde_json::from_str(&text).unwrap();
        let cases = vectors["evaluation"].as_array().unwrap();
        assert_eq!(cases.len(), expected_count, "{file}");
        let mut passed = 0;
        for case in cases {
            let (status, _, body) = post_raw(
                &b,
                "/access/v1/evaluation",
                Some(&token),
                serde_json::to_vec(&case["request"]).unwrap(),
                "application/json",
                None,
            )
            .await;
            assert_eq!(status, 200, "{file}: {case} -> {body}");
            if body["decision"] == case["expected"] {
                passed += 1;
            } else {
                eprintln!("{file}: FAIL {case} -> {body}");
            }
        }
        eprintln!("{file}: {passed}/{} passed", cases.len());
        assert_eq!(passed, cases.len(), "{file}");
    }
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let b = pdp();
    let mut q = create_todo(MORTY);
    q["subject"]["_note"] = json!("a fixture comment");
    q["action"]["extra"] = json!({"deep": [1, 2]});
    q["resource"]["ownerID"] = json!("a pre-1.0 sibling attribute");
    q["unknown_top_level"] = json!(true);
    let (s, d) = post(&b, "/access/v1/evaluation", &q).await;
    assert_eq!((s, &d["decision"]), (200, &json!(true)), "{d}");
    let batch = json!({"subject": q["subject"], "whatever": 1, "options": {"evaluations_semantic": "execute_all", "another_option": 2},
                       "evaluations": [{"action": q["action"], "resource": q["resource"], "note": "x"}]});
    let (s, d) = post(&b, "/access/v1/evaluations", &batch).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["evaluations"][0]["decision"], true);
}

#[tokio::test]
async fn the_request_id_is_echoed_on_every_authzen_answer() {
    let b = pdp();
    let body = serde_json::to_vec(&create_todo(RICK)).unwrap();
    for (path, token, content_type, status) in [
        (
            "/access/v1/evaluation",
            Some(ADMIN),
            "application/json",
            200,
        ),
        (
            "/access/v1/evaluations",
            Some(ADMIN),
            "application/json",
            200,
        ),
        ("/access/v1/evaluation", None, "application/json", 401),
        ("/access/v1/evaluation", Some(ADMIN), "text/plain", 400),
    ] {
        let (s, h, _) = post_raw(&b, path, token, body.clone(), content_type, Some("req-42")).await;
        assert_eq!(s, status, "{path}");
        assert_eq!(h["x-request-id"], "req-42", "{path} {status}");
    }
    let search = json!({"subject": {"type": "user"}, "action": {"name": "can_create_todo"},
                        "resource": {"type": "todo", "id": "todo-1"}});
    let (_, h, _) = post_raw(
        &b,
        "/access/v1/search/subject",
        Some(ADMIN),
        serde_json::to_vec(&search).unwrap(),
        "application/json",
        Some("req-43"),
    )
    .await;
    assert_eq!(h["x-request-id"], "req-43");
    let r = b
        .http()
        .get(b.url("/.well-known/authzen-configuration"))
        .header("x-request-id", "req-44")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-44");
}

#[tokio::test]
async fn evaluations_without_items_answer_as_one_evaluation() {
    let b = pdp();
    for items in [None, Some(json!([]))] {
        let mut q = create_todo(MORTY);
        if let Some(i) = items {
            q["evaluations"] = i;
        }
        let (s, d) = post(&b, "/access/v1/evaluations", &q).await;
        assert_eq!(s, 200);
        assert_eq!(d["decision"], true, "{d}");
        assert!(d.get("evaluations").is_none(), "{d}");
    }
    let (s, _) = post(&b, "/access/v1/evaluations", &json!({"evaluations": []})).await;
    assert_eq!(s, 400, "nothing to evaluate");
}

#[tokio::test]
async fn under_execute_all_a_bad_item_is_false_and_the_others_are_decided() {
    let b = pdp();
    let batch = json!({
        "action": {"name": "can_update_todo"},
        "evaluations": [
            {"subject": {"type": "user", "id": MORTY}, "resource": {"type": "todo", "id": "1", "properties": {"ownerID": "morty@the-citadel.com"}}},
            {"subject": {"type": "user"}, "resource": {"type": "todo", "id": "2"}},
            {"subject": {"type": "user", "id": MORTY}, "resource": {"type": "todo", "id": "3", "properties": {"ownerID": 7}}},
            "not an object",
            {"subject": {"type": "user", "id": RICK}, "resource": {"type": "todo", "id": "4", "properties": {"ownerID": "morty@the-citadel.com"}}},
            {"subject": {"type": "user", "id": JERRY}, "resource": {"type": "todo", "id": "5", "properties": {"ownerID": "jerry@the-smiths.com"}}},
        ]
    });
    let (s, d) = post(&b, "/access/v1/evaluations", &batch).await;
    assert_eq!(s, 200, "{d}");
    let e = d["evaluations"].as_array().unwrap();
    let decisions: Vec<bool> = e.iter().map(|x| x["decision"].as_bool().unwrap()).collect();
    assert_eq!(decisions, [true, false, false, false, true, false]);
    for bad in [1, 2, 3] {
        let reason = e[bad]["context"]["reason"].as_str().unwrap();
        assert!(!reason.is_empty());
        assert_eq!(e[bad]["context"]["error"]["status"], 400, "{}", e[bad]);
    }
    // The same bad input alone is a 400.
    let (s, _) = post(
        &b,
        "/access/v1/evaluation",
        &json!({"subject": {"type": "user", "id": MORTY}, "action": {"name": "can_update_todo"},
                "resource": {"type": "todo", "id": "3", "properties": {"ownerID": 7}}}),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400() {
    let b = pdp();
    let body = serde_json::to_vec(&create_todo(RICK)).unwrap();
    for path in [
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/access/v1/search/subject",
        "/access/v1/search/resource",
        "/access/v1/search/action",
    ] {
        let (s, _, d) = post_raw(&b, path, Some(ADMIN), body.clone(), "text/plain", None).await;
        assert_eq!(s, 400, "{path}: {d}");
        let (s, _, _) = post_raw(
            &b,
            path,
            Some(ADMIN),
            b"{not json".to_vec(),
            "application/json",
            None,
        )
        .await;
        assert_eq!(s, 400, "{path}");
    }
    // Deeply nested JSON is refused, not recursed into.
    let deep = format!(
        "{{\"subject\":{{\"type\":\"user\",\"id\":\"x\",\"properties\":{}{}}},\"action\":{{\"name\":\"can_read_todos\"}},\"resource\":{{\"type\":\"todo\",\"id\":\"t\"}}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let (s, _, _) = post_raw(
        &b,
        "/access/v1/evaluation",
        Some(ADMIN),
        deep.into_bytes(),
        "application/json",
        None,
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn discovery_lists_exactly_the_endpoints_served() {
    let b = pdp();
    let meta: Value = b
        .http()
        .get(b.url("/.well-known/authzen-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoints: Vec<(&String, &Value)> = meta
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.ends_with("_endpoint"))
        .collect();
    let mut names: Vec<&str> = endpoints.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "access_evaluation_endpoint",
            "access_evaluations_endpoint",
            "search_action_endpoint",
            "search_resource_endpoint",
            "search_subject_endpoint",
        ]
    );
    for (name, url) in endpoints {
        let path = url
            .as_str()
            .unwrap()
            .trim_start_matches(meta["policy_decision_point"].as_str().unwrap());
        // Each answers here (an empty body is a 400, not a 404).
        let (s, _) = post(&b, path, &json!({})).await;
        assert_eq!(s, 400, "{name} at {path}");
    }
}

#[tokio::test]
async fn every_authzen_endpoint_needs_an_admin_or_gateway_credential() {
    let b = pdp();
    let body = serde_json::to_vec(&create_todo(RICK)).unwrap();
    for path in [
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/access/v1/search/subject",
        "/access/v1/search/resource",
        "/access/v1/search/action",
    ] {
        for token in [None, Some("not-a-credential")] {
            let (s, _, _) = post_raw(&b, path, token, body.clone(), "application/json", None).await;
            assert_eq!(s, 401, "{path}");
        }
    }
    let r = b
        .http()
        .put(b.url("/v1/entities"))
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A gateway may ask, but not change the data.
    let gw = b.admin().register_gateway("asker").await.unwrap().token;
    let r = b
        .http()
        .put(b.url("/v1/entities"))
        .bearer_auth(&gw)
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn search_finds_what_evaluation_allows_a_page_at_a_time() {
    let b = pdp();
    let q = json!({"subject": {"type": "user"}, "action": {"name": "can_create_todo"},
                   "resource": {"type": "todo", "id": "todo-1"}});
    let (s, d) = post(&b, "/access/v1/search/subject", &q).await;
    assert_eq!(s, 200, "{d}");
    let ids: Vec<&str> = d["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let mut expected = vec![RICK, MORTY, SUMMER];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(d["page"]["next_token"], "");
    // Each result, asked for, is true.
    for id in &ids {
        let (_, e) = post(&b, "/access/v1/evaluation", &create_todo(id)).await;
        assert_eq!(e["decision"], true);
    }
    // One at a time.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let mut page = q.clone();
        page["page"] = json!({"limit": 1, "token": token});
        let (s, d) = post(&b, "/access/v1/search/subject", &page).await;
        assert_eq!(s, 200, "{d}");
        assert!(d["results"].as_array().unwrap().len() <= 1);
        paged.extend(
            d["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        token = d["page"]["next_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
        // A token is this question's: another question, or a tampered
        // token, is refused.
        let mut other = q.clone();
        other["action"]["name"] = json!("can_read_todos");
        other["page"] = json!({"token": token});
        assert_eq!(post(&b, "/access/v1/search/subject", &other).await.0, 400);
    }
    assert_eq!(paged, ids);
    let mut forged = q.clone();
    forged["page"] = json!({"token": "OTk5OTk5OTk5Ojk5"});
    assert_eq!(post(&b, "/access/v1/search/subject", &forged).await.0, 400);
    // A limit past the maximum is capped.
    let mut long = q.clone();
    long["page"] = json!({"limit": 1_000_000_000u64});
    assert_eq!(post(&b, "/access/v1/search/subject", &long).await.0, 200);

    // Resources a subject may act on, and actions.
    let (s, d) = post(
        &b,
        "/access/v1/search/resource",
        &json!({"subject": {"type": "identity", "id": JERRY}, "action": {"name": "GET"}, "resource": {"type": "route"}}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    let routes: Vec<&str> = d["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["/todos", "/users/{userId}"]);
    let (s, d) = post(
        &b,
        "/access/v1/search/action",
        &json!({"subject": {"type": "user", "id": MORTY},
                "resource": {"type": "todo", "id": "t", "properties": {"ownerID": "rick@the-citadel.com"}}}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    let actions: Vec<&str> = d["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["can_create_todo", "can_read_todos"]);
}

/// "Which tools may this agent call": writ's own agents and tools in search.
#[tokio::test]
async fn search_finds_the_tools_an_agent_may_exchange_for() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(examples()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("tools.cedar"),
        r#"@id("open-tools") permit (principal, action == Action::"ExchangeToken", resource)
           when { resource.hasTag("open") && resource.getTag("open") == "yes" };"#,
    )
    .unwrap();
    let b = Broker::start_with(Opts {
        policy_dir: Some(dir.path().to_owned()),
        ..Opts::default()
    });
    b.agent("scout", &[]).await;
    for (name, open) in [("alpha", "yes"), ("beta", "no"), ("gamma", "yes")] {
        let r = b
            .http()
            .post(b.url("/v1/tools"))
            .bearer_auth(ADMIN)
            .json(
                &json!({"name": name, "audience": format!("https://{name}.example"),
                          "scopes": ["read"], "attributes": {"open": open}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let (s, d) = post(
        &b,
        "/access/v1/search/resource",
        &json!({"subject": {"type": "agent", "id": "scout"}, "action": {"name": "ExchangeToken"},
                "resource": {"type": "tool"}}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    let tools: Vec<&str> = d["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["alpha", "gamma"]);
    let (s, d) = post(
        &b,
        "/access/v1/search/action",
        &json!({"subject": {"type": "agent", "id": "scout"}, "resource": {"type": "tool", "id": "alpha"}}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["results"], json!([{"name": "ExchangeToken"}]));
}

#[tokio::test]
async fn entities_pushed_through_the_api_are_validated_and_go_live_whole() {
    let b = pdp();
    let (_, d) = post(&b, "/access/v1/evaluation", &create_todo(JERRY)).await;
    assert_eq!(d["decision"], false);
    let version = d["context"]["policy_version"].clone();
    let mut entities: Value =
        serde_json::from_str(&std::fs::read_to_string(examples().join("entities.json")).unwrap())
            .unwrap();
    let put = |body: Value| {
        let http = b.http();
        let url = b.url("/v1/entities");
        async move {
            let r = http
                .put(url)
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Refused, and nothing changes: an attribute of the wrong type, an
    // undeclared type, writ's own type, not an array, too many.
    let mut wrong = entities.clone();
    wrong[4]["attrs"]["email"] = json!(42);
    let bad = [
        wrong,
        json!([{"uid": {"type": "spaceship", "id": "x"}, "attrs": {}, "parents": []}]),
        json!([{"uid": {"type": "Agent", "id": "x"}, "attrs": {"spiffe_id": "s", "attestation": "oidc", "quarantined": false}, "parents": []}]),
        json!({"not": "a list"}),
        Value::Array(
            (0..10_001)
                .map(|i| json!({"uid": {"type": "Role", "id": format!("r{i}")}, "attrs": {}, "parents": []}))
                .collect(),
        ),
    ];
    for body in bad {
        let (s, d) = put(body).await;
        assert_eq!(s, 400, "{d}");
        let (_, d) = post(&b, "/access/v1/evaluation", &create_todo(JERRY)).await;
        assert_eq!(d["decision"], false);
        assert_eq!(d["context"]["policy_version"], version, "state unchanged");
    }
    // Jerry becomes an editor.
    for e in entities.as_array_mut().unwrap() {
        if e["uid"] == json!({"type": "user", "id": JERRY}) {
            e["parents"] = json!([{"type": "Role", "id": "editor"}]);
        }
    }
    let (s, d) = put(entities).await;
    assert_eq!(s, 200, "{d}");
    let (_, d) = post(&b, "/access/v1/evaluation", &create_todo(JERRY)).await;
    assert_eq!(d["decision"], true, "{d}");
    assert_ne!(d["context"]["policy_version"], version);
}

/// `entities.json` in the policy directory is reloaded like the policies;
/// a broken one is refused and the live data stays.
#[tokio::test]
async fn entities_json_is_reloaded_with_the_policies() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(examples()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let b = Broker::start_with(Opts {
        policy_dir: Some(dir.path().to_owned()),
        ..Opts::default()
    });
    let (_, d) = post(&b, "/access/v1/evaluation", &create_todo(JERRY)).await;
    assert_eq!(d["decision"], false);
    let path = dir.path().join("entities.json");
    let mut entities: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::write(&path, "[{\"uid\": ").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (_, d) = post(&b, "/access/v1/evaluation", &create_todo(MORTY)).await;
    assert_eq!(
        d["decision"], true,
        "a broken file leaves the live data: {d}"
    );
    for e in entities.as_array_mut().unwrap() {
        if e["uid"] == json!({"type": "user", "id": JERRY}) {
            e["parents"] = json!([{"type": "Role", "id": "editor"}]);
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&entities).unwrap()).unwrap();
    let b = &b;
    let became_editor =
        crate::harness::eventually(std::time::Duration::from_secs(10), || async move {
            post(b, "/access/v1/evaluation", &create_todo(JERRY))
                .await
                .1["decision"]
                == true
        })
        .await;
    assert!(became_editor);
}
