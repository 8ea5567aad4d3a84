//! The Cedar request for one tool: its context and its entities, built
//! from [`Facts`]. Only [`PolicySet::decide`](crate::PolicySet) asks for
//! them; nothing outside this crate builds a Cedar request.

use std::collections::BTreeMap;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression,
};
use writ_core::Capability;
use writ_core::api::{Agent, Tool};

use std::sync::Arc;

use crate::PolicySet;
use crate::context_reads::ContextReads;
use crate::entity_cache::{Inputs, parties};
use crate::facts::{Action, Facts};

/// Agent attributes every agent has in policy, set or not.
const KNOWN_AGENT_ATTRS: [&str; 3] = ["owner", "environment", "risk_tier"];

impl PolicySet {
    /// The request's context: what `context.*` is for this tool, the
    /// attributes of it that `reads` names.
    pub(crate) fn context(
        &self,
        facts: &Facts<'_>,
        cap: &Capability,
        reads: &ContextReads,
    ) -> Result<Context, String> {
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
        let principal = facts.chain.principal;
        let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(16);
        let mut add =
            |name: &str, value: &mut dyn FnMut() -> Result<RestrictedExpression, String>| {
                if reads.wants(name) {
                    pairs.push((name.to_owned(), value()?));
                }
                Ok::<(), String>(())
            };
        add("scopes", &mut || {
            Ok(strings(&mut cap.scopes.iter().map(|s| s.as_str())))
        })?;
        add("time", &mut || {
            record(vec![
                ("unix", RestrictedExpression::new_long(facts.now.secs())),
                ("hour", RestrictedExpression::new_long(facts.now.hour_utc())),
                (
                    "weekday",
                    RestrictedExpression::new_long(facts.now.weekday_utc()),
                ),
            ])
        })?;
        add("depth", &mut || {
            Ok(RestrictedExpression::new_long(i64::from(facts.depth)))
        })?;
        add("chain", &mut || {
            Ok(RestrictedExpression::new_set(
                facts
                    .chain
                    .earlier
                    .iter()
                    .copied()
                    .chain(std::iter::once(principal))
                    .map(|a| RestrictedExpression::new_entity_uid(agent_uid(a.name.as_str()))),
            ))
        })?;
        add("root_agent", &mut || {
            let root = facts.chain.earlier.first().copied().unwrap_or(principal);
            Ok(RestrictedExpression::new_entity_uid(agent_uid(
                root.name.as_str(),
            )))
        })?;
        add("behaviour", &mut || {
            record(vec![
                (
                    "denials_5m",
                    RestrictedExpression::new_long(i64::from(facts.behaviour.denials_5m)),
                ),
                (
                    "requires_approval",
                    RestrictedExpression::new_bool(facts.behaviour.requires_approval),
                ),
            ])
        })?;
        add("exception", &mut || {
            Ok(RestrictedExpression::new_bool(facts.exception))
        })?;
        add("intent", &mut || {
            Ok(RestrictedExpression::new_string(facts.intent.to_owned()))
        })?;
        add("capabilities", &mut || {
            let mut caps = Vec::with_capacity(facts.capabilities.len());
            for c in facts.capabilities.iter() {
                caps.push(capability_expr(c).map_err(|e| format!("context: {e}"))?);
            }
            Ok(RestrictedExpression::new_set(caps))
        })?;
        add("ttl", &mut || Ok(RestrictedExpression::new_long(facts.ttl)))?;
        add("attestation", &mut || {
            Ok(RestrictedExpression::new_string(
                facts.attestation.to_owned(),
            ))
        })?;
        match (&facts.request, facts.action) {
            // What a gateway saw of the request: CallTool's context has
            // everything the task actions' has, and this.
            (Some(r), Action::CallTool) => add("request", &mut || {
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
                    ("mcp_resource", r.mcp_resource),
                    ("mcp_prompt", r.mcp_prompt),
                    ("arguments", r.arguments),
                ];
                for (k, v) in optional {
                    if let Some(v) = v {
                        req.push((k, RestrictedExpression::new_string(v.to_owned())));
                    }
                }
                record(req)
            })?,
            (None, Action::CallTool) => {
                return Err("a CallTool decision needs the request".into());
            }
            _ => {}
        }
        if let Some(i) = &facts.instance {
            add("instance", &mut || {
                Ok(RestrictedExpression::new_entity_uid(
                    EntityUid::from_type_name_and_id(n.instance.clone(), EntityId::new(i.id)),
                ))
            })?;
        }
        if let Some(t) = facts.task {
            add("task", &mut || {
                Ok(RestrictedExpression::new_entity_uid(
                    EntityUid::from_type_name_and_id(n.task.clone(), EntityId::new(t.id())),
                ))
            })?;
        }
        if let Some(obo) = facts.on_behalf_of {
            add("on_behalf_of", &mut || {
                Ok(RestrictedExpression::new_entity_uid(
                    EntityUid::from_type_name_and_id(n.human.clone(), EntityId::new(obo)),
                ))
            })?;
        }
        Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))
    }

    pub(crate) fn entities(&self, facts: &Facts<'_>, tool: &Tool) -> Result<Arc<Entities>, String> {
        let (agents, humans) = parties(facts);
        let inputs = Inputs {
            agents: &agents,
            principal: facts.chain.principal,
            tool,
            humans: &humans,
            instance: facts.instance,
            task: facts.task,
        };
        self.entity_cache
            .get_or_build(&inputs, || self.build_entities(&inputs))
    }

    /// What [`PolicySet::entities`] keeps: built from `inputs` alone.
    pub(crate) fn build_entities(&self, inputs: &Inputs<'_>) -> Result<Entities, String> {
        let n = &self.names;
        let mut list: Vec<Entity> = Vec::with_capacity(inputs.agents.len() + 4);
        for a in inputs.agents {
            list.push(self.agent_entity(a)?);
        }
        list.push(self.tool_entity(inputs.tool)?);
        for obo in inputs.humans {
            list.push(Entity::new_no_attrs(
                EntityUid::from_type_name_and_id(n.human.clone(), EntityId::new(obo)),
                std::collections::HashSet::new(),
            ));
        }
        if let Some(i) = &inputs.instance {
            let uid = EntityUid::from_type_name_and_id(n.instance.clone(), EntityId::new(i.id));
            let attrs = vec![
                (
                    "agent".to_owned(),
                    RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                        n.agent.clone(),
                        EntityId::new(inputs.principal.name.as_str()),
                    )),
                ),
                (
                    "attestation".to_owned(),
                    RestrictedExpression::new_string(i.attestation.to_owned()),
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
        if let Some(t) = inputs.task {
            list.push(self.task_entity(t)?);
        }
        // Built from typed facts, so no schema pass is needed here; the
        // request above was checked against the schema.
        Entities::from_entities(list, None).map_err(|e| format!("entities: {e}"))
    }

    /// A registered agent as the `Agent` entity: its registration facts as
    /// attributes, its free-form attributes as tags.
    pub(crate) fn agent_entity(&self, a: &Agent) -> Result<Entity, String> {
        let n = &self.names;
        let mut attrs: Vec<(String, RestrictedExpression)> = vec![
            (
                "spiffe_id".into(),
                RestrictedExpression::new_string(a.spiffe_id.clone()),
            ),
            (
                "attestation".into(),
                RestrictedExpression::new_string(a.attestation.kind().to_owned()),
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
        let uid = EntityUid::from_type_name_and_id(n.agent.clone(), EntityId::new(a.name.as_str()));
        Entity::new_with_tags(uid, attrs, [], tags_of(&a.attributes))
            .map_err(|e| format!("entities: {e}"))
    }

    /// A registered tool as the `Tool` entity.
    pub(crate) fn tool_entity(&self, tool: &Tool) -> Result<Entity, String> {
        let n = &self.names;
        let tool_uid =
            EntityUid::from_type_name_and_id(n.tool.clone(), EntityId::new(tool.name.as_str()));
        let tool_attrs = vec![
            (
                "audience".to_owned(),
                RestrictedExpression::new_string(tool.audience.clone()),
            ),
            (
                "scopes".to_owned(),
                RestrictedExpression::new_set(
                    tool.scopes
                        .iter()
                        .map(|s| RestrictedExpression::new_string(s.as_str().to_owned())),
                ),
            ),
        ];
        Entity::new_with_tags(tool_uid, tool_attrs, [], tags_of(&tool.attributes))
            .map_err(|e| format!("entities: {e}"))
    }

    /// The task acted under, as the `Task` entity.
    fn task_entity(&self, t: &crate::facts::TaskView<'_>) -> Result<Entity, String> {
        let n = &self.names;
        let human =
            |obo: &str| EntityUid::from_type_name_and_id(n.human.clone(), EntityId::new(obo));
        let uid = EntityUid::from_type_name_and_id(n.task.clone(), EntityId::new(t.id()));
        let caps = t
            .capabilities
            .iter()
            .map(capability_expr)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("entities: {e}"))?;
        let mut attrs: Vec<(String, RestrictedExpression)> = vec![
            (
                "intent".to_owned(),
                RestrictedExpression::new_string(t.intent.to_string()),
            ),
            (
                "capabilities".to_owned(),
                RestrictedExpression::new_set(caps),
            ),
            (
                "depth".to_owned(),
                RestrictedExpression::new_long(i64::from(t.depth)),
            ),
            (
                "exception".to_owned(),
                RestrictedExpression::new_bool(t.exception),
            ),
            (
                "started_at".to_owned(),
                RestrictedExpression::new_long(t.started_at),
            ),
        ];
        if let Some(h) = t.on_behalf_of.as_deref() {
            attrs.push((
                "on_behalf_of".to_owned(),
                RestrictedExpression::new_entity_uid(human(h)),
            ));
        }
        if let Some(p) = t.parent.as_deref() {
            attrs.push((
                "parent".to_owned(),
                RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                    n.task.clone(),
                    EntityId::new(p),
                )),
            ));
        }
        Entity::new(
            uid,
            attrs.into_iter().collect(),
            std::collections::HashSet::new(),
        )
        .map_err(|e| format!("entities: {e}"))
    }
}

fn tags_of(m: &BTreeMap<String, String>) -> Vec<(String, RestrictedExpression)> {
    m.iter()
        .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())))
        .collect()
}

fn capability_expr(
    c: &Capability,
) -> Result<RestrictedExpression, cedar_policy::ExpressionConstructionError> {
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
}

/// Entity type names and action ids, parsed once per policy set.
#[derive(Debug)]
pub(crate) struct Names {
    pub(crate) agent: EntityTypeName,
    pub(crate) tool: EntityTypeName,
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

    pub(crate) fn action(&self, a: Action) -> &EntityUid {
        match a {
            Action::StartTask => &self.start_task,
            Action::ExchangeToken => &self.exchange_token,
            Action::DelegateTask => &self.delegate_task,
            Action::CallTool => &self.call_tool,
        }
    }
}
