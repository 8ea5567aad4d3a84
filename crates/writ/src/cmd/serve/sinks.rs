//! Audit sinks from the `--config` file: `[[sink]]` tables, each with a
//! `name` and a `kind` (`webhook`, `syslog` or `otlp`), checked at start.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use writ_authority::sinks::{SinkConfig, SyslogTarget, SyslogTls, Target};
use writ_core::Secret;

/// One `[[sink]]` table.
#[derive(Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(in crate::cmd) enum SinkFile {
    Webhook {
        name: String,
        url: String,
        /// The HMAC key, inline ...
        secret: Option<Secret>,
        /// ... or in a file (its surrounding whitespace ignored).
        secret_file: Option<PathBuf>,
    },
    Syslog {
        name: String,
        /// `host:port` of the receiver.
        address: String,
        #[serde(default)]
        tls: bool,
        /// With `tls`: the CA certificates (PEM) the receiver's must chain to.
        ca_file: Option<PathBuf>,
        /// With `tls`: the name its certificate carries [the address's host].
        server_name: Option<String>,
        /// [13, log audit]
        facility: Option<u8>,
        /// The HOSTNAME of messages [this host's name].
        hostname: Option<String>,
    },
    Otlp {
        name: String,
        /// The collector's base URL (logs go to `/v1/logs` under it).
        endpoint: String,
    },
}

/// The configured sinks, each checked; names are unique.
pub(super) fn sinks(file: &[SinkFile]) -> anyhow::Result<Vec<SinkConfig>> {
    let mut out: Vec<SinkConfig> = Vec::with_capacity(file.len());
    for s in file {
        let cfg = sink(s)?;
        if out.iter().any(|o| o.name == cfg.name) {
            bail!("two sinks are named {:?}", cfg.name);
        }
        out.push(cfg);
    }
    Ok(out)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        bail!("sink name {name:?}: 1 to 64 of [A-Za-z0-9._-]");
    }
    Ok(())
}

fn http_url(what: &str, url: &str) -> anyhow::Result<()> {
    let u = reqwest::Url::parse(url).with_context(|| format!("{what}: not a URL"))?;
    if !matches!(u.scheme(), "http" | "https") {
        bail!("{what}: http or https only");
    }
    Ok(())
}

fn sink(s: &SinkFile) -> anyhow::Result<SinkConfig> {
    let (name, target) = match s {
        SinkFile::Webhook {
            name,
            url,
            secret,
            secret_file,
        } => {
            http_url(&format!("sink {name}: url"), url)?;
            let secret = match (secret, secret_file) {
                (Some(s), None) => s.clone(),
                (None, Some(p)) => Secret::new(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("sink {name}: reading {}", p.display()))?
                        .trim(),
                ),
                _ => bail!("sink {name}: a webhook needs one of secret or secret_file"),
            };
            if secret.expose().len() < 16 {
                bail!("sink {name}: the webhook secret must be at least 16 characters");
            }
            let url = url.clone();
            (name, Target::Webhook { url, secret })
        }
        SinkFile::Syslog {
            name,
            address,
            tls,
            ca_file,
            server_name,
            facility,
            hostname,
        } => (
            name,
            syslog(
                name,
                address,
                *tls,
                ca_file,
                server_name,
                *facility,
                hostname,
            )?,
        ),
        SinkFile::Otlp { name, endpoint } => {
            http_url(&format!("sink {name}: endpoint"), endpoint)?;
            let endpoint = endpoint.clone();
            (name, Target::Otlp { endpoint })
        }
    };
    check_name(name)?;
    Ok(SinkConfig {
        name: name.clone(),
        target,
    })
}

fn syslog(
    name: &str,
    address: &str,
    tls: bool,
    ca_file: &Option<PathBuf>,
    server_name: &Option<String>,
    facility: Option<u8>,
    hostname: &Option<String>,
) -> anyhow::Result<Target> {
    let Some((host, port)) = address.rsplit_once(':') else {
        bail!("sink {name}: address must be host:port");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("sink {name}: address must be host:port");
    }
    let facility = facility.unwrap_or(13);
    if facility > 23 {
        bail!("sink {name}: facility is 0 to 23");
    }
    let tls = match (tls, ca_file) {
        (false, None) => None,
        (false, Some(_)) => bail!("sink {name}: ca_file without tls = true"),
        (true, None) => bail!(
            "sink {name}: tls needs ca_file, the CA certificates (PEM) the receiver's \
             certificate must chain to"
        ),
        (true, Some(ca)) => Some(SyslogTls {
            ca_file: ca.clone(),
            server_name: server_name
                .clone()
                .unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned()),
        }),
    };
    let hostname = hostname.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    });
    Ok(Target::Syslog(SyslogTarget {
        address: address.to_owned(),
        tls,
        facility,
        hostname,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct F {
        sink: Vec<SinkFile>,
    }

    fn parse(text: &str) -> anyhow::Result<Vec<SinkConfig>> {
        sinks(&toml::from_str::<F>(text)?.sink)
    }

    #[test]
    fn sinks_are_read_and_checked() {
        let s = parse(
            r#"
            [[sink]]
            name = "siem"
            kind = "webhook"
            url = "https://siem.example/in?token=abc"
            secret = "0123456789abcdef-secret"
            [[sink]]
            name = "logs"
            kind = "syslog"
            address = "logs.example:6514"
            tls = true
            ca_file = "/etc/ca.pem"
            [[sink]]
            name = "otel"
            kind = "otlp"
            endpoint = "http://127.0.0.1:4318"
            "#,
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].target.display(), "https://siem.example/in");
        assert_eq!(s[1].target.display(), "tls://logs.example:6514");
        // The secret is never printed, even in debug output.
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
        for bad in [
            "[[sink]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\nsecret = \"short\"",
            "[[sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"x\"",
            "[[sink]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"x:1\"\ntls = true",
            "[[sink]]\nname = \"a b\"\nkind = \"otlp\"\nendpoint = \"http://x\"",
            "[[sink]]\nname = \"a\"\nkind = \"otlp\"\nendpoint = \"ftp://x\"",
            "[[sink]]\nname = \"a\"\nkind = \"otlp\"\nendpoint = \"http://x\"\nextra = 1",
            "[[sink]]\nname = \"a\"\nkind = \"kafka\"",
            "[[sink]]\nname = \"a\"\nkind = \"otlp\"\nendpoint = \"http://x\"\n[[sink]]\nname = \"a\"\nkind = \"otlp\"\nendpoint = \"http://y\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shipped_example_is_a_valid_serve_config() {
        let text = include_str!("../../../../../examples/sinks/writ.toml");
        let file: crate::cmd::serve::args::FileConfig = toml::from_str(text).unwrap();
        assert_eq!(file.sink.len(), 3);
        // The webhook's secret file is the operator's; the others need none.
        for s in file.sink.iter().skip(1) {
            sink(s).unwrap();
        }
        assert!(
            sink(&file.sink[0])
                .unwrap_err()
                .to_string()
                .contains("siem-webhook.secret")
        );
    }
}
