//! The registry: agents, their join tokens and quarantine, and tools.

use std::sync::Arc;

use writ_core::api::{
    Agent, Attestation, BindTool, CreateJoinToken, JoinTokenCreated, Quarantined, RegisterAgent,
    RegisterTool, Removed, Tool, UpdateAgent, UpdateTool,
};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::ids::agent_spiffe_id;
use writ_core::{AgentName, Clock, Timestamp, ToolName, random};
use writ_store::Store;

use super::feed::Revocations;
use super::hash_secret;
use super::subjects::Subjects;
use crate::config::BrokerConfig;
use crate::error::Error;
use crate::metrics::{self, Metrics};
use crate::oidc;
use crate::spiffe::Authority;

const MAX_ATTRIBUTES: usize = 32;
const MAX_ATTRIBUTE_LEN: usize = 256;
const MAX_SCOPES: usize = 64;

/// Agents and tools as operators register, change, quarantine and remove
/// them.
pub struct Registry {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Arc<BrokerConfig>,
    spiffe: Arc<Authority>,
    subjects: Arc<Subjects>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub(super) fn new(h: &super::Handles, subjects: &Arc<Subjects>) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            config: Arc::clone(&h.config),
            spiffe: Arc::clone(&h.spiffe),
            subjects: Arc::clone(subjects),
            revocations: Arc::clone(&h.revocations),
            metrics: Arc::clone(&h.metrics),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub async fn register_agent(&self, req: RegisterAgent, actor: &str) -> Result<Agent, Error> {
        check_attestation(&req.attestation)?;
        check_attributes(&req.attributes)?;
        super::nodes::check_workload(
            &req.attestation,
            req.workload.as_ref(),
            &self.config.trust_domain,
            &self.spiffe.federated_domains(),
        )?;
        let agent = Agent {
            spiffe_id: agent_spiffe_id(&self.config.trust_domain, &req.name),
            name: req.name,
            attestation: req.attestation,
            attributes: req.attributes,
            workload: req.workload,
            quarantined: false,
            created_at: self.now(),
        };
        let event = AuditEvent::new(AuditKind::AgentRegister, Outcome::Success, actor)
            .agent(&agent.name)
            .detail(serde_json::json!({
                "attestation": agent.attestation.kind(),
                "attributes": agent.attributes,
            }));
        self.store.create_agent(&agent, vec![event]).await?;
        Ok(agent)
    }

    pub async fn agent(&self, name: &AgentName) -> Result<Agent, Error> {
        self.subjects.agent(name).await
    }

    pub async fn agents(&self) -> Result<Vec<Agent>, Error> {
        Ok(self.store.list_agents().await?)
    }

    pub async fn create_join_token(
        &self,
        name: &AgentName,
        req: CreateJoinToken,
        actor: &str,
    ) -> Result<JoinTokenCreated, Error> {
        let ttl = self.join_token_ttl(&req)?;
        let agent = self.subjects.agent(name).await?;
        if agent.attestation != Attestation::JoinToken {
            return Err(Error::Invalid(format!(
                "agent {name} attests with {}, not join tokens",
                agent.attestation.kind()
            )));
        }
        if agent.quarantined {
            return Err(Error::Quarantined(format!("agent {name} is quarantined")));
        }
        let token = format!("wjt_{}", random::token_256()?);
        let now = self.now();
        let expires_at = now.add_secs(ttl);
        let event = AuditEvent::new(AuditKind::JoinTokenCreate, Outcome::Success, actor)
            .agent(name)
            .detail(serde_json::json!({ "expires_at": expires_at }));
        self.store
            .create_join_token(name, &hash_secret(&token), expires_at, now, vec![event])
            .await?;
        Ok(JoinTokenCreated {
            join_token: token,
            expires_at,
        })
    }

    /// A join token's lifetime, within the configured bounds.
    pub(crate) fn join_token_ttl(&self, req: &CreateJoinToken) -> Result<i64, Error> {
        join_token_ttl(req, self.config.max_join_token_ttl)
    }

    /// The kill switch: revokes every live grant of the agent at once and
    /// refuses new ones until released; `reason` is recorded with it.
    pub async fn quarantine(
        &self,
        name: &AgentName,
        on: bool,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Quarantined, Error> {
        let kind = if on {
            AuditKind::AgentQuarantine
        } else {
            AuditKind::AgentRelease
        };
        let mut event = AuditEvent::new(kind, Outcome::Success, actor).agent(name);
        if let Some(why) = reason.map(str::trim).filter(|r| !r.is_empty()) {
            event = event.reason(why.chars().take(500).collect::<String>());
        }
        if !actor.starts_with("rule:") {
            // A person decides now: a release a rule scheduled no longer
            // applies (it must never lift a quarantine a person made).
            self.store.cancel_release(name).await?;
        }
        let out = self
            .store
            .set_quarantine(name, on, self.now(), vec![event])
            .await?;
        if !on {
            // Released: the agent starts with a clean record, so a
            // policy on `denials_5m` does not stop it again at once.
            self.store.clear_denials(name, self.now()).await?;
        }
        metrics::add(&self.metrics.tokens_revoked, out.revoked_tokens);
        metrics::add(&self.metrics.tasks_ended, out.ended_tasks);
        self.revocations.changed().await;
        if on {
            tracing::warn!(agent = %name, revoked = out.revoked_tokens, tasks = out.ended_tasks, "agent quarantined");
        }
        Ok(Quarantined {
            agent: name.clone(),
            quarantined: on,
            revoked_tokens: out.revoked_tokens,
            ended_tasks: out.ended_tasks,
        })
    }

    /// Binds a tool to the gateway that serves it: from then on only that
    /// gateway routes it and gets its secret.
    pub async fn bind_tool(
        &self,
        name: &ToolName,
        req: BindTool,
        actor: &str,
    ) -> Result<Tool, Error> {
        let tool = self
            .store
            .get_tool(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tool {name} not found")))?;
        let gateway = super::gateway::check_binding(req.gateway, tool.upstream.as_ref())?;
        let event = AuditEvent::new(AuditKind::ToolRegister, Outcome::Success, actor)
            .reason("tool bound to another gateway")
            .detail(serde_json::json!({
                "tool": name,
                "gateway": gateway,
                "previous_gateway": tool.gateway,
            }));
        self.store
            .set_tool_gateway(name, gateway.as_deref(), self.now(), vec![event])
            .await?;
        Ok(Tool { gateway, ..tool })
    }

    pub async fn register_tool(&self, req: RegisterTool, actor: &str) -> Result<Tool, Error> {
        if req.audience.trim().is_empty()
            || req.audience.len() > 512
            || req.audience.chars().any(char::is_whitespace)
        {
            return Err(Error::Invalid(
                "audience must be a non-empty URI of at most 512 characters without spaces".into(),
            ));
        }
        if req.audience.trim_end_matches('/') == self.config.issuer.trim_end_matches('/') {
            return Err(Error::Invalid(
                "a tool's audience must not be writ's own issuer".into(),
            ));
        }
        let scopes = check_scopes(req.scopes)?;
        check_attributes(&req.attributes)?;
        // A token names its tool by audience: two tools with one audience
        // would each accept the other's tokens.
        if self
            .store
            .list_tools()
            .await?
            .iter()
            .any(|t| t.audience.trim_end_matches('/') == req.audience.trim_end_matches('/'))
        {
            return Err(Error::Conflict(format!(
                "another tool already has audience {}",
                req.audience
            )));
        }
        if let Some(u) = &req.upstream {
            super::gateway::check_upstream(u)?;
        }
        let gateway = super::gateway::check_binding(req.gateway, req.upstream.as_ref())?;
        let tool = Tool {
            name: req.name,
            audience: req.audience,
            scopes,
            attributes: req.attributes,
            upstream: req.upstream,
            secret_header: None,
            gateway,
            created_at: self.now(),
        };
        let event = AuditEvent::new(AuditKind::ToolRegister, Outcome::Success, actor).detail(
            serde_json::json!({
                "tool": tool.name,
                "audience": tool.audience,
                "scopes": tool.scopes,
                "attributes": tool.attributes,
                "upstream": tool.upstream,
                "gateway": tool.gateway,
            }),
        );
        self.store.create_tool(&tool, vec![event]).await?;
        Ok(tool)
    }

    /// Changes an agent's attestation or attributes. Live instances and
    /// tasks keep running; new attestations follow the new rules.
    pub async fn update_agent(
        &self,
        name: &AgentName,
        req: UpdateAgent,
        actor: &str,
    ) -> Result<Agent, Error> {
        let mut agent = self.subjects.agent(name).await?;
        if let Some(a) = req.attestation {
            check_attestation(&a)?;
            agent.attestation = a;
        }
        if let Some(attrs) = req.attributes {
            check_attributes(&attrs)?;
            agent.attributes = attrs;
        }
        super::nodes::check_workload(
            &agent.attestation,
            agent.workload.as_ref(),
            &self.config.trust_domain,
            &self.spiffe.federated_domains(),
        )?;
        let event = AuditEvent::new(AuditKind::AgentUpdate, Outcome::Success, actor)
            .agent(name)
            .detail(serde_json::json!({
                "attestation": agent.attestation.kind(),
                "attributes": agent.attributes,
            }));
        self.store
            .update_agent(&agent, self.now(), vec![event])
            .await?;
        Ok(agent)
    }

    /// Deletes an agent: every live grant, instance and task of it ends at
    /// once (as in quarantine); its name stays reserved, and the audit keeps
    /// naming it.
    pub async fn delete_agent(&self, name: &AgentName, actor: &str) -> Result<Removed, Error> {
        let event = AuditEvent::new(AuditKind::AgentDelete, Outcome::Success, actor).agent(name);
        let out = self
            .store
            .delete_agent(name, self.now(), vec![event])
            .await?;
        Ok(self.removed(name.as_str(), out).await)
    }

    /// Changes a tool's scopes, attributes or upstream. Tasks that declared
    /// a scope no longer offered end, and their tokens with them.
    pub async fn update_tool(
        &self,
        name: &ToolName,
        req: UpdateTool,
        actor: &str,
    ) -> Result<Tool, Error> {
        let mut tool = self.tool(name).await?;
        let mut removed = Vec::new();
        if let Some(scopes) = req.scopes {
            let scopes = check_scopes(scopes)?;
            removed = tool
                .scopes
                .iter()
                .filter(|s| !scopes.contains(s))
                .cloned()
                .collect();
            tool.scopes = scopes;
        }
        if let Some(attrs) = req.attributes {
            check_attributes(&attrs)?;
            tool.attributes = attrs;
        }
        if let Some(u) = req.upstream {
            super::gateway::check_upstream(&u)?;
            super::gateway::check_binding(tool.gateway.clone(), Some(&u))?;
            tool.upstream = Some(u);
        }
        let event = AuditEvent::new(AuditKind::ToolUpdate, Outcome::Success, actor).detail(
            serde_json::json!({
                "tool": tool.name,
                "scopes": tool.scopes,
                "removed_scopes": removed,
                "attributes": tool.attributes,
                "upstream": tool.upstream,
            }),
        );
        let out = self
            .store
            .update_tool(&tool, removed, self.now(), vec![event])
            .await?;
        self.removed(name.as_str(), out).await;
        Ok(tool)
    }

    /// Deletes a tool: every task that declared it ends (its tokens die),
    /// its upstream secret is dropped; its name stays reserved.
    pub async fn delete_tool(&self, name: &ToolName, actor: &str) -> Result<Removed, Error> {
        let event = AuditEvent::new(AuditKind::ToolDelete, Outcome::Success, actor)
            .detail(serde_json::json!({ "tool": name }));
        let out = self
            .store
            .delete_tool(name, self.now(), vec![event])
            .await?;
        Ok(self.removed(name.as_str(), out).await)
    }

    /// Counts and announces what a delete or an update ended.
    async fn removed(&self, name: &str, out: writ_store::QuarantineOutcome) -> Removed {
        metrics::add(&self.metrics.tokens_revoked, out.revoked_tokens);
        metrics::add(&self.metrics.tasks_ended, out.ended_tasks);
        if out.revoked_tokens > 0 || out.ended_tasks > 0 {
            self.revocations.changed().await;
        }
        Removed {
            name: name.to_owned(),
            revoked_tokens: out.revoked_tokens,
            ended_tasks: out.ended_tasks,
        }
    }

    pub async fn tool(&self, name: &ToolName) -> Result<Tool, Error> {
        self.store
            .get_tool(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tool {name} not found")))
    }

    pub async fn tools(&self) -> Result<Vec<Tool>, Error> {
        Ok(self.store.list_tools().await?)
    }
}

fn check_attestation(a: &Attestation) -> Result<(), Error> {
    let Attestation::Oidc {
        issuer,
        jwks_uri,
        jwks,
        audience,
        subject,
        algorithms,
    } = a
    else {
        return Ok(());
    };
    let bad = |m: &str| Err(Error::Invalid(format!("oidc attestation: {m}")));
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        return bad("issuer must be an http(s) URL");
    }
    if audience.is_empty() || subject.is_empty() {
        return bad("audience and subject must not be empty");
    }
    match (jwks_uri, jwks) {
        (Some(uri), None) => {
            if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                return bad("jwks_uri must be an http(s) URL");
            }
        }
        (None, Some(set)) => {
            let set = oidc::parse_jwks(set.clone())
                .map_err(|e| Error::Invalid(format!("oidc attestation: {e}")))?;
            if set.keys.is_empty() {
                return bad("jwks has no keys");
            }
        }
        _ => return bad("give exactly one of jwks_uri and jwks"),
    }
    oidc::algorithms(algorithms).map_err(|e| Error::Invalid(format!("oidc attestation: {e}")))?;
    Ok(())
}

/// 1 to 64 unique scopes, sorted.
fn check_scopes(mut scopes: Vec<writ_core::Scope>) -> Result<Vec<writ_core::Scope>, Error> {
    if scopes.is_empty() || scopes.len() > MAX_SCOPES {
        return Err(Error::Invalid(format!(
            "a tool needs 1 to {MAX_SCOPES} scopes"
        )));
    }
    scopes.sort();
    let before = scopes.len();
    scopes.dedup();
    if scopes.len() != before {
        return Err(Error::Invalid("scopes must be unique".into()));
    }
    Ok(scopes)
}

/// Attribute names `[a-z0-9_]{1,64}`, values printable, at most 256 characters.
fn check_attributes(attrs: &std::collections::BTreeMap<String, String>) -> Result<(), Error> {
    if attrs.len() > MAX_ATTRIBUTES {
        return Err(Error::Invalid(format!(
            "at most {MAX_ATTRIBUTES} attributes"
        )));
    }
    for (k, v) in attrs {
        let key_ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok {
            return Err(Error::Invalid(format!(
                "attribute name {k:?} must be 1-64 characters of a-z, 0-9 and '_'"
            )));
        }
        if v.len() > MAX_ATTRIBUTE_LEN || v.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "attribute {k:?} must be at most {MAX_ATTRIBUTE_LEN} printable characters"
            )));
        }
    }
    Ok(())
}

/// A join token's lifetime as asked: from 1 s to `max`.
pub(crate) fn join_token_ttl(req: &CreateJoinToken, max: i64) -> Result<i64, Error> {
    let ttl = i64::try_from(req.ttl).unwrap_or(i64::MAX);
    if ttl < 1 || ttl > max {
        return Err(Error::Invalid(format!(
            "ttl must be between 1 and {max} seconds"
        )));
    }
    Ok(ttl)
}
