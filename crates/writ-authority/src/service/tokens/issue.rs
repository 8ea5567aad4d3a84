//! The one issuance path: claims, signature, grant and issuance record for
//! every token writ mints (instance, task and tool tokens), so what a token
//! says, what the store remembers of it and what the audit trail records
//! cannot drift apart between the three.

use writ_core::api::Task;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::lifetime::Lifetime;
use writ_core::token::{AccessClaims, Actor, Confirmation, TaskContext};
use writ_core::{AgentName, InstanceId, Jti, Timestamp};
use writ_store::{Grant, GrantKind};

use super::Tokens;
use crate::error::Error;

/// What one token is for.
pub(crate) struct Issue<'a> {
    pub kind: GrantKind,
    pub agent: &'a AgentName,
    pub instance: &'a InstanceId,
    /// The SPIFFE ID of the agent (the root agent, for delegated work).
    pub sub: String,
    /// Delegated work: the actors after the root, outermost acting now.
    pub act: Option<Actor>,
    /// The task it is issued under, if any.
    pub task: Option<&'a Task>,
    /// The tool's audience for a tool token; writ's issuer otherwise.
    pub audience: Option<String>,
    pub scope: Option<String>,
    /// The DPoP key it is bound to.
    pub jkt: Option<String>,
    pub lifetime: Lifetime,
    /// Tool tokens: the task's intent and facts, for gateways' policy.
    pub intent: Option<String>,
    pub task_ctx: Option<TaskContext>,
}

/// A signed token, its grant and the record of its issuance.
pub(crate) struct Issued {
    pub token: String,
    pub grant: Grant,
    pub event: AuditEvent,
    pub exp: Timestamp,
}

impl Tokens {
    /// Signs the token `i` describes; nothing is stored here (the caller
    /// commits the grant and the event with whatever else it records).
    pub(crate) fn issue(&self, i: Issue<'_>) -> Result<Issued, Error> {
        let jti = Jti::generate()?;
        let (now, exp) = (i.lifetime.start(), i.lifetime.end());
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: i.sub,
            aud: i
                .audience
                .clone()
                .unwrap_or_else(|| self.config.issuer.clone()),
            exp: exp.secs(),
            iat: now.secs(),
            nbf: now.secs(),
            jti: jti.to_string(),
            client_id: i.instance.to_string(),
            scope: i.scope.clone(),
            task: i.task.map(|t| t.task_id.to_string()),
            obo: i.task.and_then(|t| t.on_behalf_of.clone()),
            cnf: i.jkt.clone().map(|jkt| Confirmation { jkt }),
            act: i.act,
            exception: i.task.is_some_and(|t| t.exception),
            intent: i.intent,
            task_ctx: i.task_ctx,
        };
        let token = self.mint(&claims)?;
        let kind_name = match i.kind {
            GrantKind::InstanceToken => "instance_token",
            GrantKind::TaskToken => "task_token",
            GrantKind::ToolToken => "tool_token",
        };
        // Whether the token is sender-constrained: bound to the DPoP key
        // whose thumbprint it carries, or a bearer token.
        let mut detail = serde_json::json!({
            "kind": kind_name,
            "exp": exp.secs(),
            "binding": if i.jkt.is_some() { "dpop" } else { "bearer" },
        });
        if let Some(o) = detail.as_object_mut() {
            if let Some(aud) = &i.audience {
                o.insert("aud".into(), aud.clone().into());
            }
            if let Some(scope) = &i.scope {
                o.insert("scope".into(), scope.clone().into());
            }
        }
        let mut event = AuditEvent::new(AuditKind::TokenIssue, Outcome::Success, "system")
            .agent(i.agent)
            .instance(i.instance)
            .jti(&jti)
            .detail(detail);
        if let Some(t) = i.task {
            event = event.task(&t.task_id).on_behalf_of(t.on_behalf_of.as_ref());
        }
        let grant = Grant {
            jti: jti.to_string(),
            kind: i.kind,
            agent: i.agent.clone(),
            instance_id: i.instance.clone(),
            task_id: i.task.map(|t| t.task_id.clone()),
            issued_at: now,
            expires_at: exp,
            jkt: i.jkt,
            audience: i.audience,
        };
        Ok(Issued {
            token,
            grant,
            event,
            exp,
        })
    }

    /// Mints a task token: the configured lifetime, never past the task's
    /// end (nor `cap`, the lifetime of the token it derives from).
    pub(crate) fn task_token(
        &self,
        task: &Task,
        sub: &str,
        act: Option<writ_core::token::Actor>,
        jkt: Option<String>,
        cap: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Issued, Error> {
        self.issue(Issue {
            kind: GrantKind::TaskToken,
            agent: &task.agent,
            instance: &task.instance_id,
            sub: sub.to_owned(),
            act,
            task: Some(task),
            audience: None,
            scope: Some(writ_core::scope::to_claim(&task.capabilities)),
            jkt,
            lifetime: Lifetime::new(now, self.config.task_token_ttl)
                .within(task.expires_at)
                .within_opt(cap),
            intent: None,
            task_ctx: None,
        })
    }
}
