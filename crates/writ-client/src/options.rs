//! How the HTTP clients of this crate are built: timeouts, redirects, and
//! the process-wide TLS settings (`--ca-file`, `--tls-client-cert`).

use crate::{ClientError, Result};

/// The TLS client configuration a [`ClientOptions`] may carry.
pub use rustls::ClientConfig as TlsClientConfig;

/// CA certificates every client in this process trusts instead of the
/// system's (`--ca-file` / `WRIT_CA_FILE`), set once at startup.
static TRUSTED_CAS: std::sync::RwLock<Option<Vec<reqwest::Certificate>>> =
    std::sync::RwLock::new(None);

/// From now on, every HTTP client this crate builds trusts the CA
/// certificates in the PEM file at `path`, and only those (like curl's
/// `--cacert`): a private CA's broker is reachable, and nothing a public CA
/// issued for its name is believed instead.
pub fn trust_ca_file(path: &std::path::Path) -> Result<()> {
    let bad = |message: String| ClientError::CaFile {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let mut slot = TRUSTED_CAS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *slot = Some(certs);
    Ok(())
}

/// The certificate every client in this process presents when a server
/// asks for one (`--tls-client-cert` / `--tls-client-key`), set once at
/// startup.
static CLIENT_IDENTITY: std::sync::RwLock<Option<reqwest::Identity>> = std::sync::RwLock::new(None);

/// From now on, every HTTP client this crate builds presents the
/// certificate chain in `cert` (PEM) with the private key in `key` (PEM)
/// to a server that asks for one: a broker started with `--tls-client-ca`
/// authenticates a gateway or node by it.
pub fn present_client_certificate(cert: &std::path::Path, key: &std::path::Path) -> Result<()> {
    let bad = |path: &std::path::Path, message: String| ClientError::ClientCertificate {
        path: path.display().to_string(),
        message,
    };
    let mut pem =
        zeroize::Zeroizing::new(std::fs::read(cert).map_err(|e| bad(cert, e.to_string()))?);
    let key_pem = zeroize::Zeroizing::new(std::fs::read(key).map_err(|e| bad(key, e.to_string()))?);
    pem.push(b'\n');
    pem.extend_from_slice(&key_pem);
    let identity = reqwest::Identity::from_pem(&pem).map_err(|e| bad(cert, e.to_string()))?;
    let mut slot = CLIENT_IDENTITY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *slot = Some(identity);
    Ok(())
}

/// How the underlying HTTP client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The limit on establishing a connection (none: the overall timeout).
    pub connect_timeout: Option<std::time::Duration>,
    /// The limit on a whole request, long-polls included.
    pub timeout: std::time::Duration,
    /// Whether redirects are followed.
    pub follow_redirects: bool,
    /// A TLS configuration to use instead of the default one (which trusts
    /// the system's CAs, or the ones given to [`trust_ca_file`]).
    pub tls: Option<TlsClientConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: None,
            timeout: std::time::Duration::from_secs(30),
            follow_redirects: true,
            tls: None,
        }
    }
}

impl ClientOptions {
    /// A gateway's or node's link to the broker: no redirects, a short
    /// connect timeout, and `timeout` for the whole request (long enough
    /// for the revocation long-poll).
    pub fn service(
        connect_timeout: Option<std::time::Duration>,
        timeout: std::time::Duration,
    ) -> Self {
        Self {
            connect_timeout,
            timeout,
            follow_redirects: false,
            tls: None,
        }
    }

    /// The HTTP client these options describe.
    pub fn http(&self) -> std::result::Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder().timeout(self.timeout);
        if let Some(c) = self.connect_timeout {
            builder = builder.connect_timeout(c);
        }
        if !self.follow_redirects {
            builder = builder.redirect(reqwest::redirect::Policy::none());
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls_backend_preconfigured(tls.clone());
        } else {
            if let Some(cas) = TRUSTED_CAS
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                builder = builder.tls_certs_only(cas.iter().cloned());
            }
            if let Some(id) = CLIENT_IDENTITY
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                builder = builder.identity(id.clone());
            }
        }
        builder.build()
    }
}
