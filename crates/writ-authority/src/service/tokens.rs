//! Issuing, introspecting and revoking tokens.

use writ_core::api::Introspection;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::token::{AccessClaims, TokenKind};
use writ_store::GrantKind;

use super::{Broker, Caller};
use crate::error::Error;
use crate::metrics;

/// SHA-256 of a high-entropy secret (join tokens, admin tokens), hex. Only
/// these hashes are stored.
pub fn hash_secret(secret: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    writ_core::audit::hex(d.as_ref())
}

impl Broker {
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
}
