//! The console's single sign-on, for a browser: `GET /ui/sso/start` sends
//! it to the operators' identity provider (authorization code with PKCE),
//! `GET /ui/sso/callback` is where the provider sends it back. The flow's
//! secrets live sealed in a short-lived cookie; a signed-in
//! browser gets the console's session cookie and goes to one fixed local
//! page (never a place the request names: no open redirect). A refused
//! sign-in gets a plain page saying why, clears the flow and leaves no
//! session.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use crate::error::ApiError;
use crate::service::{BROWSER_SIGN_IN_START, Broker, BrowserCallback, SIGN_IN_FLOW_SECS};

/// The flow cookie over https: `__Host-` (RFC 6265bis §4.1.3.2) keeps
/// anything but this origin, a sibling subdomain included, from planting
/// one.
pub(crate) const FLOW_COOKIE_SECURE: &str = "__Host-writ-sso-flow";
/// The flow cookie over plain http (a development broker).
pub(crate) const FLOW_COOKIE_PLAIN: &str = "writ-sso-flow";

fn flow_cookie_name(secure: bool) -> &'static str {
    if secure {
        FLOW_COOKIE_SECURE
    } else {
        FLOW_COOKIE_PLAIN
    }
}

/// The flow cookie: `SameSite=Lax`, since the provider's redirect back is
/// a cross-site top-level navigation that must carry it; `HttpOnly`; gone
/// with the flow's own time limit. `value` empty: the cookie cleared.
fn flow_cookie(secure: bool, value: &str) -> Result<HeaderValue, ApiError> {
    let max_age = if value.is_empty() {
        0
    } else {
        SIGN_IN_FLOW_SECS
    };
    let mut c = format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax",
        flow_cookie_name(secure)
    );
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).map_err(|e| ApiError::Internal(format!("a cookie: {e}")))
}

/// The value of the request's cookie `name` (the first, if several).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `GET /ui/api/sso`: whether the console's sign-in page offers single
/// sign-on, and where it starts (always 200, for the page to ask).
pub async fn options(State(b): State<Arc<Broker>>) -> Response {
    let start = b
        .operators
        .operator_sso_info()
        .ok()
        .and_then(|i| i.browser_start);
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(serde_json::json!({ "start": start })),
    )
        .into_response()
}

/// Starts a sign-in: a 303 to the provider, the sealed flow in a cookie.
pub async fn start(State(b): State<Arc<Broker>>) -> Response {
    let started = match b.operators.operator_browser_start() {
        Ok(s) => s,
        Err(e) => return refused(ApiError::from(e), None),
    };
    let cookie = match flow_cookie(started.secure, &started.flow) {
        Ok(c) => c,
        Err(e) => return refused(e, None),
    };
    let mut resp = axum::response::Redirect::to(&started.location).into_response();
    let h = resp.headers_mut();
    h.insert(header::SET_COOKIE, cookie);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The provider's redirect back: the sign-in finished (a session cookie,
/// a 303 to the console at `/ui/`) or refused (a page saying why). The flow
/// cookie is cleared either way: a flow is finished once.
pub async fn callback(
    State(b): State<Arc<Broker>>,
    _: super::SignInAdmitted,
    headers: HeaderMap,
    q: Result<Query<BrowserCallback>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let secure = b.operators.browser_sign_in_secure();
    let clear = flow_cookie(secure, "").ok();
    let Query(cb) = match q {
        Ok(q) => q,
        Err(e) => return refused(ApiError::BadRequest(e.body_text()), clear),
    };
    let flow = cookie(&headers, flow_cookie_name(secure));
    let session = match b.operators.operator_browser_finish(flow, &cb).await {
        Ok(s) => s,
        Err(e) => return refused(ApiError::from(e), clear),
    };
    // The console's session for this operator: its cookie and a 303 to
    // the console, a fixed local page.
    let mut resp = crate::console::start_console_session(&b, &session, true);
    let h = resp.headers_mut();
    if let Some(c) = clear {
        h.append(header::SET_COOKIE, c);
    }
    // The callback's URL carries the code: no page after it is told it.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A refused sign-in, for a person at a browser: the status, and a plain
/// text page saying why and where to start again.
fn refused(e: ApiError, clear: Option<HeaderValue>) -> Response {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!(cause = %e.cause(), "browser sign-in failed");
    }
    let why = if status.is_server_error() {
        "the sign-in cannot be finished now; try again later".to_owned()
    } else {
        e.to_string()
    };
    let body = format!("Sign-in failed: {why}\n\nStart again: {BROWSER_SIGN_IN_START}\n");
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(c) = clear {
        h.append(header::SET_COOKIE, c);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
