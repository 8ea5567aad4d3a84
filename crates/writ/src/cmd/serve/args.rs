//! The settings of `writ serve`: its flags, and the `--config` file with
//! the same settings under snake_case keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "WRIT_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// The limits of the broker's listener and the embedded gateway's.
    #[command(flatten)]
    pub(super) limits: crate::cmd::limits::LimitArgs,
    /// TLS on the broker's listener.
    #[command(flatten)]
    pub(super) tls: crate::cmd::tls::TlsArgs,
    /// The embedded gateway's certificate chain (PEM; read again when it
    /// changes).
    #[arg(long, env = "WRIT_GATEWAY_TLS_CERT", requires = "gateway_tls_key")]
    pub(super) gateway_tls_cert: Option<PathBuf>,
    /// The private key of --gateway-tls-cert (PEM).
    #[arg(long, env = "WRIT_GATEWAY_TLS_KEY", requires = "gateway_tls_cert")]
    pub(super) gateway_tls_key: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8750].
    #[arg(long, env = "WRIT_LISTEN")]
    pub(super) listen: Option<SocketAddr>,
    /// Where state lives (SQLite database, master key) [default: ./writ-data].
    #[arg(long, env = "WRIT_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// Keep state in PostgreSQL (postgres://user:password@host:port/db)
    /// instead of SQLite in the data directory; replicas share one.
    #[arg(long, env = "WRIT_STORE", hide_env_values = true)]
    pub(super) store: Option<String>,
    /// A directory of Cedar `*.cedar` policies and `*.rules.toml` detection
    /// rules [default with --dev: the shipped examples].
    #[arg(long, env = "WRIT_POLICY_DIR")]
    pub(super) policy_dir: Option<PathBuf>,
    /// Where detection rules' alerts are posted (JSON, signed with
    /// HMAC-SHA256 in X-Writ-Signature); needs WRIT_ALERT_WEBHOOK_SECRET.
    #[arg(long, env = "WRIT_ALERT_WEBHOOK")]
    pub(super) alert_webhook: Option<String>,
    /// The secret alerts are signed with (at least 16 characters; set it
    /// in the environment rather than on the command line).
    #[arg(long, env = "WRIT_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub(super) alert_webhook_secret: Option<String>,
    /// The token issuer URL [default: http://<listen>].
    #[arg(long, env = "WRIT_ISSUER")]
    pub(super) issuer: Option<String>,
    /// SPIFFE trust domain of agent identities [default: writ.local].
    #[arg(long, env = "WRIT_TRUST_DOMAIN")]
    pub(super) trust_domain: Option<String>,
    /// The master key file [default: <data-dir>/master.key].
    #[arg(long, env = "WRIT_MASTER_KEY_FILE")]
    pub(super) master_key_file: Option<PathBuf>,
    /// Seconds a task lease lasts without a heartbeat [default: 120].
    #[arg(long, env = "WRIT_LEASE_TTL")]
    pub(super) lease_ttl: Option<i64>,
    /// The longest hard lifetime a task may ask for, in seconds [default: 28800].
    #[arg(long, env = "WRIT_MAX_TASK_TTL")]
    pub(super) max_task_ttl: Option<i64>,
    /// How often lapsed tasks are swept, in milliseconds [default: 1000].
    #[arg(long, env = "WRIT_SWEEP_INTERVAL_MS")]
    pub(super) sweep_interval_ms: Option<u64>,
    /// Sign and keep a checkpoint of the audit chain every this many
    /// records [default: 1000] ...
    #[arg(long, env = "WRIT_AUDIT_CHECKPOINT_RECORDS")]
    pub(super) audit_checkpoint_records: Option<u64>,
    /// ... or every this many seconds when there are new records [default: 60].
    #[arg(long, env = "WRIT_AUDIT_CHECKPOINT_SECS")]
    pub(super) audit_checkpoint_secs: Option<i64>,
    /// Ended tasks (their approvals and tokens with them) are forgotten
    /// this many seconds after they ended; their audit records stay
    /// [default: 86400].
    #[arg(long, env = "WRIT_TASK_RETENTION_SECS")]
    pub(super) task_retention_secs: Option<i64>,
    /// Audit records older than this many seconds move from the database
    /// to signed segment files in --audit-archive-dir (never one an audit
    /// sink has not acknowledged) [default: off, every record stays].
    #[arg(long, env = "WRIT_AUDIT_RETENTION_SECS")]
    pub(super) audit_retention_secs: Option<i64>,
    /// Where the audit archive's segments are kept [default: <data-dir>/audit-archive].
    #[arg(long, env = "WRIT_AUDIT_ARCHIVE_DIR")]
    pub(super) audit_archive_dir: Option<PathBuf>,
    /// Require server-issued nonces in DPoP proofs (RFC 9449 §8).
    #[arg(long, env = "WRIT_DPOP_NONCES")]
    pub(super) dpop_nonces: bool,
    /// Refuse attestations without a DPoP proof (and mTLS attestations),
    /// so every token writ issues is sender-constrained.
    #[arg(long, env = "WRIT_REQUIRE_DPOP")]
    pub(super) require_dpop: bool,
    /// What tokens are signed with: EdDSA (Ed25519) or ES256 (P-256), for
    /// verifiers that refuse EdDSA. Changing it adds a new signing key; the
    /// old one stays published until its tokens have expired [default: EdDSA].
    #[arg(long, env = "WRIT_SIGNING_ALG")]
    pub(super) signing_alg: Option<writ_core::token::SigningAlg>,
    /// Attestation requests (`/v1/attest`, `/v1/node/attest`) one client
    /// address may make a minute, at once or spread out; more get 429 with
    /// Retry-After. 0: no limit [default: 120].
    #[arg(long, env = "WRIT_LIMIT_ATTEST_PER_MINUTE")]
    pub(super) limit_attest_per_minute: Option<u32>,
    /// Identical attestation failures (same agent, method and reason)
    /// within this many seconds make one audit record with their count
    /// (the first is written at once). 0: one record each [default: 60].
    #[arg(long, env = "WRIT_AUDIT_FOLD_SECS")]
    pub(super) audit_fold_secs: Option<u32>,
    /// How long an approval request waits for a person, seconds [default: 900].
    #[arg(long, env = "WRIT_APPROVAL_TTL")]
    pub(super) approval_ttl: Option<i64>,
    /// The longest lifetime an approved exception may have, seconds [default: 604800].
    #[arg(long, env = "WRIT_MAX_EXCEPTION_TTL")]
    pub(super) max_exception_ttl: Option<i64>,
    /// The deepest delegation chain (a root task is 0) [default: 3].
    #[arg(long, env = "WRIT_MAX_DELEGATION_DEPTH")]
    pub(super) max_delegation_depth: Option<u32>,
    /// Lifetime of X.509-SVIDs, seconds; nodes renew at half of it [default: 3600].
    #[arg(long, env = "WRIT_X509_SVID_TTL")]
    pub(super) x509_svid_ttl: Option<i64>,
    /// Lifetime of JWT-SVIDs, seconds [default: 300].
    #[arg(long, env = "WRIT_JWT_SVID_TTL")]
    pub(super) jwt_svid_ttl: Option<i64>,
    /// Accept JWT-SVIDs of another trust domain: TRUST_DOMAIN=BUNDLE_FILE
    /// (its SPIFFE bundle or JWKS; repeatable, or comma separated).
    #[arg(
        long = "federate",
        env = "WRIT_FEDERATE",
        value_name = "TD=FILE",
        value_delimiter = ','
    )]
    pub(super) federate: Vec<String>,
    /// Operators sign in with this OIDC provider (`writ login`); the
    /// claim-to-role rules are `[[operator_oidc_roles]]` in the config file.
    #[arg(
        long,
        env = "WRIT_OPERATOR_OIDC_ISSUER",
        requires = "operator_oidc_client_id"
    )]
    pub(super) operator_oidc_issuer: Option<String>,
    /// The client id writ is registered with at --operator-oidc-issuer
    /// (the audience of the identity tokens it accepts).
    #[arg(
        long,
        env = "WRIT_OPERATOR_OIDC_CLIENT_ID",
        requires = "operator_oidc_issuer"
    )]
    pub(super) operator_oidc_client_id: Option<String>,
    /// How long a sign-on session lasts, seconds [default: 3600].
    #[arg(long, env = "WRIT_OPERATOR_SESSION_TTL")]
    pub(super) operator_session_ttl: Option<i64>,
    /// Worker threads [default: the number of cores].
    #[arg(long, env = "WRIT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Development mode: example policies, a demo agent and tool, and
    /// printed commands for a first task. Not for production.
    #[arg(long, env = "WRIT_DEV")]
    pub(super) dev: bool,
    /// Address of the gateway inside the broker [default: 127.0.0.1:8751].
    #[arg(long, env = "WRIT_GATEWAY_LISTEN")]
    pub(super) gateway_listen: Option<SocketAddr>,
    /// Also listen here for attestation with X.509-SVIDs over mutual TLS
    /// (`POST /v1/attest` with the agent's SVID as client certificate).
    #[arg(long, env = "WRIT_MTLS_LISTEN")]
    pub(super) mtls_listen: Option<SocketAddr>,
    /// Do not run the gateway inside the broker.
    #[arg(long, env = "WRIT_NO_GATEWAY")]
    pub(super) no_gateway: bool,
    /// Do not serve the operator console at `/ui/` (nor accept its
    /// session cookie).
    #[arg(long, env = "WRIT_NO_CONSOLE")]
    pub(super) no_console: bool,
    /// Serve `/metrics` (broker and embedded gateway) to anyone; without
    /// it, an operator credential of any role is needed.
    #[arg(long, env = "WRIT_METRICS_PUBLIC")]
    pub(super) metrics_public: bool,
    /// Export traces (OTLP over HTTP, protobuf) to the collector at this
    /// base URL (spans go to `<URL>/v1/traces`), and continue the W3C
    /// `traceparent` of requests [default: off].
    #[arg(long, env = "WRIT_OTLP_ENDPOINT")]
    pub(super) otlp_endpoint: Option<String>,
    /// The share of traces starting here that are exported, 0.0 to 1.0
    /// [default: 1.0]; a request's sampled `traceparent` is always
    /// followed (parent-based).
    #[arg(long, env = "WRIT_OTLP_SAMPLE_RATIO", allow_negative_numbers = true)]
    pub(super) otlp_sample_ratio: Option<crate::cmd::otel::SampleRatio>,
    /// The URL agents address the embedded gateway by [default: http://<gateway-listen>].
    #[arg(long, env = "WRIT_GATEWAY_PUBLIC_URL")]
    pub(super) gateway_public_url: Option<String>,
    /// With --dev: use this admin token instead of a random one.
    #[arg(
        long,
        env = "WRIT_DEV_ADMIN_TOKEN",
        hide_env_values = true,
        requires = "dev"
    )]
    pub(super) dev_admin_token: Option<String>,
}

/// The `--config` file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) listen: Option<SocketAddr>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) store: Option<String>,
    pub(super) policy_dir: Option<PathBuf>,
    pub(super) alert_webhook: Option<String>,
    pub(super) alert_webhook_secret: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) trust_domain: Option<String>,
    pub(super) master_key_file: Option<PathBuf>,
    pub(super) lease_ttl: Option<i64>,
    pub(super) max_task_ttl: Option<i64>,
    pub(super) sweep_interval_ms: Option<u64>,
    pub(super) audit_checkpoint_records: Option<u64>,
    pub(super) audit_checkpoint_secs: Option<i64>,
    pub(super) task_retention_secs: Option<i64>,
    pub(super) audit_retention_secs: Option<i64>,
    pub(super) audit_archive_dir: Option<PathBuf>,
    pub(super) dpop_nonces: Option<bool>,
    pub(super) require_dpop: Option<bool>,
    pub(super) signing_alg: Option<writ_core::token::SigningAlg>,
    pub(super) limit_attest_per_minute: Option<u32>,
    pub(super) audit_fold_secs: Option<u32>,
    pub(super) max_delegation_depth: Option<u32>,
    pub(super) x509_svid_ttl: Option<i64>,
    pub(super) jwt_svid_ttl: Option<i64>,
    #[serde(default)]
    pub(super) federate: Vec<String>,
    pub(super) approval_ttl: Option<i64>,
    pub(super) max_exception_ttl: Option<i64>,
    pub(super) gateway_listen: Option<SocketAddr>,
    pub(super) mtls_listen: Option<SocketAddr>,
    pub(super) no_gateway: Option<bool>,
    pub(super) no_console: Option<bool>,
    pub(super) metrics_public: Option<bool>,
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_sample_ratio: Option<f64>,
    pub(super) gateway_public_url: Option<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) tls_client_ca: Option<PathBuf>,
    pub(super) gateway_tls_cert: Option<PathBuf>,
    pub(super) gateway_tls_key: Option<PathBuf>,
    pub(super) insecure_plaintext: Option<bool>,
    pub(super) operator_oidc_issuer: Option<String>,
    pub(super) operator_oidc_client_id: Option<String>,
    /// [default: the issuer's discovery document's `jwks_uri`]
    pub(super) operator_oidc_jwks_uri: Option<String>,
    /// [default: RS256, ES256, EdDSA]
    pub(super) operator_oidc_algorithms: Option<Vec<String>>,
    /// The claim a session is named by [default: email].
    pub(super) operator_oidc_name_claim: Option<String>,
    /// Identity tokens issued longer ago than this are refused, seconds
    /// [default: 600].
    pub(super) operator_oidc_max_token_age: Option<i64>,
    pub(super) operator_session_ttl: Option<i64>,
    #[serde(default)]
    pub(super) operator_oidc_roles: Vec<writ_broker::RoleRule>,
    /// The console's sign-in callback as registered at the provider
    /// (`https://HOST/ui/sso/callback`); set, browsers sign in with the
    /// authorization code flow and PKCE.
    pub(super) operator_oidc_redirect_uri: Option<String>,
    /// The client the console signs in as [default: operator_oidc_client_id].
    pub(super) operator_oidc_console_client_id: Option<String>,
    /// A file holding that client's secret [default: none, a public client].
    pub(super) operator_oidc_client_secret_file: Option<PathBuf>,
    /// [default: "openid email profile"]
    pub(super) operator_oidc_scopes: Option<String>,
    /// Audit sinks, `[[sink]]` tables (see `serve/sinks.rs`).
    #[serde(default)]
    pub(super) sink: Vec<super::sinks::SinkFile>,
}
