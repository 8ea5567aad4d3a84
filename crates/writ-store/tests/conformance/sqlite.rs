use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use writ_store::SqlStore;
use writ_store::prelude::*;

pub struct SqliteHarness {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteHarness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("writ.db");
        Self { _dir: dir, path }
    }

    fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.path).unwrap()
    }
}

#[async_trait]
impl super::Harness for SqliteHarness {
    /// Opens a new store on the harness's file.
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqlStore::open_sqlite(&self.path).unwrap())
    }

    async fn exec_raw(&self, sql: &str) -> Result<u64, String> {
        self.raw()
            .execute(sql, [])
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }

    async fn drop_audit_guards(&self) {
        self.raw()
            .execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
    }
}

const CLOSE_RACE_CHILD: &str = "WRIT_STORE_CLOSE_RACE_CHILD";
const ROUNDS: i64 = 200;

/// Opens, uses and drops `SqlStore`s in a loop on a few threads.
fn close_race_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = dir.path().join(format!("close-race-{t}.db"));
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let store = SqlStore::open_sqlite(&path).unwrap();
                    handle.block_on(async {
                        store
                            .append_audit(
                                super::at(i),
                                vec![super::ev(super::AuditKind::PolicyLoad)],
                            )
                            .await
                            .unwrap();
                        store.audit_after(0, 1).await.unwrap();
                    });
                    drop(store);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Dropping a `SqlStore` must never hang. Today the drop closes the
/// reader connections on the dropping thread while the writer thread
/// closes the writer connection in the background (possibly while the
/// next store on the same file is opening); with the bundled SQLite
/// 3.51.1 that is an ABBA deadlock in the unix VFS (`unixClose` holds
/// the global VFS mutex and waits for the inode mutex; `sqlite3WalClose`
/// -> `unixLock` -> `unixIsSharingShmNode` holds the inode mutex and
/// waits for the global one), after which every SQLite call in the
/// process hangs. Fixed in SQLite 3.51.2. Runs in a child process so a
/// hang cannot take the other checks with it.
#[test]
fn store_drop_does_not_deadlock() {
    if std::env::var_os(CLOSE_RACE_CHILD).is_some() {
        close_race_child();
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite::store_drop_does_not_deadlock",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CLOSE_RACE_CHILD, "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("opening and dropping SqlStores hung (SQLite unix-VFS close deadlock)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "close-race child failed: {status}");
}

every_check!(Some(SqliteHarness::new()));
