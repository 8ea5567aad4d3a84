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

/// Builds the tracer provider exporting to `endpoint` as `service`, and
/// installs the W3C trace-context propagator (and no other: baggage is
/// neither read nor sent). Returns the layer that bridges `tracing`.
pub(crate) fn layer<S>(
    endpoint: &str,
    service: &'static str,
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
