//! RFC 8693 token exchange: a task token for a tool token (narrowed), or a
//! task delegated to a sub-agent (a child task, narrowed, with the whole
//! actor chain). Every exchange is a policy decision and is audited.

use writ_core::api::{Task, TaskStatus, Tool};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::lifetime::Lifetime;
use writ_core::scope::{self, Capability};
use writ_core::token::{AccessClaims, Actor, TokenKind};
use writ_core::{Scope, TaskId};
use writ_policy::{Chain, Decision, Facts, TaskView, Verdict};
use writ_store::{GrantKind, GrantState, StoreError};

use std::sync::Arc;

use writ_core::{Clock, Timestamp};
use writ_store::Store;

use super::Presented;
use super::policies::Policies;
use super::subjects::Subjects;
use super::tokens::{Issue, Issued, Tokens};
use crate::config::BrokerConfig;
use crate::dpop::DpopGuard;
use crate::error::{Error, GrantError};
use crate::metrics::{self, Metrics};

pub const GRANT_TYPE: &str = writ_core::api::TOKEN_EXCHANGE_GRANT;
pub const ACCESS_TOKEN_TYPE: &str = writ_core::api::ACCESS_TOKEN_TYPE_URN;

pub use writ_core::api::TokenExchanged as TokenResponse;
pub use writ_core::api::TokenRequest;

/// Token exchange: narrows a task token to a tool token, or delegates the
/// task to a sub-agent. Reads subjects, decides with the live policies,
/// issues through [`Tokens`].
pub struct Exchange {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Arc<BrokerConfig>,
    policies: Arc<Policies>,
    subjects: Arc<Subjects>,
    tokens: Arc<Tokens>,
    dpop: Arc<DpopGuard>,
    metrics: Arc<Metrics>,
}

impl Exchange {
    pub(super) fn new(h: &super::Handles, subjects: &Arc<Subjects>, tokens: &Arc<Tokens>) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            config: Arc::clone(&h.config),
            policies: Arc::clone(&h.policies),
            subjects: Arc::clone(subjects),
            tokens: Arc::clone(tokens),
            dpop: Arc::clone(&h.dpop),
            metrics: Arc::clone(&h.metrics),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// `POST /oauth2/token`. `proof` is the request's DPoP header.
    pub async fn token_exchange(
        &self,
        req: TokenRequest,
        proof: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        let subject = req.check().map_err(|e| match e.error {
            "unsupported_grant_type" => GrantError::UnsupportedType(e.description).into(),
            _ => Error::Invalid(e.description),
        })?;

        // The subject: a live task token. If bound, the request's proof must
        // be signed by its key (the proof carries no `ath`: the token is in
        // the body, not the Authorization header).
        // A token that does not verify is not audited (anyone can send
        // garbage); a real token used wrongly is.
        let claims = self
            .tokens
            .verify_token(subject, TokenKind::Any)
            .map_err(|e| GrantError::Invalid(format!("subject_token: {e}")))?;
        if claims.task.is_none() {
            let e = GrantError::Invalid("subject_token must be a task token".into());
            self.audit_refusal(&claims, None, &e.to_string()).await?;
            return Err(e.into());
        }
        let proven = self
            .tokens
            .check_binding(
                &claims,
                &Presented {
                    token: subject,
                    dpop: claims.cnf.is_some(),
                    proof,
                },
                "POST",
                "/oauth2/token",
                false,
            )
            .map_err(|e| match e {
                e @ Error::Binding(_) => e,
                other => GrantError::Invalid(other.to_string()).into(),
            });
        let proven = match proven {
            Ok(j) => j,
            Err(e) => {
                self.audit_refusal(&claims, None, &e.to_string()).await?;
                return Err(e);
            }
        };
        let state = match self.tokens.live_grant(&claims).await {
            Ok(s) => s,
            Err(e) => {
                let e = GrantError::Invalid(format!("subject_token: {e}"));
                self.audit_refusal(&claims, None, &e.to_string()).await?;
                return Err(e.into());
            }
        };
        let task_id = state
            .grant
            .task_id
            .clone()
            .ok_or_else(|| GrantError::Invalid("subject_token is not a task token".into()))?;
        let task = self
            .store
            .get_task(&task_id)
            .await?
            .ok_or_else(|| GrantError::Invalid("task not found".into()))?;
        if task.status != TaskStatus::Active {
            return Err(GrantError::Invalid("the subject token's task has ended".into()).into());
        }
        let subject_exp = writ_core::Timestamp::from_secs(claims.exp);

        match req.actor_token.as_deref() {
            None => {
                self.exchange_for_tool(&claims, &task, proven, subject_exp, &req)
                    .await
            }
            Some(actor) => {
                self.delegate(&claims, &task, actor, subject_exp, &req)
                    .await
            }
        }
    }

    async fn exchange_for_tool(
        &self,
        claims: &AccessClaims,
        task: &Task,
        jkt: Option<String>,
        subject_exp: writ_core::Timestamp,
        req: &TokenRequest,
    ) -> Result<TokenResponse, Error> {
        let target = req.audience.as_deref().or(req.resource.as_deref());
        let Some(target) = target else {
            return Err(Error::Invalid(
                "audience or resource (a registered tool) is required".into(),
            ));
        };
        let tool = match self.find_tool(target).await? {
            Some(t) => t,
            None => {
                return self
                    .refuse(
                        claims,
                        GrantError::Target(format!("{target} is not a registered tool")),
                    )
                    .await;
            }
        };
        let Some(held) = task.capabilities.iter().find(|c| c.tool == tool.name) else {
            let e = GrantError::Target(format!("the task holds nothing for tool {}", tool.name));
            return self.refuse(claims, e).await;
        };
        let scopes = match scope::narrow_for_tool(held, req.scope.as_deref())
            .map_err(|e| GrantError::Scope(e.to_string()))
        {
            Ok(s) => s,
            Err(e) => return self.refuse(claims, e).await,
        };
        let cap = Capability {
            tool: tool.name.clone(),
            scopes,
        };

        let now = self.now();
        let lineage = self.subjects.lineage(task).await?;
        let agents = self.subjects.lineage_agents(&lineage).await?;
        let me = self.acting_agent(&task.agent).await?;
        let attestation = self
            .subjects
            .instance_attestation(&task.instance_id)
            .await?;
        let view = TaskView::of_task(task, &attestation);
        let behaviour = self.subjects.behaviour(&task.agent, now).await?;
        let facts = Facts::exchange_token(
            Chain::new(&me, agents.iter()),
            &view,
            cap.clone(),
            &tool,
            behaviour,
            now,
        );
        let decision = self.policies.decide(&self.policies.live(), &facts).await?;
        let detail = serde_json::json!({
            "tool": tool.name,
            "scope": cap.scopes,
            "verdict": decision.verdict().as_str(),
            "reason": decision.reason(),
        });
        match decision.verdict() {
            Verdict::Allow => {}
            // The task's own instance asked: the refusal is its agent's.
            Verdict::Deny | Verdict::NeedsApproval => {
                metrics::inc(&self.metrics.exchanges_refused);
                return Err(self
                    .refuse_decision(claims, task, &decision, detail, &task.agent, now)
                    .await);
            }
        }

        let scope_claim = cap
            .scopes
            .iter()
            .map(Scope::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        let Issued {
            token,
            grant,
            exp,
            event: issued,
        } = self.tokens.issue(Issue {
            kind: GrantKind::ToolToken,
            agent: &task.agent,
            instance: &task.instance_id,
            sub: claims.sub.clone(),
            act: claims.act.clone(),
            task: Some(task),
            audience: Some(tool.audience.clone()),
            scope: Some(scope_claim.clone()),
            jkt: jkt.clone(),
            lifetime: Lifetime::new(now, self.config.tool_token_ttl)
                .within(task.expires_at)
                .within(subject_exp)
                .capped(decision.max_ttl()),
            intent: Some(task.intent.clone()),
            task_ctx: Some(TaskView::of_task_claim(task, &attestation)),
        })?;
        let mut detail = detail;
        if task.exception
            && let Some(obj) = detail.as_object_mut()
        {
            obj.insert("exception".into(), true.into());
        }
        let audit = vec![
            self.exchange_event(claims, task, Outcome::Success, &decision, detail),
            issued,
        ];
        self.store.record_grant(&grant, audit).await?;
        if task.exception {
            // An exception's every use is counted (`writ task list --exceptions`).
            self.store.count_exception_use(&task.task_id).await?;
        }
        metrics::inc(&self.metrics.tokens_issued);
        metrics::inc(&self.metrics.exchanges_ok);
        Ok(TokenResponse {
            access_token: token,
            issued_token_type: ACCESS_TOKEN_TYPE.into(),
            token_type: if jkt.is_some() { "DPoP" } else { "Bearer" }.into(),
            expires_in: now.secs_until(exp),
            scope: scope_claim,
            task_id: None,
        })
    }

    async fn delegate(
        &self,
        claims: &AccessClaims,
        parent: &Task,
        actor_token: &str,
        subject_exp: writ_core::Timestamp,
        req: &TokenRequest,
    ) -> Result<TokenResponse, Error> {
        let (actor_claims, actor_state, actor_agent, lineage) = self
            .delegation_actor(
                claims,
                parent,
                actor_token,
                req.actor_token_proof.as_deref(),
            )
            .await?;
        let depth = parent.depth + 1;
        let (caps, tools) = self.delegated_capabilities(claims, parent, req).await?;

        let now = self.now();
        let agents = self.subjects.lineage_agents(&lineage).await?;
        let actor_attestation = self
            .subjects
            .instance_attestation(&actor_state.grant.instance_id)
            .await?;
        let parent_attestation = self
            .subjects
            .instance_attestation(&parent.instance_id)
            .await?;
        let view = TaskView::of_task(parent, &parent_attestation);
        // Policy sees what the sub-agent (the principal) has been doing.
        let behaviour = self.subjects.behaviour(&actor_agent.name, now).await?;
        let facts = Facts::delegate_task(
            Chain::new(&actor_agent, agents.iter()),
            &actor_attestation,
            &view,
            caps.clone(),
            tools.iter().collect(),
            behaviour,
            now,
        );
        let decision = self.policies.decide(&self.policies.live(), &facts).await?;
        // A bound task never yields a bearer descendant unless policy says
        // so for every tool: a stolen bearer child would undo the binding.
        let unbound = claims.cnf.is_some() && actor_claims.cnf.is_none();
        let detail = serde_json::json!({
            "actor": actor_agent.name,
            "actor_instance": actor_state.grant.instance_id,
            "capabilities": caps,
            "depth": depth,
            "verdict": decision.verdict().as_str(),
            "reason": decision.reason(),
            "unbound": unbound,
        });
        if unbound && decision.verdict() == Verdict::Allow && !decision.unbound_delegation_allowed()
        {
            let e = GrantError::Invalid(
                "the task is bound to a DPoP key and the actor_token is not: a bound task is \
                 delegated only to a bound instance (or where a DelegateTask permit says \
                 @unbound_delegation(\"allowed\"))"
                    .into(),
            );
            return self.refuse(claims, e).await;
        }
        match decision.verdict() {
            Verdict::Allow => {}
            // The planner holding the task token asked, not the sub-agent
            // it named: the refusal is the planner's.
            Verdict::Deny | Verdict::NeedsApproval => {
                return Err(self
                    .refuse_decision(claims, parent, &decision, detail, &parent.agent, now)
                    .await);
            }
        }

        let child = self.child_task(
            parent,
            &actor_agent.name,
            &actor_state,
            caps,
            &decision,
            now,
        )?;
        let child_id = child.task_id.clone();
        // Nested `act`: the new actor outermost, the earlier ones inside.
        let act = Actor {
            sub: actor_agent.spiffe_id.clone(),
            act: claims.act.clone().map(Box::new),
        };
        let jkt = actor_claims.cnf.as_ref().map(|c| c.jkt.clone());
        let Issued {
            token,
            grant,
            exp,
            event: issued,
        } = self.tokens.task_token(
            &child,
            &claims.sub,
            Some(act),
            jkt.clone(),
            Some(subject_exp),
            now,
        )?;
        let audit = vec![
            self.exchange_event(claims, parent, Outcome::Success, &decision, detail),
            AuditEvent::new(AuditKind::TaskStart, Outcome::Success, format!("instance:{}", claims.client_id))
                .agent(&child.agent)
                .instance(&child.instance_id)
                .task(&child_id)
                .on_behalf_of(child.on_behalf_of.as_ref())
                .policy(decision.policy_version(), decision.determining_policies().to_vec())
                .reason(format!("delegated from {}", parent.task_id))
                .detail(serde_json::json!({"parent": parent.task_id, "depth": depth, "capabilities": child.capabilities})),
            issued,
        ];
        match self.store.create_task(&child, &grant, audit).await {
            Ok(()) => {}
            Err(StoreError::NotActive(why)) => return Err(GrantError::Invalid(why.into()).into()),
            Err(e) => return Err(e.into()),
        }
        metrics::inc(&self.metrics.tasks_started);
        metrics::inc(&self.metrics.tokens_issued);
        Ok(TokenResponse {
            access_token: token,
            issued_token_type: ACCESS_TOKEN_TYPE.into(),
            token_type: if jkt.is_some() { "DPoP" } else { "Bearer" }.into(),
            expires_in: now.secs_until(exp),
            scope: scope::to_claim(&child.capabilities),
            task_id: Some(child_id),
        })
    }

    /// The child task a delegation allowed by `decision` makes: the
    /// sub-agent's, for the parent's intent and human, its lifetime never
    /// past the parent's and capped by `@max_ttl`; an exception passes on
    /// only where a policy allows it for the sub-agent too, else the child
    /// gets an ordinary lifetime.
    fn child_task(
        &self,
        parent: &Task,
        agent: &writ_core::AgentName,
        actor: &GrantState,
        capabilities: Vec<Capability>,
        decision: &writ_policy::Decision,
        now: writ_core::Timestamp,
    ) -> Result<Task, Error> {
        let exception = parent.exception && decision.exception_allowed();
        let expires_at = Lifetime::until(now, parent.expires_at)
            .capped(decision.max_ttl())
            .capped((parent.exception && !exception).then_some(self.config.max_task_ttl))
            .end();
        Ok(Task {
            task_id: TaskId::generate()?,
            agent: agent.clone(),
            instance_id: actor.grant.instance_id.clone(),
            intent: parent.intent.clone(),
            capabilities,
            on_behalf_of: parent.on_behalf_of.clone(),
            status: TaskStatus::Active,
            created_at: now,
            lease_expires_at: Lifetime::new(now, self.config.lease_ttl)
                .within(expires_at)
                .end(),
            expires_at,
            ended_at: None,
            end_reason: None,
            policy_version: decision.policy_version().to_owned(),
            parent_task_id: Some(parent.task_id.clone()),
            depth: parent.depth + 1,
            exception,
        })
    }

    /// The sub-agent a delegation names: a live instance token (its key,
    /// if any, is the one the child's token is bound to), an agent not
    /// quarantined and not already in the chain, within the depth limit.
    /// Also the parent's lineage, root first.
    async fn delegation_actor(
        &self,
        claims: &AccessClaims,
        parent: &Task,
        actor_token: &str,
        actor_proof: Option<&str>,
    ) -> Result<(AccessClaims, GrantState, writ_core::api::Agent, Vec<Task>), Error> {
        // The actor: a live instance token of the sub-agent. Its key (if
        // any) is the one the child's token is bound to.
        let bad_actor =
            |e: &dyn std::fmt::Display| GrantError::Invalid(format!("actor_token: {e}"));
        let actor_claims = match self.tokens.verify_token(actor_token, TokenKind::Instance) {
            Ok(c) => c,
            Err(e) => return self.refuse(claims, bad_actor(&e)).await,
        };
        let actor_state = match self.tokens.live_grant(&actor_claims).await {
            Ok(s) => s,
            Err(e) => return self.refuse(claims, bad_actor(&e)).await,
        };
        // A bound sub-agent proves it takes part: a proof by its own key,
        // fresh, for this endpoint and this actor token. Holding another
        // instance's token is not enough to hand it work.
        if let Some(cnf) = &actor_claims.cnf {
            let Some(proof) = actor_proof else {
                let e = GrantError::Invalid(
                    "actor_token is bound to a DPoP key: send actor_token_proof, a DPoP proof \
                     the sub-agent makes with that key for POST to this endpoint with ath of \
                     the actor_token"
                        .into(),
                );
                return self.refuse(claims, e).await;
            };
            let url = self.config.url("/oauth2/token");
            let expected = writ_core::dpop::Expected {
                method: "POST",
                url: &url,
                access_token: Some(actor_token),
                now: self.now(),
            };
            if let Err(e) = self.dpop.check_actor(proof, &expected, &cnf.jkt) {
                let detail = match e {
                    Error::Binding(b) => b.to_string(),
                    other => return Err(other),
                };
                let e = GrantError::Invalid(format!("actor_token_proof: {detail}"));
                return self.refuse(claims, e).await;
            }
        }
        let actor_agent = self.acting_agent(&actor_state.grant.agent).await?;
        let lineage = self.subjects.lineage(parent).await?;
        if lineage.iter().any(|t| t.agent == actor_agent.name) {
            let e = GrantError::Invalid(format!(
                "agent {} is already in the delegation chain (a cycle)",
                actor_agent.name
            ));
            return self.refuse(claims, e).await;
        }
        let depth = parent.depth + 1;
        if depth > self.config.max_delegation_depth {
            let e = GrantError::Invalid(format!(
                "delegation depth {depth} exceeds the limit of {}",
                self.config.max_delegation_depth
            ));
            return self.refuse(claims, e).await;
        }

        Ok((actor_claims, actor_state, actor_agent, lineage))
    }

    /// What the child may hold: the parent's capabilities, narrowed to the
    /// target tool and the requested scopes; and their tools.
    async fn delegated_capabilities(
        &self,
        claims: &AccessClaims,
        parent: &Task,
        req: &TokenRequest,
    ) -> Result<(Vec<Capability>, Vec<Tool>), Error> {
        let mut caps: Vec<Capability> = parent.capabilities.clone();
        let mut tools: Vec<Tool> = Vec::new();
        if let Some(target) = req.audience.as_deref().or(req.resource.as_deref()) {
            let Some(tool) = self.find_tool(target).await? else {
                return self
                    .refuse(
                        claims,
                        GrantError::Target(format!("{target} is not a registered tool")),
                    )
                    .await;
            };
            caps.retain(|c| c.tool == tool.name);
            if caps.is_empty() {
                let e =
                    GrantError::Target(format!("the task holds nothing for tool {}", tool.name));
                return self.refuse(claims, e).await;
            }
        }
        if req.scope.is_some() {
            caps = match scope::narrow(&caps, req.scope.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    return self.refuse(claims, GrantError::Scope(e.to_string())).await;
                }
            };
        }
        for c in &caps {
            if let Some(t) = self.store.get_tool(&c.tool).await? {
                tools.push(t);
            }
        }

        Ok((caps, tools))
    }

    /// A tool by name or by audience URI.
    async fn find_tool(&self, target: &str) -> Result<Option<Tool>, Error> {
        if let Ok(name) = target.parse()
            && let Some(t) = self.store.get_tool(&name).await?
        {
            return Ok(Some(t));
        }
        Ok(self
            .store
            .list_tools()
            .await?
            .into_iter()
            .find(|t| t.audience == target))
    }

    /// The agent acting on a task; a quarantined one gets nothing.
    async fn acting_agent(
        &self,
        name: &writ_core::AgentName,
    ) -> Result<writ_core::api::Agent, Error> {
        let me = self.subjects.agent(name).await?;
        if me.quarantined {
            return Err(GrantError::Invalid("the acting agent is quarantined".into()).into());
        }
        Ok(me)
    }

    fn exchange_event(
        &self,
        claims: &AccessClaims,
        task: &Task,
        outcome: Outcome,
        decision: &Decision,
        detail: serde_json::Value,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(
            AuditKind::TokenExchange,
            outcome,
            format!("instance:{}", claims.client_id),
        )
        .agent(&task.agent)
        .instance(&task.instance_id)
        .task(&task.task_id)
        .on_behalf_of(task.on_behalf_of.as_ref())
        .jti(&claims.jti)
        .policy(
            decision.policy_version(),
            decision.determining_policies().to_vec(),
        )
        .detail(detail);
        if let (Some(act), Some(obj)) = (&claims.act, e.detail.as_object_mut()) {
            obj.insert(
                "subject_act".into(),
                serde_json::to_value(act).unwrap_or_default(),
            );
        }
        e
    }

    /// A refusal by policy: counted against `charged`, audited, answered.
    async fn refuse_decision(
        &self,
        claims: &AccessClaims,
        task: &Task,
        decision: &Decision,
        detail: serde_json::Value,
        charged: &writ_core::AgentName,
        now: writ_core::Timestamp,
    ) -> Error {
        if let Err(e) = self.subjects.count_denial(charged, now).await {
            return e;
        }
        let reason = refusal_reason(decision);
        let event = self
            .exchange_event(claims, task, Outcome::Deny, decision, detail)
            .reason(reason.clone());
        if let Err(e) = self.store.append_audit(now, vec![event]).await {
            return e.into();
        }
        GrantError::Denied(reason).into()
    }

    /// Audits a refused exchange, then answers with the refusal.
    async fn refuse<T>(&self, claims: &AccessClaims, e: GrantError) -> Result<T, Error> {
        self.audit_refusal(claims, None, &format!("{}: {e}", e.code()))
            .await?;
        Err(e.into())
    }

    async fn audit_refusal(
        &self,
        claims: &AccessClaims,
        task: Option<&TaskId>,
        reason: &str,
    ) -> Result<(), Error> {
        let mut event = AuditEvent::new(
            AuditKind::TokenExchange,
            Outcome::Deny,
            format!("instance:{}", claims.client_id),
        )
        .jti(&claims.jti)
        .reason(reason);
        if let Some(t) = task.or(claims.task.as_ref().and_then(|t| t.parse().ok()).as_ref()) {
            event = event.task(t);
        }
        self.store.append_audit(self.now(), vec![event]).await?;
        Ok(())
    }
}

/// Why an exchange or a delegation is refused. `@approval("required")`
/// holds task starts and gateway calls for a person; an exchange or a
/// delegation has nobody waiting to be approved, so it is refused.
fn refusal_reason(d: &Decision) -> String {
    match d.verdict() {
        Verdict::NeedsApproval => format!(
            "{}; approval holds task starts and tool calls only, so this request is refused",
            d.reason()
        ),
        Verdict::Allow | Verdict::Deny => d.reason(),
    }
}
