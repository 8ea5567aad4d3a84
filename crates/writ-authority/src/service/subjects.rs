//! What a decision knows of who is asking: the agent, the chain of tasks
//! it acts in and their agents, how its instance attested, and its recent
//! behaviour. Task starts, exchanges, approvals, AuthZEN and gateways'
//! bundles all read these facts here, so they cannot differ between them.
//!
//! Behaviour: refusals counted against whoever asked, once, in the store,
//! so that every broker replica and (through its bundle) every gateway
//! sees one number per agent (`context.behaviour.denials_5m`).
//!
//! Who is charged: the agent whose own request was refused. A task start
//! or an exchange: the calling instance's agent. A delegation: the planner
//! that asked (the holder of the task token), never the sub-agent named as
//! the actor. A gateway call: the agent acting, reported with the
//! gateway's decisions. An AuthZEN question: nobody, unless the enforcement
//! point says it enforced the answer (`context.enforced`).

use std::collections::BTreeMap;
use std::sync::Arc;

use writ_core::api::{Agent, Task};
use writ_core::ids::agent_spiffe_id;
use writ_core::token::Actor;
use writ_core::{AgentName, Clock, InstanceId, Timestamp};
use writ_policy::Behaviour;
use writ_store::Store;

use crate::error::Error;

/// The window `denials_5m` counts, seconds.
pub const DENIAL_WINDOW_SECS: i64 = 300;

/// The facts about subjects every decision reads.
pub struct Subjects {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    trust_domain: String,
}

impl Subjects {
    pub(super) fn new(h: &super::Handles) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            trust_domain: h.config.trust_domain.clone(),
        }
    }

    /// A registered agent.
    pub async fn agent(&self, name: &AgentName) -> Result<Agent, Error> {
        self.store
            .get_agent(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("agent {name} not found")))
    }

    /// The task and its ancestors, root first.
    pub(crate) async fn lineage(&self, task: &Task) -> Result<Vec<Task>, Error> {
        let mut out = vec![task.clone()];
        let mut next = task.parent_task_id.clone();
        while let Some(id) = next {
            if out.len() > 64 {
                return Err(Error::Internal(
                    "delegation chain too long or cyclic".into(),
                ));
            }
            let t = self
                .store
                .get_task(&id)
                .await?
                .ok_or_else(|| Error::Internal(format!("parent task {id} missing")))?;
            next = t.parent_task_id.clone();
            out.push(t);
        }
        out.reverse();
        Ok(out)
    }

    /// `sub` (the root task's agent) and the nested `act` of every later hop.
    pub(crate) fn subject_and_actors(
        &self,
        lineage: &[Task],
    ) -> Result<(String, Option<Actor>), Error> {
        let td = &self.trust_domain;
        let Some(root) = lineage.first() else {
            return Err(Error::Internal("empty lineage".into()));
        };
        let mut act: Option<Actor> = None;
        for t in lineage.iter().skip(1) {
            act = Some(Actor {
                sub: agent_spiffe_id(td, &t.agent),
                act: act.map(Box::new),
            });
        }
        Ok((agent_spiffe_id(td, &root.agent), act))
    }

    /// The agents of a lineage, root first.
    pub(crate) async fn lineage_agents(&self, lineage: &[Task]) -> Result<Vec<Agent>, Error> {
        let mut agents = Vec::with_capacity(lineage.len());
        for t in lineage {
            agents.push(self.agent(&t.agent).await?);
        }
        Ok(agents)
    }

    /// How an instance attested, as policy sees it.
    pub(crate) async fn instance_attestation(&self, id: &InstanceId) -> Result<String, Error> {
        self.store
            .get_instance(id)
            .await?
            .map(|i| i.attestation)
            .ok_or_else(|| Error::Unauthenticated(format!("instance {id} is not known")))
    }

    /// What policy sees of `agent`'s recent behaviour.
    pub(crate) async fn behaviour(
        &self,
        agent: &AgentName,
        now: Timestamp,
    ) -> Result<Behaviour, Error> {
        let denials_5m = self
            .store
            .denials_since(agent, now.add_secs(-DENIAL_WINDOW_SECS))
            .await?;
        let requires_approval = self.store.approval_held(agent, now).await?;
        Ok(Behaviour {
            denials_5m,
            requires_approval,
        })
    }

    /// Counts one refusal against `agent`.
    pub(crate) async fn count_denial(
        &self,
        agent: &AgentName,
        now: Timestamp,
    ) -> Result<(), Error> {
        Ok(self.store.record_denial(agent, now).await?)
    }

    /// Every agent's count in the window, for gateways' bundles.
    pub async fn behaviour_counts(&self) -> Result<BTreeMap<AgentName, u32>, Error> {
        let since = self.clock.now().add_secs(-DENIAL_WINDOW_SECS);
        Ok(self.store.denial_counts(since).await?.into_iter().collect())
    }
}
