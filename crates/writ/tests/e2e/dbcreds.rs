//! Dynamic PostgreSQL credentials against a real server: a task's role
//! works while the task lives (a real query) and not a moment after it,
//! whether the task completes, is quarantined, or its lease lapses while
//! the broker is down.

use std::time::Duration;

use writ_core::api::{DbCredential, RegisterTool, SetToolSecret, Upstream};

use crate::harness::{Broker, Opts, eventually, postgres_database};

/// Runs blocking client work off the async threads.
fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

fn connect(url: &str) -> Result<postgres::Client, postgres::Error> {
    postgres::Client::connect(url, postgres::NoTls)
}

/// A database standing in for the team's warehouse: one schema, one table.
pub(crate) fn warehouse() -> Option<String> {
    let url = postgres_database()?;
    let u = url.clone();
    blocking(move || {
        connect(&u)
            .unwrap()
            .batch_execute(
                "CREATE SCHEMA reporting;
                 CREATE TABLE reporting.sales (id int, amount int);
                 INSERT INTO reporting.sales VALUES (1, 10), (2, 20), (3, 30);",
            )
            .unwrap();
    });
    Some(url)
}

/// Registers the `warehouse` postgres tool (read-only on `reporting`) with
/// its admin connection.
pub(crate) async fn register_warehouse(b: &Broker, admin_url: &str) {
    let admin = b.admin();
    admin
        .register_tool(&RegisterTool {
            name: "warehouse".parse().unwrap(),
            audience: "postgres://warehouse".into(),
            scopes: vec!["read".parse().unwrap()],
            attributes: Default::default(),
            upstream: Some(Upstream::Postgres {
                grants: vec![
                    "GRANT USAGE ON SCHEMA reporting TO {role}".into(),
                    "GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO {role}".into(),
                ],
            }),
            gateway: None,
        })
        .await
        .unwrap();
    admin
        .set_tool_secret(
            "warehouse",
            &SetToolSecret {
                header: String::new(),
                value: admin_url.to_owned(),
            },
        )
        .await
        .unwrap();
}

pub(crate) fn sum_sales(url: &str) -> Result<i64, String> {
    let url = url.to_owned();
    blocking(move || {
        let mut c = connect(&url).map_err(|e| e.to_string())?;
        c.query_one("SELECT sum(amount)::bigint FROM reporting.sales", &[])
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| e.to_string())
    })
}

pub(crate) fn role_exists(admin_url: &str, role: &str) -> bool {
    let (url, role) = (admin_url.to_owned(), role.to_owned());
    blocking(move || {
        connect(&url)
            .unwrap()
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .unwrap()
            .is_some()
    })
}

pub(crate) async fn credential(b: &Broker, token: &str, task: &writ_core::TaskId) -> DbCredential {
    b.as_token(token)
        .db_credential(task, &"warehouse".parse().unwrap())
        .await
        .unwrap()
}

/// Issue 6: the role works during the task (a real query, read-only as its
/// grants say), and when the task completes its open session is ended, new
/// logins fail and the role is gone. Quarantine does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_postgres_role_lives_exactly_as_long_as_its_task() {
    let Some(db) = warehouse() else { return };
    let b = Broker::start();
    register_warehouse(&b, &db).await;
    let inst = b.attest("demo-agent").await;
    let task = b
        .start_task(&inst.access_token, &["warehouse:read"])
        .await
        .unwrap();

    let cred = credential(&b, &task.access_token, &task.task_id).await;
    assert!(cred.username.starts_with("writ_"), "{}", cred.username);
    assert!(cred.url.contains(&cred.username));
    assert_eq!(sum_sales(&cred.url).unwrap(), 60);
    // Read-only, as granted.
    let url = cred.url.clone();
    let write = blocking(move || {
        connect(&url)
            .unwrap()
            .batch_execute("INSERT INTO reporting.sales VALUES (4, 40)")
            .map_err(|e| format!("{e:?}"))
    });
    assert!(
        write.unwrap_err().contains("permission denied"),
        "the role could write"
    );
    // Each credential is a new role.
    let again = credential(&b, &task.access_token, &task.task_id).await;
    assert_ne!(again.username, cred.username);

    // Refusals: a tool the task was not granted, a tool that is no
    // database, an admin asking.
    let not_granted = b
        .as_token(&task.access_token)
        .db_credential(&task.task_id, &"tickets".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        not_granted.to_string().contains("not granted"),
        "{not_granted}"
    );
    let by_admin = b
        .admin()
        .db_credential(&task.task_id, &"warehouse".parse().unwrap())
        .await
        .unwrap_err();
    assert!(by_admin.to_string().contains("403"), "{by_admin}");

    // A session held open across the end of the task.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (open_tx, open_rx) = std::sync::mpsc::channel::<()>();
    let url = cred.url.clone();
    std::thread::spawn(move || {
        let mut c = connect(&url).unwrap();
        c.query_one("SELECT 1", &[]).unwrap();
        open_tx.send(()).unwrap();
        rx.recv().unwrap();
        let r = c
            .query_one("SELECT 1", &[])
            .map(|_| ())
            .map_err(|e| e.to_string());
        done_tx.send(r).unwrap();
    });
    // The session must be open before the task ends, or the test races the
    // broker's termination of the role's sessions.
    open_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the session opened");

    b.as_token(&inst.access_token)
        .complete(&task.task_id)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (db, a, c) = (db.clone(), again.username.clone(), cred.username.clone());
            async move { !role_exists(&db, &a) && !role_exists(&db, &c) }
        })
        .await,
        "the task's roles outlived it"
    );
    tx.send(()).unwrap();
    let held = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(held.is_err(), "a session of the role survived the task");
    assert!(sum_sales(&cred.url).is_err(), "the role still logs in");

    // Quarantine ends the agent's tasks, and their roles with them.
    let inst = b.attest("demo-agent").await;
    let task = b
        .start_task(&inst.access_token, &["warehouse:read"])
        .await
        .unwrap();
    let cred = credential(&b, &task.access_token, &task.task_id).await;
    assert_eq!(sum_sales(&cred.url).unwrap(), 60);
    b.admin()
        .quarantine(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (db, c) = (db.clone(), cred.username.clone());
            async move { !role_exists(&db, &c) }
        })
        .await,
        "quarantine left the role"
    );

    // Every issuance and every drop is in the audit chain.
    let records = b.admin().audit(0, 10_000).await.unwrap().records;
    let kinds: Vec<String> = records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.event).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "\"credential_issue\"")
            .count(),
        3
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "\"credential_revoke\"")
            .count(),
        3
    );
    // The admin connection never shows.
    let tools = serde_json::to_string(&b.admin().tools().await.unwrap()).unwrap();
    assert!(!tools.contains(&db), "the admin connection is shown");
    let audit = serde_json::to_string(&records).unwrap();
    assert!(!audit.contains(&db) && !audit.contains(&cred.password));
}

/// After `kill -9`, the leases are recovered on start: a task whose lease
/// lapsed while the broker was down is ended, and its role dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_postgres_roles_are_dropped_after_a_crash() {
    let Some(db) = warehouse() else { return };
    let mut b = Broker::start_with(Opts {
        extra: vec![
            "--sweep-interval-ms".into(),
            "50".into(),
            "--lease-ttl".into(),
            "3".into(),
        ],
        ..Opts::default()
    });
    register_warehouse(&b, &db).await;
    let inst = b.attest("demo-agent").await;
    let task = b
        .start_task(&inst.access_token, &["warehouse:read"])
        .await
        .unwrap();
    let cred = credential(&b, &task.access_token, &task.task_id).await;
    assert_eq!(sum_sales(&cred.url).unwrap(), 60);

    b.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The broker is down and the lease has lapsed: the role still works
    // (nothing could drop it), until the broker is back.
    assert!(role_exists(&db, &cred.username));
    b.restart();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (db, c) = (db.clone(), cred.username.clone());
            async move { !role_exists(&db, &c) }
        })
        .await,
        "the role outlived its task across a crash"
    );
    assert!(sum_sales(&cred.url).is_err());
}
