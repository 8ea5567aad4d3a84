//! The tokens writ issues: signing them, verifying them as presented
//! (signature, DPoP binding, a live grant), introspecting and revoking
//! them. Every other service issues and checks tokens through this one.

mod issue;

use std::sync::Arc;

use writ_core::api::Introspection;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::token::{AccessClaims, Expect, TokenKind};
use writ_core::{Clock, Timestamp};
use writ_store::{GrantKind, GrantState, Store};

use super::{AgentCaller, Caller, Presented, feed};
use crate::config::BrokerConfig;
use crate::dpop::DpopGuard;
use crate::error::{Binding, Error};
use crate::keys::KeyService;
use crate::metrics::{self, Metrics};

pub(crate) use issue::{Issue, Issued};

/// SHA-256 of a high-entropy secret (join tokens, admin tokens), hex. Only
/// these hashes are stored.
pub fn hash_secret(secret: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    writ_core::audit::hex(d.as_ref())
}

/// Signs, verifies, introspects and revokes writ's tokens. Holds the
/// signing keys, the DPoP replay guard, the store (grants and their audit)
/// and the revocation feed it wakes.
pub struct Tokens {
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    clock: Arc<dyn Clock>,
    config: Arc<BrokerConfig>,
    dpop: Arc<DpopGuard>,
    metrics: Arc<Metrics>,
    revocations: Arc<feed::Revocations>,
}

impl Tokens {
    pub(in crate::service) fn new(h: &super::Handles) -> Self {
        Self {
            store: Arc::clone(&h.store),
            keys: Arc::clone(&h.keys),
            clock: Arc::clone(&h.clock),
            config: Arc::clone(&h.config),
            dpop: Arc::clone(&h.dpop),
            metrics: Arc::clone(&h.metrics),
            revocations: Arc::clone(&h.revocations),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Signs claims with the active key.
    pub(crate) fn mint(&self, claims: &AccessClaims) -> Result<String, Error> {
        self.keys
            .ring()
            .sign(claims)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// RFC 7662: active only if the signature verifies, the token is within
    /// its lifetime, and its issuance record, task, instance and agent are
    /// all still live.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, Error> {
        metrics::inc(&self.metrics.introspections);
        let Ok(claims) = self.verify_token_for(token, TokenKind::Any, None) else {
            return Ok(Introspection::default());
        };
        let live = self.store.grant_state(&claims.jti).await?.is_some_and(|s| {
            s.is_live(self.now()) && s.grant.instance_id.as_str() == claims.client_id
        });
        if !live {
            return Ok(Introspection::default());
        }
        Ok(Introspection {
            active: true,
            scope: claims.scope,
            client_id: Some(claims.client_id),
            token_type: Some(
                if claims.cnf.is_some() {
                    "DPoP"
                } else {
                    "Bearer"
                }
                .into(),
            ),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            nbf: Some(claims.nbf),
            sub: Some(claims.sub),
            aud: Some(claims.aud),
            iss: Some(claims.iss),
            jti: Some(claims.jti),
            task: claims.task,
            obo: claims.obo,
            cnf: claims.cnf,
            act: claims.act,
        })
    }

    /// RFC 7009: revokes one token. A token that does not verify is treated
    /// as already invalid (success, nothing changes). An agent may revoke
    /// only tokens of its own instance. An instance token stands for its
    /// instance: revoking it ends the instance's tasks too (and what was
    /// delegated from them), as Vault revokes a token's children with it.
    pub async fn revoke(&self, caller: &Caller, token: &str) -> Result<(), Error> {
        let Ok(claims) = self.verify_token_for(token, TokenKind::Any, None) else {
            return Ok(());
        };
        let Some(state) = self.store.grant_state(&claims.jti).await? else {
            return Ok(());
        };
        let actor = match caller {
            Caller::Operator(op) => {
                op.require(writ_core::api::Duty::Operate)?;
                op.actor()
            }
            Caller::Agent(a) => {
                if a.instance_id() != &state.grant.instance_id {
                    let event = AuditEvent::new(AuditKind::TokenRevoke, Outcome::Deny, a.actor())
                        .agent(a.agent())
                        .jti(&claims.jti)
                        .reason("token belongs to another instance");
                    self.store.append_audit(self.now(), vec![event]).await?;
                    return Err(Error::Forbidden(
                        "the token was not issued to this client".into(),
                    ));
                }
                a.actor()
            }
        };
        self.revoke_grant_as(actor, &claims, state).await
    }

    /// Revokes the grant of `claims` (its `state` as read), recorded as
    /// done by `actor`, who may.
    pub(crate) async fn revoke_grant_as(
        &self,
        actor: String,
        claims: &AccessClaims,
        state: writ_store::GrantState,
    ) -> Result<(), Error> {
        let mut event = AuditEvent::new(AuditKind::TokenRevoke, Outcome::Success, actor)
            .agent(&state.grant.agent)
            .instance(&state.grant.instance_id)
            .jti(&claims.jti);
        if let Some(t) = &state.grant.task_id {
            event = event.task(t);
        }
        let instance = state.grant.kind == GrantKind::InstanceToken;
        if instance {
            // An instance token is the instance: revoking it revokes the
            // instance, and its tasks end with it (the store does it all in
            // the revocation's transaction).
            event = event.detail(serde_json::json!({
                "kind": GrantKind::InstanceToken.as_str(),
                "cascade": "the instance, its tasks and every task delegated from them",
            }));
        }
        if let Some(out) = self
            .store
            .revoke_grant(&claims.jti, self.now(), vec![event])
            .await?
        {
            self.revocations.changed().await;
            metrics::add(&self.metrics.tokens_revoked, out.revoked_tokens);
            metrics::add(&self.metrics.tasks_ended, out.ended_tasks);
            if instance {
                tracing::info!(
                    instance = %state.grant.instance_id,
                    revoked = out.revoked_tokens,
                    tasks = out.ended_tasks,
                    "instance revoked"
                );
            }
        }
        Ok(())
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
