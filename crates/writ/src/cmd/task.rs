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
        /// Why a lifetime beyond the maximum is needed (an exception).
        #[arg(long)]
        justification: Option<String>,
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
    /// A database role of the task's own for a postgres tool it was
    /// granted: user, password and URL, shown once; dropped when the task
    /// ends. `--field url` prints just the connection URL.
    Credentials {
        #[command(flatten)]
        auth: AgentToken,
        /// The postgres tool.
        tool: writ_core::ToolName,
        #[command(flatten)]
        task: TaskRef,
    },
    /// List tasks (admin), newest first.
    List {
        /// Only live exceptions, with their expiry, owner, justification,
        /// approver and how often each was used.
        #[arg(long)]
        exceptions: bool,
    },
    /// Show a task.
    Show {
        #[command(flatten)]
        auth: AgentToken,
        #[command(flatten)]
        task: TaskRef,
    },
    /// Show the delegation tree under a task and each node's state.
    Tree {
        #[command(flatten)]
        auth: AgentToken,
        #[command(flatten)]
        task: TaskRef,
    },
    /// Hand part of a task to a sub-agent (RFC 8693 delegation): the child
    /// task's token is bound to the sub-agent's key and names every hop.
    Delegate {
        /// The parent's task token (proved with --dpop-key if bound).
        #[arg(long, env = "WRIT_TASK_TOKEN", hide_env_values = true)]
        subject_token: String,
        /// The sub-agent's instance token.
        #[arg(long, hide_env_values = true)]
        actor_token: String,
        /// When the sub-agent's token is DPoP-bound: the proof it made with
        /// its own key (`writ dpop actor-proof`).
        #[arg(long, hide_env_values = true)]
        actor_token_proof: Option<String>,
        /// Narrow to one tool (name or audience).
        #[arg(long)]
        audience: Option<String>,
        /// Narrow to these capabilities: "tool:scope tool:scope".
        #[arg(long)]
        scope: Option<String>,
        /// Print `export WRIT_CHILD_TASK_ID=... WRIT_CHILD_TASK_TOKEN=...`.
        #[arg(long)]
        export: bool,
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
            justification,
            export,
        } => {
            let token = auth.instance_token.context(
                "an instance token is needed: set WRIT_INSTANCE_TOKEN (see `writ attest`)",
            )?;
            let c = g.agent_client(Some(&token))?;
            let out = c
                .start_task(&StartTask {
                    intent,
                    capabilities: caps,
                    on_behalf_of,
                    ttl,
                    justification,
                })
                .await;
            let out = match out {
                Err(writ_client::ClientError::Pending(p)) => {
                    eprintln!(
                        "task {} waits for approval {}; `writ task heartbeat` collects its token once approved",
                        p.task_id, p.approval_id
                    );
                    if export {
                        print_exports(&[("WRIT_TASK_ID", p.task_id.as_str())]);
                    } else {
                        print(&p, g.field())?;
                    }
                    return Ok(EXIT_OK);
                }
                other => other?,
            };
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
            let c = g.agent_client(auth.instance_token.as_deref())?;
            match c.heartbeat(&task.id).await {
                Err(writ_client::ClientError::Pending(p)) => print(&p, g.field())?,
                other => print(&other?, g.field())?,
            }
        }
        TaskCmd::List { exceptions: true } => print(&g.admin()?.exceptions().await?, g.field())?,
        TaskCmd::List { exceptions: false } => print(&g.admin()?.tasks(false).await?, g.field())?,
        TaskCmd::Complete { auth, task } => {
            let c = g.client_with(auth.instance_token.as_deref())?;
            print(&c.complete(&task.id).await?, g.field())?;
        }
        TaskCmd::Credentials { auth, tool, task } => {
            let c = g.client_with(auth.instance_token.as_deref())?;
            print(&c.db_credential(&task.id, &tool).await?, g.field())?;
        }
        TaskCmd::Show { auth, task } => {
            let c = g.client_with(auth.instance_token.as_deref())?;
            print(&c.task(&task.id).await?, g.field())?;
        }
        TaskCmd::Tree { auth, task } => {
            let c = g.client_with(auth.instance_token.as_deref())?;
            let tree = c.task_tree(&task.id).await?;
            if g.field().is_some() {
                print(&tree, g.field())?;
            } else {
                for t in &tree {
                    println!(
                        "{}{}  {}  agent={}  depth={}  scope={}",
                        "  ".repeat(t.depth as usize),
                        t.task_id,
                        t.status.as_str(),
                        t.agent,
                        t.depth,
                        writ_core::scope::to_claim(&t.capabilities)
                    );
                }
            }
        }
        TaskCmd::Delegate {
            subject_token,
            actor_token,
            actor_token_proof,
            audience,
            scope,
            export,
        } => {
            let c = g.agent_client(None)?;
            let out = c
                .delegate(
                    &subject_token,
                    &actor_token,
                    actor_token_proof.as_deref(),
                    audience.as_deref(),
                    scope.as_deref(),
                )
                .await?;
            if export {
                let id = out
                    .task_id
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                print_exports(&[
                    ("WRIT_CHILD_TASK_ID", &id),
                    ("WRIT_CHILD_TASK_TOKEN", &out.access_token),
                ]);
            } else {
                print(&out, g.field())?;
            }
        }
    }
    Ok(EXIT_OK)
}
