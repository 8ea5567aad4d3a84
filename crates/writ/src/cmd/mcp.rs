//! `writ mcp bridge TOOL`: a local stdio MCP server that puts a stock MCP
//! client behind writ. It attests as a registered agent with a DPoP key
//! held in memory (or a 0600 key file), holds a task kept alive by
//! heartbeats, exchanges the task token for a tool token, and forwards
//! every MCP message to the gateway over streamable HTTP, so the client
//! keeps working and never holds the tool's key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use writ_client::{Client, ClientError};
use writ_core::api::{AttestRequest, StartTask, TaskToken};
use writ_core::dpop::ProofKey;
use writ_core::{AgentName, Capability, Clock as _, Scope, Secret, SystemClock, TaskId, ToolName};

use super::Global;
use super::mcp_forward::{Forwarder, Tokens};
use crate::output::{EXIT_ERROR, EXIT_OK};

#[derive(Subcommand, Debug)]
pub enum McpCmd {
    /// Serve MCP on stdio for a stock MCP client and forward every message
    /// to TOOL through writ's gateway, as a registered agent holding a task.
    Bridge(BridgeArgs),
}

#[derive(Args, Debug)]
pub struct BridgeArgs {
    /// The MCP tool, as registered with writ.
    tool: ToolName,
    /// The registered agent to attest as.
    #[arg(long, env = "WRIT_AGENT")]
    agent: AgentName,
    /// The gateway that serves the tool.
    #[arg(long, env = "WRIT_GATEWAY", default_value = "http://127.0.0.1:8751")]
    gateway: String,
    /// A one-time join token (good for one start of the bridge).
    #[arg(long, env = "WRIT_JOIN_TOKEN", hide_env_values = true,
          conflicts_with_all = ["join_token_file", "oidc_token_file", "jwt_svid_file"])]
    join_token: Option<String>,
    /// Read a one-time join token from a file.
    #[arg(long, conflicts_with_all = ["oidc_token_file", "jwt_svid_file"])]
    join_token_file: Option<PathBuf>,
    /// Read an identity token from the agent's OIDC issuer from a file
    /// (a projected service-account token, a CI OIDC token), read afresh
    /// at each start.
    #[arg(long, conflicts_with = "jwt_svid_file")]
    oidc_token_file: Option<PathBuf>,
    /// Read a SPIFFE JWT-SVID (audience: writ's issuer) from a file, e.g.
    /// one kept fresh from `writ node`'s Workload API.
    #[arg(long)]
    jwt_svid_file: Option<PathBuf>,
    /// The MCP tools (scopes) the task asks for, comma-separated or
    /// repeated; default: every scope the gateway lists for the tool.
    #[arg(long, value_delimiter = ',')]
    scope: Vec<Scope>,
    /// What the task is for, in words (policy sees it).
    #[arg(long, default_value = "stock MCP client through writ mcp bridge")]
    intent: String,
    /// The human the task acts for, e.g. user:alice.
    #[arg(long)]
    on_behalf_of: Option<String>,
    /// The task's hard lifetime in seconds (the bridge stops with it).
    #[arg(long)]
    ttl: Option<u64>,
}

pub async fn run(g: &Global, cmd: McpCmd) -> anyhow::Result<u8> {
    match cmd {
        McpCmd::Bridge(a) => bridge(g, a).await,
    }
}

/// The key the bridge proves possession with: the user's file (which
/// must be private to its owner), else a fresh one that lives in memory.
fn proof_key(path: Option<&Path>) -> anyhow::Result<ProofKey> {
    match path {
        Some(p) => {
            check_private(p)?;
            super::dpop::load(p)
        }
        None => Ok(ProofKey::generate().context("cannot create a DPoP key")?.0),
    }
}

/// Refuses a key file that its group or others can read or write.
fn check_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading DPoP key {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "DPoP key {} is open to other users (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

fn read_credential(path: &Path, what: &str) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} from {}", path.display()))?;
    let s = s.trim().to_owned();
    if s.is_empty() {
        anyhow::bail!("{} holds no {what}", path.display());
    }
    Ok(s)
}

fn attest_request(a: &BridgeArgs) -> anyhow::Result<AttestRequest> {
    let mut req = AttestRequest {
        agent: a.agent.clone(),
        join_token: a.join_token.clone(),
        oidc_token: None,
        jwt_svid: None,
    };
    if let Some(p) = &a.join_token_file {
        req.join_token = Some(read_credential(p, "join token")?);
    }
    if let Some(p) = &a.oidc_token_file {
        req.oidc_token = Some(read_credential(p, "OIDC token")?);
    }
    if let Some(p) = &a.jwt_svid_file {
        req.jwt_svid = Some(read_credential(p, "JWT-SVID")?);
    }
    if req.join_token.is_none() && req.oidc_token.is_none() && req.jwt_svid.is_none() {
        anyhow::bail!(
            "the bridge attests as agent {}: give --join-token (or WRIT_JOIN_TOKEN), \
             --join-token-file, --oidc-token-file or --jwt-svid-file",
            a.agent
        );
    }
    Ok(req)
}

/// The scopes the gateway lists for `tool`; an error says why the tool
/// cannot be reached there.
async fn served_scopes(
    http: &reqwest::Client,
    gateway: &str,
    tool: &ToolName,
) -> anyhow::Result<Vec<String>> {
    let url = format!("{gateway}/.well-known/oauth-protected-resource/{tool}");
    let resp = http.get(&url).send().await.map_err(|e| {
        anyhow::anyhow!("cannot reach the gateway at {gateway}: {}", e.without_url())
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        anyhow::bail!("the gateway at {gateway} serves no tool {tool:?}");
    }
    if !status.is_success() {
        anyhow::bail!("the gateway at {gateway} is not ready for {tool:?} ({status})");
    }
    let meta: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("the gateway at {gateway} answered no metadata for {tool:?}"))?;
    Ok(meta
        .get("scopes_supported")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Why the bridge stopped.
enum Stop {
    /// The client closed stdin.
    Eof,
    /// SIGINT or SIGTERM.
    Signal,
    /// The task ended (or its token could no longer be renewed).
    TaskEnded(String),
    /// The client's `initialize` did not reach the tool.
    StartFailed(String),
}

/// Watches for SIGINT and SIGTERM from now on (a signal during start-up
/// is kept, so the task that start-up made is still ended).
fn watch_signals() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                let _ = tx.send(true);
            });
            return rx;
        }
    }
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    rx
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("writ mcp bridge: {msg}");
}

async fn bridge(g: &Global, a: BridgeArgs) -> anyhow::Result<u8> {
    let gateway = a.gateway.trim_end_matches('/').to_owned();
    if !(gateway.starts_with("http://") || gateway.starts_with("https://")) {
        anyhow::bail!("invalid gateway address {gateway:?}");
    }
    let req = attest_request(&a)?;
    let signals = watch_signals();
    let key = Arc::new(proof_key(g.dpop_key.as_deref())?);
    // To the gateway: streams may stay open for as long as the gateway
    // keeps them (it ends them within the hour); `--ca-file` applies.
    let http = writ_client::ClientOptions {
        connect_timeout: Some(Duration::from_secs(5)),
        timeout: Duration::from_secs(24 * 3600),
        follow_redirects: false,
        ..writ_client::ClientOptions::default()
    }
    .http()
    .context("cannot build the HTTP client")?;

    // The gateway first: a join token is not spent on a tool that cannot
    // be reached.
    let served = served_scopes(&http, &gateway, &a.tool).await?;
    let scopes: Vec<Scope> = if a.scope.is_empty() {
        served
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("the gateway lists a bad scope: {e}"))?
    } else {
        a.scope.clone()
    };
    if scopes.is_empty() {
        anyhow::bail!("tool {} has no scopes to ask for; give --scope", a.tool);
    }

    let broker = Client::with_options(
        &g.addr,
        None,
        writ_client::ClientOptions {
            connect_timeout: Some(Duration::from_secs(5)),
            timeout: Duration::from_secs(30),
            follow_redirects: false,
            ..writ_client::ClientOptions::default()
        },
    )?
    .with_dpop(Arc::clone(&key));
    let attested = broker
        .attest(&req)
        .await
        .map_err(|e| refused("attestation", e))?;
    drop(req);
    let instance = broker.with_token(attested.access_token);
    let start = StartTask {
        intent: a.intent.clone(),
        capabilities: vec![Capability {
            tool: a.tool.clone(),
            scopes: scopes.iter().cloned().collect(),
        }],
        on_behalf_of: a.on_behalf_of.clone(),
        ttl: a.ttl,
        justification: None,
    };
    let task = match instance.start_task(&start).await {
        Ok(t) => t,
        Err(ClientError::Pending(p)) => anyhow::bail!(
            "task {} waits for approval {}; approve it and start the bridge again",
            p.task_id,
            p.approval_id
        ),
        Err(e) => return Err(refused("starting the task", e)),
    };
    let task_id = task.task_id.clone();
    let scope_text = scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let outcome = serve(
        &instance,
        &http,
        &gateway,
        &a.tool,
        &key,
        task,
        &scope_text,
        signals,
    )
    .await;
    // Whatever happened, the task ends with the bridge.
    let ended = tokio::time::timeout(
        Duration::from_secs(5),
        instance.with_token(outcome.1.expose()).complete(&task_id),
    )
    .await;
    match ended {
        Ok(Ok(_)) => say(format_args!("task {task_id} completed")),
        Ok(Err(e)) if matches!(outcome.0, Ok(Stop::TaskEnded(_))) => {
            say(format_args!("task {task_id} had ended already ({e})"))
        }
        Ok(Err(e)) => say(format_args!("could not complete task {task_id}: {e}")),
        Err(_) => say(format_args!("could not complete task {task_id}: timed out")),
    }
    match outcome.0? {
        Stop::Eof | Stop::Signal => Ok(EXIT_OK),
        Stop::TaskEnded(why) => {
            say(format_args!("stopped: {why}"));
            Ok(EXIT_ERROR)
        }
        Stop::StartFailed(why) => {
            say(format_args!(
                "stopped: the client's initialize did not reach {}: {why}",
                a.tool
            ));
            Ok(EXIT_ERROR)
        }
    }
}

fn refused(step: &str, e: ClientError) -> anyhow::Error {
    match e.status() {
        Some(s) if (400..500).contains(&s) => {
            anyhow::Error::new(e).context(format!("{step} refused: the agent is not allowed"))
        }
        _ => anyhow::Error::new(e).context(format!("{step} failed")),
    }
}

/// Exchanges for the tool token, forwards until the client goes, the task
/// ends or a signal comes; returns why, and the newest task token.
#[allow(clippy::too_many_arguments, reason = "one bridge's context")]
async fn serve(
    instance: &Client,
    http: &reqwest::Client,
    gateway: &str,
    tool: &ToolName,
    key: &Arc<ProofKey>,
    task: TaskToken,
    scope: &str,
    mut signals: tokio::sync::watch::Receiver<bool>,
) -> (anyhow::Result<Stop>, Secret) {
    let task_token = Secret::new(task.access_token.clone());
    let exchanged = match instance
        .exchange(task_token.expose(), None, Some(tool.as_str()), Some(scope))
        .await
    {
        Ok(t) => t,
        Err(e) => return (Err(refused("the token exchange", e)), task_token),
    };
    let tokens = Arc::new(Tokens::new(
        Secret::new(exchanged.access_token),
        exchanged.expires_in,
    ));
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<Stop>(4);
    let forwarder = Forwarder::new(
        http.clone(),
        format!("{gateway}/{tool}"),
        Arc::clone(key),
        Arc::clone(&tokens),
    );
    say(format_args!(
        "agent task {} holds {tool} ({scope}); forwarding stdio to {gateway}/{tool}",
        task.task_id
    ));
    let keeper = tokio::spawn(keep(
        instance.clone(),
        task.task_id.clone(),
        task,
        Arc::clone(&tokens),
        tool.clone(),
        scope.to_owned(),
        stop_tx.clone(),
    ));
    let eof_tx = stop_tx.clone();
    let pump = tokio::spawn({
        let f = forwarder.clone();
        async move {
            let end = match f.pump_stdin().await {
                None => Stop::Eof,
                Some(why) => Stop::StartFailed(why),
            };
            let _ = eof_tx.send(end).await;
        }
    });
    let why = tokio::select! {
        s = stop_rx.recv() => s.unwrap_or(Stop::Eof),
        _ = signals.wait_for(|s| *s) => Stop::Signal,
    };
    pump.abort();
    forwarder.close().await;
    keeper.abort();
    let newest = tokens.task_token().unwrap_or(task_token);
    (Ok(why), newest)
}

/// Heartbeats the task and renews the tool token before it expires; on a
/// refusal (the task ended, was revoked, its agent quarantined) stops the
/// bridge.
async fn keep(
    instance: Client,
    id: TaskId,
    first: TaskToken,
    tokens: Arc<Tokens>,
    tool: ToolName,
    scope: String,
    stop: tokio::sync::mpsc::Sender<Stop>,
) {
    let mut task = first;
    loop {
        let lease = SystemClock.now().secs_until(task.lease_expires_at);
        tokio::time::sleep(heartbeat_every(lease)).await;
        let beat = instance
            .with_token(task.access_token.clone())
            .heartbeat(&id)
            .await;
        match beat {
            Ok(t) => {
                tokens.set_task_token(Secret::new(t.access_token.clone()));
                task = t;
            }
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                let _ = stop
                    .send(Stop::TaskEnded(format!("task {id} ended: {e}")))
                    .await;
                return;
            }
            Err(e) => {
                say(format_args!("heartbeat failed, retrying: {e}"));
                continue;
            }
        }
        if tokens.needs_renewal(heartbeat_every(lease).as_secs()) {
            match instance
                .exchange(&task.access_token, None, Some(tool.as_str()), Some(&scope))
                .await
            {
                Ok(t) => tokens.set_tool_token(Secret::new(t.access_token), t.expires_in),
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                    let _ = stop
                        .send(Stop::TaskEnded(format!(
                            "no new tool token for task {id}: {e}"
                        )))
                        .await;
                    return;
                }
                Err(e) => say(format_args!("tool token renewal failed, retrying: {e}")),
            }
        }
    }
}

/// A third of the lease, between 2 and 60 seconds.
fn heartbeat_every(lease_secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(lease_secs / 3).unwrap_or(0).clamp(2, 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_a_third_into_the_lease_within_bounds() {
        assert_eq!(heartbeat_every(120), Duration::from_secs(40));
        assert_eq!(heartbeat_every(1), Duration::from_secs(2));
        assert_eq!(heartbeat_every(-5), Duration::from_secs(2));
        assert_eq!(heartbeat_every(3600), Duration::from_secs(60));
    }

    #[test]
    fn a_key_file_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_private(&p).is_ok());
    }

    #[test]
    fn the_bridge_needs_a_way_to_attest() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: BridgeArgs,
        }
        let t = T::try_parse_from(["t", "tickets", "--agent", "demo-agent"]).unwrap();
        // SAFETY of the assertion: WRIT_JOIN_TOKEN is not set in unit tests.
        if std::env::var_os("WRIT_JOIN_TOKEN").is_none() {
            let e = attest_request(&t.a).unwrap_err().to_string();
            assert!(e.contains("--join-token"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("svid");
        std::fs::write(&p, "eyJ.svid.sig\n").unwrap();
        let t = T::try_parse_from([
            "t",
            "tickets",
            "--agent",
            "demo-agent",
            "--jwt-svid-file",
            p.to_str().unwrap(),
        ])
        .unwrap();
        let r = attest_request(&t.a).unwrap();
        assert_eq!(r.jwt_svid.as_deref(), Some("eyJ.svid.sig"));
    }
}
