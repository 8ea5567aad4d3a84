//! PostgreSQL over TLS, with rustls.
//!
//! The address takes libpq's parameters: `sslmode=verify-full` (or
//! `require` / `verify-ca`) with `sslrootcert=FILE`, the CA certificates
//! (PEM) the server's certificate must chain to. writ always verifies both
//! the chain and the host name against the certificate, whatever the mode
//! says: a TLS connection that any certificate satisfies protects nothing
//! against whoever sits on the path. `disable`, `allow` and `prefer`
//! without `sslrootcert` connect in plaintext as before.

use std::path::Path;

use postgres::{Client, Config, NoTls};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Where a connection goes, and how it is protected.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: Config,
    tls: Option<MakeRustlsConnect>,
}

impl Target {
    pub(crate) fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            None => self.config.connect(NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        }
    }

    /// The address `url`, its TLS parameters taken out and acted on;
    /// `finish` completes the configuration.
    pub(crate) fn parse(url: &str, finish: impl FnOnce(&mut Config)) -> Result<Self, String> {
        let (rest, mode, root) = split(url)?;
        let mut config: Config = rest.parse().map_err(|e| format!("{e}"))?;
        finish(&mut config);
        let verify = matches!(
            mode.as_deref(),
            Some("require" | "verify-ca" | "verify-full")
        );
        let tls = match (verify, root) {
            (_, Some(root)) => {
                config.ssl_mode(postgres::config::SslMode::Require);
                Some(connector(Path::new(&root))?)
            }
            (true, None) => {
                return Err(format!(
                    "sslmode={} needs sslrootcert=FILE, the CA certificates (PEM) that the \
                     server's certificate must chain to: writ verifies the server",
                    mode.unwrap_or_default()
                ));
            }
            (false, None) => None,
        };
        Ok(Self { config, tls })
    }
}

/// A connector that trusts the CAs in `root` only.
fn connector(root: &Path) -> Result<MakeRustlsConnect, String> {
    let bad = |e: String| format!("sslrootcert {}: {e}", root.display());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root).map_err(|e| bad(e.to_string()))? {
        roots
            .add(c.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `url` without `sslmode` and `sslrootcert` (tokio-postgres knows only
/// some of libpq's modes and not the root file), and their values.
fn split(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root = Some(value);
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = percent_encoding::percent_decode_str(v)
                        .decode_utf8()
                        .map_err(|e| format!("{k}: {e}"))?
                        .into_owned();
                    if !take(k, v) {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        // key=value pairs separated by spaces (quoted values are not
        // taken apart here: the two keys rarely need quoting).
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            if !take(k.trim(), v.trim_matches('\'').to_owned()) {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    if let Some(m) = &mode
        && !matches!(
            m.as_str(),
            "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full"
        )
    {
        return Err(format!("sslmode={m} is not a libpq mode"));
    }
    // Plaintext modes keep tokio-postgres's own handling.
    let rest = match mode.as_deref() {
        Some(m @ ("disable" | "prefer")) if root.is_none() => {
            let sep = if rest.contains("://") {
                if rest.contains('?') { "&" } else { "?" }
            } else {
                " "
            };
            format!("{rest}{sep}sslmode={m}")
        }
        _ => rest,
    };
    Ok((rest, mode, root))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn the_tls_parameters_come_off_the_address() {
        let (rest, mode, root) =
            split("postgres://u:p@db:5432/writ?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x")
                .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/writ?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) =
            split("host=db dbname=writ sslmode=verify-full sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host=db dbname=writ");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        assert!(split("postgres://db/x?sslmode=bogus").is_err());
        let (rest, _, _) = split("postgres://db/x?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://db/x?sslmode=disable");
    }

    #[test]
    fn a_verifying_mode_without_a_root_is_refused() {
        let e = Target::parse("postgres://db/x?sslmode=verify-full", |_| {})
            .err()
            .unwrap();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = Target::parse("postgres://db/x?sslmode=require", |_| {})
            .err()
            .unwrap();
        assert!(e.contains("sslrootcert"), "{e}");
    }
}
