//! Crash consistency: a mixed load, `kill -9` at random points, restart,
//! and nothing that was acknowledged is lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use writ_core::api::AttestRequest;

use crate::harness::Broker;

#[derive(Default)]
struct Acked {
    /// Tokens returned, with their task (if any).
    issued: Vec<(String, Option<writ_core::TaskId>)>,
    /// Tokens whose revocation was acknowledged.
    revoked: Vec<String>,
    /// Tasks whose end was acknowledged.
    ended: Vec<writ_core::TaskId>,
    /// Revocations and task ends sent, acknowledged or not (one cut short by
    /// the kill may or may not have committed).
    attempted: Vec<String>,
}

/// A small deterministic generator, seeded per run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

/// A broker for a load test: its load comes from one address, which the
/// per-client attestation and request limits would thin out, and the limits
/// are not what these tests are about.
fn without_attest_limit(mut opts: crate::harness::Opts) -> crate::harness::Opts {
    opts.extra.extend(
        [
            "--limit-attest-per-minute",
            "0",
            "--limit-credential-per-minute",
            "0",
            "--limit-client-per-minute",
            "0",
            "--limit-anonymous-per-minute",
            "0",
        ]
        .map(String::from),
    );
    opts
}

async fn load(b: Arc<(String, Mutex<Acked>)>, worker: u64, stop: Instant) {
    let (addr, acked) = (&b.0, &b.1);
    let admin = writ_client::Client::new(addr, Some(writ_core::Secret::new(crate::harness::ADMIN)))
        .unwrap();
    let anon = writ_client::Client::new(addr, None).unwrap();
    let mut rng = Lcg(worker + 1);
    while Instant::now() < stop {
        let Ok(jt) = admin.join_token(&"demo-agent".parse().unwrap(), 60).await else {
            return;
        };
        let Ok(att) = anon
            .attest(&AttestRequest {
                agent: "demo-agent".parse().unwrap(),
                join_token: Some(jt.join_token),
                oidc_token: None,
                jwt_svid: None,
            })
            .await
        else {
            return;
        };
        acked
            .lock()
            .unwrap()
            .issued
            .push((att.access_token.clone(), None));
        let agent = anon.with_token(&att.access_token);
        for _ in 0..3 {
            let req = writ_core::api::StartTask {
                intent: "crash test".into(),
                capabilities: vec![writ_core::Capability::parse_short("tickets:read").unwrap()],
                on_behalf_of: None,
                ttl: None,
                justification: None,
            };
            let Ok(t) = agent.start_task(&req).await else {
                return;
            };
            acked
                .lock()
                .unwrap()
                .issued
                .push((t.access_token.clone(), Some(t.task_id.clone())));
            match rng.next(3) {
                0 => {
                    acked.lock().unwrap().attempted.push(t.access_token.clone());
                    if admin.revoke(&t.access_token).await.is_ok() {
                        acked.lock().unwrap().revoked.push(t.access_token);
                    }
                }
                1 => {
                    acked.lock().unwrap().attempted.push(t.access_token.clone());
                    if agent.complete(&t.task_id).await.is_ok() {
                        acked.lock().unwrap().ended.push(t.task_id);
                    }
                }
                _ => {}
            }
        }
    }
}

/// S2 and promise 2: over 20 crashes at random points, every acknowledged
/// revocation and task end survives, every returned token has its issuance
/// record, no grant outlives its task, and the audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_kill9_at_random_points_loses_nothing_acknowledged() {
    let mut b = Broker::start_with(without_attest_limit(Default::default()));
    #[expect(clippy::disallowed_methods, reason = "a seed, not a time decision")]
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut rng = Lcg(seed);
    eprintln!("crash test seed {seed}");
    let mut checked = (0usize, 0usize, 0usize);
    // 20 in every test run; set WRIT_CRASH_ROUNDS for a longer one.
    let rounds: u64 = std::env::var("WRIT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(20);
    for round in 0..rounds {
        let shared = Arc::new((b.addr.clone(), Mutex::new(Acked::default())));
        let run_for = Duration::from_millis(100 + rng.next(400));
        let stop = Instant::now() + Duration::from_secs(5);
        let workers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(load(Arc::clone(&shared), round * 10 + w, stop)))
            .collect();
        tokio::time::sleep(run_for).await;
        b.kill9();
        for w in workers {
            let _ = w.await;
        }
        b.restart();

        let acked = std::mem::take(&mut *shared.1.lock().unwrap());
        let admin = b.admin();
        for tok in &acked.revoked {
            assert!(
                !admin.introspect(tok).await.unwrap().active,
                "round {round}: a revocation was lost"
            );
        }
        let ended: std::collections::HashSet<_> = acked.ended.iter().collect();
        for id in &acked.ended {
            let t = admin.task(id).await.unwrap();
            assert_ne!(
                t.status,
                writ_core::api::TaskStatus::Active,
                "round {round}: a task end was lost"
            );
        }
        for (tok, task) in &acked.issued {
            let active = admin.introspect(tok).await.unwrap().active;
            let should_be_dead =
                acked.revoked.contains(tok) || task.as_ref().is_some_and(|t| ended.contains(t));
            if should_be_dead {
                assert!(
                    !active,
                    "round {round}: a grant outlived its task or revocation"
                );
            } else if !acked.attempted.contains(tok) {
                // Not revoked, its task not ended, within its lifetime: it
                // must be live, so its issuance record survived.
                assert!(
                    active,
                    "round {round}: a returned token has no issuance record"
                );
            }
        }
        let v = admin.audit_verify().await.unwrap();
        assert!(v.valid, "round {round}: audit chain broken: {:?}", v.error);
        checked.0 += acked.issued.len();
        checked.1 += acked.revoked.len();
        checked.2 += acked.ended.len();
    }
    eprintln!(
        "crash test: {rounds} kills, {} tokens, {} revocations, {} task ends checked",
        checked.0, checked.1, checked.2
    );
    assert!(checked.0 > 0, "the load did nothing");
}

/// A private PostgreSQL server for one test (its own directory and port),
/// driven by `scripts/postgres.sh`, which installs and starts it.
struct PrivatePostgres {
    dir: String,
    port: u16,
}

impl PrivatePostgres {
    fn script(&self, arg: Option<&str>) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
        let out = std::process::Command::new(script)
            .args(arg)
            .env("WRIT_PG_DIR", &self.dir)
            .env("WRIT_PG_PORT", self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postgres.sh {arg:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn start() -> Option<(Self, String)> {
        // Only where the PostgreSQL tests run (scripts/test.sh, CI).
        crate::harness::postgres_database()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self {
            dir: format!("/tmp/writ-pg-s5-{}-{port}", std::process::id()),
            port,
        };
        let url = pg.script(None);
        Some((pg, url))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.script(Some("stop"));
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(format!("{}.initdb.log", self.dir));
    }
}

/// S5: the PostgreSQL server is killed (SIGKILL, server and backends) under
/// load; after it recovers, every write the broker acknowledged is there,
/// and the broker serves again without a restart of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_postgres_killed_mid_load_loses_nothing_acknowledged() {
    let Some((pg, url)) = PrivatePostgres::start() else {
        return;
    };
    let b = Broker::start_with(without_attest_limit(crate::harness::Opts {
        extra: vec!["--store".into(), url],
        ..Default::default()
    }));
    let shared = Arc::new((b.addr.clone(), Mutex::new(Acked::default())));
    let stop = Instant::now() + Duration::from_secs(10);
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(load(Arc::clone(&shared), w, stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.script(Some("crash"));
    for w in workers {
        let _ = w.await;
    }
    pg.script(None);

    // The broker reconnects by itself.
    let admin = b.admin();
    assert!(
        crate::harness::eventually(Duration::from_secs(20), || {
            let admin = admin.clone();
            async move { admin.audit_verify().await.is_ok() }
        })
        .await,
        "the broker did not come back after the database recovered"
    );
    let acked = std::mem::take(&mut *shared.1.lock().unwrap());
    assert!(
        !acked.issued.is_empty() && !acked.revoked.is_empty(),
        "the load did nothing before the kill"
    );
    for tok in &acked.revoked {
        assert!(
            !admin.introspect(tok).await.unwrap().active,
            "an acknowledged revocation was lost"
        );
    }
    for id in &acked.ended {
        assert_ne!(
            admin.task(id).await.unwrap().status,
            writ_core::api::TaskStatus::Active,
            "an acknowledged task end was lost"
        );
    }
    let ended: std::collections::HashSet<_> = acked.ended.iter().collect();
    for (tok, task) in &acked.issued {
        let dead = acked.revoked.contains(tok) || task.as_ref().is_some_and(|t| ended.contains(t));
        if !dead && !acked.attempted.contains(tok) {
            assert!(
                admin.introspect(tok).await.unwrap().active,
                "a returned token has no issuance record"
            );
        }
    }
    let v = admin.audit_verify().await.unwrap();
    assert!(v.valid, "audit chain broken: {:?}", v.error);
    eprintln!(
        "s5: {} tokens, {} revocations, {} task ends acknowledged before the kill, all present",
        acked.issued.len(),
        acked.revoked.len(),
        acked.ended.len()
    );
    // And it takes writes again.
    b.attest("demo-agent").await;
}
