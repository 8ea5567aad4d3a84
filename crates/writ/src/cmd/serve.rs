//! `writ serve`: run the broker.
//!
//! Every setting comes from a flag, else its `WRIT_*` environment variable,
//! else the TOML file given with `--config`, else its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;
use writ_broker::{Broker, BrokerConfig, DataDir, InitialPolicy};
use writ_core::api::{RegisterAgent, RegisterTool};
use writ_core::{Secret, SystemClock};
use writ_policy::rules::RuleSet;
use writ_policy::{PolicySet, PolicySource};

use crate::output::EXIT_OK;

mod sso;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "WRIT_CONFIG")]
    config: Option<PathBuf>,
    /// The limits of the broker's listener and the embedded gateway's.
    #[command(flatten)]
    limits: super::limits::LimitArgs,
    /// TLS on the broker's listener.
    #[command(flatten)]
    tls: super::tls::TlsArgs,
    /// The embedded gateway's certificate chain (PEM; read again when it
    /// changes).
    #[arg(long, env = "WRIT_GATEWAY_TLS_CERT", requires = "gateway_tls_key")]
    gateway_tls_cert: Option<PathBuf>,
    /// The private key of --gateway-tls-cert (PEM).
    #[arg(long, env = "WRIT_GATEWAY_TLS_KEY", requires = "gateway_tls_cert")]
    gateway_tls_key: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8750].
    #[arg(long, env = "WRIT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where state lives (SQLite database, master key) [default: ./writ-data].
    #[arg(long, env = "WRIT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep state in PostgreSQL (postgres://user:password@host:port/db)
    /// instead of SQLite in the data directory; replicas share one.
    #[arg(long, env = "WRIT_STORE", hide_env_values = true)]
    store: Option<String>,
    /// A directory of Cedar `*.cedar` policies and `*.rules.toml` detection
    /// rules [default with --dev: the shipped examples].
    #[arg(long, env = "WRIT_POLICY_DIR")]
    policy_dir: Option<PathBuf>,
    /// Where detection rules' alerts are posted (JSON, signed with
    /// HMAC-SHA256 in X-Writ-Signature); needs WRIT_ALERT_WEBHOOK_SECRET.
    #[arg(long, env = "WRIT_ALERT_WEBHOOK")]
    alert_webhook: Option<String>,
    /// The secret alerts are signed with (at least 16 characters; set it
    /// in the environment rather than on the command line).
    #[arg(long, env = "WRIT_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    alert_webhook_secret: Option<String>,
    /// The token issuer URL [default: http://<listen>].
    #[arg(long, env = "WRIT_ISSUER")]
    issuer: Option<String>,
    /// SPIFFE trust domain of agent identities [default: writ.local].
    #[arg(long, env = "WRIT_TRUST_DOMAIN")]
    trust_domain: Option<String>,
    /// The master key file [default: <data-dir>/master.key].
    #[arg(long, env = "WRIT_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Seconds a task lease lasts without a heartbeat [default: 120].
    #[arg(long, env = "WRIT_LEASE_TTL")]
    lease_ttl: Option<i64>,
    /// The longest hard lifetime a task may ask for, in seconds [default: 28800].
    #[arg(long, env = "WRIT_MAX_TASK_TTL")]
    max_task_ttl: Option<i64>,
    /// How often lapsed tasks are swept, in milliseconds [default: 1000].
    #[arg(long, env = "WRIT_SWEEP_INTERVAL_MS")]
    sweep_interval_ms: Option<u64>,
    /// Sign and keep a checkpoint of the audit chain every this many
    /// records [default: 1000] ...
    #[arg(long, env = "WRIT_AUDIT_CHECKPOINT_RECORDS")]
    audit_checkpoint_records: Option<u64>,
    /// ... or every this many seconds when there are new records [default: 60].
    #[arg(long, env = "WRIT_AUDIT_CHECKPOINT_SECS")]
    audit_checkpoint_secs: Option<i64>,
    /// Require server-issued nonces in DPoP proofs (RFC 9449 §8).
    #[arg(long, env = "WRIT_DPOP_NONCES")]
    dpop_nonces: bool,
    /// Refuse attestations without a DPoP proof (and mTLS attestations),
    /// so every token writ issues is sender-constrained.
    #[arg(long, env = "WRIT_REQUIRE_DPOP")]
    require_dpop: bool,
    /// What tokens are signed with: EdDSA (Ed25519) or ES256 (P-256), for
    /// verifiers that refuse EdDSA. Changing it adds a new signing key; the
    /// old one stays published until its tokens have expired [default: EdDSA].
    #[arg(long, env = "WRIT_SIGNING_ALG")]
    signing_alg: Option<writ_core::token::SigningAlg>,
    /// Attestation requests (`/v1/attest`, `/v1/node/attest`) one client
    /// address may make a minute, at once or spread out; more get 429 with
    /// Retry-After. 0: no limit [default: 120].
    #[arg(long, env = "WRIT_LIMIT_ATTEST_PER_MINUTE")]
    limit_attest_per_minute: Option<u32>,
    /// Identical attestation failures (same agent, method and reason)
    /// within this many seconds make one audit record with their count
    /// (the first is written at once). 0: one record each [default: 60].
    #[arg(long, env = "WRIT_AUDIT_FOLD_SECS")]
    audit_fold_secs: Option<u32>,
    /// How long an approval request waits for a person, seconds [default: 900].
    #[arg(long, env = "WRIT_APPROVAL_TTL")]
    approval_ttl: Option<i64>,
    /// The longest lifetime an approved exception may have, seconds [default: 604800].
    #[arg(long, env = "WRIT_MAX_EXCEPTION_TTL")]
    max_exception_ttl: Option<i64>,
    /// The deepest delegation chain (a root task is 0) [default: 3].
    #[arg(long, env = "WRIT_MAX_DELEGATION_DEPTH")]
    max_delegation_depth: Option<u32>,
    /// Lifetime of X.509-SVIDs, seconds; nodes renew at half of it [default: 3600].
    #[arg(long, env = "WRIT_X509_SVID_TTL")]
    x509_svid_ttl: Option<i64>,
    /// Lifetime of JWT-SVIDs, seconds [default: 300].
    #[arg(long, env = "WRIT_JWT_SVID_TTL")]
    jwt_svid_ttl: Option<i64>,
    /// Accept JWT-SVIDs of another trust domain: TRUST_DOMAIN=BUNDLE_FILE
    /// (its SPIFFE bundle or JWKS; repeatable, or comma separated).
    #[arg(
        long = "federate",
        env = "WRIT_FEDERATE",
        value_name = "TD=FILE",
        value_delimiter = ','
    )]
    federate: Vec<String>,
    /// Operators sign in with this OIDC provider (`writ login`); the
    /// claim-to-role rules are `[[operator_oidc_roles]]` in the config file.
    #[arg(
        long,
        env = "WRIT_OPERATOR_OIDC_ISSUER",
        requires = "operator_oidc_client_id"
    )]
    operator_oidc_issuer: Option<String>,
    /// The client id writ is registered with at --operator-oidc-issuer
    /// (the audience of the identity tokens it accepts).
    #[arg(
        long,
        env = "WRIT_OPERATOR_OIDC_CLIENT_ID",
        requires = "operator_oidc_issuer"
    )]
    operator_oidc_client_id: Option<String>,
    /// How long a sign-on session lasts, seconds [default: 3600].
    #[arg(long, env = "WRIT_OPERATOR_SESSION_TTL")]
    operator_session_ttl: Option<i64>,
    /// Worker threads [default: the number of cores].
    #[arg(long, env = "WRIT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Development mode: example policies, a demo agent and tool, and
    /// printed commands for a first task. Not for production.
    #[arg(long, env = "WRIT_DEV")]
    dev: bool,
    /// Address of the gateway inside the broker [default: 127.0.0.1:8751].
    #[arg(long, env = "WRIT_GATEWAY_LISTEN")]
    gateway_listen: Option<SocketAddr>,
    /// Also listen here for attestation with X.509-SVIDs over mutual TLS
    /// (`POST /v1/attest` with the agent's SVID as client certificate).
    #[arg(long, env = "WRIT_MTLS_LISTEN")]
    mtls_listen: Option<SocketAddr>,
    /// Do not run the gateway inside the broker.
    #[arg(long, env = "WRIT_NO_GATEWAY")]
    no_gateway: bool,
    /// Do not serve the operator console at `/ui/` (nor accept its
    /// session cookie).
    #[arg(long, env = "WRIT_NO_CONSOLE")]
    no_console: bool,
    /// Serve `/metrics` (broker and embedded gateway) to anyone; without
    /// it, an operator credential of any role is needed.
    #[arg(long, env = "WRIT_METRICS_PUBLIC")]
    metrics_public: bool,
    /// Export traces (OTLP over HTTP, protobuf) to the collector at this
    /// base URL (spans go to `<URL>/v1/traces`), and continue the W3C
    /// `traceparent` of requests [default: off].
    #[arg(long, env = "WRIT_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The URL agents address the embedded gateway by [default: http://<gateway-listen>].
    #[arg(long, env = "WRIT_GATEWAY_PUBLIC_URL")]
    gateway_public_url: Option<String>,
    /// With --dev: use this admin token instead of a random one.
    #[arg(
        long,
        env = "WRIT_DEV_ADMIN_TOKEN",
        hide_env_values = true,
        requires = "dev"
    )]
    dev_admin_token: Option<String>,
}

/// The `--config` file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    policy_dir: Option<PathBuf>,
    alert_webhook: Option<String>,
    alert_webhook_secret: Option<String>,
    issuer: Option<String>,
    trust_domain: Option<String>,
    master_key_file: Option<PathBuf>,
    lease_ttl: Option<i64>,
    max_task_ttl: Option<i64>,
    sweep_interval_ms: Option<u64>,
    audit_checkpoint_records: Option<u64>,
    audit_checkpoint_secs: Option<i64>,
    dpop_nonces: Option<bool>,
    require_dpop: Option<bool>,
    signing_alg: Option<writ_core::token::SigningAlg>,
    limit_attest_per_minute: Option<u32>,
    audit_fold_secs: Option<u32>,
    max_delegation_depth: Option<u32>,
    x509_svid_ttl: Option<i64>,
    jwt_svid_ttl: Option<i64>,
    #[serde(default)]
    federate: Vec<String>,
    approval_ttl: Option<i64>,
    max_exception_ttl: Option<i64>,
    gateway_listen: Option<SocketAddr>,
    mtls_listen: Option<SocketAddr>,
    no_gateway: Option<bool>,
    no_console: Option<bool>,
    metrics_public: Option<bool>,
    otlp_endpoint: Option<String>,
    gateway_public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    gateway_tls_cert: Option<PathBuf>,
    gateway_tls_key: Option<PathBuf>,
    insecure_plaintext: Option<bool>,
    operator_oidc_issuer: Option<String>,
    operator_oidc_client_id: Option<String>,
    /// [default: the issuer's discovery document's `jwks_uri`]
    operator_oidc_jwks_uri: Option<String>,
    /// [default: RS256, ES256, EdDSA]
    operator_oidc_algorithms: Option<Vec<String>>,
    /// The claim a session is named by [default: email].
    operator_oidc_name_claim: Option<String>,
    /// Identity tokens issued longer ago than this are refused, seconds
    /// [default: 600].
    operator_oidc_max_token_age: Option<i64>,
    operator_session_ttl: Option<i64>,
    #[serde(default)]
    operator_oidc_roles: Vec<writ_broker::RoleRule>,
    /// The console's sign-in callback as registered at the provider
    /// (`https://HOST/ui/sso/callback`); set, browsers sign in with the
    /// authorization code flow and PKCE.
    operator_oidc_redirect_uri: Option<String>,
    /// The client the console signs in as [default: operator_oidc_client_id].
    operator_oidc_console_client_id: Option<String>,
    /// A file holding that client's secret [default: none, a public client].
    operator_oidc_client_secret_file: Option<PathBuf>,
    /// [default: "openid email profile"]
    operator_oidc_scopes: Option<String>,
}

const EXAMPLE_POLICIES: &[(&str, &str)] = &[(
    "tasks.cedar",
    include_str!("../../../../examples/policies/tasks.cedar"),
)];
const EXAMPLE_RULES: &[(&str, &str)] = &[(
    "detect.rules.toml",
    include_str!("../../../../examples/policies/detect.rules.toml"),
)];
const DEMO_AGENT: &str = include_str!("../../../../examples/agents/demo-agent.json");
const DEMO_TOOL: &str = include_str!("../../../../examples/tools/tickets.json");

pub async fn run(mut args: ServeArgs) -> anyhow::Result<u8> {
    let mut file = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing config {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    init_tracing(
        args.otlp_endpoint
            .as_deref()
            .or(file.otlp_endpoint.as_deref()),
        "writ-broker",
    )?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8750)));
    let data_dir = args
        .data_dir
        .take()
        .or(file.data_dir.take())
        .unwrap_or_else(|| PathBuf::from("./writ-data"));
    let policy_dir = args.policy_dir.take().or(file.policy_dir.take());

    // A policy directory is loaded now and watched; without one, --dev uses
    // the shipped examples and otherwise the last pushed set stays live.
    let policy = match (&policy_dir, args.dev) {
        (Some(dir), _) => InitialPolicy::Set {
            set: PolicySet::load_dir(dir)
                .with_context(|| format!("loading policies from {}", dir.display()))?,
            origin: format!("dir:{}", dir.display()),
        },
        (None, true) => InitialPolicy::Set {
            set: PolicySet::compile(
                EXAMPLE_POLICIES
                    .iter()
                    .map(|(n, t)| PolicySource {
                        name: (*n).to_owned(),
                        text: (*t).to_owned(),
                    })
                    .collect(),
            )?,
            origin: "embedded".into(),
        },
        (None, false) => InitialPolicy::Stored,
    };
    // The detection rules beside the policies, checked now like them.
    let rules = match (&policy_dir, args.dev) {
        (Some(dir), _) => RuleSet::load_dir(dir)
            .with_context(|| format!("loading detection rules from {}", dir.display()))?,
        (None, true) => RuleSet::parse(
            &EXAMPLE_RULES
                .iter()
                .map(|(n, t)| PolicySource {
                    name: (*n).to_owned(),
                    text: (*t).to_owned(),
                })
                .collect::<Vec<_>>(),
        )?,
        (None, false) => RuleSet::default(),
    };

    let mut limits = args.limits.limits()?;
    let insecure_plaintext =
        args.tls.insecure_plaintext || file.insecure_plaintext.unwrap_or(false);
    limits.tls = super::tls::load(
        args.tls.tls_cert.as_deref().or(file.tls_cert.as_deref()),
        args.tls.tls_key.as_deref().or(file.tls_key.as_deref()),
        args.tls
            .tls_client_ca
            .as_deref()
            .or(file.tls_client_ca.as_deref()),
    )?;
    super::tls::check_plaintext(
        "the broker",
        listen,
        limits.tls.as_ref(),
        insecure_plaintext,
    )?;
    let scheme = super::tls::scheme(limits.tls.as_ref());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let bound = listener.local_addr()?;
    let issuer = args
        .issuer
        .clone()
        .or_else(|| file.issuer.clone())
        .unwrap_or_else(|| format!("{scheme}://{bound}"));
    if !(issuer.starts_with("http://") || issuer.starts_with("https://")) {
        bail!("--issuer must be an http(s) URL");
    }
    let mut config = broker_config(&issuer, &args, &file, policy_dir.clone())?;
    config.operator_sso = sso::operator_sso(&args, &file).await?;
    config.console = !(args.no_console || file.no_console.unwrap_or(false));
    // The console's cookie is `Secure` whenever browsers reach writ over
    // TLS: this listener's, or a proxy's in front of an https issuer.
    // A browser sign-in coming back over https means browsers reach it over
    // TLS too: the session cookie is then `Secure` as the flow cookie is
    // (the two never disagree).
    let sso_over_tls = config
        .operator_sso
        .as_ref()
        .and_then(|s| s.browser.as_ref())
        .is_some_and(|b| b.redirect_uri.starts_with("https://"));
    config.console_secure = limits.tls.is_some() || issuer.starts_with("https://") || sso_over_tls;
    let console_url = config
        .console
        .then(|| format!("{}/ui/", issuer.trim_end_matches('/')));
    config.alert_webhook = alert_webhook(&args, &file)?;

    let mut dir = DataDir::new(&data_dir);
    dir.master_key_file = args.master_key_file.take().or(file.master_key_file.take());
    dir.store = args
        .store
        .clone()
        .or_else(|| file.store.clone())
        .map(Secret::new);

    // In dev mode, an admin token is printed at every start: the given one,
    // or a fresh random one.
    let dev_token = if args.dev {
        Some(Secret::new(match args.dev_admin_token.take() {
            Some(t) if !t.is_empty() => t,
            Some(_) => bail!("--dev-admin-token must not be empty"),
            None => format!("writ_admin_{}", writ_core::random::token_256()?),
        }))
    } else {
        None
    };

    let opened = writ_broker::open(
        &dir,
        config,
        policy,
        Arc::new(SystemClock),
        dev_token.as_ref(),
    )
    .await?;
    let broker = opened.broker;
    broker.detection.replace(rules);

    if let Some(t) = &opened.bootstrap_admin_token {
        println!();
        println!("Bootstrap admin token (shown once, stored only as a hash; keep it safe):");
        println!("    {}", t.expose());
        println!();
    }
    if let Some(t) = &dev_token {
        dev_banner(&broker, bound, &data_dir, t, console_url.as_deref()).await?;
    }
    let no_gateway = args.no_gateway || file.no_gateway.unwrap_or(false);
    if !no_gateway {
        let mut gw_limits = limits.clone();
        gw_limits.tls = super::tls::load(
            args.gateway_tls_cert
                .as_deref()
                .or(file.gateway_tls_cert.as_deref()),
            args.gateway_tls_key
                .as_deref()
                .or(file.gateway_tls_key.as_deref()),
            None,
        )?;
        let gw = Embedded {
            limits: gw_limits,
            broker_tls: limits.tls.as_ref(),
            insecure_plaintext,
        };
        start_gateway(&args, &file, &broker, bound, &data_dir, gw).await?;
    }
    if let Some(addr) = args.mtls_listen.or(file.mtls_listen) {
        start_mtls(addr, &broker).await?;
    }
    if let Some(url) = &console_url {
        // Over plain HTTP another origin of the same host name (any port)
        // can set cookies this one takes: only loopback is safe so.
        if !broker.config.console_secure && !bound.ip().is_loopback() {
            tracing::warn!(
                %url,
                "the operator console is served over plain HTTP on a non-loopback address: \
                 another site of this host can plant its cookies; serve it over TLS"
            );
        }
        println!("console at {url}");
    }
    // Last, so that whoever waits for this line has seen everything above.
    println!("writ listening on {scheme}://{bound}");

    writ_broker::serve(listener, broker, limits, shutdown_signal()).await?;
    super::otel::shutdown().await;
    tracing::info!("writ stopped");
    Ok(EXIT_OK)
}

/// Where alerts go: a URL and its signing secret, both or neither.
fn alert_webhook(
    args: &ServeArgs,
    file: &FileConfig,
) -> anyhow::Result<Option<writ_authority::alert::AlertWebhook>> {
    let url = args
        .alert_webhook
        .clone()
        .or_else(|| file.alert_webhook.clone());
    let secret = args
        .alert_webhook_secret
        .clone()
        .or_else(|| file.alert_webhook_secret.clone());
    match (url, secret) {
        (None, None) => Ok(None),
        (Some(url), Some(secret)) => {
            let parsed = reqwest::Url::parse(&url).context("--alert-webhook is not a URL")?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("--alert-webhook must be an http(s) URL");
            }
            if secret.len() < 16 {
                bail!("the alert webhook secret must be at least 16 characters");
            }
            Ok(Some(writ_authority::alert::AlertWebhook {
                url,
                secret: Secret::new(secret),
            }))
        }
        (Some(_), None) => bail!(
            "--alert-webhook needs a signing secret: set WRIT_ALERT_WEBHOOK_SECRET (or alert_webhook_secret in the config file)"
        ),
        (None, Some(_)) => bail!("an alert webhook secret is set but no --alert-webhook"),
    }
}

/// The broker's settings from flags, then the config file, then defaults,
/// each checked.
fn broker_config(
    issuer: &str,
    args: &ServeArgs,
    file: &FileConfig,
    policy_dir: Option<PathBuf>,
) -> anyhow::Result<BrokerConfig> {
    let mut config = BrokerConfig::new(issuer.trim_end_matches('/'));
    config.dev = args.dev;
    if let Some(td) = args
        .trust_domain
        .clone()
        .or_else(|| file.trust_domain.clone())
    {
        config.trust_domain = td;
    }
    if let Some(v) = args.lease_ttl.or(file.lease_ttl) {
        if v < 1 {
            bail!("--lease-ttl must be at least 1 second");
        }
        config.lease_ttl = v;
    }
    if let Some(v) = args.max_task_ttl.or(file.max_task_ttl) {
        if v < 1 {
            bail!("--max-task-ttl must be at least 1 second");
        }
        config.max_task_ttl = v;
        config.default_task_ttl = config.default_task_ttl.min(v);
    }
    if let Some(ms) = args.sweep_interval_ms.or(file.sweep_interval_ms) {
        config.sweep_interval = Duration::from_millis(ms.max(10));
    }
    if let Some(n) = args
        .audit_checkpoint_records
        .or(file.audit_checkpoint_records)
    {
        if n < 1 {
            bail!("--audit-checkpoint-records must be at least 1");
        }
        config.audit_checkpoint_records = n;
    }
    if let Some(s) = args.audit_checkpoint_secs.or(file.audit_checkpoint_secs) {
        if s < 1 {
            bail!("--audit-checkpoint-secs must be at least 1");
        }
        config.audit_checkpoint_secs = s;
    }

    config.policy_dir = policy_dir;
    config.dpop_nonces = args.dpop_nonces || file.dpop_nonces.unwrap_or(false);
    config.require_dpop = args.require_dpop || file.require_dpop.unwrap_or(false);
    config.metrics_public = args.metrics_public || file.metrics_public.unwrap_or(false);
    if let Some(alg) = args.signing_alg.or(file.signing_alg) {
        config.signing_alg = alg;
    }
    if let Some(v) = args
        .limit_attest_per_minute
        .or(file.limit_attest_per_minute)
    {
        config.attest_per_minute = v;
    }
    if let Some(s) = args.audit_fold_secs.or(file.audit_fold_secs) {
        config.attest_fold_ms = i64::from(s) * 1000;
    }
    if let Some(v) = args.x509_svid_ttl.or(file.x509_svid_ttl) {
        if !(2..=30 * 86_400).contains(&v) {
            bail!("--x509-svid-ttl must be between 2 seconds and 30 days");
        }
        config.x509_svid_ttl = v;
    }
    if let Some(v) = args.jwt_svid_ttl.or(file.jwt_svid_ttl) {
        if !(10..=86_400).contains(&v) {
            bail!("--jwt-svid-ttl must be between 10 seconds and a day");
        }
        config.jwt_svid_ttl = v;
    }
    let federate = if args.federate.is_empty() {
        &file.federate
    } else {
        &args.federate
    };
    for f in federate {
        let (td, path) = f
            .split_once('=')
            .with_context(|| format!("--federate {f:?}: expected TRUST_DOMAIN=BUNDLE_FILE"))?;
        if writ_broker::spiffe::trust_domain_of(&format!("spiffe://{td}/x")) != Some(td) {
            bail!("--federate: {td:?} is not a trust domain name");
        }
        if td == config.trust_domain {
            bail!("--federate: {td} is writ's own trust domain");
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the bundle of {td} from {path}"))?;
        let set = writ_broker::spiffe::parse_federated_bundle(&text)
            .map_err(|e| anyhow::anyhow!("the bundle of {td} ({path}): {e}"))?;
        config.federated.insert(td.to_owned(), set);
    }
    if let Some(d) = args.max_delegation_depth.or(file.max_delegation_depth) {
        config.max_delegation_depth = d;
    }

    if let Some(v) = args.approval_ttl.or(file.approval_ttl) {
        if v < 1 {
            bail!("--approval-ttl must be at least 1 second");
        }
        config.approval_ttl = v;
    }
    if let Some(v) = args.max_exception_ttl.or(file.max_exception_ttl) {
        if v < config.max_task_ttl {
            bail!("--max-exception-ttl must be at least --max-task-ttl");
        }
        config.max_exception_ttl = v;
    }
    Ok(config)
}

/// How the embedded gateway listens, and how it reaches the broker.
struct Embedded<'a> {
    /// Its listener's limits and TLS.
    limits: writ_listen::Limits,
    /// The broker listener's TLS, if it has one.
    broker_tls: Option<&'a writ_listen::Tls>,
    insecure_plaintext: bool,
}

/// The embedded gateway, on its own listener, reaching the broker over
/// loopback like any other gateway.
async fn start_gateway(
    args: &ServeArgs,
    file: &FileConfig,
    broker: &Arc<writ_broker::Broker>,
    bound: SocketAddr,
    data_dir: &std::path::Path,
    embedded: Embedded<'_>,
) -> anyhow::Result<()> {
    let gw_listen = args
        .gateway_listen
        .or(file.gateway_listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8751)));
    super::tls::check_plaintext(
        "the embedded gateway",
        gw_listen,
        embedded.limits.tls.as_ref(),
        embedded.insecure_plaintext,
    )?;
    let gw_scheme = super::tls::scheme(embedded.limits.tls.as_ref());
    let gw_listener = tokio::net::TcpListener::bind(gw_listen)
        .await
        .with_context(|| format!("binding the gateway to {gw_listen}"))?;
    let gw_bound = gw_listener.local_addr()?;
    let public = args
        .gateway_public_url
        .clone()
        .or_else(|| file.gateway_public_url.clone())
        .unwrap_or_else(|| format!("{gw_scheme}://{gw_bound}"));
    // The embedded gateway reaches the broker over loopback, like any
    // other gateway, with a credential that lives in this process only.
    let mut local = bound;
    if local.ip().is_unspecified() {
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    // Over TLS, it trusts exactly the certificate the broker serves: on
    // loopback, no name in it applies.
    let broker_scheme = super::tls::scheme(embedded.broker_tls);
    let mut cfg = writ_gateway::Config::new(
        format!("{broker_scheme}://{local}"),
        broker
            .gateways
            .embedded_gateway_token()
            .await
            .map_err(startup)?,
        public,
    );
    cfg.spool_dir = Some(data_dir.join("gateway-spool"));
    cfg.metrics_public = args.metrics_public || file.metrics_public.unwrap_or(false);
    cfg.broker_tls = embedded
        .broker_tls
        .map(writ_listen::Tls::same_process_client)
        .transpose()?;
    let gw = writ_gateway::Gateway::start(cfg, Arc::new(SystemClock))?;
    let gw_limits = embedded.limits;
    tokio::spawn(async move {
        // It lives as long as the broker's process.
        let forever = std::future::pending::<()>();
        if let Err(e) = writ_gateway::serve(gw, gw_listener, gw_limits, forever).await {
            tracing::error!(error = %e, "gateway stopped");
        }
    });
    println!("gateway listening on {gw_scheme}://{gw_bound}");
    Ok(())
}

/// The mTLS attestation listener (X.509-SVIDs).
async fn start_mtls(addr: SocketAddr, broker: &Arc<writ_broker::Broker>) -> anyhow::Result<()> {
    let mtls = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the mTLS listener to {addr}"))?;
    println!(
        "mTLS attestation listening on https://{}",
        mtls.local_addr()?
    );
    let broker = Arc::clone(broker);
    tokio::spawn(async move {
        if let Err(e) = writ_broker::mtls::serve(mtls, broker, std::future::pending()).await {
            tracing::error!(error = %e, "the mTLS listener stopped");
        }
    });
    Ok(())
}

/// Registers the demo agent and tool (once) and prints a first session.
async fn dev_banner(
    broker: &Broker,
    bound: SocketAddr,
    data_dir: &Path,
    admin: &Secret,
    console: Option<&str>,
) -> anyhow::Result<()> {
    let agent: RegisterAgent =
        serde_json::from_str(DEMO_AGENT).context("examples/agents/demo-agent.json")?;
    let tool: RegisterTool =
        serde_json::from_str(DEMO_TOOL).context("examples/tools/tickets.json")?;
    let agent_name = agent.name.clone();
    if broker.store.get_agent(&agent.name).await?.is_none() {
        broker
            .registry
            .register_agent(agent, "system")
            .await
            .map_err(startup)?;
    }
    if broker.store.get_tool(&tool.name).await?.is_none() {
        broker
            .registry
            .register_tool(tool, "system")
            .await
            .map_err(startup)?;
    }
    let jt = broker
        .registry
        .create_join_token(
            &agent_name,
            writ_core::api::CreateJoinToken { ttl: 3600 },
            "system",
        )
        .await
        .map_err(startup)?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "writ".into());
    println!(
        r#"
writ is running in DEV mode: example policies, demo agent "{agent_name}" and tool "tickets",
state in {data}. Not for production.

In another shell:

    alias writ='{exe}'
    export WRIT_ADDR=http://{bound}
    export WRIT_TOKEN='{admin}'

    # 1. Attest as the demo agent with a one-time join token (valid 1 h):
    eval "$(writ attest {agent_name} --join-token {jt} --export)"

    # 2. A read-only task: allowed by policy "read-only".
    eval "$(writ task start --intent 'summarise open tickets' --cap tickets:read --export)"
    writ token inspect "$WRIT_TASK_TOKEN"      # signature valid, introspection active

    # 3. A delete: denied by policy "no-deletes" (exit code 3).
    writ task start --intent 'clean up old tickets' --cap tickets:delete --on-behalf-of user:alice

    # 4. End the task: every token issued under it stops working.
    writ task complete
    writ token inspect "$WRIT_TASK_TOKEN"      # introspection: active false

    writ audit tail && writ audit verify
{console}"#,
        console = match console {
            Some(url) => format!(
                "\nOr open the operator console at {url} and sign in with the admin token above.\n"
            ),
            None => String::new(),
        },
        data = data_dir.display(),
        admin = admin.expose(),
        jt = jt.join_token,
    );
    Ok(())
}

/// A broker error at startup, with its cause: an HTTP client is told only
/// "internal error", the operator starting writ needs to know why.
fn startup(e: writ_authority::Error) -> anyhow::Error {
    anyhow::anyhow!(e.cause())
}

/// How the long-running commands log (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line: timestamp, level, target, message and the
    /// event's fields, with the spans it happened in.
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

pub(crate) fn set_log_format(f: LogFormat) {
    let _ = LOG_FORMAT.set(f);
}

/// Starts logging to stderr (`--log-format`) and, with `otlp` (the
/// collector's base URL), exporting spans as `service`.
pub(crate) fn init_tracing(otlp: Option<&str>, service: &'static str) -> anyhow::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    type Boxed = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;
    // `WRIT_LOG` filters the log lines only: the spans exported are writ's
    // own at their level whatever it says.
    let filter = tracing_subscriber::EnvFilter::try_from_env("WRIT_LOG")
        // The HPACK decoder behind the node's shim logs every table update.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hpack=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let mut layers: Vec<Boxed> = vec![match LOG_FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        // With tracing on, the request's span carries `trace_id` and
        // `span_id`: each line shows its span's fields.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    }];
    if let Some(endpoint) = otlp {
        let writ_only = Targets::new().with_target("writ", LevelFilter::INFO);
        layers.push(
            super::otel::layer(endpoint, service)?
                .with_filter(writ_only)
                .boxed(),
        );
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
