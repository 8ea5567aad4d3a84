//! Every recorded decision of the window, decided again by the proposed
//! set: the facts rebuilt by writ-policy's one constructor per action, the
//! verdict by the same `PolicySet::decide` every enforcement point calls.

use std::collections::{BTreeMap, BTreeSet};

use writ_core::api::{Agent, Task, TaskStatus, Tool};
use writ_core::scope::Capability;
use writ_core::{Scope, TaskId};
use writ_policy::{
    Behaviour, CallRequest, Chain, Facts, InstanceFacts, PolicySet, TaskAsk, TaskView,
};

use super::observe::{Decided, Observed, Recorded, TaskSeen};
use super::propose::Legit;
use super::{Changed, MAX_LISTED, Replay};
use crate::error::Error;
use crate::service::Broker;

fn task_of(t: &TaskSeen) -> Option<Task> {
    Some(Task {
        task_id: t.id.parse().ok()?,
        agent: t.agent.parse().ok()?,
        instance_id: t.instance.parse().ok()?,
        intent: t.intent.clone(),
        capabilities: t.capabilities.clone(),
        on_behalf_of: t.on_behalf_of.clone(),
        status: TaskStatus::Active,
        created_at: t.created,
        lease_expires_at: t.expires,
        expires_at: t.expires,
        ended_at: None,
        end_reason: None,
        policy_version: t.policy_version.clone(),
        parent_task_id: t.parent.as_ref().and_then(|p| p.parse().ok()),
        depth: t.depth,
        exception: t.exception,
    })
}

/// What replay looks up, each once.
struct Lookup<'a> {
    broker: &'a Broker,
    seen: &'a Observed,
    tasks: BTreeMap<String, Option<Task>>,
    attestations: BTreeMap<String, Option<String>>,
}

impl Lookup<'_> {
    /// A task: from its start record in the window, else from the store.
    async fn task(&mut self, id: &str) -> Result<Option<Task>, Error> {
        if let Some(t) = self.tasks.get(id) {
            return Ok(t.clone());
        }
        let t = match self.seen.tasks.get(id) {
            Some(seen) => task_of(seen),
            None => match id.parse::<TaskId>() {
                Ok(tid) => self.broker.store.get_task(&tid).await?,
                Err(_) => None,
            },
        };
        self.tasks.insert(id.to_owned(), t.clone());
        Ok(t)
    }

    /// The task and its ancestors, root first.
    async fn lineage(&mut self, id: &str) -> Result<Option<Vec<Task>>, Error> {
        let mut out = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(id) = next {
            if out.len() > 64 {
                return Ok(None);
            }
            let Some(t) = self.task(&id).await? else {
                return Ok(None);
            };
            next = t.parent_task_id.as_ref().map(ToString::to_string);
            out.push(t);
        }
        out.reverse();
        Ok(Some(out))
    }

    async fn attestation(&mut self, instance: &str, agent: &Agent) -> Result<String, Error> {
        if !self.attestations.contains_key(instance) {
            let found = match instance.parse() {
                Ok(id) => self
                    .broker
                    .store
                    .get_instance(&id)
                    .await?
                    .map(|i| i.attestation),
                Err(_) => None,
            };
            self.attestations.insert(instance.to_owned(), found);
        }
        Ok(self
            .attestations
            .get(instance)
            .cloned()
            .flatten()
            .unwrap_or_else(|| agent.attestation.kind().to_owned()))
    }
}

fn scopes(s: &BTreeSet<String>) -> BTreeSet<Scope> {
    s.iter().filter_map(|s| s.parse().ok()).collect()
}

fn tools_of<'t>(caps: &[Capability], tools: &'t BTreeMap<String, Tool>) -> Option<Vec<&'t Tool>> {
    caps.iter().map(|c| tools.get(c.tool.as_str())).collect()
}

/// A legitimate call: allowed and completed, by an agent not quarantined.
/// (Grants are not use: a task start that asked for more than was used is
/// meant to be denied by the proposal, and is listed.)
fn is_legit(d: &Decided, legit: &BTreeMap<(String, String), Legit>) -> bool {
    match &d.what {
        Recorded::Call {
            agent, tool, call, ..
        } => {
            d.completed
                && legit
                    .get(&(agent.clone(), tool.clone()))
                    .is_some_and(|l| l.calls.contains_key(call))
        }
        _ => false,
    }
}

impl Broker {
    pub(super) async fn replay(
        &self,
        set: &PolicySet,
        live: &PolicySet,
        seen: &Observed,
        legit: &BTreeMap<(String, String), Legit>,
        agents: &BTreeMap<String, Agent>,
        tools: &BTreeMap<String, Tool>,
    ) -> Result<Replay, Error> {
        let mut look = Lookup {
            broker: self,
            seen,
            tasks: BTreeMap::new(),
            attestations: BTreeMap::new(),
        };
        let mut out = Replay {
            decisions: seen.decided.len() as u64 + seen.not_replayed,
            not_replayed: seen.not_replayed,
            ..Replay::default()
        };
        for d in &seen.decided {
            if d.policy_version.as_deref() == Some(live.version())
                && let Some((verdict, reason, action, tools_named, what)) =
                    self.replay_one(live, d, &mut look, agents, tools).await?
            {
                out.live_checked += 1;
                if verdict == d.verdict {
                    out.live_agreed += 1;
                } else if out.live_disagreements.len() < MAX_LISTED {
                    out.live_disagreements.push(Changed {
                        seq: d.seq,
                        at: d.ts.to_rfc3339(),
                        action,
                        agent: d.agent().to_owned(),
                        tools: tools_named,
                        what,
                        recorded: d.verdict.clone(),
                        proposed: verdict.to_owned(),
                        reason,
                    });
                }
            }
            let Some((verdict, reason, action, tools_named, what)) =
                self.replay_one(set, d, &mut look, agents, tools).await?
            else {
                out.not_replayed += 1;
                continue;
            };
            out.replayed += 1;
            let recorded_allow = d.completed;
            let proposed_allow = match &d.what {
                // A call a person approved passes again if the proposal
                // holds it for approval.
                Recorded::Call { approved: true, .. } => verdict != "deny",
                _ => verdict == "allow",
            };
            if recorded_allow == proposed_allow {
                out.unchanged += 1;
                continue;
            }
            if recorded_allow {
                out.allow_to_deny += 1;
                if is_legit(d, legit) {
                    out.legitimate_allow_to_deny += 1;
                }
            } else {
                out.deny_to_allow += 1;
            }
            if out.changed.len() < MAX_LISTED {
                out.changed.push(Changed {
                    seq: d.seq,
                    at: d.ts.to_rfc3339(),
                    action,
                    agent: d.agent().to_owned(),
                    tools: tools_named,
                    what,
                    recorded: d.verdict.clone(),
                    proposed: verdict.to_owned(),
                    reason,
                });
            }
        }
        Ok(out)
    }

    /// One decision again: `None` when its facts cannot be rebuilt.
    #[allow(
        clippy::type_complexity,
        reason = "one replayed verdict and its labels"
    )]
    // One match over the four kinds of recorded decision, each turned into
    // the facts the live enforcement point built: split per kind, the
    // shared shape (facts in, verdict out) would be harder to see.
    async fn replay_one(
        &self,
        set: &PolicySet,
        d: &Decided,
        look: &mut Lookup<'_>,
        agents: &BTreeMap<String, Agent>,
        tools: &BTreeMap<String, Tool>,
    ) -> Result<Option<(&'static str, String, &'static str, Vec<String>, String)>, Error> {
        // Approval holds are not recorded with a decision: replayed as none.
        let beh = Behaviour {
            denials_5m: d.denials_5m,
            requires_approval: false,
        };
        let now = d.ts;
        let decision = match &d.what {
            Recorded::Start {
                agent,
                instance,
                intent,
                capabilities,
                on_behalf_of,
                ttl,
                exception,
            } => {
                let (Some(a), Some(ts)) = (agents.get(agent), tools_of(capabilities, tools)) else {
                    return Ok(None);
                };
                let att = look.attestation(instance, a).await?;
                let ask = TaskAsk {
                    intent,
                    capabilities,
                    on_behalf_of: on_behalf_of.as_deref(),
                    ttl: *ttl,
                    exception: *exception,
                };
                let facts = Facts::start_task(
                    a,
                    InstanceFacts {
                        id: instance,
                        attestation: &att,
                    },
                    &ask,
                    ts,
                    beh,
                    now,
                );
                (
                    set.decide(&facts),
                    "StartTask",
                    capabilities.iter().map(|c| c.tool.to_string()).collect(),
                    writ_core::scope::to_claim(capabilities),
                )
            }
            Recorded::Exchange {
                agent: _,
                task,
                tool,
                scopes: s,
            } => {
                let Some((lineage, chain)) = chain_of(look, agents, task).await? else {
                    return Ok(None);
                };
                let Some(t) = lineage.last() else {
                    return Ok(None);
                };
                let (Some(me), Some(tl)) = (agents.get(t.agent.as_str()), tools.get(tool)) else {
                    return Ok(None);
                };
                let att = look.attestation(t.instance_id.as_str(), me).await?;
                let view = TaskView::of_task(t, &att);
                let cap = Capability {
                    tool: tl.name.clone(),
                    scopes: scopes(s),
                };
                let facts = Facts::exchange_token(Chain::new(me, chain), &view, cap, tl, beh, now);
                (
                    set.decide(&facts),
                    "ExchangeToken",
                    vec![tool.clone()],
                    s.iter().cloned().collect::<Vec<_>>().join(" "),
                )
            }
            Recorded::Delegate {
                actor,
                actor_instance,
                parent,
                capabilities,
                ..
            } => {
                let Some((lineage, chain)) = chain_of(look, agents, parent).await? else {
                    return Ok(None);
                };
                let Some(p) = lineage.last() else {
                    return Ok(None);
                };
                let (Some(a), Some(planner), Some(ts)) = (
                    agents.get(actor),
                    agents.get(p.agent.as_str()),
                    tools_of(capabilities, tools),
                ) else {
                    return Ok(None);
                };
                let att = look.attestation(actor_instance, a).await?;
                let patt = look.attestation(p.instance_id.as_str(), planner).await?;
                let view = TaskView::of_task(p, &patt);
                let facts = Facts::delegate_task(
                    Chain::new(a, chain),
                    &att,
                    &view,
                    capabilities.clone(),
                    ts,
                    beh,
                    now,
                );
                (
                    set.decide(&facts),
                    "DelegateTask",
                    capabilities.iter().map(|c| c.tool.to_string()).collect(),
                    writ_core::scope::to_claim(capabilities),
                )
            }
            Recorded::Call {
                task,
                tool,
                scopes: s,
                call,
                ..
            } => {
                let Some((lineage, chain)) = chain_of(look, agents, task).await? else {
                    return Ok(None);
                };
                let Some(t) = lineage.last() else {
                    return Ok(None);
                };
                let (Some(me), Some(tl)) = (agents.get(t.agent.as_str()), tools.get(tool)) else {
                    return Ok(None);
                };
                let att = look.attestation(t.instance_id.as_str(), me).await?;
                let view = TaskView::of_task(t, &att);
                let request = CallRequest {
                    method: &call.method,
                    path: &call.path,
                    query: "",
                    mcp_method: call.mcp_method.as_deref(),
                    mcp_tool: call.mcp_tool.as_deref(),
                    mcp_resource: call.mcp_resource.as_deref(),
                    mcp_prompt: call.mcp_prompt.as_deref(),
                    arguments: None,
                };
                let facts = Facts::call_tool(
                    Chain::new(me, chain),
                    &view,
                    scopes(s),
                    tl,
                    request,
                    beh,
                    now,
                );
                let what = match &call.mcp_tool {
                    Some(m) => format!("{} {} ({m})", call.method, call.path),
                    None => format!("{} {}", call.method, call.path),
                };
                (set.decide(&facts), "CallTool", vec![tool.clone()], what)
            }
        };
        let (decision, action, tools_named, what) = decision;
        Ok(Some((
            decision.verdict().as_str(),
            decision.reason(),
            action,
            tools_named,
            what,
        )))
    }
}

/// A recorded task's lineage (its own task last) and the agents of its
/// chain, when the lineage and every agent in it are known.
async fn chain_of<'g>(
    look: &mut Lookup<'_>,
    agents: &'g BTreeMap<String, Agent>,
    task: &str,
) -> Result<Option<(Vec<Task>, Vec<&'g Agent>)>, Error> {
    let Some(lineage) = look.lineage(task).await? else {
        return Ok(None);
    };
    let chain: Option<Vec<&Agent>> = lineage
        .iter()
        .map(|t| agents.get(t.agent.as_str()))
        .collect();
    Ok(chain.map(|c| (lineage, c)))
}
