//! Every recorded decision of the window, decided again by the proposed
//! set: the facts rebuilt by writ-policy's one constructor per action, the
//! verdict by the same `PolicySet::decide` every enforcement point calls.

use std::collections::{BTreeMap, BTreeSet};

use writ_core::api::{Agent, Task, TaskStatus, Tool};
use writ_core::scope::Capability;
use writ_core::{Scope, TaskId, Timestamp};
use writ_policy::{
    Action, Behaviour, Chain, Decision, Facts, InstanceFacts, PolicySet, RecordedRequest, TaskAsk,
    TaskView,
};

use super::Reports;
use super::observe::{CallShape, Decided, EvaluatedSeen, Observed, Recorded, TaskSeen};
use super::propose::Legit;
use super::{Changed, MAX_LISTED, Replay};
use crate::error::Error;

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
    reports: &'a Reports,
    seen: &'a Observed,
    tasks: BTreeMap<String, Option<Task>>,
    attestations: BTreeMap<String, Option<String>>,
    /// Decisions whose verdict turned on a value their record redacted.
    redacted_dependent: u64,
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
                Ok(tid) => self.reports.store.get_task(&tid).await?,
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
                    .reports
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

impl Reports {
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
            reports: self,
            seen,
            tasks: BTreeMap::new(),
            attestations: BTreeMap::new(),
            redacted_dependent: 0,
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
            let before = look.redacted_dependent;
            let Some((verdict, reason, action, tools_named, what)) =
                self.replay_one(set, d, &mut look, agents, tools).await?
            else {
                out.not_replayed += 1;
                if look.redacted_dependent > before {
                    out.redacted_dependent += 1;
                }
                continue;
            };
            out.replayed += 1;
            let recorded_allow = d.completed;
            let proposed_allow = match &d.what {
                // A call a person approved passes again if the proposal
                // holds it for approval.
                Recorded::Call { approved: true, .. }
                | Recorded::Start { approved: true, .. }
                | Recorded::Evaluated { approved: true, .. } => verdict != "deny",
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
    // One match over the kinds of recorded decision, each turned by its own
    // function into the facts the live enforcement point built: the match
    // stays here so the shared shape (facts in, verdict out) is seen whole.
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
        let on = Against {
            set,
            agents,
            tools,
            beh,
            now,
        };
        let replayed = match &d.what {
            Recorded::Start {
                agent,
                instance,
                intent,
                capabilities,
                on_behalf_of,
                ttl,
                exception,
                ..
            } => {
                let ask = TaskAsk {
                    intent,
                    capabilities,
                    on_behalf_of: on_behalf_of.as_deref(),
                    ttl: *ttl,
                    exception: *exception,
                };
                replay_start(&on, look, agent, instance, &ask).await?
            }
            Recorded::Exchange {
                agent: _,
                task,
                tool,
                scopes: s,
            } => replay_exchange(&on, look, task, tool, s).await?,
            Recorded::Delegate {
                actor,
                actor_instance,
                parent,
                capabilities,
                ..
            } => replay_delegate(&on, look, actor, actor_instance, parent, capabilities).await?,
            Recorded::Call {
                task,
                tool,
                scopes: s,
                call,
                request,
                ..
            } => replay_call(&on, look, task, tool, s, call, request.as_ref()).await?,
            Recorded::Evaluated { action, seen, .. } => {
                replay_evaluated(&on, look, *action, seen).await?
            }
        };
        let Some((decision, action, tools_named, what)) = replayed else {
            return Ok(None);
        };
        Ok(Some((
            decision.verdict().as_str(),
            decision.reason(),
            action,
            tools_named,
            what,
        )))
    }
}

/// What every recorded decision is decided again against: the proposed
/// set, the agents and tools as they are, and the decision's own
/// behaviour and time.
struct Against<'a> {
    set: &'a PolicySet,
    agents: &'a BTreeMap<String, Agent>,
    tools: &'a BTreeMap<String, Tool>,
    beh: Behaviour,
    now: Timestamp,
}

/// One decision decided again: its verdict, its action, the tools it
/// named and what it asked for (for the report's list of changes).
type Replayed = (Decision, &'static str, Vec<String>, String);

/// A task start again, by the instance that asked.
async fn replay_start(
    on: &Against<'_>,
    look: &mut Lookup<'_>,
    agent: &str,
    instance: &str,
    ask: &TaskAsk<'_>,
) -> Result<Option<Replayed>, Error> {
    let (Some(a), Some(ts)) = (on.agents.get(agent), tools_of(ask.capabilities, on.tools)) else {
        return Ok(None);
    };
    let att = look.attestation(instance, a).await?;
    let facts = Facts::start_task(
        a,
        InstanceFacts {
            id: instance,
            attestation: &att,
        },
        ask,
        ts,
        on.beh,
        on.now,
    );
    Ok(Some((
        on.set.decide(&facts),
        "StartTask",
        ask.capabilities
            .iter()
            .map(|c| c.tool.to_string())
            .collect(),
        writ_core::scope::to_claim(ask.capabilities),
    )))
}

/// A token exchange again, under the task's lineage as it is now.
async fn replay_exchange(
    on: &Against<'_>,
    look: &mut Lookup<'_>,
    task: &str,
    tool: &str,
    s: &BTreeSet<String>,
) -> Result<Option<Replayed>, Error> {
    let Some((lineage, chain)) = chain_of(look, on.agents, task).await? else {
        return Ok(None);
    };
    let Some(t) = lineage.last() else {
        return Ok(None);
    };
    let (Some(me), Some(tl)) = (on.agents.get(t.agent.as_str()), on.tools.get(tool)) else {
        return Ok(None);
    };
    let att = look.attestation(t.instance_id.as_str(), me).await?;
    let view = TaskView::of_task(t, &att);
    let cap = Capability {
        tool: tl.name.clone(),
        scopes: scopes(s),
    };
    let facts = Facts::exchange_token(Chain::new(me, chain), &view, cap, tl, on.beh, on.now);
    Ok(Some((
        on.set.decide(&facts),
        "ExchangeToken",
        vec![tool.to_owned()],
        s.iter().cloned().collect::<Vec<_>>().join(" "),
    )))
}

/// A delegation again: the parent task's lineage handing `capabilities`
/// to the actor.
async fn replay_delegate(
    on: &Against<'_>,
    look: &mut Lookup<'_>,
    actor: &str,
    actor_instance: &str,
    parent: &str,
    capabilities: &[Capability],
) -> Result<Option<Replayed>, Error> {
    let Some((lineage, chain)) = chain_of(look, on.agents, parent).await? else {
        return Ok(None);
    };
    let Some(p) = lineage.last() else {
        return Ok(None);
    };
    let (Some(a), Some(planner), Some(ts)) = (
        on.agents.get(actor),
        on.agents.get(p.agent.as_str()),
        tools_of(capabilities, on.tools),
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
        capabilities.to_vec(),
        ts,
        on.beh,
        on.now,
    );
    Ok(Some((
        on.set.decide(&facts),
        "DelegateTask",
        capabilities.iter().map(|c| c.tool.to_string()).collect(),
        writ_core::scope::to_claim(capabilities),
    )))
}

/// A gateway call again, on the request as recorded; `None` (and counted)
/// when the set reads a part of it the record redacted.
async fn replay_call(
    on: &Against<'_>,
    look: &mut Lookup<'_>,
    task: &str,
    tool: &str,
    s: &BTreeSet<String>,
    call: &CallShape,
    request: Option<&RecordedRequest>,
) -> Result<Option<Replayed>, Error> {
    let Some((lineage, chain)) = chain_of(look, on.agents, task).await? else {
        return Ok(None);
    };
    let Some(t) = lineage.last() else {
        return Ok(None);
    };
    let (Some(me), Some(tl)) = (on.agents.get(t.agent.as_str()), on.tools.get(tool)) else {
        return Ok(None);
    };
    let att = look.attestation(t.instance_id.as_str(), me).await?;
    let view = TaskView::of_task(t, &att);
    // Records from before the query and arguments were kept:
    // what the record has, without them.
    let rec = request.cloned().unwrap_or_else(|| RecordedRequest {
        method: call.method.clone(),
        path: call.path.clone(),
        mcp_method: call.mcp_method.clone(),
        mcp_tool: call.mcp_tool.clone(),
        mcp_resource: call.mcp_resource.clone(),
        mcp_prompt: call.mcp_prompt.clone(),
        ..RecordedRequest::default()
    });
    let decided = exact(on.set, &rec, |r| {
        on.set.decide(&Facts::call_tool(
            Chain::new(me, chain.iter().copied()),
            &view,
            scopes(s),
            tl,
            r,
            on.beh,
            on.now,
        ))
    });
    let Some(decision) = decided else {
        look.redacted_dependent += 1;
        return Ok(None);
    };
    let what = match &call.mcp_tool {
        Some(m) => format!("{} {} ({m})", call.method, call.path),
        None => format!("{} {}", call.method, call.path),
    };
    Ok(Some((decision, "CallTool", vec![tool.to_owned()], what)))
}

/// An enforced AuthZEN decision again, on the facts it recorded: about no
/// task (what the asker said stands in for one), or in its task.
async fn replay_evaluated(
    on: &Against<'_>,
    look: &mut Lookup<'_>,
    action: Action,
    seen: &EvaluatedSeen,
) -> Result<Option<Replayed>, Error> {
    let (set, beh, now) = (on.set, on.beh, on.now);
    let (Some(a), Some(tl)) = (on.agents.get(&seen.agent), on.tools.get(&seen.tool)) else {
        return Ok(None);
    };
    let cap = Capability {
        tool: tl.name.clone(),
        scopes: scopes(&seen.scopes),
    };
    let inst_att = match &seen.instance {
        Some(i) => Some((i.as_str(), look.attestation(i, a).await?)),
        None => None,
    };
    let instance = inst_att.as_ref().map(|(id, att)| InstanceFacts {
        id,
        attestation: att,
    });
    let rec = seen.request.clone().unwrap_or_default();
    let what = evaluated_what(action, seen);
    let decided = match &seen.task {
        None => {
            let caps = [cap];
            let ask = TaskAsk {
                intent: seen.intent.as_deref().unwrap_or_default(),
                capabilities: &caps,
                on_behalf_of: seen.on_behalf_of.as_deref(),
                ttl: seen.ttl.unwrap_or(0),
                exception: false,
            };
            exact(set, &rec, |r| {
                set.decide(&Facts::untasked(
                    action,
                    a,
                    instance,
                    &ask,
                    tl,
                    seen.request.as_ref().map(|_| r),
                    beh,
                    now,
                ))
            })
        }
        Some(task) => {
            let Some((lineage, chain)) = chain_of(look, on.agents, task).await? else {
                return Ok(None);
            };
            let Some(t) = lineage.last() else {
                return Ok(None);
            };
            let Some(owner) = on.agents.get(t.agent.as_str()) else {
                return Ok(None);
            };
            let att = look.attestation(t.instance_id.as_str(), owner).await?;
            let view = TaskView::of_task(t, &att);
            let chain = || Chain::new(a, chain.iter().copied());
            match action {
                Action::ExchangeToken => {
                    Some(set.decide(&Facts::exchange_token(chain(), &view, cap, tl, beh, now)))
                }
                Action::DelegateTask => Some(set.decide(&Facts::delegate_task(
                    chain(),
                    instance.map_or(a.attestation.kind(), |i| i.attestation),
                    &view,
                    vec![cap],
                    vec![tl],
                    beh,
                    now,
                ))),
                Action::CallTool if seen.request.is_some() => exact(set, &rec, |r| {
                    set.decide(&Facts::call_tool(
                        chain(),
                        &view,
                        cap.scopes.clone(),
                        tl,
                        r,
                        beh,
                        now,
                    ))
                }),
                // Never decided with a task (the live point
                // refuses it before policy).
                Action::StartTask | Action::CallTool => return Ok(None),
            }
        }
    };
    let Some(decision) = decided else {
        look.redacted_dependent += 1;
        return Ok(None);
    };
    Ok(Some((
        decision,
        action.cedar_id(),
        vec![seen.tool.clone()],
        what,
    )))
}

/// What an AuthZEN decision asked for, for the report's list of changes.
fn evaluated_what(action: Action, seen: &EvaluatedSeen) -> String {
    match (&seen.request, action) {
        (Some(r), Action::CallTool) => match &r.mcp_tool {
            Some(m) => format!("AuthZEN {} {} ({m})", r.method, r.path),
            None => format!("AuthZEN {} {}", r.method, r.path),
        },
        _ => format!(
            "AuthZEN {}",
            seen.scopes.iter().cloned().collect::<Vec<_>>().join(" ")
        ),
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

/// Decides a recorded request: the verdict, or `None` when `set` reads a
/// part of the request its record redacted (the verdict would be a guess).
fn exact(
    set: &PolicySet,
    rec: &RecordedRequest,
    decide: impl FnOnce(writ_policy::CallRequest<'_>) -> Decision,
) -> Option<Decision> {
    if !rec.replayable_by(set) {
        return None;
    }
    let args = rec.arguments_text();
    Some(decide(rec.request(args.as_deref())))
}
