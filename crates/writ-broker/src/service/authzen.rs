//! The OpenID AuthZEN Authorization API 1.0 for enforcement points: an
//! access evaluation names a subject (an agent or an instance), an action
//! (a Cedar action id), a resource (a tool) and a context, and gets a
//! decision with its reasons. Every decision is audited.

use std::collections::BTreeSet;

use serde_json::Value;
use writ_core::api::Task;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::{Capability, InstanceId, Scope};
use writ_policy::{Action, AgentFacts, TaskFacts, ToolFacts};

use super::Broker;
use crate::error::ApiError;

pub use writ_core::authzen::*;

fn deny(version: &str, reason: impl Into<String>) -> EvaluationResponse {
    EvaluationResponse {
        decision: false,
        context: DecisionContext {
            reason: reason.into(),
            policy_version: version.to_owned(),
            determining_policies: Vec::new(),
        },
    }
}

impl Broker {
    /// One access evaluation. Unknown subjects, actions or tools are a
    /// denial with a reason, not an error.
    /// `actor`: the enforcement point asking (`admin` or `gateway:<name>`).
    pub async fn evaluate(
        &self,
        e: Evaluation,
        actor: &str,
    ) -> Result<EvaluationResponse, ApiError> {
        let out = self.evaluate_inner(&e).await?;
        let event = AuditEvent::new(
            AuditKind::Decision,
            if out.decision {
                Outcome::Success
            } else {
                Outcome::Deny
            },
            actor,
        )
        .policy(
            &out.context.policy_version,
            out.context.determining_policies.clone(),
        )
        .reason(out.context.reason.clone())
        .detail(serde_json::json!({
            "subject": {"type": e.subject.type_, "id": e.subject.id},
            "action": e.action.name,
            "resource": {"type": e.resource.type_, "id": e.resource.id},
            "task": e.context.task,
        }));
        self.store.append_audit(self.now(), vec![event]).await?;
        Ok(out)
    }

    /// A batch, with the AuthZEN evaluation semantics (`execute_all`,
    /// `deny_on_first_deny`, `permit_on_first_permit`).
    pub async fn evaluate_batch(
        &self,
        req: Evaluations,
        actor: &str,
    ) -> Result<EvaluationsResponse, ApiError> {
        let (semantic, full) = expand(req).map_err(ApiError::BadRequest)?;
        let mut out = Vec::with_capacity(full.len());
        for e in full {
            let r = self.evaluate(e, actor).await?;
            let stop = semantic.stops_at(r.decision);
            out.push(r);
            if stop {
                break;
            }
        }
        Ok(EvaluationsResponse { evaluations: out })
    }

    async fn evaluate_inner(&self, e: &Evaluation) -> Result<EvaluationResponse, ApiError> {
        let policy = self.policy();
        let version = policy.version().to_owned();
        let action = match e.action.name.as_str() {
            "StartTask" => Action::StartTask,
            "ExchangeToken" => Action::ExchangeToken,
            "DelegateTask" => Action::DelegateTask,
            "CallTool" => Action::CallTool,
            other => return Ok(deny(&version, format!("unknown action {other:?}"))),
        };
        if action == Action::CallTool && e.context.request.is_none() {
            return Ok(deny(&version, "CallTool needs context.request"));
        }
        let arguments = e
            .context
            .request
            .as_ref()
            .and_then(|r| r.arguments.as_ref())
            .map(serde_json::Value::to_string);
        if e.resource.type_ != "tool" {
            return Ok(deny(
                &version,
                format!("unknown resource type {:?}", e.resource.type_),
            ));
        }
        let Ok(tool_name) = e.resource.id.parse() else {
            return Ok(deny(&version, "malformed tool id"));
        };
        let Some(tool) = self.store.get_tool(&tool_name).await? else {
            return Ok(deny(&version, format!("unknown tool {}", e.resource.id)));
        };
        // Subject: an agent, or an instance (whose agent and attestation count).
        let (agent_name, attestation, instance) = match e.subject.type_.as_str() {
            "agent" => (e.subject.id.clone(), None, None),
            "instance" => {
                let Ok(id) = e.subject.id.parse::<InstanceId>() else {
                    return Ok(deny(&version, "malformed instance id"));
                };
                let Some(i) = self.store.get_instance(&id).await? else {
                    return Ok(deny(&version, "unknown instance"));
                };
                if i.revoked_at.is_some() || self.now() >= i.expires_at {
                    return Ok(deny(&version, "instance is revoked or expired"));
                }
                (i.agent.to_string(), Some(i.attestation), Some(i.id))
            }
            other => return Ok(deny(&version, format!("unknown subject type {other:?}"))),
        };
        let Ok(agent_name) = agent_name.parse() else {
            return Ok(deny(&version, "malformed agent name"));
        };
        let Some(agent) = self.store.get_agent(&agent_name).await? else {
            return Ok(deny(&version, "unknown agent"));
        };
        // What the broker refuses before asking policy, it refuses here too.
        if agent.quarantined {
            return Ok(deny(&version, "agent is quarantined"));
        }
        let scopes: BTreeSet<Scope> =
            match scopes_of(&e.resource.properties).or_else(|| scopes_of(&e.action.properties)) {
                Some(Ok(s)) => s,
                Some(Err(m)) => return Err(ApiError::BadRequest(m)),
                None => BTreeSet::new(),
            };
        let cap = Capability {
            tool: tool.name.clone(),
            scopes,
        };
        // With a task: its facts and chain, and it must be the subject's.
        let task: Option<Task> = match &e.context.task {
            Some(id) => match self.store.get_task(id).await? {
                Some(t)
                    if t.agent == agent.name
                        && instance.as_ref().is_none_or(|i| *i == t.instance_id) =>
                {
                    Some(t)
                }
                Some(_) => return Ok(deny(&version, "the task is not the subject's")),
                None => return Ok(deny(&version, "unknown task")),
            },
            None => None,
        };
        if let Some(t) = &task {
            let now = self.now();
            if t.status != writ_core::api::TaskStatus::Active
                || now >= t.lease_expires_at
                || now >= t.expires_at
            {
                return Ok(deny(&version, "the task is not active"));
            }
            let held = t.capabilities.iter().find(|c| c.tool == tool.name);
            if held.is_none_or(|h| !cap.scopes.is_subset(&h.scopes)) {
                return Ok(deny(
                    &version,
                    "the task does not hold this tool and these scopes",
                ));
            }
        }
        let lineage = match &task {
            Some(t) => self.lineage(t).await?,
            None => Vec::new(),
        };
        let mut chain_agents = Vec::new();
        for t in lineage.iter().filter(|t| t.agent != agent.name) {
            chain_agents.push(self.agent(&t.agent).await?);
        }
        fn facts_of(a: &writ_core::api::Agent) -> AgentFacts<'_> {
            AgentFacts {
                name: a.name.as_str(),
                spiffe_id: &a.spiffe_id,
                attestation: a.attestation.kind(),
                quarantined: a.quarantined,
                attributes: &a.attributes,
            }
        }
        let intent = task
            .as_ref()
            .map(|t| t.intent.clone())
            .or_else(|| e.context.intent.clone())
            .unwrap_or_default();
        let obo = task
            .as_ref()
            .and_then(|t| t.on_behalf_of.clone())
            .or_else(|| e.context.on_behalf_of.clone());
        let now = self.now();
        let attestation = attestation.unwrap_or_else(|| agent.attestation.kind().to_owned());
        let caps = [cap];
        let facts = TaskFacts {
            action,
            agent: facts_of(&agent),
            chain: chain_agents.iter().map(facts_of).collect(),
            intent: &intent,
            capabilities: &caps,
            on_behalf_of: obo.as_deref(),
            ttl_secs: task
                .as_ref()
                .map(|t| now.secs_until(t.expires_at))
                .or(e.context.ttl)
                .unwrap_or(0),
            attestation: &attestation,
            depth: task.as_ref().map_or(0, |t| t.depth),
            recent_denials: self.denials.recent(&agent.name, now),
            exception: task.as_ref().is_some_and(|t| t.exception),
            now,
            request: e
                .context
                .request
                .as_ref()
                .filter(|_| action == Action::CallTool)
                .map(|r| writ_policy::RequestFacts {
                    method: &r.method,
                    path: &r.path,
                    query: &r.query,
                    mcp_method: r.mcp_method.as_deref(),
                    mcp_tool: r.mcp_tool.as_deref(),
                    arguments: arguments.as_deref(),
                }),
            instance: instance.as_ref().map(|i| i.as_str()),
            task: task.as_ref().map(|t| writ_policy::TaskRef {
                id: t.task_id.as_str(),
                capabilities: &t.capabilities,
                parent: t.parent_task_id.as_ref().map(|p| p.as_str()),
                started_at: Some(t.created_at.secs()),
            }),
        };
        let tool_facts = [ToolFacts {
            name: tool.name.as_str(),
            audience: &tool.audience,
            scopes: tool.scopes.iter().map(Scope::as_str).collect(),
            attributes: &tool.attributes,
        }];
        let d = self.decide(&policy, &facts, &tool_facts).await?;
        if !d.allowed {
            self.denials.record(&agent.name, now);
        }
        Ok(EvaluationResponse {
            decision: d.allowed,
            context: DecisionContext {
                reason: d.reason(),
                policy_version: d.policy_version,
                determining_policies: d.determining_policies,
            },
        })
    }
}

/// `{"scopes": [..]}` from a properties object, if present.
fn scopes_of(props: &Value) -> Option<Result<BTreeSet<Scope>, String>> {
    let list = props.get("scopes")?;
    let Some(items) = list.as_array() else {
        return Some(Err("scopes must be an array of strings".into()));
    };
    Some(
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| "scopes must be an array of strings".to_owned())
                    .and_then(|s| s.parse::<Scope>().map_err(|e| e.to_string()))
            })
            .collect(),
    )
}
