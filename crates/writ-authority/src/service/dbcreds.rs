//! Dynamic database credentials: a PostgreSQL role per task, created on
//! request with the tool's grants and `VALID UNTIL` the task's hard end,
//! and dropped (its sessions ended first) as soon as the task is over.
//!
//! The lease is recorded before the role is created and confirmed once it
//! exists, so whatever happens in between (a crash, a lost connection)
//! leaves a record the reaper finds: on every replica, at every start,
//! after every task end, a confirmed role whose task is no longer active is
//! dropped, and so is a role never confirmed within a grace period (its
//! password was never handed out).

use std::sync::Arc;
use std::time::Duration;

use writ_core::api::{DbCredential, Task, Upstream};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::seal::MasterKey;
use writ_core::{Clock, TaskId, ToolName, random};
use writ_store::{DbLease, Store};

use super::{AgentCaller, Broker, Caller};
use crate::error::Error;

/// At most this many roles are dropped per pass.
const BATCH: u32 = 64;
/// Live roles a task may hold at once.
const MAX_LIVE_PER_TASK: u32 = 8;
/// How long a lease may stay unconfirmed before the reaper takes it: well
/// past the longest a creation can take (connect, lock and statement
/// timeouts below).
const UNCONFIRMED_GRACE_SECS: i64 = 60;
/// How long a role that could not be dropped waits for the next attempt.
const RETRY_SECS: i64 = 30;

/// The seal purpose of a postgres tool's admin connection.
pub(crate) fn admin_purpose(tool: &ToolName) -> String {
    format!("writ postgres admin {tool}")
}

/// Checks a postgres tool's admin connection URL.
pub(crate) fn check_admin_url(url: &str) -> Result<(), Error> {
    let ok = (url.starts_with("postgres://") || url.starts_with("postgresql://"))
        && url.len() <= 4096
        && url
            .parse::<postgres::Config>()
            .is_ok_and(|c| c.get_user().is_some() && !c.get_hosts().is_empty());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "a postgres tool's secret is its admin connection: postgres://user:password@host:port/database".into(),
        ))
    }
}

/// Checks a postgres tool's grants at registration.
pub(crate) fn check_grants(grants: &[String]) -> Result<(), Error> {
    // Each grant runs as one prepared statement, which PostgreSQL refuses
    // to hold more than one command.
    let ok = !grants.is_empty()
        && grants.len() <= 32
        && grants.iter().all(|g| {
            !g.trim().is_empty() && g.len() <= 4096 && g.contains("{role}") && !g.contains('\0')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "a postgres upstream needs 1 to 32 grants, each one statement naming {role}".into(),
        ))
    }
}

impl Broker {
    /// Creates a role for an active task of the caller's granted `tool` and
    /// returns its credential, once.
    pub async fn issue_db_credential(
        &self,
        caller: &Caller,
        task_id: &TaskId,
        tool_name: &ToolName,
    ) -> Result<DbCredential, Error> {
        let Caller::Agent(agent) = caller else {
            return Err(Error::Forbidden(
                "a task's database credential is issued to the task's agent".into(),
            ));
        };
        let task = self.tasks.owned_task(agent, task_id).await?;
        self.db_credentials.issue(agent, task, tool_name).await
    }
}

/// Database roles per task as a service of its own: it holds only the
/// store (leases), the master key (the tools' admin connections) and the
/// clock.
pub struct DbCredentials {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
}

impl DbCredentials {
    pub(super) fn new(h: &super::Handles) -> Self {
        Self {
            store: Arc::clone(&h.store),
            master: Arc::clone(&h.master),
            clock: Arc::clone(&h.clock),
        }
    }

    fn now(&self) -> writ_core::Timestamp {
        self.clock.now()
    }

    /// Creates a role for `task` (the caller's, active) if it was granted
    /// `tool`, and returns its credential, once.
    async fn issue(
        &self,
        agent: &AgentCaller,
        task: Task,
        tool_name: &ToolName,
    ) -> Result<DbCredential, Error> {
        let task_id = &task.task_id;
        if !task.capabilities.iter().any(|c| &c.tool == tool_name) {
            return Err(Error::Forbidden(format!(
                "task {task_id} was not granted tool {tool_name}"
            )));
        }
        let tool = self
            .store
            .get_tool(tool_name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tool {tool_name} not found")))?;
        let Some(Upstream::Postgres { grants }) = tool.upstream else {
            return Err(Error::Invalid(format!(
                "tool {tool_name} is not a postgres tool"
            )));
        };
        let admin_url = self.admin_url(tool_name).await?;

        let now = self.now();
        let role = format!(
            "writ_{}",
            random::bytes::<8>()
                .map_err(|e| Error::Internal(e.to_string()))?
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let password = random::token_256().map_err(|e| Error::Internal(e.to_string()))?;
        // Where the agent connects, worked out before anything is created.
        let url = pg::client_url(&admin_url, &role, &password)
            .map_err(|e| Error::Unavailable(format!("tool {tool_name}'s admin connection: {e}")))?;
        let lease = DbLease {
            role: role.clone(),
            task_id: task.task_id.clone(),
            tool: tool_name.clone(),
            created_at: now,
            expires_at: task.expires_at,
        };
        self.store
            .create_db_lease(&lease, MAX_LIVE_PER_TASK, Vec::new())
            .await?;

        let created = {
            let (url, role, password, grants) =
                (admin_url.clone(), role.clone(), password.clone(), grants);
            let until = task.expires_at.to_rfc3339();
            blocking(move || pg::create_role(&url, &role, &password, &until, &grants)).await
        };
        if let Err(e) = created {
            tracing::error!(tool = %tool_name, role = %role, error = %e, "cannot create a task's database role");
            // The role may or may not exist: dropping is idempotent, and the
            // reaper takes the lease after the grace if this fails too.
            self.drop_lease_role(&lease, &admin_url, "creation failed")
                .await;
            return Err(Error::Unavailable(
                "cannot create the database role (the broker's log says why)".into(),
            ));
        }
        let event = AuditEvent::new(AuditKind::CredentialIssue, Outcome::Success, agent.actor())
            .agent(agent.agent().as_str())
            .task(&task.task_id)
            .detail(serde_json::json!({ "tool": tool_name, "role": role, "expires_at": task.expires_at }));
        if let Err(e) = self
            .store
            .confirm_db_lease(&role, self.now(), vec![event])
            .await
        {
            // Ended while the role was being created: it must not outlive it.
            self.drop_lease_role(&lease, &admin_url, "task ended during creation")
                .await;
            return Err(e.into());
        }
        Ok(DbCredential {
            tool: tool_name.clone(),
            task_id: task.task_id,
            url,
            username: role,
            password,
            expires_at: lease.expires_at,
        })
    }

    /// The opened admin connection URL of a postgres tool.
    async fn admin_url(&self, tool: &ToolName) -> Result<String, Error> {
        let secret = self
            .store
            .tool_secrets()
            .await?
            .into_iter()
            .find(|s| &s.tool == tool)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "tool {tool} has no admin connection (writ tool secret set {tool})"
                ))
            })?;
        let opened = self
            .master
            .open(&admin_purpose(tool), &secret.sealed)
            .map_err(|e| Error::Internal(format!("tool {tool}'s admin connection: {e}")))?;
        String::from_utf8(opened.to_vec())
            .map_err(|_| Error::Internal(format!("tool {tool}'s admin connection is not text")))
    }

    /// Drops every role whose task is over (or whose end has passed);
    /// returns how many. Runs on every replica: dropping is idempotent and
    /// the store records each drop once.
    pub(crate) async fn reap(&self) -> usize {
        let mut dropped = 0;
        let now = self.now();
        let cutoff = now.add_secs(-UNCONFIRMED_GRACE_SECS);
        let leases = match self.store.overdue_db_leases(now, cutoff, BATCH).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot list database roles to drop");
                return 0;
            }
        };
        for lease in leases {
            let url = match self.admin_url(&lease.tool).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(role = %lease.role, error = %e, "cannot drop a task's database role");
                    continue;
                }
            };
            if self.drop_lease_role(&lease, &url, "task over").await {
                dropped += 1;
            }
        }
        dropped
    }

    /// Ends the role's sessions, drops it, and records that; `false` (and
    /// the lease stays for the next pass) if the database refused.
    async fn drop_lease_role(&self, lease: &DbLease, admin_url: &str, why: &str) -> bool {
        let result = {
            let (url, role) = (admin_url.to_owned(), lease.role.clone());
            blocking(move || pg::drop_role(&url, &role)).await
        };
        let terminated = match result {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(role = %lease.role, error = %e, "cannot drop a task's database role yet");
                let at = self.now().add_secs(RETRY_SECS);
                if let Err(e) = self.store.retry_db_lease(&lease.role, at).await {
                    tracing::error!(role = %lease.role, error = %e, "cannot schedule the next drop attempt");
                }
                return false;
            }
        };
        let event = AuditEvent::new(AuditKind::CredentialRevoke, Outcome::Success, "system")
            .task(&lease.task_id)
            .reason(why)
            .detail(serde_json::json!({
                "tool": lease.tool, "role": lease.role, "sessions_ended": terminated
            }));
        match self
            .store
            .db_lease_dropped(&lease.role, self.now(), vec![event])
            .await
        {
            Ok(_) => {
                tracing::info!(role = %lease.role, task = %lease.task_id, "task's database role dropped");
                true
            }
            Err(e) => {
                tracing::error!(role = %lease.role, error = %e, "database role dropped but not recorded");
                false
            }
        }
    }
}

/// Runs blocking client work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

/// The statements run on the tool's database, as its admin.
mod pg {
    use super::Duration;

    /// Errors as text, with the server's message when there is one.
    fn text(e: &postgres::Error) -> String {
        match e.as_db_error() {
            Some(d) => format!("{}: {}", d.code().code(), d.message()),
            None => e.to_string(),
        }
    }

    fn connect(admin_url: &str) -> Result<postgres::Client, String> {
        let mut config: postgres::Config = admin_url.parse().map_err(|e| format!("{e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // Nothing here may wait long: a lock held elsewhere fails the
        // attempt, which the reaper repeats later.
        config
            .application_name("writ")
            .options("-c statement_timeout=10000 -c lock_timeout=5000")
            .connect(postgres::NoTls)
            .map_err(|e| text(&e))
    }

    fn ident(role: &str) -> String {
        format!("\"{}\"", role.replace('"', "\"\""))
    }

    pub(super) fn create_role(
        admin_url: &str,
        role: &str,
        password: &str,
        valid_until: &str,
        grants: &[String],
    ) -> Result<(), String> {
        let mut client = connect(admin_url)?;
        let mut tx = client.transaction().map_err(|e| text(&e))?;
        // Only a SCRAM verifier of the password reaches the server (and its
        // logs). The role is generated hex; the verifier and the time are
        // quoted all the same.
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        tx.batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{}' VALID UNTIL '{}'",
            ident(role),
            verifier.replace('\'', "''"),
            valid_until.replace('\'', "''"),
        ))
        .map_err(|e| text(&e))?;
        for (i, g) in grants.iter().enumerate() {
            // One prepared statement each: never more than one command.
            tx.execute(g.replace("{role}", &ident(role)).as_str(), &[])
                .map_err(|e| format!("grant {}: {}", i + 1, text(&e)))?;
        }
        tx.commit().map_err(|e| text(&e))
    }

    /// Refuses new logins, ends the role's sessions, hands what it owns to
    /// the admin and drops it; the number of sessions ended. A role that
    /// does not exist (any more) is done.
    pub(super) fn drop_role(admin_url: &str, role: &str) -> Result<u64, String> {
        let mut client = connect(admin_url)?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .map_err(|e| text(&e))?
            .is_some();
        if !exists {
            return Ok(0);
        }
        client
            .batch_execute(&format!("ALTER ROLE {} NOLOGIN", ident(role)))
            .map_err(|e| text(&e))?;
        let ended = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&role],
            )
            .map_err(|e| text(&e))?
            .len() as u64;
        client
            .batch_execute(&format!(
                "REASSIGN OWNED BY {r} TO CURRENT_USER; DROP OWNED BY {r}; DROP ROLE {r}",
                r = ident(role)
            ))
            .map_err(|e| text(&e))?;
        Ok(ended)
    }

    /// Where the agent connects: the admin connection's host, port and
    /// database, with the role's name and password.
    pub(super) fn client_url(
        admin_url: &str,
        role: &str,
        password: &str,
    ) -> Result<String, String> {
        let config: postgres::Config = admin_url.parse().map_err(|e| format!("{e}"))?;
        let host = config
            .get_hosts()
            .iter()
            .find_map(|h| match h {
                postgres::config::Host::Tcp(h) => Some(h.clone()),
                #[cfg(unix)]
                postgres::config::Host::Unix(_) => None,
            })
            .ok_or("the admin connection has no TCP host")?;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        // PostgreSQL's default database is the one named after the user.
        let db = config
            .get_dbname()
            .or(config.get_user())
            .ok_or("the admin connection names no user")?;
        let mut url = url::Url::parse("postgres://localhost/").map_err(|e| e.to_string())?;
        url.set_host(Some(&host)).map_err(|e| e.to_string())?;
        url.set_port(Some(port))
            .map_err(|()| "bad port".to_owned())?;
        url.set_username(role).map_err(|()| "bad role".to_owned())?;
        url.set_password(Some(password))
            .map_err(|()| "bad password".to_owned())?;
        url.set_path(db);
        Ok(url.to_string())
    }
}
