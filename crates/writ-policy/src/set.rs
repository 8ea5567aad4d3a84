//! Policy sets: the `*.cedar` files of a directory, compiled and validated
//! as one against writ's schema and any `*.cedarschema` files beside them,
//! with the entity data of an `entities.json`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use cedar_policy::{Entities, Policy, PolicyId, Schema, SchemaFragment, ValidationMode, Validator};
use miette::Diagnostic;

use crate::SCHEMA_SRC;
use crate::context_reads::ContextReads;

/// A file of a policy set: its name (for ids and error locations) and its
/// text. `*.cedar` holds policies, `*.cedarschema` declares entity types and
/// actions of the user's own (merged with writ's schema), and `entities.json`
/// holds entity data in Cedar's entity JSON format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    pub name: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory {path}: {message}")]
    Read { path: String, message: String },
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    #[error("policy id {id:?} is used twice ({first} and {second})")]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error("built-in schema is invalid: {0}")]
    Schema(String),
}

/// The name of the entity data file of a policy set.
pub const ENTITIES_FILE: &str = "entities.json";
/// Most entities an `entities.json` may hold.
pub const MAX_ENTITIES: usize = 10_000;
/// Largest file of a policy directory read.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// What a file of a policy set is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Policies,
    Schema,
    Entities,
}

impl FileKind {
    /// The kind of a file name, if it is one a policy set holds.
    pub fn of(name: &str) -> Option<Self> {
        if name == ENTITIES_FILE {
            Some(FileKind::Entities)
        } else if name.ends_with(".cedarschema") {
            Some(FileKind::Schema)
        } else if name.ends_with(".cedar") {
            Some(FileKind::Policies)
        } else {
            None
        }
    }
}

/// A compiled, validated policy set and its content version.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub(crate) policies: Arc<cedar_policy::PolicySet>,
    /// The policies that can apply to one (action, tool), so a decision
    /// evaluates only those, not the whole set.
    pub(crate) slices: Arc<Slices>,
    pub(crate) names: Arc<crate::request::Names>,
    pub(crate) schema: Arc<Schema>,
    /// What each policy's annotations oblige, read once at compile time
    /// (looking an annotation up parses its key).
    pub(crate) obligations: Arc<std::collections::HashMap<String, crate::Obligations>>,
    /// The entity data of `entities.json` (validated against the schema).
    pub(crate) entities: Arc<Entities>,
    /// The user's own entity types and actions, as read from their schema.
    pub(crate) vocabulary: Arc<crate::vocabulary::Vocabulary>,
    /// Cedar entities built for earlier decisions (see `entity_cache`).
    pub(crate) entity_cache: Arc<crate::entity_cache::EntityCache>,
    version: String,
    sources: Arc<Vec<PolicySource>>,
}

impl PolicySet {
    /// Reads every `*.cedar` and `*.cedarschema` file of `dir` and its
    /// `entities.json` (not recursive). A copy of writ's own schema is
    /// skipped: it is built in.
    pub fn read_dir(dir: &Path) -> Result<Vec<PolicySource>, PolicyError> {
        let err = |e: std::io::Error| PolicyError::Read {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let path = entry.map_err(err)?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let Some(kind) = FileKind::of(&name) else {
                continue;
            };
            if std::fs::metadata(&path).map_err(err)?.len() > MAX_FILE_BYTES {
                return Err(PolicyError::Invalid {
                    location: name,
                    message: format!("larger than {MAX_FILE_BYTES} bytes"),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(err)?;
            if kind == FileKind::Schema && text == SCHEMA_SRC {
                continue;
            }
            out.push(PolicySource { name, text });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Loads and compiles a directory.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        Self::compile(Self::read_dir(dir)?)
    }

    /// An empty set: every decision denies.
    pub fn empty() -> Result<Self, PolicyError> {
        Self::compile(Vec::new())
    }

    /// Parses, names and strictly validates the sources as one set.
    pub fn compile(mut sources: Vec<PolicySource>) -> Result<Self, PolicyError> {
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        let mut fragments = vec![builtin_fragment()?];
        let mut user_fragments = Vec::new();
        let mut entities_src: Option<&PolicySource> = None;
        for src in &sources {
            match FileKind::of(&src.name) {
                Some(FileKind::Policies) => {}
                Some(FileKind::Schema) => {
                    let (fragment, _warnings) = SchemaFragment::from_cedarschema_str(&src.text)
                        .map_err(|e| located(&src.name, &src.text, &e))?;
                    user_fragments.push((src.name.clone(), fragment.clone()));
                    fragments.push(fragment);
                }
                Some(FileKind::Entities) => entities_src = Some(src),
                None => {
                    return Err(PolicyError::Invalid {
                        location: src.name.clone(),
                        message:
                            "not a policy (*.cedar), schema (*.cedarschema) or entities.json file"
                                .into(),
                    });
                }
            }
        }
        let schema =
            Schema::from_schema_fragments(fragments).map_err(|e| PolicyError::Invalid {
                location: "schema".into(),
                message: diagnostic_text(&e),
            })?;
        let vocabulary = Arc::new(crate::vocabulary::Vocabulary::read(
            &schema,
            user_fragments,
        )?);
        let schema = Arc::new(schema);
        let entities = Arc::new(match entities_src {
            Some(src) => crate::vocabulary::load_entities(&src.text, &schema)?,
            None => Entities::empty(),
        });
        let mut set = cedar_policy::PolicySet::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        for src in sources
            .iter()
            .filter(|s| FileKind::of(&s.name) == Some(FileKind::Policies))
        {
            let parsed = parse_file(src)?;
            for (index, policy) in parsed.into_iter().enumerate() {
                let id = policy
                    .annotation("id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{}#{index}", src.name));
                let origin = format!("{}#{index}", src.name);
                if let Some((_, first)) = seen.iter().find(|(i, _)| *i == id) {
                    return Err(PolicyError::DuplicateId {
                        id,
                        first: first.clone(),
                        second: origin,
                    });
                }
                seen.push((id.clone(), origin));
                set.add(policy.new_id(PolicyId::new(&id)))
                    .map_err(|e| PolicyError::Invalid {
                        location: src.name.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        let result = Validator::new((*schema).clone()).validate(&set, ValidationMode::Strict);
        if let Some(first) = result.validation_errors().next() {
            let name = policy_file(first.policy_id().to_string().as_str(), &seen);
            let text = sources
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.text.as_str())
                .unwrap_or_default();
            return Err(located(&name, text, first));
        }
        let slices = Arc::new(Slices::build(&set)?);
        let names = Arc::new(crate::request::Names::new().map_err(PolicyError::Schema)?);
        let obligations = Arc::new(
            set.policies()
                .map(|p| (p.id().to_string(), crate::decide::obligations_of_policy(p)))
                .collect(),
        );
        Ok(Self {
            slices,
            names,
            obligations,
            policies: Arc::new(set),
            schema,
            entities,
            vocabulary,
            entity_cache: Arc::default(),
            version: version(sources.iter()),
            sources: Arc::new(sources),
        })
    }

    /// The content hash of the set: `sha256:` and 24 hex digits.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn sources(&self) -> &[PolicySource] {
        &self.sources
    }

    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of entities in the set's `entities.json`.
    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    /// The ids of the permits in the set, sorted.
    pub fn permit_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .policies
            .policies()
            .filter(|p| p.effect() == cedar_policy::Effect::Permit)
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Every forbid of the set as `(id, Cedar text)`, sorted by id: what a
    /// narrower set derived from this one keeps.
    pub fn forbids(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .policies
            .policies()
            .filter(|p| p.effect() == cedar_policy::Effect::Forbid)
            .map(|p| (p.id().to_string(), p.to_cedar().unwrap_or_default()))
            .collect();
        out.sort();
        out
    }

    /// The ids of the policies in the set.
    pub fn ids(&self) -> HashSet<String> {
        self.policies
            .policies()
            .map(|p| p.id().to_string())
            .collect()
    }
}

/// Parses one file's policies, in source order.
fn parse_file(src: &PolicySource) -> Result<Vec<Policy>, PolicyError> {
    let parsed: cedar_policy::PolicySet = src
        .text
        .parse()
        .map_err(|e: cedar_policy::ParseErrors| located(&src.name, &src.text, &e))?;
    if parsed.templates().next().is_some() {
        return Err(PolicyError::Invalid {
            location: src.name.clone(),
            message: "policy templates are not supported".into(),
        });
    }
    let mut policies: Vec<Policy> = parsed.policies().cloned().collect();
    // Cedar numbers a file's policies policy0, policy1, ... in order.
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    Ok(policies)
}

fn policy_file(id: &str, seen: &[(String, String)]) -> String {
    seen.iter()
        .find(|(i, _)| i == id)
        .and_then(|(_, origin)| origin.split('#').next())
        .unwrap_or("policies")
        .to_owned()
}

/// An error with `file:line:column` from the diagnostic's first label.
fn located(name: &str, text: &str, e: &(impl Diagnostic + std::fmt::Display)) -> PolicyError {
    let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let location = match offset {
        Some(off) => {
            let before = text.get(..off).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, str::len) + 1;
            format!("{name}:{line}:{col}")
        }
        None => name.to_owned(),
    };
    let mut message = e.to_string();
    if let Some(help) = e.help() {
        message = format!("{message} ({help})");
    }
    PolicyError::Invalid { location, message }
}

fn builtin_fragment() -> Result<SchemaFragment, PolicyError> {
    SchemaFragment::from_cedarschema_str(SCHEMA_SRC)
        .map(|(f, _warnings)| f)
        .map_err(|e| PolicyError::Schema(e.to_string()))
}

/// A diagnostic's message with its help, on one line.
pub(crate) fn diagnostic_text(e: &(impl Diagnostic + std::fmt::Display)) -> String {
    match e.help() {
        Some(help) => format!("{e} ({help})"),
        None => e.to_string(),
    }
}

/// The version a set of sources would have once compiled.
pub fn version_of(sources: &[PolicySource]) -> String {
    let mut sorted: Vec<&PolicySource> = sources.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    version(sorted)
}

fn version<'a>(sources: impl IntoIterator<Item = &'a PolicySource>) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for s in sources {
        ctx.update(s.name.as_bytes());
        ctx.update(&[0]);
        ctx.update(s.text.as_bytes());
        ctx.update(&[0]);
    }
    let hex = writ_core::audit::hex(ctx.finish().as_ref());
    format!("sha256:{}", hex.get(..24).unwrap_or(&hex))
}

/// Policies partitioned by what their scope can match: per action, the
/// policies whose resource is not one named tool (`general`), and per named
/// tool those plus the ones naming it.
#[derive(Debug, Default)]
pub(crate) struct Slices {
    general: std::collections::HashMap<&'static str, Slice>,
    /// By action, then by tool.
    by_tool: std::collections::HashMap<&'static str, std::collections::HashMap<String, Slice>>,
}

/// The policies that can apply to one (action, tool), and what of the
/// context they read.
#[derive(Debug)]
pub(crate) struct Slice {
    pub(crate) policies: cedar_policy::PolicySet,
    pub(crate) reads: ContextReads,
}

const ACTIONS: [&str; 4] = ["StartTask", "ExchangeToken", "DelegateTask", "CallTool"];

impl Slices {
    fn build(set: &cedar_policy::PolicySet) -> Result<Self, PolicyError> {
        use cedar_policy::{ActionConstraint, ResourceConstraint};
        let err = |e: cedar_policy::PolicySetError| PolicyError::Invalid {
            location: "policies".into(),
            message: e.to_string(),
        };
        let mut general = std::collections::HashMap::new();
        let mut by_tool = std::collections::HashMap::new();
        let mut named: Vec<(&'static str, String, Policy)> = Vec::new();
        for action in ACTIONS {
            general.insert(action, cedar_policy::PolicySet::new());
        }
        for policy in set.policies() {
            let applies = |action: &str| match policy.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(uid) => uid.id().unescaped() == action,
                ActionConstraint::In(uids) => uids.iter().any(|u| u.id().unescaped() == action),
            };
            let tool = match policy.resource_constraint() {
                ResourceConstraint::Eq(uid) if uid.type_name().to_string() == "Tool" => {
                    Some(uid.id().unescaped().to_owned())
                }
                _ => None,
            };
            for action in ACTIONS.into_iter().filter(|a| applies(a)) {
                match &tool {
                    Some(t) => named.push((action, t.clone(), policy.clone())),
                    None => {
                        if let Some(g) = general.get_mut(action) {
                            g.add(policy.clone()).map_err(err)?;
                        }
                    }
                }
            }
        }
        for (action, tool, policy) in named {
            let slice = match by_tool.entry((action, tool)) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(general.get(action).cloned().unwrap_or_default())
                }
            };
            slice.add(policy).map_err(err)?;
        }
        // Each policy's reads worked out once (it is in many slices).
        let reads: std::collections::HashMap<&PolicyId, ContextReads> = set
            .policies()
            .map(|p| (p.id(), ContextReads::of(p)))
            .collect();
        let slice = |policies: cedar_policy::PolicySet| Slice {
            reads: ContextReads::union(
                policies
                    .policies()
                    .map(|p| reads.get(p.id()).unwrap_or(&crate::context_reads::ALL)),
            ),
            policies,
        };
        Ok(Slices {
            general: general.into_iter().map(|(k, v)| (k, slice(v))).collect(),
            by_tool: by_tool.into_iter().fold(
                std::collections::HashMap::<_, std::collections::HashMap<_, _>>::new(),
                |mut m, ((action, tool), v)| {
                    m.entry(action).or_default().insert(tool, slice(v));
                    m
                },
            ),
        })
    }

    /// The policies that can apply to `action` on `tool`.
    pub(crate) fn get(&self, action: &str, tool: &str) -> Option<&Slice> {
        self.by_tool
            .get(action)
            .and_then(|tools| tools.get(tool))
            .or_else(|| self.general.get(action))
    }
}
