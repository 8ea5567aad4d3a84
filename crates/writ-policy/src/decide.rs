//! Decisions: the facts of a request in, allow or deny with reasons out.

use std::collections::BTreeMap;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, RestrictedExpression,
};
use writ_core::{Capability, Timestamp};

use crate::PolicySet;

/// Allow or deny, with the policies that decided it and the set's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// For an allow: the permits that matched. For a deny: the forbids that
    /// matched (empty when no permit matched).
    pub determining_policies: Vec<String>,
    /// Evaluation errors; any error makes the decision a deny.
    pub errors: Vec<String>,
    pub policy_version: String,
    /// What the permits that allowed it ask for, by annotation.
    pub obligations: Obligations,
}

/// The anatomy of a decision.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub decision: Decision,
    pub tools: Vec<ToolExplanation>,
}

/// For one tool: every permit and every forbid whose conditions hold.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ToolExplanation {
    pub tool: String,
    pub permits: Vec<String>,
    pub forbids: Vec<String>,
    pub errors: Vec<String>,
}

/// Conditions attached to an allow by annotations on the permits that
/// decided it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Obligations {
    /// `@approval("required")`: a person must approve first.
    pub approval_required: bool,
    /// `@max_ttl("SECONDS")`: the shortest such cap.
    pub max_ttl: Option<i64>,
    /// `@exception("allowed")` on a permit for every tool: a lifetime beyond
    /// the configured maximum may be asked for (with approval).
    pub exception_allowed: bool,
}

impl Decision {
    /// A one-line reason for people and audit records.
    pub fn reason(&self) -> String {
        if self.allowed {
            format!("permitted by {}", self.determining_policies.join(", "))
        } else if !self.errors.is_empty() {
            format!(
                "denied: policy evaluation failed ({})",
                self.errors.join("; ")
            )
        } else if self.determining_policies.is_empty() {
            "denied: no policy permits this request".to_owned()
        } else {
            format!("denied by {}", self.determining_policies.join(", "))
        }
    }

    fn deny(version: &str, error: String) -> Self {
        Self {
            allowed: false,
            determining_policies: Vec::new(),
            errors: vec![error],
            policy_version: version.to_owned(),
            obligations: Obligations::default(),
        }
    }
}

/// What one policy's annotations oblige.
pub(crate) fn obligations_of_policy(p: &cedar_policy::Policy) -> Obligations {
    let mut o = Obligations::default();
    for (key, value) in p.annotations() {
        match key {
            "approval" if value == "required" => o.approval_required = true,
            "exception" if value == "allowed" => o.exception_allowed = true,
            // An unparsable cap is the tightest one: fail towards shorter.
            "max_ttl" => {
                let cap = value.trim().parse::<i64>().unwrap_or(0).max(0);
                o.max_ttl = Some(o.max_ttl.map_or(cap, |m| m.min(cap)));
            }
            _ => {}
        }
    }
    o
}

/// What policy knows about the agent.
#[derive(Clone, Debug)]
pub struct AgentFacts<'a> {
    pub name: &'a str,
    pub spiffe_id: &'a str,
    pub attestation: &'a str,
    pub quarantined: bool,
    pub attributes: &'a BTreeMap<String, String>,
}

/// What policy knows about a tool.
#[derive(Clone, Debug)]
pub struct ToolFacts<'a> {
    pub name: &'a str,
    pub audience: &'a str,
    pub scopes: Vec<&'a str>,
    pub attributes: &'a BTreeMap<String, String>,
}

/// Which decision is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// An instance starts a task.
    StartTask,
    /// A task token is exchanged for a tool token.
    ExchangeToken,
    /// A task delegates to a sub-agent (the principal).
    DelegateTask,
    /// A request through a gateway to a tool, with a tool token.
    CallTool,
}

impl Action {
    pub fn cedar_id(self) -> &'static str {
        match self {
            Action::StartTask => "StartTask",
            Action::ExchangeToken => "ExchangeToken",
            Action::DelegateTask => "DelegateTask",
            Action::CallTool => "CallTool",
        }
    }
}

/// The facts of one request about a task.
#[derive(Clone, Debug)]
pub struct TaskFacts<'a> {
    pub action: Action,
    /// The principal: the agent acting now.
    pub agent: AgentFacts<'a>,
    /// Every other agent in the delegation chain, root first.
    pub chain: Vec<AgentFacts<'a>>,
    pub intent: &'a str,
    pub capabilities: &'a [Capability],
    pub on_behalf_of: Option<&'a str>,
    pub ttl_secs: i64,
    pub attestation: &'a str,
    pub depth: u32,
    /// Requests of the principal denied in the last five minutes.
    pub recent_denials: u32,
    /// The request asks for a lifetime beyond the configured maximum.
    pub exception: bool,
    pub now: Timestamp,
    /// The request itself, for `CallTool`.
    pub request: Option<RequestFacts<'a>>,
    /// The instance acting (`context.instance`), when known.
    pub instance: Option<&'a str>,
    /// The task acted under (`context.task`), when it exists already: its
    /// intent, capabilities, human, depth and exception flag are the
    /// facts above.
    pub task: Option<TaskRef<'a>>,
}

/// The identity of an existing task and what the facts do not say.
#[derive(Clone, Copy, Debug)]
pub struct TaskRef<'a> {
    pub id: &'a str,
    /// Everything the task holds (the facts' capabilities may be only what
    /// this request asks for).
    pub capabilities: &'a [Capability],
    pub parent: Option<&'a str>,
    /// Unix seconds.
    pub started_at: Option<i64>,
}

/// What a gateway saw of one request to a tool.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The path below the tool's prefix, starting with `/`.
    pub path: &'a str,
    pub query: &'a str,
    /// For MCP: the JSON-RPC method (`tools/call`, `tools/list`, ...).
    pub mcp_method: Option<&'a str>,
    /// For MCP `tools/call`: the tool's name.
    pub mcp_tool: Option<&'a str>,
    /// For MCP `tools/call`: the arguments as compact JSON text.
    pub arguments: Option<&'a str>,
}

const KNOWN_AGENT_ATTRS: [&str; 3] = ["owner", "environment", "risk_tier"];

impl PolicySet {
    /// Decides a task action: one Cedar request per tool in the
    /// capabilities; allowed only when every one of them is.
    pub fn decide(&self, facts: &TaskFacts<'_>, tools: &[ToolFacts<'_>]) -> Decision {
        let mut allowed_by: Vec<String> = Vec::new();
        let mut denied_by: Vec<String> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut all_allowed = !facts.capabilities.is_empty();
        let mut obligations = Obligations {
            exception_allowed: true,
            ..Obligations::default()
        };
        for cap in facts.capabilities {
            let Some(tool) = tools.iter().find(|t| t.name == cap.tool.as_str()) else {
                return Decision::deny(self.version(), format!("unknown tool {}", cap.tool));
            };
            let d = match self.decide_one(facts, tool, cap) {
                Ok(d) => d,
                Err(e) => return Decision::deny(self.version(), e),
            };
            all_allowed &= d.allowed;
            if d.allowed {
                let o = self.obligations_of(&d.determining_policies);
                obligations.approval_required |= o.approval_required;
                obligations.exception_allowed &= o.exception_allowed;
                obligations.max_ttl = match (obligations.max_ttl, o.max_ttl) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            let target = if d.allowed {
                &mut allowed_by
            } else {
                &mut denied_by
            };
            for p in d.determining_policies {
                if !target.contains(&p) {
                    target.push(p);
                }
            }
            errors.extend(d.errors);
        }
        let allowed = all_allowed && errors.is_empty();
        Decision {
            allowed,
            determining_policies: if allowed { allowed_by } else { denied_by },
            errors,
            policy_version: self.version().to_owned(),
            obligations: if allowed {
                obligations
            } else {
                Obligations::default()
            },
        }
    }

    /// The annotations of the permits that decided an allow.
    fn obligations_of(&self, permits: &[String]) -> Obligations {
        let mut o = Obligations::default();
        for id in permits {
            let Some(p) = self.obligations.get(id) else {
                continue;
            };
            o.approval_required |= p.approval_required;
            o.exception_allowed |= p.exception_allowed;
            if let Some(cap) = p.max_ttl {
                o.max_ttl = Some(o.max_ttl.map_or(cap, |m| m.min(cap)));
            }
        }
        o
    }

    fn decide_one(
        &self,
        facts: &TaskFacts<'_>,
        tool: &ToolFacts<'_>,
        cap: &Capability,
    ) -> Result<Decision, String> {
        let slice = self
            .slices
            .get(facts.action.cedar_id(), tool.name)
            .unwrap_or(&self.policies);
        self.decide_with(slice, facts, tool, cap)
    }

    /// Which policies permit and which forbid a request, tool by tool, and
    /// the decision: for people writing and debugging policies.
    pub fn explain(
        &self,
        facts: &TaskFacts<'_>,
        tools: &[ToolFacts<'_>],
    ) -> Result<Explanation, String> {
        let mut permits = cedar_policy::PolicySet::new();
        let mut forbids = cedar_policy::PolicySet::new();
        for p in self.policies.policies() {
            let target = match p.effect() {
                cedar_policy::Effect::Permit => &mut permits,
                cedar_policy::Effect::Forbid => &mut forbids,
            };
            target.add(p.clone()).map_err(|e| e.to_string())?;
        }
        // With every request permitted, the forbids that match are the reason for a deny.
        let all = cedar_policy::Policy::parse(
            Some(cedar_policy::PolicyId::new("writ-explain-permit-all")),
            "permit (principal, action, resource);",
        )
        .map_err(|e| e.to_string())?;
        forbids.add(all).map_err(|e| e.to_string())?;
        let mut per_tool = Vec::new();
        for cap in facts.capabilities {
            let tool = tools
                .iter()
                .find(|t| t.name == cap.tool.as_str())
                .ok_or_else(|| format!("unknown tool {}", cap.tool))?;
            let p = self.decide_with(&permits, facts, tool, cap)?;
            let f = self.decide_with(&forbids, facts, tool, cap)?;
            let mut errors = p.errors;
            errors.extend(f.errors);
            per_tool.push(ToolExplanation {
                tool: cap.tool.to_string(),
                permits: if p.allowed {
                    p.determining_policies
                } else {
                    Vec::new()
                },
                forbids: if f.allowed {
                    Vec::new()
                } else {
                    f.determining_policies
                },
                errors,
            });
        }
        Ok(Explanation {
            decision: self.decide(facts, tools),
            tools: per_tool,
        })
    }

    fn decide_with(
        &self,
        policies: &cedar_policy::PolicySet,
        facts: &TaskFacts<'_>,
        tool: &ToolFacts<'_>,
        cap: &Capability,
    ) -> Result<Decision, String> {
        let n = &self.names;
        let agent_uid =
            |name: &str| EntityUid::from_type_name_and_id(n.agent.clone(), EntityId::new(name));
        let strings = |items: &mut dyn Iterator<Item = &str>| {
            RestrictedExpression::new_set(
                items.map(|s| RestrictedExpression::new_string(s.to_owned())),
            )
        };
        let record = |fields: Vec<(&str, RestrictedExpression)>| {
            RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)))
                .map_err(|e| format!("context: {e}"))
        };
        let mut caps = Vec::with_capacity(facts.capabilities.len());
        for c in facts.capabilities {
            caps.push(record(vec![
                ("tool", RestrictedExpression::new_string(c.tool.to_string())),
                ("scopes", strings(&mut c.scopes.iter().map(|s| s.as_str()))),
            ])?);
        }
        let root = facts.chain.first().unwrap_or(&facts.agent);
        let mut pairs: Vec<(String, RestrictedExpression)> = vec![
            (
                "scopes".into(),
                strings(&mut cap.scopes.iter().map(|s| s.as_str())),
            ),
            (
                "time".into(),
                record(vec![
                    ("unix", RestrictedExpression::new_long(facts.now.secs())),
                    ("hour", RestrictedExpression::new_long(facts.now.hour_utc())),
                    (
                        "weekday",
                        RestrictedExpression::new_long(facts.now.weekday_utc()),
                    ),
                ])?,
            ),
            (
                "depth".into(),
                RestrictedExpression::new_long(i64::from(facts.depth)),
            ),
            (
                "chain".into(),
                RestrictedExpression::new_set(
                    facts
                        .chain
                        .iter()
                        .chain(std::iter::once(&facts.agent))
                        .map(|a| RestrictedExpression::new_entity_uid(agent_uid(a.name))),
                ),
            ),
            (
                "root_agent".into(),
                RestrictedExpression::new_entity_uid(agent_uid(root.name)),
            ),
            (
                "behaviour".into(),
                record(vec![(
                    "denials_5m",
                    RestrictedExpression::new_long(i64::from(facts.recent_denials)),
                )])?,
            ),
            (
                "exception".into(),
                RestrictedExpression::new_bool(facts.exception),
            ),
        ];
        match &facts.request {
            // What a gateway saw of the request: CallTool's context has
            // everything the task actions' has, and this.
            Some(r) if facts.action == Action::CallTool => {
                let mut req = vec![
                    (
                        "method",
                        RestrictedExpression::new_string(r.method.to_owned()),
                    ),
                    ("path", RestrictedExpression::new_string(r.path.to_owned())),
                    (
                        "query",
                        RestrictedExpression::new_string(r.query.to_owned()),
                    ),
                ];
                let optional = [
                    ("mcp_method", r.mcp_method),
                    ("mcp_tool", r.mcp_tool),
                    ("arguments", r.arguments),
                ];
                for (k, v) in optional {
                    if let Some(v) = v {
                        req.push((k, RestrictedExpression::new_string(v.to_owned())));
                    }
                }
                pairs.push(("request".into(), record(req)?));
            }
            _ if facts.action == Action::CallTool => {
                return Err("a CallTool decision needs the request".into());
            }
            _ => {}
        }
        pairs.push((
            "intent".into(),
            RestrictedExpression::new_string(facts.intent.to_owned()),
        ));
        pairs.push(("capabilities".into(), RestrictedExpression::new_set(caps)));
        pairs.push(("ttl".into(), RestrictedExpression::new_long(facts.ttl_secs)));
        pairs.push((
            "attestation".into(),
            RestrictedExpression::new_string(facts.attestation.to_owned()),
        ));
        if let Some(i) = facts.instance {
            pairs.push((
                "instance".into(),
                RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                    n.instance.clone(),
                    EntityId::new(i),
                )),
            ));
        }
        if let Some(t) = &facts.task {
            pairs.push((
                "task".into(),
                RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                    n.task.clone(),
                    EntityId::new(t.id),
                )),
            ));
        }
        if let Some(obo) = facts.on_behalf_of {
            pairs.push((
                "on_behalf_of".into(),
                RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                    n.human.clone(),
                    EntityId::new(obo),
                )),
            ));
        }
        let context = Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))?;
        let action = n.action(facts.action).clone();
        let principal = agent_uid(facts.agent.name);
        let resource = EntityUid::from_type_name_and_id(n.tool.clone(), EntityId::new(tool.name));
        // The request is built from typed facts, so its shape is fixed by
        // this code; debug builds (every test) validate it against the
        // schema, release builds skip that cost. A context that did not fit
        // would still deny: missing attributes are evaluation errors.
        let schema = cfg!(debug_assertions).then_some(&*self.schema);
        let request = Request::new(principal, action, resource, context, schema)
            .map_err(|e| format!("request: {e}"))?;
        let entities = self.entities(facts, tool)?;
        let response = Authorizer::new().is_authorized(&request, policies, &entities);
        let determining: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        Ok(Decision {
            allowed: response.decision() == CedarDecision::Allow && errors.is_empty(),
            determining_policies: determining,
            errors,
            policy_version: self.version().to_owned(),
            obligations: Obligations::default(),
        })
    }

    fn entities(&self, facts: &TaskFacts<'_>, tool: &ToolFacts<'_>) -> Result<Entities, String> {
        let n = &self.names;
        let tags = |m: &BTreeMap<String, String>| -> Vec<(String, RestrictedExpression)> {
            m.iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())))
                .collect()
        };
        let mut list: Vec<Entity> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for a in facts.chain.iter().chain(std::iter::once(&facts.agent)) {
            if seen.contains(&a.name) {
                continue;
            }
            seen.push(a.name);
            let mut attrs: Vec<(String, RestrictedExpression)> = vec![
                (
                    "spiffe_id".into(),
                    RestrictedExpression::new_string(a.spiffe_id.to_owned()),
                ),
                (
                    "attestation".into(),
                    RestrictedExpression::new_string(a.attestation.to_owned()),
                ),
                (
                    "quarantined".into(),
                    RestrictedExpression::new_bool(a.quarantined),
                ),
            ];
            for k in KNOWN_AGENT_ATTRS {
                if let Some(v) = a.attributes.get(k) {
                    attrs.push((k.to_owned(), RestrictedExpression::new_string(v.clone())));
                }
            }
            let uid = EntityUid::from_type_name_and_id(n.agent.clone(), EntityId::new(a.name));
            list.push(
                Entity::new_with_tags(uid, attrs, [], tags(a.attributes))
                    .map_err(|e| format!("entities: {e}"))?,
            );
        }
        let tool_uid = EntityUid::from_type_name_and_id(n.tool.clone(), EntityId::new(tool.name));
        let tool_attrs = vec![
            (
                "audience".to_owned(),
                RestrictedExpression::new_string(tool.audience.to_owned()),
            ),
            (
                "scopes".to_owned(),
                RestrictedExpression::new_set(
                    tool.scopes
                        .iter()
                        .map(|s| RestrictedExpression::new_string((*s).to_owned())),
                ),
            ),
        ];
        list.push(
            Entity::new_with_tags(tool_uid, tool_attrs, [], tags(tool.attributes))
                .map_err(|e| format!("entities: {e}"))?,
        );
        let human = facts
            .on_behalf_of
            .map(|obo| EntityUid::from_type_name_and_id(n.human.clone(), EntityId::new(obo)));
        if let Some(uid) = &human {
            list.push(Entity::new_no_attrs(
                uid.clone(),
                std::collections::HashSet::new(),
            ));
        }
        if let Some(i) = facts.instance {
            let uid = EntityUid::from_type_name_and_id(n.instance.clone(), EntityId::new(i));
            let attrs = vec![
                (
                    "agent".to_owned(),
                    RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                        n.agent.clone(),
                        EntityId::new(facts.agent.name),
                    )),
                ),
                (
                    "attestation".to_owned(),
                    RestrictedExpression::new_string(facts.attestation.to_owned()),
                ),
            ];
            list.push(
                Entity::new(
                    uid,
                    attrs.into_iter().collect(),
                    std::collections::HashSet::new(),
                )
                .map_err(|e| format!("entities: {e}"))?,
            );
        }
        if let Some(t) = &facts.task {
            let uid = EntityUid::from_type_name_and_id(n.task.clone(), EntityId::new(t.id));
            let caps = t.capabilities.iter().map(|c| {
                RestrictedExpression::new_record([
                    (
                        "tool".to_owned(),
                        RestrictedExpression::new_string(c.tool.to_string()),
                    ),
                    (
                        "scopes".to_owned(),
                        RestrictedExpression::new_set(
                            c.scopes
                                .iter()
                                .map(|s| RestrictedExpression::new_string(s.as_str().to_owned())),
                        ),
                    ),
                ])
            });
            let mut attrs: Vec<(String, RestrictedExpression)> = vec![
                (
                    "intent".to_owned(),
                    RestrictedExpression::new_string(facts.intent.to_owned()),
                ),
                (
                    "capabilities".to_owned(),
                    RestrictedExpression::new_set(
                        caps.collect::<Result<Vec<_>, _>>()
                            .map_err(|e| format!("entities: {e}"))?,
                    ),
                ),
                (
                    "depth".to_owned(),
                    RestrictedExpression::new_long(i64::from(facts.depth)),
                ),
                (
                    "exception".to_owned(),
                    RestrictedExpression::new_bool(facts.exception),
                ),
            ];
            if let Some(h) = &human {
                attrs.push((
                    "on_behalf_of".to_owned(),
                    RestrictedExpression::new_entity_uid(h.clone()),
                ));
            }
            if let Some(p) = t.parent {
                attrs.push((
                    "parent".to_owned(),
                    RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                        n.task.clone(),
                        EntityId::new(p),
                    )),
                ));
            }
            if let Some(s) = t.started_at {
                attrs.push(("started_at".to_owned(), RestrictedExpression::new_long(s)));
            }
            list.push(
                Entity::new(
                    uid,
                    attrs.into_iter().collect(),
                    std::collections::HashSet::new(),
                )
                .map_err(|e| format!("entities: {e}"))?,
            );
        }
        // Built from typed facts, so no schema pass is needed here; the
        // request above was checked against the schema.
        Entities::from_entities(list, None).map_err(|e| format!("entities: {e}"))
    }
}

/// Entity type names and action ids, parsed once per policy set.
#[derive(Debug)]
pub(crate) struct Names {
    agent: EntityTypeName,
    tool: EntityTypeName,
    human: EntityTypeName,
    start_task: EntityUid,
    exchange_token: EntityUid,
    delegate_task: EntityUid,
    call_tool: EntityUid,
    instance: EntityTypeName,
    task: EntityTypeName,
}

impl Names {
    pub(crate) fn new() -> Result<Self, String> {
        let ty = |s: &str| s.parse::<EntityTypeName>().map_err(|e| e.to_string());
        let action = |id: &str| {
            Ok::<_, String>(EntityUid::from_type_name_and_id(
                ty("Action")?,
                EntityId::new(id),
            ))
        };
        Ok(Self {
            agent: ty("Agent")?,
            tool: ty("Tool")?,
            human: ty("Human")?,
            start_task: action("StartTask")?,
            exchange_token: action("ExchangeToken")?,
            delegate_task: action("DelegateTask")?,
            call_tool: action("CallTool")?,
            instance: ty("Instance")?,
            task: ty("Task")?,
        })
    }

    fn action(&self, a: Action) -> &EntityUid {
        match a {
            Action::StartTask => &self.start_task,
            Action::ExchangeToken => &self.exchange_token,
            Action::DelegateTask => &self.delegate_task,
            Action::CallTool => &self.call_tool,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicySource;

    fn set(text: &str) -> PolicySet {
        PolicySet::compile(vec![PolicySource {
            name: "t.cedar".into(),
            text: text.into(),
        }])
        .unwrap()
    }

    fn examples() -> PolicySet {
        PolicySet::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/policies"
        )))
        .unwrap()
    }

    fn decide(
        p: &PolicySet,
        caps: &[&str],
        obo: Option<&str>,
        attrs: &[(&str, &str)],
        now: Timestamp,
    ) -> Decision {
        let attributes: BTreeMap<String, String> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let capabilities: Vec<Capability> = caps
            .iter()
            .map(|c| Capability::parse_short(c).unwrap())
            .collect();
        let facts = TaskFacts {
            action: Action::StartTask,
            chain: Vec::new(),
            depth: 0,
            recent_denials: 0,
            exception: false,
            agent: AgentFacts {
                name: "demo-agent",
                spiffe_id: "spiffe://writ.local/agent/demo-agent",
                attestation: "join_token",
                quarantined: false,
                attributes: &attributes,
            },
            intent: "triage tickets",
            capabilities: &capabilities,
            on_behalf_of: obo,
            ttl_secs: 600,
            attestation: "join_token",
            now,
            request: None,
            instance: None,
            task: None,
        };
        let no_attrs = BTreeMap::new();
        let tools = [ToolFacts {
            name: "tickets",
            audience: "https://tickets.example",
            scopes: vec!["read", "write", "delete"],
            attributes: &no_attrs,
        }];
        p.decide(&facts, &tools)
    }

    const NOON_TUESDAY: Timestamp = Timestamp::from_secs(1_795_780_800); // 2026-11-24T12:00:00Z

    #[test]
    fn example_pack_decides_as_documented() {
        let p = examples();
        let d = decide(&p, &["tickets:read"], None, &[], NOON_TUESDAY);
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.determining_policies, vec!["read-only"]);

        let d = decide(&p, &["tickets:write"], None, &[], NOON_TUESDAY);
        assert!(!d.allowed);
        assert!(d.determining_policies.is_empty());
        assert_eq!(d.reason(), "denied: no policy permits this request");

        assert!(
            decide(
                &p,
                &["tickets:write"],
                Some("user:alice"),
                &[],
                NOON_TUESDAY
            )
            .allowed
        );

        let d = decide(
            &p,
            &["tickets:read,delete"],
            Some("user:alice"),
            &[],
            NOON_TUESDAY,
        );
        assert!(!d.allowed);
        assert_eq!(d.determining_policies, vec!["no-deletes"]);

        let high = [("risk_tier", "high")];
        assert!(decide(&p, &["tickets:read"], None, &high, NOON_TUESDAY).allowed);
        let night = NOON_TUESDAY.add_secs(12 * 3600);
        let d = decide(&p, &["tickets:read"], None, &high, night);
        assert_eq!(d.determining_policies, vec!["high-risk-business-hours"]);
    }

    #[test]
    fn empty_set_and_empty_request_deny() {
        let p = PolicySet::empty().unwrap();
        assert!(!decide(&p, &["tickets:read"], None, &[], NOON_TUESDAY).allowed);
        assert!(!decide(&examples(), &[], None, &[], NOON_TUESDAY).allowed);
    }

    #[test]
    fn tags_are_visible_to_policy() {
        let p = set(
            r#"permit (principal, action, resource) when { principal.hasTag("team") && principal.getTag("team") == "payments" };"#,
        );
        assert!(
            decide(
                &p,
                &["tickets:read"],
                None,
                &[("team", "payments")],
                NOON_TUESDAY
            )
            .allowed
        );
        assert!(
            !decide(
                &p,
                &["tickets:read"],
                None,
                &[("team", "growth")],
                NOON_TUESDAY
            )
            .allowed
        );
    }

    #[test]
    fn invalid_policies_are_refused_with_a_location() {
        let bad = PolicySet::compile(vec![PolicySource {
            name: "bad.cedar".into(),
            text: "permit (principal, action, resource)\nwhen { context.nope == 1 };".into(),
        }])
        .unwrap_err()
        .to_string();
        assert!(bad.starts_with("bad.cedar:2:"), "{bad}");

        let syntax = PolicySet::compile(vec![PolicySource {
            name: "syn.cedar".into(),
            text: "permit (principal, action, resource) when { ".into(),
        }])
        .unwrap_err()
        .to_string();
        assert!(syntax.starts_with("syn.cedar:1:"), "{syntax}");

        let dup = PolicySet::compile(vec![PolicySource {
            name: "d.cedar".into(),
            text: "@id(\"x\") permit (principal, action, resource);\n@id(\"x\") forbid (principal, action, resource);".into(),
        }])
        .unwrap_err();
        assert!(matches!(dup, crate::PolicyError::DuplicateId { .. }));
    }

    #[test]
    fn version_is_a_content_hash() {
        let a = set("permit (principal, action, resource);");
        let b = set("permit (principal, action, resource);");
        let c = set("forbid (principal, action, resource);");
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert!(a.version().starts_with("sha256:"));
    }

    fn facts_for<'a>(
        caps: &'a [Capability],
        obo: Option<&'a str>,
        agent_attrs: &'a BTreeMap<String, String>,
        denials: u32,
    ) -> TaskFacts<'a> {
        TaskFacts {
            action: Action::StartTask,
            agent: AgentFacts {
                name: "demo-agent",
                spiffe_id: "spiffe://writ.local/agent/demo-agent",
                attestation: "join_token",
                quarantined: false,
                attributes: agent_attrs,
            },
            chain: Vec::new(),
            intent: "work",
            capabilities: caps,
            on_behalf_of: obo,
            ttl_secs: 600,
            attestation: "join_token",
            depth: 0,
            recent_denials: denials,
            exception: false,
            now: NOON_TUESDAY,
            request: None,
            instance: None,
            task: None,
        }
    }

    #[test]
    fn user_data_tools_need_a_human_and_noisy_agents_are_stopped() {
        let p = examples();
        let none = BTreeMap::new();
        let user_data: BTreeMap<String, String> = [("data".to_owned(), "user".to_owned())].into();
        let crm = [ToolFacts {
            name: "crm",
            audience: "https://crm.example",
            scopes: vec!["read"],
            attributes: &user_data,
        }];
        let caps = [Capability::parse_short("crm:read").unwrap()];
        let d = p.decide(&facts_for(&caps, None, &none, 0), &crm);
        assert_eq!(d.determining_policies, vec!["user-data-needs-a-human"]);
        assert!(
            p.decide(&facts_for(&caps, Some("user:alice"), &none, 0), &crm)
                .allowed
        );

        let plain = [ToolFacts {
            name: "crm",
            audience: "https://crm.example",
            scopes: vec!["read"],
            attributes: &none,
        }];
        assert!(p.decide(&facts_for(&caps, None, &none, 9), &plain).allowed);
        let d = p.decide(&facts_for(&caps, None, &none, 10), &plain);
        assert_eq!(d.determining_policies, vec!["stop-after-many-denials"]);
    }

    #[test]
    fn delegation_depth_is_capped_by_the_example_pack() {
        let p = examples();
        let none = BTreeMap::new();
        let tools = [ToolFacts {
            name: "tickets",
            audience: "https://tickets.example",
            scopes: vec!["read"],
            attributes: &none,
        }];
        let caps = [Capability::parse_short("tickets:read").unwrap()];
        let mut f = facts_for(&caps, None, &none, 0);
        f.action = Action::DelegateTask;
        f.depth = 2;
        assert!(p.decide(&f, &tools).allowed);
        f.depth = 3;
        assert_eq!(
            p.decide(&f, &tools).determining_policies,
            vec!["delegation-depth-2"]
        );
        let write = [Capability::parse_short("tickets:write").unwrap()];
        let mut f = facts_for(&write, Some("user:alice"), &none, 0);
        f.action = Action::DelegateTask;
        f.depth = 1;
        assert!(
            !p.decide(&f, &tools).allowed,
            "sub-agents get read-only work"
        );
    }

    #[test]
    fn p1_p2_conflicts_silence_and_evaluation_errors_all_deny() {
        let none = BTreeMap::new();
        let tools = [ToolFacts {
            name: "tickets",
            audience: "https://tickets.example",
            scopes: vec!["read"],
            attributes: &none,
        }];
        let caps = [Capability::parse_short("tickets:read").unwrap()];
        // permit and forbid both match: deny.
        let both = set(
            "@id(\"p\") permit (principal, action, resource);\n@id(\"f\") forbid (principal, action, resource);",
        );
        let d = both.decide(&facts_for(&caps, None, &none, 0), &tools);
        assert!(!d.allowed);
        assert_eq!(d.determining_policies, vec!["f"]);
        // nothing matches: deny.
        let silent =
            set("@id(\"p\") permit (principal, action, resource) when { context.depth > 5 };");
        assert!(
            !silent
                .decide(&facts_for(&caps, None, &none, 0), &tools)
                .allowed
        );
        // An evaluation error (overflow) in a forbid does not let a permit through.
        let overflow = set("@id(\"p\") permit (principal, action, resource);\n\
             @id(\"f\") forbid (principal, action, resource) when { context.ttl * 9223372036854775807 > 0 };");
        let d = overflow.decide(&facts_for(&caps, None, &none, 0), &tools);
        assert!(!d.allowed, "an evaluation error must deny: {d:?}");
        assert!(!d.errors.is_empty());
    }

    #[test]
    fn policies_see_the_instance_and_the_task_as_entities() {
        let p = set(r#"
            @id("own-instance-read-only-children")
            permit (principal, action == Action::"ExchangeToken", resource)
            when {
              context has instance && context.instance.agent == principal &&
              context.instance.attestation == "join_token" &&
              context has task && context.task.intent like "*tickets*" &&
              context.task has started_at && context.task.started_at > 0 &&
              context.task.capabilities.contains({tool: "tickets", scopes: ["read", "write"]})
            };
            @id("no-children-of-children")
            forbid (principal, action, resource)
            when { context has task && context.task has parent };
        "#);
        let none = BTreeMap::new();
        let tools = [ToolFacts {
            name: "tickets",
            audience: "https://tickets.example",
            scopes: vec!["read", "write"],
            attributes: &none,
        }];
        let held = [Capability::parse_short("tickets:read,write").unwrap()];
        let asked = [Capability::parse_short("tickets:read").unwrap()];
        let mut facts = TaskFacts {
            action: Action::ExchangeToken,
            chain: Vec::new(),
            depth: 0,
            recent_denials: 0,
            exception: false,
            agent: AgentFacts {
                name: "demo-agent",
                spiffe_id: "spiffe://writ.local/agent/demo-agent",
                attestation: "join_token",
                quarantined: false,
                attributes: &none,
            },
            intent: "triage tickets",
            capabilities: &asked,
            on_behalf_of: None,
            ttl_secs: 600,
            attestation: "join_token",
            now: Timestamp::from_secs(1_800_000_000),
            request: None,
            instance: Some("ins_1"),
            task: Some(TaskRef {
                id: "task_1",
                capabilities: &held,
                parent: None,
                started_at: Some(1_799_999_000),
            }),
        };
        let d = p.decide(&facts, &tools);
        assert!(d.allowed, "{d:?}");
        facts.task = facts.task.map(|t| TaskRef {
            parent: Some("task_0"),
            ..t
        });
        let d = p.decide(&facts, &tools);
        assert_eq!(d.determining_policies, vec!["no-children-of-children"]);
        // Without the entities, the permit's conditions do not hold.
        facts.task = None;
        facts.instance = None;
        assert!(!p.decide(&facts, &tools).allowed);
    }
}
