//! The facts policy sees, built once for every enforcement point.
//!
//! Every decision writ makes (a task start, a token exchange, a delegation,
//! a call through a gateway, an AuthZEN question) starts from a [`Facts`]
//! made by one constructor per action, from the store's own model types.
//! Nothing else assembles a Cedar request, so the same request cannot get
//! different facts, and so a different answer, at two enforcement points.

use std::borrow::Cow;
use std::collections::BTreeSet;

use writ_core::api::{Agent, Task, Tool};
use writ_core::scope::{self, Capability};
use writ_core::token::AccessClaims;
use writ_core::{Scope, Timestamp};

/// Which decision is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

    /// The action named by its Cedar id.
    pub fn from_cedar_id(id: &str) -> Option<Self> {
        Some(match id {
            "StartTask" => Action::StartTask,
            "ExchangeToken" => Action::ExchangeToken,
            "DelegateTask" => Action::DelegateTask,
            "CallTool" => Action::CallTool,
            _ => return None,
        })
    }
}

/// What an agent has been doing lately (`context.behaviour`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// The agent's requests refused in the last five minutes, across the
    /// deployment.
    pub denials_5m: u32,
    /// A detection rule holds the agent's tasks for a person's approval
    /// (`require_approval`) until a time not yet reached.
    pub requires_approval: bool,
}

/// The agents of a request: the one acting now and, for delegated work,
/// those before it.
#[derive(Clone, Debug)]
pub struct Chain<'a> {
    pub(crate) principal: &'a Agent,
    /// Every earlier agent, root first (the principal never among them).
    pub(crate) earlier: Vec<&'a Agent>,
}

impl<'a> Chain<'a> {
    /// `principal` acting after `earlier` (root first); the principal's own
    /// name in `earlier` is dropped, so a task's lineage can be passed whole.
    pub fn new(principal: &'a Agent, earlier: impl IntoIterator<Item = &'a Agent>) -> Self {
        Self {
            principal,
            earlier: earlier
                .into_iter()
                .filter(|a| a.name != principal.name)
                .collect(),
        }
    }

    /// An agent acting alone.
    pub fn alone(principal: &'a Agent) -> Self {
        Self {
            principal,
            earlier: Vec::new(),
        }
    }
}

/// The instance acting, and how it attested.
#[derive(Clone, Copy, Debug)]
pub struct InstanceFacts<'a> {
    pub id: &'a str,
    /// `join_token`, `oidc`, `spiffe` or `spiffe_x509`.
    pub attestation: &'a str,
}

/// A task that exists, as policy sees it: read from the store, or from a
/// tool token's `task_ctx` claim (which the broker wrote from the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView<'a> {
    pub(crate) id: Cow<'a, str>,
    pub(crate) intent: Cow<'a, str>,
    pub(crate) capabilities: Cow<'a, [Capability]>,
    pub(crate) on_behalf_of: Option<Cow<'a, str>>,
    pub(crate) parent: Option<Cow<'a, str>>,
    pub(crate) depth: u32,
    pub(crate) started_at: i64,
    pub(crate) expires_at: Timestamp,
    pub(crate) exception: bool,
    pub(crate) instance: Cow<'a, str>,
    pub(crate) attestation: Cow<'a, str>,
}

/// Why a tool token's claims cannot describe its task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskViewError {
    #[error("the token names no task")]
    NoTask,
    #[error("the token carries no task context")]
    NoContext,
    #[error("the token's task capabilities are malformed: {0}")]
    Capabilities(String),
}

impl<'a> TaskView<'a> {
    /// A task from the store; `attestation` is how its instance attested.
    pub fn of_task(task: &'a Task, attestation: &'a str) -> Self {
        Self {
            id: Cow::Borrowed(task.task_id.as_str()),
            intent: Cow::Borrowed(&task.intent),
            capabilities: Cow::Borrowed(&task.capabilities),
            on_behalf_of: task.on_behalf_of.as_deref().map(Cow::Borrowed),
            parent: task
                .parent_task_id
                .as_ref()
                .map(|p| Cow::Borrowed(p.as_str())),
            depth: task.depth,
            started_at: task.created_at.secs(),
            expires_at: task.expires_at,
            exception: task.exception,
            instance: Cow::Borrowed(task.instance_id.as_str()),
            attestation: Cow::Borrowed(attestation),
        }
    }

    /// The task a tool token was issued under, from its signed claims.
    pub fn of_token(claims: &'a AccessClaims) -> Result<Self, TaskViewError> {
        let id = claims.task.as_deref().ok_or(TaskViewError::NoTask)?;
        let ctx = claims.task_ctx.as_ref().ok_or(TaskViewError::NoContext)?;
        let capabilities = scope::from_claim(&ctx.capabilities)
            .map_err(|e| TaskViewError::Capabilities(e.to_string()))?;
        Ok(Self {
            id: Cow::Borrowed(id),
            intent: Cow::Borrowed(claims.intent.as_deref().unwrap_or_default()),
            capabilities: Cow::Owned(capabilities),
            on_behalf_of: claims.obo.as_deref().map(Cow::Borrowed),
            parent: ctx.parent.as_deref().map(Cow::Borrowed),
            depth: ctx.depth,
            started_at: ctx.started_at,
            expires_at: Timestamp::from_secs(ctx.expires_at),
            exception: claims.exception,
            instance: Cow::Borrowed(&claims.client_id),
            attestation: Cow::Borrowed(&ctx.attestation),
        })
    }

    /// The claim a tool token carries so that a gateway sees this task.
    pub fn of_task_claim(task: &Task, attestation: &str) -> writ_core::token::TaskContext {
        writ_core::token::TaskContext {
            capabilities: scope::to_claim(&task.capabilities),
            started_at: task.created_at.secs(),
            expires_at: task.expires_at.secs(),
            parent: task.parent_task_id.as_ref().map(ToString::to_string),
            depth: task.depth,
            attestation: attestation.to_owned(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// About how many bytes of text the view holds.
    pub(crate) fn text_bytes(&self) -> usize {
        self.id.len()
            + self.intent.len()
            + self
                .capabilities
                .iter()
                .map(|c| {
                    c.tool.as_str().len() + c.scopes.iter().map(|s| s.as_str().len()).sum::<usize>()
                })
                .sum::<usize>()
            + self.on_behalf_of.as_ref().map_or(0, |s| s.len())
            + self.parent.as_ref().map_or(0, |s| s.len())
            + self.instance.len()
            + self.attestation.len()
    }

    /// The same view, owning its text.
    pub(crate) fn to_owned_view(&self) -> TaskView<'static> {
        let own = |c: &Cow<'_, str>| Cow::Owned(c.clone().into_owned());
        TaskView {
            id: own(&self.id),
            intent: own(&self.intent),
            capabilities: Cow::Owned(self.capabilities.to_vec()),
            on_behalf_of: self.on_behalf_of.as_ref().map(own),
            parent: self.parent.as_ref().map(own),
            depth: self.depth,
            started_at: self.started_at,
            expires_at: self.expires_at,
            exception: self.exception,
            instance: own(&self.instance),
            attestation: own(&self.attestation),
        }
    }
}

/// What a task start asks for.
#[derive(Clone, Debug)]
pub struct TaskAsk<'a> {
    pub intent: &'a str,
    pub capabilities: &'a [Capability],
    pub on_behalf_of: Option<&'a str>,
    /// The lifetime asked for, seconds.
    pub ttl: i64,
    /// The lifetime is beyond the configured maximum (an exception).
    pub exception: bool,
}

/// What an enforcement point saw of one request to a tool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallRequest<'a> {
    pub method: &'a str,
    /// The path below the tool's prefix, starting with `/`.
    pub path: &'a str,
    pub query: &'a str,
    /// For MCP: the JSON-RPC method (`tools/call`, `resources/read`, ...).
    pub mcp_method: Option<&'a str>,
    /// For MCP `tools/call`: the tool's name.
    pub mcp_tool: Option<&'a str>,
    /// For MCP `resources/read`, `resources/subscribe`,
    /// `resources/unsubscribe`, and `completion/complete` on a resource
    /// template: the resource's URI (or URI template).
    pub mcp_resource: Option<&'a str>,
    /// For MCP `prompts/get`, and `completion/complete` on a prompt: the
    /// prompt's name.
    pub mcp_prompt: Option<&'a str>,
    /// For MCP `tools/call` and `prompts/get`: the arguments, and for
    /// `completion/complete` the argument completed, as compact JSON text.
    pub arguments: Option<&'a str>,
}

impl<'a> CallRequest<'a> {
    /// One MCP request a client POSTed to `path`: the facts of its method
    /// and of what it names. Every enforcement point that decides an MCP
    /// message builds its request here.
    pub fn mcp(path: &'a str, named: &'a writ_core::mcp::Named) -> Self {
        Self {
            method: "POST",
            path,
            query: "",
            mcp_method: Some(&named.method),
            mcp_tool: named.tool.as_deref(),
            mcp_resource: named.resource.as_deref(),
            mcp_prompt: named.prompt.as_deref(),
            arguments: named.arguments.as_deref(),
        }
    }

    /// The request an approval of `agent`'s call on `tool` is about (its
    /// window is the broker's to set).
    pub fn to_approval(
        &self,
        tool: &writ_core::ToolName,
        agent: &writ_core::AgentName,
    ) -> writ_core::api::ApprovalCall {
        writ_core::api::ApprovalCall {
            tool: tool.clone(),
            agent: agent.clone(),
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            query: self.query.to_owned(),
            mcp_method: self.mcp_method.map(str::to_owned),
            mcp_tool: self.mcp_tool.map(str::to_owned),
            mcp_resource: self.mcp_resource.map(str::to_owned),
            mcp_prompt: self.mcp_prompt.map(str::to_owned),
            arguments: self.arguments.map(str::to_owned),
            window_secs: 0,
            used_at: None,
        }
    }

    /// The request an approval is about.
    pub fn of_approval(call: &'a writ_core::api::ApprovalCall) -> Self {
        Self {
            method: &call.method,
            path: &call.path,
            query: &call.query,
            mcp_method: call.mcp_method.as_deref(),
            mcp_tool: call.mcp_tool.as_deref(),
            mcp_resource: call.mcp_resource.as_deref(),
            mcp_prompt: call.mcp_prompt.as_deref(),
            arguments: call.arguments.as_deref(),
        }
    }
}

/// Everything one decision sees. Made only by the constructors below.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub(crate) action: Action,
    pub(crate) chain: Chain<'a>,
    pub(crate) instance: Option<InstanceFacts<'a>>,
    /// `context.attestation`: how the acting instance attested.
    pub(crate) attestation: &'a str,
    pub(crate) intent: &'a str,
    /// What this request asks for, one Cedar request per tool.
    pub(crate) capabilities: Cow<'a, [Capability]>,
    pub(crate) on_behalf_of: Option<&'a str>,
    pub(crate) ttl: i64,
    pub(crate) depth: u32,
    pub(crate) exception: bool,
    pub(crate) task: Option<&'a TaskView<'a>>,
    pub(crate) tools: Vec<&'a Tool>,
    pub(crate) behaviour: Behaviour,
    pub(crate) now: Timestamp,
    pub(crate) request: Option<CallRequest<'a>>,
}

impl<'a> Facts<'a> {
    /// An instance of `agent` starts a task.
    pub fn start_task(
        agent: &'a Agent,
        instance: InstanceFacts<'a>,
        ask: &TaskAsk<'a>,
        tools: Vec<&'a Tool>,
        behaviour: Behaviour,
        now: Timestamp,
    ) -> Self {
        Self {
            action: Action::StartTask,
            chain: Chain::alone(agent),
            instance: Some(instance),
            attestation: instance.attestation,
            intent: ask.intent,
            capabilities: Cow::Borrowed(ask.capabilities),
            on_behalf_of: ask.on_behalf_of,
            ttl: ask.ttl,
            depth: 0,
            exception: ask.exception,
            task: None,
            tools,
            behaviour,
            now,
            request: None,
        }
    }

    /// The task's own instance exchanges its task token for a token for
    /// one tool. `chain.principal` is the task's agent.
    pub fn exchange_token(
        chain: Chain<'a>,
        task: &'a TaskView<'a>,
        cap: Capability,
        tool: &'a Tool,
        behaviour: Behaviour,
        now: Timestamp,
    ) -> Self {
        Self {
            action: Action::ExchangeToken,
            chain,
            instance: Some(InstanceFacts {
                id: &task.instance,
                attestation: &task.attestation,
            }),
            attestation: &task.attestation,
            intent: &task.intent,
            capabilities: Cow::Owned(vec![cap]),
            on_behalf_of: task.on_behalf_of.as_deref(),
            ttl: now.secs_until(task.expires_at),
            depth: task.depth,
            exception: task.exception,
            task: Some(task),
            tools: vec![tool],
            behaviour,
            now,
            request: None,
        }
    }

    /// `parent`'s task hands `caps` to a sub-agent: `chain.principal`,
    /// whose instance attested by `attestation`. The sub-agent's instance
    /// is not the task's, so `context.instance` is absent.
    pub fn delegate_task(
        chain: Chain<'a>,
        attestation: &'a str,
        parent: &'a TaskView<'a>,
        caps: Vec<Capability>,
        tools: Vec<&'a Tool>,
        behaviour: Behaviour,
        now: Timestamp,
    ) -> Self {
        Self {
            action: Action::DelegateTask,
            chain,
            instance: None,
            attestation,
            intent: &parent.intent,
            capabilities: Cow::Owned(caps),
            on_behalf_of: parent.on_behalf_of.as_deref(),
            ttl: now.secs_until(parent.expires_at),
            depth: parent.depth.saturating_add(1),
            exception: parent.exception,
            task: Some(parent),
            tools,
            behaviour,
            now,
            request: None,
        }
    }

    /// A request to `tool` under `task`, with a token for `scopes`.
    pub fn call_tool(
        chain: Chain<'a>,
        task: &'a TaskView<'a>,
        scopes: BTreeSet<Scope>,
        tool: &'a Tool,
        request: CallRequest<'a>,
        behaviour: Behaviour,
        now: Timestamp,
    ) -> Self {
        Self {
            action: Action::CallTool,
            chain,
            instance: Some(InstanceFacts {
                id: &task.instance,
                attestation: &task.attestation,
            }),
            attestation: &task.attestation,
            intent: &task.intent,
            capabilities: Cow::Owned(vec![Capability {
                tool: tool.name.clone(),
                scopes,
            }]),
            on_behalf_of: task.on_behalf_of.as_deref(),
            ttl: now.secs_until(task.expires_at),
            depth: task.depth,
            exception: task.exception,
            task: Some(task),
            tools: vec![tool],
            behaviour,
            now,
            request: Some(request),
        }
    }

    /// A question about no existing task (an AuthZEN evaluation without
    /// `context.task`): what the asker says stands in for the task.
    #[allow(clippy::too_many_arguments, reason = "the facts of one question")]
    pub fn untasked(
        action: Action,
        agent: &'a Agent,
        instance: Option<InstanceFacts<'a>>,
        ask: &TaskAsk<'a>,
        tool: &'a Tool,
        request: Option<CallRequest<'a>>,
        behaviour: Behaviour,
        now: Timestamp,
    ) -> Self {
        let attestation = instance.map_or(agent.attestation.kind(), |i| i.attestation);
        Self {
            action,
            chain: Chain::alone(agent),
            instance,
            attestation,
            intent: ask.intent,
            capabilities: Cow::Borrowed(ask.capabilities),
            on_behalf_of: ask.on_behalf_of,
            ttl: ask.ttl,
            depth: 0,
            exception: ask.exception,
            task: None,
            tools: vec![tool],
            behaviour,
            now,
            request: if action == Action::CallTool {
                request
            } else {
                None
            },
        }
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// The agent acting.
    pub fn principal(&self) -> &Agent {
        self.chain.principal
    }

    pub fn intent(&self) -> &str {
        self.intent
    }

    pub fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }
}
