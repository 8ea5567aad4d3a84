//! The operator console at `/ui/`: its assets (embedded in the binary),
//! its session cookie, and the few read routes the `/v1` API has no
//! page for. Every action the console takes goes through the `/v1`
//! routes, which accept the session cookie in place of a bearer
//! credential, for a state-changing method only with the CSRF header
//! bound to that session ([`operator_secret`]).
//!
//! Security rules: a strict Content-Security-Policy on everything under
//! `/ui/` (no inline script or style, no framing), `nosniff`; the cookie is
//! `HttpOnly; SameSite=Strict; Path=/`, and `Secure` with the `__Host-`
//! prefix over TLS; the CSRF token is an HMAC of the session secret, so
//! only a page that read it from the broker (same origin) can send it.

mod assets;

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json as AxumJson;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use writ_core::api::{Duty, OperatorSession, Role};

use crate::error::ApiError;
use crate::extract::{Json, bearer};
use crate::routes::{Audit, Op, Operate, ReadPolicy};
use crate::service::Broker;

/// The cookie's name over plain HTTP.
pub(crate) const COOKIE: &str = "writ_console";
/// The cookie's name over TLS: the prefix makes the browser refuse it
/// unless it is `Secure`, `Path=/` and has no `Domain`.
pub(crate) const COOKIE_TLS: &str = "__Host-writ_console";
/// The header a state-changing request authenticated by the cookie
/// carries, with [`csrf_token`] of its session.
pub(crate) const CSRF_HEADER: &str = "x-writ-csrf";

pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The `Set-Cookie` value that hands the browser a console session's
/// secret. The one place the cookie is made (password and SSO sign-in).
pub(crate) fn console_session_cookie(secret: &str, tls: bool) -> HeaderValue {
    let v = if tls {
        format!("{COOKIE_TLS}={secret}; Path=/; HttpOnly; SameSite=Strict; Secure")
    } else {
        format!("{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict")
    };
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub(crate) fn cleared_cookie(tls: bool) -> HeaderValue {
    HeaderValue::from_static(if tls {
        "__Host-writ_console=; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0"
    } else {
        "writ_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    })
}

const CSRF_CONTEXT: &[u8] = b"writ console csrf v1";

/// The CSRF token of a session: an HMAC-SHA-256 keyed by its secret.
pub(crate) fn csrf_token(secret: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, CSRF_CONTEXT).as_ref())
}

/// Whether `token` is the CSRF token of the session `secret` (compared
/// in constant time).
fn csrf_ok(secret: &str, token: &str) -> bool {
    let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    aws_lc_rs::hmac::verify(&key, CSRF_CONTEXT, &tag).is_ok()
}

/// The console session secret of the request's cookie, if any. A request
/// carrying more than one console cookie (of either name) is refused: over
/// plain HTTP a sibling origin can plant one beside the real one, and which
/// of them a server takes must never be a guess.
fn cookie_secret(headers: &HeaderMap, tls: bool) -> Result<Option<&str>, ApiError> {
    let name = if tls { COOKIE_TLS } else { COOKIE };
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE || *k == COOKIE_TLS);
    let (first, second) = (found.next(), found.next());
    if second.is_some() {
        return Err(ApiError::BadRequest(
            "more than one console cookie: sign in again (and clear this site's cookies)".into(),
        ));
    }
    Ok(first
        .filter(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v))
}

/// The operator secret a request carries: its bearer credential, or else
/// (with the console on) its console cookie; the cookie is taken for a
/// method other than GET and HEAD only with the CSRF header of its
/// session, never alone.
pub(crate) fn operator_secret<'a>(
    parts: &'a Parts,
    broker: &Broker,
) -> Result<Option<Cow<'a, str>>, ApiError> {
    if let Some(t) = bearer(&parts.headers)? {
        return Ok(Some(Cow::Borrowed(t)));
    }
    if !broker.config.console {
        return Ok(None);
    }
    let Some(secret) = cookie_secret(&parts.headers, broker.config.console_secure)? else {
        return Ok(None);
    };
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut sent = parts.headers.get_all(CSRF_HEADER).iter();
        let ok = match (sent.next(), sent.next()) {
            (Some(v), None) => v.to_str().is_ok_and(|v| csrf_ok(secret, v)),
            _ => false,
        };
        if !ok {
            return Err(ApiError::Forbidden(format!(
                "a request signed in by the console cookie needs the {CSRF_HEADER} header of its session"
            )));
        }
    }
    Ok(Some(Cow::Borrowed(secret)))
}

/// What the console knows of its session (never the secret).
#[derive(Serialize)]
struct SessionInfo {
    name: String,
    role: Role,
    expires_at: Option<writ_core::Timestamp>,
    /// Send as `X-Writ-CSRF` with every state-changing request.
    csrf: String,
    /// What the role may do: the console offers nothing else.
    may: May,
}

#[derive(Serialize)]
struct May {
    operate: bool,
    approve: bool,
    audit: bool,
    administer: bool,
    read_policy: bool,
    author_policy: bool,
    read_task: bool,
}

impl May {
    fn of(role: Role) -> Self {
        May {
            operate: role.holds(Duty::Operate),
            approve: role.holds(Duty::Approve),
            audit: role.holds(Duty::Audit),
            administer: role.holds(Duty::Administer),
            read_policy: role.holds(Duty::ReadPolicy),
            author_policy: role.holds(Duty::AuthorPolicy),
            read_task: role.holds(Duty::ReadTask),
        }
    }
}

/// Starts a console session for an operator session already stored (a
/// credential's sign-in here, or single sign-on): `201` with what the
/// console needs to know and the cookie; with `redirect`, a `303` to the
/// console instead (the end of a browser sign-in flow).
pub(crate) fn start_console_session(
    broker: &Broker,
    session: &OperatorSession,
    redirect: bool,
) -> Response {
    let cookie = console_session_cookie(&session.token, broker.config.console_secure);
    if redirect {
        return (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, cookie),
                (header::LOCATION, HeaderValue::from_static("/ui/")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response();
    }
    let info = SessionInfo {
        name: session.name.clone(),
        role: session.role,
        expires_at: Some(session.expires_at),
        csrf: csrf_token(&session.token),
        may: May::of(session.role),
    };
    (
        StatusCode::CREATED,
        [
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        AxumJson(info),
    )
        .into_response()
}

/// The console's routes, with its security headers on every answer.
pub(crate) fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/ui", get(to_console))
        .route("/ui/", get(assets::index))
        .route(
            "/ui/api/session",
            get(session).post(sign_in).delete(sign_out),
        )
        .route("/ui/api/news", get(news))
        .route("/ui/api/overview", get(overview))
        .route("/ui/api/audit", get(audit_search))
        .route("/ui/api/tasks", get(task_search))
        .route("/ui/api/tasks/{id}", get(task_detail))
        .route("/ui/api/agents/{name}", get(agent_detail))
        .route("/ui/api/agents/{name}/quarantine", post(quarantine))
        .route("/ui/api/agents/{name}/release", post(release))
        .route("/ui/api/policies/shadow", get(shadow_policy))
        .route("/ui/api/policies/versions/{version}", get(policy_version))
        .route("/ui/api/policies/tests", get(policy_tests))
        .route("/ui/{file}", get(assets::asset))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The console is off: nothing under `/ui/` but 404.
pub(crate) fn router_off() -> Router<Arc<Broker>> {
    Router::new()
}

pub(crate) async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// What every answer outside the console carries (the console sets its
/// own, stricter for its pages): no sniffing, and a policy under which an
/// HTML report read with the console cookie runs nothing, loads nothing
/// and is framed by nobody.
pub(crate) const API_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

pub(crate) async fn api_security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(API_CSP));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    resp
}

/// `/ui` to `/ui/` (a fixed place: nothing from the request goes in it).
async fn to_console() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("/ui/"))],
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    credential: String,
}

/// A browser said it sent this from another site: no sign-in from there.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
}

/// `POST /ui/api/session`: an operator credential, once, for a session.
async fn sign_in(
    State(b): State<Arc<Broker>>,
    _: crate::routes::SignInAdmitted,
    headers: HeaderMap,
    Json(req): Json<SignIn>,
) -> Result<Response, ApiError> {
    if cross_site(&headers) {
        return Err(ApiError::Forbidden(
            "the console signs in from its own pages only".into(),
        ));
    }
    let session = b.operators.console_sign_in(req.credential.trim()).await?;
    // The session this browser had (its cookie is about to be replaced)
    // ends at the broker too, not only in the browser.
    if let Ok(Some(old)) = cookie_secret(&headers, b.config.console_secure) {
        b.operators.console_sign_out(old).await?;
    }
    Ok(start_console_session(&b, &session, false))
}

/// `GET /ui/api/session`: who the cookie signs in, and the CSRF token.
async fn session(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let secret = cookie_secret(&headers, b.config.console_secure)?
        .ok_or_else(|| ApiError::Unauthorized("not signed in".into()))?;
    let (who, expires_at) = b.operators.console_session(secret).await?;
    Ok(AxumJson(SessionInfo {
        csrf: csrf_token(secret),
        may: May::of(who.role),
        name: who.name,
        role: who.role,
        expires_at,
    })
    .into_response())
}

/// `DELETE /ui/api/session`: signs out (the session ends for every
/// holder of the cookie) and clears the cookie.
async fn sign_out(State(b): State<Arc<Broker>>, parts: Parts) -> Result<Response, ApiError> {
    if parts.headers.get(header::AUTHORIZATION).is_some() {
        return Err(ApiError::BadRequest(
            "sign-out ends a console session: send its cookie".into(),
        ));
    }
    let secret = operator_secret(&parts, &b)?
        .ok_or_else(|| ApiError::Unauthorized("not signed in".into()))?;
    b.operators.console_sign_out(&secret).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cleared_cookie(b.config.console_secure))],
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewsQuery {
    #[serde(default)]
    after: u64,
    /// How long to wait for news (milliseconds, at most 25 s).
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Serialize)]
struct News {
    head: u64,
}

/// Any signed-in operator: what is there to know.
struct SignedIn(crate::service::Operator);

impl axum::extract::FromRequestParts<Arc<Broker>> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, b: &Arc<Broker>) -> Result<Self, ApiError> {
        let secret = operator_secret(parts, b)?;
        Ok(SignedIn(b.require_operator(secret.as_deref()).await?))
    }
}

/// `GET /ui/api/news`: long-poll; answers once the audit chain has grown
/// past `after` (everything the console shows is audited when it
/// changes), or after `wait_ms`.
async fn news(
    State(b): State<Arc<Broker>>,
    _: SignedIn,
    q: Result<Query<NewsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<AxumJson<News>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wait = std::time::Duration::from_millis(q.wait_ms.min(25_000));
    Ok(AxumJson(News {
        head: b.console.audit_news(q.after, wait).await?,
    }))
}

#[derive(Serialize)]
struct Overview {
    live_tasks: u64,
    live_grants: u64,
    pending_approvals: u64,
    head: u64,
    /// The gateways following the revocation feed and their lag.
    gateways: crate::service::feed::FeedFollowers,
    /// Decisions per minute over the last half hour (readers of the
    /// audit only: it is read from there).
    #[serde(skip_serializing_if = "Option::is_none")]
    activity: Option<crate::service::console::Activity>,
}

/// `GET /ui/api/overview`: what is live (any signed-in operator).
async fn overview(
    State(b): State<Arc<Broker>>,
    who: SignedIn,
) -> Result<AxumJson<Overview>, ApiError> {
    let c = b.console.live_counts().await?;
    // Decisions over time come from the audit: for a role that reads it.
    let activity = if who.0.role.holds(Duty::Audit) {
        Some(b.console.activity(30).await?)
    } else {
        None
    };
    Ok(AxumJson(Overview {
        live_tasks: c.tasks,
        live_grants: c.grants,
        pending_approvals: c.approvals_pending,
        head: b.console.audit_news(0, std::time::Duration::ZERO).await?,
        gateways: b.revocations.followers(b.now()).await?,
        activity,
    }))
}

/// `GET /ui/api/audit`: records matching a filter, newest first.
async fn audit_search(
    State(b): State<Arc<Broker>>,
    _: Op<Audit>,
    q: Result<
        Query<crate::service::console::AuditFilter>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AxumJson<crate::service::console::AuditMatches>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(AxumJson(b.console.find_audit(&q).await?))
}

/// `GET /ui/api/tasks`: tasks matching a filter, newest first.
async fn task_search(
    State(b): State<Arc<Broker>>,
    _: Op<Operate>,
    q: Result<Query<crate::service::console::TaskFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<AxumJson<crate::service::console::TaskMatches>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(AxumJson(b.console.find_tasks(&q).await?))
}

/// `GET /ui/api/tasks/{id}`: a task's delegation tree, each node's
/// tokens, and (for a role that reads the audit) its tool calls.
async fn task_detail(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(id): Path<String>,
) -> Result<AxumJson<crate::service::console::TaskDetail>, ApiError> {
    let id: writ_core::TaskId = id
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("{e}")))?;
    let audit = op.who.role.holds(Duty::Audit);
    Ok(AxumJson(b.console.task_detail(&id, audit).await?))
}

/// `GET /ui/api/agents/{name}`: an agent's live instances and (for a
/// role that reads the audit) its recent decisions.
async fn agent_detail(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
) -> Result<AxumJson<crate::service::console::AgentDetail>, ApiError> {
    let audit = op.who.role.holds(Duty::Audit);
    Ok(AxumJson(
        b.console.agent_detail(&agent_name(&name)?, audit).await?,
    ))
}

/// `GET /ui/api/policies/shadow`: the shadow set and its sources (`null`
/// without one).
async fn shadow_policy(
    State(b): State<Arc<Broker>>,
    _: Op<ReadPolicy>,
) -> Result<AxumJson<Option<crate::service::console::PolicySources>>, ApiError> {
    Ok(AxumJson(b.console.shadow_sources().await?))
}

/// `GET /ui/api/policies/tests`: the policy directory's test cases as the
/// live and shadow sets decide them.
async fn policy_tests(
    State(b): State<Arc<Broker>>,
    _: Op<ReadPolicy>,
) -> AxumJson<crate::service::policy_tests::TestReport> {
    AxumJson(b.policy_tests.results().await.as_ref().clone())
}

/// `GET /ui/api/policies/versions/{version}`: a once-live set's sources.
async fn policy_version(
    State(b): State<Arc<Broker>>,
    _: Op<ReadPolicy>,
    Path(version): Path<String>,
) -> Result<AxumJson<crate::service::console::PolicySources>, ApiError> {
    if version.is_empty() || version.len() > 128 {
        return Err(ApiError::BadRequest("a policy version".into()));
    }
    Ok(AxumJson(b.console.policy_sources(&version).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

fn agent_name(s: &str) -> Result<writ_core::AgentName, ApiError> {
    s.parse().map_err(|e| ApiError::BadRequest(format!("{e}")))
}

fn reason(r: &Reason) -> Result<&str, ApiError> {
    let r = r.reason.trim();
    if r.is_empty() {
        return Err(ApiError::BadRequest("say why (reason)".into()));
    }
    Ok(r)
}

/// `POST /ui/api/agents/{name}/quarantine`: the kill switch, with a reason.
async fn quarantine(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
    Json(r): Json<Reason>,
) -> Result<AxumJson<writ_core::api::Quarantined>, ApiError> {
    Ok(AxumJson(
        b.registry
            .quarantine(&agent_name(&name)?, true, &op.actor(), Some(reason(&r)?))
            .await?,
    ))
}

/// `POST /ui/api/agents/{name}/release`, with a reason.
async fn release(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
    Json(r): Json<Reason>,
) -> Result<AxumJson<writ_core::api::Quarantined>, ApiError> {
    Ok(AxumJson(
        b.registry
            .quarantine(&agent_name(&name)?, false, &op.actor(), Some(reason(&r)?))
            .await?,
    ))
}
