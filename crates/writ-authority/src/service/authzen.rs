//! The OpenID AuthZEN Authorization API 1.0 for enforcement points: an
//! access evaluation names a subject, an action, a resource and a context,
//! and gets a decision with its reasons. Every decision is audited.
//!
//! writ's own actions (`StartTask`, `ExchangeToken`, `DelegateTask`,
//! `CallTool`) about agents, instances and tools take their facts from the
//! same constructors the broker and the gateway use for the same action, so
//! the answer is theirs: a call a gateway would hold for approval is
//! `false` with `reason: approval_required` and the approval to ask for;
//! once approved, it is `true`. Any other action is one of the user's own
//! schema, decided as a [`Question`] over their types, `entities.json`, and
//! writ's agents and tools.

use std::collections::BTreeSet;

use serde_json::Value;
use writ_core::api::{ApprovalStatus, Task, TaskStatus};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::{Capability, InstanceId, Scope};
use writ_policy::{
    Action, CallRequest, Chain, Facts, InstanceFacts, Party, PolicySet, Question, TaskAsk,
    TaskView, Verdict,
};

use std::sync::Arc;

use writ_core::{Clock, Timestamp};
use writ_store::Store;

use super::approvals::Approvals;
use super::policies::Policies;
use super::subjects::Subjects;
use super::{Asked, CallApproval};
use crate::error::Error;

pub use writ_core::authzen::*;

fn deny(version: &str, reason: impl Into<String>) -> EvaluationResponse {
    EvaluationResponse {
        decision: false,
        context: DecisionContext {
            reason: reason.into(),
            policy_version: version.to_owned(),
            determining_policies: Vec::new(),
            approval_id: None,
            error: None,
        },
    }
}

/// A batch item that could not be evaluated: `false`, with why.
fn item_error(version: &str, message: String) -> EvaluationResponse {
    let mut r = deny(version, message.clone());
    r.context.error = Some(ItemError {
        status: 400,
        message,
    });
    r
}

/// How an evaluation is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An access evaluation: a held call resolves its approval.
    Evaluate,
    /// A candidate of a search: nothing is created or used up, and only an
    /// allow counts.
    Search,
}

/// The request does not fit: a 400 for one evaluation, the item's error in a batch.
pub(crate) struct BadInput(pub(crate) String);

/// The reason AuthZEN gives for a call held for a person.
pub const APPROVAL_REQUIRED: &str = "approval_required";

/// What an evaluation names, asking.
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
                facts: None,
            },
        }
    }
}

/// One evaluation's answer and whose agent a refusal would count against.
pub(crate) struct Evaluated {
    pub(crate) response: EvaluationResponse,
    agent: Option<writ_core::AgentName>,
    /// What policy decided on, for one of writ's own actions: recorded so
    /// the least-privilege report can replay it (see [`evaluated_facts`]).
    facts: Option<Value>,
}

impl From<EvaluationResponse> for Evaluated {
    fn from(response: EvaluationResponse) -> Self {
        Self {
            response,
            agent: None,
            facts: None,
        }
    }
}

/// AuthZEN: evaluations (one, a batch) and searches, for any enforcement
/// point, through the same fact builder and decision as the broker's own.
pub struct AuthZen {
    pub(super) store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    pub(super) policies: Arc<Policies>,
    subjects: Arc<Subjects>,
    approvals: Arc<Approvals>,
}

impl AuthZen {
    pub(super) fn new(
        h: &super::Handles,
        subjects: &Arc<Subjects>,
        approvals: &Arc<Approvals>,
    ) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            policies: Arc::clone(&h.policies),
            subjects: Arc::clone(subjects),
            approvals: Arc::clone(approvals),
        }
    }

    pub(super) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// One access evaluation. Unknown subjects, actions or resources are a
    /// denial with a reason, not an error; a request that does not fit the
    /// schema (properties or context of the wrong shape) is a 400.
    /// `actor`: the enforcement point asking (`admin` or `gateway:<name>`).
    pub async fn evaluate(&self, e: Evaluation, actor: &str) -> Result<EvaluationResponse, Error> {
        match self.evaluate_audited(&e, actor).await? {
            Ok(r) => Ok(r),
            Err(BadInput(m)) => Err(Error::Invalid(m)),
        }
    }

    /// One evaluation, its refusal counted when enforced, and audited.
    async fn evaluate_audited(
        &self,
        e: &Evaluation,
        actor: &str,
    ) -> Result<Result<EvaluationResponse, BadInput>, Error> {
        let Evaluated {
            response: out,
            agent,
            facts,
        } = match self.evaluate_inner(e, actor, Mode::Evaluate).await? {
            Ok(ev) => ev,
            Err(bad) => return Ok(Err(bad)),
        };
        let ctx = e.writ_context().unwrap_or_default();
        let now = self.now();
        // A question is not a request: only an answer the enforcement point
        // says it enforced counts against the subject, and a call held for
        // a person is not misbehaviour (as at the gateway).
        let held = out.context.approval_id.is_some() || out.context.reason == APPROVAL_REQUIRED;
        if let (false, true, false, Some(agent)) = (out.decision, ctx.enforced, held, &agent) {
            self.subjects.count_denial(agent, now).await?;
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
            "task": ctx.task,
            "enforced": ctx.enforced,
            "approval_id": out.context.approval_id,
            // The facts policy decided on (writ's own actions), for replay.
            "evaluated": facts,
        }));
        self.store.append_audit(now, vec![event]).await?;
        Ok(Ok(out))
    }

    /// A batch, with the AuthZEN evaluation semantics (`execute_all`,
    /// `deny_on_first_deny`, `permit_on_first_permit`). A request without
    /// items answers as one evaluation; an item that is not a valid
    /// evaluation is `false` with its reason, and the others are decided.
    pub async fn evaluate_batch(
        &self,
        req: Evaluations,
        actor: &str,
    ) -> Result<BatchResponse, Error> {
        let (semantic, expanded) = expand(req).map_err(Error::Invalid)?;
        let items = match expanded {
            Expanded::Single(e) => {
                return Ok(BatchResponse::Single(self.evaluate(*e, actor).await?));
            }
            Expanded::Batch(items) => items,
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let r = match item {
                Ok(e) => match self.evaluate_audited(&e, actor).await? {
                    Ok(r) => r,
                    Err(BadInput(m)) => item_error(self.policies.live().version(), m),
                },
                Err(m) => item_error(self.policies.live().version(), m),
            };
            let stop = semantic.stops_at(r.decision);
            out.push(r);
            if stop {
                break;
            }
        }
        Ok(BatchResponse::Many(EvaluationsResponse {
            evaluations: out,
        }))
    }

    /// One evaluation, unaudited: writ's own actions by their facts, any
    /// other action as a question in the user's vocabulary.
    pub(crate) async fn evaluate_inner(
        &self,
        e: &Evaluation,
        actor: &str,
        mode: Mode,
    ) -> Result<Result<Evaluated, BadInput>, Error> {
        match Action::from_cedar_id(&e.action.name) {
            Some(action) => self.evaluate_writ(e, action, actor, mode).await,
            None => self.evaluate_question(e).await,
        }
    }

    /// A question in the user's vocabulary: agents, instances and tools
    /// are found in the store, every other type is the user's.
    async fn evaluate_question(
        &self,
        e: &Evaluation,
    ) -> Result<Result<Evaluated, BadInput>, Error> {
        let policy = self.policies.live();
        let version = policy.version().to_owned();
        if !policy.is_user_action(&e.action.name) {
            return Ok(Ok(deny(
                &version,
                format!("unknown action {:?}", e.action.name),
            )
            .into()));
        }
        let mut agent_name = None;
        let subject_agent = match e.subject.type_.as_str() {
            "agent" | "instance" => match self.resolve_subject(e).await? {
                Ok((agent, _)) => Some(agent),
                Err(refused) => return Ok(Ok(refused.answer(&version))),
            },
            _ => None,
        };
        let resource_tool = match e.resource.type_.as_str() {
            "tool" => match self.resolve_tool(e).await? {
                Ok(t) => Some(t),
                Err(refused) => return Ok(Ok(refused.answer(&version))),
            },
            _ => None,
        };
        let subject = match &subject_agent {
            Some(a) => {
                agent_name = Some(a.name.clone());
                Party::Agent(a)
            }
            None => Party::Entity {
                type_: &e.subject.type_,
                id: &e.subject.id,
                properties: &e.subject.properties,
            },
        };
        let resource = match &resource_tool {
            Some(t) => Party::Tool(t),
            None => Party::Entity {
                type_: &e.resource.type_,
                id: &e.resource.id,
                properties: &e.resource.properties,
            },
        };
        let q = Question::new(subject, &e.action.name, resource, &e.context);
        match policy.decide_question(&q) {
            Ok(d) => Ok(Ok(Evaluated {
                response: answer(&d, None),
                agent: agent_name,
                facts: None,
            })),
            Err(err) => Ok(Err(BadInput(err.0))),
        }
    }

    /// One of writ's own actions, from the facts its enforcement points use.
    async fn evaluate_writ(
        &self,
        e: &Evaluation,
        action: Action,
        actor: &str,
        mode: Mode,
    ) -> Result<Result<Evaluated, BadInput>, Error> {
        let ctx = match e.writ_context() {
            Ok(c) => c,
            Err(m) => return Ok(Err(BadInput(m))),
        };
        let scopes: BTreeSet<Scope> =
            match scopes_of(&e.resource.properties).or_else(|| scopes_of(&e.action.properties)) {
                Some(Ok(s)) => s,
                Some(Err(m)) => return Ok(Err(BadInput(m))),
                None => BTreeSet::new(),
            };
        self.evaluate_facts(e, &ctx, action, scopes, actor, mode)
            .await
            .map(Ok)
    }

    async fn evaluate_facts(
        &self,
        e: &Evaluation,
        ctx: &EvalContext,
        action: Action,
        scopes: BTreeSet<Scope>,
        actor: &str,
        mode: Mode,
    ) -> Result<Evaluated, Error> {
        let policy = self.policies.live();
        let version = policy.version().to_owned();
        if action == Action::CallTool && ctx.request.is_none() {
            return Ok(deny(&version, "CallTool needs context.request").into());
        }
        let arguments = ctx
            .request
            .as_ref()
            .and_then(|r| r.arguments.as_ref())
            .map(serde_json::Value::to_string);
        let (tool, agent, instance) = match self.resolve(e).await? {
            Ok(found) => found,
            Err(refused) => return Ok(refused.answer(&version)),
        };
        let now = self.now();
        let cap = Capability {
            tool: tool.name.clone(),
            scopes,
        };
        let task = match self
            .named_task(ctx.task.as_ref(), action, &agent, instance.as_ref())
            .await?
        {
            Ok(t) => t,
            Err(why) => return Ok(deny(&version, why).into()),
        };
        let behaviour = self.subjects.behaviour(&agent.name, now).await?;
        let asking = Asking {
            action,
            ctx,
            tool: &tool,
            agent: &agent,
            instance: instance.as_ref(),
            request: call_request(ctx, action, arguments.as_deref()),
            behaviour,
            now,
            actor,
            mode,
        };
        match &task {
            None => self.decide_untasked(&policy, &asking, cap).await,
            Some(t) => self.decide_in_task(&policy, &asking, cap, t).await,
        }
    }

    /// One of writ's own actions about no existing task: what the asker
    /// says stands in for the task.
    async fn decide_untasked(
        &self,
        policy: &PolicySet,
        asking: &Asking<'_>,
        cap: Capability,
    ) -> Result<Evaluated, Error> {
        let ctx = asking.ctx;
        let facts_request = asking.request.as_ref().map(CallRequest::record);
        let caps = [cap];
        let ask = TaskAsk {
            intent: ctx.intent.as_deref().unwrap_or_default(),
            capabilities: &caps,
            on_behalf_of: ctx.on_behalf_of.as_deref(),
            ttl: ctx.ttl.unwrap_or(0),
            exception: false,
        };
        let facts = Facts::untasked(
            asking.action,
            asking.agent,
            asking.instance_facts(),
            &ask,
            asking.tool,
            asking.request.clone(),
            asking.behaviour,
            asking.now,
        );
        let d = self.policies.decide(policy, &facts).await?;
        Ok(Evaluated {
            response: answer(&d, None),
            agent: Some(asking.agent.name.clone()),
            facts: Some(evaluated_facts(
                &facts,
                asking.instance,
                asking.tool,
                None,
                facts_request.as_ref(),
                &ask,
            )),
        })
    }

    /// One of writ's own actions under task `t`: refused when the task
    /// cannot answer for it, else decided on the task's facts (and a call
    /// policy holds resolves its approval).
    async fn decide_in_task(
        &self,
        policy: &PolicySet,
        asking: &Asking<'_>,
        cap: Capability,
        t: &Task,
    ) -> Result<Evaluated, Error> {
        let version = policy.version();
        if let Some(why) = task_refusal(t, &cap, asking.action, asking.now) {
            return Ok(deny(version, why).into());
        }
        let lineage = self.subjects.lineage(t).await?;
        let agents = self.subjects.lineage_agents(&lineage).await?;
        let task_attestation = self.subjects.instance_attestation(&t.instance_id).await?;
        let view = TaskView::of_task(t, &task_attestation);
        let chain = Chain::new(asking.agent, agents.iter());
        let Some(facts) = task_facts(asking, chain, &view, cap) else {
            return Ok(deny(version, "CallTool needs context.request").into());
        };
        let d = self.policies.decide(policy, &facts).await?;
        let no_ask = TaskAsk {
            intent: "",
            capabilities: &[],
            on_behalf_of: None,
            ttl: 0,
            exception: false,
        };
        let recorded = evaluated_facts(
            &facts,
            asking.instance,
            asking.tool,
            Some(t),
            asking.request.as_ref().map(CallRequest::record).as_ref(),
            &no_ask,
        );
        let approval = self.held_call_approval(asking, t, &d).await?;
        Ok(Evaluated {
            response: answer(&d, approval.as_ref()),
            agent: Some(asking.agent.name.clone()),
            facts: Some(recorded),
        })
    }

    /// The approval of a call policy holds, when this evaluation is one.
    async fn held_call_approval(
        &self,
        asking: &Asking<'_>,
        t: &Task,
        d: &writ_policy::Decision,
    ) -> Result<Option<CallApproval>, Error> {
        Ok(
            match (
                d.verdict(),
                asking.action,
                asking.request.as_ref(),
                asking.mode,
            ) {
                // A call a gateway would hold is held here too, on the same
                // approval: the enforcement point asking shows its id. A search
                // leaves approvals alone.
                (Verdict::NeedsApproval, Action::CallTool, Some(r), Mode::Evaluate) => {
                    let asked = if asking.ctx.enforced {
                        Asked::Enforcing
                    } else {
                        Asked::Question
                    };
                    let call = r.to_approval(&asking.tool.name, &asking.agent.name);
                    Some(
                        self.approvals
                            .resolve_call_approval(t, call, d, asking.actor, asked)
                            .await?,
                    )
                }
                _ => None,
            },
        )
    }

    /// The task an evaluation names, if any, or why it may not be used.
    /// The task must be the subject's (its agent, and its instance when the
    /// subject is one), except for a delegation, whose subject is the
    /// sub-agent being handed part of the task.
    async fn named_task(
        &self,
        id: Option<&writ_core::TaskId>,
        action: Action,
        agent: &writ_core::api::Agent,
        instance: Option<&writ_store::Instance>,
    ) -> Result<Result<Option<Task>, &'static str>, Error> {
        let Some(id) = id else { return Ok(Ok(None)) };
        Ok(match self.store.get_task(id).await? {
            Some(t) if action == Action::DelegateTask => Ok(Some(t)),
            Some(t) if t.agent == agent.name && instance.is_none_or(|i| i.id == t.instance_id) => {
                Ok(Some(t))
            }
            Some(_) => Err("the task is not the subject's"),
            None => Err("unknown task"),
        })
    }

    /// The tool and the subject an evaluation names (an agent, or an
    /// instance whose agent and attestation count): found, or the refusal.
    async fn resolve(&self, e: &Evaluation) -> Result<Result<Resolved, Refused>, Error> {
        let tool = match self.resolve_tool(e).await? {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        Ok(self
            .resolve_subject(e)
            .await?
            .map(|(agent, instance)| (tool, agent, instance)))
    }

    /// The tool an evaluation names.
    async fn resolve_tool(
        &self,
        e: &Evaluation,
    ) -> Result<Result<writ_core::api::Tool, Refused>, Error> {
        if e.resource.type_ != "tool" {
            return Ok(Err(Refused::Deny(format!(
                "unknown resource type {:?}",
                e.resource.type_
            ))));
        }
        let Ok(tool_name) = e.resource.id.parse() else {
            return Ok(Err(Refused::Deny("malformed tool id".into())));
        };
        match self.store.get_tool(&tool_name).await? {
            Some(tool) => Ok(Ok(tool)),
            None => Ok(Err(Refused::Deny(format!(
                "unknown tool {}",
                e.resource.id
            )))),
        }
    }

    /// The subject an evaluation names: an agent, or an instance whose
    /// agent and attestation count.
    async fn resolve_subject(
        &self,
        e: &Evaluation,
    ) -> Result<Result<(writ_core::api::Agent, Option<writ_store::Instance>), Refused>, Error> {
        let deny = |r: &str| Ok(Err(Refused::Deny(r.to_owned())));
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
        Ok(Ok((agent, instance)))
    }
}

/// One evaluation of writ's own actions, what it names found: what
/// policy is asked about, and how and by whom it is asked.
struct Asking<'a> {
    action: Action,
    ctx: &'a EvalContext,
    tool: &'a writ_core::api::Tool,
    agent: &'a writ_core::api::Agent,
    instance: Option<&'a writ_store::Instance>,
    /// The request of a `CallTool`; `None` for any other action.
    request: Option<CallRequest<'a>>,
    behaviour: writ_policy::Behaviour,
    now: Timestamp,
    actor: &'a str,
    mode: Mode,
}

impl<'a> Asking<'a> {
    fn instance_facts(&self) -> Option<InstanceFacts<'a>> {
        self.instance.map(|i| InstanceFacts {
            id: i.id.as_str(),
            attestation: &i.attestation,
        })
    }
}

/// The request a `CallTool` evaluation decides (`arguments` its JSON text).
fn call_request<'a>(
    ctx: &'a EvalContext,
    action: Action,
    arguments: Option<&'a str>,
) -> Option<CallRequest<'a>> {
    ctx.request
        .as_ref()
        .filter(|_| action == Action::CallTool)
        .map(|r| CallRequest {
            method: &r.method,
            path: &r.path,
            query: &r.query,
            mcp_method: r.mcp_method.as_deref(),
            mcp_tool: r.mcp_tool.as_deref(),
            mcp_resource: r.mcp_resource.as_deref(),
            mcp_prompt: r.mcp_prompt.as_deref(),
            arguments,
        })
}

/// Why task `t` cannot answer for `action` on `cap`, if it cannot.
fn task_refusal(
    t: &Task,
    cap: &Capability,
    action: Action,
    now: Timestamp,
) -> Option<&'static str> {
    if t.status != TaskStatus::Active || now >= t.lease_expires_at || now >= t.expires_at {
        return Some("the task is not active");
    }
    let held = t.capabilities.iter().find(|c| c.tool == cap.tool);
    if held.is_none_or(|h| !cap.scopes.is_subset(&h.scopes)) {
        return Some("the task does not hold this tool and these scopes");
    }
    if action == Action::StartTask {
        return Some("StartTask is decided before a task exists: leave out context.task");
    }
    None
}

/// The facts of one of writ's own actions under a task, from the same
/// constructors its enforcement points use; `None` for a `CallTool`
/// without its request.
fn task_facts<'a>(
    asking: &Asking<'a>,
    chain: Chain<'a>,
    view: &'a TaskView<'a>,
    cap: Capability,
) -> Option<Facts<'a>> {
    let (tool, behaviour, now) = (asking.tool, asking.behaviour, asking.now);
    Some(match (asking.action, asking.request.clone()) {
        (Action::ExchangeToken, _) => Facts::exchange_token(chain, view, cap, tool, behaviour, now),
        (Action::DelegateTask, _) => Facts::delegate_task(
            chain,
            asking
                .instance_facts()
                .map_or(asking.agent.attestation.kind(), |i| i.attestation),
            view,
            vec![cap],
            vec![tool],
            behaviour,
            now,
        ),
        (Action::CallTool, Some(r)) => {
            Facts::call_tool(chain, view, cap.scopes, tool, r, behaviour, now)
        }
        (Action::StartTask | Action::CallTool, _) => return None,
    })
}

/// The AuthZEN answer to a decision (and, for a held call, its approval).
fn answer(d: &writ_policy::Decision, approval: Option<&CallApproval>) -> EvaluationResponse {
    let mut context = DecisionContext {
        reason: d.reason(),
        policy_version: d.policy_version().to_owned(),
        determining_policies: d.determining_policies().to_vec(),
        approval_id: None,
        error: None,
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

/// Longest intent kept in a decision's record.
const MAX_RECORDED_INTENT: usize = 512;

/// What one of writ's own actions was decided on, as the audit record
/// keeps it: the action, agent, instance, tool and scopes; the task (whose
/// intent, human and lifetime its start record holds) or, for a question
/// about no task, what the asker said stands in for one; the request as
/// [`CallRequest::record`] keeps it. Bounded, and never a secret value.
fn evaluated_facts(
    facts: &Facts<'_>,
    instance: Option<&writ_store::Instance>,
    tool: &writ_core::api::Tool,
    task: Option<&Task>,
    request: Option<&writ_policy::RecordedRequest>,
    ask: &TaskAsk<'_>,
) -> Value {
    let scopes: Vec<&str> = facts
        .capabilities()
        .iter()
        .flat_map(|c| c.scopes.iter().map(Scope::as_str))
        .collect();
    let mut intent = ask.intent.to_owned();
    if intent.len() > MAX_RECORDED_INTENT {
        let mut end = MAX_RECORDED_INTENT;
        while !intent.is_char_boundary(end) {
            end -= 1;
        }
        intent.truncate(end);
    }
    serde_json::json!({
        "action": facts.action().cedar_id(),
        "agent": facts.principal().name,
        "instance": instance.map(|i| i.id.to_string()),
        "tool": tool.name,
        "scopes": scopes,
        "task": task.map(|t| t.task_id.to_string()),
        "intent": if task.is_none() { Some(intent) } else { None },
        "on_behalf_of": if task.is_none() { ask.on_behalf_of } else { None },
        "ttl": if task.is_none() { Some(ask.ttl) } else { None },
        "request": request,
    })
}
