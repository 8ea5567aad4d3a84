//! Hot policy: the policy directory is read again on a short interval; a
//! changed set goes live if it validates, and is refused (and audited, once
//! per version) if it does not, leaving the previous set live. The
//! directory's detection rules (`*.rules.toml`) are read with it, the same
//! way: changed rules go live if they validate, else the previous stay.

use std::sync::Arc;

use writ_policy::PolicySet;

use crate::service::Broker;

pub async fn run(broker: Arc<Broker>) {
    let Some(dir) = broker.config.policy_dir.clone() else {
        return;
    };
    let origin = format!("dir:{}", dir.display());
    let mut tick = tokio::time::interval(broker.config.policy_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The directory's version when last looked at: only a change of the
    // directory activates anything, so a set pushed through the API (or by
    // another replica) stays live until the directory itself changes.
    let mut last_seen: Option<String> = None;
    let mut rules_seen: Option<String> = None;
    loop {
        tick.tick().await;
        // The directory's test cases on the sets now deciding (run again
        // only when the sets or the cases changed since).
        broker.policy_tests.results().await;
        rules(&broker, &dir, &origin, &mut rules_seen).await;
        let read = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || PolicySet::read_dir(&dir)).await
        };
        let sources = match read {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "policy directory unreadable; the live set stays");
                continue;
            }
            Err(_) => continue,
        };
        // Cheap check first: unchanged text, nothing to do.
        let probe_version = writ_policy::version_of(&sources);
        if last_seen.as_deref() == Some(&probe_version) {
            continue;
        }
        let first_look = last_seen.is_none();
        last_seen = Some(probe_version.clone());
        if probe_version == broker.policies.live().version() || first_look {
            // At the first look the directory is what the broker started
            // with (or what it was when another replica's set went live).
            continue;
        }
        match PolicySet::compile(sources) {
            Ok(set) => {
                if let Err(e) = broker.policies.set_live(set, &origin, "system").await {
                    tracing::error!(error = %e, "cannot record the new policy set; the previous set stays live");
                    last_seen = None;
                }
            }
            Err(e) => {
                let _ = broker
                    .policies
                    .refused(&origin, "system", &e.to_string())
                    .await;
            }
        }
    }
}

/// Reads the directory's rules again; changed ones go live if they
/// validate (audited as a policy load), else are refused once per version.
async fn rules(
    broker: &Broker,
    dir: &std::path::Path,
    origin: &str,
    last_seen: &mut Option<String>,
) {
    use writ_core::audit::{AuditEvent, AuditKind, Outcome};
    use writ_policy::rules::RuleSet;
    let read = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || RuleSet::read_dir(&dir)).await
    };
    let sources = match read {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "rules unreadable; the live rules stay");
            return;
        }
        Err(_) => return,
    };
    let version = writ_policy::version_of(&sources);
    if last_seen.as_deref() == Some(&version) {
        return;
    }
    *last_seen = Some(version.clone());
    if version == broker.detection.live().version() {
        return;
    }
    match RuleSet::parse(&sources) {
        Ok(set) => {
            let ids: Vec<String> = set.rules().iter().map(|r| r.id.clone()).collect();
            broker.detection.replace(set);
            tracing::info!(rules = ids.len(), "detection rules reloaded");
            let event = AuditEvent::new(AuditKind::PolicyLoad, Outcome::Success, "system")
                .reason("detection rules loaded")
                .detail(serde_json::json!({
                    "origin": origin,
                    "rules_version": version,
                    "rules": ids,
                }));
            if let Err(e) = broker.store.append_audit(broker.now(), vec![event]).await {
                tracing::error!(error = %e, "cannot record the rules load");
            }
        }
        Err(e) => {
            let _ = broker
                .policies
                .refused(&format!("{origin} (rules)"), "system", &e.to_string())
                .await;
        }
    }
}
