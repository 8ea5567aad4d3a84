//! Questions in writ's own vocabulary (agents and instances asking to
//! start tasks or call tools, `CallTool` with `context.request`,
//! `context.task`): resolved to writ's records and decided with the same
//! fact builder as the broker's own enforcement.

use super::*;

impl AuthZen {
    /// One of writ's own actions, from the facts its enforcement points use.
    pub(super) async fn evaluate_writ(
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
    pub(super) async fn resolve_tool(
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
    pub(super) async fn resolve_subject(
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
pub(super) fn answer(
    d: &writ_policy::Decision,
    approval: Option<&CallApproval>,
) -> EvaluationResponse {
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
