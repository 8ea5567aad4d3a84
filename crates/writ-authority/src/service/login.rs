//! Operators' single sign-on: an identity token from the operators' own
//! OIDC provider, verified here against the issuer's keys, audience and
//! lifetime (never taken on the client's word), becomes a short-lived
//! operator credential with a name from the identity and a role from the
//! configured claim-to-role rules. Sessions are listed and revoked with
//! every other operator credential.

use writ_core::Timestamp;
use writ_core::api::{OperatorSession, OperatorSsoInfo, Role, valid_operator_name};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::random;
use writ_core::token::ExternalExpect;

use super::hash_secret;
use super::operators::Operators;
use crate::config::{OperatorSso, RoleRule};
use crate::error::Error;

impl Operators {
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
            browser_start: sso
                .browser
                .as_ref()
                .filter(|_| self.config.console)
                .map(|_| super::BROWSER_SIGN_IN_START.to_owned()),
        })
    }

    /// Exchanges a verified identity token for an operator session (the
    /// device flow: `writ login` posts the token it got).
    pub async fn operator_sign_in(&self, id_token: &str) -> Result<OperatorSession, Error> {
        let sso = self.sso()?;
        self.sign_in(id_token, &sso.client_id, None, Via::Device)
            .await
    }

    /// The one way an identity token becomes a session, for every flow:
    /// verified for `audience` (and, from a browser, `nonce`), fresh, used
    /// once, naming someone a role rule matches. Every refusal is audited
    /// (who the token claims, why; never the token) before it is answered:
    /// if the record cannot be written, the answer is that error.
    pub(crate) async fn sign_in(
        &self,
        id_token: &str,
        audience: &str,
        nonce: Option<&str>,
        via: Via,
    ) -> Result<OperatorSession, Error> {
        let sso = self.sso()?;
        match self.accept_identity(sso, id_token, audience, nonce).await {
            Ok(session) => Ok(session),
            Err(refusal) => {
                let Refusal { error: e, claims } = *refusal;
                if is_refusal(&e) {
                    match claims {
                        Some(c) => {
                            let claimed = Claimed::verified(&c, &sso.name_claim);
                            self.audit_refused_sign_in(via, &claimed, &e.to_string())
                                .await?;
                        }
                        // Its signature did not verify: anyone can send
                        // one, so what it claims is kept out of the audit,
                        // and identical ones are folded.
                        None => self.audit_unverified_sign_in(via, &e.to_string()).await?,
                    }
                }
                Err(e)
            }
        }
    }

    async fn accept_identity(
        &self,
        sso: &OperatorSso,
        id_token: &str,
        audience: &str,
        nonce: Option<&str>,
    ) -> Result<OperatorSession, Box<Refusal>> {
        let now = self.now();
        let expect = ExternalExpect {
            issuer: &sso.issuer,
            audience,
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
                return Err(Box::new(Refusal {
                    error: Error::Unauthenticated(format!("identity token refused: {e}")),
                    claims: None,
                }));
            }
        };
        let (name, role) = match who_signs_in(sso, &claims, audience, nonce, now.secs()) {
            Ok(v) => v,
            Err(e) => return fail(e, claims),
        };
        // Used once: remembered until it would be refused as stale anyway.
        let until = remembered_until(&claims, sso.max_token_age);
        match self
            .store
            .use_identity_token(&replay_key(&claims, id_token), until, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(operator = %name, "operator sign-in refused: identity token replayed");
                return fail(
                    Error::Unauthenticated("identity token was used before: sign in again".into()),
                    claims,
                );
            }
            Err(e) => return fail(e.into(), claims),
        }
        let token = match random::token_256() {
            Ok(t) => format!("writ_op_{t}"),
            Err(e) => return fail(e.into(), claims),
        };
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
        if let Err(e) = self
            .store
            .add_operator_session(
                &name,
                &hash_secret(&token),
                role,
                expires_at,
                now,
                vec![event],
            )
            .await
        {
            return fail(e.into(), claims);
        }
        tracing::info!(operator = %name, %role, "operator signed in");
        Ok(OperatorSession {
            name,
            role,
            token,
            expires_at,
        })
    }

    /// Writes the record of a refused sign-in.
    pub(crate) async fn audit_refused_sign_in(
        &self,
        via: Via,
        claimed: &Claimed,
        reason: &str,
    ) -> Result<(), Error> {
        let event = AuditEvent::new(AuditKind::OperatorSignIn, Outcome::Deny, "system")
            .reason(format!("operator sign-in refused: {reason}"))
            .detail(serde_json::json!({
                "via": via.as_str(),
                "verified": claimed.verified,
                "issuer": claimed.issuer,
                "subject": claimed.subject,
                "name": claimed.name,
            }));
        self.store.append_audit(self.now(), vec![event]).await?;
        Ok(())
    }

    /// A refused sign-in whose identity token did not verify: recorded
    /// without anything the token claims (anyone could have written it),
    /// and, like repeated attestation failures, identical ones within a
    /// window are counted into one record (see crate::attest_digest).
    pub(crate) async fn audit_unverified_sign_in(
        &self,
        via: Via,
        reason: &str,
    ) -> Result<(), Error> {
        let now = self.now();
        let reason: String = format!("operator sign-in refused: {reason}")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let mut events = self.sign_in_folded(now);
        if self
            .sign_in_digest
            .first("operator-sign-in", Some(via.as_str()), &reason, now)
        {
            events.push(
                AuditEvent::new(AuditKind::OperatorSignIn, Outcome::Deny, "system")
                    .reason(reason)
                    .detail(serde_json::json!({ "via": via.as_str(), "verified": false })),
            );
        }
        if !events.is_empty() {
            self.store.append_audit(now, events).await?;
        }
        Ok(())
    }

    /// The folded unverified sign-ins whose windows are over, as sign-in
    /// records.
    fn sign_in_folded(&self, now: Timestamp) -> Vec<AuditEvent> {
        self.sign_in_digest
            .due(now)
            .into_iter()
            .map(|e| {
                let mut detail = e.detail;
                if let Some(obj) = detail.as_object_mut() {
                    if let Some(via) = obj.remove("method") {
                        obj.insert("via".into(), via);
                    }
                    obj.insert("verified".into(), false.into());
                }
                AuditEvent::new(AuditKind::OperatorSignIn, Outcome::Deny, "system")
                    .reason(e.reason.unwrap_or_default())
                    .detail(detail)
            })
            .collect()
    }

    /// Writes the folded unverified sign-ins whose windows are over (for
    /// the sweeper).
    pub async fn flush_sign_in_digest(&self) -> Result<(), Error> {
        let now = self.now();
        let events = self.sign_in_folded(now);
        if !events.is_empty() {
            self.store.append_audit(now, events).await?;
        }
        Ok(())
    }

    /// Takes one operator sign-in from `client`'s allowance (its own, not
    /// the attestations'; no client: no limit), or refuses it with the
    /// seconds to wait.
    pub fn admit_sign_in(&self, client: Option<std::net::IpAddr>) -> Result<(), Error> {
        let Some(ip) = client else {
            return Ok(());
        };
        self.sign_in_limit.check(ip, self.now()).map_err(|l| {
            crate::metrics::inc(&self.metrics.sign_in_rate_limited);
            Error::RateLimited {
                detail: format!(
                    "too many sign-ins from this address; try again in {} s",
                    l.retry_after_secs
                ),
                retry_after: l.retry_after_secs,
            }
        })
    }

    /// Forgets the identity tokens that can no longer be replayed (their
    /// end has passed): for the sweeper.
    pub async fn prune_identity_tokens(&self) -> Result<u64, Error> {
        Ok(self.store.prune_identity_tokens(self.now()).await?)
    }
}

/// Who verified claims name, and their role: when the sign-in is fresh,
/// of this flow (`nonce`), names a valid operator, and a rule matches.
fn who_signs_in(
    sso: &OperatorSso,
    claims: &Claims,
    audience: &str,
    nonce: Option<&str>,
    now: i64,
) -> Result<(String, Role), Error> {
    check_fresh(claims, audience, sso.max_token_age, now)?;
    check_nonce(claims, nonce)?;
    let name = session_name(claims, &sso.name_claim)?;
    let role = role_for(claims, &sso.roles).ok_or_else(|| {
        Error::Forbidden(format!(
            "{name} signed in, but no role rule matches their claims"
        ))
    })?;
    Ok((name, role))
}

/// A sign-in refused, and the verified claims of its token when it got
/// that far (for the audit).
pub(crate) struct Refusal {
    error: Error,
    claims: Option<Claims>,
}

fn fail<T>(error: Error, claims: Claims) -> Result<T, Box<Refusal>> {
    Err(Box::new(Refusal {
        error,
        claims: Some(claims),
    }))
}

/// How an operator signed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// An identity token posted to `/v1/login/oidc` (`writ login`).
    Device,
    /// The console's authorization code flow.
    Browser,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Self::Device => "identity_token",
            Self::Browser => "authorization_code",
        }
    }
}

/// Who a refused sign-in claimed to be: from verified claims, or, when the
/// token was not verified, what it says (which proves nothing: the record
/// says so). Each at most [`CLAIMED_MAX`] characters.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    verified: bool,
    issuer: Option<String>,
    subject: Option<String>,
    name: Option<String>,
}

const CLAIMED_MAX: usize = 128;

impl Claimed {
    fn verified(claims: &Claims, name_claim: &str) -> Self {
        Self {
            verified: true,
            ..Self::from_claims(claims, name_claim)
        }
    }

    fn from_claims(claims: &Claims, name_claim: &str) -> Self {
        let get = |k: &str| {
            claims
                .get(k)
                .and_then(serde_json::Value::as_str)
                .map(|s| s.chars().take(CLAIMED_MAX).collect())
        };
        Self {
            verified: false,
            issuer: get("iss"),
            subject: get("sub"),
            name: get(name_claim),
        }
    }
}

/// Refusals are audited; a store or key that cannot serve is no refusal
/// (and has its own log).
fn is_refusal(e: &Error) -> bool {
    !matches!(
        e,
        Error::Store(_) | Error::Unavailable(_) | Error::Internal(_)
    )
}

/// What names an identity token in the replay table: its issuer and
/// `jti`, or, without one, its issuer and the part its signature signs
/// (`header.payload`): never the signature, which is malleable (an ECDSA
/// signature `(r, s)` verifies as `(r, n - s)` too, and base64url has
/// more than one spelling of some bytes), so a re-signed spelling of one
/// token is the same token. Hashed either way (a fixed length, and no
/// token kept).
fn replay_key(claims: &Claims, token: &str) -> String {
    let jti = claims
        .get("jti")
        .and_then(serde_json::Value::as_str)
        .filter(|j| !j.is_empty());
    let iss = claims
        .get("iss")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    match jti {
        Some(jti) => hash_secret(&format!("jti\n{iss}\n{jti}")),
        None => {
            let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
            hash_secret(&format!("signed\n{iss}\n{signed}"))
        }
    }
}

/// Until when a used identity token is remembered: past both its expiry
/// and its freshness (`iat` + `max_age`), whichever comes first, it is
/// refused anyway. Bounded by `max_age` whatever the token says.
fn remembered_until(claims: &Claims, max_age: i64) -> Timestamp {
    let get = |k: &str| claims.get(k).and_then(serde_json::Value::as_i64);
    let fresh_until = get("iat").map_or(i64::MAX, |iat| iat.saturating_add(max_age));
    let exp = get("exp").map_or(i64::MAX, |e| {
        e.saturating_add(writ_core::token::LEEWAY_SECS)
    });
    // A second past the last accepted one.
    Timestamp::from_secs(fresh_until.min(exp).saturating_add(1))
}

/// A token from a browser sign-in carries the nonce that sign-in made
/// (OIDC Core §3.1.3.7): one got for another sign-in is refused.
fn check_nonce(claims: &Claims, nonce: Option<&str>) -> Result<(), Error> {
    let Some(expected) = nonce else {
        return Ok(());
    };
    let got = claims.get("nonce").and_then(serde_json::Value::as_str);
    let same = got.is_some_and(|g| {
        aws_lc_rs::constant_time::verify_slices_are_equal(g.as_bytes(), expected.as_bytes()).is_ok()
    });
    if !same {
        return Err(Error::Unauthenticated(
            "identity token's nonce is not this sign-in's".into(),
        ));
    }
    Ok(())
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
    fn a_used_identity_token_is_remembered_by_jti_or_itself_until_it_is_stale() {
        let with = claims(serde_json::json!({"iss": "i", "jti": "j", "iat": 1000, "exp": 5000}));
        assert_eq!(replay_key(&with, "t1"), replay_key(&with, "t2"));
        let other_iss = claims(serde_json::json!({"iss": "i2", "jti": "j"}));
        assert_ne!(replay_key(&with, "t1"), replay_key(&other_iss, "t1"));
        let without = claims(serde_json::json!({"iss": "i", "iat": 1000, "exp": 5000}));
        assert_ne!(
            replay_key(&without, "h.p1.s"),
            replay_key(&without, "h.p2.s")
        );
        assert_eq!(
            replay_key(&without, "t1").len(),
            64,
            "a hash, never the token"
        );
        // iat + max age comes first; or the expiry (with its leeway).
        assert_eq!(remembered_until(&with, 600).secs(), 1601);
        let soon = claims(serde_json::json!({"iat": 1000, "exp": 1100}));
        assert_eq!(
            remembered_until(&soon, 600).secs(),
            1100 + writ_core::token::LEEWAY_SECS + 1
        );
    }

    /// ES256 signatures are malleable (`s` -> `n - s` verifies too), and
    /// base64url spells some bytes more than one way: a token without a
    /// `jti` is remembered by what its signature signs and its issuer,
    /// so a re-encoded or malleated signature is the same token.
    #[test]
    fn a_replayed_identity_token_with_a_malleated_signature_is_the_same_token() {
        let without = claims(serde_json::json!({"iss": "i", "iat": 1000, "exp": 5000}));
        let original = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLW9uZQ";
        let malleated = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.bi1taW51cy1zLXNpZ25hdHVyZQ";
        let reencoded = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLW9uZR";
        assert_eq!(
            replay_key(&without, original),
            replay_key(&without, malleated)
        );
        assert_eq!(
            replay_key(&without, original),
            replay_key(&without, reencoded)
        );
        // Another payload, or the same from another issuer, is another token.
        assert_ne!(
            replay_key(&without, original),
            replay_key(
                &without,
                "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MiJ9.c2lnbmF0dXJlLW9uZQ"
            )
        );
        let other_iss = claims(serde_json::json!({"iss": "i2", "iat": 1000, "exp": 5000}));
        assert_ne!(
            replay_key(&without, original),
            replay_key(&other_iss, original)
        );
        assert!(!replay_key(&without, original).contains("eyJ"));
    }

    #[test]
    fn a_browser_sign_in_needs_its_own_nonce() {
        let c = claims(serde_json::json!({"nonce": "n1"}));
        assert!(check_nonce(&c, Some("n1")).is_ok());
        assert!(check_nonce(&c, Some("n2")).is_err());
        assert!(check_nonce(&claims(serde_json::json!({})), Some("n1")).is_err());
        assert!(check_nonce(&c, None).is_ok(), "the device flow has none");
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
