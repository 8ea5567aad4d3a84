//! Decisions over time, grouped by the database: per minute, and denials
//! by the policy that decided them, over every record of a range.
//!
//! The audit table is keyed by its sequence number only; time follows it
//! (records are appended in time order, to within the moments a write
//! waits in the queue or a replica's clock differs). So the range's first
//! record is found by a binary search over the chain, from [`SLACK_MS`]
//! before the range, and the queries filter on time exactly from there:
//! no index on time, no migration, and the work is the range's records.

use writ_core::audit::AuditRecord;

use super::ts;
use crate::AuditActivity;
use crate::sql::{DbResult, Dialect, Sql, Value};

/// How far out of time order a record may be and still be counted.
const SLACK_MS: i64 = 5 * 60 * 1000;
const MINUTE_MS: i64 = 60_000;

/// The records of a range, with their event as JSON (`j`: parsed on
/// PostgreSQL, the text `json_extract` reads on SQLite): `?1` from, `?2`
/// until, `?3` the first sequence number worth reading.
fn range(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => {
            "(SELECT seq, ts, event, prev_hash, hash, event AS j FROM audit \
             WHERE seq >= ?3 AND ts >= ?1 AND ts < ?2)"
        }
        Dialect::Postgres => {
            "(SELECT seq, ts, event, prev_hash, hash, event::jsonb AS j FROM audit \
             WHERE seq >= ?3 AND ts >= ?1 AND ts < ?2)"
        }
    }
}

/// The records that are a decision: policy decided something for an agent.
const DECISION_KINDS: [&str; 4] = ["decision", "tool_call", "task_start", "token_exchange"];

/// What each record is counted by, read from its event in one parse: a
/// JSON array `[outcome, kind, determining_policies]` as text.
fn counted_by(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "json_extract(a.j, '$.outcome', '$.kind', '$.determining_policies')",
        Dialect::Postgres => {
            "jsonb_build_array(a.j->'outcome', a.j->'kind', a.j->'determining_policies')::text"
        }
    }
}

pub(super) fn activity(
    c: &dyn Sql,
    from: i64,
    until: i64,
    policies: u32,
    recent: u32,
) -> DbResult<AuditActivity> {
    let d = c.dialect();
    let first = first_seq_near(c, from.saturating_sub(SLACK_MS))?;
    let args = [Value::Int(from), Value::Int(until), Value::Int(first)];
    // One pass over the range: the records grouped by minute and by what
    // they are counted by (a handful of groups a minute).
    let grouped = format!(
        "SELECT (a.ts - ?1) / {MINUTE_MS} AS m, {} AS k, COUNT(*) FROM {} a GROUP BY m, k",
        counted_by(d),
        range(d)
    );
    let mut minutes = std::collections::BTreeMap::<u32, (u64, u64)>::new();
    let mut denied_by = std::collections::BTreeMap::<String, u64>::new();
    for r in c.rows(&grouped, &args)? {
        let minute = u32::try_from(r.get::<_, i64>(0)?.max(0)).unwrap_or(u32::MAX);
        let key: Option<String> = r.get(1)?;
        let n = r.get::<_, i64>(2)?.max(0) as u64;
        let key: serde_json::Value = key
            .as_deref()
            .and_then(|k| serde_json::from_str(k).ok())
            .unwrap_or_default();
        let text = |i: usize| key.get(i).and_then(serde_json::Value::as_str);
        let slot = minutes.entry(minute).or_default();
        match text(0) {
            Some("success") if text(1).is_some_and(|k| DECISION_KINDS.contains(&k)) => {
                slot.0 += n;
            }
            Some("deny") => {
                slot.1 += n;
                let named: Vec<&str> = key
                    .get(2)
                    .and_then(serde_json::Value::as_array)
                    .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
                    .unwrap_or_default();
                if named.is_empty() {
                    *denied_by.entry("(no policy)".to_owned()).or_default() += n;
                }
                for p in named {
                    *denied_by.entry(p.to_owned()).or_default() += n;
                }
            }
            _ => {}
        }
    }
    let minutes = minutes
        .into_iter()
        .filter(|(_, (allowed, denied))| allowed + denied > 0)
        .map(|(m, (allowed, denied))| (m, allowed, denied))
        .collect();
    let mut denied_by: Vec<(String, u64)> = denied_by.into_iter().collect();
    denied_by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    denied_by.truncate(usize::try_from(policies).unwrap_or(usize::MAX));
    let outcome = match d {
        Dialect::Sqlite => "json_extract(a.j, '$.outcome')",
        Dialect::Postgres => "(a.j->>'outcome')",
    };
    let newest = format!(
        "SELECT a.seq, a.ts, a.event, a.prev_hash, a.hash FROM {} a \
         WHERE {outcome} = 'deny' ORDER BY a.seq DESC LIMIT ?4",
        range(d)
    );
    let mut with_limit = args.to_vec();
    with_limit.push(Value::Int(i64::from(recent)));
    let recent_denials = c
        .rows(&newest, &with_limit)?
        .iter()
        .map(|r| {
            Ok(AuditRecord {
                seq: r.get::<_, i64>(0)?.max(0) as u64,
                ts: ts(r.get(1)?),
                event: r.get(2)?,
                prev_hash: r.get(3)?,
                hash: r.get(4)?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    Ok(AuditActivity {
        minutes,
        denied_by,
        recent_denials,
    })
}

/// The first sequence number whose record (or the next one kept) was
/// written at or after `at`, by binary search over the chain: a few
/// lookups by key, whatever its length. Past the head when none was.
fn first_seq_near(c: &dyn Sql, at: i64) -> DbResult<i64> {
    let bounds = c.rows("SELECT MIN(seq), MAX(seq) FROM audit", &[])?;
    let Some(row) = bounds.first() else {
        return Ok(0);
    };
    let (Some(lo), Some(hi)) = (row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?)
    else {
        return Ok(0);
    };
    let (mut lo, mut hi) = (lo, hi.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let t = c.rows(
            "SELECT ts FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT 1",
            &[Value::Int(mid)],
        )?;
        match t.first().map(|r| r.get::<_, i64>(0)).transpose()? {
            Some(t) if t >= at => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo)
}
