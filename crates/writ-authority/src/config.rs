//! Broker settings that shape tokens and tasks.

use std::time::Duration;

/// The default of [`BrokerConfig::attest_per_minute`]: an instance
/// attests once per instance token (15 minutes), so this is 1,800 agent
/// instances behind one address, and a burst of 120 at once.
pub const DEFAULT_ATTEST_PER_MINUTE: u32 = 120;

/// The default of [`BrokerConfig::task_retention`]: a day.
pub const DEFAULT_TASK_RETENTION_SECS: i64 = 24 * 60 * 60;

/// Lifetimes and limits. Defaults follow DESIGN.md.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The `iss` of every token and the base of every advertised URL.
    pub issuer: String,
    /// SPIFFE trust domain of agent identities.
    pub trust_domain: String,
    /// Instance token lifetime (seconds).
    pub instance_token_ttl: i64,
    /// Task token lifetime (seconds), never past the task's end.
    pub task_token_ttl: i64,
    /// A task's hard lifetime when the request names none (seconds).
    pub default_task_ttl: i64,
    /// The longest hard lifetime a task may ask for (seconds).
    pub max_task_ttl: i64,
    /// How long a lease lasts without a heartbeat (seconds).
    pub lease_ttl: i64,
    /// The longest lifetime of a join token (seconds).
    pub max_join_token_ttl: i64,
    /// How often the sweeper ends lapsed tasks.
    pub sweep_interval: Duration,
    /// Time limit for fetching an OIDC issuer's JWKS.
    pub oidc_fetch_timeout: Duration,
    /// Tool token lifetime (seconds), never past the task's end.
    pub tool_token_ttl: i64,
    /// The deepest delegation chain (a root task is depth 0).
    pub max_delegation_depth: u32,
    /// Require server-issued nonces in DPoP proofs.
    pub dpop_nonces: bool,
    /// Refuse attestations without a DPoP proof: no bearer token is issued.
    pub require_dpop: bool,
    /// `/metrics` answers anyone (else an operator credential, any role).
    pub metrics_public: bool,
    /// A directory of `*.cedar` files to watch; changes go live within
    /// [`BrokerConfig::policy_poll`].
    pub policy_dir: Option<std::path::PathBuf>,
    pub policy_poll: Duration,
    /// Policy test cases (a `tests.toml`'s text) run on the live and
    /// shadow sets when there is no policy directory (`--dev`'s examples);
    /// with one, its `tests.toml` is.
    pub policy_tests: Option<String>,
    /// How long an approval request waits for a person (seconds).
    pub approval_ttl: i64,
    /// The longest lifetime an approved exception may have (seconds).
    pub max_exception_ttl: i64,
    /// How long a revocation (complete, revoke, quarantine) waits, before
    /// it is acknowledged, for every connected gateway to have taken it.
    pub propagation_wait: Duration,
    /// X.509-SVID lifetime (seconds); nodes renew at half of it.
    pub x509_svid_ttl: i64,
    /// JWT-SVID lifetime (seconds).
    pub jwt_svid_ttl: i64,
    /// Federated trust domains: their JWT authorities, by trust domain.
    pub federated: std::collections::BTreeMap<String, jsonwebtoken::jwk::JwkSet>,
    /// A dev start (`writ serve --dev`): only then do the admin credentials
    /// dev starts made count.
    pub dev: bool,
    /// The broker signs and keeps a checkpoint of the audit chain every
    /// this many records ...
    pub audit_checkpoint_records: u64,
    /// ... or, when there are new records, this many seconds.
    pub audit_checkpoint_secs: i64,
    /// Where the latest checkpoint is also written, outside the database
    /// (`audit-checkpoint.jwt` in the data directory): rows removed from
    /// the database cannot take it with them.
    pub audit_checkpoint_file: Option<std::path::PathBuf>,
    /// Ended tasks (with their approvals and tokens) are forgotten this
    /// many seconds after they ended; their audit records stay.
    pub task_retention: i64,
    /// Audit records older than this many seconds are moved out of the
    /// database into signed archive segments in `audit_archive_dir`
    /// (never one an audit sink has not acknowledged). `None`: every
    /// record stays in the database.
    pub audit_retention: Option<i64>,
    /// Where archive segments are written (`audit-archive` in the data
    /// directory) and read from (reports, `GET /v1/audit`, verification).
    pub audit_archive_dir: Option<std::path::PathBuf>,
    /// Attestation requests (`/v1/attest`, `/v1/node/attest`) one client
    /// address may make a minute, in a burst or spread out; 0 for no limit.
    pub attest_per_minute: u32,
    /// What the broker's tokens are signed with (EdDSA unless asked).
    pub signing_alg: writ_core::token::SigningAlg,
    /// Identical attestation failures within this many milliseconds make
    /// one audit record (see `attest_digest`); 0 writes each.
    pub attest_fold_ms: i64,
    /// Single sign-on for operators: their OIDC provider, and how its
    /// claims map to roles. `None`: nobody signs in that way.
    pub operator_sso: Option<OperatorSso>,
    /// The operator console is served at `/ui/` (`writ serve --no-console`
    /// turns it off; then no console cookie is accepted either).
    pub console: bool,
    /// The console's session cookie is `Secure` (and `__Host-`): the
    /// listener speaks TLS or the issuer is `https`.
    pub console_secure: bool,
    /// How long a console session lasts (seconds), never past the end of
    /// the credential that signed in.
    pub console_session_ttl: i64,
    /// Where detection rules' alerts are posted, signed; `None`: they are
    /// audit records only.
    pub alert_webhook: Option<crate::alert::AlertWebhook>,
    /// Where every audit record is streamed (see [`crate::sinks`]).
    pub sinks: Vec<crate::sinks::SinkConfig>,
}

/// Operators' single sign-on: identity tokens of `issuer` for `client_id`
/// become operator sessions of `session_ttl` seconds, named by the claim
/// `name_claim`, of the role of the first rule their claims match.
#[derive(Clone, Debug)]
pub struct OperatorSso {
    pub issuer: String,
    pub client_id: String,
    /// Where the issuer's keys are (from its discovery document).
    pub jwks_uri: String,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub name_claim: String,
    pub roles: Vec<RoleRule>,
    pub session_ttl: i64,
    /// An identity token issued longer ago than this (seconds) is refused:
    /// a sign-in is fresh, not an old token replayed.
    pub max_token_age: i64,
    /// Sign-in from a browser (the console): the authorization code flow
    /// with PKCE, writ the OIDC client. `None`: only identity tokens
    /// posted to `/v1/login/oidc` (the device flow of `writ login`).
    pub browser: Option<SsoBrowser>,
}

/// The console's sign-in: writ sends the browser to
/// `authorization_endpoint` and redeems the code it comes back with (at
/// `redirect_uri`) at `token_endpoint`, as `client_id`.
#[derive(Clone, Debug)]
pub struct SsoBrowser {
    /// The audience of the identity tokens this flow gets (often the
    /// same client as the device flow's, or one of its own).
    pub client_id: String,
    /// `None`: a public client (PKCE alone proves the code is ours).
    pub client_secret: Option<writ_core::Secret>,
    /// The broker's own callback, exactly as registered at the provider
    /// (`https://writ.example.com/ui/sso/callback`).
    pub redirect_uri: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// Space-separated, `openid` among them.
    pub scopes: String,
}

/// One claim-to-role rule: a token whose claim `claim` is `value` (or, for
/// a list such as `groups`, contains it) gets `role`.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    pub claim: String,
    pub value: String,
    pub role: writ_core::api::Role,
}

impl BrokerConfig {
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            trust_domain: "writ.local".into(),
            instance_token_ttl: 15 * 60,
            task_token_ttl: 10 * 60,
            default_task_ttl: 60 * 60,
            max_task_ttl: 8 * 60 * 60,
            lease_ttl: 120,
            max_join_token_ttl: 24 * 60 * 60,
            sweep_interval: Duration::from_secs(1),
            oidc_fetch_timeout: Duration::from_secs(5),
            tool_token_ttl: 5 * 60,
            x509_svid_ttl: 60 * 60,
            jwt_svid_ttl: 5 * 60,
            federated: std::collections::BTreeMap::new(),
            max_delegation_depth: 3,
            dpop_nonces: false,
            require_dpop: false,
            metrics_public: false,
            policy_dir: None,
            policy_poll: Duration::from_millis(500),
            policy_tests: None,
            approval_ttl: 15 * 60,
            max_exception_ttl: 7 * 24 * 60 * 60,
            propagation_wait: Duration::from_secs(2),
            dev: false,
            audit_checkpoint_records: 1000,
            audit_checkpoint_secs: 60,
            audit_checkpoint_file: None,
            task_retention: DEFAULT_TASK_RETENTION_SECS,
            audit_retention: None,
            audit_archive_dir: None,
            attest_per_minute: DEFAULT_ATTEST_PER_MINUTE,
            signing_alg: writ_core::token::SigningAlg::EdDSA,
            attest_fold_ms: crate::attest_digest::WINDOW_MS,
            operator_sso: None,
            console: true,
            console_secure: false,
            console_session_ttl: 60 * 60,
            alert_webhook: None,
            sinks: Vec::new(),
        }
    }

    /// The longest any token writ issues can live; old signing keys stay
    /// published this long after rotation.
    pub fn max_token_lifetime(&self) -> i64 {
        self.instance_token_ttl
            .max(self.task_token_ttl)
            .max(self.tool_token_ttl)
    }

    /// `issuer` joined with an absolute path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer.trim_end_matches('/'), path)
    }

    /// The agent a token's `sub` names, when it is one of this trust
    /// domain's agent SPIFFE ids.
    pub fn agent_of(&self, sub: &str) -> Option<writ_core::AgentName> {
        sub.strip_prefix("spiffe://")?
            .strip_prefix(self.trust_domain.as_str())?
            .strip_prefix("/agent/")?
            .parse()
            .ok()
    }
}
