//! `writ serve`: run the broker.
//!
//! Every setting comes from a flag, else its `WRIT_*` environment variable,
//! else the TOML file given with `--config`, else its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use writ_broker::{Broker, BrokerConfig, DataDir, InitialPolicy};
use writ_core::api::{RegisterAgent, RegisterTool};
use writ_core::{Secret, SystemClock};
use writ_policy::rules::RuleSet;
use writ_policy::{PolicySet, PolicySource};

use crate::output::EXIT_OK;

mod args;
mod sinks;
mod sso;

use args::FileConfig;
pub use args::ServeArgs;
const EXAMPLE_POLICIES: &[(&str, &str)] = &[(
    "tasks.cedar",
    include_str!("../../../../examples/policies/tasks.cedar"),
)];
const EXAMPLE_RULES: &[(&str, &str)] = &[(
    "detect.rules.toml",
    include_str!("../../../../examples/policies/detect.rules.toml"),
)];
/// The example pack's test cases, run on the live set under `--dev`
/// without a policy directory.
const EXAMPLE_TESTS: &str = include_str!("../../../../examples/policies/tests.toml");
const DEMO_AGENT: &str = include_str!("../../../../examples/agents/demo-agent.json");
const DEMO_TOOL: &str = include_str!("../../../../examples/tools/tickets.json");

pub async fn run(mut args: ServeArgs) -> anyhow::Result<u8> {
    let mut file = file_config(&args)?;
    let ratio = match (args.otlp_sample_ratio, file.otlp_sample_ratio) {
        (Some(r), _) => r,
        (None, Some(r)) => super::otel::SampleRatio::new(r)
            .map_err(|e| anyhow::anyhow!("otlp_sample_ratio in the config file: {e}"))?,
        (None, None) => super::otel::SampleRatio::default(),
    };
    init_tracing(
        args.otlp_endpoint
            .as_deref()
            .or(file.otlp_endpoint.as_deref()),
        ratio,
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

    let (policy, rules) = initial_policy(policy_dir.as_deref(), args.dev)?;

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
    let console_url = console_settings(&mut config, &args, &file, limits.tls.is_some(), &issuer);
    config.alert_webhook = alert_webhook(&args, &file)?;
    config.sinks = sinks::sinks(&file.sink)?;

    let mut dir = DataDir::new(&data_dir);
    dir.master_key_file = args.master_key_file.take().or(file.master_key_file.take());
    dir.store = args
        .store
        .clone()
        .or_else(|| file.store.clone())
        .map(Secret::new);

    let dev_token = dev_admin_token(&mut args)?;

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
    announce_console(&broker, console_url.as_deref(), bound);
    // Last, so that whoever waits for this line has seen everything above.
    println!("writ listening on {scheme}://{bound}");

    writ_broker::serve(listener, broker, limits, shutdown_signal()).await?;
    super::otel::shutdown().await;
    tracing::info!("writ stopped");
    Ok(EXIT_OK)
}

/// The serve config file, if one is named.
fn file_config(args: &ServeArgs) -> anyhow::Result<FileConfig> {
    Ok(match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing config {}", p.display()))?
        }
        None => FileConfig::default(),
    })
}

/// The policies and detection rules a start begins with.
fn initial_policy(
    policy_dir: Option<&std::path::Path>,
    dev: bool,
) -> anyhow::Result<(InitialPolicy, RuleSet)> {
    // A policy directory is loaded now and watched; without one, --dev uses
    // the shipped examples and otherwise the last pushed set stays live.
    let policy = match (policy_dir, dev) {
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
    let rules = match (policy_dir, dev) {
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

    Ok((policy, rules))
}

/// Whether the console is served and its cookie `Secure`; its URL if served.
fn console_settings(
    config: &mut writ_authority::BrokerConfig,
    args: &ServeArgs,
    file: &FileConfig,
    tls: bool,
    issuer: &str,
) -> Option<String> {
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
    config.console_secure = tls || issuer.starts_with("https://") || sso_over_tls;
    config
        .console
        .then(|| format!("{}/ui/", issuer.trim_end_matches('/')))
}

/// In dev mode, the admin credential printed at every start.
fn dev_admin_token(args: &mut ServeArgs) -> anyhow::Result<Option<Secret>> {
    // In dev mode, an admin token is printed at every start: the given one,
    // or a fresh random one.
    Ok(if args.dev {
        Some(Secret::new(match args.dev_admin_token.take() {
            Some(t) if !t.is_empty() => t,
            Some(_) => bail!("--dev-admin-token must not be empty"),
            None => format!("writ_admin_{}", writ_core::random::token_256()?),
        }))
    } else {
        None
    })
}

/// Prints where the console is, warning when its cookies are not safe.
fn announce_console(broker: &writ_broker::Broker, console_url: Option<&str>, bound: SocketAddr) {
    if let Some(url) = console_url {
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
    if let Some(s) = args.task_retention_secs.or(file.task_retention_secs) {
        if s < 0 {
            bail!("--task-retention-secs must not be negative");
        }
        config.task_retention = s;
    }
    if let Some(s) = args.audit_retention_secs.or(file.audit_retention_secs) {
        if s < 1 {
            bail!("--audit-retention-secs must be at least 1");
        }
        config.audit_retention = Some(s);
    }
    config.audit_archive_dir = args
        .audit_archive_dir
        .clone()
        .or(file.audit_archive_dir.clone());

    if policy_dir.is_none() && args.dev {
        config.policy_tests = Some(EXAMPLE_TESTS.to_owned());
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
pub(crate) fn init_tracing(
    otlp: Option<&str>,
    ratio: super::otel::SampleRatio,
    service: &'static str,
) -> anyhow::Result<()> {
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
            super::otel::layer(endpoint, service, ratio)?
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
