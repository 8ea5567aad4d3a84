//! The broker's logic, free of HTTP: each operation takes typed input and a
//! caller, and returns typed output or an [`Error`].
//!
//! Services with one job each hold only the handles they read (picked
//! from [`Handles`] when the [`Broker`] is built) and are composed here:
//! [`tokens::Tokens`] (issuing and verifying writ's tokens),
//! [`subjects::Subjects`] (what decisions know of who asks),
//! [`policies::Policies`] (every decision), [`attest::Attestations`],
//! [`tasks::Tasks`], [`exchange::Exchange`], [`approvals::Approvals`],
//! [`authzen::AuthZen`], [`gateway::Gateways`], [`clients::Clients`],
//! [`registry::Registry`] (agents and tools), [`audit::Audit`],
//! [`nodes::Nodes`], [`feed::Revocations`], [`dbcreds::DbCredentials`].
//! The `Broker` itself keeps the door (who is calling), operator
//! credentials and sign-in, key rotation and the reports.

mod admin;
pub mod approvals;
pub mod archive;
pub mod attest;
pub mod audit;
pub mod authzen;
pub mod clients;
pub mod console;
pub mod dbcreds;
pub mod exchange;
pub mod feed;
pub mod gateway;
mod login;
mod login_browser;
pub mod nodes;
pub mod operators;
pub mod policies;
mod policy;
pub mod policy_tests;
pub mod registry;
pub mod report;
mod search;
mod shadow;
pub mod subjects;
pub mod tasks;
pub mod tokens;

use std::sync::Arc;

use writ_core::seal::MasterKey;
use writ_core::token::{AccessClaims, TokenKind};
use writ_core::{AgentName, Clock, InstanceId, TaskId, Timestamp};
use writ_policy::PolicySet;
use writ_store::{GrantState, Store};

use crate::config::BrokerConfig;
use crate::dpop::DpopGuard;
use crate::error::Error;
use crate::keys::KeyService;
use crate::metrics::Metrics;
use crate::oidc::OidcVerifier;

pub use approvals::{Asked, CallApproval, MAX_PENDING_CALL_APPROVALS};
pub use login::Via;
pub use login_browser::{
    BROWSER_SIGN_IN_CALLBACK, BROWSER_SIGN_IN_START, BrowserCallback, BrowserSignIn,
    SIGN_IN_FLOW_SECS,
};
pub(crate) use policy::compile_stored;
pub use subjects::DENIAL_WINDOW_SECS;
pub use tokens::hash_secret;

/// Everything a request handler needs, shared by all of them: the services
/// and the handles the methods not yet split out use.
pub struct Broker {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyService>,
    /// The audit chain: reading, verifying, sealing.
    pub audit: Arc<audit::Audit>,
    /// Least-privilege and evidence reports.
    pub reports: report::Reports,
    /// The live policy set, the shadow set beside it, and every decision.
    pub policies: Arc<policies::Policies>,
    /// What decisions know of who is asking.
    pub subjects: Arc<subjects::Subjects>,
    /// RFC 8693 token exchange and delegation.
    pub exchange: exchange::Exchange,
    /// Instances proving which agent they are.
    pub attestations: attest::Attestations,
    /// People deciding held tasks and calls.
    pub approvals: Arc<approvals::Approvals>,
    /// Nodes and their workloads' SVIDs.
    pub nodes: nodes::Nodes,
    /// The revocation feed and who follows it.
    pub revocations: Arc<feed::Revocations>,
    /// Signing, verifying, introspecting and revoking tokens.
    pub tokens: Arc<tokens::Tokens>,
    /// Database roles per task.
    pub db_credentials: dbcreds::DbCredentials,
    /// The trust domain's SPIFFE authorities (X.509 CA, JWT-SVID keys).
    pub spiffe: Arc<crate::spiffe::Authority>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<BrokerConfig>,
    master: Arc<MasterKey>,
    pub metrics: Arc<Metrics>,
    /// Gateways: credentials, bundles, secrets, held calls, decisions.
    pub gateways: Arc<gateway::Gateways>,
    /// Tasks: starts, heartbeats, completion, reads.
    pub tasks: Arc<tasks::Tasks>,
    /// Agents and tools: registration, changes, quarantine, removal.
    pub registry: registry::Registry,
    /// AuthZEN evaluations and searches.
    pub authzen: authzen::AuthZen,
    /// OAuth clients and the published JWKS.
    pub clients: clients::Clients,
    /// Detection rules and their alerts.
    pub detection: crate::detect::Detection,
    /// Audit sinks: their configuration, cursors and delivery.
    pub sinks: Arc<crate::sinks::Sinks>,
    /// Operator credentials, single sign-on and console sessions.
    pub operators: operators::Operators,
    /// What the console reads: audit and task searches, activity, details.
    pub console: console::Console,
    /// The policy directory's test cases, run on the live and shadow sets.
    pub policy_tests: policy_tests::PolicyTests,
    /// When the sweeper last pruned (unix seconds; see `retention`).
    pub(crate) last_prune: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// The handles services are built from: each service clones the ones it
/// reads, so its fields say what it depends on.
pub(crate) struct Handles {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<BrokerConfig>,
    pub keys: Arc<KeyService>,
    pub master: Arc<MasterKey>,
    pub metrics: Arc<Metrics>,
    pub dpop: Arc<DpopGuard>,
    pub oidc: Arc<OidcVerifier>,
    pub spiffe: Arc<crate::spiffe::Authority>,
    pub revocations: Arc<feed::Revocations>,
    pub policies: Arc<policies::Policies>,
}

/// A credential as presented: its scheme, and a DPoP proof if any (the
/// HTTP edge reads it from the headers; the services check it).
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub token: &'a str,
    /// `Authorization: DPoP` rather than `Bearer`.
    pub dpop: bool,
    pub proof: Option<&'a str>,
}

/// Who is calling.
#[derive(Debug)]
pub enum Caller {
    Operator(Operator),
    Agent(Box<AgentCaller>),
}

/// A person (or automation) holding a named operator credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub role: writ_core::api::Role,
}

impl Operator {
    /// How audit records and approvals name this operator.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.name)
    }

    /// Refuses a credential whose role does not hold `duty`, naming the
    /// role needed.
    pub fn require(&self, duty: writ_core::api::Duty) -> Result<(), Error> {
        if self.role.holds(duty) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this needs role {}; credential {:?} has role {}",
                duty.needed(),
                self.name,
                self.role
            )))
        }
    }
}

/// An agent instance, authenticated by a live instance or task token.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub claims: AccessClaims,
    pub state: GrantState,
    /// The DPoP key the caller proved it holds, if its token is bound.
    pub jkt: Option<String>,
}

impl AgentCaller {
    pub fn agent(&self) -> &AgentName {
        &self.state.grant.agent
    }
    pub fn instance_id(&self) -> &InstanceId {
        &self.state.grant.instance_id
    }
    pub fn task_id(&self) -> Option<&TaskId> {
        self.state.grant.task_id.as_ref()
    }
    pub fn actor(&self) -> String {
        format!("instance:{}", self.instance_id())
    }
}

impl Broker {
    pub fn new(
        store: Arc<dyn Store>,
        keys: KeyService,
        spiffe: crate::spiffe::Authority,
        policy: PolicySet,
        clock: Arc<dyn Clock>,
        config: BrokerConfig,
        master: Arc<MasterKey>,
    ) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::default());
        let h = Handles {
            oidc: Arc::new(
                OidcVerifier::new(config.oidc_fetch_timeout, Arc::clone(&clock))
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ),
            dpop: Arc::new(DpopGuard::new(config.dpop_nonces)?),
            keys: Arc::new(keys),
            spiffe: Arc::new(spiffe),
            revocations: Arc::new(feed::Revocations::new(
                Arc::clone(&store),
                config.propagation_wait,
            )),
            policies: Arc::new(policies::Policies::new(
                policy,
                Arc::clone(&store),
                Arc::clone(&clock),
                Arc::clone(&metrics),
            )),
            config: Arc::new(config),
            metrics,
            store,
            clock,
            master,
        };
        // The services others read, then the rest; each takes from `h`
        // only the handles it needs.
        let subjects = Arc::new(subjects::Subjects::new(&h));
        let tokens = Arc::new(tokens::Tokens::new(&h));
        let approvals = Arc::new(approvals::Approvals::new(&h, &subjects));
        let gateways = Arc::new(gateway::Gateways::new(&h, &subjects, &approvals));
        let audit = Arc::new(audit::Audit::new(&h));
        Ok(Self {
            reports: report::Reports::new(&h, &audit),
            audit,
            nodes: nodes::Nodes::new(&h),
            db_credentials: dbcreds::DbCredentials::new(&h),
            exchange: exchange::Exchange::new(&h, &subjects, &tokens),
            attestations: attest::Attestations::new(&h, &tokens),
            tasks: Arc::new(tasks::Tasks::new(&h, &subjects, &tokens)),
            registry: registry::Registry::new(&h, &subjects),
            operators: operators::Operators::new(&h),
            console: console::Console::new(&h),
            policy_tests: policy_tests::PolicyTests::new(&h),
            last_prune: std::sync::atomic::AtomicI64::new(i64::MIN),
            authzen: authzen::AuthZen::new(&h, &subjects, &approvals),
            clients: clients::Clients::new(&h, &tokens, &gateways),
            detection: crate::detect::Detection::new(crate::alert::Alerts::new(
                h.config.alert_webhook.clone(),
            )),
            sinks: Arc::new(crate::sinks::Sinks::new(
                h.config.sinks.clone(),
                Arc::clone(&h.store),
                Arc::clone(&h.clock),
            )),
            gateways,
            approvals,
            tokens,
            subjects,
            store: h.store,
            keys: h.keys,
            spiffe: h.spiffe,
            clock: h.clock,
            config: h.config,
            master: h.master,
            metrics: h.metrics,
            revocations: h.revocations,
            policies: h.policies,
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Sets the gauges of what is live (tasks, grants, pending approvals)
    /// from the store: a scrape's figures are the store's at that moment,
    /// shared by every replica.
    pub async fn sample_live(&self) -> Result<(), Error> {
        let c = self.store.live_counts(self.now()).await?;
        crate::metrics::live(&c);
        Ok(())
    }

    /// Re-reads the signing keys, after another replica rotated them.
    pub(crate) async fn reload_keys(&self) -> Result<(), Error> {
        self.keys.reload(self.store.as_ref(), &self.master).await?;
        self.spiffe.reload(self.store.as_ref(), &self.master).await
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Resolves a credential: an admin token, or a live agent token
    /// presented for `method path`.
    pub async fn caller(
        &self,
        p: &Presented<'_>,
        method: &str,
        path: &str,
    ) -> Result<Caller, Error> {
        if looks_like_jwt(p.token) {
            return self
                .tokens
                .authenticate(p, method, path, TokenKind::Any)
                .await
                .map(|a| Caller::Agent(Box::new(a)));
        }
        if p.dpop {
            return Err(Error::Unauthenticated("invalid credential".into()));
        }
        if let Some(c) = self.operators.credential(p.token).await? {
            Ok(Caller::Operator(Operator {
                name: c.name,
                role: c.role,
            }))
        } else {
            Err(Error::Unauthenticated("invalid credential".into()))
        }
    }

    /// The operator credential `token` is (any role; the caller checks
    /// the duty).
    pub async fn require_operator(&self, token: Option<&str>) -> Result<Operator, Error> {
        let token =
            token.ok_or_else(|| Error::Unauthenticated("missing operator credential".into()))?;
        if looks_like_jwt(token) {
            return Err(Error::Unauthenticated("invalid operator credential".into()));
        }
        match self.operators.credential(token).await? {
            Some(c) => Ok(Operator {
                name: c.name,
                role: c.role,
            }),
            None => Err(Error::Unauthenticated("invalid operator credential".into())),
        }
    }

    /// An operator credential (with its duty still to check) or a gateway
    /// (its name).
    pub async fn require_operator_or_gateway(
        &self,
        token: Option<&str>,
    ) -> Result<gateway::EnforcementPoint, Error> {
        if let Ok(op) = self.require_operator(token).await {
            return Ok(gateway::EnforcementPoint::Operator(op));
        }
        self.gateways
            .require_gateway(token)
            .await
            .map(gateway::EnforcementPoint::Gateway)
            .map_err(|_| Error::Unauthenticated("invalid operator or gateway credential".into()))
    }
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}
