//! `writ task start|heartbeat|complete|show`

use anyhow::Context as _;
use clap::{Args, Subcommand};
use writ_core::api::StartTask;
use writ_core::{Capability, TaskId};

use super::Global;
use crate::output::{EXIT_OK, print, print_exports};

/// The agent credential for task commands.
#[derive(Args, Debug)]
pub struct AgentToken {
    /// The instance token (or a task token) to act with; falls back to WRIT_TOKEN.
    #[arg(long, env = "WRIT_INSTANCE_TOKEN", hide_env_values = true)]
    instance_token: Option<String>,
}

#[derive(Args, Debug)]
pub struct TaskRef {
    /// The task id.
    #[arg(env = "WRIT_TASK_ID")]
    id: TaskId,
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Declare an intent and the capabilities it needs; policy decides.
    Start {
        #[command(flatten)]
        auth: AgentToken,
        /// What the task is for, in words.
        #[arg(long)]
        intent: String,
        /// TOOL:SCOPE[,SCOPE...] (repeatable).
        #[arg(long = "cap", value_name = "TOOL:SCOPES", value_parser = parse_cap, required = true)]
        caps: Vec<Capability>,
        /// The human the task acts for, e.g. user:alice.
        #[arg(long)]
        on_behalf_of: Option<String>,
        /// Hard lifetime in seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// Print `export WRIT_TASK_ID=... WRIT_TASK_TOKEN=...` for `eval`.
        #[arg(long)]
        export: bool,
    },
    /// Extend the lease and get a fresh task token.
    Heartbeat {
        #[command(flatten)]
        auth: AgentToken,
        #[command(flatten)]
        task: TaskRef,
    },
    /// End the task; every token issued under it stops working.
    Complete {
        #[command(flatten)]
        auth: AgentToken,
        #[command(flatten)]
        task: TaskRef,
    },
    /// Show a task.
    Show {
        #[command(flatten)]
        auth: AgentToken,
        #[command(flatten)]
        task: TaskRef,
    },
}

fn parse_cap(s: &str) -> Result<Capability, String> {
    Capability::parse_short(s).map_err(|e| e.to_string())
}

pub async fn run(g: &Global, cmd: TaskCmd) -> anyhow::Result<u8> {
    match cmd {
        TaskCmd::Start {
            auth,
            intent,
            caps,
            on_behalf_of,
            ttl,
            export,
        } => {
            let token = auth.instance_token.context(
                "an instance token is needed: set WRIT_INSTANCE_TOKEN (see `writ attest`)",
            )?;
            let c = g.client_with(Some(&token))?;
            let out = c
                .start_task(&StartTask {
                    intent,
                    capabilities: caps,
                    on_behalf_of,
                    ttl,
                })
                .await?;
            if export {
                print_exports(&[
                    ("WRIT_TASK_ID", out.task_id.as_str()),
                    ("WRIT_TASK_TOKEN", &out.access_token),
                ]);
            } else {
                print(&out, g.field())?;
            }
        }
        TaskCmd::Heartbeat { auth, task } => {
            let c = g.client_with(auth.instance_token.as_deref())?;
            print(&c.heartbeat(&task.id).await?, g.field())?;
        }
        TaskCmd::Complete { auth, task } => {
            let c = g.client_with(auth.instance_token.as_deref())?;
            print(&c.complete(&task.id).await?, g.field())?;
        }
        TaskCmd::Show { auth, task } => {
            let c = g.client_with(auth.instance_token.as_deref())?;
            print(&c.task(&task.id).await?, g.field())?;
        }
    }
    Ok(EXIT_OK)
}
