//! Policy: every decision the broker makes (the live set decides, a shadow
//! set beside it), and policy sets through the API: read the live one, push
//! a new one, history.

use writ_core::api::{PolicyInfo, PolicyVersion, PushPolicies};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_policy::{Decision, Facts, PolicySet, PolicySource};

use super::policies::Policies;
use crate::error::Error;
use crate::metrics;

const MAX_FILES: usize = 256;

/// A `decision` span (action, then verdict, policy version, determining
/// policies; never a credential) inside the request being traced, if it
/// is: with tracing off there is no current span and none is made.
fn decision_span(action: &'static str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "decision",
        writ.action = action,
        writ.verdict = tracing::field::Empty,
        writ.policy_version = tracing::field::Empty,
        writ.determining_policies = tracing::field::Empty,
    )
}

fn record_decision(span: &tracing::Span, d: &Decision) {
    if span.is_none() {
        return;
    }
    span.record("writ.verdict", d.verdict().as_str());
    span.record("writ.policy_version", d.policy_version());
    span.record(
        "writ.determining_policies",
        tracing::field::display(d.determining_policies().join(",")),
    );
}

impl Policies {
    /// The live decision; the shadow set (if any) decides too, and a
    /// difference is recorded.
    pub async fn decide(&self, live: &PolicySet, facts: &Facts<'_>) -> Result<Decision, Error> {
        let span = decision_span(facts.action().cedar_id());
        let d = span.in_scope(|| live.decide(facts));
        record_decision(&span, &d);
        metrics::decision("broker", facts.action().cedar_id(), &d);
        let Some(shadow) = self.shadow() else {
            return Ok(d);
        };
        let s = shadow.decide(facts);
        if s.verdict() != d.verdict() {
            metrics::inc(&self.metrics.shadow_differences);
            let event = AuditEvent::new(AuditKind::PolicyShadow, Outcome::Failure, "system")
                .agent(&facts.principal().name)
                .policy(d.policy_version(), d.determining_policies().to_vec())
                .reason(format!(
                    "shadow set {} would {} ({}); live set {} says {}",
                    s.policy_version(),
                    s.verdict().as_str(),
                    s.reason(),
                    d.policy_version(),
                    d.verdict().as_str(),
                ))
                .detail(serde_json::json!({
                    "action": facts.action().cedar_id(),
                    "intent": facts.intent(),
                    "capabilities": facts.capabilities(),
                    "shadow_version": s.policy_version(),
                    "shadow_policies": s.determining_policies(),
                }));
            self.store.append_audit(self.now(), vec![event]).await?;
        }
        Ok(d)
    }

    pub fn info(&self) -> PolicyInfo {
        info_of(&self.live())
    }

    /// Validates a whole set and makes it live; an invalid set is refused
    /// with its location and the live set stays.
    pub async fn push(&self, req: PushPolicies, actor: &str) -> Result<PolicyInfo, Error> {
        if req.files.len() > MAX_FILES {
            return Err(Error::Invalid(format!("at most {MAX_FILES} files")));
        }
        for name in req.files.keys() {
            let ok = writ_policy::FileKind::of(name).is_some()
                && !name.contains('/')
                && !name.contains('\\')
                && !name.starts_with('.')
                && name.len() <= 128;
            if !ok {
                return Err(Error::Invalid(format!(
                    "file name {name:?} must be a plain *.cedar, *.cedarschema or entities.json name"
                )));
            }
        }
        let sources = req
            .files
            .into_iter()
            .map(|(name, text)| PolicySource { name, text })
            .collect();
        let set = match PolicySet::compile(sources) {
            Ok(s) => s,
            Err(e) => {
                self.refused("push", actor, &e.to_string()).await?;
                return Err(Error::Invalid(format!("policy set refused: {e}")));
            }
        };
        self.set_live(set, "push", actor).await?;
        Ok(self.info())
    }

    /// Replaces the live set's entity data (`entities.json`) with `entities`
    /// (Cedar's entity JSON), validated against the live schema: the set
    /// with the new data goes live as a new version, or is refused and the
    /// live one stays.
    pub async fn push_entities(
        &self,
        entities: serde_json::Value,
        actor: &str,
    ) -> Result<PolicyInfo, Error> {
        let Some(list) = entities.as_array() else {
            return Err(Error::Invalid(
                "entities must be a JSON array (Cedar's entity JSON format)".into(),
            ));
        };
        if list.len() > writ_policy::MAX_ENTITIES {
            return Err(Error::Invalid(format!(
                "at most {} entities",
                writ_policy::MAX_ENTITIES
            )));
        }
        let mut sources: Vec<PolicySource> = self
            .live()
            .sources()
            .iter()
            .filter(|s| s.name != writ_policy::ENTITIES_FILE)
            .cloned()
            .collect();
        let text =
            serde_json::to_string_pretty(&entities).map_err(|e| Error::Internal(e.to_string()))?;
        sources.push(PolicySource {
            name: writ_policy::ENTITIES_FILE.into(),
            text,
        });
        let set = match PolicySet::compile(sources) {
            Ok(s) => s,
            Err(e) => {
                self.refused("push entities", actor, &e.to_string()).await?;
                return Err(Error::Invalid(format!("entities refused: {e}")));
            }
        };
        self.set_live(set, "push entities", actor).await?;
        Ok(self.info())
    }

    /// Installs a candidate set to decide beside the live one (shadow mode).
    pub async fn push_shadow(&self, req: PushPolicies, actor: &str) -> Result<PolicyInfo, Error> {
        let sources = req
            .files
            .into_iter()
            .map(|(name, text)| PolicySource { name, text })
            .collect();
        let set = PolicySet::compile(sources)
            .map_err(|e| Error::Invalid(format!("shadow policy set refused: {e}")))?;
        let info = info_of(&set);
        self.set_shadow(Some(set), actor).await?;
        Ok(info)
    }

    pub async fn history(&self, limit: u32) -> Result<Vec<PolicyVersion>, Error> {
        Ok(self.store.policy_history(limit.clamp(1, 1000)).await?)
    }
}

fn info_of(set: &PolicySet) -> PolicyInfo {
    PolicyInfo {
        version: set.version().to_owned(),
        policies: set.len(),
        files: set
            .sources()
            .iter()
            .map(|s| (s.name.clone(), s.text.clone()))
            .collect(),
    }
}

/// Compiles a policy set kept in the store (`what` names it in errors).
pub(crate) fn compile_stored(
    what: &str,
    version: &str,
    sources: Vec<(String, String)>,
) -> Result<PolicySet, Error> {
    PolicySet::compile(
        sources
            .into_iter()
            .map(|(name, text)| writ_policy::PolicySource { name, text })
            .collect(),
    )
    .map_err(|e| Error::Internal(format!("stored {what} {version}: {e}")))
}
