//! The test kit: a real `writ serve` on an ephemeral port with a temporary
//! data directory, and the CLI pointed at it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use writ_client::Client;
use writ_core::Secret;
use writ_core::api::{AttestRequest, Attested, RegisterAgent, StartTask, TaskToken};

pub const BIN: &str = env!("CARGO_BIN_EXE_writ");
pub const ADMIN: &str = "e2e-admin-token";

/// Options for starting a broker.
#[derive(Clone, Debug)]
pub struct Opts {
    pub dev: bool,
    pub policy_dir: Option<PathBuf>,
    pub extra: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            dev: true,
            policy_dir: None,
            extra: vec!["--sweep-interval-ms".into(), "50".into()],
        }
    }
}

/// A running broker process. Killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub addr: String,
    /// The embedded gateway's base URL.
    pub gateway: String,
    pub opts: Opts,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    pub fn start() -> Self {
        Self::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr, gateway, stdout) = spawn(dir.path(), &opts, "127.0.0.1:0", "127.0.0.1:0");
        Self {
            child: Some(child),
            dir,
            addr,
            gateway,
            opts,
            stdout,
        }
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Stops the process (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same data directory again, on the same address.
    pub fn restart(&mut self) {
        self.stop();
        let listen = self.addr.trim_start_matches("http://").to_owned();
        let gw_listen = self.gateway.trim_start_matches("http://").to_owned();
        let (child, addr, gateway, stdout) =
            spawn(self.dir.path(), &self.opts, &listen, &gw_listen);
        self.child = Some(child);
        self.addr = addr;
        self.gateway = gateway;
        self.stdout = stdout;
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.addr, Some(Secret::new(ADMIN))).unwrap()
    }

    pub fn anon(&self) -> Client {
        Client::new(&self.addr, None).unwrap()
    }

    pub fn as_token(&self, token: &str) -> Client {
        self.anon().with_token(token)
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    /// Runs the CLI against this broker with the admin credential.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WRIT_ADDR", &self.addr)
            .env("WRIT_TOKEN", ADMIN);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    // --- story helpers ---

    /// Registers a join-token agent with attributes.
    pub async fn agent(&self, name: &str, attrs: &[(&str, &str)]) {
        let req = RegisterAgent {
            name: name.parse().unwrap(),
            attestation: writ_core::api::Attestation::JoinToken,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workload: None,
        };
        self.admin().register_agent(&req).await.unwrap();
    }

    /// A fresh join token, used to attest: the instance's token response.
    pub async fn attest(&self, agent: &str) -> Attested {
        let name = agent.parse().unwrap();
        let jt = self
            .admin()
            .join_token(&name, 600)
            .await
            .unwrap()
            .join_token;
        self.anon()
            .attest(&AttestRequest {
                agent: name,
                join_token: Some(jt),
                oidc_token: None,
                jwt_svid: None,
            })
            .await
            .unwrap()
    }

    pub async fn start_task(
        &self,
        instance_token: &str,
        caps: &[&str],
    ) -> Result<TaskToken, writ_client::ClientError> {
        self.as_token(instance_token)
            .start_task(&StartTask {
                intent: "e2e test task".into(),
                capabilities: caps
                    .iter()
                    .map(|c| writ_core::Capability::parse_short(c).unwrap())
                    .collect(),
                on_behalf_of: None,
                ttl: None,
                justification: None,
            })
            .await
    }

    pub async fn active(&self, token: &str) -> bool {
        self.admin().introspect(token).await.unwrap().active
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(
    dir: &Path,
    opts: &Opts,
    listen: &str,
    gw_listen: &str,
) -> (Child, String, String, Arc<Mutex<Vec<String>>>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(listen)
        .arg("--gateway-listen")
        .arg(if gw_listen.is_empty() {
            "127.0.0.1:0"
        } else {
            gw_listen
        })
        .args(&opts.extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WRIT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if opts.dev {
        cmd.arg("--dev").arg("--dev-admin-token").arg(ADMIN);
    }
    if let Some(p) = &opts.policy_dir {
        cmd.arg("--policy-dir").arg(p);
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        let mut gateway = String::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.strip_prefix("gateway listening on ") {
                gateway = a.trim().to_owned();
            }
            if let Some(a) = line.strip_prefix("writ listening on ") {
                let _ = tx.send((a.trim().to_owned(), gateway.clone()));
            }
            sink.lock().unwrap().push(line);
        }
    });
    let (addr, gateway) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("writ serve did not report its address");
    (child, addr, gateway, lines)
}

/// Polls `f` until it is true or `timeout` passes; returns the last value.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout={} stderr={}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// A fresh database on the PostgreSQL server named by `WRIT_TEST_POSTGRES`
/// (a superuser URL; `scripts/test.sh` starts one and sets it), as a URL.
/// `None` skips the test when the variable is unset, except under CI.
pub fn postgres_database() -> Option<String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Ok(admin) = std::env::var("WRIT_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "WRIT_TEST_POSTGRES is not set: CI must run the PostgreSQL tests"
        );
        eprintln!("skipped: WRIT_TEST_POSTGRES is not set (scripts/postgres.sh starts a server)");
        return None;
    };
    let db = format!(
        "writ_e2e{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let url = admin.clone();
    let name = db.clone();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    })
    .join()
    .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{db}"))
}
