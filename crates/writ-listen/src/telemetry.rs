//! Process metrics in the Prometheus text format, through the `metrics`
//! facade and `metrics-exporter-prometheus` (one recorder per process: a
//! broker with its embedded gateway exposes both on each listener).
//!
//! Every counter and histogram writ keeps is named here, so that the
//! names stay in one place; the crates that count use these constants
//! with the `metrics` macros.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_DURATION: &str = "writ_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "writ_http_rate_limited_total";
pub const DECISIONS: &str = "writ_decisions_total";
pub const GATEWAY_CALLS: &str = "writ_gateway_calls_total";
pub const STORE_COMMIT: &str = "writ_store_commit_duration_seconds";
pub const TOKEN_EXCHANGES: &str = "writ_token_exchanges_total";
pub const LIVE_TASKS: &str = "writ_live_tasks";
pub const LIVE_GRANTS: &str = "writ_live_grants";
pub const APPROVALS_PENDING: &str = "writ_approvals_pending";
pub const REVOCATION_VIEW_AGE: &str = "writ_gateway_revocation_view_age_seconds";
pub const BUNDLE_AGE: &str = "writ_gateway_bundle_age_seconds";

/// Latency buckets (seconds) of every `*_seconds` histogram: 0.5 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same
/// handle). Call it before anything counts: counts made before it are
/// lost. `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            crate::rate::register_metrics();
            Some(handle)
        })
        .as_ref()
}

/// Keeps no metrics in this process (call before [`install`]): every
/// count is dropped by the `metrics` facade's no-op recorder and
/// [`render`] is empty. For measuring what the metrics cost.
pub fn disable() {
    let _ = HANDLE.set(None);
}

fn describe() {
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by service (broker, gateway), route template, method and status."
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused with 429 by the listeners' rate limits, by limit."
    );
    describe_counter!(
        DECISIONS,
        "Policy decisions by enforcement point, action, verdict and policy version."
    );
    describe_counter!(
        GATEWAY_CALLS,
        "Calls through a gateway by tool, agent and outcome (tool and agent under a cardinality bound; past it, \"_other\")."
    );
    describe_histogram!(
        STORE_COMMIT,
        Unit::Seconds,
        "Time from a write's turn at the store's writer to its commit."
    );
    describe_counter!(TOKEN_EXCHANGES, "Token exchanges (RFC 8693) by outcome.");
    describe_gauge!(
        REVOCATION_VIEW_AGE,
        Unit::Seconds,
        "How long ago the gateway last heard from the broker's revocation feed (its lag), at the last scrape."
    );
    describe_gauge!(
        BUNDLE_AGE,
        Unit::Seconds,
        "How long ago the gateway last loaded its bundle (policies, tools, agents), at the last scrape."
    );
    describe_gauge!(LIVE_TASKS, "Tasks not ended, at the last scrape.");
    describe_gauge!(
        LIVE_GRANTS,
        "Tokens issued, not revoked and not expired, at the last scrape."
    );
    describe_gauge!(
        APPROVALS_PENDING,
        "Approval requests waiting for a person, at the last scrape."
    );
}

/// The exposition of every metric this process keeps.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// `/metrics`'s answer: [`render`] as `text/plain; version=0.0.4`.
pub fn response() -> Response {
    let mut resp = render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Middleware (`axum::middleware::from_fn_with_state((SERVICE, FALLBACK), track)`):
/// times each request into [`HTTP_DURATION`], labelled with the route's
/// template (never the path a client chose: `/v1/tasks/{id}`), or
/// `FALLBACK` for the router's fallback (the gateway's tool calls,
/// `/{tool}`). Methods outside the standard ones count as `other`.
/// When the process traces, the request runs in a
/// [`crate::trace::request_span`].
pub async fn track(
    State((service, fallback)): State<(&'static str, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| fallback.to_owned());
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let span = crate::trace::request_span(service, method, &route, req.headers());
    let started = Instant::now();
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    crate::trace::record_status(&span, resp.status().as_u16());
    metrics::histogram!(
        HTTP_DURATION,
        "service" => service,
        "route" => route,
        "method" => method,
        "status" => resp.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    resp
}
