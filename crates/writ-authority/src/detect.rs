//! Detection and response: the rules of the policy directory run over the
//! audit records this process commits, as they are committed.
//!
//! The store copies each committed record into a bounded queue (the tap);
//! a flood of records never holds a decision up: when the queue is full
//! the copy is dropped and counted (`writ_audit_tap_dropped_total`). One
//! task here reads the queue, counts each matching record in the store
//! (so every replica adds to one count, and a rule fires once for the
//! deployment), and, when a count reaches its threshold, acts: quarantine
//! (with an automatic release, itself audited), end the task, hold the
//! agent's next tasks for approval (a fact policies read), alert. Every
//! firing is a `rule_fired` audit record with its evidence; an alert also
//! goes to the webhook, when one is configured, off this path.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde_json::json;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::{AgentName, TaskId};
use writ_policy::rules::{Rule, RuleAction, RuleSet, Signal, attestation_source};
use writ_store::TappedRecord;

use crate::alert::Alerts;
use crate::service::Broker;

/// Records waiting to be looked at by the rules; beyond it, dropped.
pub const TAP_QUEUE: usize = 4096;
/// Recent records kept per rule and agent as a firing's evidence.
const EVIDENCE: usize = 20;
/// Rule-and-agent pairs whose evidence is kept in memory at once.
const EVIDENCE_KEYS: usize = 10_000;
/// How often live exceptions are looked at for `exception_expiring`.
const EXCEPTION_LOOK: std::time::Duration = std::time::Duration::from_secs(5);

/// The live rules and where alerts go.
pub struct Detection {
    rules: RwLock<Arc<RuleSet>>,
    pub alerts: Alerts,
    /// Recent sequence numbers per (rule, agent), for evidence only.
    recent: std::sync::Mutex<HashMap<(String, String), VecDeque<u64>>>,
}

impl std::fmt::Debug for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detection").finish_non_exhaustive()
    }
}

impl Detection {
    pub fn new(alerts: Alerts) -> Self {
        Self {
            rules: RwLock::new(Arc::new(RuleSet::default())),
            alerts,
            recent: std::sync::Mutex::default(),
        }
    }

    /// The rules now live.
    pub fn live(&self) -> Arc<RuleSet> {
        self.rules
            .read()
            .map_or_else(|p| Arc::clone(&p.into_inner()), |r| Arc::clone(&r))
    }

    /// Makes `set` live; returns whether it differs from the rules before.
    pub fn replace(&self, set: RuleSet) -> bool {
        let mut slot = match self.rules.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if slot.version() == set.version() {
            return false;
        }
        *slot = Arc::new(set);
        true
    }

    fn remember(&self, rule: &str, agent: &str, seq: u64) -> Vec<u64> {
        let Ok(mut recent) = self.recent.lock() else {
            return vec![seq];
        };
        if recent.len() >= EVIDENCE_KEYS
            && !recent.contains_key(&(rule.to_owned(), agent.to_owned()))
        {
            recent.clear();
        }
        let q = recent
            .entry((rule.to_owned(), agent.to_owned()))
            .or_default();
        if q.len() >= EVIDENCE {
            q.pop_front();
        }
        q.push_back(seq);
        q.iter().copied().collect()
    }

    fn forget(&self, rule: &str, agent: &str) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.remove(&(rule.to_owned(), agent.to_owned()));
        }
    }
}

/// Reads the tap and runs the rules until the process ends.
pub async fn run(broker: Arc<Broker>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(TAP_QUEUE);
    if !broker.store.tap_audit(tx) {
        tracing::warn!("the audit stream is already tapped; detection rules do not run here");
        return;
    }
    while let Some(record) = rx.recv().await {
        observe(&broker, &record).await;
    }
}

/// Releases and expiring exceptions, on the sweeper's interval.
pub async fn sweep(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut looked: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        if let Err(e) = release_due(&broker).await {
            tracing::error!(error = %e, "detection: cannot release quarantines that are due");
        }
        // Exceptions end in hours: a look every few seconds is plenty, and
        // keeps the scan off a short sweep interval.
        if looked.is_none_or(|t| t.elapsed() >= EXCEPTION_LOOK) {
            looked = Some(tokio::time::Instant::now());
            if let Err(e) = expiring_exceptions(&broker).await {
                tracing::error!(error = %e, "detection: cannot look at exceptions nearing their end");
            }
        }
    }
}

/// Runs every live rule over one committed record.
pub async fn observe(broker: &Broker, record: &TappedRecord) {
    let rules = broker.detection.live();
    for (rule, agent) in rules.matching(&record.event) {
        if let Err(e) = count(broker, rule, agent, record).await {
            tracing::error!(rule = %rule.id, agent, error = %e, "detection: cannot count an event");
        }
    }
}

async fn count(
    broker: &Broker,
    rule: &Rule,
    agent: &str,
    record: &TappedRecord,
) -> Result<(), crate::Error> {
    if rule.on == Signal::NewAttestationSource {
        let (Some(source), Ok(name)) = (
            attestation_source(&record.event),
            agent.parse::<AgentName>(),
        ) else {
            return Ok(());
        };
        if !broker
            .store
            .note_attestation_source(&name, &source, record.ts)
            .await?
        {
            return Ok(());
        }
    }
    let evidence = broker.detection.remember(&rule.id, agent, record.seq);
    let fired = broker
        .store
        .count_rule_event(&rule.id, agent, record.ts, rule.window_secs, rule.threshold)
        .await?;
    if let Some(count) = fired {
        broker.detection.forget(&rule.id, agent);
        fire(broker, rule, agent, Some(record), count, evidence).await?;
    }
    Ok(())
}

/// Takes a rule's actions for `agent` and records the firing.
async fn fire(
    broker: &Broker,
    rule: &Rule,
    agent: &str,
    trigger: Option<&TappedRecord>,
    count: u32,
    evidence: Vec<u64>,
) -> Result<(), crate::Error> {
    let actor = format!("rule:{}", rule.id);
    let name: Option<AgentName> = agent.parse().ok();
    let task = trigger.and_then(|t| t.event.task.clone());
    let mut done = serde_json::Map::new();
    for action in &rule.actions {
        let outcome = match (action, &name) {
            (RuleAction::Alert, _) => json!("alerted"),
            (RuleAction::Quarantine, Some(name)) => quarantine(broker, rule, name, &actor).await,
            (RuleAction::EndTask, _) => match task.as_deref().map(str::parse::<TaskId>) {
                Some(Ok(id)) => match broker.tasks.end_task_by(&id, &actor, &rule.id).await {
                    Ok(true) => json!("ended"),
                    Ok(false) => json!("not active"),
                    Err(e) => json!(format!("failed: {e}")),
                },
                _ => json!("no task"),
            },
            (RuleAction::RequireApproval, Some(name)) => {
                let until = broker
                    .now()
                    .add_secs(rule.require_approval_secs.unwrap_or(0));
                match broker.store.hold_for_approval(name, &rule.id, until).await {
                    Ok(()) => json!({ "held_until": until }),
                    Err(e) => json!(format!("failed: {e}")),
                }
            }
            (_, None) => json!("not an agent"),
        };
        done.insert(action.as_str().to_owned(), outcome);
    }
    let trigger_json = trigger.map(|t| {
        json!({
            "seq": t.seq,
            "ts": t.ts,
            "kind": t.event.kind,
            "outcome": t.event.outcome,
            "actor": t.event.actor,
            "reason": t.event.reason,
            "detail": t.event.detail,
        })
    });
    let mut event = AuditEvent::new(AuditKind::RuleFired, Outcome::Success, actor)
        .agent(agent)
        .reason(match &rule.description {
            Some(d) => format!("rule {} fired: {d}", rule.id),
            None => format!("rule {} fired", rule.id),
        })
        .detail(json!({
            "rule": rule.id,
            "rules_version": broker.detection.live().version(),
            "on": rule.on.as_str(),
            "threshold": rule.threshold,
            "window_secs": rule.window_secs,
            "count": count,
            "actions": done,
            "evidence": {
                "records": evidence,
                "trigger": trigger_json,
            },
        }));
    if let Some(t) = &task {
        event = event.task(t);
    }
    let now = broker.now();
    broker.store.append_audit(now, vec![event.clone()]).await?;
    tracing::warn!(rule = %rule.id, agent, count, "detection rule fired");
    metrics::counter!("writ_rules_fired_total", "rule" => rule.id.clone()).increment(1);
    if rule.has(RuleAction::Alert) {
        broker.detection.alerts.send(now, &event);
    }
    Ok(())
}

async fn quarantine(
    broker: &Broker,
    rule: &Rule,
    name: &AgentName,
    actor: &str,
) -> serde_json::Value {
    // Already quarantined (by a person, or another rule): leave it as it
    // is, and never schedule a release of a quarantine this rule did not make.
    match broker.store.get_agent(name).await {
        Ok(Some(a)) if a.quarantined => return json!("already quarantined"),
        Ok(Some(_)) => {}
        Ok(None) => return json!("unknown agent"),
        Err(e) => return json!(format!("failed: {e}")),
    }
    match broker
        .registry
        .quarantine(name, true, actor, Some(&format!("rule {} fired", rule.id)))
        .await
    {
        Ok(q) => {
            let release = match rule.release_after_secs {
                Some(secs) => {
                    let at = broker.now().add_secs(secs);
                    match broker.store.schedule_release(name, &rule.id, at).await {
                        Ok(()) => json!(at),
                        Err(e) => json!(format!("failed: {e}")),
                    }
                }
                None => serde_json::Value::Null,
            };
            json!({
                "revoked_tokens": q.revoked_tokens,
                "ended_tasks": q.ended_tasks,
                "release_at": release,
            })
        }
        Err(e) => json!(format!("failed: {e}")),
    }
}

/// Releases every quarantine whose rule said when; each release is taken
/// off the schedule once, by one replica, and audited as the rule's.
pub async fn release_due(broker: &Broker) -> Result<usize, crate::Error> {
    let now = broker.now();
    let mut released = 0;
    for (agent, _) in broker.store.due_releases(now).await? {
        let Some(rule) = broker.store.claim_release(&agent, now).await? else {
            continue;
        };
        broker
            .registry
            .quarantine(
                &agent,
                false,
                &format!("rule:{rule}"),
                Some("the rule's quarantine ran its time"),
            )
            .await?;
        tracing::info!(agent = %agent, rule, "quarantine released automatically");
        released += 1;
    }
    Ok(released)
}

/// Fires each `exception_expiring` rule once for every live exception with
/// less than its `before_secs` left.
pub async fn expiring_exceptions(broker: &Broker) -> Result<(), crate::Error> {
    let rules = broker.detection.live();
    let watching: Vec<&Rule> = rules
        .rules()
        .iter()
        .filter(|r| r.on == Signal::ExceptionExpiring)
        .collect();
    if watching.is_empty() {
        return Ok(());
    }
    let now = broker.now();
    for x in broker.store.exceptions(1000).await? {
        for rule in &watching {
            let before = rule.before_secs.unwrap_or(0);
            if x.expires_at > now.add_secs(before) {
                continue;
            }
            if !broker
                .store
                .fire_once(&rule.id, x.task_id.as_str(), now)
                .await?
            {
                continue;
            }
            let trigger = TappedRecord {
                seq: 0,
                ts: now,
                event: AuditEvent::new(AuditKind::TaskHeartbeat, Outcome::Success, "system")
                    .agent(&x.agent)
                    .task(&x.task_id)
                    .reason("exception nearing its end")
                    .detail(json!({
                        "exception": true,
                        "expires_at": x.expires_at,
                        "owner": x.owner,
                        "justification": x.justification,
                        "uses": x.uses,
                    })),
            };
            fire(
                broker,
                rule,
                x.agent.as_str(),
                Some(&trigger),
                1,
                Vec::new(),
            )
            .await?;
        }
    }
    Ok(())
}
