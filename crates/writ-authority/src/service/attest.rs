//! Attestation: an instance proves which agent it is and gets an instance token.

use writ_core::api::{AttestRequest, Attestation, Attested};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::dpop::VerifiedProof;
use writ_core::lifetime::Lifetime;
use writ_core::token::{self, ExternalExpect};
use writ_core::{AgentName, InstanceId, Timestamp};
use writ_store::{GrantKind, Instance, JoinTokenError, StoreError};

use std::sync::Arc;

use writ_core::Clock;
use writ_store::Store;

use super::hash_secret;
use super::tokens::{Issue, Issued, Tokens};
use crate::attest_digest::AttestDigest;
use crate::config::BrokerConfig;
use crate::dpop::DpopGuard;
use crate::error::Error;
use crate::limit::RateLimiter;
use crate::metrics::{self, Metrics};
use crate::oidc::{self, KeySource, OidcVerifier};
use crate::spiffe::Authority;

/// What an attestation refused before its credential was proven tells
/// the caller: the same status and the same words for an unknown agent, an
/// unknown join token, an agent that attests another way and a token that
/// does not verify, so that `/v1/attest` says nothing of which agents
/// exist (as Vault's AppRole login answers "invalid role or secret ID"
/// whichever of the two was wrong). The audit record has the reason.
pub const NOT_ATTESTED: &str = "attestation failed: unknown agent, or a credential that does not attest it \
     (the reason is in the audit log)";

/// How much a refusal tells the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Told {
    /// [`NOT_ATTESTED`]: the caller has proven nothing.
    Nothing,
    /// The reason: the caller holds a real credential (or the reason
    /// depends on nothing but the request itself).
    Reason,
}

/// Why an attestation without a DPoP proof is refused under
/// `--require-dpop`.
const REQUIRE_DPOP: &str = "this broker requires DPoP (--require-dpop): attest with a DPoP proof \
     (RFC 9449) so every token of the instance is bound to its key; mTLS attestation, whose \
     tokens carry no key binding, is refused";

/// Attestation: join tokens, OIDC identity tokens, JWT- and X.509-SVIDs
/// turned into instance tokens. Holds its own rate limit and the fold of
/// repeated failures.
pub struct Attestations {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Arc<BrokerConfig>,
    tokens: Arc<Tokens>,
    dpop: Arc<DpopGuard>,
    oidc: Arc<OidcVerifier>,
    spiffe: Arc<Authority>,
    metrics: Arc<Metrics>,
    /// Per-client rate of attestation requests.
    limit: RateLimiter,
    /// Identical attestation failures, folded in the audit.
    digest: AttestDigest,
}

impl Attestations {
    pub(super) fn new(h: &super::Handles, tokens: &Arc<Tokens>) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            config: Arc::clone(&h.config),
            tokens: Arc::clone(tokens),
            dpop: Arc::clone(&h.dpop),
            oidc: Arc::clone(&h.oidc),
            spiffe: Arc::clone(&h.spiffe),
            metrics: Arc::clone(&h.metrics),
            limit: RateLimiter::new(h.config.attest_per_minute),
            digest: AttestDigest::new(h.config.attest_fold_ms),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The stateless and nonce checks of an attestation request's DPoP
    /// proof; it is remembered (against replay) only once the request's
    /// credential is accepted.
    pub fn attest_proof(&self, proof: &str) -> Result<VerifiedProof, Error> {
        let url = self.config.url("/v1/attest");
        let expected = writ_core::dpop::Expected {
            method: "POST",
            url: &url,
            access_token: None,
            now: self.now(),
        };
        self.dpop.verify_attest(proof, &expected)
    }

    /// Takes one attestation request from `client`'s allowance (no client:
    /// no limit), or refuses it with the seconds to wait.
    pub fn admit_attestation(&self, client: Option<std::net::IpAddr>) -> Result<(), Error> {
        let Some(ip) = client else {
            return Ok(());
        };
        self.limit.check(ip, self.now()).map_err(|l| {
            metrics::inc(&self.metrics.attest_rate_limited);
            Error::RateLimited {
                detail: format!(
                    "too many attestation requests from this address; try again in {} s",
                    l.retry_after_secs
                ),
                retry_after: l.retry_after_secs,
            }
        })
    }

    /// `proof`: the DPoP proof of the key the instance will be bound to,
    /// verified but not yet remembered. It is remembered (and a replay
    /// refused) only once the credential has been checked, just before
    /// anything is consumed or issued.
    pub async fn attest(
        &self,
        req: AttestRequest,
        proof: Option<VerifiedProof>,
    ) -> Result<Attested, Error> {
        let now = self.now();
        if self.config.require_dpop && proof.is_none() {
            return Err(self
                .attest_failed(&req.agent, None, REQUIRE_DPOP, Told::Reason)
                .await);
        }
        match (req.join_token, req.oidc_token, req.jwt_svid) {
            (Some(jt), None, None) => self.attest_join_token(&req.agent, &jt, proof, now).await,
            (None, Some(tok), None) => self.attest_oidc(&req.agent, &tok, proof, now).await,
            (None, None, Some(svid)) => self.attest_svid(&req.agent, &svid, proof, now).await,
            _ => Err(Error::Invalid(
                "give exactly one of join_token, oidc_token and jwt_svid".into(),
            )),
        }
    }

    /// The join token is looked at first, before the agent: whatever agent
    /// is named, an unknown token costs one read and gets [`NOT_ATTESTED`].
    async fn attest_join_token(
        &self,
        name: &AgentName,
        jt: &str,
        proof: Option<VerifiedProof>,
        now: Timestamp,
    ) -> Result<Attested, Error> {
        const M: Option<&str> = Some("join_token");
        let hash = hash_secret(jt);
        let Some(token) = self.store.join_token(&hash).await? else {
            return Err(self
                .attest_failed(name, M, "join token is unknown", Told::Nothing)
                .await);
        };
        if &token.agent != name {
            let e = JoinTokenError::WrongAgent.to_string();
            return Err(self.attest_failed(name, M, &e, Told::Reason).await);
        }
        let Some(agent) = self.store.get_agent(name).await? else {
            return Err(self
                .attest_failed(name, M, "unknown agent", Told::Nothing)
                .await);
        };
        if agent.quarantined {
            return Err(self.quarantined(name, M).await);
        }
        if !matches!(agent.attestation, Attestation::JoinToken) {
            let m = format!("agent attests with {}", agent.attestation.kind());
            return Err(self.attest_failed(name, M, &m, Told::Nothing).await);
        }
        if let Some(e) = token.refusal(name, now) {
            return Err(self
                .attest_failed(name, M, &e.to_string(), Told::Reason)
                .await);
        }
        // Single use: the store consumes the token exactly once.
        let jkt = self.remember_proof(proof, now, true)?;
        self.attested(&agent, "join_token", Some(hash), jkt, now)
            .await
    }

    async fn attest_oidc(
        &self,
        name: &AgentName,
        tok: &str,
        proof: Option<VerifiedProof>,
        now: Timestamp,
    ) -> Result<Attested, Error> {
        const M: Option<&str> = Some("oidc");
        // The header rules hold for every token, whatever agent is named:
        // a token with `jku`/`x5u` is refused before any fetch.
        if let Err(e) = token::external_kid(tok) {
            let m = format!("oidc token rejected: {e}");
            return Err(self.attest_failed(name, M, &m, Told::Reason).await);
        }
        let agent = self.store.get_agent(name).await?;
        let Some((
            agent,
            Attestation::Oidc {
                issuer,
                jwks_uri,
                jwks,
                audience,
                subject,
                algorithms,
            },
        )) = agent.as_ref().map(|a| (a, &a.attestation))
        else {
            self.oidc.verify_decoy(tok, now);
            let m = match &agent {
                None => "unknown agent".to_owned(),
                Some(a) => format!("agent attests with {}", a.attestation.kind()),
            };
            return Err(self.attest_failed(name, M, &m, Told::Nothing).await);
        };
        let algs = oidc::algorithms(algorithms).map_err(Error::Internal)?;
        let source = match (jwks, jwks_uri) {
            (Some(set), _) => KeySource::Inline(set),
            (None, Some(uri)) => KeySource::Uri(uri),
            (None, None) => {
                return Err(Error::Internal("oidc agent without keys".into()));
            }
        };
        let expect = ExternalExpect {
            issuer,
            audience,
            subject,
            algorithms: &algs,
        };
        if let Err(e) = self.oidc.verify(tok, source, &expect, now).await {
            let m = format!("oidc token rejected: {e}");
            return Err(self.attest_failed(name, M, &m, Told::Nothing).await);
        }
        if agent.quarantined {
            return Err(self.quarantined(name, M).await);
        }
        // Reusable within its lifetime: a full replay cache refuses it.
        let jkt = self.remember_proof(proof, now, false)?;
        self.attested(agent, "oidc", None, jkt, now).await
    }

    async fn attest_svid(
        &self,
        name: &AgentName,
        svid: &str,
        proof: Option<VerifiedProof>,
        now: Timestamp,
    ) -> Result<Attested, Error> {
        const M: Option<&str> = Some("spiffe");
        let agent = self.store.get_agent(name).await?;
        // An unknown agent's SVID is checked against the ID it would have.
        let expected = match agent.as_ref().map(|a| (a, &a.attestation)) {
            Some((a, Attestation::Spiffe { spiffe_id })) => {
                spiffe_id.clone().unwrap_or_else(|| a.spiffe_id.clone())
            }
            Some((a, _)) => a.spiffe_id.clone(),
            None => writ_core::ids::agent_spiffe_id(&self.config.trust_domain, name),
        };
        let verified = self
            .spiffe
            .verify_jwt(svid, &expected, &self.config.issuer, now);
        let agent = match agent {
            Some(a) if matches!(a.attestation, Attestation::Spiffe { .. }) => a,
            other => {
                let m = match other {
                    None => "unknown agent".to_owned(),
                    Some(a) => format!("agent attests with {}", a.attestation.kind()),
                };
                return Err(self.attest_failed(name, M, &m, Told::Nothing).await);
            }
        };
        let (jti, exp) = match verified {
            Ok(v) => v,
            Err(e) => {
                let m = format!("jwt-svid rejected: {e}");
                return Err(self.attest_failed(name, M, &m, Told::Nothing).await);
            }
        };
        if agent.quarantined {
            return Err(self.quarantined(name, M).await);
        }
        self.refuse_quarantined_node(&agent, "spiffe").await?;
        // Single use: remembered below, before the instance is recorded.
        let jkt = self.remember_proof(proof, now, true)?;
        if let Err(e) = self.spiffe.first_use(&jti, exp, now) {
            let m = format!("jwt-svid rejected: {e}");
            return Err(self.attest_failed(name, M, &m, Told::Reason).await);
        }
        self.attested(&agent, "spiffe", None, jkt, now).await
    }

    /// Remembers the attestation's DPoP proof, if any; its key thumbprint.
    fn remember_proof(
        &self,
        proof: Option<VerifiedProof>,
        now: Timestamp,
        single_use: bool,
    ) -> Result<Option<String>, Error> {
        match proof {
            Some(p) => {
                self.dpop.remember_attest(&p, now, single_use)?;
                Ok(Some(p.jkt))
            }
            None => Ok(None),
        }
    }

    /// Attestation over mTLS: the client's X.509-SVID (already verified to
    /// chain to the trust domain's authorities) names `peer_id`, which must
    /// be the agent's SPIFFE ID.
    pub async fn attest_x509(
        &self,
        name: &writ_core::AgentName,
        peer_id: &str,
    ) -> Result<Attested, Error> {
        const M: Option<&str> = Some("spiffe_x509");
        let now = self.now();
        if self.config.require_dpop {
            // Tokens attested over mTLS carry no key binding of their own.
            return Err(self
                .attest_failed(name, M, REQUIRE_DPOP, Told::Reason)
                .await);
        }
        let Some(agent) = self.store.get_agent(name).await? else {
            return Err(self
                .attest_failed(name, M, "unknown agent", Told::Nothing)
                .await);
        };
        let Attestation::Spiffe { spiffe_id } = &agent.attestation else {
            let m = format!("agent attests with {}", agent.attestation.kind());
            return Err(self.attest_failed(name, M, &m, Told::Nothing).await);
        };
        let expected = spiffe_id.clone().unwrap_or_else(|| agent.spiffe_id.clone());
        if peer_id != expected {
            let m = format!("the client certificate names {peer_id}, not the agent");
            return Err(self.attest_failed(name, M, &m, Told::Nothing).await);
        }
        if agent.quarantined {
            return Err(self.quarantined(name, M).await);
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
    ) -> Result<(), Error> {
        if let Some(w) = &agent.workload
            && self
                .store
                .get_node(&w.node)
                .await?
                .is_none_or(|n| n.quarantined)
        {
            let m = format!("node {} is quarantined", w.node);
            return Err(self
                .attest_failed(&agent.name, Some(method), &m, Told::Reason)
                .await);
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
    ) -> Result<Attested, Error> {
        let instance_id = InstanceId::generate()?;
        let ttl = self.config.instance_token_ttl;
        let Issued {
            token,
            grant,
            exp: expires_at,
            event: issued,
        } = self.tokens.issue(Issue {
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
            .detail(attest_detail(agent, method)),
            issued,
        ];
        match self
            .store
            .create_instance(&instance, join_hash.as_deref(), &grant, audit)
            .await
        {
            Ok(()) => {}
            // A race with another use of the join token, or a quarantine:
            // the credential was real, so the reason may be told.
            Err(StoreError::JoinToken(e)) => {
                return Err(self
                    .attest_failed(&agent.name, Some(method), &e.to_string(), Told::Reason)
                    .await);
            }
            Err(StoreError::Quarantined) => {
                return Err(self.quarantined(&agent.name, Some(method)).await);
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

    /// Refuses a quarantined agent (403): said only to a caller whose
    /// credential for the agent was accepted.
    async fn quarantined(&self, agent: &AgentName, method: Option<&str>) -> Error {
        match self
            .audit_attest_failure(agent, method, "agent is quarantined")
            .await
        {
            Ok(()) => Error::Quarantined("attestation failed: agent is quarantined".into()),
            Err(e) => e,
        }
    }

    /// Audits a failed attestation, with its reason, and builds the error
    /// to answer (401), which tells the reason or nothing as `told` says.
    /// If the audit record cannot be written, the answer is 503: never an
    /// unaudited refusal.
    async fn attest_failed(
        &self,
        agent: &AgentName,
        method: Option<&str>,
        reason: &str,
        told: Told,
    ) -> Error {
        if let Err(e) = self.audit_attest_failure(agent, method, reason).await {
            return e;
        }
        match told {
            Told::Nothing => Error::Unauthenticated(NOT_ATTESTED.into()),
            Told::Reason => Error::Unauthenticated(format!("attestation failed: {reason}")),
        }
    }

    async fn audit_attest_failure(
        &self,
        agent: &AgentName,
        method: Option<&str>,
        reason: &str,
    ) -> Result<(), Error> {
        metrics::inc(&self.metrics.attest_failed);
        let now = self.now();
        // Identical failures within a window are counted, not each
        // written (see crate::attest_digest); windows that are over are
        // written now.
        let mut events = self.digest.due(now);
        if !self.digest.first(agent.as_str(), method, reason, now) {
            if !events.is_empty() {
                self.store.append_audit(now, events).await?;
            }
            return Ok(());
        }
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
        events.push(event);
        self.store.append_audit(now, events).await?;
        Ok(())
    }

    /// Writes the folded attestation failures whose windows are over.
    pub async fn flush_attest_digest(&self) -> Result<(), Error> {
        let now = self.now();
        let events = self.digest.due(now);
        if !events.is_empty() {
            self.store.append_audit(now, events).await?;
        }
        Ok(())
    }
}

/// What an attestation record says of where it came from: the method, and
/// the node or token issuer (the source detection rules watch for change).
fn attest_detail(agent: &writ_core::api::Agent, method: &str) -> serde_json::Value {
    let mut d = serde_json::json!({ "method": method });
    if let Some(obj) = d.as_object_mut() {
        if let Some(w) = &agent.workload {
            obj.insert("node".into(), w.node.clone().into());
        } else if let Attestation::Oidc { issuer, .. } = &agent.attestation {
            obj.insert("issuer".into(), issuer.clone().into());
        }
    }
    d
}
