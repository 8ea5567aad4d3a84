//! What the audit chain says each agent was granted and used, read record
//! by record. Pure: the caller reads the chain and hands the records in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use writ_core::Timestamp;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::scope::Capability;
use writ_policy::{Action, RecordedRequest};

use crate::service::DENIAL_WINDOW_SECS;

/// A task as its start record tells it.
#[derive(Clone, Debug)]
pub(crate) struct TaskSeen {
    pub id: String,
    pub agent: String,
    pub instance: String,
    pub intent: String,
    pub capabilities: Vec<Capability>,
    pub on_behalf_of: Option<String>,
    pub parent: Option<String>,
    pub depth: u32,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub exception: bool,
    pub policy_version: String,
}

/// What one request to a tool was, as a gateway recorded it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct CallShape {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_prompt: Option<String>,
}

impl CallShape {
    pub(crate) fn of(r: &RecordedRequest) -> Self {
        Self {
            method: r.method.clone(),
            path: r.path.clone(),
            mcp_method: r.mcp_method.clone(),
            mcp_tool: r.mcp_tool.clone(),
            mcp_resource: r.mcp_resource.clone(),
            mcp_prompt: r.mcp_prompt.clone(),
        }
    }
}

/// What an AuthZEN decision about one of writ's own actions was decided
/// on, as its record keeps it (`detail.evaluated`).
#[derive(Clone, Debug, serde::Deserialize)]
pub(crate) struct EvaluatedSeen {
    pub action: String,
    pub agent: String,
    #[serde(default)]
    pub instance: Option<String>,
    pub tool: String,
    #[serde(default)]
    pub scopes: BTreeSet<String>,
    /// The task it was decided in; `None`: a question about no task.
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    #[serde(default)]
    pub ttl: Option<i64>,
    #[serde(default)]
    pub request: Option<RecordedRequest>,
}

/// One recorded decision, as much of it as replaying it needs.
#[derive(Clone, Debug)]
pub(crate) enum Recorded {
    Start {
        /// The task it made (held or started).
        task: Option<String>,
        /// Held for a person (an exception always is), and approved.
        approved: bool,
        agent: String,
        instance: String,
        intent: String,
        capabilities: Vec<Capability>,
        on_behalf_of: Option<String>,
        ttl: i64,
        exception: bool,
    },
    Exchange {
        agent: String,
        task: String,
        tool: String,
        scopes: BTreeSet<String>,
    },
    Delegate {
        planner: String,
        actor: String,
        actor_instance: String,
        parent: String,
        capabilities: Vec<Capability>,
        depth: u32,
    },
    Call {
        agent: String,
        task: String,
        tool: String,
        scopes: BTreeSet<String>,
        call: CallShape,
        /// The query and arguments as recorded (older records: none).
        request: Option<RecordedRequest>,
        approved: bool,
    },
    /// An AuthZEN decision an enforcement point enforced.
    Evaluated {
        action: Action,
        seen: EvaluatedSeen,
        /// Held for a person, and approved.
        approved: bool,
    },
}

/// A recorded decision and the verdict it got.
#[derive(Clone, Debug)]
pub(crate) struct Decided {
    pub seq: u64,
    pub ts: Timestamp,
    /// `allow`, `deny` or `needs_approval`, as recorded.
    pub verdict: String,
    /// Allowed and completed: the live set allowed it and it went through.
    pub completed: bool,
    pub what: Recorded,
    /// `context.behaviour.denials_5m` of the agent policy looked at, as
    /// the chain tells it (refusals charged in the five minutes before).
    pub denials_5m: u32,
    /// The live set's version that decided it.
    pub policy_version: Option<String>,
}

/// A root task that asked to live beyond the maximum, by exception.
#[derive(Clone, Debug)]
pub(crate) struct ExceptionSeen {
    pub task: String,
    pub agent: String,
    pub tools: Vec<String>,
    /// The lifetime asked for, seconds.
    pub ttl: i64,
}

/// One agent's use of one tool.
#[derive(Clone, Debug, Default)]
pub(crate) struct Usage {
    /// Scopes granted by task starts (root tasks).
    pub granted_tasks: BTreeSet<String>,
    /// Scopes in tool tokens issued by exchanges.
    pub granted_exchanges: BTreeSet<String>,
    /// Scopes handed to this agent by delegations.
    pub granted_delegations: BTreeSet<String>,
    /// Scopes carried by tokens that made an allowed call.
    pub used_by_calls: BTreeSet<String>,
    /// Scopes exchanged for (used at the broker).
    pub exchanged: BTreeSet<String>,
    /// Calls by shape: (allowed, denied, approved).
    pub calls: BTreeMap<CallShape, (u64, u64, u64)>,
    pub exchanges: (u64, u64),
    /// AuthZEN decisions an enforcement point enforced: (true, false).
    pub authzen: (u64, u64),
    /// Live permits that allowed a grant here.
    pub permitted_by: BTreeSet<String>,
    /// Tool tokens issued, and those presented at a gateway.
    pub tokens: BTreeSet<String>,
    pub tokens_presented: BTreeSet<String>,
    /// Deepest delegation this agent acted at on this tool.
    pub depth: u32,
}

impl Usage {
    /// The scopes used: carried by a token that made an allowed call, or,
    /// for a tool no gateway recorded a call to, exchanged for.
    pub fn used(&self) -> BTreeSet<String> {
        if self.calls.is_empty() {
            self.exchanged.clone()
        } else {
            self.used_by_calls.clone()
        }
    }

    pub fn granted(&self) -> BTreeSet<String> {
        self.granted_tasks
            .iter()
            .chain(&self.granted_exchanges)
            .chain(&self.granted_delegations)
            .cloned()
            .collect()
    }
}

/// Everything read from the window.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub tasks: BTreeMap<String, TaskSeen>,
    /// Tool token `jti` → (agent, tool, scopes).
    pub tokens: BTreeMap<String, (String, String, BTreeSet<String>)>,
    pub usage: BTreeMap<(String, String), Usage>,
    /// Agents quarantined at some point of the window.
    pub quarantined: BTreeSet<String>,
    /// Root tasks that asked for an exception.
    pub exceptions: Vec<ExceptionSeen>,
    /// Tasks whose held start a person approved.
    pub approved_tasks: BTreeSet<String>,
    pub decided: Vec<Decided>,
    /// Calls that passed, per task.
    pub calls_by_task: BTreeMap<String, u64>,
    /// AuthZEN decisions that are not about a writ agent and tool, or
    /// that replay does not rebuild.
    pub not_replayed: u64,
    /// Refusals charged to each agent (unix ms), for `denials_5m`.
    charged: BTreeMap<String, std::collections::VecDeque<i64>>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn scope_set(v: Option<&Value>) -> BTreeSet<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => BTreeSet::new(),
    }
}

fn caps(v: Option<&Value>) -> Vec<Capability> {
    v.cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn scopes_of(c: &Capability) -> BTreeSet<String> {
    c.scopes.iter().map(|s| s.as_str().to_owned()).collect()
}

impl Observed {
    fn usage(&mut self, agent: &str, tool: &str) -> &mut Usage {
        self.usage
            .entry((agent.to_owned(), tool.to_owned()))
            .or_default()
    }

    /// Reads one record. `tool_of_audience` names the tool an audience is
    /// (tool tokens are recorded by audience).
    /// The refusals charged to `agent` in the window before `ts`.
    fn denials_before(&mut self, agent: &str, ts: Timestamp) -> u32 {
        let from = ts.millis() - DENIAL_WINDOW_SECS * 1000;
        let Some(q) = self.charged.get_mut(agent) else {
            return 0;
        };
        while q.front().is_some_and(|t| *t < from) {
            q.pop_front();
        }
        u32::try_from(q.len()).unwrap_or(u32::MAX)
    }

    /// Who a record's refusal is charged to, as the broker counts them:
    /// a refused task start or exchange its agent, a refused delegation
    /// its planner, a refused gateway call (not held) its agent, an
    /// enforced AuthZEN refusal its subject. A release forgives.
    pub fn charge(&mut self, ts: Timestamp, e: &AuditEvent) {
        let d = &e.detail;
        if e.kind == AuditKind::AgentRelease {
            if let Some(a) = &e.agent {
                self.charged.remove(a);
            }
            return;
        }
        if e.outcome != Outcome::Deny {
            return;
        }
        let held = d.get("held").and_then(Value::as_bool) == Some(true)
            || d.get("approval_id").is_some_and(|v| !v.is_null());
        let who = match e.kind {
            AuditKind::TaskStart => e.agent.clone(),
            AuditKind::TokenExchange if d.get("verdict").is_some() => e.agent.clone(),
            AuditKind::ToolCall if !held => e.agent.clone(),
            AuditKind::Decision
                if !held && d.get("enforced").and_then(Value::as_bool) == Some(true) =>
            {
                d.get("subject").and_then(|s| text(s, "id"))
            }
            _ => None,
        };
        if let Some(a) = who {
            let at = match e.kind {
                AuditKind::ToolCall => d
                    .get("decided_at")
                    .and_then(Value::as_i64)
                    .unwrap_or(ts.millis()),
                _ => ts.millis(),
            };
            self.charged.entry(a).or_default().push_back(at);
        }
    }

    /// After the last record: an exception's start, held for a person and
    /// approved, passed (the task ran by exception).
    pub fn finish(&mut self) {
        for d in &mut self.decided {
            if let Recorded::Start {
                task: Some(t),
                approved,
                exception: true,
                ..
            } = &mut d.what
                && d.verdict == "needs_approval"
                && self.approved_tasks.contains(t.as_str())
            {
                *approved = true;
                d.completed = true;
            }
        }
    }

    pub fn push(
        &mut self,
        seq: u64,
        ts: Timestamp,
        e: &AuditEvent,
        tool_of_audience: &BTreeMap<String, String>,
    ) {
        let decided = self.decided.len();
        self.observe(seq, ts, e, tool_of_audience);
        // What the decision just recorded saw: the refusals before it.
        if let Some(d) = self.decided.get(decided) {
            let agent = d.agent().to_owned();
            let n = self.denials_before(&agent, ts);
            if let Some(d) = self.decided.get_mut(decided) {
                d.denials_5m = n;
                d.policy_version.clone_from(&e.policy_version);
            }
        }
        self.charge(ts, e);
    }

    fn observe(
        &mut self,
        seq: u64,
        ts: Timestamp,
        e: &AuditEvent,
        tool_of_audience: &BTreeMap<String, String>,
    ) {
        self.records += 1;
        if self.first_seq == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
        let d = &e.detail;
        let agent = e.agent.clone().unwrap_or_default();
        let verdict = text(d, "verdict").unwrap_or_else(|| {
            match e.outcome {
                Outcome::Success => "allow",
                Outcome::Failure | Outcome::Deny => "deny",
            }
            .to_owned()
        });
        let ok = e.outcome == Outcome::Success;
        match e.kind {
            AuditKind::AgentQuarantine => {
                if let Some(a) = &e.agent {
                    self.quarantined.insert(a.clone());
                }
            }
            AuditKind::TaskStart => self.task_start(seq, ts, e, verdict),
            // A held task start a person approved (not a held call).
            AuditKind::Approval if ok && d.get("call").is_none_or(Value::is_null) => {
                if let Some(t) = &e.task {
                    self.approved_tasks.insert(t.clone());
                }
            }
            AuditKind::TokenIssue => {
                if text(d, "kind").as_deref() != Some("tool_token") {
                    return;
                }
                let (Some(jti), Some(tool)) = (
                    e.jti.clone(),
                    text(d, "aud").and_then(|a| tool_of_audience.get(&a).cloned()),
                ) else {
                    return;
                };
                let scopes = scope_set(d.get("scope"));
                let u = self.usage(&agent, &tool);
                u.granted_exchanges.extend(scopes.iter().cloned());
                u.tokens.insert(jti.clone());
                self.tokens.insert(jti, (agent, tool, scopes));
            }
            AuditKind::TokenExchange => self.exchange(seq, ts, e, verdict, ok),
            AuditKind::ToolCall => self.call(seq, ts, e, verdict, ok),
            AuditKind::Decision => {
                let enforced = d.get("enforced").and_then(Value::as_bool) == Some(true);
                if enforced && self.evaluated(seq, ts, e, ok) {
                    return;
                }
                let subject = d.get("subject").cloned().unwrap_or_default();
                let resource = d.get("resource").cloned().unwrap_or_default();
                let is = |v: &Value, t: &[&str]| {
                    text(v, "type").is_some_and(|ty| t.contains(&ty.as_str()))
                };
                self.not_replayed += 1;
                if enforced && is(&subject, &["agent", "Agent"]) && is(&resource, &["tool", "Tool"])
                {
                    let (Some(a), Some(t)) = (text(&subject, "id"), text(&resource, "id")) else {
                        return;
                    };
                    let u = self.usage(&a, &t);
                    if ok {
                        u.authzen.0 += 1;
                    } else {
                        u.authzen.1 += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// An enforced AuthZEN decision about one of writ's own actions, with
    /// the facts it was decided on: use, and replayed. `false` when the
    /// record holds no such facts (older records, the user's vocabulary,
    /// refusals before policy).
    fn evaluated(&mut self, seq: u64, ts: Timestamp, e: &AuditEvent, ok: bool) -> bool {
        let d = &e.detail;
        let Some(seen) = d
            .get("evaluated")
            .filter(|v| !v.is_null())
            .and_then(|v| serde_json::from_value::<EvaluatedSeen>(v.clone()).ok())
        else {
            return false;
        };
        let Some(action) = Action::from_cedar_id(&seen.action) else {
            return false;
        };
        let held = d.get("approval_id").is_some_and(|v| !v.is_null())
            || e.reason.as_deref() == Some(crate::service::authzen::APPROVAL_REQUIRED);
        let approved = ok && held;
        let u = self.usage(&seen.agent, &seen.tool);
        if ok {
            u.authzen.0 += 1;
        } else {
            u.authzen.1 += 1;
        }
        match (action, &seen.request) {
            (Action::CallTool, Some(r)) => {
                let counts = u.calls.entry(CallShape::of(r)).or_default();
                if ok {
                    counts.0 += 1;
                    if approved {
                        counts.2 += 1;
                    }
                    u.used_by_calls.extend(seen.scopes.iter().cloned());
                } else if !held {
                    counts.1 += 1;
                }
            }
            (Action::ExchangeToken, _) if ok => {
                u.exchanged.extend(seen.scopes.iter().cloned());
            }
            _ => {}
        }
        if ok
            && action == Action::CallTool
            && let Some(t) = &seen.task
        {
            *self.calls_by_task.entry(t.clone()).or_default() += 1;
        }
        let verdict = if held {
            "needs_approval"
        } else if ok {
            "allow"
        } else {
            "deny"
        };
        self.decided.push(Decided {
            seq,
            ts,
            verdict: verdict.to_owned(),
            completed: ok,
            denials_5m: 0,
            policy_version: None,
            what: Recorded::Evaluated {
                action,
                seen,
                approved,
            },
        });
        true
    }

    fn task_start(&mut self, seq: u64, ts: Timestamp, e: &AuditEvent, verdict: String) {
        let d = &e.detail;
        let agent = e.agent.clone().unwrap_or_default();
        let capabilities = caps(d.get("capabilities"));
        let parent = text(d, "parent");
        let depth = d
            .get("depth")
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
            .unwrap_or(0);
        let ok = e.outcome == Outcome::Success;
        // A delegated task: its intent and lifetime are its parent's.
        let parent_task = parent.as_ref().and_then(|p| self.tasks.get(p)).cloned();
        let ttl = d.get("ttl").and_then(Value::as_i64).unwrap_or(0);
        let exception = d.get("exception").and_then(Value::as_bool).unwrap_or(false);
        if ok && let Some(id) = &e.task {
            let seen = TaskSeen {
                id: id.clone(),
                agent: agent.clone(),
                instance: e.instance.clone().unwrap_or_default(),
                intent: parent_task.as_ref().map_or_else(
                    || text(d, "intent").unwrap_or_default(),
                    |p| p.intent.clone(),
                ),
                capabilities: capabilities.clone(),
                on_behalf_of: e.on_behalf_of.clone(),
                parent: parent.clone(),
                depth,
                created: ts,
                expires: parent_task
                    .as_ref()
                    .map_or_else(|| ts.add_secs(ttl), |p| p.expires),
                exception: parent_task.as_ref().map_or(exception, |p| p.exception),
                policy_version: e.policy_version.clone().unwrap_or_default(),
            };
            self.tasks.insert(id.clone(), seen);
        }
        if parent.is_some() {
            // Recorded (and replayed) as its delegation's exchange.
            for c in &capabilities {
                let u = self.usage(&agent, c.tool.as_str());
                u.granted_delegations.extend(scopes_of(c));
                u.depth = u.depth.max(depth);
            }
            return;
        }
        if ok {
            if exception && let Some(id) = &e.task {
                self.exceptions.push(ExceptionSeen {
                    task: id.clone(),
                    agent: agent.clone(),
                    tools: capabilities.iter().map(|c| c.tool.to_string()).collect(),
                    ttl,
                });
            }
            for c in &capabilities {
                let u = self.usage(&agent, c.tool.as_str());
                u.granted_tasks.extend(scopes_of(c));
                u.permitted_by
                    .extend(e.determining_policies.iter().cloned());
            }
        }
        if d.get("intent").is_none() {
            return;
        }
        self.decided.push(Decided {
            seq,
            ts,
            completed: ok && verdict == "allow",
            verdict,
            denials_5m: 0,
            policy_version: None,
            what: Recorded::Start {
                task: e.task.clone(),
                approved: false,
                agent,
                instance: e.instance.clone().unwrap_or_default(),
                intent: text(d, "intent").unwrap_or_default(),
                capabilities,
                on_behalf_of: e.on_behalf_of.clone(),
                ttl,
                exception,
            },
        });
    }

    fn exchange(&mut self, seq: u64, ts: Timestamp, e: &AuditEvent, verdict: String, ok: bool) {
        let d = &e.detail;
        let agent = e.agent.clone().unwrap_or_default();
        let Some(task) = e.task.clone() else {
            return;
        };
        if let Some(actor) = text(d, "actor") {
            let capabilities = caps(d.get("capabilities"));
            if ok {
                for c in &capabilities {
                    self.usage(&actor, c.tool.as_str())
                        .permitted_by
                        .extend(e.determining_policies.iter().cloned());
                }
            }
            self.decided.push(Decided {
                seq,
                ts,
                completed: ok && verdict == "allow",
                verdict,
                denials_5m: 0,
                policy_version: None,
                what: Recorded::Delegate {
                    planner: agent,
                    actor,
                    actor_instance: text(d, "actor_instance").unwrap_or_default(),
                    parent: task,
                    capabilities,
                    depth: d
                        .get("depth")
                        .and_then(Value::as_u64)
                        .and_then(|x| u32::try_from(x).ok())
                        .unwrap_or(0),
                },
            });
            return;
        }
        // Refusals before policy (no tool named) are not decisions.
        let Some(tool) = text(d, "tool") else {
            return;
        };
        if agent.is_empty() {
            return;
        }
        let scopes = scope_set(d.get("scope"));
        let u = self.usage(&agent, &tool);
        if ok {
            u.exchanges.0 += 1;
            u.exchanged.extend(scopes.iter().cloned());
            u.permitted_by
                .extend(e.determining_policies.iter().cloned());
        } else {
            u.exchanges.1 += 1;
        }
        self.decided.push(Decided {
            seq,
            ts,
            completed: ok && verdict == "allow",
            verdict,
            denials_5m: 0,
            policy_version: None,
            what: Recorded::Exchange {
                agent,
                task,
                tool,
                scopes,
            },
        });
    }

    fn call(&mut self, seq: u64, ts: Timestamp, e: &AuditEvent, verdict: String, ok: bool) {
        let d = &e.detail;
        // An unvouched delivery names no agent: it is nobody's call.
        let (Some(agent), Some(task), Some(tool)) =
            (e.agent.clone(), e.task.clone(), text(d, "tool"))
        else {
            return;
        };
        let held = d.get("held").and_then(Value::as_bool) == Some(true);
        let approved = text(d, "approval_status").as_deref() == Some("approved");
        let call = CallShape {
            method: text(d, "method").unwrap_or_default(),
            path: text(d, "path").unwrap_or_default(),
            mcp_method: text(d, "mcp_method"),
            mcp_tool: text(d, "mcp_tool"),
            mcp_resource: text(d, "mcp_resource"),
            mcp_prompt: text(d, "mcp_prompt"),
        };
        let scopes = match e.jti.as_ref().and_then(|j| self.tokens.get(j)) {
            Some((_, _, s)) => s.clone(),
            // Issued before the window: the task's scopes for the tool.
            None => self
                .tasks
                .get(&task)
                .and_then(|t| t.capabilities.iter().find(|c| c.tool.as_str() == tool))
                .map(scopes_of)
                .unwrap_or_default(),
        };
        if ok {
            *self.calls_by_task.entry(task.clone()).or_default() += 1;
        }
        let u = self.usage(&agent, &tool);
        if let Some(j) = &e.jti {
            u.tokens_presented.insert(j.clone());
        }
        let counts = u.calls.entry(call.clone()).or_default();
        if ok {
            counts.0 += 1;
            if approved {
                counts.2 += 1;
            }
            u.used_by_calls.extend(scopes.iter().cloned());
        } else if !held {
            counts.1 += 1;
        }
        self.decided.push(Decided {
            seq,
            ts,
            // Passed: allowed, or held and approved.
            completed: ok,
            verdict,
            denials_5m: 0,
            policy_version: None,
            what: Recorded::Call {
                agent,
                task,
                tool,
                scopes,
                call,
                request: d
                    .get("request")
                    .and_then(|r| serde_json::from_value(r.clone()).ok()),
                approved,
            },
        });
    }
}
