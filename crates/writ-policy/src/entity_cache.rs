//! The Cedar entities of a decision, kept between decisions.
//!
//! Building an agent's, a tool's, an instance's and a task's entities and
//! the `Entities` Cedar evaluates against (with its transitive closure)
//! was about a sixth of a decision (BENCHMARKS.md), though the same agent
//! asks about the same tool again and again. The cache keeps the built `Entities` beside an owned
//! copy of every fact they were built from, and uses them only when those
//! facts are equal to the ones of the decision asking: a changed agent
//! (quarantined, new attributes), tool or task is a miss and is built
//! afresh, so nothing is ever answered from stale entities and no
//! invalidation has to be sent. It lives in a [`PolicySet`](crate::PolicySet),
//! so a policy reload starts it empty.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cedar_policy::Entities;
use writ_core::api::{Agent, Tool};

use crate::facts::{Facts, InstanceFacts, TaskView};

/// Entries kept; past this one is dropped for each one added. The hot set
/// is the (agent, instance, task, tool) combinations at work right now.
const CAPACITY: usize = 1024;

/// Facts larger than this (their text, in bytes) are decided on entities
/// built for the one decision and not kept, so a full cache stays a few
/// MiB whatever a caller puts in an intent or an on-behalf-of.
const MAX_KEPT_BYTES: usize = 4096;

/// What one decision's entities are built from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'f> {
    /// The chain's agents, root first, each once; the principal among them.
    pub(crate) agents: &'f [&'f Agent],
    /// The agent acting now (the instance's `agent`).
    pub(crate) principal: &'f Agent,
    pub(crate) tool: &'f Tool,
    /// The humans acted for, each once.
    pub(crate) humans: &'f [&'f str],
    pub(crate) instance: Option<InstanceFacts<'f>>,
    pub(crate) task: Option<&'f TaskView<'f>>,
}

impl Inputs<'_> {
    /// About how many bytes of text the facts hold.
    fn text_bytes(&self) -> usize {
        let map = |m: &std::collections::BTreeMap<String, String>| {
            m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        };
        let agents: usize = self
            .agents
            .iter()
            .map(|a| a.name.as_str().len() + a.spiffe_id.len() + map(&a.attributes))
            .sum();
        let tool = self.tool.name.as_str().len()
            + self.tool.audience.len()
            + self
                .tool
                .scopes
                .iter()
                .map(|s| s.as_str().len())
                .sum::<usize>()
            + map(&self.tool.attributes);
        let humans: usize = self.humans.iter().map(|h| h.len()).sum();
        let instance = self
            .instance
            .map_or(0, |i| i.id.len() + i.attestation.len());
        let task = self.task.map_or(0, TaskView::text_bytes);
        agents + tool + humans + instance + task
    }
}

/// The same facts, owned.
#[derive(Debug)]
struct Owned {
    agents: Vec<Agent>,
    principal: String,
    tool: Tool,
    humans: Vec<String>,
    instance: Option<(String, String)>,
    task: Option<TaskView<'static>>,
}

impl Owned {
    fn of(i: &Inputs<'_>) -> Self {
        Self {
            agents: i.agents.iter().map(|a| (*a).clone()).collect(),
            principal: i.principal.name.as_str().to_owned(),
            tool: i.tool.clone(),
            humans: i.humans.iter().map(|h| (*h).to_owned()).collect(),
            instance: i
                .instance
                .map(|x| (x.id.to_owned(), x.attestation.to_owned())),
            task: i.task.map(TaskView::to_owned_view),
        }
    }

    fn equals(&self, i: &Inputs<'_>) -> bool {
        self.agents.len() == i.agents.len()
            && self.agents.iter().zip(i.agents).all(|(a, b)| a == *b)
            && self.principal == i.principal.name.as_str()
            && self.tool == *i.tool
            && self.humans.len() == i.humans.len()
            && self.humans.iter().zip(i.humans).all(|(a, b)| a == b)
            && match (&self.instance, i.instance) {
                (None, None) => true,
                (Some((id, att)), Some(x)) => id == x.id && att == x.attestation,
                _ => false,
            }
            && match (&self.task, i.task) {
                (None, None) => true,
                (Some(a), Some(b)) => a == b,
                _ => false,
            }
    }
}

struct Entry {
    facts: Owned,
    entities: Arc<Entities>,
}

/// Built entities by who and what they are about; see the module.
#[derive(Default)]
pub(crate) struct EntityCache {
    hasher: std::collections::hash_map::RandomState,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    /// Decisions whose entities had to be built.
    builds: AtomicU64,
}

impl std::fmt::Debug for EntityCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityCache").finish_non_exhaustive()
    }
}

impl EntityCache {
    /// The entities for `inputs`: the kept ones when they were built from
    /// equal facts, else `build`'s (kept for next time).
    pub(crate) fn get_or_build(
        &self,
        inputs: &Inputs<'_>,
        build: impl FnOnce() -> Result<Entities, String>,
    ) -> Result<Arc<Entities>, String> {
        let key = self.key(inputs);
        // Only the lookup holds the lock; the comparison does not.
        let found = self
            .entries
            .lock()
            .ok()
            .and_then(|entries| entries.get(&key).map(Arc::clone));
        if let Some(e) = found
            && e.facts.equals(inputs)
        {
            return Ok(Arc::clone(&e.entities));
        }
        self.builds.fetch_add(1, Ordering::Relaxed);
        let entities = Arc::new(build()?);
        if inputs.text_bytes() > MAX_KEPT_BYTES {
            return Ok(entities);
        }
        let entry = Arc::new(Entry {
            facts: Owned::of(inputs),
            entities: Arc::clone(&entities),
        });
        // A poisoned lock only costs the cache: the answer is built above.
        // What is dropped is dropped after the lock is released.
        let mut evicted = None;
        let replaced = self.entries.lock().ok().map(|mut entries| {
            if entries.len() >= CAPACITY && !entries.contains_key(&key) {
                let victim = entries.keys().next().copied();
                evicted = victim.and_then(|v| entries.remove(&v));
            }
            entries.insert(key, entry)
        });
        drop((evicted, replaced));
        Ok(entities)
    }

    /// Who and what the entities are about (names and ids, not contents:
    /// an entry whose contents changed is found and then not used).
    fn key(&self, i: &Inputs<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        for a in i.agents {
            a.name.as_str().hash(&mut h);
        }
        i.principal.name.as_str().hash(&mut h);
        i.tool.name.as_str().hash(&mut h);
        i.humans.hash(&mut h);
        i.instance.map(|x| x.id).hash(&mut h);
        i.task.map(TaskView::id).hash(&mut h);
        h.finish()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// How many decisions had to build their entities.
    #[cfg(test)]
    pub(crate) fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}

/// The deduplicated agents and humans of `facts`, as [`Inputs`] lists them.
pub(crate) fn parties<'f>(facts: &'f Facts<'f>) -> (Vec<&'f Agent>, Vec<&'f str>) {
    let mut agents: Vec<&Agent> = Vec::with_capacity(facts.chain.earlier.len() + 1);
    for a in facts
        .chain
        .earlier
        .iter()
        .copied()
        .chain(std::iter::once(facts.chain.principal))
    {
        if !agents.iter().any(|b| b.name == a.name) {
            agents.push(a);
        }
    }
    let mut humans: Vec<&str> = Vec::new();
    for h in facts
        .on_behalf_of
        .into_iter()
        .chain(facts.task.and_then(|t| t.on_behalf_of.as_deref()))
    {
        if !humans.contains(&h) {
            humans.push(h);
        }
    }
    (agents, humans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use writ_core::Timestamp;
    use writ_core::api::Attestation;

    fn agent() -> Agent {
        Agent {
            name: "demo-agent".parse().unwrap(),
            spiffe_id: "spiffe://writ.local/agent/demo-agent".into(),
            attestation: Attestation::JoinToken,
            attributes: BTreeMap::new(),
            workload: None,
            quarantined: false,
            created_at: Timestamp::from_secs(0),
        }
    }

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.parse().unwrap(),
            audience: "https://tool.example".into(),
            scopes: Vec::new(),
            attributes: BTreeMap::new(),
            upstream: None,
            secret_header: None,
            gateway: None,
            created_at: Timestamp::from_secs(0),
        }
    }

    /// The cache's answer for `agent` asking about `tool`, built by `build`
    /// on a miss.
    fn ask(
        cache: &EntityCache,
        agent: &Agent,
        tool: &Tool,
        build: impl FnOnce() -> Result<Entities, String>,
    ) -> Result<Arc<Entities>, String> {
        let agents = [agent];
        let inputs = Inputs {
            agents: &agents,
            principal: agent,
            tool,
            humans: &[],
            instance: None,
            task: None,
        };
        cache.get_or_build(&inputs, build)
    }

    #[test]
    fn the_cache_stays_bounded_and_builds_only_on_a_miss() {
        let cache = EntityCache::default();
        let a = agent();
        let mut builds = 0;
        for round in 0..2 {
            for i in 0..3 {
                ask(&cache, &a, &tool(&format!("tool-{i}")), || {
                    builds += 1;
                    Ok(Entities::empty())
                })
                .unwrap();
            }
            assert_eq!(builds, 3, "round {round}");
            assert_eq!(cache.builds(), 3);
        }
        for i in 0..CAPACITY + 10 {
            ask(&cache, &a, &tool(&format!("tool-{i}")), || {
                Ok(Entities::empty())
            })
            .unwrap();
            assert!(cache.len() <= CAPACITY);
        }
        // Facts too large to keep are decided and not kept.
        let mut big = agent();
        big.attributes
            .insert("note".into(), "x".repeat(MAX_KEPT_BYTES));
        let before = (cache.len(), cache.builds());
        for _ in 0..2 {
            ask(&cache, &big, &tool("tool-big"), || Ok(Entities::empty())).unwrap();
        }
        assert_eq!((cache.len(), cache.builds()), (before.0, before.1 + 2));

        // A build that fails is not kept.
        let before = cache.len();
        assert!(ask(&cache, &a, &tool("failing"), || Err("no".into())).is_err());
        assert_eq!(cache.len(), before);
    }
}
