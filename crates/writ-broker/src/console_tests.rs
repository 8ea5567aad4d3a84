//! The console's security rules, in process: its cookie, the CSRF header
//! every state-changing request it signs needs, its headers, and roles.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use writ_core::api::{CreateAdminCredential, Role};

use crate::service::Operator;
use crate::{Broker, BrokerConfig, DataDir};

struct Env {
    broker: Arc<Broker>,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

async fn env(config: impl FnOnce(&mut BrokerConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut c = BrokerConfig::new("http://writ.test");
    config(&mut c);
    let opened = crate::open(
        &DataDir::new(dir.path()),
        c,
        crate::InitialPolicy::Stored,
        Arc::new(writ_core::SystemClock),
        None,
    )
    .await
    .unwrap();
    let broker = opened.broker;
    Env {
        app: crate::router(Arc::clone(&broker)),
        broker,
        _dir: dir,
    }
}

async fn credential(b: &Broker, name: &str, role: Role) -> String {
    let root = Operator {
        name: "bootstrap".into(),
        role: Role::Admin,
    };
    b.operators
        .create_admin_credential(
            &root,
            CreateAdminCredential {
                name: name.into(),
                role,
            },
        )
        .await
        .unwrap()
        .token
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: serde_json::Value,
    text: String,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        text,
    }
}

/// Signs in: the `Cookie` header to send back, and the CSRF token.
async fn sign_in(app: &axum::Router, credential: &str) -> (String, String) {
    let a = send(
        app,
        Request::post("/ui/api/session")
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::json!({ "credential": credential }).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let set = a.headers[header::SET_COOKIE].to_str().unwrap();
    let pair = set.split(';').next().unwrap().to_owned();
    (pair, a.json["csrf"].as_str().unwrap().to_owned())
}

fn with_cookie(method: &str, uri: &str, cookie: &str, csrf: Option<&str>) -> Request<Body> {
    let mut r = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, cookie);
    let body = if method == "GET" {
        Body::empty()
    } else {
        r = r.header("content-type", "application/json");
        Body::from(r#"{"reason":"test"}"#)
    };
    if let Some(c) = csrf {
        r = r.header("x-writ-csrf", c);
    }
    r.body(body).unwrap()
}

#[tokio::test]
async fn console_cookie_without_its_csrf_header_is_refused() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let (cookie, csrf) = sign_in(&e.app, &admin).await;
    let (_, other_csrf) = sign_in(&e.app, &credential(&e.broker, "ops2", Role::Admin).await).await;
    // Reading with the cookie alone is fine.
    let a = send(&e.app, with_cookie("GET", "/v1/agents", &cookie, None)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    for path in [
        "/v1/agents/nobody/quarantine",
        "/ui/api/agents/nobody/quarantine",
    ] {
        // No header, a wrong one, another session's: refused before anything.
        for bad in [None, Some("AAAA"), Some(other_csrf.as_str()), Some("")] {
            let a = send(&e.app, with_cookie("POST", path, &cookie, bad)).await;
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{path} {bad:?}: {}",
                a.text
            );
            assert!(a.text.contains("x-writ-csrf"), "{}", a.text);
        }
        // Its own: through to the route (no such agent).
        let a = send(&e.app, with_cookie("POST", path, &cookie, Some(&csrf))).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {}", a.text);
    }
    // Two CSRF headers: refused.
    let mut req = with_cookie("POST", "/v1/agents/nobody/quarantine", &cookie, Some(&csrf));
    req.headers_mut()
        .append("x-writ-csrf", csrf.parse().unwrap());
    assert_eq!(send(&e.app, req).await.status, StatusCode::FORBIDDEN);
    // Ending a task, deciding an approval: the same rule.
    let task = writ_core::TaskId::generate().unwrap();
    for path in [
        format!("/v1/tasks/{task}/complete"),
        "/v1/approvals/nobody/approve".to_owned(),
    ] {
        let a = send(&e.app, with_cookie("POST", &path, &cookie, None)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.text);
    }
}

#[tokio::test]
async fn console_cookie_is_httponly_samesite_strict_and_secure_over_tls() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let a = send(
        &e.app,
        Request::post("/ui/api/session")
            .header("content-type", "application/json")
            .body(Body::from(format!(r#"{{"credential":"{admin}"}}"#)))
            .unwrap(),
    )
    .await;
    let set = a.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.starts_with("writ_console=writ_console_"), "{set}");
    for part in ["Path=/", "HttpOnly", "SameSite=Strict"] {
        assert!(set.split("; ").any(|p| p == part), "{part} in {set}");
    }
    assert!(!set.contains("Secure") && !set.contains("Domain"), "{set}");
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    // The answer never carries the secret but in the cookie.
    let secret = set
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("writ_console=");
    assert!(!a.text.contains(secret));

    let tls = env(|c| c.console_secure = true).await;
    let admin = credential(&tls.broker, "ops", Role::Admin).await;
    let (cookie, csrf) = sign_in(&tls.app, &admin).await;
    assert!(cookie.starts_with("__Host-writ_console="), "{cookie}");
    let set = crate::console::console_session_cookie("s", true);
    assert_eq!(
        set.to_str().unwrap(),
        "__Host-writ_console=s; Path=/; HttpOnly; SameSite=Strict; Secure"
    );
    // Over TLS only the prefixed cookie counts (one set over plain HTTP
    // by someone else cannot stand in for it).
    let plain = cookie.replace("__Host-writ_console=", "writ_console=");
    let a = send(&tls.app, with_cookie("GET", "/v1/agents", &plain, None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(
        &tls.app,
        with_cookie("GET", "/v1/agents", &cookie, Some(&csrf)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn console_pages_carry_a_strict_content_security_policy() {
    let e = env(|_| {}).await;
    for path in [
        "/ui/",
        "/ui/app.js",
        "/ui/pages.js",
        "/ui/style.css",
        "/ui/api/session",
        "/ui/nothing",
    ] {
        let a = send(&e.app, Request::get(path).body(Body::empty()).unwrap()).await;
        let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for rule in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {rule} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(a.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(a.headers[header::X_FRAME_OPTIONS], "DENY");
    }
    let a = send(&e.app, Request::get("/ui/").body(Body::empty()).unwrap()).await;
    assert!(
        a.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // No inline script or style the policy would have to allow.
    assert!(
        !a.text.contains("<script>") && !a.text.contains("style="),
        "{}",
        a.text
    );
    let js = send(
        &e.app,
        Request::get("/ui/app.js").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(
        js.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    // `/ui` goes to a fixed place, whatever follows.
    let a = send(
        &e.app,
        Request::get("/ui?next=//evil.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.headers[header::LOCATION], "/ui/");
}

/// The console's scripts put data in the page as text only.
#[test]
fn console_scripts_never_parse_data_as_html() {
    for (name, src) in [
        ("app.js", include_str!("../console/app.js")),
        ("pages.js", include_str!("../console/pages.js")),
        ("dom.js", include_str!("../console/dom.js")),
        ("api.js", include_str!("../console/api.js")),
    ] {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            // dom.js names innerHTML in its opening comment only.
            let uses = src
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(sink));
            assert!(!uses, "{name} uses {sink}");
        }
    }
}

#[tokio::test]
async fn console_auditor_is_refused_actions_even_with_its_csrf_token() {
    let e = env(|_| {}).await;
    let auditor = credential(&e.broker, "ann", Role::Auditor).await;
    let (cookie, csrf) = sign_in(&e.app, &auditor).await;
    let who = send(&e.app, with_cookie("GET", "/ui/api/session", &cookie, None)).await;
    assert_eq!(who.json["role"], "auditor");
    assert_eq!(who.json["may"]["operate"], false);
    assert_eq!(who.json["may"]["audit"], true);
    let task = writ_core::TaskId::generate().unwrap();
    for path in [
        "/ui/api/agents/demo/quarantine".to_owned(),
        "/ui/api/agents/demo/release".to_owned(),
        "/v1/agents/demo/quarantine".to_owned(),
        "/v1/approvals/nobody/approve".to_owned(),
        format!("/v1/tasks/{task}/complete"),
    ] {
        let a = send(&e.app, with_cookie("POST", &path, &cookie, Some(&csrf))).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.text);
        assert!(a.text.contains("has role auditor"), "{path}: {}", a.text);
    }
    let a = send(&e.app, with_cookie("GET", "/ui/api/tasks", &cookie, None)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(
        &e.app,
        with_cookie("GET", "/ui/api/audit?kind=agent_quarantine", &cookie, None),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // The audit names who signed in.
    let a = send(
        &e.app,
        with_cookie("GET", "/ui/api/audit?actor=operator:ann", &cookie, None),
    )
    .await;
    let reasons: Vec<_> = a.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"]["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r == "operator ann signed in to the console"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn console_session_ends_at_sign_out_and_with_its_credential() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let (cookie, csrf) = sign_in(&e.app, &admin).await;
    // Sign-out needs the CSRF header too (else a cross-site post could
    // sign anyone out).
    let a = send(
        &e.app,
        with_cookie("DELETE", "/ui/api/session", &cookie, None),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(
        &e.app,
        with_cookie("DELETE", "/ui/api/session", &cookie, Some(&csrf)),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    assert!(
        a.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The secret, kept by a thief: refused.
    let a = send(&e.app, with_cookie("GET", "/v1/agents", &cookie, None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Rotating or revoking the credential ends its sessions.
    let (cookie, _) = sign_in(&e.app, &admin).await;
    let root = Operator {
        name: "bootstrap".into(),
        role: Role::Admin,
    };
    e.broker
        .operators
        .rotate_admin_credential(&root, "ops")
        .await
        .unwrap();
    let a = send(&e.app, with_cookie("GET", "/v1/agents", &cookie, None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // A session cannot outlive the session it was made from.
    let short = e
        .broker
        .operators
        .console_sign_in(&credential(&e.broker, "pat", Role::Admin).await)
        .await
        .unwrap();
    let again = e
        .broker
        .operators
        .console_sign_in(&short.token)
        .await
        .unwrap();
    assert!(again.expires_at <= short.expires_at);
}

/// A double-click, two tabs: two sign-outs at once end the console
/// session once and never the long-lived credential it was made from.
#[tokio::test]
async fn two_sign_outs_at_once_leave_the_parent_credential_working() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    for _ in 0..5 {
        let (cookie, csrf) = sign_in(&e.app, &admin).await;
        let (a, b) = tokio::join!(
            send(
                &e.app,
                with_cookie("DELETE", "/ui/api/session", &cookie, Some(&csrf)),
            ),
            send(
                &e.app,
                with_cookie("DELETE", "/ui/api/session", &cookie, Some(&csrf)),
            ),
        );
        assert!(a.status.is_success() || a.status == StatusCode::UNAUTHORIZED);
        assert!(b.status.is_success() || b.status == StatusCode::UNAUTHORIZED);
        let a = send(&e.app, with_cookie("GET", "/v1/agents", &cookie, None)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        // The same sign-out again, through the service (the race's second
        // half: the session looked up, then gone).
        let s = e.broker.operators.console_sign_in(&admin).await.unwrap();
        assert!(e.broker.operators.console_sign_out(&s.token).await.unwrap());
        assert!(!e.broker.operators.console_sign_out(&s.token).await.unwrap());
        let a = send(
            &e.app,
            Request::get("/v1/agents")
                .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "the parent credential works");
    }
}

/// `GET /v1/admin/tokens` lists the console sessions with the
/// credentials, marked as sessions, never a secret; revoking the name
/// ends them.
#[tokio::test]
async fn console_sessions_are_listed_with_the_credentials_never_their_secret() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let (cookie, _) = sign_in(&e.app, &admin).await;
    let secret = cookie.split_once('=').unwrap().1.to_owned();
    let a = send(
        &e.app,
        Request::get("/v1/admin/tokens")
            .header(header::AUTHORIZATION, format!("Bearer {admin}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(!a.text.contains(&secret), "{}", a.text);
    assert!(!a.text.contains(&admin), "{}", a.text);
    let sessions: Vec<_> = a
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["console_session"] == true)
        .collect();
    assert_eq!(sessions.len(), 1, "{}", a.text);
    assert_eq!(sessions[0]["name"], "ops");
    assert!(sessions[0].get("token").is_none());
}

/// Over plain HTTP a sibling origin can plant a console cookie beside the
/// real one: a request carrying more than one is refused, never guessed.
#[tokio::test]
async fn a_request_carrying_two_console_cookies_is_refused() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let (cookie, _) = sign_in(&e.app, &admin).await;
    let a = send(&e.app, with_cookie("GET", "/v1/agents", &cookie, None)).await;
    assert_eq!(a.status, StatusCode::OK);
    for two in [
        format!("writ_console=planted; {cookie}"),
        format!("{cookie}; writ_console=planted"),
        format!("{cookie}; __Host-writ_console=planted"),
    ] {
        for path in ["/v1/agents", "/ui/api/session"] {
            let a = send(&e.app, with_cookie("GET", path, &two, None)).await;
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{path} {two}: {}",
                a.text
            );
        }
    }
}

/// The HTML reports under `/v1` can be read with the console cookie:
/// every `/v1` answer says nosniff and carries a policy under which a
/// page runs nothing, loads nothing and is framed by nobody.
#[tokio::test]
async fn v1_answers_carry_nosniff_and_a_policy_that_runs_nothing() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let (cookie, _) = sign_in(&e.app, &admin).await;
    for path in [
        "/v1/reports/evidence",
        "/v1/reports/least-privilege?format=html",
        "/v1/agents",
        "/v1/no-such-route",
    ] {
        let a = send(&e.app, with_cookie("GET", path, &cookie, None)).await;
        assert_eq!(
            a.headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{path} {}",
            a.status
        );
        assert_eq!(
            a.headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            "{path}"
        );
    }
    // The console's own, stricter policy stands on its pages.
    let a = send(&e.app, Request::get("/ui/").body(Body::empty()).unwrap()).await;
    assert_eq!(
        a.headers[header::CONTENT_SECURITY_POLICY],
        crate::console::CSP,
        "the console keeps its own"
    );
    assert_eq!(a.headers["cross-origin-opener-policy"], "same-origin");
}

/// The gateway strips writ's own cookies before it forwards (its list is
/// in writ-core): every cookie the broker sets is on that list.
#[test]
fn every_cookie_the_broker_sets_is_one_the_gateway_strips() {
    for name in [
        crate::console::COOKIE,
        crate::console::COOKIE_TLS,
        crate::routes::sso::FLOW_COOKIE_PLAIN,
        crate::routes::sso::FLOW_COOKIE_SECURE,
    ] {
        assert!(writ_core::api::BROWSER_COOKIES.contains(&name), "{name}");
    }
}

/// Signing in again in the same browser replaces the cookie, and the
/// session the old cookie held ends at the broker too.
#[tokio::test]
async fn a_new_sign_in_ends_the_browsers_old_session() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let (old, _) = sign_in(&e.app, &admin).await;
    let a = send(
        &e.app,
        Request::post("/ui/api/session")
            .header("content-type", "application/json")
            .header(header::COOKIE, &old)
            .body(Body::from(
                serde_json::json!({ "credential": admin }).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let new = a.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let a = send(&e.app, with_cookie("GET", "/v1/agents", &old, None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(&e.app, with_cookie("GET", "/v1/agents", &new, None)).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn console_sign_in_refuses_bad_credentials_and_other_sites() {
    let e = env(|_| {}).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let post = |body: String, extra: Option<(&'static str, &'static str)>| {
        let mut r = Request::post("/ui/api/session").header("content-type", "application/json");
        if let Some((k, v)) = extra {
            r = r.header(k, v);
        }
        r.body(Body::from(body)).unwrap()
    };
    let a = send(
        &e.app,
        post(r#"{"credential":"writ_op_nope"}"#.into(), None),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.headers.get(header::SET_COOKIE).is_none());
    let a = send(
        &e.app,
        post(
            format!(r#"{{"credential":"{admin}"}}"#),
            Some(("sec-fetch-site", "cross-site")),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // What a cross-site HTML form can send is not JSON.
    let a = send(
        &e.app,
        Request::post("/ui/api/session")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("credential={admin}")))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Not signed in: 401.
    let a = send(
        &e.app,
        Request::get("/ui/api/session").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn no_console_serves_nothing_and_takes_no_cookie() {
    let e = env(|c| c.console = false).await;
    let admin = credential(&e.broker, "ops", Role::Admin).await;
    let a = send(&e.app, Request::get("/ui/").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let s = e.broker.operators.console_sign_in(&admin).await.unwrap();
    let a = send(
        &e.app,
        with_cookie(
            "GET",
            "/v1/agents",
            &format!("writ_console={}", s.token),
            None,
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

/// The console's SSO sign-in keeps a single sign-on session in the cookie
/// (through [`crate::console::start_console_session`]): sign-out ends it
/// at the broker too, and the cookie it set is the one cookie.
#[tokio::test]
async fn console_sign_out_ends_a_single_sign_on_session() {
    let e = env(|_| {}).await;
    let now = e.broker.now();
    let token = "writ_op_sso-session-secret";
    e.broker
        .store
        .add_operator_session(
            "alice@example.com",
            &crate::service::hash_secret(token),
            Role::Approver,
            now.add_secs(600),
            now,
            vec![],
        )
        .await
        .unwrap();
    let session = writ_core::api::OperatorSession {
        name: "alice@example.com".into(),
        role: Role::Approver,
        token: token.into(),
        expires_at: now.add_secs(600),
    };
    let resp = crate::console::start_console_session(&e.broker, &session, true);
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/ui/");
    let set = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    assert_eq!(
        set,
        crate::console::console_session_cookie(token, false)
            .to_str()
            .unwrap()
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let who = send(&e.app, with_cookie("GET", "/ui/api/session", &cookie, None)).await;
    assert_eq!(who.json["name"], "alice@example.com", "{}", who.text);
    let csrf = who.json["csrf"].as_str().unwrap().to_owned();
    let a = send(
        &e.app,
        with_cookie("DELETE", "/ui/api/session", &cookie, Some(&csrf)),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = send(&e.app, with_cookie("GET", "/v1/approvals", &cookie, None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        e.broker
            .store
            .admin_token(&crate::service::hash_secret(token))
            .await
            .unwrap()
            .is_none()
    );
}
