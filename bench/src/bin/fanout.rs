//! Revocation fan-out: `GATEWAYS` simulated gateways, each a registered
//! gateway credential long-polling the broker's real revocation feed (as
//! `writ gateway` does), while tasks are completed one after another; for
//! every (gateway, revocation) pair, the time from sending `complete` to
//! the revocation arriving at that gateway. Also the broker's CPU time
//! over the revocation phase (its process id as `BROKER_PID`).
//!
//! `fanout BROKER ADMIN_TOKEN GATEWAYS REVOCATIONS BROKER_PID` prints one
//! markdown row.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use writ_client::Client;
use writ_core::Secret;
use writ_core::api::{AttestRequest, StartTask};

/// The `jti` of a token writ issued (its claims read, not verified: the
/// bench only needs to recognise it in the feed).
fn jti_of(token: &str) -> anyhow::Result<String> {
    let (_, claims) = writ_core::token::insecure_peek(token)?;
    Ok(claims
        .get("jti")
        .and_then(serde_json::Value::as_str)
        .context("no jti")?
        .to_owned())
}

/// CPU seconds a process has used (user + system).
fn cpu_secs(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).cloned().unwrap_or_default();
    let (broker, admin, pid) = (arg(1), arg(2), arg(5));
    let gateways: usize = arg(3).parse().context("GATEWAYS")?;
    let n: usize = arg(4).parse().context("REVOCATIONS")?;
    let admin_c = Client::new(&broker, Some(Secret::new(admin)))?;

    // The tasks whose completion revokes their tokens, started up front.
    let agent = "demo-agent".parse()?;
    let jt = admin_c.join_token(&agent, 60).await?.join_token;
    let inst = Client::new(&broker, None)?
        .attest(&AttestRequest {
            agent: "demo-agent".parse()?,
            join_token: Some(jt),
            oidc_token: None,
            jwt_svid: None,
        })
        .await?
        .access_token;
    let agent_c = Client::new(&broker, Some(Secret::new(inst)))?;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let t = agent_c
            .start_task(&StartTask {
                intent: "fan-out bench".into(),
                capabilities: vec![writ_core::Capability::parse_short("bench:read")?],
                on_behalf_of: None,
                ttl: None,
                justification: None,
            })
            .await?;
        tasks.push((jti_of(&t.access_token)?, t));
    }

    // The gateways, each following from the feed's head.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let head = admin_c
        .follow_revocations(0, 0, "")
        .await?
        .head
        .unwrap_or(0);
    let run = std::process::id();
    for g in 0..gateways {
        let cred = admin_c.register_gateway(&format!("fan-{run}-{g}")).await?;
        let c = Client::new(&broker, Some(Secret::new(cred.token)))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut after = head;
            loop {
                match c.follow_revocations(after, 30_000, "bench").await {
                    Ok(page) => {
                        let at = Instant::now();
                        for r in page.revocations {
                            if tx.send((g, r.jti, at)).is_err() {
                                return;
                            }
                        }
                        after = page.next;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
    }
    drop(tx);
    // Every follower has made its first long-poll before the first revocation.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu0 = cpu_secs(&pid)?;
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(n);
    for (jti, t) in &tasks {
        sent.insert(jti.clone(), Instant::now());
        Client::new(&broker, Some(Secret::new(t.access_token.clone())))?
            .complete(&t.task_id)
            .await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat: Vec<Duration> = Vec::with_capacity(n * gateways);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lat.len() < n * gateways {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((_, jti, at))) => {
                if let Some(t0) = sent.get(&jti) {
                    lat.push(at.saturating_duration_since(*t0));
                }
            }
            _ => break,
        }
    }
    let cpu = cpu_secs(&pid)? - cpu0;
    if lat.is_empty() {
        bail!("no revocation reached any gateway");
    }
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).copied().unwrap_or_default().as_secs_f64() * 1000.0
    };
    println!(
        "| {gateways} | {n} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.2} ms |",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        n * gateways - lat.len(),
        cpu * 1000.0 / n as f64,
    );
    Ok(())
}
