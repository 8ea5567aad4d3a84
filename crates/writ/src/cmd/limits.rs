//! `--limit-*` and `--trusted-proxy`: what one listener allows (the broker's
//! and the gateway's alike).

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Connections held at once; past this, new ones wait to be accepted.
    #[arg(long, env = "WRIT_LIMIT_CONNECTIONS", default_value_t = 4096)]
    pub limit_connections: usize,
    /// Connections held at once from one client address; past this, a new
    /// one from it is closed at once.
    #[arg(long, env = "WRIT_LIMIT_CLIENT_CONNECTIONS", default_value_t = 256)]
    pub limit_client_connections: usize,
    /// Seconds a request's headers may take to arrive.
    #[arg(long, env = "WRIT_LIMIT_HEADER_SECS", default_value_t = 10)]
    pub limit_header_secs: u64,
    /// Seconds a request's body may take to arrive after its headers.
    #[arg(long, env = "WRIT_LIMIT_BODY_SECS", default_value_t = 30)]
    pub limit_body_secs: u64,
    /// Seconds a connection with no request in flight stays open.
    #[arg(long, env = "WRIT_LIMIT_IDLE_SECS", default_value_t = 60)]
    pub limit_idle_secs: u64,
    /// A reverse proxy in front of this listener (repeatable): from it, the
    /// client is the address it appended to `X-Forwarded-For`, and it is
    /// not held to the per-client connection limit.
    /// Requests a minute one credential (`Authorization` header) may
    /// make, wherever from; more get 429 with Retry-After. 0: no limit.
    #[arg(long, env = "WRIT_LIMIT_CREDENTIAL_PER_MINUTE", default_value_t = 1200)]
    pub limit_credential_per_minute: u32,
    /// Requests a minute one client address may make, with or without a
    /// credential. 0: no limit.
    #[arg(long, env = "WRIT_LIMIT_CLIENT_PER_MINUTE", default_value_t = 6000)]
    pub limit_client_per_minute: u32,
    /// Requests a minute one client address may make without a credential
    /// (the tightest). 0: no limit.
    #[arg(long, env = "WRIT_LIMIT_ANONYMOUS_PER_MINUTE", default_value_t = 600)]
    pub limit_anonymous_per_minute: u32,
    #[arg(
        long = "trusted-proxy",
        env = "WRIT_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
}

impl LimitArgs {
    pub fn limits(&self) -> anyhow::Result<writ_listen::Limits> {
        if self.limit_connections == 0 || self.limit_client_connections == 0 {
            anyhow::bail!("--limit-connections and --limit-client-connections must be at least 1");
        }
        let secs = |name: &str, s: u64| -> anyhow::Result<Duration> {
            if s == 0 {
                anyhow::bail!("--limit-{name}-secs must be at least 1");
            }
            Ok(Duration::from_secs(s))
        };
        Ok(writ_listen::Limits {
            max_connections: self.limit_connections,
            max_client_connections: self.limit_client_connections,
            header_timeout: secs("header", self.limit_header_secs)?,
            body_timeout: secs("body", self.limit_body_secs)?,
            idle_timeout: secs("idle", self.limit_idle_secs)?,
            trusted_proxies: self.trusted_proxies.clone(),
            tls: None,
            rate: writ_listen::RateLimits {
                credential_per_minute: self.limit_credential_per_minute,
                client_per_minute: self.limit_client_per_minute,
                anonymous_per_minute: self.limit_anonymous_per_minute,
            },
        })
    }
}

impl Default for LimitArgs {
    fn default() -> Self {
        let d = writ_listen::Limits::default();
        Self {
            limit_connections: d.max_connections,
            limit_client_connections: d.max_client_connections,
            limit_header_secs: d.header_timeout.as_secs(),
            limit_body_secs: d.body_timeout.as_secs(),
            limit_idle_secs: d.idle_timeout.as_secs(),
            trusted_proxies: d.trusted_proxies,
            limit_credential_per_minute: d.rate.credential_per_minute,
            limit_client_per_minute: d.rate.client_per_minute,
            limit_anonymous_per_minute: d.rate.anonymous_per_minute,
        }
    }
}
