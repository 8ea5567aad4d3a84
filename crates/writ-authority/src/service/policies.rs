//! The policy sets a broker holds: the live one (made live, reloaded after
//! another replica, or refused) and the shadow set beside it.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use writ_core::Clock;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_policy::PolicySet;
use writ_store::Store;

use super::compile_stored;
use crate::error::Error;
use crate::metrics::Metrics;

/// The policy sets a broker decides with: the live one, a shadow set
/// beside it, and every decision. Holds only the store (where sets are
/// kept and decisions audited), the clock and the counters.
pub struct Policies {
    pub(super) live: RwLock<Arc<PolicySet>>,
    /// The live set was made live (and recorded) since this broker started.
    pub(super) loaded: AtomicBool,
    pub(super) shadow: RwLock<Option<Arc<PolicySet>>>,
    pub(super) store: Arc<dyn Store>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) metrics: Arc<Metrics>,
}

impl Policies {
    pub fn new(
        live: PolicySet,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            live: RwLock::new(Arc::new(live)),
            loaded: AtomicBool::new(false),
            shadow: RwLock::new(None),
            store,
            clock,
            metrics,
        }
    }

    pub(super) fn now(&self) -> writ_core::Timestamp {
        self.clock.now()
    }

    /// The live policy set.
    pub fn live(&self) -> Arc<PolicySet> {
        match self.live.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Makes `set` the live policy set (it was validated when compiled),
    /// recording the version and where it came from. A set identical to the
    /// live one changes nothing.
    pub async fn set_live(&self, set: PolicySet, origin: &str, actor: &str) -> Result<bool, Error> {
        if self.live().version() == set.version() && self.loaded() {
            return Ok(false);
        }
        let event = AuditEvent::new(AuditKind::PolicyLoad, Outcome::Success, actor)
            .policy(set.version(), Vec::new())
            .detail(serde_json::json!({
                "origin": origin,
                "policies": set.len(),
                "files": set.sources().iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            }));
        let sources: Vec<(String, String)> = set
            .sources()
            .iter()
            .map(|s| (s.name.clone(), s.text.clone()))
            .collect();
        self.store
            .activate_policy(set.version(), &sources, origin, self.now(), vec![event])
            .await?;
        tracing::info!(policy_version = %set.version(), %origin, policies = set.len(), "policy set is live");
        match self.live.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        self.loaded.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }

    /// Makes the set that went live last in the store this replica's live
    /// set, after another replica activated it (nothing is recorded: the
    /// replica that activated it did).
    pub(crate) async fn reload(&self) -> Result<(), Error> {
        let Some((version, sources)) = self.store.latest_policy().await? else {
            return Ok(());
        };
        if self.live().version() == version {
            return Ok(());
        }
        let set = compile_stored("policy set", &version, sources)?;
        tracing::info!(policy_version = %set.version(), "policy set activated by another replica is live");
        match self.live.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records a policy set that was refused (the live one stays).
    pub async fn refused(&self, origin: &str, actor: &str, error: &str) -> Result<(), Error> {
        tracing::error!(%origin, %error, "policy set refused; the previous set stays live");
        let event = AuditEvent::new(AuditKind::PolicyLoad, Outcome::Failure, actor)
            .reason(error)
            .detail(serde_json::json!({ "origin": origin }));
        self.store.append_audit(self.now(), vec![event]).await?;
        Ok(())
    }
}
