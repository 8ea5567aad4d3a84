//! Operator credentials and key rotation.

use writ_core::api::{
    AdminCredentialIssued, CreateAdminCredential, KeyRotated, valid_operator_name,
};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::random;

use super::{Broker, hash_secret};
use crate::error::Error;

impl Broker {
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

    /// A new X.509 authority and JWT-SVID key for the trust domain, now.
    pub async fn rotate_spiffe_keys(&self, actor: &str) -> Result<serde_json::Value, Error> {
        let now = self.now();
        self.spiffe
            .rotate(self.store.as_ref(), self.master(), now, Some(actor))
            .await?;
        let (x509, jwt) = self.spiffe.published(now);
        Ok(serde_json::json!({
            "trust_domain": self.spiffe.trust_domain(),
            "x509_authorities": x509,
            "jwt_keys": jwt,
        }))
    }

    pub async fn rotate_keys(&self, actor: &str) -> Result<KeyRotated, Error> {
        let (kid, previous_kid) = self
            .keys
            .rotate(self.store.as_ref(), self.master(), self.now(), actor)
            .await?;
        Ok(KeyRotated { kid, previous_kid })
    }
}
