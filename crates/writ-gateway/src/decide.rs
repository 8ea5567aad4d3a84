//! Deciding one request, below the HTTP and MCP proxies: the facts from
//! the caller's tool token and the bundle, the verdict, a hold for approval
//! when policy asks for one, and the record the broker's audit chain gets.

use writ_core::ApprovalId;
use writ_core::Scope;
use writ_core::Timestamp;
use writ_core::api::{ApprovalStatus, CallHeld, HoldCall};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_policy::{Behaviour, CallRequest, Chain, Decision, Facts, TaskView, Verdict};

use crate::auth;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::state;

/// Longest request text (path, MCP method or tool name) kept in a record.
const MAX_RECORDED: usize = 512;

/// What the gateway does with one request.
#[derive(Debug, Clone)]
pub(crate) enum Enforced {
    /// Policy allows it.
    Pass(Decision),
    /// Policy holds it for approval, and a person approved it.
    Approved(Decision, ApprovalId),
    /// Refused.
    Refused(Decision),
    /// Held for a person: the approval is pending, or was denied or expired.
    Held(Decision, ApprovalId, ApprovalStatus),
    /// Policy holds it for approval, but where the approval stands cannot
    /// be asked now (the broker is unreachable, or the task already has as
    /// many calls waiting as it may): refused, and, like a held call, not
    /// charged to the agent as a denial.
    Unheld(Decision, std::sync::Arc<HoldError>),
}

/// Why a held call could not be put to the broker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HoldError {
    #[error("the token names no task")]
    NoTask,
    #[error("the token's task id is malformed")]
    BadTask,
    #[error(transparent)]
    Broker(#[from] state::BrokerCall),
}

impl Enforced {
    pub(crate) fn passes(&self) -> bool {
        match self {
            Enforced::Pass(_) | Enforced::Approved(..) => true,
            Enforced::Refused(_) | Enforced::Held(..) | Enforced::Unheld(..) => false,
        }
    }

    pub(crate) fn reason(&self) -> String {
        match self {
            Enforced::Pass(d) | Enforced::Refused(d) => d.reason(),
            Enforced::Approved(d, id) => format!("approved ({id}); {}", d.reason()),
            Enforced::Held(d, id, ApprovalStatus::Denied) => {
                format!("approval {id} was denied; {}", d.reason())
            }
            Enforced::Held(d, id, ApprovalStatus::Expired) => {
                format!("approval {id} expired undecided; {}", d.reason())
            }
            Enforced::Held(d, id, ApprovalStatus::Pending | ApprovalStatus::Approved) => {
                format!("held for approval {id}: {}", d.reason())
            }
            Enforced::Unheld(d, why) => format!(
                "{}; the approval cannot be asked for now ({why}), so the call is refused",
                d.reason()
            ),
        }
    }

    /// The refusal to answer with (`None` when the request passes).
    pub(crate) fn refusal(&self) -> Option<GatewayError> {
        match self {
            Enforced::Pass(_) | Enforced::Approved(..) => None,
            Enforced::Refused(d) | Enforced::Unheld(d, _) => Some(GatewayError::Forbidden {
                reason: self.reason(),
                policy_version: Some(d.policy_version().to_owned()),
                determining_policies: d.determining_policies().to_vec(),
                approval_id: None,
            }),
            Enforced::Held(d, id, _) => Some(GatewayError::Forbidden {
                reason: self.reason(),
                policy_version: Some(d.policy_version().to_owned()),
                determining_policies: d.determining_policies().to_vec(),
                approval_id: Some(id.clone()),
            }),
        }
    }
}

/// The gateway's decision about one request: the caller's tool token and
/// the bundle's policy set, agents and behaviour counts, through the same
/// fact constructor the broker uses for `CallTool`.
pub fn decide_call(
    bundle: &state::Bundle,
    caller: &auth::Caller,
    tool: &writ_core::api::Tool,
    request: CallRequest<'_>,
    now: Timestamp,
) -> Decision {
    let version = bundle.policy.version();
    let task = match TaskView::of_token(&caller.claims) {
        Ok(t) => t,
        Err(e) => {
            return Decision::refused(
                version,
                format!("{e}: exchange the task token for a new tool token"),
            );
        }
    };
    let scopes: std::collections::BTreeSet<Scope> = caller
        .scopes
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let behaviour = Behaviour {
        denials_5m: bundle
            .behaviour
            .get(&caller.agent.name)
            .copied()
            .unwrap_or(0),
        requires_approval: bundle.held_for_approval.contains(&caller.agent.name),
    };
    let facts = Facts::call_tool(
        Chain::new(&caller.agent, caller.chain.iter()),
        &task,
        scopes,
        tool,
        request,
        behaviour,
        now,
    );
    bundle.policy.decide(&facts)
}

impl Gateway {
    /// Decides one request of `caller` on `tool`, holds it for approval
    /// when policy says so (asking the broker where the approval stands),
    /// records the outcome, and returns it.
    pub(crate) async fn enforce(
        &self,
        bundle: &state::Bundle,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        request: CallRequest<'_>,
    ) -> Enforced {
        let span = decision_span(tool.name.as_str());
        let decision = span.in_scope(|| self.evaluate(bundle, caller, tool, request.clone()));
        record_decision(&span, &decision);
        let out = match decision.verdict() {
            Verdict::Allow => Enforced::Pass(decision),
            Verdict::Deny => Enforced::Refused(decision),
            Verdict::NeedsApproval => match self.hold(caller, tool, &request).await {
                Ok(CallHeld {
                    approval_id,
                    status: ApprovalStatus::Approved,
                }) => Enforced::Approved(decision, approval_id),
                Ok(CallHeld {
                    approval_id,
                    status,
                }) => Enforced::Held(decision, approval_id, status),
                Err(e) => Enforced::Unheld(decision, std::sync::Arc::new(e)),
            },
        };
        self.record(bundle, caller, tool, &request, &out);
        out
    }

    /// Asks the broker where the approval of a held call stands.
    async fn hold(
        &self,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        r: &CallRequest<'_>,
    ) -> Result<CallHeld, HoldError> {
        let task = caller
            .claims
            .task
            .as_deref()
            .ok_or(HoldError::NoTask)?
            .parse()
            .map_err(|_| HoldError::BadTask)?;
        let req = HoldCall {
            task,
            scopes: caller
                .scopes
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            call: r.to_approval(&tool.name, &caller.agent.name),
        };
        self.view
            .broker()
            .hold_call(&req)
            .await
            .map_err(|e| state::BrokerCall::to("/v1/gateway/approvals")(e).into())
    }

    /// Records a refusal made before policy (an MCP tool outside the scopes).
    pub(crate) fn record_refusal(
        &self,
        bundle: &state::Bundle,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        request: &CallRequest<'_>,
        decision: Decision,
    ) -> Enforced {
        let out = Enforced::Refused(decision);
        self.record(bundle, caller, tool, request, &out);
        out
    }

    /// Decides without recording or holding (filtering `tools/list`).
    pub(crate) fn evaluate(
        &self,
        bundle: &state::Bundle,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        request: CallRequest<'_>,
    ) -> Decision {
        decide_call(bundle, caller, tool, request, self.view.now())
    }

    fn record(
        &self,
        bundle: &state::Bundle,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        request: &CallRequest<'_>,
        out: &Enforced,
    ) {
        count_call(
            tool.name.as_str(),
            caller.agent.name.as_str(),
            decision_of(out),
            out,
        );
        let (decision, outcome, approval) = match out {
            Enforced::Pass(d) => (d, Outcome::Success, None),
            Enforced::Approved(d, id) => {
                (d, Outcome::Success, Some((id, ApprovalStatus::Approved)))
            }
            Enforced::Refused(d) | Enforced::Unheld(d, _) => (d, Outcome::Deny, None),
            Enforced::Held(d, id, status) => (d, Outcome::Deny, Some((id, *status))),
        };
        let chain: Vec<&str> = caller
            .chain
            .iter()
            .map(|a| a.name.as_str())
            .chain(std::iter::once(caller.agent.name.as_str()))
            .collect();
        // What the agent chose (path, tool name) is capped: a record stays
        // small whatever the request was.
        let cap = capped;
        let mut event = AuditEvent::new(AuditKind::ToolCall, outcome, "gateway")
            .agent(&caller.agent.name)
            .instance(&caller.claims.client_id)
            .jti(&caller.claims.jti)
            .on_behalf_of(caller.claims.obo.as_ref())
            .policy(
                decision.policy_version(),
                decision.determining_policies().to_vec(),
            )
            .reason(out.reason())
            .detail(serde_json::json!({
                "tool": tool.name,
                "method": cap(request.method),
                "path": cap(request.path),
                "mcp_method": request.mcp_method.map(cap),
                "mcp_tool": request.mcp_tool.map(cap),
                "mcp_resource": request.mcp_resource.map(cap),
                "mcp_prompt": request.mcp_prompt.map(cap),
                // What replay needs to decide on the facts this decision
                // saw: the query (sensitive values redacted) and the MCP
                // arguments' shape, bounded, never a secret value.
                "request": request.record(),
                "chain": chain,
                "verdict": decision.verdict().as_str(),
                // Held for a person: refused for now, but not counted as
                // misbehaviour (the broker skips these when counting).
                "held": matches!(out, Enforced::Held(..) | Enforced::Unheld(..)),
                "approval_id": approval.as_ref().map(|(id, _)| id),
                "approval_status": approval.map(|(_, s)| s),
                // When it was decided (unix ms): a refusal counts in the
                // window it was made in, not when the broker hears of it.
                "decided_at": self.view.now().millis(),
                // When the behaviour counts it was decided on were taken:
                // a refusal on counts from before an agent's release is
                // forgiven with the rest.
                "behaviour_at": bundle.behaviour_at.map(writ_core::Timestamp::millis),
            }));
        if let Some(t) = &caller.claims.task {
            event = event.task(t);
        }
        self.spool.push(event);
    }
}

/// What the agent chose (a path, a tool name), capped: a record stays
/// small whatever the request was.
pub(crate) fn capped(s: &str) -> String {
    if s.len() <= MAX_RECORDED {
        return s.to_owned();
    }
    let mut end = MAX_RECORDED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

/// The span of one call's decision when the gateway traces (else
/// [`tracing::Span::none`]): the action and tool, then what was decided.
/// Never the caller's token or the tool's secret.
fn decision_span(tool: &str) -> tracing::Span {
    if !writ_listen::trace::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "decision",
        writ.action = "CallTool",
        writ.tool = tool,
        writ.verdict = tracing::field::Empty,
        writ.policy_version = tracing::field::Empty,
        writ.determining_policies = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    writ_listen::trace::record_ids(&span);
    span
}

fn record_decision(span: &tracing::Span, d: &Decision) {
    if span.is_none() {
        return;
    }
    span.record("writ.verdict", d.verdict().as_str());
    span.record("writ.policy_version", d.policy_version());
    span.record(
        "writ.determining_policies",
        tracing::field::display(d.determining_policies().join(",")),
    );
}

/// Distinct tools, agents and policy versions the gateway's call counters
/// label by; past each bound, a value is counted as `_other`.
pub const METRIC_TOOLS: usize = 64;
pub const METRIC_AGENTS: usize = 256;
pub const METRIC_POLICY_VERSIONS: usize = 32;
static TOOLS: writ_core::labels::Bounded = writ_core::labels::Bounded::new(METRIC_TOOLS);
static AGENTS: writ_core::labels::Bounded = writ_core::labels::Bounded::new(METRIC_AGENTS);
static VERSIONS: writ_core::labels::Bounded =
    writ_core::labels::Bounded::new(METRIC_POLICY_VERSIONS);

fn decision_of(out: &Enforced) -> &Decision {
    match out {
        Enforced::Pass(d)
        | Enforced::Approved(d, _)
        | Enforced::Refused(d)
        | Enforced::Unheld(d, _)
        | Enforced::Held(d, _, _) => d,
    }
}

/// Counts one call in `writ_gateway_calls_total{tool, agent, outcome}`
/// and its decision in `writ_decisions_total{point="gateway", ...}`.
fn count_call(tool: &str, agent: &str, decision: &Decision, out: &Enforced) {
    let outcome = match out {
        Enforced::Pass(_) => "allowed",
        Enforced::Approved(..) => "approved",
        Enforced::Refused(_) => "refused",
        Enforced::Held(..) | Enforced::Unheld(..) => "held",
    };
    metrics::counter!(
        writ_listen::telemetry::GATEWAY_CALLS,
        "tool" => TOOLS.label(tool),
        "agent" => AGENTS.label(agent),
        "outcome" => outcome,
    )
    .increment(1);
    metrics::counter!(
        writ_listen::telemetry::DECISIONS,
        "point" => "gateway",
        "action" => "CallTool",
        "verdict" => decision.verdict().as_str(),
        "policy_version" => VERSIONS.label(decision.policy_version()),
    )
    .increment(1);
}
