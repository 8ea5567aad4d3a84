//! Shadow mode: a candidate policy set decides beside the live one on real
//! traffic. Only the live set's decision counts; every difference is
//! audited and counted, so a change can be judged before it goes live.

use std::sync::Arc;

use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_policy::PolicySet;

use super::policies::Policies;
use crate::error::Error;

impl Policies {
    pub fn shadow(&self) -> Option<Arc<PolicySet>> {
        match self.shadow.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Sets (or clears) the shadow set; audited.
    /// Installs the shadow set kept in the store, if any (at start).
    pub(crate) async fn restore_shadow(&self) -> Result<(), Error> {
        let Some((version, sources)) = self.store.shadow_policy().await? else {
            return Ok(());
        };
        self.install_stored_shadow(version, sources)
    }

    /// Makes the stored shadow set (or its absence) this replica's, after
    /// another replica changed it.
    pub(crate) async fn reload_shadow(&self) -> Result<(), Error> {
        match self.store.shadow_policy().await? {
            Some((version, sources)) => {
                let same = self.shadow().is_some_and(|s| s.version() == version);
                if same {
                    return Ok(());
                }
                self.install_stored_shadow(version, sources)
            }
            None => {
                match self.shadow.write() {
                    Ok(mut g) => *g = None,
                    Err(p) => *p.into_inner() = None,
                }
                Ok(())
            }
        }
    }

    fn install_stored_shadow(
        &self,
        version: String,
        sources: Vec<(String, String)>,
    ) -> Result<(), Error> {
        let set = super::compile_stored("shadow policy set", &version, sources)?;
        tracing::info!(shadow_version = %set.version(), "shadow policy set restored");
        match self.shadow.write() {
            Ok(mut g) => *g = Some(Arc::new(set)),
            Err(p) => *p.into_inner() = Some(Arc::new(set)),
        }
        Ok(())
    }

    /// Installs (or with `None` removes) the shadow set, durably.
    pub async fn set_shadow(&self, set: Option<PolicySet>, actor: &str) -> Result<(), Error> {
        let mut event = AuditEvent::new(AuditKind::PolicyShadow, Outcome::Success, actor);
        event = match &set {
            Some(s) => event
                .policy(s.version(), Vec::new())
                .reason("shadow set installed"),
            None => event.reason("shadow set removed"),
        };
        let stored = set.as_ref().map(|s| {
            (
                s.version().to_owned(),
                s.sources()
                    .iter()
                    .map(|src| (src.name.clone(), src.text.clone()))
                    .collect(),
            )
        });
        self.store
            .set_shadow_policy(stored, self.now(), vec![event])
            .await?;
        let set = set.map(Arc::new);
        match self.shadow.write() {
            Ok(mut g) => *g = set,
            Err(p) => *p.into_inner() = set,
        }
        Ok(())
    }
}
