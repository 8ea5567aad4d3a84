//! Revocation propagation: for each of N tasks, the time from sending
//! `complete` to the first request the gateway refuses, while a client
//! calls through the gateway as fast as it can.
//! `propagation BROKER GATEWAY ADMIN_TOKEN TOOL N`
use std::time::{Duration, Instant};

use writ_client::Client;
use writ_core::Secret;
use writ_core::api::{AttestRequest, StartTask};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).cloned().unwrap_or_default();
    let (broker, gateway, admin, tool) = (arg(1), arg(2), arg(3), arg(4));
    let n: usize = arg(5).parse().unwrap_or(200);
    let admin_c = Client::new(&broker, Some(Secret::new(admin)))?;
    let agent = "demo-agent".parse()?;
    let http = reqwest::Client::new();
    let url = format!("{gateway}/{tool}/bench");
    let mut samples = Vec::with_capacity(n);
    let mut ack = Vec::with_capacity(n);
    for _ in 0..n {
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
        let task = agent_c
            .start_task(&StartTask {
                intent: "propagation bench".into(),
                capabilities: vec![writ_core::Capability::parse_short(&format!("{tool}:read"))?],
                on_behalf_of: None,
                ttl: None,
                justification: None,
            })
            .await?;
        let tok = Client::new(&broker, None)?
            .exchange(&task.access_token, None, Some(&tool), Some("read"))
            .await?
            .access_token;
        anyhow::ensure!(
            http.get(&url).bearer_auth(&tok).send().await?.status() == 200,
            "the tool token does not work through the gateway"
        );
        let (h, u, t) = (http.clone(), url.clone(), tok.clone());
        let t0 = Instant::now();
        let hammer = tokio::spawn(async move {
            loop {
                if let Ok(r) = h.get(&u).bearer_auth(&t).send().await
                    && r.status() == 401
                {
                    return t0.elapsed();
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    return Duration::MAX;
                }
            }
        });
        let task_c = Client::new(&broker, Some(Secret::new(task.access_token.clone())))?;
        task_c.complete(&task.task_id).await?;
        ack.push(t0.elapsed());
        samples.push(hammer.await?);
    }
    samples.sort();
    ack.sort();
    let pct = |v: &[Duration], p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| tasks | first refusal p50 | p99 | max | complete acknowledged p50 | p99 |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
        ms(pct(&samples, 0.5)),
        ms(pct(&samples, 0.99)),
        ms(pct(&samples, 1.0)),
        ms(pct(&ack, 0.5)),
        ms(pct(&ack, 0.99)),
    );
    Ok(())
}
