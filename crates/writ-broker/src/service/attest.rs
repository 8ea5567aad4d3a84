//! Attestation: an instance proves which agent it is and gets an instance token.

use writ_core::api::{AttestRequest, Attestation, Attested};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::lifetime::Lifetime;
use writ_core::token::ExternalExpect;
use writ_core::{AgentName, InstanceId};
use writ_store::{GrantKind, Instance, StoreError};

use super::issue::{Issue, Issued};
use super::{Broker, hash_secret};
use crate::error::ApiError;
use crate::metrics;
use crate::oidc::{self, KeySource};

impl Broker {
    /// `jkt`: the DPoP key the instance proved it holds, to bind its token to.
    pub async fn attest(
        &self,
        req: AttestRequest,
        jkt: Option<String>,
    ) -> Result<Attested, ApiError> {
        let now = self.now();
        let Some(agent) = self.store.get_agent(&req.agent).await? else {
            return Err(self.attest_failed(&req.agent, None, "unknown agent").await);
        };
        if agent.quarantined {
            return Err(self
                .attest_failed(&req.agent, None, "agent is quarantined")
                .await);
        }
        if let Some(svid) = req.jwt_svid {
            if req.join_token.is_some() || req.oidc_token.is_some() {
                return Err(ApiError::BadRequest(
                    "give exactly one of join_token, oidc_token and jwt_svid".into(),
                ));
            }
            let expected = match &agent.attestation {
                Attestation::Spiffe { spiffe_id } => {
                    spiffe_id.clone().unwrap_or_else(|| agent.spiffe_id.clone())
                }
                other => {
                    let m = format!("agent attests with {}", other.kind());
                    return Err(self.attest_failed(&req.agent, None, &m).await);
                }
            };
            self.refuse_quarantined_node(&agent, "spiffe").await?;
            if let Err(e) = self
                .spiffe
                .verify_jwt(&svid, &expected, &self.config.issuer, now)
                .and_then(|(jti, exp)| self.spiffe.first_use(&jti, exp, now))
            {
                let m = format!("jwt-svid rejected: {e}");
                return Err(self.attest_failed(&req.agent, Some("spiffe"), &m).await);
            }
            return self.attested(&agent, "spiffe", None, jkt, now).await;
        }
        let (method, join_hash) = match (&agent.attestation, req.join_token, req.oidc_token) {
            (_, Some(_), Some(_)) | (_, None, None) => {
                return Err(ApiError::BadRequest(
                    "give exactly one of join_token, oidc_token and jwt_svid".into(),
                ));
            }
            (Attestation::JoinToken, Some(jt), None) => ("join_token", Some(hash_secret(&jt))),
            (
                Attestation::Oidc {
                    issuer,
                    jwks_uri,
                    jwks,
                    audience,
                    subject,
                    algorithms,
                },
                None,
                Some(tok),
            ) => {
                let algs = oidc::algorithms(algorithms).map_err(ApiError::Internal)?;
                let source = match (jwks, jwks_uri) {
                    (Some(set), _) => KeySource::Inline(set),
                    (None, Some(uri)) => KeySource::Uri(uri),
                    (None, None) => {
                        return Err(ApiError::Internal("oidc agent without keys".into()));
                    }
                };
                let expect = ExternalExpect {
                    issuer,
                    audience,
                    subject,
                    algorithms: &algs,
                };
                if let Err(e) = self.oidc.verify(&tok, source, &expect, now).await {
                    let m = format!("oidc token rejected: {e}");
                    return Err(self.attest_failed(&req.agent, Some("oidc"), &m).await);
                }
                ("oidc", None)
            }
            (a, _, _) => {
                let m = format!("agent attests with {}", a.kind());
                return Err(self.attest_failed(&req.agent, None, &m).await);
            }
        };

        self.attested(&agent, method, join_hash, jkt, now).await
    }

    /// Attestation over mTLS: the client's X.509-SVID (already verified to
    /// chain to the trust domain's authorities) names `peer_id`, which must
    /// be the agent's SPIFFE ID.
    pub async fn attest_x509(
        &self,
        name: &writ_core::AgentName,
        peer_id: &str,
    ) -> Result<Attested, ApiError> {
        let now = self.now();
        let Some(agent) = self.store.get_agent(name).await? else {
            return Err(self.attest_failed(name, None, "unknown agent").await);
        };
        if agent.quarantined {
            return Err(self.attest_failed(name, None, "agent is quarantined").await);
        }
        let Attestation::Spiffe { spiffe_id } = &agent.attestation else {
            let m = format!("agent attests with {}", agent.attestation.kind());
            return Err(self.attest_failed(name, None, &m).await);
        };
        let expected = spiffe_id.clone().unwrap_or_else(|| agent.spiffe_id.clone());
        if peer_id != expected {
            let m = format!("the client certificate names {peer_id}, not the agent");
            return Err(self.attest_failed(name, Some("spiffe_x509"), &m).await);
        }
        self.refuse_quarantined_node(&agent, "spiffe_x509").await?;
        self.attested(&agent, "spiffe_x509", None, None, now).await
    }

    /// A quarantined (or removed) node's SVIDs attest nothing, even
    /// unexpired ones: refuses, audited, an agent running on such a node.
    async fn refuse_quarantined_node(
        &self,
        agent: &writ_core::api::Agent,
        method: &str,
    ) -> Result<(), ApiError> {
        if let Some(w) = &agent.workload
            && self
                .store
                .get_node(&w.node)
                .await?
                .is_none_or(|n| n.quarantined)
        {
            let m = format!("node {} is quarantined", w.node);
            return Err(self.attest_failed(&agent.name, Some(method), &m).await);
        }
        Ok(())
    }

    /// Records the attested instance and its token.
    async fn attested(
        &self,
        agent: &writ_core::api::Agent,
        method: &'static str,
        join_hash: Option<String>,
        jkt: Option<String>,
        now: writ_core::Timestamp,
    ) -> Result<Attested, ApiError> {
        let instance_id = InstanceId::generate()?;
        let ttl = self.config.instance_token_ttl;
        let Issued {
            token,
            grant,
            exp: expires_at,
            event: issued,
        } = self.issue(Issue {
            kind: GrantKind::InstanceToken,
            agent: &agent.name,
            instance: &instance_id,
            sub: agent.spiffe_id.clone(),
            act: None,
            task: None,
            audience: None,
            scope: None,
            jkt: jkt.clone(),
            lifetime: Lifetime::new(now, ttl),
            intent: None,
            task_ctx: None,
        })?;
        let instance = Instance {
            id: instance_id.clone(),
            agent: agent.name.clone(),
            attestation: method.to_owned(),
            created_at: now,
            expires_at,
            revoked_at: None,
            jkt: jkt.clone(),
        };
        let audit = vec![
            AuditEvent::new(
                AuditKind::Attest,
                Outcome::Success,
                format!("agent:{}", agent.name),
            )
            .agent(&agent.name)
            .instance(&instance_id)
            .detail(serde_json::json!({ "method": method })),
            issued,
        ];
        match self
            .store
            .create_instance(&instance, join_hash.as_deref(), &grant, audit)
            .await
        {
            Ok(()) => {}
            Err(StoreError::JoinToken(e)) => {
                return Err(self
                    .attest_failed(&agent.name, Some(method), &e.to_string())
                    .await);
            }
            Err(StoreError::Quarantined) => {
                return Err(self
                    .attest_failed(&agent.name, Some(method), "agent is quarantined")
                    .await);
            }
            Err(e) => return Err(e.into()),
        }
        metrics::inc(&self.metrics.attest_ok);
        metrics::inc(&self.metrics.tokens_issued);
        Ok(Attested {
            instance_id,
            access_token: token,
            token_type: if jkt.is_some() { "DPoP" } else { "Bearer" }.into(),
            expires_in: ttl,
        })
    }

    /// Audits a failed attestation and builds the error to answer. If the
    /// audit record cannot be written, the answer is 503: never an
    /// unaudited refusal.
    async fn attest_failed(
        &self,
        agent: &AgentName,
        method: Option<&str>,
        reason: &str,
    ) -> ApiError {
        metrics::inc(&self.metrics.attest_failed);
        let mut event = AuditEvent::new(
            AuditKind::Attest,
            Outcome::Failure,
            format!("agent:{agent}"),
        )
        .agent(agent)
        .reason(reason);
        if let Some(m) = method {
            event = event.detail(serde_json::json!({ "method": m }));
        }
        if let Err(e) = self.store.append_audit(self.now(), vec![event]).await {
            return e.into();
        }
        if reason == "agent is quarantined" {
            ApiError::Forbidden(format!("attestation failed: {reason}"))
        } else {
            ApiError::Unauthorized(format!("attestation failed: {reason}"))
        }
    }
}
