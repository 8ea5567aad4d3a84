//! The OpenID AuthZEN Authorization API 1.0 as writ speaks it: the wire
//! types of access evaluations, and a batch expanded into evaluations with
//! the request's defaults and its evaluation semantics.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::TaskId;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
    #[serde(default)]
    pub properties: Value,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRef {
    pub name: String,
    #[serde(default)]
    pub properties: Value,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
    #[serde(default)]
    pub properties: Value,
}

/// The context writ understands; all optional.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalContext {
    /// Decide in the context of this task (its intent, human and chain).
    #[serde(default)]
    pub task: Option<TaskId>,
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub ttl: Option<i64>,
    /// For `CallTool`: the request the enforcement point is deciding.
    #[serde(default)]
    pub request: Option<EvalRequest>,
    /// The enforcement point enforces this answer (it is not a what-if): a
    /// refusal then counts against the subject's agent, as a refusal at
    /// writ's own enforcement points does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enforced: bool,
}

/// What an enforcement point saw of a request to a tool (`CallTool`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub mcp_method: Option<String>,
    #[serde(default)]
    pub mcp_tool: Option<String>,
    /// MCP arguments, any JSON (policy sees it as compact JSON text).
    #[serde(default)]
    pub arguments: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    pub subject: Subject,
    pub action: ActionRef,
    pub resource: Resource,
    #[serde(default)]
    pub context: EvalContext,
}

/// One item of a batch: anything it leaves out comes from the request.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialEvaluation {
    pub subject: Option<Subject>,
    pub action: Option<ActionRef>,
    pub resource: Option<Resource>,
    pub context: Option<EvalContext>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    #[serde(default)]
    pub evaluations_semantic: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluations {
    pub subject: Option<Subject>,
    pub action: Option<ActionRef>,
    pub resource: Option<Resource>,
    pub context: Option<EvalContext>,
    #[serde(default)]
    pub evaluations: Vec<PartialEvaluation>,
    #[serde(default)]
    pub options: Option<BatchOptions>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionContext {
    /// Why: `approval_required` when a person must approve first (then
    /// `approval_id` names the approval to ask for), else the cause.
    pub reason: String,
    pub policy_version: String,
    pub determining_policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<crate::ApprovalId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvaluationResponse {
    pub decision: bool,
    pub context: DecisionContext,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvaluationsResponse {
    pub evaluations: Vec<EvaluationResponse>,
}

/// Most evaluations in one batch.
pub const MAX_BATCH: usize = 64;

/// How a batch is evaluated (AuthZEN §7.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

impl Semantic {
    /// Whether evaluation stops after a decision.
    pub fn stops_at(self, decision: bool) -> bool {
        match self {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !decision,
            Semantic::PermitOnFirstPermit => decision,
        }
    }
}

/// A batch as full evaluations: each item's missing parts come from the
/// request's top level; no items means one evaluation of the top level.
pub fn expand(req: Evaluations) -> Result<(Semantic, Vec<Evaluation>), String> {
    let semantic = match req
        .options
        .as_ref()
        .and_then(|o| o.evaluations_semantic.as_deref())
    {
        None | Some("execute_all") => Semantic::ExecuteAll,
        Some("deny_on_first_deny") => Semantic::DenyOnFirstDeny,
        Some("permit_on_first_permit") => Semantic::PermitOnFirstPermit,
        Some(other) => return Err(format!("unknown evaluations_semantic {other:?}")),
    };
    if req.evaluations.len() > MAX_BATCH {
        return Err(format!("at most {MAX_BATCH} evaluations per request"));
    }
    let items: Vec<PartialEvaluation> = if req.evaluations.is_empty() {
        vec![PartialEvaluation {
            subject: None,
            action: None,
            resource: None,
            context: None,
        }]
    } else {
        req.evaluations
    };
    let mut full = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let missing = |what: &str| format!("evaluation {i} has no {what}");
        full.push(Evaluation {
            subject: item
                .subject
                .or_else(|| req.subject.clone())
                .ok_or_else(|| missing("subject"))?,
            action: item
                .action
                .or_else(|| req.action.clone())
                .ok_or_else(|| missing("action"))?,
            resource: item
                .resource
                .or_else(|| req.resource.clone())
                .ok_or_else(|| missing("resource"))?,
            context: item
                .context
                .or_else(|| req.context.clone())
                .unwrap_or_default(),
        });
    }
    Ok((semantic, full))
}
