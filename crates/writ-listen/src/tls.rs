//! TLS for a listener: rustls (aws-lc-rs), TLS 1.2 and 1.3 with the
//! provider's default suites (AEAD with forward secrecy only), HTTP/1.1 by
//! ALPN, and a certificate read from PEM files that is read again when the
//! files change, so that cert-manager or an ACME client can rotate it
//! without a restart.
//!
//! The files are looked at, at most once a [`RECHECK`], when a handshake
//! asks for the certificate. A change is taken only when the new chain and
//! key load and match each other: a rotation caught half written (the
//! certificate replaced, the key not yet) keeps the old pair until the
//! second file lands.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// How often the certificate files are looked at for a change.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the TLS certificate {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("reading the TLS key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the TLS key {key} does not belong to the certificate {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("reading the client CA file {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("the TLS configuration: {0}")]
    Config(String),
}

/// A listener's TLS: its server configuration and the certificate behind it.
#[derive(Clone, Debug)]
pub struct Tls {
    pub(crate) config: Arc<ServerConfig>,
    cert: Arc<ReloadingCert>,
}

impl Tls {
    /// TLS with the certificate chain in `cert` and its key in `key` (PEM).
    /// With `client_ca`, a client may present a certificate issued by one
    /// of its CAs, and handlers find the verified chain as a
    /// [`PeerCertificates`] request extension; a client without one is
    /// still served (endpoints decide what they need).
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let reloading = Arc::new(ReloadingCert::load(cert, key, Arc::clone(&provider))?);
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let ca_err = |message: String| TlsError::ClientCa {
                    path: path.to_owned(),
                    message,
                };
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))? {
                    roots
                        .add(c.map_err(|e| ca_err(e.to_string()))?)
                        .map_err(|e| ca_err(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(ca_err("no certificate in it".into()));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| ca_err(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&reloading) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            cert: reloading,
        })
    }

    /// The end-entity certificate served now (after looking for a change).
    pub fn current_certificate(&self) -> Option<CertificateDer<'static>> {
        self.cert.current().cert.first().cloned()
    }

    /// A client configuration, for a client in this same process (the
    /// broker's embedded gateway), that trusts exactly the certificate this
    /// listener serves at the time of each handshake, whatever names it
    /// carries: the client reaches the listener over loopback, where no
    /// public name applies, and follows rotations.
    pub fn same_process_client(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::clone(&self.cert.provider);
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                cert: Arc::clone(&self.cert),
                provider,
            }))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Trusts the one certificate a [`ReloadingCert`] serves.
#[derive(Debug)]
struct Pinned {
    cert: Arc<ReloadingCert>,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let current = self.cert.current();
        if current
            .cert
            .first()
            .is_some_and(|c| c.as_ref() == end_entity.as_ref())
        {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate chain a client proved it holds the key of (verified
/// against the listener's client CAs), end-entity first.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// When the files were last seen as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    cert: (Option<SystemTime>, u64),
    key: (Option<SystemTime>, u64),
}

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Self {
        let one = |p: &Path| match std::fs::metadata(p) {
            Ok(m) => (m.modified().ok(), m.len()),
            Err(_) => (None, 0),
        };
        Self {
            cert: one(cert),
            key: one(key),
        }
    }
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// A [`ResolvesServerCert`] that reads its files again when they change.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamp = Stamp::of(cert, key);
        let certified = read_pair(cert, key, &provider)?;
        Ok(Self {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            provider,
            loaded: Mutex::new(Loaded {
                key: Arc::new(certified),
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to serve: the files' new contents when they changed and
    /// load, else what was served before.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.checked.elapsed() >= RECHECK {
            loaded.checked = Instant::now();
            let stamp = Stamp::of(&self.cert_path, &self.key_path);
            if stamp != loaded.stamp {
                match read_pair(&self.cert_path, &self.key_path, &self.provider) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                        loaded.key = Arc::new(k);
                        loaded.stamp = stamp;
                    }
                    // Half written, or broken: keep serving the old pair,
                    // and look again next time.
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded"),
                }
            }
        }
        Arc::clone(&loaded.key)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: cert.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate in it".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, der, provider).map_err(|e| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        message: e.to_string(),
    })
}
