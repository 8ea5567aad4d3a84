//! `writ token inspect|introspect|revoke`

use clap::Subcommand;
use serde_json::json;
use writ_core::token::{insecure_peek, verify_with_jwks};
use writ_core::{Clock as _, SystemClock};

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Decode a token, verify it against the broker's JWKS, and (with an
    /// admin credential) ask whether it is still active.
    Inspect {
        #[arg(value_name = "TOKEN")]
        jwt: String,
    },
    /// RFC 7662 introspection (admin).
    Introspect {
        #[arg(value_name = "TOKEN")]
        jwt: String,
    },
    /// RFC 8693: exchange a task token for a token for one tool, narrowed.
    Exchange {
        /// The task token (proved with --dpop-key if bound).
        #[arg(long, env = "WRIT_TASK_TOKEN", hide_env_values = true)]
        subject_token: String,
        /// The tool (name or audience URI).
        #[arg(long)]
        audience: String,
        /// Scopes on that tool, space separated (default: all the task holds).
        #[arg(long)]
        scope: Option<String>,
    },
    /// RFC 7009 revocation (admin, or the agent's own token).
    Revoke {
        #[arg(value_name = "TOKEN")]
        jwt: String,
        /// Authenticate as this agent token instead of WRIT_TOKEN.
        #[arg(long, env = "WRIT_INSTANCE_TOKEN", hide_env_values = true)]
        instance_token: Option<String>,
    },
}

pub async fn run(g: &Global, cmd: TokenCmd) -> anyhow::Result<u8> {
    match cmd {
        TokenCmd::Inspect { jwt: token } => {
            let (header, claims) = insecure_peek(&token)?;
            let anon = g.client_with(None)?;
            let meta = anon.metadata().await?;
            let issuer = meta
                .get("issuer")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let jwks = serde_json::from_value(anon.jwks().await?)?;
            let signature = match verify_with_jwks(&token, &jwks, issuer, SystemClock.now()) {
                Ok(_) => json!("valid"),
                Err(e) => json!(format!("invalid: {e}")),
            };
            let introspection = match &g.token {
                Some(_) => Some(g.admin()?.introspect(&token).await?),
                None => None,
            };
            let mut out = json!({ "header": header, "claims": claims, "verified": signature });
            if let (Some(i), Some(obj)) = (introspection, out.as_object_mut()) {
                obj.insert("introspection".into(), serde_json::to_value(i)?);
            }
            print(&out, g.field())?;
        }
        TokenCmd::Exchange {
            subject_token,
            audience,
            scope,
        } => {
            let out = g
                .agent_client(None)?
                .exchange(&subject_token, None, Some(&audience), scope.as_deref())
                .await?;
            print(&out, g.field())?;
        }
        TokenCmd::Introspect { jwt: token } => {
            print(&g.admin()?.introspect(&token).await?, g.field())?
        }
        TokenCmd::Revoke {
            jwt: token,
            instance_token,
        } => {
            g.client_with(instance_token.as_deref())?
                .revoke(&token)
                .await?;
            print(&json!({ "revoked": true }), g.field())?;
        }
    }
    Ok(EXIT_OK)
}
