//! Several `writ serve` processes on one PostgreSQL database behave as one
//! broker: whichever replica takes a request, every replica answers the
//! same afterwards. Each test gets a fresh database on the server named by
//! `WRIT_TEST_POSTGRES`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use writ_client::Client;
use writ_core::api::{AttestRequest, StartTask, TaskStatus};

use crate::harness::{ADMIN, Broker, Opts, eventually, postgres_database};

/// Two replicas on a fresh database, sharing the master key and issuer.
pub(crate) fn pair(extra: &[&str]) -> Option<(Broker, Broker, tempfile::TempDir)> {
    let url = postgres_database()?;
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("master.key");
    let mut args: Vec<String> = vec![
        "--sweep-interval-ms".into(),
        "50".into(),
        "--store".into(),
        url,
        "--master-key-file".into(),
        key.display().to_string(),
        "--issuer".into(),
        "http://writ.replicas.test".into(),
        // Load from one address: the per-client attestation limit would
        // thin it out, and it is not what these tests are about.
        "--limit-attest-per-minute".into(),
        "0".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let opts = Opts {
        extra: args,
        ..Opts::default()
    };
    // The first start creates the master key, the signing key and the
    // schema; the second finds them.
    let a = Broker::start_with(opts.clone());
    let b = Broker::start_with(opts);
    Some((a, b, shared))
}

fn jti(token: &str) -> String {
    writ_core::token::insecure_peek(token).unwrap().1["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[derive(Default)]
struct Acked {
    issued: Vec<(String, writ_core::TaskId)>,
    revoked: Vec<String>,
    ended: Vec<writ_core::TaskId>,
    attempted: Vec<String>,
}

fn admin(addr: &str) -> Client {
    Client::new(addr, Some(writ_core::Secret::new(ADMIN))).unwrap()
}

/// One worker: every step goes to the other replica than the one before.
/// Stops at `stop`, or at the first refusal once `tolerate_down` is set
/// (a replica was killed).
async fn alternate(
    addrs: [String; 2],
    acked: Arc<Mutex<Acked>>,
    worker: usize,
    stop: Instant,
) -> usize {
    let mut steps = 0usize;
    let mut i = worker;
    let mut next = || {
        i += 1;
        addrs[i % 2].clone()
    };
    while Instant::now() < stop {
        let Ok(jt) = admin(&next())
            .join_token(&"demo-agent".parse().unwrap(), 60)
            .await
        else {
            continue;
        };
        let Ok(att) = Client::new(&next(), None)
            .unwrap()
            .attest(&AttestRequest {
                agent: "demo-agent".parse().unwrap(),
                join_token: Some(jt.join_token),
                oidc_token: None,
                jwt_svid: None,
            })
            .await
        else {
            continue;
        };
        let req = StartTask {
            intent: "replica load".into(),
            capabilities: vec![writ_core::Capability::parse_short("tickets:read").unwrap()],
            on_behalf_of: None,
            ttl: None,
            justification: None,
        };
        let agent = |addr: String| {
            Client::new(&addr, None)
                .unwrap()
                .with_token(&att.access_token)
        };
        let Ok(t) = agent(next()).start_task(&req).await else {
            continue;
        };
        acked
            .lock()
            .unwrap()
            .issued
            .push((t.access_token.clone(), t.task_id.clone()));
        let Ok(hb) = agent(next()).heartbeat(&t.task_id).await else {
            continue;
        };
        acked
            .lock()
            .unwrap()
            .issued
            .push((hb.access_token.clone(), t.task_id.clone()));
        // A tool token for the task, exchanged at the other replica.
        let Ok(tool) = Client::new(&next(), None)
            .unwrap()
            .exchange(&hb.access_token, None, Some("tickets"), None)
            .await
        else {
            continue;
        };
        acked
            .lock()
            .unwrap()
            .issued
            .push((tool.access_token, t.task_id.clone()));
        match steps % 3 {
            0 => {
                acked
                    .lock()
                    .unwrap()
                    .attempted
                    .push(hb.access_token.clone());
                if admin(&next()).revoke(&hb.access_token).await.is_ok() {
                    acked.lock().unwrap().revoked.push(hb.access_token);
                }
            }
            1 => {
                acked
                    .lock()
                    .unwrap()
                    .attempted
                    .push(hb.access_token.clone());
                if agent(next()).complete(&t.task_id).await.is_ok() {
                    acked.lock().unwrap().ended.push(t.task_id);
                }
            }
            _ => {}
        }
        steps += 1;
    }
    steps
}

/// Every revocation on the replica's feed, by token id.
async fn feed(addr: &str) -> BTreeSet<String> {
    let c = admin(addr);
    let mut after = 0;
    let mut out = BTreeSet::new();
    loop {
        let page = c.revocations(after, 0).await.unwrap();
        if page.revocations.is_empty() {
            return out;
        }
        out.extend(page.revocations.into_iter().map(|r| r.jti));
        after = page.next;
    }
}

/// What every replica must agree on after the load: each acknowledged
/// revocation and task end holds on every replica, the feeds carry the
/// same revocations, and the audit chain is one valid chain.
async fn check_agreement(addrs: &[&str], acked: &Acked) {
    let ended: BTreeSet<_> = acked.ended.iter().collect();
    for addr in addrs {
        let c = admin(addr);
        for tok in &acked.revoked {
            assert!(
                !c.introspect(tok).await.unwrap().active,
                "{addr}: an acknowledged revocation is not seen"
            );
        }
        for id in &acked.ended {
            assert_ne!(
                c.task(id).await.unwrap().status,
                TaskStatus::Active,
                "{addr}: an acknowledged task end is not seen"
            );
        }
        for (tok, task) in &acked.issued {
            if ended.contains(task) {
                assert!(
                    !c.introspect(tok).await.unwrap().active,
                    "{addr}: a token outlived its task"
                );
            }
        }
    }
    let feeds: Vec<BTreeSet<String>> = futures_all(addrs.iter().map(|a| feed(a)).collect()).await;
    for f in &feeds {
        assert_eq!(f, &feeds[0], "the replicas' revocation feeds differ");
        for tok in &acked.revoked {
            assert!(f.contains(&jti(tok)), "a revocation is missing from a feed");
        }
    }
    let mut verdicts = Vec::new();
    for addr in addrs {
        let v = admin(addr).audit_verify().await.unwrap();
        assert!(v.valid, "{addr}: audit chain broken: {:?}", v.error);
        verdicts.push((v.records, v.head));
    }
    assert!(
        verdicts.windows(2).all(|w| w[0] == w[1]),
        "the replicas see different chains: {verdicts:?}"
    );
}

async fn futures_all<T>(futs: Vec<impl std::future::Future<Output = T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(futs.len());
    for f in futs {
        out.push(f.await);
    }
    out
}

/// Issue 6: two replicas under concurrent load from clients that alternate
/// between them (join token on one, attest on the other, task, heartbeat,
/// token exchange and revocation each on the next) agree on everything
/// afterwards (a tool token dies with its task on both), and
/// `writ audit verify` finds one valid chain through either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_under_alternating_load_act_as_one_broker() {
    let Some((a, b, _shared)) = pair(&[]) else {
        return;
    };
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(alternate(
                [a.addr.clone(), b.addr.clone()],
                Arc::clone(&acked),
                w,
                stop,
            ))
        })
        .collect();
    let mut steps = 0;
    for w in workers {
        steps += w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    eprintln!(
        "replicas: {steps} rounds, {} tokens, {} revocations, {} task ends",
        acked.issued.len(),
        acked.revoked.len(),
        acked.ended.len()
    );
    assert!(
        acked.revoked.len() > 5 && acked.ended.len() > 5,
        "the load did too little"
    );
    check_agreement(&[&a.addr, &b.addr], &acked).await;

    for replica in [&a, &b] {
        let out = replica.cli(&["audit", "verify"]);
        assert!(
            out.status.success(),
            "writ audit verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Keys rotated and policy pushed through one replica are used by the
/// other at once; lapsed leases are ended once, whichever replica sweeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_keys_policy_and_lease_sweeps() {
    let Some((a, b, _shared)) = pair(&["--lease-ttl", "1"]) else {
        return;
    };

    // Rotation on A: B publishes the new key and signs with it.
    let rotated = a.admin().rotate_keys().await.unwrap();
    let kid = rotated.kid.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let b = b.admin();
            let kid = kid.clone();
            async move {
                let jwks = b.jwks().await.unwrap();
                jwks["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kid"] == kid.as_str())
            }
        })
        .await,
        "B never published the key rotated on A"
    );
    let inst = b.attest("demo-agent").await;
    let header = jsonwebtoken::decode_header(&inst.access_token).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        Some(kid.as_str()),
        "B signs with a retired key"
    );
    // A token from B verifies at A.
    assert!(a.active(&inst.access_token).await);

    // A policy pushed through A is live on B.
    let before = b.admin().policies().await.unwrap().version;
    let same_rules = format!(
        "{}\n// pushed through replica A\n",
        include_str!("../../../../examples/policies/tasks.cedar")
    );
    let pushed = a
        .admin()
        .push_policies(&writ_core::api::PushPolicies {
            files: [("tasks.cedar".to_owned(), same_rules)].into(),
        })
        .await
        .unwrap();
    assert_ne!(pushed.version, before);
    assert!(
        eventually(Duration::from_secs(5), || {
            let b = b.admin();
            let v = pushed.version.clone();
            async move { b.policies().await.unwrap().version == v }
        })
        .await,
        "B never took the policy pushed through A"
    );

    // Tasks left without heartbeats lapse; both replicas sweep, each task
    // ends once.
    let mut tasks = Vec::new();
    for (i, replica) in [&a, &b].iter().cycle().take(8).enumerate() {
        let t = replica
            .start_task(&inst.access_token, &["tickets:read"])
            .await
            .unwrap_or_else(|e| panic!("task {i}: {e}"));
        tasks.push(t.task_id);
    }
    let admin_a = a.admin();
    assert!(
        eventually(Duration::from_secs(15), || {
            let (c, tasks) = (admin_a.clone(), tasks.clone());
            async move {
                for t in &tasks {
                    if c.task(t).await.unwrap().status == TaskStatus::Active {
                        return false;
                    }
                }
                true
            }
        })
        .await,
        "lapsed tasks were not ended"
    );
    let mut ends: HashMap<String, usize> = HashMap::new();
    let mut after = 0;
    loop {
        let page = admin_a.audit(after, 1000).await.unwrap();
        if page.records.is_empty() {
            break;
        }
        for r in &page.records {
            let e: serde_json::Value = serde_json::from_str(&r.event).unwrap();
            if let (true, Some(t)) = (e["kind"] == "task_end", e["task"].as_str()) {
                *ends.entry(t.to_owned()).or_default() += 1;
            }
        }
        after = page.next;
    }
    for t in &tasks {
        assert_eq!(
            ends.get(t.as_str()).copied(),
            Some(1),
            "task {t} was ended {:?} times",
            ends.get(t.as_str())
        );
    }
}

/// `kill -9` one replica under load: the other goes on serving, nothing
/// acknowledged by either is lost, the chain has no gap, and the killed
/// replica comes back agreeing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_survive_kill9_of_one_under_load() {
    let Some((mut a, b, _shared)) = pair(&[]) else {
        return;
    };
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(alternate(
                [a.addr.clone(), b.addr.clone()],
                Arc::clone(&acked),
                w,
                stop,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill9();
    for w in workers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(!acked.revoked.is_empty(), "the load did too little");
    // B alone first, then A again after its restart.
    check_agreement(&[&b.addr], &acked).await;
    a.restart();
    check_agreement(&[&a.addr, &b.addr], &acked).await;
}

/// A database role issued through a replica that is then killed is dropped
/// by the other when the task ends there: the leases live in the shared
/// store, not in a process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_drop_the_roles_of_a_killed_replica() {
    let Some(warehouse) = crate::dbcreds::warehouse() else {
        return;
    };
    let Some((mut a, b, _shared)) = pair(&[]) else {
        return;
    };
    crate::dbcreds::register_warehouse(&a, &warehouse).await;
    let inst = a.attest("demo-agent").await;
    let task = a
        .start_task(&inst.access_token, &["warehouse:read"])
        .await
        .unwrap();
    let cred = crate::dbcreds::credential(&a, &task.access_token, &task.task_id).await;
    assert_eq!(crate::dbcreds::sum_sales(&cred.url).unwrap(), 60);
    a.kill9();
    b.as_token(&inst.access_token)
        .complete(&task.task_id)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (db, role) = (warehouse.clone(), cred.username.clone());
            async move { !crate::dbcreds::role_exists(&db, &role) }
        })
        .await,
        "the role outlived its task when its replica died"
    );
    assert!(crate::dbcreds::sum_sales(&cred.url).is_err());
}

/// Refusals are counted in the shared store: ten on replica A are the
/// count on replica B (its gateway bundle, its own decisions and its
/// embedded gateway's), a refusal on B is seen on A, and a release on B
/// clears the count everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_see_one_denial_count() {
    use crate::one_answer::{call, count_of, counts, recorder, register_tool, tool_token};

    // The example policies with a forbid on the shared count (the pack
    // itself now leaves that to its detection rules, which this test
    // does not load: it is about the count every replica sees).
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(
        policies.path().join("tasks.cedar"),
        format!(
            "{}\n@id(\"stop-after-many-denials\")\nforbid (principal, action, resource)\n\
             when {{ context.behaviour.denials_5m >= 10 }};\n",
            include_str!("../../../../examples/policies/tasks.cedar")
        ),
    )
    .unwrap();
    let dir = policies.path().display().to_string();
    let Some((a, b, _shared)) = pair(&["--policy-dir", &dir]) else {
        return;
    };
    let gw = b.admin().register_gateway("observer").await.unwrap().token;
    let up = recorder().await;
    register_tool(
        &b,
        "crm",
        &["read"],
        writ_core::api::Upstream::Http {
            url: up.url.clone(),
            require_secret: false,
            txn_token_only: false,
        },
    )
    .await;
    // A tool token from B, for B's own gateway.
    let (_task, tok) = tool_token(&b, "crm", &["read"]).await;
    assert_eq!(call(&b, "GET", "/crm/customers", &tok).await.0, 200);

    let inst = a.attest("demo-agent").await.access_token;
    for _ in 0..10 {
        let e = a.start_task(&inst, &["tickets:delete"]).await.unwrap_err();
        assert_eq!(e.status(), Some(403));
    }
    assert_eq!(count_of(&counts(&b.addr, &gw).await, "demo-agent"), 10);
    assert_eq!(count_of(&counts(&a.addr, &gw).await, "demo-agent"), 10);

    // B decides with A's refusals: even a read is stopped...
    let writ_client::ClientError::Api(p) =
        b.start_task(&inst, &["tickets:read"]).await.unwrap_err()
    else {
        panic!("not a policy denial")
    };
    assert_eq!(p.determining_policies, ["stop-after-many-denials"]);
    let d: serde_json::Value = b
        .http()
        .post(b.url("/access/v1/evaluation"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({
            "subject": {"type": "agent", "id": "demo-agent"},
            "action": {"name": "StartTask"},
            "resource": {"type": "tool", "id": "tickets", "properties": {"scopes": ["read"]}}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["decision"], false, "{d}");
    assert_eq!(
        d["context"]["determining_policies"],
        serde_json::json!(["stop-after-many-denials"])
    );
    // ...and so is B's gateway, once its bundle has the count.
    assert!(
        eventually(Duration::from_secs(5), || {
            let (b, tok) = (&b, tok.clone());
            async move { call(b, "GET", "/crm/customers", &tok).await.0 == 403 }
        })
        .await,
        "B's gateway never saw the refusals made on A"
    );
    // B's refusals are A's count too (the task start; the gateway's
    // refusals once delivered).
    assert!(
        eventually(Duration::from_secs(5), || async {
            count_of(&counts(&a.addr, &gw).await, "demo-agent") >= 12
        })
        .await,
        "A never saw the refusals made on B"
    );
    let forwarded = up.requests().len();
    assert_eq!(call(&b, "GET", "/crm/customers", &tok).await.0, 403);
    assert_eq!(
        up.requests().len(),
        forwarded,
        "a stopped agent reaches nothing"
    );

    // Released through B: a clean record on A.
    crate::one_answer::delivered(&b.gateway).await;
    assert!(
        a.cli(&["agent", "quarantine", "demo-agent"])
            .status
            .success()
    );
    let out = b.cli(&["agent", "release", "demo-agent"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(count_of(&counts(&a.addr, &gw).await, "demo-agent"), 0);
    let inst = a.attest("demo-agent").await.access_token;
    if let Err(e) = a.start_task(&inst, &["tickets:read"]).await {
        panic!(
            "refused after release: {e}; counts {:?}",
            counts(&a.addr, &gw).await
        );
    }
}
