//! The user's own vocabulary: the entity types and actions their
//! `*.cedarschema` files declare beside writ's, and the entity data of
//! `entities.json`. An AuthZEN subject, resource or action of a declared
//! type becomes that Cedar entity or action.

use std::collections::{BTreeMap, BTreeSet};

use cedar_policy::{Entities, EntityTypeName, EntityUid, Schema, SchemaFragment};
use serde_json::Value;

use crate::set::{MAX_ENTITIES, PolicyError, diagnostic_text};

/// Entity types writ itself declares: an AuthZEN request names them as
/// `agent`, `instance` and `tool` (found in writ's store), never directly.
pub const WRIT_TYPES: [&str; 5] = ["Agent", "Instance", "Task", "Tool", "Human"];

/// The user's entity types (with the attributes each declares) and actions.
#[derive(Debug, Default)]
pub(crate) struct Vocabulary {
    /// Full type name → declared attribute names (`None`: a shape writ does
    /// not read, so every property is passed on for Cedar to check).
    types: BTreeMap<String, Option<BTreeSet<String>>>,
    /// Action id → its Cedar uid and whether it declares a context.
    actions: BTreeMap<String, UserAction>,
}

#[derive(Debug, Clone)]
pub(crate) struct UserAction {
    pub(crate) uid: EntityUid,
    pub(crate) has_context: bool,
}

impl Vocabulary {
    /// Reads the declarations of the user's fragments, already merged into
    /// `schema` (which resolves the action uids).
    pub(crate) fn read(
        schema: &Schema,
        fragments: Vec<(String, SchemaFragment)>,
    ) -> Result<Self, PolicyError> {
        let mut v = Vocabulary::default();
        for (file, fragment) in fragments {
            let json = fragment.to_json_value().map_err(|e| PolicyError::Invalid {
                location: file.clone(),
                message: diagnostic_text(&e),
            })?;
            let Some(namespaces) = json.as_object() else {
                continue;
            };
            for (ns, body) in namespaces {
                let full = |name: &str| {
                    if ns.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{ns}::{name}")
                    }
                };
                if let Some(types) = body.get("entityTypes").and_then(Value::as_object) {
                    for (name, decl) in types {
                        let attrs = decl
                            .get("shape")
                            .filter(|s| s.get("type").and_then(Value::as_str) == Some("Record"))
                            .map(|s| {
                                s.get("attributes")
                                    .and_then(Value::as_object)
                                    .map(|a| a.keys().cloned().collect())
                                    .unwrap_or_default()
                            });
                        // No shape at all: no attributes.
                        let attrs = match (decl.get("shape"), attrs) {
                            (None, _) => Some(BTreeSet::new()),
                            (Some(_), a) => a,
                        };
                        v.types.insert(full(name), attrs);
                    }
                }
                if let Some(actions) = body.get("actions").and_then(Value::as_object) {
                    for (id, decl) in actions {
                        let has_context = decl
                            .get("appliesTo")
                            .and_then(|a| a.get("context"))
                            .is_some_and(|c| {
                                c.get("type").and_then(Value::as_str) != Some("Record")
                                    || c.get("attributes")
                                        .and_then(Value::as_object)
                                        .is_some_and(|a| !a.is_empty())
                            });
                        let ty = full("Action");
                        let Some(uid) = schema
                            .actions()
                            .find(|u| u.type_name().to_string() == ty && u.id().unescaped() == id)
                        else {
                            continue;
                        };
                        // An id declared in two namespaces: the first (the
                        // empty namespace sorts first) answers to the name.
                        v.actions.entry(id.clone()).or_insert(UserAction {
                            uid: uid.clone(),
                            has_context,
                        });
                    }
                }
            }
        }
        Ok(v)
    }

    /// The user's action of this name.
    pub(crate) fn action(&self, name: &str) -> Option<&UserAction> {
        self.actions.get(name)
    }

    /// Whether the user declared this entity type.
    pub(crate) fn declares(&self, type_: &str) -> bool {
        self.types.contains_key(type_)
    }

    /// The attributes a declared type has (`None`: not read, pass all).
    pub(crate) fn attributes(&self, type_: &str) -> Option<&BTreeSet<String>> {
        self.types.get(type_).and_then(Option::as_ref)
    }

    /// Every action the user declared, by id.
    pub(crate) fn action_names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }
}

/// `entities.json`, validated against the merged schema. Writ's own types
/// are refused: agents and tools come from writ's store, not from a file.
pub(crate) fn load_entities(text: &str, schema: &Schema) -> Result<Entities, PolicyError> {
    let err = |message: String| PolicyError::Invalid {
        location: crate::set::ENTITIES_FILE.into(),
        message,
    };
    let json: Value =
        serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let count = json
        .as_array()
        .ok_or_else(|| err("must be a JSON array of entities".into()))?
        .len();
    if count > MAX_ENTITIES {
        return Err(err(format!("at most {MAX_ENTITIES} entities")));
    }
    let entities =
        Entities::from_json_value(json, Some(schema)).map_err(|e| err(diagnostic_text(&e)))?;
    for e in entities.iter() {
        let ty = e.uid().type_name().to_string();
        if WRIT_TYPES.contains(&ty.as_str()) {
            return Err(err(format!(
                "{} is writ's own type: its entities come from writ's store",
                e.uid()
            )));
        }
    }
    Ok(entities)
}

/// The type name of an AuthZEN `type`, if it is a valid Cedar type name.
pub(crate) fn type_name(type_: &str) -> Option<EntityTypeName> {
    type_.parse().ok()
}
