//! Seeds a broker's SQLite database with a fleet's worth of state, for the
//! console's browser test of speed on a fleet (interop/console): tasks of
//! an agent that is already registered and attested, and audit records
//! appended through the store (so the chain stays valid). Test tooling:
//! an example, never part of a `writ` build.
//!
//! `seed_fleet DB AGENT INSTANCE TASKS RECORDS` (the broker stopped).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use writ_core::Timestamp;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::time::{Clock as _, SystemClock};
use writ_store::SqlStore;
use writ_store::prelude::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(args.len(), 6, "seed_fleet DB AGENT INSTANCE TASKS RECORDS");
    let db = PathBuf::from(&args[1]);
    let (agent, instance) = (args[2].clone(), args[3].clone());
    let tasks: u64 = args[4].parse().expect("TASKS");
    let records: u64 = args[5].parse().expect("RECORDS");
    let now = SystemClock.now().millis();

    // Tasks: plain rows in one transaction (nothing chains them).
    let started = std::time::Instant::now();
    {
        let mut c = rusqlite::Connection::open(&db).expect("the database");
        let tx = c.transaction().unwrap();
        {
            let mut ins = tx
                .prepare(
                    "INSERT INTO tasks (id, agent, instance_id, intent, capabilities, on_behalf_of, status, \
                     created_at, lease_expires_at, expires_at, ended_at, end_reason, policy_version) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'seeded')",
                )
                .unwrap();
            for i in 0..tasks {
                let id = format!("task_fleet{i:017}");
                let created = now - 3_600_000 + (i as i64 * 3_600_000 / tasks.max(1) as i64);
                let status = match i % 10 {
                    0 => "active",
                    1 => "revoked",
                    2 => "expired",
                    _ => "completed",
                };
                let ended = (status != "active").then_some(created + 1000);
                ins.execute(rusqlite::params![
                    id,
                    agent,
                    instance,
                    format!("fleet task {i}: summarise tickets of queue {}", i % 97),
                    r#"[{"tool":"tickets","scopes":["read"]}]"#,
                    (i % 3 == 0).then(|| format!("user:person{}", i % 50)),
                    status,
                    created,
                    now + 600_000,
                    now + 3_600_000,
                    ended,
                    ended.map(|_| "seeded"),
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let tasks_s = started.elapsed().as_secs_f64();

    // Audit records through the store, a thousand per append, spread over
    // the last half hour (the overview's window): the chain stays whole.
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqlStore::open_sqlite(&db).expect("the store");
        let batches = records.div_ceil(1000);
        for b in 0..batches {
            let at = now - 1_800_000 + (b as i64 * 1_790_000 / batches.max(1) as i64);
            let n = (records - b * 1000).min(1000);
            let events = (0..n)
                .map(|k| {
                    let i = b * 1000 + k;
                    let task = format!("task_fleet{:017}", i % tasks.max(1));
                    match i % 5 {
                        0 => AuditEvent::new(AuditKind::TaskStart, Outcome::Success, format!("instance:{instance}"))
                            .agent(&agent)
                            .task(&task)
                            .policy("seeded", vec!["reads".into()])
                            .reason("permitted by reads"),
                        1 => AuditEvent::new(AuditKind::TaskStart, Outcome::Deny, format!("instance:{instance}"))
                            .agent(&agent)
                            .policy("seeded", vec!["no-deletes".into()])
                            .reason("denied by no-deletes"),
                        2 => AuditEvent::new(AuditKind::ToolCall, Outcome::Success, "gateway:embedded")
                            .agent(&agent)
                            .task(&task)
                            .policy("seeded", vec!["gateway-reads".into()])
                            .reason("permitted by gateway-reads")
                            .detail(serde_json::json!({"tool": "tickets", "method": "GET", "path": format!("/tickets/{i}")})),
                        3 => AuditEvent::new(AuditKind::TaskHeartbeat, Outcome::Success, format!("instance:{instance}"))
                            .agent(&agent)
                            .task(&task),
                        _ => AuditEvent::new(AuditKind::TokenIssue, Outcome::Success, "system")
                            .agent(&agent)
                            .task(&task),
                    }
                })
                .collect();
            store
                .append_audit(Timestamp::from_millis(at), events)
                .await
                .expect("appending audit records");
        }
    });
    println!(
        "seeded {tasks} tasks in {tasks_s:.2} s and {records} audit records in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
