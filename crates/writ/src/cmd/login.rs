//! `writ login` / `writ logout`: operators' single sign-on from the CLI.
//!
//! The CLI runs the OAuth 2.0 device authorization grant (RFC 8628) against
//! the operators' own OIDC provider (the one the broker names at
//! `GET /v1/login/oidc`), then hands the identity token to the broker,
//! which verifies it itself (issuer keys, audience, lifetime) and answers
//! with a short-lived operator credential. That credential is kept in the
//! session file (mode 0600) and used by every command when no `--token` /
//! `WRIT_TOKEN` is given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use writ_core::Timestamp;
use writ_core::api::Role;

use super::Global;
use crate::output::EXIT_OK;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The scopes asked of the identity provider.
    #[arg(long, default_value = "openid email profile")]
    scope: String,
}

/// What the session file holds.
#[derive(Serialize, Deserialize)]
pub struct Session {
    /// The broker it was made by.
    pub addr: String,
    pub name: String,
    pub role: Role,
    pub token: String,
    pub expires_at: Timestamp,
}

/// The session file: `--session-file`, else `$WRIT_SESSION_FILE`, else
/// `$XDG_CONFIG_HOME/writ/session.json`, else `~/.config/writ/session.json`.
pub fn session_path(g: &Global) -> Option<PathBuf> {
    if let Some(p) = &g.session_file {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("writ").join("session.json"))
}

/// The stored session's credential, if there is one for this broker that
/// has not ended.
pub fn session_token(g: &Global) -> Option<String> {
    let path = session_path(g)?;
    let text = std::fs::read_to_string(path).ok()?;
    let s: Session = serde_json::from_str(&text).ok()?;
    let now = writ_core::Clock::now(&writ_core::SystemClock);
    (s.addr.trim_end_matches('/') == g.addr.trim_end_matches('/') && now < s.expires_at)
        .then_some(s.token)
}

#[derive(Deserialize)]
struct Discovery {
    device_authorization_endpoint: Option<String>,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

pub async fn login(g: &Global, args: LoginArgs) -> anyhow::Result<u8> {
    let path = session_path(g).context("no session file: set WRIT_SESSION_FILE or HOME")?;
    let broker = writ_client::Client::new(&g.addr, None)?;
    let info = broker.operator_sso_info().await?;
    let http = writ_client::ClientOptions::default().http()?;
    let issuer = info.issuer.trim_end_matches('/');
    let disc: Discovery = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reading the discovery document of {issuer}"))?
        .json()
        .await
        .context("the identity provider's discovery document is not valid")?;
    let device_endpoint = disc
        .device_authorization_endpoint
        .context("the identity provider does not offer the device authorization grant")?;
    let auth: DeviceAuthorization = http
        .post(&device_endpoint)
        .form(&[
            ("client_id", info.client_id.as_str()),
            ("scope", args.scope.as_str()),
        ])
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("starting the device authorization")?
        .json()
        .await
        .context("the device authorization answer is not valid")?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        auth.verification_uri, auth.user_code
    );
    if let Some(full) = &auth.verification_uri_complete {
        eprintln!("(or open {full})");
    }
    eprintln!("user_code: {}", auth.user_code);

    let mut interval = auth.interval.unwrap_or(5).max(1);
    let deadline =
        std::time::Instant::now() + Duration::from_secs(auth.expires_in.unwrap_or(600).min(1800));
    let id_token = loop {
        if std::time::Instant::now() > deadline {
            bail!("the sign-in was not completed in time");
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let answer: TokenAnswer = http
            .post(&disc.token_endpoint)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", auth.device_code.as_str()),
                ("client_id", info.client_id.as_str()),
            ])
            .send()
            .await
            .context("polling the identity provider")?
            .json()
            .await
            .context("the identity provider's token answer is not valid")?;
        match (answer.id_token, answer.error.as_deref()) {
            (Some(t), _) => break t,
            (None, Some("authorization_pending")) => {}
            (None, Some("slow_down")) => interval += 5,
            (None, Some(e)) => bail!(
                "sign-in refused by the identity provider: {e}{}",
                answer
                    .error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            (None, None) => bail!("the identity provider answered without an identity token"),
        }
    };
    let session = broker.operator_sign_in(&id_token).await?;
    let stored = Session {
        addr: g.addr.clone(),
        name: session.name.clone(),
        role: session.role,
        token: session.token,
        expires_at: session.expires_at,
    };
    write_private(&path, &serde_json::to_vec_pretty(&stored)?)?;
    crate::output::print(
        &serde_json::json!({
            "name": session.name,
            "role": session.role,
            "expires_at": session.expires_at,
            "session_file": path,
        }),
        g.field(),
    )?;
    Ok(EXIT_OK)
}

pub fn logout(g: &Global) -> anyhow::Result<u8> {
    if let Some(path) = session_path(g) {
        match std::fs::remove_file(&path) {
            Ok(()) => eprintln!("signed out: {} removed", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("not signed in"),
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(EXIT_OK)
}

/// Writes `bytes` to `path` readable by its owner only (a new file is
/// renamed over the old one).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
