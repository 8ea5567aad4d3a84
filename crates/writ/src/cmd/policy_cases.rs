//! Policy test cases: a request and the decision it must get, in TOML or
//! JSON, for `writ policy test` and `writ policy explain`.
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use writ_core::{Capability, Timestamp};
use writ_policy::{Action, AgentFacts, PolicySet, TaskFacts, ToolFacts};

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
    #[serde(default)]
    pub exception: bool,
    /// Unix seconds (UTC).
    pub now: Option<i64>,
    /// For `CallTool`: the request through the gateway.
    pub request: Option<RequestSpec>,
    /// "allow" or "deny"; optional for `explain`.
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

/// Reads a case file and the policy set it names (or `dir`).
pub fn load(file: &Path, dir: Option<&Path>) -> anyhow::Result<(CaseFile, PolicySet)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let cases: CaseFile = if file.extension().and_then(|e| e.to_str()) == Some("json") {
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let policy_dir = match (dir, &cases.policy_dir) {
        (Some(d), _) => d.to_owned(),
        (None, Some(d)) => base.join(d),
        (None, None) => bail!("give --policy-dir or policy_dir in {}", file.display()),
    };
    let set = PolicySet::load_dir(&policy_dir)
        .with_context(|| format!("loading {}", policy_dir.display()))?;
    Ok((cases, set))
}

/// Runs `f` with the policy facts of a case.
pub fn with_facts<T>(
    case: &Case,
    f: impl FnOnce(&TaskFacts<'_>, &[ToolFacts<'_>]) -> T,
) -> anyhow::Result<T> {
    let action = match case.action.as_str() {
        "StartTask" => Action::StartTask,
        "ExchangeToken" => Action::ExchangeToken,
        "DelegateTask" => Action::DelegateTask,
        "CallTool" => Action::CallTool,
        other => bail!("case {:?}: unknown action {other:?}", case.name),
    };
    let cap = Capability::parse_short(&format!("{}:{}", case.tool.name, case.scopes.join(",")))
        .with_context(|| format!("case {:?}: tool and scopes", case.name))?;
    let caps = [cap];
    let req = match (&case.request, action) {
        (Some(r), Action::CallTool) => Some(r.clone()),
        (None, Action::CallTool) => Some(RequestSpec {
            method: get(),
            path: root(),
            ..RequestSpec::default()
        }),
        (Some(_), _) => bail!("case {:?}: `request` is for CallTool cases", case.name),
        (None, _) => None,
    };
    let arguments = req
        .as_ref()
        .and_then(|r| r.arguments.as_ref())
        .map(serde_json::Value::to_string);
    let facts_of = |a: &AgentSpec| -> (String, AgentSpec) {
        (format!("spiffe://writ.local/agent/{}", a.name), a.clone())
    };
    let me = facts_of(&case.agent);
    let chain: Vec<(String, AgentSpec)> = case.chain.iter().map(facts_of).collect();
    let audience = case
        .tool
        .audience
        .clone()
        .unwrap_or_else(|| format!("https://{}.example", case.tool.name));
    fn agent_facts((spiffe, a): &(String, AgentSpec)) -> AgentFacts<'_> {
        AgentFacts {
            name: &a.name,
            spiffe_id: spiffe,
            attestation: &a.attestation,
            quarantined: a.quarantined,
            attributes: &a.attributes,
        }
    }
    let facts = TaskFacts {
        action,
        agent: agent_facts(&me),
        chain: chain.iter().map(agent_facts).collect(),
        intent: &case.intent,
        capabilities: &caps,
        on_behalf_of: case.on_behalf_of.as_deref(),
        ttl_secs: case.ttl,
        attestation: &case.agent.attestation,
        depth: case.depth,
        recent_denials: case.denials_5m,
        exception: case.exception,
        now: Timestamp::from_secs(case.now.unwrap_or(DEFAULT_NOW)),
        request: req.as_ref().map(|r| writ_policy::RequestFacts {
            method: &r.method,
            path: &r.path,
            query: &r.query,
            mcp_method: r.mcp_method.as_deref(),
            mcp_tool: r.mcp_tool.as_deref(),
            arguments: arguments.as_deref(),
        }),
        instance: None,
        task: None,
    };
    let tools = [ToolFacts {
        name: &case.tool.name,
        audience: &audience,
        scopes: case.tool.scopes.iter().map(String::as_str).collect(),
        attributes: &case.tool.attributes,
    }];
    Ok(f(&facts, &tools))
}
