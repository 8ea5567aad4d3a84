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

mod own;

use own::answer;

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
}
