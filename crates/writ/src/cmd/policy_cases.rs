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
use writ_core::api::{Agent, Attestation, Task, TaskStatus, Tool};
use writ_core::{Capability, Timestamp};
use writ_policy::{
    Action, Behaviour, CallRequest, Chain, Facts, InstanceFacts, PolicySet, TaskAsk, TaskView,
};

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

fn agent_of(case: &str, a: &AgentSpec) -> anyhow::Result<Agent> {
    Ok(Agent {
        name: a
            .name
            .parse()
            .with_context(|| format!("case {case:?}: agent name {:?}", a.name))?,
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
            other => bail!(
                "case {case:?}: attestation {other:?} is not join_token, oidc, spiffe or spiffe_x509"
            ),
        },
        attributes: a.attributes.clone(),
        workload: None,
        quarantined: a.quarantined,
        created_at: Timestamp::from_secs(0),
    })
}

fn records(case: &Case) -> anyhow::Result<Records> {
    let Some(action) = Action::from_cedar_id(&case.action) else {
        bail!("case {:?}: unknown action {:?}", case.name, case.action);
    };
    let cap = Capability::parse_short(&format!("{}:{}", case.tool.name, case.scopes.join(",")))
        .with_context(|| format!("case {:?}: tool and scopes", case.name))?;
    let request = match (&case.request, action) {
        (Some(r), Action::CallTool) => Some(r.clone()),
        (None, Action::CallTool) => Some(RequestSpec {
            method: get(),
            path: root(),
            ..RequestSpec::default()
        }),
        (Some(_), _) => bail!("case {:?}: `request` is for CallTool cases", case.name),
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
            .with_context(|| format!("case {:?}: tool name", case.name))?,
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
            .with_context(|| format!("case {:?}: tool scopes", case.name))?,
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
        task_id: "task_policytestcase00000000"
            .parse()
            .context("the test task id")?,
        agent: "policy-test".parse().context("the test agent")?,
        instance_id: "ins_policytestcase00000000"
            .parse()
            .context("the test instance id")?,
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
            .collect::<anyhow::Result<_>>()?,
        tool,
        cap,
        task,
        request,
        arguments,
        now,
    })
}

/// Runs `f` with the policy facts of a case.
pub fn with_facts<T>(case: &Case, f: impl FnOnce(&Facts<'_>) -> T) -> anyhow::Result<T> {
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
                bail!("case {:?}: a CallTool case needs a request", case.name);
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
