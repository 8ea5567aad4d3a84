//! `--tls-*` and `--insecure-plaintext`: TLS on the broker's and the
//! gateway's listeners, and the rule that a listener anyone else can reach
//! speaks TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;

/// TLS of one listener (`writ gateway`'s), or of the broker's and its
/// embedded gateway's (`writ serve`).
#[derive(Args, Debug, Default, Clone)]
pub struct TlsArgs {
    /// The listener's certificate chain (PEM). Read again when the file
    /// changes, so a renewed certificate is served without a restart.
    #[arg(long, env = "WRIT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WRIT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates the listener
    /// accepts and verifies (gateways and nodes may present one).
    #[arg(long, env = "WRIT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Listen in plaintext on an address other machines can reach. Tokens
    /// and credentials then cross the network readable by anyone on the
    /// path: only behind a proxy that terminates TLS on the same host or a
    /// private link.
    #[arg(long, env = "WRIT_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

/// A listener's TLS from its files, or `None` for plaintext.
pub fn load(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> anyhow::Result<Option<writ_listen::Tls>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(writ_listen::Tls::from_files(c, k, client_ca)?)),
        (None, None) => Ok(None),
        _ => bail!("a TLS certificate needs its key, and a key its certificate"),
    }
}

/// Refuses plaintext on `addr` unless it is a loopback address or the
/// operator said `--insecure-plaintext`.
pub fn check_plaintext(
    what: &str,
    addr: SocketAddr,
    tls: Option<&writ_listen::Tls>,
    insecure_plaintext: bool,
) -> anyhow::Result<()> {
    if tls.is_some() || insecure_plaintext || addr.ip().is_loopback() {
        return Ok(());
    }
    bail!(
        "refusing to listen in plaintext on {addr} ({what}): that address is reachable from other \
         machines, and bearer tokens, admin credentials and secrets would cross the network \
         unencrypted. Give a certificate (--tls-cert and --tls-key{}), listen on a loopback \
         address, or, behind a proxy that terminates TLS, say --insecure-plaintext",
        if what.contains("gateway") && what.contains("embedded") {
            "; the embedded gateway: --gateway-tls-cert and --gateway-tls-key"
        } else {
            ""
        }
    )
}

/// The scheme of URLs for a listener.
pub fn scheme(tls: Option<&writ_listen::Tls>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// Makes every client of this process present `--tls-client-cert` with
/// `--tls-client-key` (both or neither).
pub fn present_client_certificate(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<()> {
    match (cert, key) {
        (Some(c), Some(k)) => writ_client::present_client_certificate(c, k)
            .with_context(|| format!("--tls-client-cert {}", c.display())),
        (None, None) => Ok(()),
        _ => anyhow::bail!("--tls-client-cert and --tls-client-key go together"),
    }
}

/// Reads `--ca-file` into every client this process makes.
pub fn trust_ca_file(path: Option<&Path>) -> anyhow::Result<()> {
    if let Some(p) = path {
        writ_client::trust_ca_file(p).with_context(|| format!("--ca-file {}", p.display()))?;
    }
    Ok(())
}
