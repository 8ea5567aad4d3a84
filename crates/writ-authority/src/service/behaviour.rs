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

use writ_core::{AgentName, Timestamp};
use writ_policy::Behaviour;

use super::Broker;
use crate::error::Error;

/// The window `denials_5m` counts, seconds.
pub const DENIAL_WINDOW_SECS: i64 = 300;

impl Broker {
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
        let since = self.now().add_secs(-DENIAL_WINDOW_SECS);
        Ok(self.store.denial_counts(since).await?.into_iter().collect())
    }
}
