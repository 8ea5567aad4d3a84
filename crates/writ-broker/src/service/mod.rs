//! The broker's logic, free of HTTP: each operation takes typed input and a
//! caller, and returns typed output or an [`ApiError`].

mod admin;
mod attest;
mod audit;
mod tasks;
mod tokens;

use std::sync::{Arc, RwLock};

use writ_core::audit::AuditEvent;
use writ_core::seal::MasterKey;
use writ_core::token::{AccessClaims, Expect, TokenKind};
use writ_core::{AgentName, Clock, InstanceId, TaskId, Timestamp};
use writ_policy::PolicySet;
use writ_store::{GrantState, Store};

use crate::config::BrokerConfig;
use crate::error::ApiError;
use crate::keys::KeyService;
use crate::metrics::Metrics;
use crate::oidc::OidcVerifier;

pub use tokens::hash_secret;

/// Everything a request handler needs, shared by all of them.
pub struct Broker {
    pub store: Arc<dyn Store>,
    pub keys: KeyService,
    pub clock: Arc<dyn Clock>,
    pub config: BrokerConfig,
    policy: RwLock<Arc<PolicySet>>,
    master: Arc<MasterKey>,
    oidc: OidcVerifier,
    pub(crate) metrics: Metrics,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
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
        policy: PolicySet,
        clock: Arc<dyn Clock>,
        config: BrokerConfig,
        master: Arc<MasterKey>,
    ) -> Result<Self, ApiError> {
        let oidc = OidcVerifier::new(config.oidc_fetch_timeout)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Self {
            store,
            keys,
            clock,
            config,
            policy: RwLock::new(Arc::new(policy)),
            master,
            oidc,
            metrics: Metrics::default(),
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

    /// Replaces the live policy set (already validated by construction).
    pub async fn set_policy(&self, set: PolicySet, actor: &str) -> Result<(), ApiError> {
        use writ_core::audit::{AuditKind, Outcome};
        let event = AuditEvent::new(AuditKind::PolicyLoad, Outcome::Success, actor).policy(set.version(), Vec::new()).detail(
            serde_json::json!({ "policies": set.len(), "files": set.sources().iter().map(|s| s.name.clone()).collect::<Vec<_>>() }),
        );
        self.store.append_audit(self.now(), vec![event]).await?;
        match self.policy.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Resolves a bearer credential: an admin token, or a live agent token.
    pub async fn caller(&self, token: &str) -> Result<Caller, ApiError> {
        if looks_like_jwt(token) {
            return self
                .authenticate(token, TokenKind::Any)
                .await
                .map(|a| Caller::Agent(Box::new(a)));
        }
        if self.store.admin_token_valid(&hash_secret(token)).await? {
            Ok(Caller::Admin)
        } else {
            Err(ApiError::Unauthorized("invalid credential".into()))
        }
    }

    /// Requires an admin credential.
    pub async fn require_admin(&self, token: Option<&str>) -> Result<(), ApiError> {
        let token =
            token.ok_or_else(|| ApiError::Unauthorized("missing admin credential".into()))?;
        if !looks_like_jwt(token) && self.store.admin_token_valid(&hash_secret(token)).await? {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("invalid admin credential".into()))
        }
    }

    /// Verifies a token writ issued and checks that it is still live.
    pub async fn authenticate(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<AgentCaller, ApiError> {
        let claims = self.verify_token(token, kind)?;
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
        Ok(AgentCaller { claims, state })
    }

    /// Signature, header and claim checks only (no store lookup).
    pub fn verify_token(&self, token: &str, kind: TokenKind) -> Result<AccessClaims, ApiError> {
        let expect = Expect {
            issuer: &self.config.issuer,
            audience: &self.config.issuer,
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
