//! The gateway as users run it: inside `writ serve` and as a standalone
//! `writ gateway`, in front of a plain HTTP upstream.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use writ_core::api::{RegisterTool, StartTask, Upstream};
use writ_core::dpop::ProofKey;

use crate::harness::{BIN, Broker, eventually};

/// A plain HTTP upstream that answers 200 to anything and counts requests.
pub(crate) struct Upstream200 {
    pub(crate) url: String,
    pub(crate) hits: Arc<AtomicUsize>,
}

pub(crate) async fn upstream() -> Upstream200 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    got.extend_from_slice(&buf[..n]);
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    Upstream200 { url, hits }
}

pub(crate) async fn register_http_tool(b: &Broker, name: &str, url: &str) {
    register_http_tool_on(b, name, url, None).await;
}

/// Registers `name`, served by the gateway named `gateway` (the embedded
/// one when `None`).
async fn register_http_tool_on(b: &Broker, name: &str, url: &str, gateway: Option<&str>) {
    b.admin()
        .register_tool(&RegisterTool {
            name: name.parse().unwrap(),
            audience: format!("https://{name}.example"),
            scopes: vec!["read".parse().unwrap(), "write".parse().unwrap()],
            attributes: Default::default(),
            upstream: Some(Upstream::Http {
                url: url.into(),
                require_secret: false,
                txn_token_only: false,
            }),
            gateway: gateway.map(str::to_owned),
        })
        .await
        .unwrap();
}

/// A read task on `tool` and a tool token for it (Bearer).
async fn tool_token(b: &Broker, tool: &str) -> (writ_core::api::TaskToken, String) {
    let inst = b.attest("demo-agent").await.access_token;
    let t = b
        .start_task(&inst, &[&format!("{tool}:read")])
        .await
        .unwrap();
    let tok = b
        .anon()
        .exchange(&t.access_token, None, Some(tool), Some("read"))
        .await
        .unwrap()
        .access_token;
    (t, tok)
}

async fn get(url: &str, token: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

pub(crate) async fn wait_for_tool(gateway: &str, tool: &str) {
    let url = format!("{gateway}/.well-known/oauth-protected-resource/{tool}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the gateway never saw tool {tool}"
    );
}

#[tokio::test]
async fn r4_revocation_and_quarantine_cut_off_the_very_next_call() {
    let b = Broker::start();
    let up = upstream().await;
    register_http_tool(&b, "crm", &up.url).await;
    wait_for_tool(&b.gateway, "crm").await;
    let (_t, tok) = tool_token(&b, "crm").await;
    let url = format!("{}/crm/customers", b.gateway);
    assert_eq!(get(&url, &tok).await, 200);
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
    b.admin()
        .quarantine(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    // Acknowledged once the gateway holds the revocation: no retry needed.
    assert_eq!(get(&url, &tok).await, 401);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        1,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn dpop_bound_tool_tokens_need_a_fresh_proof_at_the_gateway() {
    let b = Broker::start();
    let up = upstream().await;
    register_http_tool(&b, "crm", &up.url).await;
    wait_for_tool(&b.gateway, "crm").await;
    let key = Arc::new(ProofKey::generate().unwrap().0);
    let jt = b
        .admin()
        .join_token(&"demo-agent".parse().unwrap(), 60)
        .await
        .unwrap()
        .join_token;
    let inst = b
        .anon()
        .with_dpop(Arc::clone(&key))
        .attest(&writ_core::api::AttestRequest {
            agent: "demo-agent".parse().unwrap(),
            join_token: Some(jt),
            oidc_token: None,
            jwt_svid: None,
        })
        .await
        .unwrap()
        .access_token;
    let agent = b.as_token(&inst).with_dpop(Arc::clone(&key));
    let t = agent
        .start_task(&StartTask {
            intent: "read the crm".into(),
            capabilities: vec![writ_core::Capability::parse_short("crm:read").unwrap()],
            on_behalf_of: None,
            ttl: None,
            justification: None,
        })
        .await
        .unwrap();
    let tok = b
        .anon()
        .with_dpop(Arc::clone(&key))
        .exchange(&t.access_token, None, Some("crm"), Some("read"))
        .await
        .unwrap();
    assert_eq!(tok.token_type, "DPoP");
    let tok = tok.access_token;
    let url = format!("{}/crm/customers", b.gateway);
    let now = writ_core::Clock::now(&writ_core::SystemClock);
    let http = reqwest::Client::new();
    let call = |proof: Option<String>, scheme: &'static str| {
        let mut r = http
            .get(&url)
            .header("authorization", format!("{scheme} {tok}"));
        if let Some(p) = proof {
            r = r.header("dpop", p);
        }
        async move { r.send().await.unwrap().status() }
    };
    let proof = key.proof("GET", &url, Some(&tok), None, now).unwrap();
    assert_eq!(call(Some(proof.clone()), "DPoP").await, 200);
    assert_eq!(call(Some(proof), "DPoP").await, 401, "a replayed proof");
    assert_eq!(call(None, "Bearer").await, 401, "a bound token as Bearer");
    let other = ProofKey::generate().unwrap().0;
    let foreign = other.proof("GET", &url, Some(&tok), None, now).unwrap();
    assert_eq!(
        call(Some(foreign), "DPoP").await,
        401,
        "another key's proof"
    );
    let wrong_url = key
        .proof(
            "GET",
            &format!("{}/crm/other", b.gateway),
            Some(&tok),
            None,
            now,
        )
        .unwrap();
    assert_eq!(
        call(Some(wrong_url), "DPoP").await,
        401,
        "a proof for another URL"
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}

/// A standalone `writ gateway`, killed on drop.
pub(crate) struct StandaloneGateway {
    child: Child,
    pub url: String,
}

impl Drop for StandaloneGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn standalone(broker: &str, token: &str, spool: &std::path::Path) -> StandaloneGateway {
    let mut child = Command::new(BIN)
        .args([
            "gateway",
            "--broker",
            broker,
            "--listen",
            "127.0.0.1:0",
            "--staleness-ms",
            "1500",
        ])
        .arg("--spool-dir")
        .arg(spool)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WRIT_LOG", "error")
        .env("WRIT_GATEWAY_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let url = Arc::new(Mutex::new(None));
    let sink = Arc::clone(&url);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("gateway listening on ") {
                *sink.lock().unwrap() = Some(a.trim().to_owned());
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("writ gateway did not start");
    let url = url.lock().unwrap().clone().unwrap();
    StandaloneGateway { child, url }
}

#[tokio::test]
async fn g5_standalone_gateway_fails_closed_without_the_broker_and_delivers_its_spool() {
    let mut b = Broker::start();
    let up = upstream().await;
    // A gateway credential, made with the CLI; refused for an admin's secrets.
    let out = b.cli(&["gateway", "register", "edge-1", "--field", "token"]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_owned();
    // The tool it serves.
    register_http_tool_on(&b, "crm", &up.url, Some("edge-1")).await;
    let spool = tempfile::tempdir().unwrap();
    let gw = standalone(&b.addr, &token, spool.path());
    wait_for_tool(&gw.url, "crm").await;
    let (_t, tok) = tool_token(&b, "crm").await;
    let url = format!("{}/crm/customers", gw.url);
    assert_eq!(get(&url, &tok).await, 200);

    // The broker dies: within the staleness bound the gateway still serves
    // (and spools its decisions); past it, it refuses everything.
    b.kill9();
    assert_eq!(get(&url, &tok).await, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &tok).await == 503
        })
        .await,
        "a gateway with a stale revocation view must fail closed"
    );
    let hits = up.hits.load(Ordering::SeqCst);
    assert_eq!(get(&url, &tok).await, 503);
    assert_eq!(up.hits.load(Ordering::SeqCst), hits);

    // The broker comes back: the gateway catches up and serves again, and
    // the decisions it made meanwhile reach the audit chain, once each.
    b.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&url, &tok).await == 200
        })
        .await,
        "the gateway did not recover"
    );
    let admin = b.admin();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let page = admin.audit(0, 10_000).await.unwrap();
            page.records
                .iter()
                .filter(|r| r.event.contains("\"tool_call\"") && r.event.contains("gateway:edge-1"))
                .count()
                >= 3
        })
        .await,
        "spooled decisions were not delivered"
    );
    let v = admin.audit_verify().await.unwrap();
    assert!(v.valid, "{v:?}");

    // A revoked credential: the broker refuses the gateway, which then
    // fails closed.
    let out = b.cli(&["gateway", "revoke", "edge-1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&url, &tok).await == 503
        })
        .await,
        "a gateway whose credential is revoked must fail closed"
    );
    let secrets = reqwest::Client::new()
        .get(format!("{}/v1/gateway/secrets", b.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(secrets.status(), 401);
}

#[tokio::test]
async fn g4_a_tool_that_needs_a_secret_is_not_reached_without_one() {
    let b = Broker::start();
    let up = upstream().await;
    let out = b.cli(&[
        "tool",
        "register",
        "vault-backed",
        "--audience",
        "https://vault-backed.example",
        "--scope",
        "read",
        "--upstream",
        &up.url,
        "--require-secret",
    ]);
    assert!(out.status.success(), "{out:?}");
    wait_for_tool(&b.gateway, "vault-backed").await;
    let (_t, tok) = tool_token(&b, "vault-backed").await;
    let url = format!("{}/vault-backed/x", b.gateway);
    assert_eq!(get(&url, &tok).await, 503, "fail closed without the secret");
    assert_eq!(up.hits.load(Ordering::SeqCst), 0, "nothing forwarded");

    // Once the secret is set (and the gateway has it), calls go through.
    let mut child = Command::new(BIN)
        .args([
            "tool",
            "secret",
            "set",
            "vault-backed",
            "--header",
            "authorization",
        ])
        .env("WRIT_ADDR", &b.addr)
        .env("WRIT_TOKEN", crate::harness::ADMIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"Bearer upstream-credential\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &tok).await == 200
        })
        .await
    );
    // A header the gateway owns cannot carry a secret.
    let out = b.cli_env(
        &[
            "tool",
            "secret",
            "set",
            "vault-backed",
            "--header",
            "host",
            "--value-env",
            "V",
        ],
        &[("V", "x")],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}
