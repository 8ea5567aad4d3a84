//! What the operator console reads: audit and task searches, activity
//! over time, a task's tree, an agent's details, policy sources. Its
//! sessions are the operators' (see `operators.rs`).

use std::sync::Arc;

use writ_core::Clock;
use writ_store::Store;

use crate::error::Error;

/// The console's reads, over the store.
pub struct Console {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Console {
    pub(super) fn new(h: &super::Handles) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
        }
    }

    fn now(&self) -> writ_core::Timestamp {
        self.clock.now()
    }
}

/// The most audit records one search reads (newest first) before it
/// answers with what it found and where to go on.
const SEARCH_SCAN: u64 = 50_000;
/// The records one store read returns.
const SEARCH_CHUNK: u32 = 1000;

/// What the console's audit page asks for: every field given must match.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub agent: Option<String>,
    pub task: Option<String>,
    pub kind: Option<String>,
    pub outcome: Option<String>,
    /// A part of the actor (`operator:ann`, `instance:...`).
    pub actor: Option<String>,
    /// Records at or after this time (Unix milliseconds).
    pub since: Option<i64>,
    /// Records before this time (Unix milliseconds).
    pub until: Option<i64>,
    /// Records older than this sequence number (the next page).
    pub before: Option<u64>,
    /// At most this many records (default 50, at most 200).
    pub limit: Option<u32>,
}

/// One audit record as the console shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub seq: u64,
    pub ts: writ_core::Timestamp,
    pub hash: String,
    pub event: serde_json::Value,
}

/// A page of matching records, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditMatches {
    pub records: Vec<AuditRow>,
    /// Pass as `before` for older matches; `None` when the chain's start
    /// was reached.
    pub before: Option<u64>,
    /// The chain's last sequence number.
    pub head: u64,
}

impl AuditFilter {
    /// Whether a record's JSON text may match: every wanted agent, task and
    /// kind that JSON writes as it is (no escapes) appears in it.
    fn may_match(&self, text: &str) -> bool {
        let plain = |w: &str| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | '@'))
        };
        [&self.agent, &self.task, &self.kind]
            .into_iter()
            .filter_map(|w| w.as_deref().filter(|w| !w.is_empty() && plain(w)))
            .all(|w| text.contains(w))
    }

    fn matches(&self, ts: i64, e: &serde_json::Value) -> bool {
        let field = |k: &str| e.get(k).and_then(serde_json::Value::as_str);
        let same = |want: &Option<String>, k: &str| {
            want.as_deref()
                .filter(|w| !w.is_empty())
                .is_none_or(|w| field(k) == Some(w))
        };
        same(&self.agent, "agent")
            && same(&self.task, "task")
            && same(&self.kind, "kind")
            && same(&self.outcome, "outcome")
            && self
                .actor
                .as_deref()
                .filter(|w| !w.is_empty())
                .is_none_or(|w| field("actor").is_some_and(|a| a.contains(w)))
            && self.since.is_none_or(|s| ts >= s)
            && self.until.is_none_or(|u| ts < u)
    }
}

/// A page of tasks, newest first, with how many match in all.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskMatches {
    pub tasks: Vec<writ_core::api::Task>,
    pub total: usize,
}

/// What the console's task page asks for.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    /// `active`, `completed`, `revoked`, ... (the task's status).
    pub status: Option<String>,
    pub agent: Option<String>,
    /// A part of the task's id, intent or `on_behalf_of`.
    pub q: Option<String>,
    #[serde(default)]
    pub offset: usize,
    pub limit: Option<usize>,
}

impl Console {
    /// The audit records that match `f`, newest first, one page.
    pub async fn find_audit(&self, f: &AuditFilter) -> Result<AuditMatches, Error> {
        let limit = f.limit.unwrap_or(50).clamp(1, 200) as usize;
        let head = self.store.audit_head().await?;
        // Records below `cursor` are still to read.
        let mut cursor = f
            .before
            .unwrap_or(head.saturating_add(1))
            .min(head.saturating_add(1));
        let mut out = Vec::new();
        let mut scanned = 0u64;
        'scan: while cursor > 1 && out.len() < limit && scanned < SEARCH_SCAN {
            let after = cursor.saturating_sub(1 + u64::from(SEARCH_CHUNK));
            let chunk = self.store.audit_after(after, SEARCH_CHUNK).await?;
            let mut read_any = false;
            let below = cursor;
            for r in chunk.iter().rev().filter(|r| r.seq < below) {
                read_any = true;
                scanned += 1;
                cursor = r.seq;
                // A record without a wanted value in its text cannot match:
                // skipped before it is parsed (a fleet's audit is long).
                if !f.may_match(&r.event) {
                    continue;
                }
                let event: serde_json::Value =
                    serde_json::from_str(&r.event).unwrap_or(serde_json::Value::Null);
                if f.matches(r.ts.millis(), &event) {
                    out.push(AuditRow {
                        seq: r.seq,
                        ts: r.ts,
                        hash: r.hash.clone(),
                        event,
                    });
                    if out.len() >= limit {
                        break 'scan;
                    }
                }
            }
            if !read_any {
                break;
            }
        }
        Ok(AuditMatches {
            records: out,
            before: (cursor > 1).then_some(cursor),
            head,
        })
    }

    /// The tasks that match `f`, newest first, one page (filtered and
    /// counted by the store: fast on a fleet).
    pub async fn find_tasks(&self, f: &TaskFilter) -> Result<TaskMatches, Error> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.chars().take(200).collect::<String>())
        };
        let q = writ_store::TaskSearch {
            status: given(&f.status),
            agent: given(&f.agent),
            text: given(&f.q),
            offset: u32::try_from(f.offset).unwrap_or(u32::MAX),
            limit: u32::try_from(f.limit.unwrap_or(50).clamp(1, 200)).unwrap_or(50),
        };
        let (tasks, total) = self.store.search_tasks(&q).await?;
        Ok(TaskMatches {
            tasks,
            total: usize::try_from(total).unwrap_or(usize::MAX),
        })
    }

    /// What is live now, for the console's overview.
    pub async fn live_counts(&self) -> Result<writ_store::LiveCounts, Error> {
        Ok(self.store.live_counts(self.now()).await?)
    }

    /// The chain's last sequence number, once it is past `after` or
    /// `wait` has passed (the console's long-poll for news).
    pub async fn audit_news(&self, after: u64, wait: std::time::Duration) -> Result<u64, Error> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let head = self.store.audit_head().await?;
            if head > after || tokio::time::Instant::now() >= until {
                return Ok(head);
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

/// The decisions of one minute.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Minute {
    /// The minute's start (Unix milliseconds).
    pub at: i64,
    pub allowed: u64,
    pub denied: u64,
}

/// Decisions over the last minutes, and which policies denied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Activity {
    /// Oldest first, one per minute, the current one last.
    pub minutes: Vec<Minute>,
    /// Denials by the policy that decided them, most first.
    pub denied_by: Vec<(String, u64)>,
    /// The last denials of the window, newest first (at most 10).
    pub recent_denials: Vec<AuditRow>,
}

/// Records that are a decision: policy decided something for an agent.
const DECISION_KINDS: [&str; 4] = ["decision", "tool_call", "task_start", "token_exchange"];

/// The most policies the denials-by-policy plot names.
const DENIED_BY_SHOWN: u32 = 50;
/// The denials listed under the plot.
const RECENT_DENIALS: u32 = 10;

impl Console {
    /// Decisions per minute over the last `minutes` (at most 60), and the
    /// policies that denied, counted by the store over every record of
    /// the window however many there are.
    pub async fn activity(&self, minutes: u32) -> Result<Activity, Error> {
        const MINUTE: i64 = 60_000;
        let minutes = minutes.clamp(1, 60);
        let now = self.now().millis();
        let first = (now / MINUTE - i64::from(minutes) + 1) * MINUTE;
        let until = first + i64::from(minutes) * MINUTE;
        let counted = self
            .store
            .audit_activity(
                writ_core::Timestamp::from_millis(first),
                writ_core::Timestamp::from_millis(until),
                DENIED_BY_SHOWN,
                RECENT_DENIALS,
            )
            .await?;
        let mut buckets: Vec<Minute> = (0..i64::from(minutes))
            .map(|i| Minute {
                at: first + i * MINUTE,
                ..Minute::default()
            })
            .collect();
        for (m, allowed, denied) in counted.minutes {
            if let Some(slot) = usize::try_from(m).ok().and_then(|i| buckets.get_mut(i)) {
                slot.allowed = allowed;
                slot.denied = denied;
            }
        }
        let recent_denials = counted
            .recent_denials
            .into_iter()
            .filter_map(|r| {
                let event = serde_json::from_str(&r.event).ok()?;
                Some(AuditRow {
                    seq: r.seq,
                    ts: r.ts,
                    hash: r.hash,
                    event,
                })
            })
            .collect();
        Ok(Activity {
            minutes: buckets,
            denied_by: counted.denied_by,
            recent_denials,
        })
    }
}

/// A token issued under a task, as the console shows it (never the token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenRow {
    pub jti: String,
    /// `task_token`, `tool_token`, ...
    pub kind: String,
    pub task_id: Option<writ_core::TaskId>,
    /// For a tool token: the tool's audience.
    pub audience: Option<String>,
    pub issued_at: writ_core::Timestamp,
    pub expires_at: writ_core::Timestamp,
    pub revoked_at: Option<writ_core::Timestamp>,
    /// `live`, `expired` or `revoked` (a token of a task that ended is
    /// revoked with it).
    pub state: &'static str,
}

/// A task's delegation tree: every node, the tokens issued under it, and
/// the calls its tokens made through gateways.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskDetail {
    /// Root first.
    pub tasks: Vec<writ_core::api::Task>,
    /// Oldest first.
    pub tokens: Vec<TokenRow>,
    /// Gateway decisions (`tool_call` records) of any node, newest first
    /// (for a role that reads the audit; `None` otherwise).
    pub tool_calls: Option<Vec<AuditRow>>,
}

/// The most tool calls a task's detail lists.
const TOOL_CALLS: usize = 200;

impl Console {
    /// Task `id`'s tree, its tokens and (with `audit`) its tool calls,
    /// read from the audit back to the tree's start.
    pub async fn task_detail(
        &self,
        id: &writ_core::TaskId,
        audit: bool,
    ) -> Result<TaskDetail, Error> {
        let tasks = self.store.task_tree(id).await?;
        let Some(root) = tasks.first() else {
            return Err(Error::NotFound(format!("no task {id}")));
        };
        let start = root.created_at.millis();
        let ids: std::collections::HashSet<String> =
            tasks.iter().map(|t| t.task_id.to_string()).collect();
        let now = self.now();
        let tokens = self
            .store
            .task_tree_grants(id)
            .await?
            .into_iter()
            .map(|(g, revoked_at)| TokenRow {
                state: if revoked_at.is_some() {
                    "revoked"
                } else if g.expires_at <= now {
                    "expired"
                } else {
                    "live"
                },
                jti: g.jti,
                kind: g.kind.as_str().to_owned(),
                task_id: g.task_id,
                audience: g.audience,
                issued_at: g.issued_at,
                expires_at: g.expires_at,
                revoked_at,
            })
            .collect();
        let tool_calls = if audit {
            Some(self.tool_calls_of(&ids, start).await?)
        } else {
            None
        };
        Ok(TaskDetail {
            tasks,
            tokens,
            tool_calls,
        })
    }

    /// `tool_call` records of the tasks `ids`, newest first, reading the
    /// audit back to `start` (nothing older can be theirs).
    async fn tool_calls_of(
        &self,
        ids: &std::collections::HashSet<String>,
        start: i64,
    ) -> Result<Vec<AuditRow>, Error> {
        let head = self.store.audit_head().await?;
        let mut cursor = head.saturating_add(1);
        let mut scanned = 0u64;
        let mut out = Vec::new();
        'scan: while cursor > 1 && scanned < SEARCH_SCAN && out.len() < TOOL_CALLS {
            let after = cursor.saturating_sub(1 + u64::from(SEARCH_CHUNK));
            let chunk = self.store.audit_after(after, SEARCH_CHUNK).await?;
            let below = cursor;
            let mut read_any = false;
            for r in chunk.iter().rev().filter(|r| r.seq < below) {
                read_any = true;
                scanned += 1;
                cursor = r.seq;
                if r.ts.millis() < start {
                    break 'scan;
                }
                // Cheap checks on the text before parsing it.
                if !r.event.contains("tool_call") {
                    continue;
                }
                let Ok(e) = serde_json::from_str::<serde_json::Value>(&r.event) else {
                    continue;
                };
                let field = |k: &str| e.get(k).and_then(serde_json::Value::as_str);
                if field("kind") == Some("tool_call")
                    && field("task").is_some_and(|t| ids.contains(t))
                {
                    out.push(AuditRow {
                        seq: r.seq,
                        ts: r.ts,
                        hash: r.hash.clone(),
                        event: e,
                    });
                    if out.len() >= TOOL_CALLS {
                        break 'scan;
                    }
                }
            }
            if !read_any {
                break;
            }
        }
        Ok(out)
    }
}

/// A live instance of an agent, as the console shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceRow {
    pub instance_id: String,
    /// How it attested (`join_token`, `k8s`, ...).
    pub attestation: String,
    pub created_at: writ_core::Timestamp,
    pub expires_at: writ_core::Timestamp,
    /// Whether its tokens are bound to a DPoP key.
    pub dpop: bool,
    pub active_tasks: u64,
}

/// What the console shows of one agent beyond its registration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentDetail {
    /// Newest first (at most [`INSTANCES`]).
    pub instances: Vec<InstanceRow>,
    /// Its last decisions, newest first (for a role that reads the audit;
    /// `None` otherwise).
    pub decisions: Option<Vec<AuditRow>>,
    /// How many audit records were read for them (the newest, at most
    /// [`SEARCH_SCAN`]).
    pub scanned: u64,
}

/// The most live instances one agent's detail lists.
const INSTANCES: u32 = 100;
/// The most decisions one agent's detail lists.
const AGENT_DECISIONS: usize = 25;

impl Console {
    /// Agent `name`'s live instances and (with `audit`) its last decisions.
    pub async fn agent_detail(
        &self,
        name: &writ_core::AgentName,
        audit: bool,
    ) -> Result<AgentDetail, Error> {
        if self.store.get_agent(name).await?.is_none() {
            return Err(Error::NotFound(format!("no agent {name}")));
        }
        let instances = self
            .store
            .live_instances(name, self.now(), INSTANCES)
            .await?
            .into_iter()
            .map(|(i, active_tasks)| InstanceRow {
                instance_id: i.id.to_string(),
                attestation: i.attestation,
                created_at: i.created_at,
                expires_at: i.expires_at,
                dpop: i.jkt.is_some(),
                active_tasks,
            })
            .collect();
        let (decisions, scanned) = if audit {
            let (d, n) = self.decisions_of(name.as_str()).await?;
            (Some(d), n)
        } else {
            (None, 0)
        };
        Ok(AgentDetail {
            instances,
            decisions,
            scanned,
        })
    }

    /// The last decisions about `agent` (newest first), and how many
    /// records were read to find them.
    async fn decisions_of(&self, agent: &str) -> Result<(Vec<AuditRow>, u64), Error> {
        let head = self.store.audit_head().await?;
        let mut cursor = head.saturating_add(1);
        let mut scanned = 0u64;
        let mut out = Vec::new();
        'scan: while cursor > 1 && scanned < SEARCH_SCAN {
            let after = cursor.saturating_sub(1 + u64::from(SEARCH_CHUNK));
            let chunk = self.store.audit_after(after, SEARCH_CHUNK).await?;
            let below = cursor;
            let mut read_any = false;
            for r in chunk.iter().rev().filter(|r| r.seq < below) {
                read_any = true;
                scanned += 1;
                cursor = r.seq;
                // Cheap check on the text before parsing it.
                if !r.event.contains(agent) {
                    continue;
                }
                let Ok(e) = serde_json::from_str::<serde_json::Value>(&r.event) else {
                    continue;
                };
                let field = |k: &str| e.get(k).and_then(serde_json::Value::as_str);
                let decided = field("kind").is_some_and(|k| DECISION_KINDS.contains(&k))
                    && matches!(field("outcome"), Some("success" | "deny"));
                if decided && field("agent") == Some(agent) {
                    out.push(AuditRow {
                        seq: r.seq,
                        ts: r.ts,
                        hash: r.hash.clone(),
                        event: e,
                    });
                    if out.len() >= AGENT_DECISIONS {
                        break 'scan;
                    }
                }
            }
            if !read_any {
                break;
            }
        }
        Ok((out, scanned))
    }
}

/// A policy set as stored: its version and files (name to Cedar text).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicySources {
    pub version: String,
    pub files: std::collections::BTreeMap<String, String>,
}

impl Console {
    /// The sources of a set that was once live (for a diff between
    /// versions), `NotFound` for a version never live here.
    pub async fn policy_sources(&self, version: &str) -> Result<PolicySources, Error> {
        let files = self
            .store
            .policy_sources(version)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no policy version {version}")))?;
        Ok(PolicySources {
            version: version.to_owned(),
            files: files.into_iter().collect(),
        })
    }

    /// The shadow set deciding beside the live one, if any.
    pub async fn shadow_sources(&self) -> Result<Option<PolicySources>, Error> {
        Ok(self
            .store
            .shadow_policy()
            .await?
            .map(|(version, files)| PolicySources {
                version,
                files: files.into_iter().collect(),
            }))
    }
}
