//! The same suite against a real PostgreSQL server: one fresh database per
//! test on the server named by `WRIT_TEST_POSTGRES` (a superuser URL;
//! `scripts/postgres.sh` starts one, and `scripts/test.sh` always sets it).
//! Without it the PostgreSQL checks are skipped, except under CI, where
//! they fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use writ_store::SqlStore;
use writ_store::prelude::*;

pub struct PgHarness {
    admin: String,
    url: String,
    db: String,
}

/// Runs blocking client work off the async threads.
fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

fn client(url: &str) -> ::postgres::Client {
    ::postgres::Client::connect(url, ::postgres::NoTls).unwrap()
}

/// `url` with its database replaced by `db`.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// A fresh, empty database on the test server, or `None` to skip.
pub fn fresh_database() -> Option<(String, String, String)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Ok(admin) = std::env::var("WRIT_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "WRIT_TEST_POSTGRES is not set: CI must run the PostgreSQL checks"
        );
        eprintln!("skipped: WRIT_TEST_POSTGRES is not set (scripts/postgres.sh starts a server)");
        return None;
    };
    let db = format!(
        "writ_t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .unwrap()
            .subsec_nanos()
    );
    let (a, d) = (admin.clone(), db.clone());
    blocking(move || {
        client(&a)
            .batch_execute(&format!("CREATE DATABASE {d}"))
            .unwrap()
    });
    let url = with_db(&admin, &db);
    Some((admin, url, db))
}

impl PgHarness {
    pub fn new() -> Option<Self> {
        let (admin, url, db) = fresh_database()?;
        Some(Self { admin, url, db })
    }
}

impl Drop for PgHarness {
    fn drop(&mut self) {
        let (admin, db) = (self.admin.clone(), self.db.clone());
        blocking(move || {
            let _ =
                client(&admin).batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        });
    }
}

#[async_trait]
impl super::Harness for PgHarness {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqlStore::connect_postgres(&self.url).await.unwrap())
    }

    async fn exec_raw(&self, sql: &str) -> Result<u64, String> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        blocking(move || {
            client(&url)
                .execute(sql.as_str(), &[])
                .map_err(|e| e.to_string())
        })
    }

    async fn drop_audit_guards(&self) {
        let url = self.url.clone();
        blocking(move || {
            client(&url)
                .batch_execute(
                    "DROP TRIGGER audit_no_update ON audit; DROP TRIGGER audit_no_truncate ON audit;",
                )
                .unwrap();
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s6_postgres_commits_are_synchronous() {
    let Some(h) = PgHarness::new() else { return };
    let store = SqlStore::connect_postgres(&h.url).await.unwrap();
    assert!(store.durable_commits().await.unwrap());
}

/// A write whose wait for the writers' lock is cancelled (a statement
/// or lock timeout, an operator's `pg_cancel_backend`) fails alone: the
/// next write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_lock_wait_does_not_wedge_the_writer() {
    let Some(h) = PgHarness::new() else { return };
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect_postgres(&h.url).await.unwrap());
    let e = || vec![super::ev(super::AuditKind::PolicyLoad)];
    store.append_audit(super::at(0), e()).await.unwrap();

    // Another session holds the writers' lock.
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let url = h.url.clone();
    let holder = std::thread::spawn(move || {
        let mut c = client(&url);
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("SELECT pg_advisory_xact_lock(2003986804)")
            .unwrap();
        held_tx.send(()).unwrap();
        hold_rx.recv().unwrap();
        tx.commit().unwrap();
    });
    held_rx.recv().unwrap();
    let waiting = {
        let s = Arc::clone(&store);
        tokio::spawn(async move { s.append_audit(super::at(1), e()).await })
    };
    // Cancel the writer's wait once it is waiting.
    let url = h.url.clone();
    blocking(move || {
        let mut c = client(&url);
        for _ in 0..200 {
            let rows = c
                .query(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = 'writ' AND wait_event_type = 'Lock'",
                    &[],
                )
                .unwrap();
            if !rows.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the writer never waited for the lock");
    });
    assert!(
        waiting.await.unwrap().is_err(),
        "the cancelled write succeeded"
    );
    hold_tx.send(()).unwrap();
    holder.join().unwrap();
    store
        .append_audit(super::at(2), vec![super::ev(super::AuditKind::PolicyLoad)])
        .await
        .expect("the writer is wedged after a cancelled lock wait");
    assert_eq!(super::assert_chain(&*store).await, 2);
}

/// Two stores on one database (two broker replicas) writing at once
/// extend one chain, and each hears of the other's revocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_chain_and_announce_revocations() {
    use writ_store::Change;
    let Some(h) = PgHarness::new() else { return };
    let a: Arc<dyn Store> = Arc::new(SqlStore::connect_postgres(&h.url).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqlStore::connect_postgres(&h.url).await.unwrap());
    let mut heard_by_b = b.changes().expect("a shared store announces changes");

    let mut writers = Vec::new();
    for n in 0..100u32 {
        let s = Arc::clone(if n % 2 == 0 { &a } else { &b });
        writers.push(tokio::spawn(async move {
            let e = super::ev(super::AuditKind::PolicyLoad).detail(serde_json::json!({ "n": n }));
            s.append_audit(super::at(i64::from(n)), vec![e.clone(), e])
                .await
                .unwrap();
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(super::assert_chain(&*a).await, 200);
    assert_eq!(super::assert_chain(&*b).await, 200);

    // A grant revoked through A reaches B's feed and B's listener.
    let agent = super::register(&*a, "shared").await;
    super::attest(&*a, &agent, None, "jti-shared", super::at(1))
        .await
        .unwrap();
    assert!(
        a.revoke_grant("jti-shared", super::at(5), vec![])
            .await
            .unwrap()
            .is_some()
    );
    let change = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match heard_by_b.recv().await.unwrap() {
                Change::Revocations => break,
                _ => continue,
            }
        }
    })
    .await;
    assert!(change.is_ok(), "B never heard of the revocation");
    let feed = b.revocations_after(0, 100).await.unwrap();
    assert!(feed.iter().any(|r| r.jti == "jti-shared"), "{feed:?}");
}

every_check!(PgHarness::new());
