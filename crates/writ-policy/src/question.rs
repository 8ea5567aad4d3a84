//! General AuthZEN questions: any subject, action and resource of the
//! user's own vocabulary (or writ's agents and tools), with `properties` as
//! attributes and a free-form context. Like [`crate::Facts`], a
//! [`Question`] is the only way in: nothing else assembles the Cedar
//! request, the entities or the context of one.

use cedar_policy::{Authorizer, Context, Entities, Entity, EntityId, EntityUid, Request};
use serde_json::{Map, Value};
use writ_core::api::{Agent, Tool};

use crate::vocabulary::{WRIT_TYPES, type_name};
use crate::{Decision, PolicySet};

/// One side of a question: an agent or a tool from writ's store, or an
/// entity of a type the user declared.
#[derive(Clone, Copy, Debug)]
pub enum Party<'a> {
    Agent(&'a Agent),
    Tool(&'a Tool),
    Entity {
        type_: &'a str,
        id: &'a str,
        /// AuthZEN `properties`: attributes of the entity, typed by the schema.
        properties: &'a Value,
    },
}

/// A question in the user's vocabulary.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    subject: Party<'a>,
    action: &'a str,
    resource: Party<'a>,
    context: &'a Value,
}

/// The request does not fit the schema: its properties or context have the
/// wrong shape. (Unknown types and actions are denials, not errors.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuestionError(pub String);

impl<'a> Question<'a> {
    pub fn new(
        subject: Party<'a>,
        action: &'a str,
        resource: Party<'a>,
        context: &'a Value,
    ) -> Self {
        Self {
            subject,
            action,
            resource,
            context,
        }
    }
}

/// A party as Cedar sees it: its uid and, when there is one, its entity.
struct Built {
    uid: EntityUid,
    entity: Option<Entity>,
}

impl PolicySet {
    /// Whether `name` is an action of the user's own schema.
    pub fn is_user_action(&self, name: &str) -> bool {
        self.vocabulary.action(name).is_some()
    }

    /// Whether the user's schema declares this entity type.
    pub fn declares_type(&self, type_: &str) -> bool {
        self.vocabulary.declares(type_)
    }

    /// The ids of the entities of one type in `entities.json`, sorted.
    pub fn entity_ids(&self, type_: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .entities
            .iter()
            .map(Entity::uid)
            .filter(|u| u.type_name().to_string() == type_)
            .map(|u| u.id().unescaped().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The user's actions whose `appliesTo` allows this principal and
    /// resource type (Cedar type names), sorted.
    pub fn actions_between(&self, principal_type: &str, resource_type: &str) -> Vec<String> {
        let (Some(p), Some(r)) = (type_name(principal_type), type_name(resource_type)) else {
            return Vec::new();
        };
        let applies: Vec<EntityUid> = self
            .schema
            .actions_for_principal_and_resource(&p, &r)
            .cloned()
            .collect();
        let mut out: Vec<String> = self
            .vocabulary
            .action_names()
            .filter(|name| {
                self.vocabulary
                    .action(name)
                    .is_some_and(|a| applies.contains(&a.uid))
            })
            .map(str::to_owned)
            .collect();
        out.sort();
        out
    }

    /// Decides a question: one Cedar request over the whole set, with the
    /// stored entities and the two parties. A permit annotated
    /// `@approval("required")` holds it, as everywhere.
    pub fn decide_question(&self, q: &Question<'_>) -> Result<Decision, QuestionError> {
        let version = self.version();
        let Some(action) = self.vocabulary.action(q.action) else {
            return Ok(Decision::unanswerable(
                version,
                format!("unknown action {:?}", q.action),
            ));
        };
        let subject = match self.party(&q.subject, "subject")? {
            Ok(b) => b,
            Err(why) => return Ok(Decision::unanswerable(version, why)),
        };
        let resource = match self.party(&q.resource, "resource")? {
            Ok(b) => b,
            Err(why) => return Ok(Decision::unanswerable(version, why)),
        };
        let applies = |types: Option<Vec<String>>, uid: &EntityUid| {
            types.is_some_and(|t| t.contains(&uid.type_name().to_string()))
        };
        let principals = self
            .schema
            .principals_for_action(&action.uid)
            .map(|i| i.map(ToString::to_string).collect());
        let resources = self
            .schema
            .resources_for_action(&action.uid)
            .map(|i| i.map(ToString::to_string).collect());
        if !applies(principals, &subject.uid) || !applies(resources, &resource.uid) {
            return Ok(Decision::unanswerable(
                version,
                format!(
                    "action {:?} does not apply to a {} subject and a {} resource",
                    q.action,
                    subject.uid.type_name(),
                    resource.uid.type_name()
                ),
            ));
        }
        let context = match q.context {
            Value::Null => Value::Object(Map::new()),
            Value::Object(_) => q.context.clone(),
            _ => return Err(QuestionError("context must be a JSON object".into())),
        };
        // A declared context is typed and checked; an undeclared one is
        // passed as it is (strictly validated policies cannot read it).
        let schema = action.has_context.then_some(&*self.schema);
        let context = Context::from_json_value(context, schema.map(|s| (s, &action.uid)))
            .map_err(|e| QuestionError(format!("context: {}", crate::set::diagnostic_text(&e))))?;
        let request = Request::new(
            subject.uid.clone(),
            action.uid.clone(),
            resource.uid.clone(),
            context,
            schema,
        )
        .map_err(|e| QuestionError(format!("request: {}", crate::set::diagnostic_text(&e))))?;
        let parties: Vec<Entity> = [subject.entity, resource.entity]
            .into_iter()
            .flatten()
            .collect();
        let entities: Entities = if parties.is_empty() {
            (*self.entities).clone()
        } else {
            (*self.entities)
                .clone()
                .upsert_entities(parties, Some(&self.schema))
                .map_err(|e| QuestionError(crate::set::diagnostic_text(&e)))?
        };
        let response = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        let (determining, errors) = crate::decide::reasons(&response);
        Ok(Decision::of_answer(
            self,
            response.decision() == cedar_policy::Decision::Allow,
            determining,
            errors,
        ))
    }

    /// A party's uid and entity; `Ok(Err(why))` for a type policy does not know.
    fn party(&self, p: &Party<'_>, role: &str) -> Result<Result<Built, String>, QuestionError> {
        let (type_, id, properties) = match p {
            Party::Agent(a) => {
                let entity = self.agent_entity(a).map_err(QuestionError)?;
                return Ok(Ok(Built {
                    uid: entity.uid(),
                    entity: Some(entity),
                }));
            }
            Party::Tool(t) => {
                let entity = self.tool_entity(t).map_err(QuestionError)?;
                return Ok(Ok(Built {
                    uid: entity.uid(),
                    entity: Some(entity),
                }));
            }
            Party::Entity {
                type_,
                id,
                properties,
            } => (*type_, *id, *properties),
        };
        if WRIT_TYPES.contains(&type_) || !self.vocabulary.declares(type_) {
            return Ok(Err(format!("unknown {role} type {type_:?}")));
        }
        let Some(ty) = type_name(type_) else {
            return Ok(Err(format!("unknown {role} type {type_:?}")));
        };
        let uid = EntityUid::from_type_name_and_id(ty, EntityId::new(id));
        let given: Map<String, Value> = match properties {
            Value::Null => Map::new(),
            Value::Object(m) => match self.vocabulary.attributes(type_) {
                // Properties the type does not declare are ignored.
                Some(declared) => m
                    .iter()
                    .filter(|(k, _)| declared.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                None => m.clone(),
            },
            _ => {
                return Err(QuestionError(format!(
                    "{role}.properties must be a JSON object"
                )));
            }
        };
        let stored = self.entities.get(&uid);
        if stored.is_none() && given.is_empty() {
            return Ok(Ok(Built { uid, entity: None }));
        }
        // What writ knows wins: a property only adds an attribute the
        // stored entity does not have; parents come from the store alone.
        let (mut attrs, parents) = match stored {
            Some(e) => {
                let json = e
                    .to_json_value()
                    .map_err(|e| QuestionError(crate::set::diagnostic_text(&e)))?;
                let attrs = json
                    .get("attrs")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let parents = json.get("parents").cloned().unwrap_or(Value::Array(vec![]));
                (attrs, parents)
            }
            None => (Map::new(), Value::Array(vec![])),
        };
        for (k, v) in given {
            attrs.entry(k).or_insert(v);
        }
        let json = serde_json::json!({
            "uid": {"type": type_, "id": id},
            "attrs": attrs,
            "parents": parents,
        });
        let entity = Entity::from_json_value(json, Some(&self.schema)).map_err(|e| {
            QuestionError(format!(
                "{role}.properties: {}",
                crate::set::diagnostic_text(&e)
            ))
        })?;
        Ok(Ok(Built {
            uid,
            entity: Some(entity),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::Verdict;

    fn authzen_examples() -> PolicySet {
        PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/authzen"))
            .unwrap()
    }

    fn entity<'a>(v: &'a Value) -> Party<'a> {
        Party::Entity {
            type_: v["type"].as_str().unwrap(),
            id: v["id"].as_str().unwrap(),
            properties: &v["properties"],
        }
    }

    fn ask(p: &PolicySet, request: &Value) -> Result<Decision, QuestionError> {
        p.decide_question(&Question::new(
            entity(&request["subject"]),
            request["action"]["name"].as_str().unwrap(),
            entity(&request["resource"]),
            &request["context"],
        ))
    }

    /// The interop vectors, decided in-process (the e2e and pytest send
    /// them over HTTP to the real binary).
    #[test]
    fn the_interop_vectors_decide_as_published() {
        let p = authzen_examples();
        for file in [
            "todo-1.0-implementers-draft.json",
            "api-gateway-decisions.json",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../interop/authzen-vectors")
                .join(file);
            let vectors: Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            for v in vectors["evaluation"].as_array().unwrap() {
                let d = ask(&p, &v["request"]).unwrap();
                let got = d.verdict() == Verdict::Allow;
                assert_eq!(
                    got,
                    v["expected"].as_bool().unwrap(),
                    "{file}: {v} -> {d:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_types_and_actions_are_denials_that_say_why() {
        let p = authzen_examples();
        let d = ask(
            &p,
            &json!({"subject": {"type": "nobody", "id": "x"}, "action": {"name": "can_read_user"},
                    "resource": {"type": "user", "id": "y"}}),
        )
        .unwrap();
        assert_eq!(d.verdict(), Verdict::Deny);
        assert_eq!(d.reason(), "denied: unknown subject type \"nobody\"");
        let d = ask(
            &p,
            &json!({"subject": {"type": "user", "id": "x"}, "action": {"name": "fly"},
                    "resource": {"type": "user", "id": "y"}}),
        )
        .unwrap();
        assert_eq!(d.reason(), "denied: unknown action \"fly\"");
        // writ's own types are not reachable by name.
        let d = ask(
            &p,
            &json!({"subject": {"type": "Agent", "id": "x"}, "action": {"name": "can_read_user"},
                    "resource": {"type": "user", "id": "y"}}),
        )
        .unwrap();
        assert_eq!(d.verdict(), Verdict::Deny);
        // An action that does not apply to these types.
        let d = ask(
            &p,
            &json!({"subject": {"type": "identity", "id": "x"}, "action": {"name": "can_read_user"},
                    "resource": {"type": "user", "id": "y"}}),
        )
        .unwrap();
        assert!(d.reason().contains("does not apply"), "{}", d.reason());
    }

    #[test]
    fn properties_are_typed_by_the_schema_and_the_store_wins() {
        let p = authzen_examples();
        let morty = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
        // A property of the wrong type is an input error.
        let e = ask(
            &p,
            &json!({"subject": {"type": "user", "id": morty}, "action": {"name": "can_update_todo"},
                    "resource": {"type": "todo", "id": "t", "properties": {"ownerID": 5}}}),
        )
        .unwrap_err();
        assert!(e.0.contains("resource.properties"), "{e}");
        // An undeclared property is ignored.
        let d = ask(
            &p,
            &json!({"subject": {"type": "user", "id": morty, "properties": {"mood": "fine"}},
                    "action": {"name": "can_update_todo"},
                    "resource": {"type": "todo", "id": "t", "properties": {"ownerID": "morty@the-citadel.com"}}}),
        )
        .unwrap();
        assert_eq!(d.verdict(), Verdict::Allow);
        // A subject cannot claim another email than the one writ knows.
        let d = ask(
            &p,
            &json!({"subject": {"type": "user", "id": morty, "properties": {"email": "rick@the-citadel.com"}},
                    "action": {"name": "can_update_todo"},
                    "resource": {"type": "todo", "id": "t", "properties": {"ownerID": "rick@the-citadel.com"}}}),
        )
        .unwrap();
        assert_eq!(d.verdict(), Verdict::Deny);
        // Context must be an object.
        assert!(
            ask(
                &p,
                &json!({"subject": {"type": "user", "id": morty}, "action": {"name": "can_read_todos"},
                        "resource": {"type": "todo", "id": "t"}, "context": [1]}),
            )
            .is_err()
        );
    }

    fn with_schema(
        schema: &str,
        policies: &str,
        entities: Option<&str>,
    ) -> Result<PolicySet, crate::PolicyError> {
        let mut sources = vec![
            crate::PolicySource {
                name: "app.cedarschema".into(),
                text: schema.into(),
            },
            crate::PolicySource {
                name: "app.cedar".into(),
                text: policies.into(),
            },
        ];
        if let Some(e) = entities {
            sources.push(crate::PolicySource {
                name: crate::ENTITIES_FILE.into(),
                text: e.into(),
            });
        }
        PolicySet::compile(sources)
    }

    #[test]
    fn a_declared_context_is_checked_and_agents_can_be_subjects() {
        let p = with_schema(
            "entity Doc = { level: Long }; action read appliesTo { principal: [Agent], resource: [Doc], context: { clearance: Long } };",
            "@id(\"cleared\") permit (principal, action == Action::\"read\", resource) when { context.clearance >= resource.level && principal.hasTag(\"team\") };",
            None,
        )
        .unwrap();
        let agent = Agent {
            name: "demo".parse().unwrap(),
            spiffe_id: "spiffe://x/demo".into(),
            attestation: writ_core::api::Attestation::JoinToken,
            attributes: [("team".to_owned(), "payments".to_owned())].into(),
            workload: None,
            quarantined: false,
            created_at: writ_core::Timestamp::from_secs(0),
        };
        let props = json!({"level": 2});
        let doc = Party::Entity {
            type_: "Doc",
            id: "d",
            properties: &props,
        };
        let q =
            |ctx: &Value| p.decide_question(&Question::new(Party::Agent(&agent), "read", doc, ctx));
        assert_eq!(
            q(&json!({"clearance": 3})).unwrap().verdict(),
            Verdict::Allow
        );
        assert_eq!(
            q(&json!({"clearance": 1})).unwrap().verdict(),
            Verdict::Deny
        );
        assert!(q(&json!({"clearance": "high"})).is_err());
        assert!(q(&json!({})).is_err());
    }

    #[test]
    fn entities_json_is_validated_and_writ_types_are_refused() {
        let schema = "entity User = { age: Long }; action look appliesTo { principal: [User], resource: [User] };";
        let policy = "permit (principal, action, resource);";
        assert!(
            with_schema(
                schema,
                policy,
                Some(r#"[{"uid":{"type":"User","id":"a"},"attrs":{"age":3},"parents":[]}]"#)
            )
            .is_ok()
        );
        let bad = with_schema(
            schema,
            policy,
            Some(r#"[{"uid":{"type":"User","id":"a"},"attrs":{"age":"old"},"parents":[]}]"#),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.starts_with("entities.json"), "{bad}");
        let agent = with_schema(
            schema,
            policy,
            Some(r#"[{"uid":{"type":"Agent","id":"a"},"attrs":{"spiffe_id":"s","attestation":"oidc","quarantined":false},"parents":[]}]"#),
        )
        .unwrap_err()
        .to_string();
        assert!(agent.contains("writ's own type"), "{agent}");
        // A schema that redeclares writ's types is refused.
        assert!(with_schema("entity Agent;", policy, None).is_err());
    }
}
