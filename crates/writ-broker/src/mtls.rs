//! Attestation with an X.509-SVID over mutual TLS: a second listener
//! (`writ serve --mtls-listen`) that asks every client for a certificate,
//! accepts only those that chain to the trust domain's X.509 authorities,
//! and answers one route, `POST /v1/attest`, for the agent whose SPIFFE ID
//! is the certificate's URI SAN. writ presents an X.509-SVID of its own
//! (`spiffe://<td>/writ`, plus the listener's address), signed by the same
//! authority, so clients verify it against the same bundle.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Json as AxumJson;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use writ_core::AgentName;
use writ_core::api::Attested;

use crate::error::ApiError;
use crate::service::Broker;
use crate::spiffe::ServerSvid;

/// How long writ's own server certificate lives (renewed a day early).
const SERVER_CERT_SECS: i64 = 7 * 86_400;

/// `POST /v1/attest` on the mTLS listener: which agent the client is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MtlsAttest {
    agent: AgentName,
}

/// The SPIFFE ID of the client certificate of this connection.
#[derive(Clone, Debug)]
struct PeerId(String);

async fn attest(
    State(b): State<Arc<Broker>>,
    Extension(PeerId(id)): Extension<PeerId>,
    crate::extract::Json(req): crate::extract::Json<MtlsAttest>,
) -> Result<(StatusCode, AxumJson<Attested>), ApiError> {
    Ok((
        StatusCode::CREATED,
        AxumJson(b.attestations.attest_x509(&req.agent, &id).await?),
    ))
}

/// The URI SAN prefix that names a gateway in a client certificate.
pub(crate) const GATEWAY_SAN_PREFIX: &str = "urn:writ:gateway:";
/// The URI SAN prefix that names a node in a client certificate.
pub(crate) const NODE_SAN_PREFIX: &str = "urn:writ:node:";

/// The gateway a verified client certificate names.
pub(crate) fn gateway_named(certs: &writ_listen::PeerCertificates) -> Option<String> {
    named(certs, GATEWAY_SAN_PREFIX)
}

/// The node a verified client certificate names.
pub(crate) fn node_named(certs: &writ_listen::PeerCertificates) -> Option<String> {
    named(certs, NODE_SAN_PREFIX)
}

/// The one URI SAN `<prefix>NAME` of a certificate's leaf: none when it
/// names several (a certificate is one party).
fn named(certs: &writ_listen::PeerCertificates, prefix: &str) -> Option<String> {
    let leaf = certs.0.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut names = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => u.strip_prefix(prefix),
        _ => None,
    });
    let name = names.next()?;
    names.next().is_none().then(|| name.to_owned())
}

/// The URI SANs that are SPIFFE IDs, from a DER certificate.
fn spiffe_ids(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
                Some((*u).to_owned())
            }
            _ => None,
        })
        .collect()
}

fn tls_config(
    b: &Broker,
    cert: &RwLock<Option<ServerSvid>>,
    hosts: &[String],
) -> Result<Arc<rustls::ServerConfig>, ApiError> {
    let now = b.now();
    let stale = match cert.read() {
        Ok(c) => c
            .as_ref()
            .is_none_or(|c| c.until.secs() - now.secs() < 86_400),
        Err(_) => true,
    };
    if stale {
        let fresh = b.spiffe.server_svid(hosts, now, SERVER_CERT_SECS)?;
        if let Ok(mut c) = cert.write() {
            *c = Some(fresh);
        }
    }
    let (chain, key) = match cert.read() {
        Ok(c) => c
            .as_ref()
            .map(|c| (c.chain.clone(), c.key.clone()))
            .ok_or_else(|| ApiError::Internal("no server certificate".into()))?,
        Err(_) => return Err(ApiError::Internal("server certificate lock".into())),
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in b.spiffe.x509_authorities(now) {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Serves the mTLS attestation listener until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local: SocketAddr = listener.local_addr()?;
    let hosts = vec![local.ip().to_string(), "localhost".to_owned()];
    let cert = Arc::new(RwLock::new(None));
    let app = axum::Router::new()
        .route("/v1/attest", post(attest))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::extract::MAX_BODY_BYTES,
        ))
        .with_state(Arc::clone(&broker));
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "mTLS listener cannot accept");
                    continue;
                }
            },
        };
        let config = match tls_config(&broker, &cert, &hosts) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "mTLS listener cannot set up TLS");
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let accepted =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await;
            let Ok(Ok(tls)) = accepted else {
                return;
            };
            let ids = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| spiffe_ids(leaf))
                .unwrap_or_default();
            // An X.509-SVID names exactly one SPIFFE ID.
            let [id] = ids.as_slice() else {
                return;
            };
            let app = app.layer(Extension(PeerId(id.clone())));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
