//! Memory for live tokens in the broker and a standalone gateway: makes
//! tool tokens by token exchange (each one a grant the broker records) and
//! uses each once through the gateway (which verifies it and remembers it),
//! and at each count in COUNTS reads both processes' resident memory.
//! `livetokens BROKER GATEWAY TOOL TASK_TOKEN BROKER_PID GATEWAY_PID DATA_DIR COUNTS`
//! (COUNTS comma-separated, ascending).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const WORKERS: usize = 48;

fn mib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn dir_mib(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_mib(&e.path()) * 1024 * 1024,
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total / (1024 * 1024)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).cloned().unwrap_or_default();
    let (broker, gateway, tool, task_token) = (arg(1), arg(2), arg(3), arg(4));
    let (broker_pid, gateway_pid, data_dir) = (arg(5), arg(6), arg(7));
    let counts: Vec<u64> = arg(8)
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let target = counts.last().copied().unwrap_or(0);
    let http = reqwest::Client::new();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // The first failure, said, so that a stopped run tells why.
    let first_failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let audience = tool.clone();
    let exchange_form = move |subject: &str| {
        format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &subject_token={subject}&audience={audience}&scope=read"
        )
    };
    let form = Arc::new(std::sync::RwLock::new(Arc::new(exchange_form(&task_token))));
    // A task token lives 10 minutes; on a slow machine a million
    // exchanges take longer. With the task's id and the instance token
    // (arguments 9 and 10), a heartbeat every 4 minutes renews it.
    let (task_id, instance_token) = (arg(9), arg(10));
    if !task_id.is_empty() && !instance_token.is_empty() {
        let (http, form) = (http.clone(), Arc::clone(&form));
        let url = format!("{broker}/v1/tasks/{task_id}/heartbeat");
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(240)).await;
                let renewed = match http.post(&url).bearer_auth(&instance_token).send().await {
                    Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                    _ => None,
                };
                match renewed
                    .as_ref()
                    .and_then(|b| b.get("access_token"))
                    .and_then(|t| t.as_str())
                {
                    Some(token) => {
                        *form.write().unwrap_or_else(|e| e.into_inner()) =
                            Arc::new(exchange_form(token));
                    }
                    None => eprintln!("livetokens: the heartbeat renewed no task token"),
                }
            }
        });
    }
    let token_url = Arc::new(format!("{broker}/oauth2/token"));
    let call_url = Arc::new(format!("{gateway}/{tool}/memory"));
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (http, done, failed) = (http.clone(), Arc::clone(&done), Arc::clone(&failed));
        let first_failure = Arc::clone(&first_failure);
        let (form, token_url, call_url) = (
            Arc::clone(&form),
            Arc::clone(&token_url),
            Arc::clone(&call_url),
        );
        workers.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < target {
                let body = form
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_str()
                    .to_owned();
                let issued = http
                    .post(token_url.as_str())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await;
                let note = |what: String| {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let mut first = first_failure.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(what);
                };
                let body: Option<serde_json::Value> = match issued {
                    Ok(r) if r.status().is_success() => r.json().await.ok(),
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        note(format!("token exchange answered {status}: {text}"));
                        continue;
                    }
                    Err(e) => {
                        note(format!("token exchange failed: {e}"));
                        continue;
                    }
                };
                let Some(tok) = body
                    .as_ref()
                    .and_then(|b| b.get("access_token"))
                    .and_then(|t| t.as_str())
                else {
                    note("token exchange answered no access_token".to_owned());
                    continue;
                };
                match http.get(call_url.as_str()).bearer_auth(tok).send().await {
                    Ok(r) if r.status().is_success() => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        note(format!("gateway call answered {status}: {text}"));
                    }
                    Err(e) => note(format!("gateway call failed: {e}")),
                }
            }
        }));
    }
    let start = Instant::now();
    println!(
        "| live tokens | made in | broker RSS | broker peak | broker data | gateway RSS | gateway peak | failures |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in counts {
        while done.load(Ordering::Relaxed) < n {
            if failed.load(Ordering::Relaxed) > 1000 {
                let first = first_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_default();
                anyhow::bail!(
                    "more than 1000 failed exchanges or gateway calls; the first: {first}"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        println!(
            "| {} | {} s | {} MiB | {} MiB | {} MiB | {} MiB | {} MiB | {} |",
            done.load(Ordering::Relaxed),
            start.elapsed().as_secs(),
            mib(&broker_pid, "VmRSS"),
            mib(&broker_pid, "VmHWM"),
            dir_mib(std::path::Path::new(&data_dir)),
            mib(&gateway_pid, "VmRSS"),
            mib(&gateway_pid, "VmHWM"),
            failed.load(Ordering::Relaxed),
        );
    }
    for w in workers {
        w.abort();
    }
    Ok(())
}
