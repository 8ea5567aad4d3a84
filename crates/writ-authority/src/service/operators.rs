//! Operators: their named credentials (created, rotated, revoked), the
//! sessions single sign-on and the console make from them, and the
//! look-up every operator route's credential goes through. Sessions of
//! the console: an operator credential, presented once, becomes a
//! short-lived secret with the same name and role (the browser keeps it in
//! an `HttpOnly` cookie, never the credential itself); a session ends at
//! sign-out, at its end, and when the credential that signed it in is
//! rotated or revoked.

use std::sync::Arc;

use writ_core::api::{
    AdminCredentialIssued, CreateAdminCredential, OperatorSession, valid_operator_name,
};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::seal::MasterKey;
use writ_core::{Clock, Timestamp, random};
use writ_store::Store;

use super::{hash_secret, looks_like_jwt};
use crate::attest_digest::AttestDigest;
use crate::config::BrokerConfig;
use crate::error::Error;
use crate::limit::RateLimiter;
use crate::metrics::Metrics;
use crate::oidc::OidcVerifier;

/// Operator credentials, single sign-on and console sessions. The fields
/// are shared with the sign-in modules beside this one.
pub struct Operators {
    pub(super) store: Arc<dyn Store>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) config: Arc<BrokerConfig>,
    pub(super) master: Arc<MasterKey>,
    pub(super) oidc: Arc<OidcVerifier>,
    pub(super) metrics: Arc<Metrics>,
    /// Per-client rate of operator sign-ins (its own allowance: sign-ins
    /// never spend the attestations', nor the other way round).
    pub(super) sign_in_limit: RateLimiter,
    /// Identical refused sign-ins whose token's signature did not verify,
    /// folded in the audit as repeated attestation failures are.
    pub(super) sign_in_digest: AttestDigest,
}

impl Operators {
    pub(super) fn new(h: &super::Handles) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            config: Arc::clone(&h.config),
            master: Arc::clone(&h.master),
            oidc: Arc::clone(&h.oidc),
            metrics: Arc::clone(&h.metrics),
            sign_in_limit: RateLimiter::new(h.config.attest_per_minute),
            sign_in_digest: AttestDigest::new(h.config.attest_fold_ms),
        }
    }

    pub(super) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(super) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The admin credential `token` is: one a dev start made counts only
    /// on a dev start.
    pub(super) async fn credential(
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

    /// Every admin credential and console session (names, never values).
    pub async fn admin_credentials(&self) -> Result<Vec<writ_core::api::AdminCredential>, Error> {
        let mut out = self.store.admin_tokens().await?;
        out.extend(self.store.console_sessions(self.now()).await?);
        Ok(out)
    }

    /// A new named operator credential. Its secret is returned once and
    /// stored only as a hash; `by` may create only roles it may grant.
    pub async fn create_admin_credential(
        &self,
        by: &super::Operator,
        req: CreateAdminCredential,
    ) -> Result<AdminCredentialIssued, Error> {
        if !valid_operator_name(&req.name) {
            return Err(Error::Invalid(
                "a credential name is 1-64 characters of a-z, 0-9 and . _ - @, starting with a letter or digit".into(),
            ));
        }
        if !by.role.may_grant(req.role) {
            return Err(Error::Forbidden(format!(
                "credential {:?} of role {} cannot create one of role {}",
                by.name, by.role, req.role
            )));
        }
        let token = format!("writ_op_{}", random::token_256()?);
        let event = AuditEvent::new(AuditKind::AdminTokenCreate, Outcome::Success, by.actor())
            .reason(format!("operator credential {} created", req.name))
            .detail(serde_json::json!({ "name": req.name, "role": req.role }));
        self.store
            .add_admin_token(
                &req.name,
                &hash_secret(&token),
                req.role,
                false,
                self.now(),
                vec![event],
            )
            .await?;
        Ok(AdminCredentialIssued {
            name: req.name,
            role: req.role,
            token,
        })
    }

    /// A new secret for the credential `name`: the old one is refused from
    /// the answer on.
    pub async fn rotate_admin_credential(
        &self,
        by: &super::Operator,
        name: &str,
    ) -> Result<AdminCredentialIssued, Error> {
        let found = self
            .store
            .admin_tokens()
            .await?
            .into_iter()
            .find(|c| c.name == name);
        let Some(found) = found else {
            // No credential of that name: the console sessions of the
            // name (an admin may end any) end all the same.
            if by.role.may_grant(writ_core::api::Role::Admin) {
                let event = AuditEvent::new(
                    AuditKind::AdminTokenRevoke,
                    Outcome::Success,
                    by.actor(),
                )
                .reason(format!(
                    "console sessions of {name} ended (no credential of that name to rotate)"
                ));
                self.store
                    .revoke_admin_token(name, self.now(), vec![event])
                    .await?;
            }
            return Err(Error::NotFound(format!(
                "no admin credential named {name:?}"
            )));
        };
        if !by.role.may_grant(found.role) {
            return Err(Error::Forbidden(format!(
                "credential {:?} of role {} cannot rotate one of role {}",
                by.name, by.role, found.role
            )));
        }
        let token = format!("writ_op_{}", random::token_256()?);
        let event = AuditEvent::new(AuditKind::AdminTokenRotate, Outcome::Success, by.actor())
            .reason(format!("operator credential {name} rotated"));
        if !self
            .store
            .rotate_admin_token(name, &hash_secret(&token), self.now(), vec![event])
            .await?
        {
            return Err(Error::NotFound(format!(
                "no admin credential named {name:?}"
            )));
        }
        tracing::warn!(credential = name, "operator credential rotated");
        Ok(AdminCredentialIssued {
            name: found.name,
            role: found.role,
            token,
        })
    }

    /// Revokes the admin credential `name`: its very next use is refused.
    pub async fn revoke_admin_credential(&self, name: &str, actor: &str) -> Result<(), Error> {
        let event = AuditEvent::new(AuditKind::AdminTokenRevoke, Outcome::Success, actor)
            .reason(format!("admin credential {name} revoked"));
        if self
            .store
            .revoke_admin_token(name, self.now(), vec![event])
            .await?
        {
            tracing::warn!(credential = name, "admin credential revoked");
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "no admin credential named {name:?}"
            )))
        }
    }

    /// Signs an operator in to the console with `credential`: a new
    /// session of the credential's name and role. A session presented as
    /// the credential makes one that ends no later than it does.
    pub async fn console_sign_in(&self, credential: &str) -> Result<OperatorSession, Error> {
        if looks_like_jwt(credential) {
            return Err(Error::Unauthenticated("invalid operator credential".into()));
        }
        let c = self
            .credential(credential)
            .await?
            .ok_or_else(|| Error::Unauthenticated("invalid operator credential".into()))?;
        let now = self.now();
        let mut expires_at = now.add_secs(self.config.console_session_ttl);
        if let Some(end) = c.expires_at
            && end < expires_at
        {
            expires_at = end;
        }
        let token = format!("writ_console_{}", random::token_256()?);
        let event = AuditEvent::new(
            AuditKind::AdminTokenCreate,
            Outcome::Success,
            format!("operator:{}", c.name),
        )
        .reason(format!("operator {} signed in to the console", c.name))
        .detail(serde_json::json!({
            "name": c.name,
            "role": c.role,
            "expires_at": expires_at,
            "console": true,
        }));
        let session = writ_core::api::AdminCredential {
            console_session: true,
            name: c.name.clone(),
            role: c.role,
            created_at: now,
            dev: c.dev,
            expires_at: Some(expires_at),
        };
        self.store
            .add_console_session(&session, &hash_secret(&token), vec![event])
            .await?;
        tracing::info!(operator = %c.name, role = %c.role, "operator signed in to the console");
        Ok(OperatorSession {
            name: c.name,
            role: c.role,
            token,
            expires_at,
        })
    }

    /// The operator a console cookie signs in, and when its session ends.
    pub async fn console_session(
        &self,
        token: &str,
    ) -> Result<(super::Operator, Option<writ_core::Timestamp>), Error> {
        let c = self
            .credential(token)
            .await?
            .ok_or_else(|| Error::Unauthenticated("not signed in".into()))?;
        Ok((
            super::Operator {
                name: c.name,
                role: c.role,
            },
            c.expires_at,
        ))
    }

    /// Ends the console session `token` (sign-out): `false` if it had
    /// already ended.
    pub async fn console_sign_out(&self, token: &str) -> Result<bool, Error> {
        let Some(c) = self.credential(token).await? else {
            return Ok(false);
        };
        let event = AuditEvent::new(
            AuditKind::AdminTokenRevoke,
            Outcome::Success,
            format!("operator:{}", c.name),
        )
        .reason(format!("operator {} signed out of the console", c.name));
        // Exactly the session whose secret the cookie holds ends (a
        // console session, or the single sign-on session the console's
        // SSO sign-in keeps in the cookie), by its hash: a second sign-out
        // finds nothing and ends nothing, never a credential found by name.
        Ok(self
            .store
            .end_console_session(&hash_secret(token), self.now(), vec![event])
            .await?)
    }
}
