//! The broker's logic, free of HTTP: each operation takes typed input and a
//! caller, and returns typed output or an [`Error`].
//!
//! Services with one job hold only the handles they need and are composed
//! here: [`audit::Audit`], [`policies::Policies`] (every decision),
//! [`nodes::Nodes`], [`feed::Revocations`], [`dbcreds::DbCredentials`]. The
//! rest (agents and their attestation, tasks, exchange, approvals, AuthZEN,
//! gateways) are still methods of [`Broker`], one file each.

mod admin;
mod approvals;
mod attest;
pub mod audit;
pub mod authzen;
mod behaviour;
pub mod clients;
pub mod dbcreds;
pub mod exchange;
pub mod feed;
pub mod gateway;
mod issue;
mod login;
pub mod nodes;
pub mod policies;
mod policy;
pub mod report;
mod search;
mod shadow;
pub mod tasks;
mod tokens;

use std::sync::Arc;

use writ_core::audit::AuditEvent;
use writ_core::seal::MasterKey;
use writ_core::token::{AccessClaims, Expect, TokenKind};
use writ_core::{AgentName, Clock, InstanceId, TaskId, Timestamp};
use writ_policy::PolicySet;
use writ_store::{GrantState, Store};

use crate::config::BrokerConfig;
use crate::dpop::DpopGuard;
use crate::error::{Binding, Error};
use crate::keys::KeyService;
use crate::metrics::Metrics;
use crate::oidc::OidcVerifier;

pub use approvals::{Asked, CallApproval, MAX_PENDING_CALL_APPROVALS};
pub use behaviour::DENIAL_WINDOW_SECS;
pub(crate) use policy::compile_stored;
pub use tokens::hash_secret;

/// Everything a request handler needs, shared by all of them: the services
/// and the handles the methods not yet split out use.
pub struct Broker {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyService>,
    /// The audit chain: reading, verifying, sealing.
    pub audit: audit::Audit,
    /// The live policy set, the shadow set beside it, and every decision.
    pub policies: policies::Policies,
    /// Nodes and their workloads' SVIDs.
    pub nodes: nodes::Nodes,
    /// The revocation feed and who follows it.
    pub revocations: feed::Revocations,
    /// Database roles per task.
    pub db_credentials: dbcreds::DbCredentials,
    /// The trust domain's SPIFFE authorities (X.509 CA, JWT-SVID keys).
    pub spiffe: Arc<crate::spiffe::Authority>,
    pub clock: Arc<dyn Clock>,
    pub config: BrokerConfig,
    master: Arc<MasterKey>,
    oidc: OidcVerifier,
    pub(crate) dpop: DpopGuard,
    /// Per-client rate of attestation requests.
    pub(crate) attest_limit: crate::limit::RateLimiter,
    /// Identical attestation failures, folded in the audit.
    pub(crate) attest_digest: crate::attest_digest::AttestDigest,
    pub metrics: Arc<Metrics>,
    /// Detection rules and their alerts.
    pub detection: crate::detect::Detection,
    embedded_gateway: gateway::EmbeddedGateway,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
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
        let oidc = OidcVerifier::new(config.oidc_fetch_timeout, Arc::clone(&clock))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let dpop = DpopGuard::new(config.dpop_nonces)?;
        let attest_limit = crate::limit::RateLimiter::new(config.attest_per_minute);
        let attest_digest = crate::attest_digest::AttestDigest::new(config.attest_fold_ms);
        let keys = Arc::new(keys);
        let audit = audit::Audit::new(
            Arc::clone(&store),
            Arc::clone(&keys),
            Arc::clone(&clock),
            &config,
        );
        let spiffe = Arc::new(spiffe);
        let nodes = nodes::Nodes::new(
            Arc::clone(&store),
            Arc::clone(&spiffe),
            Arc::clone(&clock),
            &config,
        );
        let revocations = feed::Revocations::new(Arc::clone(&store), config.propagation_wait);
        let db_credentials = dbcreds::DbCredentials::new(
            Arc::clone(&store),
            Arc::clone(&master),
            Arc::clone(&clock),
        );
        let metrics = Arc::new(Metrics::default());
        let policies = policies::Policies::new(
            policy,
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&metrics),
        );
        let detection =
            crate::detect::Detection::new(crate::alert::Alerts::new(config.alert_webhook.clone()));
        Ok(Self {
            detection,
            store,
            audit,
            policies,
            nodes,
            keys,
            spiffe,
            clock,
            config,
            master,
            oidc,
            dpop,
            attest_limit,
            attest_digest,
            metrics,
            embedded_gateway: gateway::EmbeddedGateway::default(),
            revocations,
            db_credentials,
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
                .authenticate(p, method, path, TokenKind::Any)
                .await
                .map(|a| Caller::Agent(Box::new(a)));
        }
        if p.dpop {
            return Err(Error::Unauthenticated("invalid credential".into()));
        }
        if let Some(c) = self.admin_credential(p.token).await? {
            Ok(Caller::Operator(Operator {
                name: c.name,
                role: c.role,
            }))
        } else {
            Err(Error::Unauthenticated("invalid credential".into()))
        }
    }

    /// The admin credential `token` is: one a dev start made counts only
    /// on a dev start.
    async fn admin_credential(
        &self,
        token: &str,
    ) -> Result<Option<writ_core::api::AdminCredential>, Error> {
        let now = self.now();
        Ok(self
            .store
            .admin_token(&hash_secret(token))
            .await?
            .filter(|c| !c.dev || self.config.dev)
            // A single sign-on session is refused from its end on.
            .filter(|c| c.expires_at.is_none_or(|end| now < end)))
    }

    /// The operator credential `token` is (any role; the caller checks
    /// the duty).
    pub async fn require_operator(&self, token: Option<&str>) -> Result<Operator, Error> {
        let token =
            token.ok_or_else(|| Error::Unauthenticated("missing operator credential".into()))?;
        if looks_like_jwt(token) {
            return Err(Error::Unauthenticated("invalid operator credential".into()));
        }
        match self.admin_credential(token).await? {
            Some(c) => Ok(Operator {
                name: c.name,
                role: c.role,
            }),
            None => Err(Error::Unauthenticated("invalid operator credential".into())),
        }
    }

    /// Verifies a token writ issued as presented for `method path`: its
    /// signature and claims, its DPoP binding (a bound token needs the DPoP
    /// scheme and a fresh proof by its key), and that it is still live.
    pub async fn authenticate(
        &self,
        p: &Presented<'_>,
        method: &str,
        path: &str,
        kind: TokenKind,
    ) -> Result<AgentCaller, Error> {
        let claims = self.verify_token(p.token, kind)?;
        let jkt = match self.check_binding(&claims, p, method, path, true) {
            Ok(j) => j,
            Err(e) => {
                // The token is real, so this is its holder (or its thief)
                // trying it without its key: worth a record.
                use writ_core::audit::{AuditKind, Outcome};
                let binding = match &e {
                    Error::Binding(Binding::Proof(writ_core::dpop::DpopError::Replay)) => "replay",
                    Error::Binding(Binding::Proof(writ_core::dpop::DpopError::WrongKey)) => {
                        "wrong_key"
                    }
                    Error::Binding(Binding::ProofMissing) => "proof_missing",
                    Error::Binding(_) => "bad_proof",
                    _ => "wrong_scheme",
                };
                let mut event = AuditEvent::new(
                    AuditKind::TokenRefused,
                    Outcome::Deny,
                    format!("instance:{}", claims.client_id),
                )
                .instance(&claims.client_id)
                .jti(&claims.jti)
                .reason(e.to_string())
                .detail(serde_json::json!({ "method": method, "path": path, "binding": binding }));
                // Charged to the agent the token names (a thief's tries
                // count against the agent whose token was stolen).
                if let Some(agent) = self.config.agent_of(&claims.sub) {
                    event = event.agent(agent);
                }
                self.store.append_audit(self.now(), vec![event]).await?;
                return Err(e);
            }
        };
        let state = self.live_grant(&claims).await?;
        Ok(AgentCaller { claims, state, jkt })
    }

    /// The DPoP rules for a presented token. Returns the proven key. `ath`:
    /// the proof must carry the token's hash (a token in the Authorization
    /// header); at the token endpoint the token travels in the body and the
    /// proof names none (RFC 9449 §5).
    pub(crate) fn check_binding(
        &self,
        claims: &AccessClaims,
        p: &Presented<'_>,
        method: &str,
        path: &str,
        ath: bool,
    ) -> Result<Option<String>, Error> {
        match (&claims.cnf, p.dpop) {
            (Some(cnf), true) => {
                let proof = p.proof.ok_or(Error::Binding(Binding::ProofMissing))?;
                let url = self.config.url(path);
                let expected = writ_core::dpop::Expected {
                    method,
                    url: &url,
                    access_token: ath.then_some(p.token),
                    now: self.now(),
                };
                self.dpop.check(proof, &expected, Some(&cnf.jkt))?;
                Ok(Some(cnf.jkt.clone()))
            }
            (Some(_), false) => Err(Error::Unauthenticated(
                "this token is bound to a DPoP key: present it with the DPoP scheme and a proof"
                    .into(),
            )),
            (None, true) => Err(Error::Unauthenticated(
                "this token is not DPoP-bound: present it with the Bearer scheme".into(),
            )),
            (None, false) => Ok(None),
        }
    }

    /// The grant behind verified claims, if it is still live.
    pub(crate) async fn live_grant(&self, claims: &AccessClaims) -> Result<GrantState, Error> {
        let state = self
            .store
            .grant_state(&claims.jti)
            .await?
            .ok_or_else(|| Error::Unauthenticated("token is not known".into()))?;
        if !state.is_live(self.now()) {
            return Err(Error::Unauthenticated("token is no longer active".into()));
        }
        if state.grant.instance_id.as_str() != claims.client_id {
            return Err(Error::Unauthenticated(
                "token does not match its issuance record".into(),
            ));
        }
        // Tool tokens are for tools, never for writ itself.
        let kind_ok = match state.grant.kind {
            writ_store::GrantKind::InstanceToken => claims.task.is_none(),
            writ_store::GrantKind::TaskToken => claims.task.is_some(),
            writ_store::GrantKind::ToolToken => false,
        };
        if !kind_ok {
            return Err(Error::Unauthenticated("this token is not for writ".into()));
        }
        Ok(state)
    }

    /// Signature, header and claim checks only (no store lookup), for a
    /// token presented to writ itself.
    pub fn verify_token(&self, token: &str, kind: TokenKind) -> Result<AccessClaims, Error> {
        self.verify_token_for(token, kind, Some(&self.config.issuer))
    }

    /// As [`Broker::verify_token`], with any audience (`None`): for the
    /// issuer's own bookkeeping (introspection, revocation) only.
    pub fn verify_token_for(
        &self,
        token: &str,
        kind: TokenKind,
        audience: Option<&str>,
    ) -> Result<AccessClaims, Error> {
        let expect = Expect {
            issuer: &self.config.issuer,
            audience,
            kind,
        };
        self.keys
            .ring()
            .verify(token, expect, self.now(), self.config.max_token_lifetime())
            .map_err(|e| Error::Unauthenticated(e.to_string()))
    }
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}
