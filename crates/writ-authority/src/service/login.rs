//! Operators' single sign-on: an identity token from the operators' own
//! OIDC provider, verified here against the issuer's keys, audience and
//! lifetime (never taken on the client's word), becomes a short-lived
//! operator credential with a name from the identity and a role from the
//! configured claim-to-role rules. Sessions are listed and revoked with
//! every other operator credential.

use writ_core::api::{OperatorSession, OperatorSsoInfo, Role, valid_operator_name};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::random;
use writ_core::token::ExternalExpect;

use super::{Broker, hash_secret};
use crate::config::{OperatorSso, RoleRule};
use crate::error::Error;

impl Broker {
    fn sso(&self) -> Result<&OperatorSso, Error> {
        self.config.operator_sso.as_ref().ok_or_else(|| {
            Error::NotFound("single sign-on for operators is not configured on this broker".into())
        })
    }

    /// Where operators sign in.
    pub fn operator_sso_info(&self) -> Result<OperatorSsoInfo, Error> {
        let sso = self.sso()?;
        Ok(OperatorSsoInfo {
            issuer: sso.issuer.clone(),
            client_id: sso.client_id.clone(),
        })
    }

    /// Exchanges a verified identity token for an operator session.
    pub async fn operator_sign_in(&self, id_token: &str) -> Result<OperatorSession, Error> {
        let sso = self.sso()?;
        let now = self.now();
        let expect = ExternalExpect {
            issuer: &sso.issuer,
            audience: &sso.client_id,
            subject: "",
            algorithms: &sso.algorithms,
        };
        let claims = match self
            .oidc
            .verify_identity(id_token, &sso.jwks_uri, &expect, now)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "operator sign-in refused");
                return Err(Error::Unauthenticated(format!(
                    "identity token refused: {e}"
                )));
            }
        };
        check_fresh(&claims, &sso.client_id, sso.max_token_age, now.secs())?;
        let name = session_name(&claims, &sso.name_claim)?;
        let role = role_for(&claims, &sso.roles).ok_or_else(|| {
            Error::Forbidden(format!(
                "{name} signed in, but no role rule matches their claims"
            ))
        })?;
        let token = format!("writ_op_{}", random::token_256()?);
        let expires_at = now.add_secs(sso.session_ttl);
        let event = AuditEvent::new(
            AuditKind::AdminTokenCreate,
            Outcome::Success,
            format!("operator:{name}"),
        )
        .reason(format!("operator {name} signed in with single sign-on"))
        .detail(serde_json::json!({
            "name": name,
            "role": role,
            "expires_at": expires_at,
            "issuer": sso.issuer,
            "subject": claims.get("sub"),
        }));
        self.store
            .add_operator_session(
                &name,
                &hash_secret(&token),
                role,
                expires_at,
                now,
                vec![event],
            )
            .await?;
        tracing::info!(operator = %name, %role, "operator signed in");
        Ok(OperatorSession {
            name,
            role,
            token,
            expires_at,
        })
    }
}

type Claims = serde_json::Map<String, serde_json::Value>;

/// A sign-in is fresh: issued within `max_age` seconds, and, when the
/// token names several audiences, authorized for this client (OIDC Core
/// §3.1.3.7).
fn check_fresh(claims: &Claims, client_id: &str, max_age: i64, now: i64) -> Result<(), Error> {
    let iat = claims
        .get("iat")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| Error::Unauthenticated("identity token has no iat".into()))?;
    if now.saturating_sub(iat) > max_age {
        return Err(Error::Unauthenticated(format!(
            "identity token was issued more than {max_age} s ago: sign in again"
        )));
    }
    if let Some(serde_json::Value::Array(auds)) = claims.get("aud")
        && auds.len() > 1
        && claims.get("azp").and_then(serde_json::Value::as_str) != Some(client_id)
    {
        return Err(Error::Unauthenticated(
            "identity token has several audiences and is not authorized for writ (azp)".into(),
        ));
    }
    Ok(())
}

/// The session's name: the claim `name_claim`, lower-cased, which must be
/// a valid operator credential name. An email names nobody unless the
/// provider says it verified it (`email_verified`): the name is what
/// approvals and the audit name, and what a task's `on_behalf_of` is
/// matched against.
fn session_name(claims: &Claims, name_claim: &str) -> Result<String, Error> {
    if name_claim == "email" {
        let verified = matches!(
            claims.get("email_verified"),
            Some(serde_json::Value::Bool(true))
        ) || claims
            .get("email_verified")
            .and_then(serde_json::Value::as_str)
            == Some("true");
        if !verified {
            return Err(Error::Forbidden(
                "the identity provider has not verified this email (email_verified)".into(),
            ));
        }
    }
    let raw = claims
        .get(name_claim)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            Error::Forbidden(format!(
                "identity token has no {name_claim:?} claim to name the operator by"
            ))
        })?;
    let name = raw.to_lowercase();
    if !valid_operator_name(&name) {
        return Err(Error::Forbidden(format!(
            "claim {name_claim:?} cannot name an operator: 1-64 characters of a-z, 0-9 and . _ - @"
        )));
    }
    Ok(name)
}

/// The role of the first rule the claims match.
fn role_for(claims: &Claims, rules: &[RoleRule]) -> Option<Role> {
    rules
        .iter()
        .find(|r| match claims.get(&r.claim) {
            Some(serde_json::Value::String(s)) => *s == r.value,
            Some(serde_json::Value::Array(items)) => {
                items.iter().any(|i| i.as_str() == Some(r.value.as_str()))
            }
            Some(serde_json::Value::Bool(b)) => b.to_string() == r.value,
            _ => false,
        })
        .map(|r| r.role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: serde_json::Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claims_map_to_the_first_matching_role() {
        let rules = vec![
            RoleRule {
                claim: "groups".into(),
                value: "writ-admins".into(),
                role: Role::Admin,
            },
            RoleRule {
                claim: "groups".into(),
                value: "writ-approvers".into(),
                role: Role::Approver,
            },
            RoleRule {
                claim: "department".into(),
                value: "audit".into(),
                role: Role::Auditor,
            },
        ];
        let c = claims(serde_json::json!({"groups": ["x", "writ-approvers"]}));
        assert_eq!(role_for(&c, &rules), Some(Role::Approver));
        let c = claims(serde_json::json!({"groups": ["writ-approvers", "writ-admins"]}));
        assert_eq!(role_for(&c, &rules), Some(Role::Admin));
        let c = claims(serde_json::json!({"department": "audit"}));
        assert_eq!(role_for(&c, &rules), Some(Role::Auditor));
        let c = claims(serde_json::json!({"groups": "writ-approvers-not"}));
        assert_eq!(role_for(&c, &rules), None);
    }

    #[test]
    fn sessions_are_named_by_a_valid_claim() {
        let c = claims(
            serde_json::json!({"email": "Alice@Example.com", "email_verified": true, "sub": "a b"}),
        );
        assert_eq!(session_name(&c, "email").unwrap(), "alice@example.com");
        for unverified in [
            serde_json::json!({"email": "alice@example.com"}),
            serde_json::json!({"email": "alice@example.com", "email_verified": false}),
        ] {
            assert!(session_name(&claims(unverified), "email").is_err());
        }
        assert!(session_name(&c, "sub").is_err());
        assert!(session_name(&c, "preferred_username").is_err());
    }

    #[test]
    fn an_old_or_foreign_identity_token_is_refused() {
        let c = claims(serde_json::json!({"iat": 1000, "aud": "writ"}));
        assert!(check_fresh(&c, "writ", 600, 1500).is_ok());
        assert!(check_fresh(&c, "writ", 600, 1700).is_err());
        let c = claims(serde_json::json!({"iat": 1000, "aud": ["writ", "other"], "azp": "other"}));
        assert!(check_fresh(&c, "writ", 600, 1000).is_err());
        let c = claims(serde_json::json!({"aud": "writ"}));
        assert!(check_fresh(&c, "writ", 600, 1000).is_err());
    }
}
