//! Policy test cases: a request and the decision it must get, in TOML or
//! JSON, for `writ policy test` and `writ policy explain`, and for the
//! broker, which runs its policy directory's `tests.toml` against the live
//! and shadow sets whenever either changes.
//!
//! ```toml
//! policy_dir = "."                 # relative to this file
//!
//! [[case]]
//! name = "read-only work is allowed"
//! agent = { name = "demo-agent", attributes = { risk_tier = "low" } }
//! tool = { name = "tickets", scopes = ["read", "write"] }
//! scopes = ["read"]
//! expect = "allow"
//! expect_policies = ["read-only"]
//! ```
//!
//! A case's facts are built by the same constructors the broker and the
//! gateway use ([`Facts`]), from the store records the case describes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use writ_core::api::{Agent, Attestation, Task, TaskStatus, Tool};
use writ_core::{Capability, Timestamp};

use crate::{
    Action, Behaviour, CallRequest, Chain, Decision, Facts, InstanceFacts, PolicySet, TaskAsk,
    TaskView,
};

/// The name of the test cases file in a policy directory.
pub const TESTS_FILE: &str = "tests.toml";
/// Largest case file read.
pub const MAX_CASES_BYTES: u64 = 4 * 1024 * 1024;

/// Why test cases could not be read or a case not be run.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("parsing {path}: {message}")]
    Parse { path: String, message: String },
    #[error("case {case:?}: {what}")]
    Case { case: String, what: String },
}

fn bad(case: &str, what: impl Into<String>) -> CaseError {
    CaseError::Case {
        case: case.to_owned(),
        what: what.into(),
    }
}

/// One of the fixed ids a case's records use.
fn fixed<T: std::str::FromStr>(case: &str, id: &str) -> Result<T, CaseError>
where
    T::Err: std::fmt::Display,
{
    id.parse()
        .map_err(|e| bad(case, format!("the test record id {id:?}: {e}")))
}

/// Tuesday 2026-11-24 12:00 UTC, business hours: the default `now`.
const DEFAULT_NOW: i64 = 1_795_780_800;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub policy_dir: Option<PathBuf>,
    #[serde(rename = "case", alias = "cases", default)]
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub name: String,
    #[serde(default = "join_token")]
    pub attestation: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub quarantined: bool,
}

fn join_token() -> String {
    "join_token".into()
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    pub name: String,
    pub audience: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default = "start_task")]
    pub action: String,
    pub agent: AgentSpec,
    pub tool: ToolSpec,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub intent: String,
    pub on_behalf_of: Option<String>,
    #[serde(default = "default_ttl")]
    pub ttl: i64,
    #[serde(default)]
    pub depth: u32,
    /// Earlier agents in the delegation chain, root first.
    #[serde(default)]
    pub chain: Vec<AgentSpec>,
    #[serde(default)]
    pub denials_5m: u32,
    /// `context.behaviour.requires_approval`: a rule holds the agent's tasks.
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default)]
    pub exception: bool,
    /// Unix seconds (UTC).
    pub now: Option<i64>,
    /// For `CallTool`: the request through the gateway.
    pub request: Option<RequestSpec>,
    /// "allow", "deny" or "needs_approval"; optional for `explain`.
    pub expect: Option<String>,
    pub expect_policies: Option<Vec<String>>,
}

/// What a gateway saw of a request (`CallTool` cases).
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default = "get")]
    pub method: String,
    #[serde(default = "root")]
    pub path: String,
    #[serde(default)]
    pub query: String,
    pub mcp_method: Option<String>,
    pub mcp_tool: Option<String>,
    pub mcp_resource: Option<String>,
    pub mcp_prompt: Option<String>,
    /// MCP arguments, as a JSON value (compacted as the gateway does).
    pub arguments: Option<serde_json::Value>,
}

fn get() -> String {
    "GET".into()
}

fn root() -> String {
    "/".into()
}

fn start_task() -> String {
    "StartTask".into()
}

fn default_ttl() -> i64 {
    600
}

impl CaseFile {
    /// Parses case file text; `name` says which file (JSON when it ends
    /// in `.json`, else TOML) in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, CaseError> {
        let parsed = if Path::new(name).extension().and_then(|e| e.to_str()) == Some("json") {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string())
        };
        parsed.map_err(|message| CaseError::Parse {
            path: name.to_owned(),
            message,
        })
    }

    /// Reads and parses a case file.
    pub fn read(file: &Path) -> Result<Self, CaseError> {
        let path = file.display().to_string();
        let read = |e: std::io::Error| CaseError::Read {
            path: path.clone(),
            message: e.to_string(),
        };
        let len = std::fs::metadata(file).map_err(read)?.len();
        if len > MAX_CASES_BYTES {
            return Err(CaseError::Read {
                path: path.clone(),
                message: format!("larger than {MAX_CASES_BYTES} bytes"),
            });
        }
        let text = std::fs::read_to_string(file).map_err(read)?;
        Self::parse(&path, &text)
    }

    /// The policy directory the file names, relative to the file.
    pub fn policy_dir_of(&self, file: &Path) -> Option<PathBuf> {
        let base = file.parent().unwrap_or(Path::new("."));
        self.policy_dir.as_ref().map(|d| base.join(d))
    }

    /// Runs every case against `set`.
    pub fn run(&self, set: &PolicySet) -> SetResults {
        let cases: Vec<CaseResult> = self.cases.iter().map(|c| c.run(set)).collect();
        let failed = cases.iter().filter(|c| !c.passed).count();
        SetResults {
            version: set.version().to_owned(),
            passed: cases.len() - failed,
            failed,
            cases,
        }
    }
}

/// What one case got from a set, and what was wrong with it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    /// The verdict the set reached (`None`: the case could not be run).
    pub verdict: Option<String>,
    pub reason: Option<String>,
    /// What did not match, one line each (empty when it passed).
    pub failures: Vec<String>,
}

/// The cases of a file run against one policy set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SetResults {
    pub version: String,
    pub passed: usize,
    pub failed: usize,
    pub cases: Vec<CaseResult>,
}

impl Case {
    /// What does not match between this case's expectations and `d`, one
    /// line each: the expected and actual verdict (with the reason), the
    /// expected and actual determining policies.
    pub fn mismatches(&self, d: &Decision) -> Vec<String> {
        let got = d.verdict().as_str();
        let mut problems = Vec::new();
        match self.expect.as_deref() {
            Some(e) if e == got => {}
            Some(e) => {
                problems.push(format!("expected: {e}"));
                problems.push(format!("actual:   {got} ({})", d.reason()));
            }
            None => problems.push("no `expect` given".to_owned()),
        }
        if let Some(want) = &self.expect_policies {
            let mut w = want.clone();
            let mut g = d.determining_policies().to_vec();
            w.sort();
            g.sort();
            if w != g {
                problems.push(format!("expected policies: {w:?}"));
                problems.push(format!("actual policies:   {g:?}"));
            }
        }
        problems
    }

    /// Decides this case with `set`; a case that cannot be built fails
    /// with why.
    pub fn run(&self, set: &PolicySet) -> CaseResult {
        match with_facts(self, |f| set.decide(f)) {
            Ok(d) => {
                let failures = self.mismatches(&d);
                CaseResult {
                    name: self.name.clone(),
                    passed: failures.is_empty(),
                    verdict: Some(d.verdict().as_str().to_owned()),
                    reason: Some(d.reason()),
                    failures,
                }
            }
            Err(e) => CaseResult {
                name: self.name.clone(),
                passed: false,
                verdict: None,
                reason: None,
                failures: vec![e.to_string()],
            },
        }
    }
}

/// The store's records a case describes, from which its facts are built
/// by the same constructors the broker and the gateway use.
struct Records {
    action: Action,
    agent: Agent,
    chain: Vec<Agent>,
    tool: Tool,
    cap: Capability,
    /// The task the request is made under (every action but `StartTask`).
    task: Task,
    request: Option<RequestSpec>,
    arguments: Option<String>,
    now: Timestamp,
}

fn agent_of(case: &str, a: &AgentSpec) -> Result<Agent, CaseError> {
    Ok(Agent {
        name: a
            .name
            .parse()
            .map_err(|e| bad(case, format!("agent name {:?}: {e}", a.name)))?,
        spiffe_id: format!("spiffe://writ.local/agent/{}", a.name),
        attestation: match a.attestation.as_str() {
            "join_token" => Attestation::JoinToken,
            "spiffe" | "spiffe_x509" => Attestation::Spiffe { spiffe_id: None },
            "oidc" => Attestation::Oidc {
                issuer: String::new(),
                jwks_uri: None,
                jwks: None,
                audience: String::new(),
                subject: String::new(),
                algorithms: Vec::new(),
            },
            other => {
                return Err(bad(
                    case,
                    format!("attestation {other:?} is not join_token, oidc, spiffe or spiffe_x509"),
                ));
            }
        },
        attributes: a.attributes.clone(),
        workload: None,
        quarantined: a.quarantined,
        created_at: Timestamp::from_secs(0),
    })
}

fn records(case: &Case) -> Result<Records, CaseError> {
    let Some(action) = Action::from_cedar_id(&case.action) else {
        return Err(bad(&case.name, format!("unknown action {:?}", case.action)));
    };
    let cap = Capability::parse_short(&format!("{}:{}", case.tool.name, case.scopes.join(",")))
        .map_err(|e| bad(&case.name, format!("tool and scopes: {e}")))?;
    let request = match (&case.request, action) {
        (Some(r), Action::CallTool) => Some(r.clone()),
        (None, Action::CallTool) => Some(RequestSpec {
            method: get(),
            path: root(),
            ..RequestSpec::default()
        }),
        (Some(_), _) => return Err(bad(&case.name, "`request` is for CallTool cases")),
        (None, _) => None,
    };
    let arguments = request
        .as_ref()
        .and_then(|r| r.arguments.as_ref())
        .map(serde_json::Value::to_string);
    let tool = Tool {
        name: case
            .tool
            .name
            .parse()
            .map_err(|e| bad(&case.name, format!("tool name: {e}")))?,
        audience: case
            .tool
            .audience
            .clone()
            .unwrap_or_else(|| format!("https://{}.example", case.tool.name)),
        scopes: case
            .tool
            .scopes
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&case.name, format!("tool scopes: {e}")))?,
        attributes: case.tool.attributes.clone(),
        upstream: None,
        secret_header: None,
        gateway: None,
        created_at: Timestamp::from_secs(0),
    };
    let now = Timestamp::from_secs(case.now.unwrap_or(DEFAULT_NOW));
    // The task the case runs under: it holds what the case asks for, for
    // the case's human, and has `ttl` seconds left. A delegation's depth
    // is the new task's, so the parent is one hop shallower.
    let depth = match action {
        Action::DelegateTask => case.depth.saturating_sub(1),
        _ => case.depth,
    };
    let task = Task {
        task_id: fixed(&case.name, "task_policytestcase00000000")?,
        agent: fixed(&case.name, "policy-test")?,
        instance_id: fixed(&case.name, "ins_policytestcase00000000")?,
        intent: case.intent.clone(),
        capabilities: vec![cap.clone()],
        on_behalf_of: case.on_behalf_of.clone(),
        status: TaskStatus::Active,
        created_at: now,
        lease_expires_at: now.add_secs(case.ttl),
        expires_at: now.add_secs(case.ttl),
        ended_at: None,
        end_reason: None,
        policy_version: String::new(),
        parent_task_id: None,
        depth,
        exception: case.exception,
    };
    Ok(Records {
        action,
        agent: agent_of(&case.name, &case.agent)?,
        chain: case
            .chain
            .iter()
            .map(|a| agent_of(&case.name, a))
            .collect::<Result<_, _>>()?,
        tool,
        cap,
        task,
        request,
        arguments,
        now,
    })
}

/// Runs `f` with the policy facts of a case.
pub fn with_facts<T>(case: &Case, f: impl FnOnce(&Facts<'_>) -> T) -> Result<T, CaseError> {
    let r = records(case)?;
    let behaviour = Behaviour {
        denials_5m: case.denials_5m,
        requires_approval: case.requires_approval,
    };
    let view = TaskView::of_task(&r.task, &case.agent.attestation);
    let chain = Chain::new(&r.agent, r.chain.iter());
    let caps = [r.cap.clone()];
    let facts = match r.action {
        Action::StartTask => {
            let ask = TaskAsk {
                intent: &case.intent,
                capabilities: &caps,
                on_behalf_of: case.on_behalf_of.as_deref(),
                ttl: case.ttl,
                exception: case.exception,
            };
            let instance = InstanceFacts {
                id: r.task.instance_id.as_str(),
                attestation: &case.agent.attestation,
            };
            Facts::start_task(&r.agent, instance, &ask, vec![&r.tool], behaviour, r.now)
        }
        Action::ExchangeToken => {
            Facts::exchange_token(chain, &view, r.cap.clone(), &r.tool, behaviour, r.now)
        }
        Action::DelegateTask => Facts::delegate_task(
            chain,
            &case.agent.attestation,
            &view,
            caps.to_vec(),
            vec![&r.tool],
            behaviour,
            r.now,
        ),
        Action::CallTool => {
            let req = r.request.as_ref().map(|q| CallRequest {
                method: &q.method,
                path: &q.path,
                query: &q.query,
                mcp_method: q.mcp_method.as_deref(),
                mcp_tool: q.mcp_tool.as_deref(),
                mcp_resource: q.mcp_resource.as_deref(),
                mcp_prompt: q.mcp_prompt.as_deref(),
                arguments: r.arguments.as_deref(),
            });
            let Some(req) = req else {
                return Err(bad(&case.name, "a CallTool case needs a request"));
            };
            Facts::call_tool(
                chain,
                &view,
                r.cap.scopes.clone(),
                &r.tool,
                req,
                behaviour,
                r.now,
            )
        }
    };
    Ok(f(&facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicySource;

    const POLICIES: &str = r#"
@id("reads")
permit (principal, action == Action::"StartTask", resource)
when { ["read"].containsAll(context.scopes) };

@id("no-deletes")
forbid (principal, action, resource)
when { context.scopes.contains("delete") };
"#;

    const CASES: &str = r#"
[[case]]
name = "a read is allowed"
agent = { name = "a" }
tool = { name = "t", scopes = ["read", "delete"] }
scopes = ["read"]
expect = "allow"
expect_policies = ["reads"]

[[case]]
name = "a delete is allowed"
agent = { name = "a" }
tool = { name = "t", scopes = ["read", "delete"] }
scopes = ["delete"]
expect = "allow"

[[case]]
name = "a bad action"
action = "Fly"
agent = { name = "a" }
tool = { name = "t" }
scopes = ["read"]
expect = "allow"
"#;

    fn set() -> PolicySet {
        PolicySet::compile(vec![PolicySource {
            name: "p.cedar".into(),
            text: POLICIES.into(),
        }])
        .unwrap()
    }

    #[test]
    fn each_case_passes_or_fails_with_why() {
        let cases = CaseFile::parse("tests.toml", CASES).unwrap();
        let r = cases.run(&set());
        assert_eq!((r.passed, r.failed), (1, 2));
        assert_eq!(r.version, set().version());
        let [read, delete, bad] = r.cases.as_slice() else {
            panic!("three results: {r:?}");
        };
        assert!(read.passed && read.failures.is_empty());
        assert_eq!(read.verdict.as_deref(), Some("allow"));
        assert!(!delete.passed);
        assert_eq!(delete.verdict.as_deref(), Some("deny"));
        assert_eq!(
            delete.failures.first().map(String::as_str),
            Some("expected: allow")
        );
        assert!(
            delete
                .failures
                .get(1)
                .unwrap()
                .starts_with("actual:   deny (")
        );
        assert!(!bad.passed && bad.verdict.is_none());
        assert_eq!(
            bad.failures,
            vec![r#"case "a bad action": unknown action "Fly""#]
        );
    }

    #[test]
    fn a_file_that_does_not_parse_says_which_and_why() {
        let e = CaseFile::parse("x/tests.toml", "[[case]]\nname = 1\n").unwrap_err();
        assert!(e.to_string().starts_with("parsing x/tests.toml: "), "{e}");
        let e = CaseFile::parse("x/tests.toml", "surprise = true\n").unwrap_err();
        assert!(e.to_string().contains("surprise"), "{e}");
        assert!(
            CaseFile::parse("c.json", r#"{"case": []}"#)
                .unwrap()
                .cases
                .is_empty()
        );
        let e = CaseFile::read(Path::new("/nonexistent/tests.toml")).unwrap_err();
        assert!(matches!(e, CaseError::Read { .. }), "{e}");
    }

    #[test]
    fn the_policy_dir_is_relative_to_the_file() {
        let c = CaseFile::parse("t.toml", "policy_dir = \"pol\"\n").unwrap();
        assert_eq!(
            c.policy_dir_of(Path::new("/a/b/t.toml")),
            Some(PathBuf::from("/a/b/pol"))
        );
        assert_eq!(
            CaseFile::parse("t.toml", "")
                .unwrap()
                .policy_dir_of(Path::new("t.toml")),
            None
        );
    }
}
