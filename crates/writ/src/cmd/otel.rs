//! Trace export over OTLP/HTTP (protobuf), on with `--otlp-endpoint`: the
//! `tracing` spans of requests and decisions go to the collector through
//! `tracing-opentelemetry` and the OpenTelemetry SDK's batch processor;
//! the W3C trace context is read from requests and written to upstream
//! calls (see `writ_listen::trace`).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a collector's answer read (it is a small status message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

static PROVIDER: OnceLock<Mutex<Option<SdkTracerProvider>>> = OnceLock::new();

/// The exporter's HTTP client: the reqwest the rest of writ uses, its
/// requests run on the process's runtime (the SDK's batch processor
/// exports from its own thread, outside it).
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let req = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let http = self.http.clone();
        let answer = self
            .runtime
            .spawn(async move {
                let mut resp = http.execute(req).await?;
                let status = resp.status();
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await? {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok::<_, reqwest::Error>((status, body))
            })
            .await?;
        // The SDK reports nothing itself (its internal logs are off): the
        // operator hears of a collector that cannot be reached or refuses.
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("exporting traces: {e}");
                return Err(e.into());
            }
        };
        if !status.is_success() {
            tracing::warn!("exporting traces: the collector answered {status}");
        }
        let mut resp = http::Response::new(Bytes::from(body));
        *resp.status_mut() = status;
        Ok(resp)
    }
}

/// The collector's traces URL: `endpoint` is its base (as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is), spans go to `/v1/traces` under it.
pub(crate) fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(endpoint)
        .with_context(|| format!("--otlp-endpoint {endpoint}: not a URL"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https"),
        "--otlp-endpoint {endpoint}: http or https only"
    );
    Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
}

/// The share of traces exported (`--otlp-sample-ratio`): from 0.0 (none
/// started here) to 1.0 (all, the default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SampleRatio(f64);

impl Default for SampleRatio {
    fn default() -> Self {
        Self(1.0)
    }
}

impl std::str::FromStr for SampleRatio {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a sampling ratio: give a number from 0.0 to 1.0 \
                 (0.1 exports one trace in ten)"
            )
        };
        let r: f64 = s.trim().parse().map_err(|_| bad())?;
        Self::new(r).map_err(|_| bad())
    }
}

impl SampleRatio {
    /// A ratio from 0.0 to 1.0 (`Err` says what is wrong with `r`).
    pub(crate) fn new(r: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&r) {
            Ok(Self(r))
        } else {
            Err(format!(
                "{r} is not a sampling ratio: give a number from 0.0 to 1.0 \
                 (0.1 exports one trace in ten)"
            ))
        }
    }

    /// Which traces are exported: parent-based, so a request that comes
    /// with a `traceparent` keeps its sender's decision (a sampled agent's
    /// trace goes on through broker and gateway whatever the ratio; one it
    /// did not sample is not exported here either), and a trace that
    /// starts here is sampled by its trace id at the ratio (all of one
    /// trace, or none of it).
    pub(crate) fn sampler(self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler;
        let root = if self.0 >= 1.0 {
            Sampler::AlwaysOn
        } else {
            Sampler::TraceIdRatioBased(self.0)
        };
        Sampler::ParentBased(Box::new(root))
    }
}

/// Builds the tracer provider exporting to `endpoint` as `service`, with
/// the sampling `ratio`, and installs the W3C trace-context propagator
/// (and no other: baggage is neither read nor sent). Returns the layer
/// that bridges `tracing`.
pub(crate) fn layer<S>(
    endpoint: &str,
    service: &'static str,
    ratio: SampleRatio,
) -> anyhow::Result<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the OTLP exporter's HTTP client")?;
    let client = Client {
        http,
        runtime: tokio::runtime::Handle::try_current()
            .context("the OTLP exporter needs the runtime")?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint)?)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("building the OTLP span exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(ratio.sampler())
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer("writ");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = PROVIDER.set(Mutex::new(Some(provider)));
    writ_listen::trace::enable();
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Sends the spans not yet exported and stops the exporter (at the end of
/// `serve` and `gateway`; does nothing when tracing is off).
pub(crate) async fn shutdown() {
    let provider = PROVIDER
        .get()
        .and_then(|m| m.lock().ok().and_then(|mut p| p.take()));
    if let Some(p) = provider {
        // The SDK waits for its export thread, which runs its requests on
        // this runtime: wait off the runtime's workers.
        let done = tokio::task::spawn_blocking(move || p.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!("flushing traces: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample as _};

    use super::SampleRatio;

    #[test]
    fn a_ratio_is_a_number_from_zero_to_one() {
        for ok in ["0", "0.0", "0.25", "1", "1.0", " 0.5 "] {
            assert!(ok.parse::<SampleRatio>().is_ok(), "{ok}");
        }
        for bad in ["", "-0.1", "1.01", "2", "NaN", "inf", "-inf", "half", "10%"] {
            let e = bad.parse::<SampleRatio>().unwrap_err();
            assert!(e.contains("from 0.0 to 1.0"), "{bad}: {e}");
        }
        assert!(
            SampleRatio::new(1.5)
                .unwrap_err()
                .contains("from 0.0 to 1.0")
        );
        assert!(SampleRatio::new(f64::NAN).is_err());
        assert_eq!(SampleRatio::default(), SampleRatio(1.0));
    }

    /// What the sampler decides for a span with `parent` (a remote
    /// `traceparent`, sampled or not) or none.
    fn decide(ratio: &str, parent: Option<bool>, trace: u128) -> SamplingDecision {
        let sampler = ratio.parse::<SampleRatio>().unwrap().sampler();
        let cx = parent.map(|sampled| {
            let flags = if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(trace),
                SpanId::from(7u64),
                flags,
                true,
                TraceState::default(),
            ))
        });
        sampler
            .should_sample(
                cx.as_ref(),
                TraceId::from(trace),
                "request",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision
    }

    #[test]
    fn a_sampled_traceparent_is_honoured_whatever_the_ratio() {
        let sampled = SamplingDecision::RecordAndSample;
        for trace in [1u128, u128::MAX, 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef] {
            assert_eq!(decide("0.0", Some(true), trace), sampled);
            assert_eq!(decide("0.5", Some(true), trace), sampled);
            // An agent that did not sample its trace is not overruled.
            assert_eq!(decide("1.0", Some(false), trace), SamplingDecision::Drop);
            // A trace starting here: all at 1.0, none at 0.0.
            assert_eq!(decide("1.0", None, trace), sampled);
            assert_eq!(decide("0.0", None, trace), SamplingDecision::Drop);
        }
        // At 0.5, about half of the traces that start here.
        let kept = (0..10_000u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834) | 1)
            .filter(|t| decide("0.5", None, *t) == SamplingDecision::RecordAndSample)
            .count();
        assert!((4_000..6_000).contains(&kept), "{kept} of 10000");
    }
}
