//! Process metrics through the `metrics` facade, kept in a
//! `prometheus-client` registry and served in the Prometheus text format
//! (0.0.4) or OpenMetrics 1.0, as the scraper asks (one recorder per
//! process: a broker with its embedded gateway exposes both on each
//! listener).
//!
//! Every counter and histogram writ keeps is named here, so that the
//! names stay in one place; the crates that count use these constants
//! with the `metrics` macros.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{
    Key, KeyName, Metadata, Recorder, SharedString, Unit, describe_counter, describe_gauge,
    describe_histogram,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

/// Buckets of every other histogram (counts, such as the jobs in a
/// store commit, at most 256): powers of two.
const COUNT_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The `Content-Type` of an OpenMetrics answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of a Prometheus text answer.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

static METRICS: OnceLock<Option<Arc<Metrics>>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same
/// one). Call it before anything counts: counts made before it are
/// lost. `None` when another recorder was installed first, or after
/// [`disable`].
pub fn install() -> Option<&'static Arc<Metrics>> {
    METRICS
        .get_or_init(|| {
            let metrics = Arc::new(Metrics::default());
            metrics::set_global_recorder(Bridge(metrics.clone())).ok()?;
            describe();
            crate::rate::register_metrics();
            Some(metrics)
        })
        .as_ref()
}

/// Keeps no metrics in this process (call before [`install`]): every
/// count is dropped by the `metrics` facade's no-op recorder and
/// [`render`] is empty. For measuring what the metrics cost.
pub fn disable() {
    let _ = METRICS.set(None);
}

type Labels = Vec<(String, String)>;

/// One metric name's series, by label set.
#[derive(Debug)]
enum Series {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>),
    Histogram(Family<Labels, Histogram, fn() -> Histogram>),
}

fn seconds_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

fn count_histogram() -> Histogram {
    Histogram::new(COUNT_BUCKETS)
}

/// What `describe_*` said of a name.
#[derive(Debug, Clone)]
struct Description {
    help: String,
    seconds: bool,
}

/// Every series this process keeps, and their descriptions; encoded
/// by `prometheus-client` at each scrape.
#[derive(Debug, Default)]
pub struct Metrics {
    series: RwLock<BTreeMap<String, Series>>,
    descriptions: RwLock<HashMap<String, Description>>,
    /// The handle given for each key, so that a macro called on every
    /// request finds its series without building its label set again.
    handles: RwLock<HashMap<Key, Handle>>,
}

#[derive(Clone, Debug)]
enum Handle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Histogram(metrics::Histogram),
}

impl Metrics {
    fn describe(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        let name = name.as_str().to_owned();
        let seconds = unit == Some(Unit::Seconds) || name.ends_with("_seconds");
        self.descriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name,
                Description {
                    help: help.to_string(),
                    seconds,
                },
            );
    }

    fn handle(
        &self,
        key: &Key,
        make: impl FnOnce(&mut BTreeMap<String, Series>) -> Handle,
    ) -> Handle {
        if let Some(handle) = self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return handle.clone();
        }
        let handle = make(&mut self.series.write().unwrap_or_else(PoisonError::into_inner));
        self.handles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert(handle)
            .clone()
    }

    /// The exposition of every metric, in the Prometheus text format
    /// when `openmetrics` is false.
    fn encode(self: &Arc<Self>, openmetrics: bool) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(self.clone())));
        let mut out = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        };
        match encoded {
            Ok(()) => out,
            Err(_) => {
                tracing::error!("metrics could not be encoded");
                String::new()
            }
        }
    }
}

fn labels(key: &Key) -> Labels {
    key.labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

/// The `metrics` facade's recorder, keeping every series in [`Metrics`].
/// A name counted as one kind and later as another keeps its first kind;
/// the other's counts are dropped.
struct Bridge(Arc<Metrics>);

impl Recorder for Bridge {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> metrics::Counter {
        let handle = self.0.handle(key, |series| {
            match series
                .entry(key.name().to_owned())
                .or_insert_with(|| Series::Counter(Family::default()))
            {
                Series::Counter(family) => Handle::Counter(metrics::Counter::from_arc(Arc::new(
                    CounterHandle(family.get_or_create_owned(&labels(key))),
                ))),
                _ => Handle::Counter(metrics::Counter::noop()),
            }
        });
        match handle {
            Handle::Counter(c) => c,
            _ => metrics::Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        let handle = self.0.handle(key, |series| {
            match series
                .entry(key.name().to_owned())
                .or_insert_with(|| Series::Gauge(Family::default()))
            {
                Series::Gauge(family) => Handle::Gauge(metrics::Gauge::from_arc(Arc::new(
                    GaugeHandle(family.get_or_create_owned(&labels(key))),
                ))),
                _ => Handle::Gauge(metrics::Gauge::noop()),
            }
        });
        match handle {
            Handle::Gauge(g) => g,
            _ => metrics::Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        let handle = self.0.handle(key, |series| {
            let make: fn() -> Histogram = if key.name().ends_with("_seconds") {
                seconds_histogram
            } else {
                count_histogram
            };
            match series
                .entry(key.name().to_owned())
                .or_insert_with(|| Series::Histogram(Family::new_with_constructor(make)))
            {
                Series::Histogram(family) => Handle::Histogram(metrics::Histogram::from_arc(
                    Arc::new(HistogramHandle(family.get_or_create_owned(&labels(key)))),
                )),
                _ => Handle::Histogram(metrics::Histogram::noop()),
            }
        });
        match handle {
            Handle::Histogram(h) => h,
            _ => metrics::Histogram::noop(),
        }
    }
}

struct CounterHandle(Counter);

impl metrics::CounterFn for CounterHandle {
    fn increment(&self, value: u64) {
        self.0.inc_by(value);
    }

    fn absolute(&self, value: u64) {
        self.0.inner().fetch_max(value, Ordering::Relaxed);
    }
}

struct GaugeHandle(Gauge<f64, std::sync::atomic::AtomicU64>);

impl metrics::GaugeFn for GaugeHandle {
    fn increment(&self, value: f64) {
        self.0.inc_by(value);
    }

    fn decrement(&self, value: f64) {
        self.0.dec_by(value);
    }

    fn set(&self, value: f64) {
        self.0.set(value);
    }
}

struct HistogramHandle(Histogram);

impl metrics::HistogramFn for HistogramHandle {
    fn record(&self, value: f64) {
        self.0.observe(value);
    }
}

/// [`Metrics`] as `prometheus-client` encodes it: each name once, in
/// order, with its help and unit. Counters are registered by the
/// `metrics` macros with their `_total` and seconds with their
/// `_seconds`; the encoders add both back.
#[derive(Debug)]
struct Exposition(Arc<Metrics>);

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = self.0.series.read().unwrap_or_else(PoisonError::into_inner);
        let descriptions = self
            .0
            .descriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let seconds = prometheus_client::registry::Unit::Seconds;
        for (name, series) in series.iter() {
            let description = descriptions.get(name);
            let help = description.map(|d| d.help.as_str()).unwrap_or("");
            let mut base = name.as_str();
            if let Series::Counter(_) = series {
                base = base.strip_suffix("_total").unwrap_or(base);
            }
            let unit = match base.strip_suffix("_seconds") {
                Some(stripped) if description.is_none_or(|d| d.seconds) => {
                    base = stripped;
                    Some(&seconds)
                }
                _ => None,
            };
            match series {
                Series::Counter(family) => family.encode(encoder.encode_descriptor(
                    base,
                    help,
                    unit,
                    family.metric_type(),
                )?)?,
                Series::Gauge(family) => family.encode(encoder.encode_descriptor(
                    base,
                    help,
                    unit,
                    family.metric_type(),
                )?)?,
                Series::Histogram(family) => family.encode(encoder.encode_descriptor(
                    base,
                    help,
                    unit,
                    family.metric_type(),
                )?)?,
            }
        }
        Ok(())
    }
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
    describe_histogram!(
        "writ_store_commit_batch_jobs",
        "Writes committed together in one transaction by the store's writer."
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

/// The exposition of every metric this process keeps, in the
/// Prometheus text format.
pub fn render() -> String {
    install().map(|m| m.encode(false)).unwrap_or_default()
}

/// The exposition in OpenMetrics 1.0 (ending in `# EOF`).
pub fn render_openmetrics() -> String {
    install()
        .map(|m| m.encode(true))
        .unwrap_or_else(|| "# EOF\n".to_owned())
}

/// `/metrics`'s answer: OpenMetrics when the request's `Accept` names
/// `application/openmetrics-text` at least as high as the Prometheus
/// text format (as Prometheus itself asks), the Prometheus text format
/// otherwise.
pub fn response(headers: &HeaderMap) -> Response {
    let (body, content_type) = if wants_openmetrics(headers) {
        (render_openmetrics(), OPENMETRICS)
    } else {
        (render(), PROMETHEUS_TEXT)
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    resp
}

/// Whether the `Accept` headers name OpenMetrics with a quality above
/// zero and no lower than the best they give the Prometheus text format
/// (named, `text/*` or `*/*`). An unreadable header counts as absent.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    let mut openmetrics: Option<f32> = None;
    let mut text: f32 = 0.0;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0_f32;
            for param in parts {
                if let Some((name, v)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    q = v.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => {
                    openmetrics = Some(openmetrics.map_or(q, |o| o.max(q)));
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
    }
    matches!(openmetrics, Some(q) if q > 0.0 && q >= text)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn openmetrics_only_when_asked_at_least_as_high_as_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(&accept(&[prometheus])));
        assert!(wants_openmetrics(&accept(&[
            "application/openmetrics-text"
        ])));
        assert!(wants_openmetrics(&accept(&[
            "text/plain;q=0.5",
            "Application/OpenMetrics-Text; version=1.0.0; q=0.5"
        ])));
        assert!(!wants_openmetrics(&accept(&[])));
        assert!(!wants_openmetrics(&accept(&["*/*"])));
        assert!(!wants_openmetrics(&accept(&["text/plain"])));
        assert!(!wants_openmetrics(&accept(&[
            "application/openmetrics-text;q=0.4,text/plain"
        ])));
        assert!(!wants_openmetrics(&accept(&[
            "application/openmetrics-text;q=0,*/*"
        ])));
        assert!(!wants_openmetrics(&accept(&[
            "application/openmetrics-text;q=nonsense"
        ])));
    }

    fn counted() -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::default());
        let bridge = Bridge(metrics.clone());
        metrics::with_local_recorder(&bridge, || {
            describe_counter!("t_calls_total", "Calls by tool.");
            describe_histogram!("t_latency_seconds", Unit::Seconds, "Latency.");
            for _ in 0..3 {
                metrics::counter!("t_calls_total", "tool" => "crm", "outcome" => "allowed")
                    .increment(1);
            }
            metrics::counter!("t_calls_total", "tool" => "a\"b\\c\nd", "outcome" => "refused")
                .increment(2);
            metrics::counter!("t_calls_total", "tool" => "crm", "outcome" => "allowed").absolute(2);
            metrics::gauge!("t_live").set(4.5);
            metrics::gauge!("t_live").decrement(0.5);
            metrics::histogram!("t_latency_seconds").record(0.003);
            metrics::histogram!("t_batch_jobs").record(3.0);
            // The same name as another kind keeps its first kind.
            metrics::gauge!("t_calls_total").set(99.0);
        });
        metrics
    }

    #[test]
    fn both_formats_carry_every_series() {
        let metrics = counted();
        let text = metrics.encode(false);
        assert!(
            text.contains("# HELP t_calls_total Calls by tool.\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE t_calls_total counter\n"), "{text}");
        assert!(
            text.contains("t_calls_total{tool=\"crm\",outcome=\"allowed\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("t_calls_total{tool=\"a\\\"b\\\\c\\nd\",outcome=\"refused\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE t_live gauge\nt_live 4.0\n"), "{text}");
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("t_batch_jobs_bucket{le=\"4\"} 1\n"), "{text}");
        assert!(!text.contains("99"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");

        let om = metrics.encode(true);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE t_calls counter\n"), "{om}");
        assert!(
            om.contains("t_calls_total{tool=\"crm\",outcome=\"allowed\"} 3\n"),
            "{om}"
        );
        assert!(om.contains("# UNIT t_latency_seconds seconds\n"), "{om}");
        assert!(om.contains("t_latency_seconds_count 1\n"), "{om}");
        assert!(
            om.contains("t_latency_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{om}"
        );
    }
}
