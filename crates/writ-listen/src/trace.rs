//! Request spans and W3C trace context, for when the process exports
//! traces (`--otlp-endpoint`; the binary installs the exporter and calls
//! [`enable`]). Off, nothing here makes a span or reads a header.
//!
//! The context a client sends (`traceparent`, `tracestate`) is untrusted
//! input: a header over its bound is ignored (the request starts a new
//! trace), and it is parsed by the propagator the process installed (W3C
//! trace context only: `baggage` is never read nor sent on).

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The longest `traceparent` read: version 00 is 55 characters; later
/// versions may append fields, this leaves them room and nothing more.
pub const MAX_TRACEPARENT: usize = 128;
/// The longest `tracestate` read (the length W3C asks every vendor to
/// pass on); a longer one is dropped whole.
pub const MAX_TRACESTATE: usize = 512;

/// The headers a gateway owns when it traces: the agent's are replaced
/// with its own continuation, `baggage` is not passed upstream.
pub const CONTEXT_HEADERS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// Marks the process as tracing (once the exporter and propagator are in).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether requests get spans and the trace context is propagated.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Incoming headers as the propagator sees them: the two trace-context
/// headers, each only within its bound.
struct Incoming<'a>(&'a HeaderMap);

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let bound = match key {
            "traceparent" => MAX_TRACEPARENT,
            "tracestate" => MAX_TRACESTATE,
            _ => return None,
        };
        let value = self.0.get(key)?;
        if value.len() > bound {
            return None;
        }
        value.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

struct Outgoing<'a>(&'a mut HeaderMap);

impl Injector for Outgoing<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// A server span for one request, child of the context the client sent
/// (when it parses), with the trace and span ids as fields so that the
/// JSON log lines of the request carry them. [`tracing::Span::none`] when
/// tracing is off.
pub fn request_span(
    service: &'static str,
    method: &str,
    route: &str,
    headers: &HeaderMap,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        service.role = service,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Incoming(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_ids(&span);
    span
}

/// Records the span's OpenTelemetry trace and span ids as its `trace_id`
/// and `span_id` fields (declared empty by whoever made it).
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// Records the response's status on a [`request_span`].
pub fn record_status(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Writes the current span's context into `headers` as `traceparent`
/// (and `tracestate`), after removing whatever trace context headers were
/// there ([`CONTEXT_HEADERS`]). Does nothing when tracing is off.
pub fn inject(headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    for h in CONTEXT_HEADERS {
        headers.remove(h);
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut Outgoing(headers));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_oversized_trace_context_header_is_not_read() {
        let tp = format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16));
        let h = headers(&[
            (
                "traceparent",
                format!("{tp}{}", "x".repeat(MAX_TRACEPARENT)),
            ),
            ("tracestate", format!("k={}", "v".repeat(MAX_TRACESTATE))),
        ]);
        assert_eq!(Incoming(&h).get("traceparent"), None);
        assert_eq!(Incoming(&h).get("tracestate"), None);
        let h = headers(&[("traceparent", tp.clone()), ("tracestate", "k=v".into())]);
        assert_eq!(Incoming(&h).get("traceparent"), Some(tp.as_str()));
        assert_eq!(Incoming(&h).get("tracestate"), Some("k=v"));
    }

    #[test]
    fn baggage_and_other_headers_are_never_read() {
        let h = headers(&[("baggage", "user=admin".into()), ("x-other", "1".into())]);
        assert_eq!(Incoming(&h).get("baggage"), None);
        assert_eq!(Incoming(&h).get("x-other"), None);
        assert!(Incoming(&h).keys().is_empty());
    }

    #[test]
    fn off_makes_no_span_and_writes_no_header() {
        assert!(!enabled());
        let span = request_span("gateway", "GET", "/{tool}", &HeaderMap::new());
        assert!(span.is_none());
        let mut h = headers(&[("traceparent", "agent's".into())]);
        inject(&mut h);
        assert_eq!(h.get("traceparent").unwrap(), "agent's");
    }
}
