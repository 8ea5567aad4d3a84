//! The broker's logic, free of HTTP: each operation takes typed input and a
//! caller, and returns typed output or an [`ApiError`].

mod admin;
mod approvals;
mod attest;
mod audit;
pub mod authzen;
mod behaviour;
mod dbcreds;
pub mod exchange;
mod feed;
pub mod gateway;
mod issue;
pub mod nodes;
mod policy;
mod search;
mod shadow;
pub mod tasks;
mod tokens;

use std::sync::{Arc, RwLock};

use writ_core::audit::AuditEvent;
use writ_core::seal::MasterKey;
use writ_core::token::{AccessClaims, Expect, TokenKind};
use writ_core::{AgentName, Clock, InstanceId, TaskId, Timestamp};
use writ_policy::PolicySet;
use writ_store::{GrantState, Store};

use crate::config::BrokerConfig;
use crate::dpop::DpopGuard;
use crate::error::ApiError;
use crate::keys::KeyService;
use crate::metrics::Metrics;
use crate::oidc::OidcVerifier;

pub use approvals::{Asked, CallApproval, MAX_PENDING_CALL_APPROVALS};
pub use behaviour::DENIAL_WINDOW_SECS;
pub(crate) use policy::compile_stored;
pub use tokens::hash_secret;

/// Everything a request handler needs, shared by all of them.
pub struct Broker {
    pub store: Arc<dyn Store>,
    pub keys: KeyService,
    /// The trust domain's SPIFFE authorities (X.509 CA, JWT-SVID keys).
    pub spiffe: crate::spiffe::Authority,
    pub clock: Arc<dyn Clock>,
    pub config: BrokerConfig,
    policy: RwLock<Arc<PolicySet>>,
    master: Arc<MasterKey>,
    oidc: OidcVerifier,
    pub(crate) dpop: DpopGuard,
    /// Per-client rate of attestation requests.
    pub(crate) attest_limit: crate::limit::RateLimiter,
    /// Identical attestation failures, folded in the audit.
    pub(crate) attest_digest: crate::attest_digest::AttestDigest,
    /// Woken whenever a revocation may have been written.
    pub(crate) revoked: tokio::sync::Notify,
    /// Woken when a task ends, so its database roles are dropped at once.
    pub(crate) tasks_ended: tokio::sync::Notify,
    pub(crate) metrics: Metrics,
    policy_loaded: std::sync::atomic::AtomicBool,
    shadow: RwLock<Option<Arc<PolicySet>>>,
    embedded_gateway: gateway::EmbeddedGateway,
    pub(crate) followers: feed::Followers,
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
    Admin,
    Agent(Box<AgentCaller>),
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
    ) -> Result<Self, ApiError> {
        let oidc = OidcVerifier::new(config.oidc_fetch_timeout, Arc::clone(&clock))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let dpop = DpopGuard::new(config.dpop_nonces)?;
        let attest_limit = crate::limit::RateLimiter::new(config.attest_per_minute);
        let attest_digest = crate::attest_digest::AttestDigest::new(config.attest_fold_ms);
        Ok(Self {
            store,
            keys,
            spiffe,
            clock,
            config,
            policy: RwLock::new(Arc::new(policy)),
            master,
            oidc,
            dpop,
            attest_limit,
            attest_digest,
            revoked: tokio::sync::Notify::new(),
            tasks_ended: tokio::sync::Notify::new(),
            metrics: Metrics::default(),
            policy_loaded: std::sync::atomic::AtomicBool::new(false),
            shadow: RwLock::new(None),
            embedded_gateway: gateway::EmbeddedGateway::default(),
            followers: feed::Followers::default(),
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The live policy set.
    pub fn policy(&self) -> Arc<PolicySet> {
        match self.policy.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Makes `set` the live policy set (it was validated when compiled),
    /// recording the version and where it came from. A set identical to the
    /// live one changes nothing.
    pub async fn set_policy(
        &self,
        set: PolicySet,
        origin: &str,
        actor: &str,
    ) -> Result<bool, ApiError> {
        use writ_core::audit::{AuditKind, Outcome};
        if self.policy().version() == set.version() && self.policy_loaded() {
            return Ok(false);
        }
        let event = AuditEvent::new(AuditKind::PolicyLoad, Outcome::Success, actor)
            .policy(set.version(), Vec::new())
            .detail(serde_json::json!({
                "origin": origin,
                "policies": set.len(),
                "files": set.sources().iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            }));
        let sources: Vec<(String, String)> = set
            .sources()
            .iter()
            .map(|s| (s.name.clone(), s.text.clone()))
            .collect();
        self.store
            .activate_policy(set.version(), &sources, origin, self.now(), vec![event])
            .await?;
        tracing::info!(policy_version = %set.version(), %origin, policies = set.len(), "policy set is live");
        match self.policy.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        self.policy_loaded
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }

    /// Makes the set that went live last in the store this replica's live
    /// set, after another replica activated it (nothing is recorded: the
    /// replica that activated it did).
    pub(crate) async fn reload_policy(&self) -> Result<(), ApiError> {
        let Some((version, sources)) = self.store.latest_policy().await? else {
            return Ok(());
        };
        if self.policy().version() == version {
            return Ok(());
        }
        let set = policy::compile_stored("policy set", &version, sources)?;
        tracing::info!(policy_version = %set.version(), "policy set activated by another replica is live");
        match self.policy.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    /// Re-reads the signing keys, after another replica rotated them.
    pub(crate) async fn reload_keys(&self) -> Result<(), ApiError> {
        self.keys.reload(self.store.as_ref(), &self.master).await?;
        self.spiffe.reload(self.store.as_ref(), &self.master).await
    }

    fn policy_loaded(&self) -> bool {
        self.policy_loaded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records a policy set that was refused (the live one stays).
    pub async fn policy_refused(
        &self,
        origin: &str,
        actor: &str,
        error: &str,
    ) -> Result<(), ApiError> {
        use writ_core::audit::{AuditKind, Outcome};
        tracing::error!(%origin, %error, "policy set refused; the previous set stays live");
        let event = AuditEvent::new(AuditKind::PolicyLoad, Outcome::Failure, actor)
            .reason(error)
            .detail(serde_json::json!({ "origin": origin }));
        self.store.append_audit(self.now(), vec![event]).await?;
        Ok(())
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
    ) -> Result<Caller, ApiError> {
        if looks_like_jwt(p.token) {
            return self
                .authenticate(p, method, path, TokenKind::Any)
                .await
                .map(|a| Caller::Agent(Box::new(a)));
        }
        if !p.dpop && self.admin_credential(p.token).await?.is_some() {
            Ok(Caller::Admin)
        } else {
            Err(ApiError::Unauthorized("invalid credential".into()))
        }
    }

    /// The admin credential `token` is: one a dev start made counts only
    /// on a dev start.
    async fn admin_credential(
        &self,
        token: &str,
    ) -> Result<Option<writ_core::api::AdminCredential>, ApiError> {
        Ok(self
            .store
            .admin_token(&hash_secret(token))
            .await?
            .filter(|c| !c.dev || self.config.dev))
    }

    /// Requires an admin credential.
    pub async fn require_admin(&self, token: Option<&str>) -> Result<(), ApiError> {
        let token =
            token.ok_or_else(|| ApiError::Unauthorized("missing admin credential".into()))?;
        if !looks_like_jwt(token) && self.admin_credential(token).await?.is_some() {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("invalid admin credential".into()))
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
    ) -> Result<AgentCaller, ApiError> {
        let claims = self.verify_token(p.token, kind)?;
        let jkt = match self.check_binding(&claims, p, method, path, true) {
            Ok(j) => j,
            Err(e) => {
                // The token is real, so this is its holder (or its thief)
                // trying it without its key: worth a record.
                use writ_core::audit::{AuditKind, Outcome};
                let event = AuditEvent::new(
                    AuditKind::TokenRefused,
                    Outcome::Deny,
                    format!("instance:{}", claims.client_id),
                )
                .instance(&claims.client_id)
                .jti(&claims.jti)
                .reason(e.to_string())
                .detail(serde_json::json!({ "method": method, "path": path }));
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
    ) -> Result<Option<String>, ApiError> {
        match (&claims.cnf, p.dpop) {
            (Some(cnf), true) => {
                let proof = p.proof.ok_or_else(|| ApiError::Dpop {
                    error: "invalid_dpop_proof",
                    detail: "a DPoP proof is required with this token".into(),
                    nonce: None,
                })?;
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
            (Some(_), false) => Err(ApiError::Unauthorized(
                "this token is bound to a DPoP key: present it with the DPoP scheme and a proof"
                    .into(),
            )),
            (None, true) => Err(ApiError::Unauthorized(
                "this token is not DPoP-bound: present it with the Bearer scheme".into(),
            )),
            (None, false) => Ok(None),
        }
    }

    /// The grant behind verified claims, if it is still live.
    pub(crate) async fn live_grant(&self, claims: &AccessClaims) -> Result<GrantState, ApiError> {
        let state = self
            .store
            .grant_state(&claims.jti)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("token is not known".into()))?;
        if !state.is_live(self.now()) {
            return Err(ApiError::Unauthorized("token is no longer active".into()));
        }
        if state.grant.instance_id.as_str() != claims.client_id {
            return Err(ApiError::Unauthorized(
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
            return Err(ApiError::Unauthorized("this token is not for writ".into()));
        }
        Ok(state)
    }

    /// Signature, header and claim checks only (no store lookup), for a
    /// token presented to writ itself.
    pub fn verify_token(&self, token: &str, kind: TokenKind) -> Result<AccessClaims, ApiError> {
        self.verify_token_for(token, kind, Some(&self.config.issuer))
    }

    /// As [`Broker::verify_token`], with any audience (`None`): for the
    /// issuer's own bookkeeping (introspection, revocation) only.
    pub fn verify_token_for(
        &self,
        token: &str,
        kind: TokenKind,
        audience: Option<&str>,
    ) -> Result<AccessClaims, ApiError> {
        let expect = Expect {
            issuer: &self.config.issuer,
            audience,
            kind,
        };
        self.keys
            .ring()
            .verify(token, expect, self.now(), self.config.max_token_lifetime())
            .map_err(|e| ApiError::Unauthorized(e.to_string()))
    }
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}
