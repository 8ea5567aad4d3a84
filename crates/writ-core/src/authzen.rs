//! The OpenID AuthZEN Authorization API 1.0 as writ speaks it: the wire
//! types of access evaluations, and a batch expanded into evaluations with
//! the request's defaults and its evaluation semantics.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::TaskId;

// Receivers ignore fields they do not know (AuthZEN §4): no type here
// refuses unknown fields.

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Subject {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
    #[serde(default)]
    pub properties: Value,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ActionRef {
    pub name: String,
    #[serde(default)]
    pub properties: Value,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Resource {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
    #[serde(default)]
    pub properties: Value,
}

/// What writ reads of the context for its own actions (`StartTask`,
/// `ExchangeToken`, `DelegateTask`, `CallTool`); all optional. For the
/// user's own actions the context is free-form and goes to policy whole.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
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
pub struct EvalRequest {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub mcp_method: Option<String>,
    #[serde(default)]
    pub mcp_tool: Option<String>,
    /// The resource URI an MCP message names (`resources/read`, ...).
    #[serde(default)]
    pub mcp_resource: Option<String>,
    /// The prompt an MCP message names (`prompts/get`, ...).
    #[serde(default)]
    pub mcp_prompt: Option<String>,
    /// MCP arguments, any JSON (policy sees it as compact JSON text).
    #[serde(default)]
    pub arguments: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Evaluation {
    pub subject: Subject,
    pub action: ActionRef,
    pub resource: Resource,
    /// Any JSON object; see [`Evaluation::writ_context`].
    #[serde(default)]
    pub context: Value,
}

impl Evaluation {
    /// The context as writ's own actions read it.
    pub fn writ_context(&self) -> Result<EvalContext, String> {
        match &self.context {
            Value::Null => Ok(EvalContext::default()),
            c => {
                let ctx: EvalContext =
                    serde_json::from_value(c.clone()).map_err(|e| format!("context: {e}"))?;
                // The same shape as a task start's: a question must not
                // carry what a task could not (nor record it).
                if let Some(i) = &ctx.intent {
                    crate::api::check_intent(i).map_err(|e| format!("context: {e}"))?;
                }
                if let Some(o) = &ctx.on_behalf_of {
                    crate::api::check_on_behalf_of(o).map_err(|e| format!("context: {e}"))?;
                }
                Ok(ctx)
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct BatchOptions {
    #[serde(default)]
    pub evaluations_semantic: Option<String>,
}

/// `/access/v1/evaluations`: defaults at the top level, items in
/// `evaluations`. Items stay JSON until expanded, so one malformed item is
/// that item's error, not the whole batch's.
#[derive(Clone, Debug, Deserialize)]
pub struct Evaluations {
    pub subject: Option<Subject>,
    pub action: Option<ActionRef>,
    pub resource: Option<Resource>,
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub evaluations: Option<Vec<Value>>,
    #[serde(default)]
    pub options: Option<BatchOptions>,
}

/// A subject or resource of a search: its type, and an id that is ignored
/// for the side searched.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SearchRef {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub properties: Value,
}

/// A page asked for: the `next_token` of the previous page, and a limit.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PageRequest {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub limit: Option<u64>,
}

/// `/access/v1/search/subject`: which subjects of a type may do this.
#[derive(Clone, Debug, Deserialize)]
pub struct SubjectSearch {
    pub subject: SearchRef,
    pub action: ActionRef,
    pub resource: Resource,
    #[serde(default)]
    pub context: Value,
    #[serde(default)]
    pub page: Option<PageRequest>,
}

/// `/access/v1/search/resource`: which resources of a type this subject may act on.
#[derive(Clone, Debug, Deserialize)]
pub struct ResourceSearch {
    pub subject: Subject,
    pub action: ActionRef,
    pub resource: SearchRef,
    #[serde(default)]
    pub context: Value,
    #[serde(default)]
    pub page: Option<PageRequest>,
}

/// `/access/v1/search/action`: which actions this subject may take on this resource.
#[derive(Clone, Debug, Deserialize)]
pub struct ActionSearch {
    pub subject: Subject,
    pub resource: Resource,
    #[serde(default)]
    pub context: Value,
    #[serde(default)]
    pub page: Option<PageRequest>,
}

/// One subject or resource found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Found {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
}

/// One action found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FoundAction {
    pub name: String,
}

/// A page of results: `next_token` is empty on the last page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PageResponse {
    pub next_token: String,
    pub count: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchResponse<T> {
    pub results: Vec<T>,
    pub page: PageResponse,
}

/// Why one item of a batch could not be evaluated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemError {
    pub status: u16,
    pub message: String,
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
    /// A batch item that could not be evaluated (it is `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
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

/// The answer of `/access/v1/evaluations`: a batch's decisions, or, for a
/// request without items, the single decision (as `/access/v1/evaluation`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchResponse {
    Many(EvaluationsResponse),
    Single(EvaluationResponse),
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

/// A batch expanded: a request without items is one evaluation of its top
/// level; each item otherwise takes what it leaves out from the top level.
#[derive(Clone, Debug)]
pub enum Expanded {
    Single(Box<Evaluation>),
    /// Per item, the evaluation or why the item is not one.
    Batch(Vec<Result<Evaluation, String>>),
}

/// Expands a batch. An error is the whole request's (an unknown semantic,
/// too many items, a request without items that is not an evaluation).
pub fn expand(req: Evaluations) -> Result<(Semantic, Expanded), String> {
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
    let items = req.evaluations.unwrap_or_default();
    if items.len() > MAX_BATCH {
        return Err(format!("at most {MAX_BATCH} evaluations per request"));
    }
    if items.is_empty() {
        let missing = |what: &str| format!("the request has no {what} and no evaluations");
        return Ok((
            semantic,
            Expanded::Single(Box::new(Evaluation {
                subject: req.subject.ok_or_else(|| missing("subject"))?,
                action: req.action.ok_or_else(|| missing("action"))?,
                resource: req.resource.ok_or_else(|| missing("resource"))?,
                context: req.context.unwrap_or(Value::Null),
            })),
        ));
    }
    let defaults = [
        (
            "subject",
            req.subject
                .as_ref()
                .and_then(|v| serde_json::to_value(v).ok()),
        ),
        (
            "action",
            req.action
                .as_ref()
                .and_then(|v| serde_json::to_value(v).ok()),
        ),
        (
            "resource",
            req.resource
                .as_ref()
                .and_then(|v| serde_json::to_value(v).ok()),
        ),
        ("context", req.context.clone()),
    ];
    let full = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(mut item) = item else {
                return Err(format!("evaluation {i} is not a JSON object"));
            };
            for (key, value) in &defaults {
                if let (false, Some(v)) = (item.contains_key(*key), value) {
                    item.insert((*key).to_owned(), v.clone());
                }
            }
            serde_json::from_value::<Evaluation>(Value::Object(item))
                .map_err(|e| format!("evaluation {i}: {e}"))
        })
        .collect();
    Ok((semantic, Expanded::Batch(full)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn asking(context: Value) -> Evaluation {
        serde_json::from_value(json!({
            "subject": {"type": "agent", "id": "a"},
            "action": {"name": "StartTask"},
            "resource": {"type": "tool", "id": "t"},
            "context": context,
        }))
        .unwrap()
    }

    #[test]
    fn a_question_carries_only_what_a_task_start_could() {
        let longest = "u".repeat(crate::api::MAX_ON_BEHALF_OF);
        let ok = asking(json!({"intent": "read", "on_behalf_of": longest}));
        assert_eq!(
            ok.writ_context().unwrap().on_behalf_of.as_deref(),
            Some(longest.as_str())
        );
        let too_long = "u".repeat(crate::api::MAX_ON_BEHALF_OF + 1);
        for bad in [
            json!({"on_behalf_of": too_long}),
            json!({"on_behalf_of": ""}),
            json!({"on_behalf_of": "alice smith"}),
            json!({"intent": "x".repeat(crate::api::MAX_INTENT + 1)}),
            json!({"intent": "read\u{1b}[2J"}),
        ] {
            let e = asking(bad.clone()).writ_context().unwrap_err();
            assert!(e.starts_with("context: "), "{bad}: {e}");
        }
        assert!(asking(Value::Null).writ_context().is_ok());
    }
}
