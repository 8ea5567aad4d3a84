//! The OpenID AuthZEN Authorization API 1.0 for enforcement points: an
//! access evaluation names a subject (an agent or an instance), an action
//! (a Cedar action id), a resource (a tool) and a context, and gets a
//! decision with its reasons. Every decision is audited.
//!
//! The facts come from the same constructors the broker and the gateway
//! use for the same action, so the answer is theirs: a call a gateway
//! would hold for approval is `false` with `reason: approval_required` and
//! the approval to ask for; once approved, it is `true`.

use std::collections::BTreeSet;

use serde_json::Value;
use writ_core::api::{ApprovalStatus, Task, TaskStatus};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::{Capability, InstanceId, Scope};
use writ_policy::{Action, CallRequest, Chain, Facts, InstanceFacts, TaskAsk, TaskView, Verdict};

use super::{Asked, Broker, CallApproval};
use crate::error::ApiError;

pub use writ_core::authzen::*;

fn deny(version: &str, reason: impl Into<String>) -> EvaluationResponse {
    EvaluationResponse {
        decision: false,
        context: DecisionContext {
            reason: reason.into(),
            policy_version: version.to_owned(),
            determining_policies: Vec::new(),
            approval_id: None,
        },
    }
}

/// The reason AuthZEN gives for a call held for a person.
pub const APPROVAL_REQUIRED: &str = "approval_required";

/// What an evaluation names, found.
type Resolved = (
    writ_core::api::Tool,
    writ_core::api::Agent,
    Option<writ_store::Instance>,
);

/// Why an evaluation is refused before policy is asked.
enum Refused {
    Deny(String),
    /// The subject's agent is quarantined (a refusal that names it).
    Quarantined(writ_core::AgentName),
}

impl Refused {
    fn answer(self, version: &str) -> Evaluated {
        match self {
            Refused::Deny(reason) => deny(version, reason).into(),
            Refused::Quarantined(agent) => Evaluated {
                response: deny(version, "agent is quarantined"),
                agent: Some(agent),
            },
        }
    }
}

/// One evaluation's answer and whose agent a refusal would count against.
struct Evaluated {
    response: EvaluationResponse,
    agent: Option<writ_core::AgentName>,
}

impl From<EvaluationResponse> for Evaluated {
    fn from(response: EvaluationResponse) -> Self {
        Self {
            response,
            agent: None,
        }
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
        let Evaluated {
            response: out,
            agent,
        } = self.evaluate_inner(&e, actor).await?;
        let now = self.now();
        // A question is not a request: only an answer the enforcement point
        // says it enforced counts against the subject, and a call held for
        // a person is not misbehaviour (as at the gateway).
        let held = out.context.approval_id.is_some() || out.context.reason == APPROVAL_REQUIRED;
        if let (false, true, false, Some(agent)) = (out.decision, e.context.enforced, held, &agent)
        {
            self.count_denial(agent, now).await?;
        }
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
            "enforced": e.context.enforced,
            "approval_id": out.context.approval_id,
        }));
        self.store.append_audit(now, vec![event]).await?;
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

    async fn evaluate_inner(&self, e: &Evaluation, actor: &str) -> Result<Evaluated, ApiError> {
        let policy = self.policy();
        let version = policy.version().to_owned();
        let Some(action) = Action::from_cedar_id(&e.action.name) else {
            return Ok(deny(&version, format!("unknown action {:?}", e.action.name)).into());
        };
        if action == Action::CallTool && e.context.request.is_none() {
            return Ok(deny(&version, "CallTool needs context.request").into());
        }
        let arguments = e
            .context
            .request
            .as_ref()
            .and_then(|r| r.arguments.as_ref())
            .map(serde_json::Value::to_string);
        let (tool, agent, instance) = match self.resolve(e).await? {
            Ok(found) => found,
            Err(refused) => return Ok(refused.answer(&version)),
        };
        let now = self.now();
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
        // With a task: its facts and chain. The task must be the subject's,
        // except for a delegation, whose subject is the sub-agent being
        // handed part of the task.
        let task: Option<Task> = match &e.context.task {
            Some(id) => match self.store.get_task(id).await? {
                Some(t) if action == Action::DelegateTask => Some(t),
                Some(t)
                    if t.agent == agent.name
                        && instance.as_ref().is_none_or(|i| i.id == t.instance_id) =>
                {
                    Some(t)
                }
                Some(_) => return Ok(deny(&version, "the task is not the subject's").into()),
                None => return Ok(deny(&version, "unknown task").into()),
            },
            None => None,
        };
        let instance_facts = instance.as_ref().map(|i| InstanceFacts {
            id: i.id.as_str(),
            attestation: &i.attestation,
        });
        let behaviour = self.behaviour(&agent.name, now).await?;
        let request = e
            .context
            .request
            .as_ref()
            .filter(|_| action == Action::CallTool)
            .map(|r| CallRequest {
                method: &r.method,
                path: &r.path,
                query: &r.query,
                mcp_method: r.mcp_method.as_deref(),
                mcp_tool: r.mcp_tool.as_deref(),
                arguments: arguments.as_deref(),
            });
        let Some(t) = &task else {
            let caps = [cap];
            let ask = TaskAsk {
                intent: e.context.intent.as_deref().unwrap_or_default(),
                capabilities: &caps,
                on_behalf_of: e.context.on_behalf_of.as_deref(),
                ttl: e.context.ttl.unwrap_or(0),
                exception: false,
            };
            let facts = Facts::untasked(
                action,
                &agent,
                instance_facts,
                &ask,
                &tool,
                request,
                behaviour,
                now,
            );
            let d = self.decide(&policy, &facts).await?;
            return Ok(Evaluated {
                response: answer(&d, None),
                agent: Some(agent.name.clone()),
            });
        };
        if t.status != TaskStatus::Active || now >= t.lease_expires_at || now >= t.expires_at {
            return Ok(deny(&version, "the task is not active").into());
        }
        let held = t.capabilities.iter().find(|c| c.tool == tool.name);
        if held.is_none_or(|h| !cap.scopes.is_subset(&h.scopes)) {
            return Ok(deny(
                &version,
                "the task does not hold this tool and these scopes",
            )
            .into());
        }
        if action == Action::StartTask {
            return Ok(deny(
                &version,
                "StartTask is decided before a task exists: leave out context.task",
            )
            .into());
        }
        let lineage = self.lineage(t).await?;
        let agents = self.lineage_agents(&lineage).await?;
        let task_attestation = self.instance_attestation(&t.instance_id).await?;
        let view = TaskView::of_task(t, &task_attestation);
        let chain = Chain::new(&agent, agents.iter());
        let facts = match (action, request.clone()) {
            (Action::ExchangeToken, _) => {
                Facts::exchange_token(chain, &view, cap, &tool, behaviour, now)
            }
            (Action::DelegateTask, _) => Facts::delegate_task(
                chain,
                instance_facts.map_or(agent.attestation.kind(), |i| i.attestation),
                &view,
                vec![cap],
                vec![&tool],
                behaviour,
                now,
            ),
            (Action::CallTool, Some(r)) => {
                Facts::call_tool(chain, &view, cap.scopes, &tool, r, behaviour, now)
            }
            (Action::StartTask | Action::CallTool, _) => {
                return Ok(deny(&version, "CallTool needs context.request").into());
            }
        };
        let d = self.decide(&policy, &facts).await?;
        let approval = match (d.verdict(), action, request) {
            // A call a gateway would hold is held here too, on the same
            // approval: the enforcement point asking shows its id.
            (Verdict::NeedsApproval, Action::CallTool, Some(r)) => {
                let call = r.to_approval(&tool.name, &agent.name);
                let asked = if e.context.enforced {
                    Asked::Enforcing
                } else {
                    Asked::Question
                };
                Some(
                    self.resolve_call_approval(t, call, &d, actor, asked)
                        .await?,
                )
            }
            _ => None,
        };
        Ok(Evaluated {
            response: answer(&d, approval.as_ref()),
            agent: Some(agent.name.clone()),
        })
    }

    /// The tool and the subject an evaluation names (an agent, or an
    /// instance whose agent and attestation count): found, or the refusal.
    async fn resolve(&self, e: &Evaluation) -> Result<Result<Resolved, Refused>, ApiError> {
        let deny = |r: &str| Ok(Err(Refused::Deny(r.to_owned())));
        if e.resource.type_ != "tool" {
            return Ok(Err(Refused::Deny(format!(
                "unknown resource type {:?}",
                e.resource.type_
            ))));
        }
        let Ok(tool_name) = e.resource.id.parse() else {
            return deny("malformed tool id");
        };
        let Some(tool) = self.store.get_tool(&tool_name).await? else {
            return Ok(Err(Refused::Deny(format!(
                "unknown tool {}",
                e.resource.id
            ))));
        };
        let now = self.now();
        let (agent_name, instance) = match e.subject.type_.as_str() {
            "agent" => (e.subject.id.clone(), None),
            "instance" => {
                let Ok(id) = e.subject.id.parse::<InstanceId>() else {
                    return deny("malformed instance id");
                };
                let Some(i) = self.store.get_instance(&id).await? else {
                    return deny("unknown instance");
                };
                if i.revoked_at.is_some() || now >= i.expires_at {
                    return deny("instance is revoked or expired");
                }
                (i.agent.to_string(), Some(i))
            }
            other => {
                return Ok(Err(Refused::Deny(format!(
                    "unknown subject type {other:?}"
                ))));
            }
        };
        let Ok(agent_name) = agent_name.parse() else {
            return deny("malformed agent name");
        };
        let Some(agent) = self.store.get_agent(&agent_name).await? else {
            return deny("unknown agent");
        };
        // What the broker refuses before asking policy, it refuses here too.
        if agent.quarantined {
            return Ok(Err(Refused::Quarantined(agent.name)));
        }
        Ok(Ok((tool, agent, instance)))
    }
}

/// The AuthZEN answer to a decision (and, for a held call, its approval).
fn answer(d: &writ_policy::Decision, approval: Option<&CallApproval>) -> EvaluationResponse {
    let mut context = DecisionContext {
        reason: d.reason(),
        policy_version: d.policy_version().to_owned(),
        determining_policies: d.determining_policies().to_vec(),
        approval_id: None,
    };
    let decision = match (d.verdict(), approval) {
        (Verdict::Allow, _) => true,
        (Verdict::Deny, _) => false,
        (Verdict::NeedsApproval, Some(CallApproval::Approved(id))) => {
            context.reason = format!("approved ({id}); {}", d.reason());
            context.approval_id = Some(id.clone());
            true
        }
        (Verdict::NeedsApproval, Some(CallApproval::Held(a))) => {
            context.reason = match a.status {
                ApprovalStatus::Denied => "approval_denied".to_owned(),
                ApprovalStatus::Expired => "approval_expired".to_owned(),
                ApprovalStatus::Pending | ApprovalStatus::Approved => APPROVAL_REQUIRED.to_owned(),
            };
            context.approval_id = Some(a.approval_id.clone());
            false
        }
        (Verdict::NeedsApproval, None) => {
            context.reason = APPROVAL_REQUIRED.to_owned();
            false
        }
    };
    EvaluationResponse { decision, context }
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
