//! What a gateway knows, and how it keeps it current: the bundle (policy
//! set, tools, agents), the JWKS, the upstream secrets (memory only) and the
//! revocation set followed from the broker's feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::JwkSet;
use writ_client::{Client, ClientError, ClientOptions};
use writ_core::api::{Agent, GatewayBundle, GatewaySecret, RevocationPage, Tool};
use writ_core::{Clock, Timestamp};
use writ_policy::{PolicySet, PolicySource};

use crate::Config;
use crate::error::GatewayError;

/// A compiled bundle.
#[derive(Debug)]
pub struct Bundle {
    pub issuer: String,
    pub policy: Arc<PolicySet>,
    pub tools: HashMap<String, Tool>,
    pub agents_by_spiffe: HashMap<String, Agent>,
    /// Audiences registered for more than one tool (before writ refused
    /// that): a token with one of them names no tool.
    pub shared_audiences: std::collections::HashSet<String>,
    /// Each agent's refusals in the last five minutes, as the broker counted
    /// them when it made this bundle (`context.behaviour.denials_5m`).
    pub behaviour: HashMap<writ_core::AgentName, u32>,
    /// When the broker counted them.
    pub behaviour_at: Option<writ_core::Timestamp>,
    /// Agents a detection rule held for approval then
    /// (`context.behaviour.requires_approval`).
    pub held_for_approval: std::collections::BTreeSet<writ_core::AgentName>,
    /// This gateway's name, as the broker knows it (`None` from a broker
    /// that does not say: every tool is served).
    pub gateway: Option<String>,
}

impl Bundle {
    /// The tool `name`, when this gateway serves it.
    pub fn served(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name).filter(|t| match &self.gateway {
            Some(g) => t.served_by(g),
            None => t
                .upstream
                .as_ref()
                .is_some_and(writ_core::api::Upstream::is_gateway),
        })
    }

    /// Compiles what the broker sent; `current`'s policy set is kept when
    /// the version is the same.
    pub fn compile(b: GatewayBundle, current: Option<&Bundle>) -> Result<Self, SyncError> {
        let policy = match current {
            Some(c) if c.policy.version() == b.policy_version => Arc::clone(&c.policy),
            _ => {
                let sources = b
                    .files
                    .iter()
                    .map(|(name, text)| PolicySource {
                        name: name.clone(),
                        text: text.clone(),
                    })
                    .collect();
                let set = PolicySet::compile(sources).map_err(SyncError::Policy)?;
                if set.version() != b.policy_version {
                    return Err(SyncError::PolicyVersion {
                        broker: b.policy_version,
                        here: set.version().to_owned(),
                    });
                }
                tracing::info!(policy_version = %set.version(), "gateway policy set is live");
                Arc::new(set)
            }
        };
        let mut seen = std::collections::HashSet::new();
        let shared_audiences = b
            .tools
            .iter()
            .filter(|t| !seen.insert(t.audience.as_str()))
            .map(|t| t.audience.clone())
            .collect();
        Ok(Bundle {
            issuer: b.issuer,
            policy,
            tools: b
                .tools
                .into_iter()
                .map(|t| (t.name.to_string(), t))
                .collect(),
            agents_by_spiffe: b
                .agents
                .into_iter()
                .map(|a| (a.spiffe_id.clone(), a))
                .collect(),
            shared_audiences,
            behaviour: b.behaviour.into_iter().collect(),
            behaviour_at: b.behaviour_at,
            held_for_approval: b.held_for_approval,
            gateway: b.gateway,
        })
    }
}

/// An upstream secret, marked sensitive so it never shows in debug output.
#[derive(Clone)]
pub struct Secret {
    pub header: HeaderName,
    pub value: HeaderValue,
    /// The name as set: for a stdio MCP tool, the environment variable the
    /// server is started with (names there are case-sensitive).
    pub name: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// The gateway's view of the broker.
#[derive(Debug)]
pub struct View {
    pub cfg: Config,
    pub clock: Arc<dyn Clock>,
    /// The broker, with the gateway credential.
    broker: Client,
    bundle: RwLock<Option<Arc<Bundle>>>,
    jwks: RwLock<JwkSet>,
    jwks_refreshed: Mutex<Option<Instant>>,
    secrets: RwLock<HashMap<String, Secret>>,
    /// Revoked `jti` → when the token expires anyway (seconds).
    revoked: RwLock<HashMap<String, i64>>,
    feed_next: AtomicU64,
    /// When the feed last answered (the injected clock's time).
    synced: Mutex<Option<Timestamp>>,
    /// When the bundle was last refreshed (the injected clock's time).
    bundled: Mutex<Option<Timestamp>>,
    /// This process, among the gateways sharing one credential.
    follower: String,
    /// `X-Forwarded-Proto` and `-Host` for upstreams, from the public URL
    /// (read once).
    pub forwarded: Option<(HeaderValue, HeaderValue)>,
    /// Woken when the revocation set changes (for tests and benchmarks).
    pub revocations_seen: tokio::sync::Notify,
    /// Told when revocations or the bundle changed: MCP sessions whose
    /// task or agent ended are ended then.
    pub(crate) changed: tokio::sync::Notify,
}

/// The scheme and host[:port] of the gateway's public URL, as header values.
fn forwarded_of(public_url: &str) -> Option<(HeaderValue, HeaderValue)> {
    let u = url::Url::parse(public_url).ok()?;
    let host = match (u.host_str()?, u.port()) {
        (h, Some(p)) => format!("{h}:{p}"),
        (h, None) => h.to_owned(),
    };
    Some((
        HeaderValue::from_str(u.scheme()).ok()?,
        HeaderValue::from_str(&host).ok()?,
    ))
}

/// A broker call that failed: which one, and how.
#[derive(Debug, thiserror::Error)]
#[error("{}", call_text(.path, .error))]
pub struct BrokerCall {
    /// The broker's endpoint.
    pub path: &'static str,
    #[source]
    pub error: ClientError,
}

impl BrokerCall {
    /// A closure that wraps a failed call to `path`.
    pub(crate) fn to(path: &'static str) -> impl Fn(ClientError) -> Self {
        move |error| Self { path, error }
    }
}

fn call_text(path: &str, e: &ClientError) -> String {
    match e.status() {
        Some(status) => format!("broker answered {status} for {path}: {e}"),
        None => format!("broker unreachable ({path}): {e}"),
    }
}

/// Why the gateway's view of the broker could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Broker(#[from] BrokerCall),
    #[error("the broker's policy set does not compile here: {0}")]
    Policy(#[source] writ_policy::PolicyError),
    #[error("policy version mismatch: broker says {broker}, files hash to {here}")]
    PolicyVersion { broker: String, here: String },
    #[error("broker sent a bad /.well-known/jwks.json: {0}")]
    Jwks(#[source] serde_json::Error),
    #[error("the transaction-token key: {0}")]
    TxnKey(#[source] serde_json::Error),
}

/// Unknown `kid`s trigger a JWKS refetch at most this often.
const JWKS_MIN_INTERVAL: Duration = Duration::from_millis(500);

impl View {
    pub fn new(cfg: Config, clock: Arc<dyn Clock>) -> Result<Self, reqwest::Error> {
        // A 40 s limit leaves room for the revocation long-poll (30 s at most).
        let mut options =
            ClientOptions::service(Some(Duration::from_secs(2)), Duration::from_secs(40));
        options.tls = cfg.broker_tls.clone();
        let http = options.http()?;
        let broker = Client::with_http(&cfg.broker, cfg.token.clone(), http);
        let forwarded = forwarded_of(&cfg.public_url);
        Ok(Self {
            cfg,
            clock,
            broker,
            bundle: RwLock::new(None),
            jwks: RwLock::new(JwkSet { keys: Vec::new() }),
            jwks_refreshed: Mutex::new(None),
            secrets: RwLock::new(HashMap::new()),
            revoked: RwLock::new(HashMap::new()),
            feed_next: AtomicU64::new(0),
            synced: Mutex::new(None),
            bundled: Mutex::new(None),
            follower: writ_core::random::token_128().unwrap_or_else(|_| "0".into()),
            forwarded,
            revocations_seen: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The base URL agents address the gateway by.
    pub(crate) fn public_url(&self) -> &str {
        &self.cfg.public_url
    }

    /// The gateway's broker client (with its credential).
    pub(crate) fn broker(&self) -> &Client {
        &self.broker
    }

    pub fn bundle(&self) -> Option<Arc<Bundle>> {
        match self.bundle.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn secret(&self, tool: &str) -> Option<Secret> {
        self.secrets.read().ok().and_then(|m| m.get(tool).cloned())
    }

    /// The secret to add to a call of `tool`'s upstream. Fails closed: a
    /// tool that requires one is not called (nor its server started)
    /// without it.
    pub fn secret_of(&self, tool: &Tool) -> Result<Option<Secret>, GatewayError> {
        match self.secret(tool.name.as_str()) {
            None if tool.requires_secret() => Err(GatewayError::Unavailable(format!(
                "the upstream secret of {} is not available",
                tool.name
            ))),
            found => Ok(found),
        }
    }

    /// Fetches the bundle and the secrets; recompiles the policy set only
    /// when its version changed.
    pub async fn refresh_bundle(&self) -> Result<(), SyncError> {
        let b = self
            .broker
            .gateway_bundle()
            .await
            .map_err(BrokerCall::to("/v1/gateway/bundle"))?;
        let current = self.bundle();
        let bundle = Bundle::compile(b, current.as_deref())?;
        let secrets: Vec<GatewaySecret> = self
            .broker
            .gateway_secrets()
            .await
            .map_err(BrokerCall::to("/v1/gateway/secrets"))?;
        let mut map = HashMap::new();
        for s in secrets {
            let (Ok(header), Ok(mut value)) = (
                HeaderName::from_bytes(s.header.as_bytes()),
                HeaderValue::from_str(&s.value),
            ) else {
                tracing::error!(tool = %s.tool, "tool secret is not a valid header; the tool is refused");
                continue;
            };
            value.set_sensitive(true);
            map.insert(
                s.tool.to_string(),
                Secret {
                    header,
                    value,
                    name: s.header.clone(),
                },
            );
        }
        if let Ok(mut g) = self.secrets.write() {
            *g = map;
        }
        if let Ok(mut g) = self.bundle.write() {
            *g = Some(Arc::new(bundle));
        }
        if let Ok(mut g) = self.bundled.lock() {
            *g = Some(self.now());
        }
        self.changed.notify_one();
        Ok(())
    }

    pub async fn refresh_jwks(&self) -> Result<(), SyncError> {
        let jwks = self
            .broker
            .jwks()
            .await
            .map_err(BrokerCall::to("/.well-known/jwks.json"))?;
        let set: JwkSet = serde_json::from_value(jwks).map_err(SyncError::Jwks)?;
        if let Ok(mut g) = self.jwks.write() {
            *g = set;
        }
        if let Ok(mut g) = self.jwks_refreshed.lock() {
            *g = Some(Instant::now());
        }
        Ok(())
    }

    /// The JWKS; on an unknown `kid`, refetched (rate-limited) first.
    pub async fn jwks_for(&self, kid: Option<&str>) -> JwkSet {
        let known = |s: &JwkSet| kid.is_none_or(|k| s.find(k).is_some());
        let current = self
            .jwks
            .read()
            .map(|g| g.clone())
            .unwrap_or(JwkSet { keys: Vec::new() });
        if known(&current) {
            return current;
        }
        let due = self
            .jwks_refreshed
            .lock()
            .map(|g| g.is_none_or(|t| t.elapsed() >= JWKS_MIN_INTERVAL))
            .unwrap_or(true);
        if due && let Err(e) = self.refresh_jwks().await {
            tracing::warn!(error = %e, "JWKS refresh failed");
        }
        self.jwks.read().map(|g| g.clone()).unwrap_or(current)
    }

    /// Whether the revocation set and the bundle are fresh enough to decide
    /// with: the feed within the staleness bound, the bundle (policies,
    /// agents, secrets) within six times it.
    pub fn fresh(&self) -> bool {
        let now = self.now();
        let within = |m: &Mutex<Option<Timestamp>>, bound: Duration| {
            m.lock()
                .ok()
                .and_then(|g| *g)
                .is_some_and(|t| now <= t.plus(bound))
        };
        within(&self.synced, self.cfg.staleness)
            && within(&self.bundled, self.cfg.staleness.saturating_mul(6))
    }

    /// How old the revocation view and the bundle are, in seconds (`None`:
    /// never synced), for the metrics.
    pub fn ages(&self) -> (Option<f64>, Option<f64>) {
        let now = self.now().millis();
        let age = |m: &Mutex<Option<Timestamp>>| {
            m.lock()
                .ok()
                .and_then(|g| *g)
                .map(|t| now.saturating_sub(t.millis()).max(0) as f64 / 1000.0)
        };
        (age(&self.synced), age(&self.bundled))
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        // A poisoned lock fails closed.
        self.revoked.read().map_or(true, |m| m.contains_key(jti))
    }

    /// One long-poll of the revocation feed (`wait`: false for the first,
    /// which must answer at once). `Ok(true)` once the view holds every
    /// revocation there was when the broker answered: only then does it
    /// count as fresh. A gateway that lags (the broker no longer waits for
    /// it to acknowledge) thus fails closed once it has lagged for its
    /// staleness bound.
    pub async fn poll_revocations(&self, wait: bool) -> Result<bool, BrokerCall> {
        // Answer well inside the staleness bound even when nothing happens.
        let wait_ms = if wait {
            u64::try_from(self.cfg.staleness.as_millis() / 2)
                .unwrap_or(u64::MAX)
                .clamp(50, 30_000)
        } else {
            0
        };
        let after = self.feed_next.load(Ordering::SeqCst);
        let page: RevocationPage = self
            .broker
            .follow_revocations(after, wait_ms, &self.follower)
            .await
            .map_err(BrokerCall::to("/v1/revocations"))?;
        let now = self.now().secs();
        let changed = !page.revocations.is_empty();
        let caught_up = page.head.is_none_or(|h| page.next >= h);
        if let Ok(mut m) = self.revoked.write() {
            for r in page.revocations {
                m.insert(r.jti, r.expires_at.secs());
            }
            // Forget what has expired anyway (with verification leeway).
            m.retain(|_, exp| *exp + writ_core::token::LEEWAY_SECS >= now);
        }
        self.feed_next.store(page.next, Ordering::SeqCst);
        if caught_up && let Ok(mut g) = self.synced.lock() {
            *g = Some(self.now());
        }
        if changed {
            self.revocations_seen.notify_waiters();
            self.changed.notify_one();
        }
        Ok(caught_up)
    }

    /// Follows the feed for ever, backing off on errors.
    pub async fn follow_revocations(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut caught_up = false;
        loop {
            match self.poll_revocations(caught_up).await {
                Ok(current) => {
                    backoff = Duration::from_millis(100);
                    // Behind: read on at once.
                    caught_up = current;
                }
                Err(e) => {
                    caught_up = false;
                    tracing::warn!(error = %e, "revocation feed failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Refreshes the bundle and secrets for ever.
    pub async fn follow_bundle(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.cfg.refresh).await;
            if let Err(e) = self.refresh_bundle().await {
                tracing::warn!(error = %e, "bundle refresh failed; keeping the last one");
            }
        }
    }

    /// How many revoked tokens are tracked.
    pub fn revoked_len(&self) -> usize {
        self.revoked.read().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    /// A gateway behind the feed's head is not fresh: the broker stops
    /// waiting for a follower that lags, so the follower must not go on
    /// serving as if it held everything.
    #[tokio::test]
    async fn h11_a_gateway_behind_the_head_is_not_fresh() {
        let answers = Arc::new(Mutex::new(vec![
            serde_json::json!({"revocations": [], "next": 9, "head": 9}),
            serde_json::json!({"revocations": [], "next": 5, "head": 9}),
        ]));
        let app = axum::Router::new().route(
            "/v1/revocations",
            axum::routing::get(move || {
                let answers = Arc::clone(&answers);
                async move { axum::Json(answers.lock().unwrap().pop().unwrap()) }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(l, app).await });
        let cfg = Config::new(url, "wgw_test".to_owned(), "http://gw.test".into());
        let view = View::new(cfg, Arc::new(writ_core::SystemClock)).unwrap();
        let synced = || view.synced.lock().unwrap().is_some();
        assert!(!view.poll_revocations(false).await.unwrap());
        assert!(!synced(), "behind the head: not a current view");
        assert!(view.poll_revocations(false).await.unwrap());
        assert!(synced());
        server.abort();
    }
}
