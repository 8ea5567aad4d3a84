//! Detection rules: `*.rules.toml` files in the policy directory that watch
//! the audit stream and respond on their own.
//!
//! A rule counts one kind of event ([`Signal`]) per agent in a sliding
//! window and, when the count reaches its threshold, takes its actions
//! ([`RuleAction`]): alert, end the task, quarantine the agent (with an
//! optional automatic release), or require approval for the agent's next
//! tasks (a fact policies read, `context.behaviour.requires_approval`, so
//! every decision stays on the one decision path). `exception_expiring`
//! is not counted: it fires once per exception task when the task has less
//! than `before_secs` left.
//!
//! ```toml
//! [[rule]]
//! id = "quarantine-after-refused-calls"
//! on = "gateway_denial"
//! threshold = 5
//! window_secs = 60
//! actions = ["alert", "quarantine"]
//! release_after_secs = 120
//! ```
//!
//! Counting is always per agent: an agent's events can only ever move its
//! own counters, so no rule lets one agent get another one stopped. Rule
//! files are the operator's input and are checked like policies: a file
//! that does not parse, an unknown field, signal or action, or a value out
//! of its bounds refuses the whole directory, naming the file and line.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};
use writ_core::Timestamp;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};

use crate::PolicySource;

/// The ending of a rules file's name in the policy directory.
pub const RULES_SUFFIX: &str = ".rules.toml";
/// Most rules a directory may hold.
pub const MAX_RULES: usize = 256;
/// Longest window a rule may count over (one day).
pub const MAX_WINDOW_SECS: i64 = 86_400;
/// Largest threshold.
pub const MAX_THRESHOLD: u32 = 100_000;
/// Longest automatic release, approval hold or expiry warning (30 days).
pub const MAX_DURATION_SECS: i64 = 30 * 86_400;

/// What a rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Any refused request of the agent (task start, exchange, delegation,
    /// gateway call, an enforced AuthZEN question); a token presented the
    /// wrong way is `token_refused`, not this.
    Denial,
    /// A call refused at a gateway.
    GatewayDenial,
    /// A real token presented the wrong way (no proof, a bad, replayed or
    /// foreign proof, the wrong scheme).
    TokenRefused,
    /// A DPoP proof presented a second time.
    DpopReplay,
    /// A token presented with a proof signed by a key other than its own.
    SecondKey,
    /// An attestation from a node or token issuer the agent had not
    /// attested from before.
    NewAttestationSource,
    /// A task started (a burst of tasks).
    TaskStart,
    /// A tool token exchanged under an exception task.
    ExceptionUsed,
    /// An exception task has less than `before_secs` left (once per task).
    ExceptionExpiring,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Denial => "denial",
            Signal::GatewayDenial => "gateway_denial",
            Signal::TokenRefused => "token_refused",
            Signal::DpopReplay => "dpop_replay",
            Signal::SecondKey => "second_key",
            Signal::NewAttestationSource => "new_attestation_source",
            Signal::TaskStart => "task_start",
            Signal::ExceptionUsed => "exception_used",
            Signal::ExceptionExpiring => "exception_expiring",
        }
    }

    /// Whether `e` is one event of this signal. `NewAttestationSource`
    /// matches every attestation; whether its source is new is the
    /// store's to say.
    pub fn matches(self, e: &AuditEvent) -> bool {
        // Nothing a rule itself causes is counted again: a firing, the
        // quarantine or release it made, or the task it ended.
        if e.kind == AuditKind::RuleFired || e.actor.starts_with("rule:") {
            return false;
        }
        let binding = e.detail.get("binding").and_then(serde_json::Value::as_str);
        match self {
            Signal::Denial => e.outcome == Outcome::Deny && e.kind != AuditKind::TokenRefused,
            Signal::GatewayDenial => e.kind == AuditKind::ToolCall && e.outcome == Outcome::Deny,
            Signal::TokenRefused => e.kind == AuditKind::TokenRefused,
            Signal::DpopReplay => e.kind == AuditKind::TokenRefused && binding == Some("replay"),
            Signal::SecondKey => e.kind == AuditKind::TokenRefused && binding == Some("wrong_key"),
            Signal::NewAttestationSource => {
                e.kind == AuditKind::Attest
                    && e.outcome == Outcome::Success
                    && attestation_source(e).is_some()
            }
            Signal::TaskStart => e.kind == AuditKind::TaskStart && e.outcome == Outcome::Success,
            Signal::ExceptionUsed => {
                e.kind == AuditKind::TokenExchange
                    && e.outcome == Outcome::Success
                    && e.detail.get("exception") == Some(&serde_json::Value::Bool(true))
            }
            Signal::ExceptionExpiring => false,
        }
    }
}

/// Where an attestation came from: the node a workload attested through,
/// or the issuer of the token an instance presented.
pub fn attestation_source(e: &AuditEvent) -> Option<String> {
    let d = &e.detail;
    if let Some(n) = d.get("node").and_then(serde_json::Value::as_str) {
        return Some(format!("node:{n}"));
    }
    d.get("issuer")
        .and_then(serde_json::Value::as_str)
        .map(|i| format!("issuer:{i}"))
}

/// What a rule does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// An audit record and, when configured, a signed webhook.
    Alert,
    /// Ends the task of the event that tipped the count (and its grants).
    EndTask,
    /// Quarantines the agent: every grant revoked, nothing new issued.
    Quarantine,
    /// The agent's next tasks need a person's approval (for
    /// `require_approval_secs`): `context.behaviour.requires_approval`.
    RequireApproval,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Alert => "alert",
            RuleAction::EndTask => "end_task",
            RuleAction::Quarantine => "quarantine",
            RuleAction::RequireApproval => "require_approval",
        }
    }
}

/// One validated rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub on: Signal,
    /// Events in the window that make it fire (1 for `exception_expiring`).
    pub threshold: u32,
    pub window_secs: i64,
    pub actions: Vec<RuleAction>,
    /// With `quarantine`: released automatically this long after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_after_secs: Option<i64>,
    /// With `require_approval`: how long the agent's tasks are held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_approval_secs: Option<i64>,
    /// With `exception_expiring`: how long before the end it fires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_secs: Option<i64>,
    /// Where it was written: `file:line`.
    pub location: String,
}

impl Rule {
    pub fn has(&self, a: RuleAction) -> bool {
        self.actions.contains(&a)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    description: Option<String>,
    on: Signal,
    threshold: Option<u32>,
    window_secs: Option<i64>,
    actions: Vec<RuleAction>,
    release_after_secs: Option<i64>,
    require_approval_secs: Option<i64>,
    before_secs: Option<i64>,
}

/// A rules file refused: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct RuleError {
    /// `file:line` (or the directory, when it cannot be read).
    pub location: String,
    pub message: String,
}

/// The rules of a policy directory, validated together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    version: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

fn within(what: &str, v: i64, max: i64) -> Result<i64, String> {
    if (1..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{what} must be between 1 and {max}, not {v}"))
    }
}

impl RuleSet {
    /// Every `*.rules.toml` of `dir` (not recursive), sorted by name.
    pub fn read_dir(dir: &Path) -> Result<Vec<PolicySource>, RuleError> {
        let err = |e: std::io::Error| RuleError {
            location: dir.display().to_string(),
            message: format!("cannot read rules: {e}"),
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let path = entry.map_err(err)?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if !name.ends_with(RULES_SUFFIX) {
                continue;
            }
            if std::fs::metadata(&path).map_err(err)?.len() > crate::MAX_FILE_BYTES {
                return Err(RuleError {
                    location: name,
                    message: format!("larger than {} bytes", crate::MAX_FILE_BYTES),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(err)?;
            out.push(PolicySource { name, text });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Reads and validates the rules of `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, RuleError> {
        Self::parse(&Self::read_dir(dir)?)
    }

    /// Parses and validates rules files: ids unique across all of them.
    pub fn parse(sources: &[PolicySource]) -> Result<Self, RuleError> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for src in sources {
            let raw: RawFile = toml::from_str(&src.text).map_err(|e| RuleError {
                location: format!(
                    "{}:{}",
                    src.name,
                    e.span().map_or(1, |s| line_of(&src.text, s.start))
                ),
                message: e.message().trim().to_owned(),
            })?;
            for spanned in raw.rule {
                let location = format!("{}:{}", src.name, line_of(&src.text, spanned.span().start));
                let rule = validate(spanned.into_inner(), location.clone()).map_err(|message| {
                    RuleError {
                        location: location.clone(),
                        message,
                    }
                })?;
                if let Some(first) = seen.insert(rule.id.clone(), location.clone()) {
                    return Err(RuleError {
                        location,
                        message: format!("rule id {:?} is already used at {first}", rule.id),
                    });
                }
                rules.push(rule);
                if rules.len() > MAX_RULES {
                    return Err(RuleError {
                        location: src.name.clone(),
                        message: format!("more than {MAX_RULES} rules"),
                    });
                }
            }
        }
        Ok(Self {
            rules,
            version: crate::version_of(sources),
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The content version of the files the rules came from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The rules `e` counts for, with the agent it counts against. Events
    /// that name no agent count for nobody.
    pub fn matching<'a>(&'a self, e: &'a AuditEvent) -> impl Iterator<Item = (&'a Rule, &'a str)> {
        let agent = e.agent.as_deref();
        self.rules.iter().filter_map(move |r| {
            let agent = agent?;
            r.on.matches(e).then_some((r, agent))
        })
    }
}

fn validate(raw: RawRule, location: String) -> Result<Rule, String> {
    let id = raw.id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "rule id {id:?} must be 1 to 64 characters of a-z, 0-9, '-' and '_'"
        ));
    }
    if raw.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err("description is longer than 1024 bytes".into());
    }
    if raw.actions.is_empty() {
        return Err(format!("rule {id:?} has no actions"));
    }
    let mut distinct = HashSet::new();
    if let Some(a) = raw.actions.iter().find(|a| !distinct.insert(**a)) {
        return Err(format!("rule {id:?} names action {:?} twice", a.as_str()));
    }
    let has = |a| raw.actions.contains(&a);
    let (threshold, window_secs, before_secs) = if raw.on == Signal::ExceptionExpiring {
        if raw.threshold.is_some() || raw.window_secs.is_some() {
            return Err(format!(
                "rule {id:?}: exception_expiring fires once per task: it takes before_secs, not threshold or window_secs"
            ));
        }
        let before = raw
            .before_secs
            .ok_or_else(|| format!("rule {id:?}: exception_expiring needs before_secs"))?;
        (
            1,
            0,
            Some(within("before_secs", before, MAX_DURATION_SECS)?),
        )
    } else {
        if raw.before_secs.is_some() {
            return Err(format!(
                "rule {id:?}: before_secs is for exception_expiring only"
            ));
        }
        let threshold = raw
            .threshold
            .ok_or_else(|| format!("rule {id:?} needs a threshold"))?;
        if !(1..=MAX_THRESHOLD).contains(&threshold) {
            return Err(format!(
                "threshold must be between 1 and {MAX_THRESHOLD}, not {threshold}"
            ));
        }
        let window = raw
            .window_secs
            .ok_or_else(|| format!("rule {id:?} needs window_secs"))?;
        (
            threshold,
            within("window_secs", window, MAX_WINDOW_SECS)?,
            None,
        )
    };
    let release_after_secs = match raw.release_after_secs {
        Some(_) if !has(RuleAction::Quarantine) => {
            return Err(format!(
                "rule {id:?}: release_after_secs needs the quarantine action"
            ));
        }
        Some(s) => Some(within("release_after_secs", s, MAX_DURATION_SECS)?),
        None => None,
    };
    let require_approval_secs = match (raw.require_approval_secs, has(RuleAction::RequireApproval))
    {
        (Some(s), true) => Some(within("require_approval_secs", s, MAX_DURATION_SECS)?),
        (None, true) => {
            return Err(format!(
                "rule {id:?}: require_approval needs require_approval_secs (how long the agent's tasks are held)"
            ));
        }
        (Some(_), false) => {
            return Err(format!(
                "rule {id:?}: require_approval_secs needs the require_approval action"
            ));
        }
        (None, false) => None,
    };
    Ok(Rule {
        id,
        description: raw.description,
        on: raw.on,
        threshold,
        window_secs,
        actions: raw.actions,
        release_after_secs,
        require_approval_secs,
        before_secs,
        location,
    })
}

/// Sliding windows kept in memory, with the store's semantics: an event
/// at `t` counts events of the same rule and agent after `t - window`,
/// and a rule that fires starts counting again from zero. `writ rules
/// test` replays a recorded range through it; the broker keeps the same
/// counts in the store, shared by its replicas.
#[derive(Debug, Default)]
pub struct Windows {
    seen: HashMap<(String, String), VecDeque<(i64, u64)>>,
}

/// A rule that fired: for whom, when, and the records that made it fire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Firing {
    pub rule: String,
    pub agent: String,
    pub at: Timestamp,
    pub count: u32,
    pub actions: Vec<RuleAction>,
    /// The sequence numbers of the counted records, oldest first.
    pub evidence: Vec<u64>,
}

impl Windows {
    /// Counts one event (record `seq` at `at`) of `rule` against `agent`;
    /// the firing if this one reaches the threshold.
    pub fn observe(&mut self, rule: &Rule, agent: &str, at: Timestamp, seq: u64) -> Option<Firing> {
        let q = self
            .seen
            .entry((rule.id.clone(), agent.to_owned()))
            .or_default();
        let from = at
            .millis()
            .saturating_sub(rule.window_secs.saturating_mul(1000));
        while q.front().is_some_and(|(t, _)| *t <= from) {
            q.pop_front();
        }
        q.push_back((at.millis(), seq));
        let count = u32::try_from(q.len()).unwrap_or(u32::MAX);
        if count < rule.threshold {
            return None;
        }
        let evidence = q.drain(..).map(|(_, s)| s).collect();
        Some(Firing {
            rule: rule.id.clone(),
            agent: agent.to_owned(),
            at,
            count,
            actions: rule.actions.clone(),
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Vec<PolicySource> {
        vec![PolicySource {
            name: "a.rules.toml".into(),
            text: text.into(),
        }]
    }

    const GOOD: &str = r#"
# refused calls
[[rule]]
id = "refused-calls"
on = "gateway_denial"
threshold = 3
window_secs = 60
actions = ["alert", "quarantine"]
release_after_secs = 120

[[rule]]
id = "expiring"
on = "exception_expiring"
before_secs = 600
actions = ["alert"]
"#;

    #[test]
    fn a_good_file_parses_with_locations() {
        let set = RuleSet::parse(&src(GOOD)).unwrap();
        assert_eq!(set.rules().len(), 2);
        let r = &set.rules()[0];
        assert_eq!(r.on, Signal::GatewayDenial);
        assert_eq!(r.threshold, 3);
        assert_eq!(r.release_after_secs, Some(120));
        assert_eq!(r.location, "a.rules.toml:3");
        assert_eq!(set.rules()[1].threshold, 1);
        assert_eq!(set.rules()[1].before_secs, Some(600));
        assert!(!set.version().is_empty());
    }

    fn refused(text: &str) -> RuleError {
        RuleSet::parse(&src(text)).unwrap_err()
    }

    #[test]
    fn bad_files_are_refused_naming_the_line() {
        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 60\nactions = [\"explode\"]\n",
        );
        assert!(e.location.starts_with("a.rules.toml:"), "{e}");
        assert!(e.message.contains("explode"), "{e}");

        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"nothing\"\nthreshold = 3\nwindow_secs = 60\nactions = [\"alert\"]\n",
        );
        assert!(e.message.contains("nothing"), "{e}");

        let e = refused(
            "\n\n[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 0\nwindow_secs = 60\nactions = [\"alert\"]\n",
        );
        assert_eq!(e.location, "a.rules.toml:3");
        assert!(e.message.contains("threshold"), "{e}");

        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 0\nactions = [\"alert\"]\n",
        );
        assert!(e.message.contains("window_secs"), "{e}");

        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 99999999\nactions = [\"alert\"]\n",
        );
        assert!(e.message.contains("window_secs"), "{e}");

        // Unknown fields are refused, not ignored.
        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 60\nactions = [\"alert\"]\nthreshhold = 4\n",
        );
        assert!(e.message.contains("threshhold"), "{e}");

        // Not TOML at all: the line of the fault.
        let e = refused("[[rule]]\nid = \"x\"\non = = \"denial\"\n");
        assert_eq!(e.location, "a.rules.toml:3", "{e}");

        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 60\nactions = []\n",
        );
        assert!(e.message.contains("no actions"), "{e}");

        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 60\nactions = [\"alert\", \"alert\"]\n",
        );
        assert!(e.message.contains("twice"), "{e}");

        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 60\nactions = [\"alert\"]\nrelease_after_secs = 60\n",
        );
        assert!(e.message.contains("quarantine"), "{e}");

        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 60\nactions = [\"require_approval\"]\n",
        );
        assert!(e.message.contains("require_approval_secs"), "{e}");

        let e = refused(
            "[[rule]]\nid = \"x\"\non = \"exception_expiring\"\nthreshold = 3\nbefore_secs = 60\nactions = [\"alert\"]\n",
        );
        assert!(e.message.contains("once per task"), "{e}");

        let e = refused(
            "[[rule]]\nid = \"Bad Id\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 60\nactions = [\"alert\"]\n",
        );
        assert!(e.message.contains("rule id"), "{e}");
    }

    #[test]
    fn ids_are_unique_across_files() {
        let one = "[[rule]]\nid = \"x\"\non = \"denial\"\nthreshold = 3\nwindow_secs = 60\nactions = [\"alert\"]\n";
        let e = RuleSet::parse(&[
            PolicySource {
                name: "a.rules.toml".into(),
                text: one.into(),
            },
            PolicySource {
                name: "b.rules.toml".into(),
                text: one.into(),
            },
        ])
        .unwrap_err();
        assert_eq!(e.location, "b.rules.toml:1");
        assert!(e.message.contains("a.rules.toml:1"), "{e}");
    }

    fn denial(agent: &str) -> AuditEvent {
        AuditEvent::new(AuditKind::ToolCall, Outcome::Deny, "gateway:embedded").agent(agent)
    }

    #[test]
    fn signals_match_what_they_say_and_never_a_rule_s_own_records() {
        assert!(Signal::GatewayDenial.matches(&denial("a")));
        assert!(Signal::Denial.matches(&denial("a")));
        let ok = AuditEvent::new(AuditKind::ToolCall, Outcome::Success, "gateway:embedded");
        assert!(!Signal::GatewayDenial.matches(&ok));
        let start_denied = AuditEvent::new(AuditKind::TaskStart, Outcome::Deny, "instance:i");
        assert!(Signal::Denial.matches(&start_denied));
        assert!(!Signal::GatewayDenial.matches(&start_denied));
        let fired = AuditEvent::new(AuditKind::RuleFired, Outcome::Deny, "system");
        assert!(!Signal::Denial.matches(&fired));
        let by_rule = AuditEvent::new(AuditKind::TaskEnd, Outcome::Deny, "rule:x");
        assert!(!Signal::Denial.matches(&by_rule));
        let replay = AuditEvent::new(AuditKind::TokenRefused, Outcome::Deny, "instance:i")
            .detail(serde_json::json!({ "binding": "replay" }));
        assert!(Signal::DpopReplay.matches(&replay));
        assert!(Signal::TokenRefused.matches(&replay));
        assert!(!Signal::Denial.matches(&replay));
        assert!(!Signal::SecondKey.matches(&replay));
        let used = AuditEvent::new(AuditKind::TokenExchange, Outcome::Success, "instance:i")
            .detail(serde_json::json!({ "exception": true }));
        assert!(Signal::ExceptionUsed.matches(&used));
    }

    #[test]
    fn events_without_an_agent_count_for_nobody() {
        let set = RuleSet::parse(&src(GOOD)).unwrap();
        let anon = AuditEvent::new(AuditKind::ToolCall, Outcome::Deny, "gateway:g");
        assert_eq!(set.matching(&anon).count(), 0);
        assert_eq!(set.matching(&denial("a")).count(), 1);
    }

    #[test]
    fn windows_count_per_agent_and_slide() {
        let set = RuleSet::parse(&src(GOOD)).unwrap();
        let rule = &set.rules()[0];
        let mut w = Windows::default();
        let t = |s: i64| Timestamp::from_secs(1_000 + s);
        assert!(w.observe(rule, "a", t(0), 1).is_none());
        assert!(w.observe(rule, "a", t(1), 2).is_none());
        // Another agent's events never add to a's count.
        assert!(w.observe(rule, "b", t(2), 3).is_none());
        assert!(w.observe(rule, "b", t(2), 4).is_none());
        // Both slid out of the 60 s window: counting restarts at 1.
        assert!(w.observe(rule, "a", t(61), 5).is_none());
        assert!(w.observe(rule, "a", t(62), 6).is_none());
        let f = w.observe(rule, "a", t(63), 7).unwrap();
        assert_eq!(f.count, 3);
        assert_eq!(f.evidence, vec![5, 6, 7]);
        assert_eq!(f.agent, "a");
        // Fired: counting starts again.
        assert!(w.observe(rule, "a", t(64), 8).is_none());
        assert_eq!(
            w.observe(rule, "b", t(3), 9).unwrap().evidence,
            vec![3, 4, 9]
        );
    }
}
