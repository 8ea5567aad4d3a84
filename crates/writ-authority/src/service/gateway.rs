//! What gateways need from the broker: their credentials, the bundle they
//! decide with, the upstream secrets they inject, and a place to record
//! their decisions.

use std::sync::OnceLock;

use writ_core::api::{
    ApprovalStatus, CallHeld, EMBEDDED_GATEWAY, GatewayBundle, GatewayDecisions,
    GatewayDecisionsAck, GatewayRegistered, GatewaySecret, HoldCall, RegisterGateway,
    SetToolSecret, ToolSecretSet, Upstream, valid_gateway_name,
};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::{ToolName, random};

use std::sync::Arc;

use writ_core::seal::MasterKey;
use writ_core::{Clock, Timestamp};
use writ_store::Store;

use super::approvals::Approvals;
use super::policies::Policies;
use super::subjects::Subjects;
use super::tokens::hash_secret;
use crate::error::Error;

/// Most decisions one delivery may carry.
pub const MAX_DECISIONS: usize = 1000;
/// Longest upstream secret value.
const MAX_SECRET_LEN: usize = 8 * 1024;

/// Headers a secret may not be injected as: the gateway owns these.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "dpop",
    "forwarded",
];

/// The process-local credential of the gateway inside `writ serve`: never
/// stored, gone with the process.
#[derive(Debug, Default)]
pub(crate) struct EmbeddedGateway(OnceLock<String>);

/// Who asks for a decision or follows the revocation feed.
#[derive(Debug)]
pub enum EnforcementPoint {
    Operator(super::Operator),
    Gateway(String),
}

/// Gateways: their credentials, the bundle and secrets they fetch, the
/// calls they hold for approval and the decisions they report.
pub struct Gateways {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    issuer: String,
    master: Arc<MasterKey>,
    policies: Arc<Policies>,
    subjects: Arc<Subjects>,
    approvals: Arc<Approvals>,
    embedded_gateway: EmbeddedGateway,
}

impl Gateways {
    pub(super) fn new(
        h: &super::Handles,
        subjects: &Arc<Subjects>,
        approvals: &Arc<Approvals>,
    ) -> Self {
        Self {
            store: Arc::clone(&h.store),
            clock: Arc::clone(&h.clock),
            issuer: h.config.issuer.clone(),
            master: Arc::clone(&h.master),
            policies: Arc::clone(&h.policies),
            subjects: Arc::clone(subjects),
            approvals: Arc::clone(approvals),
            embedded_gateway: EmbeddedGateway::default(),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The bearer token of the embedded gateway (made on first use), and
    /// its record so its decisions can be numbered.
    pub async fn embedded_gateway_token(&self) -> Result<String, Error> {
        // No token hashes to this (hashes are hex): the row only numbers
        // the embedded gateway's decisions.
        match self
            .store
            .create_gateway(
                EMBEDDED_GATEWAY,
                "embedded:process-local",
                self.now(),
                Vec::new(),
            )
            .await
        {
            Ok(()) | Err(writ_store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if self.embedded_gateway.0.get().is_some() {
            return Err(Error::Internal(
                "the embedded gateway token was already handed out".into(),
            ));
        }
        let token = format!("wgw_{}", random::token_256()?);
        self.embedded_gateway
            .0
            .set(hash_secret(&token))
            .map_err(|_| Error::Internal("embedded gateway token raced".into()))?;
        Ok(token)
    }

    /// Resolves a gateway credential to the gateway's name.
    pub async fn require_gateway(&self, token: Option<&str>) -> Result<String, Error> {
        let token =
            token.ok_or_else(|| Error::Unauthenticated("missing gateway credential".into()))?;
        let hash = hash_secret(token);
        if self.embedded_gateway.0.get().is_some_and(|h| {
            aws_lc_rs::constant_time::verify_slices_are_equal(h.as_bytes(), hash.as_bytes()).is_ok()
        }) {
            return Ok(EMBEDDED_GATEWAY.to_owned());
        }
        self.store
            .gateway_by_token(&hash)
            .await?
            .ok_or_else(|| Error::Unauthenticated("invalid gateway credential".into()))
    }

    /// The gateway a verified client certificate names (its URI SAN
    /// `urn:writ:gateway:NAME`, issued by the `--tls-client-ca` authority):
    /// it stands in for the gateway's credential while the gateway is
    /// registered and not revoked.
    pub async fn require_gateway_named(&self, name: &str) -> Result<String, Error> {
        if name != EMBEDDED_GATEWAY
            && valid_gateway_name(name)
            && self.store.gateway_live(name).await?
        {
            Ok(name.to_owned())
        } else {
            Err(Error::Unauthenticated(
                "the client certificate names no live gateway".into(),
            ))
        }
    }

    pub async fn register_gateway(
        &self,
        req: RegisterGateway,
        actor: &str,
    ) -> Result<GatewayRegistered, Error> {
        let name = req.name;
        if !valid_gateway_name(&name) || name == EMBEDDED_GATEWAY {
            return Err(Error::Invalid(format!(
                "gateway name must be 1-64 characters of [A-Za-z0-9._-] and not {EMBEDDED_GATEWAY:?}"
            )));
        }
        let token = format!("wgw_{}", random::token_256()?);
        let event = AuditEvent::new(AuditKind::GatewayRegister, Outcome::Success, actor)
            .detail(serde_json::json!({ "gateway": name }));
        self.store
            .create_gateway(&name, &hash_secret(&token), self.now(), vec![event])
            .await?;
        Ok(GatewayRegistered { name, token })
    }

    /// Revokes a gateway's credential: its next call to the broker is
    /// refused, and it fails closed once its view goes stale.
    pub async fn revoke_gateway(&self, name: &str, actor: &str) -> Result<(), Error> {
        let event = AuditEvent::new(AuditKind::GatewayRegister, Outcome::Success, actor)
            .reason("gateway credential revoked")
            .detail(serde_json::json!({ "gateway": name, "revoked": true }));
        self.store
            .revoke_gateway(name, self.now(), vec![event])
            .await?;
        Ok(())
    }

    /// Stores a tool's upstream secret sealed under the master key. The
    /// answer, the audit record and the logs name the header only.
    pub async fn set_tool_secret(
        &self,
        tool: &ToolName,
        req: SetToolSecret,
        actor: &str,
    ) -> Result<ToolSecretSet, Error> {
        let tool_record = self
            .store
            .get_tool(tool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tool {tool} not found")))?;
        if let Some(Upstream::Postgres { .. }) = tool_record.upstream {
            return self.set_postgres_admin(tool, req, actor).await;
        }
        let stdio = matches!(tool_record.upstream, Some(Upstream::McpStdio { .. }));
        let header = if stdio {
            // A stdio MCP server gets its secret in one environment
            // variable, named as given (names there are case-sensitive).
            let name = req.header.trim().to_owned();
            if !env_name_ok(&name) {
                return Err(Error::Invalid(format!(
                    "tool {tool} runs a stdio MCP server: its secret goes in an environment variable, \
                     and {:?} cannot be one (letters, digits and _, not starting with a digit; \
                     not PATH, HOME, LANG, LC_ALL, TZ, TMPDIR, nor LD_* or DYLD_*)",
                    req.header
                )));
            }
            name
        } else {
            req.header.trim().to_ascii_lowercase()
        };
        if !stdio
            && (reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err()
                || RESERVED_HEADERS.contains(&header.as_str())
                || header.starts_with("x-forwarded-"))
        {
            return Err(Error::Invalid(format!(
                "header {:?} cannot carry an upstream secret (a valid header name, not one the gateway sets itself)",
                req.header
            )));
        }
        if req.value.is_empty()
            || req.value.len() > MAX_SECRET_LEN
            || reqwest::header::HeaderValue::from_str(&req.value).is_err()
        {
            return Err(Error::Invalid(format!(
                "the secret must be a valid header value of 1 to {MAX_SECRET_LEN} bytes"
            )));
        }
        let sealed = self
            .master()
            .seal(&secret_purpose(tool), req.value.as_bytes())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let now = self.now();
        let event = AuditEvent::new(AuditKind::ToolSecretSet, Outcome::Success, actor)
            .detail(serde_json::json!({ "tool": tool, "header": header }));
        self.store
            .set_tool_secret(tool, &header, sealed, now, vec![event])
            .await?;
        Ok(ToolSecretSet {
            tool: tool.clone(),
            header,
            updated_at: now,
        })
    }

    /// A postgres tool's admin connection: sealed like a header secret, but
    /// with no header, and never handed to a gateway.
    async fn set_postgres_admin(
        &self,
        tool: &ToolName,
        req: SetToolSecret,
        actor: &str,
    ) -> Result<ToolSecretSet, Error> {
        if !req.header.is_empty() {
            return Err(Error::Invalid(format!(
                "tool {tool} is a postgres tool: its secret is the admin connection URL, without a header"
            )));
        }
        super::dbcreds::check_admin_url(&req.value)?;
        let sealed = self
            .master()
            .seal(&super::dbcreds::admin_purpose(tool), req.value.as_bytes())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let now = self.now();
        let event = AuditEvent::new(AuditKind::ToolSecretSet, Outcome::Success, actor)
            .detail(serde_json::json!({ "tool": tool, "postgres_admin": true }));
        self.store
            .set_tool_secret(tool, "", sealed, now, vec![event])
            .await?;
        Ok(ToolSecretSet {
            tool: tool.clone(),
            header: String::new(),
            updated_at: now,
        })
    }

    /// The secrets of the tools `gateway` serves, opened: for that gateway
    /// only. As Vault scopes a token to the paths its policy names, a
    /// gateway credential reads the secrets of the tools bound to it and
    /// no others, so one stolen credential is not every upstream's.
    pub async fn gateway_secrets(&self, gateway: &str) -> Result<Vec<GatewaySecret>, Error> {
        let served: std::collections::HashSet<ToolName> = self
            .store
            .list_tools()
            .await?
            .into_iter()
            .filter(|t| t.served_by(gateway))
            .map(|t| t.name)
            .collect();
        let mut out = Vec::new();
        for s in self.store.tool_secrets().await? {
            // A postgres tool's admin connection (no header) stays here.
            if s.header.is_empty() || !served.contains(&s.tool) {
                continue;
            }
            // One secret that cannot be opened withholds that tool's only
            // (its gateways then refuse to forward), not every tool's.
            let Ok(value) = self.master().open(&secret_purpose(&s.tool), &s.sealed) else {
                tracing::error!(tool = %s.tool, "a tool secret cannot be opened with the master key");
                continue;
            };
            let Ok(value) = String::from_utf8(value.to_vec()) else {
                tracing::error!(tool = %s.tool, "a tool secret is not text");
                continue;
            };
            out.push(GatewaySecret {
                tool: s.tool,
                header: s.header,
                value,
            });
        }
        Ok(out)
    }

    /// The live policy set, the tools and the agents, for `gateway`.
    pub async fn gateway_bundle(&self, gateway: &str) -> Result<GatewayBundle, Error> {
        let policy = self.policies.live();
        Ok(GatewayBundle {
            issuer: self.issuer.clone(),
            policy_version: policy.version().to_owned(),
            files: policy
                .sources()
                .iter()
                .map(|s| (s.name.clone(), s.text.clone()))
                .collect(),
            tools: self.store.list_tools().await?,
            agents: self.store.list_agents().await?,
            behaviour_at: Some(self.now()),
            behaviour: self.subjects.behaviour_counts().await?,
            held_for_approval: self
                .store
                .approval_holds(self.now())
                .await?
                .into_iter()
                .collect(),
            gateway: Some(gateway.to_owned()),
        })
    }

    /// A gateway holds a call whose permit asks for approval: where it
    /// stands, opening an approval when none applies. The gateway decided
    /// with the live set; the broker decides again from its store, so a
    /// gateway credential cannot open approvals for calls policy would
    /// refuse or let through anyway.
    pub async fn gateway_hold_call(&self, gateway: &str, req: HoldCall) -> Result<CallHeld, Error> {
        // Only for a tool the gateway serves: no other call reaches it.
        let served = self
            .store
            .get_tool(&req.call.tool)
            .await?
            .is_some_and(|t| t.served_by(gateway));
        if !served {
            return Err(Error::Forbidden(format!(
                "gateway {gateway} does not serve tool {}",
                req.call.tool
            )));
        }
        let task = self
            .store
            .get_task(&req.task)
            .await?
            .ok_or_else(|| Error::NotFound(format!("task {} not found", req.task)))?;
        let decision = self
            .approvals
            .call_decision(&task, req.scopes, &req.call)
            .await?;
        let actor = format!("gateway:{gateway}");
        let out = match decision.verdict() {
            writ_policy::Verdict::NeedsApproval => {
                self.approvals
                    .resolve_call_approval(
                        &task,
                        req.call,
                        &decision,
                        &actor,
                        super::Asked::Enforcing,
                    )
                    .await?
            }
            writ_policy::Verdict::Allow | writ_policy::Verdict::Deny => {
                return Err(Error::Conflict(format!(
                    "this call needs no approval now ({}); decide it again",
                    decision.reason()
                )));
            }
        };
        Ok(match out {
            super::CallApproval::Approved(id) => CallHeld {
                approval_id: id,
                status: ApprovalStatus::Approved,
            },
            super::CallApproval::Held(a) => CallHeld {
                approval_id: a.approval_id,
                status: a.status,
            },
        })
    }

    /// Records a gateway's decisions (and the tokens it refused for how
    /// they were presented), exactly once each, in its order.
    ///
    /// A record is taken as the gateway's word on what it decided, but only
    /// about a request it could have seen: the token it names (`jti`) is a
    /// tool token writ issued, for a tool this gateway serves (the record's
    /// `tool`), and the record names that token's own agent, instance, task
    /// and human. Anything else is not recorded as a decision: in its place
    /// goes a `failure` record saying what the gateway claimed, which names
    /// no agent, so it counts against no one. Either way the gateway's
    /// numbering moves on, and every record is stamped with the gateway's
    /// name.
    pub async fn gateway_decisions(
        &self,
        gateway: &str,
        batch: GatewayDecisions,
    ) -> Result<GatewayDecisionsAck, Error> {
        if batch.first_seq == 0 {
            return Err(Error::Invalid("decisions are numbered from 1".into()));
        }
        if batch.decisions.len() > MAX_DECISIONS {
            return Err(Error::Invalid(format!(
                "at most {MAX_DECISIONS} decisions per delivery"
            )));
        }
        let actor = format!("gateway:{gateway}");
        let mut known = Vouching::new(
            self.store
                .list_tools()
                .await?
                .into_iter()
                .filter(|t| t.served_by(gateway))
                .map(|t| (t.name.to_string(), t.audience))
                .collect(),
        );
        let mut events = Vec::with_capacity(batch.decisions.len());
        for mut e in batch.decisions {
            // Its decisions, and the real tokens it refused for how they
            // were presented (a replayed proof, another key's): the
            // detection rules watch both.
            if !matches!(e.kind, AuditKind::ToolCall | AuditKind::TokenRefused) {
                return Err(Error::Invalid(
                    "a gateway records tool_call and token_refused records only".into(),
                ));
            }
            e.actor.clone_from(&actor);
            let e = match self.vouch(&mut known, &e).await? {
                Ok(()) => e,
                Err(why) => {
                    tracing::warn!(
                        gateway,
                        why,
                        "a gateway delivered a decision it could not have made"
                    );
                    unvouched(&actor, gateway, why, &e)
                }
            };
            events.push(e);
        }
        let acked = self
            .store
            .append_gateway_decisions(gateway, batch.first_seq, events, self.now())
            .await?;
        Ok(GatewayDecisionsAck { acked })
    }

    /// Whether a delivered decision is about a request its gateway could
    /// have seen (`Err` says why not).
    async fn vouch(
        &self,
        known: &mut Vouching,
        e: &AuditEvent,
    ) -> Result<Result<(), &'static str>, Error> {
        let Some(jti) = e.jti.as_deref() else {
            return Ok(Err("it names no token"));
        };
        let Some(tool) = e.detail.get("tool").and_then(serde_json::Value::as_str) else {
            return Ok(Err("it names no tool"));
        };
        let Some(audience) = known.served.get(tool) else {
            return Ok(Err("it names a tool this gateway does not serve"));
        };
        if !known.grants.contains_key(jti) {
            let g = self.store.grant_state(jti).await?.map(|s| s.grant);
            known.grants.insert(jti.to_owned(), g);
        }
        let Some(Some(grant)) = known.grants.get(jti) else {
            return Ok(Err(
                "it names a token writ did not issue (or forgot, five minutes after it expired)",
            ));
        };
        if grant.kind != writ_store::GrantKind::ToolToken
            || grant.audience.as_deref() != Some(audience.as_str())
        {
            return Ok(Err("its token is not a tool token for its tool"));
        }
        let Some(task_id) = &grant.task_id else {
            return Ok(Err("its token belongs to no task"));
        };
        let same = e.agent.as_deref() == Some(grant.agent.as_str())
            && e.instance.as_deref() == Some(grant.instance_id.as_str())
            && e.task.as_deref() == Some(task_id.as_str());
        if !same {
            return Ok(Err(
                "it names another agent, instance or task than its token's",
            ));
        }
        // A decision is made while its token is valid (with the leeway a
        // gateway verifies with, on either side).
        let leeway = 2 * writ_core::token::LEEWAY_SECS;
        let decided = e
            .detail
            .get("decided_at")
            .and_then(serde_json::Value::as_i64)
            .map(writ_core::Timestamp::from_millis);
        if decided.is_some_and(|d| {
            d < grant.issued_at.add_secs(-leeway) || d > grant.expires_at.add_secs(leeway)
        }) {
            return Ok(Err("it was decided when its token was not valid"));
        }
        if !known.tasks.contains_key(task_id.as_str()) {
            let obo = self.store.get_task(task_id).await?.map(|t| t.on_behalf_of);
            known.tasks.insert(task_id.to_string(), obo);
        }
        match known.tasks.get(task_id.as_str()) {
            Some(Some(obo)) if *obo == e.on_behalf_of => Ok(Ok(())),
            Some(Some(_)) => Ok(Err("it names another human than its task acts for")),
            _ => Ok(Err("its task is unknown")),
        }
    }
}

/// What one delivery's records are checked against, looked up once each.
struct Vouching {
    /// The tools the gateway serves: name → audience.
    served: std::collections::HashMap<String, String>,
    grants: std::collections::HashMap<String, Option<writ_store::Grant>>,
    /// Task → the human it acts for (`None`: no such task).
    tasks: std::collections::HashMap<String, Option<Option<String>>>,
}

impl Vouching {
    fn new(served: std::collections::HashMap<String, String>) -> Self {
        Self {
            served,
            grants: std::collections::HashMap::new(),
            tasks: std::collections::HashMap::new(),
        }
    }
}

/// The record kept instead of a decision the gateway could not have made:
/// what it claimed, in `detail`, and no agent, task or human of its own.
fn unvouched(actor: &str, gateway: &str, why: &str, e: &AuditEvent) -> AuditEvent {
    // What the gateway chose is capped, so the record stays small.
    let cap = |s: &Option<String>| {
        s.as_deref()
            .map(|v| v.chars().take(256).collect::<String>())
    };
    AuditEvent::new(AuditKind::ToolCall, Outcome::Failure, actor)
        .reason(format!(
            "gateway {gateway} delivered a decision it could not have made: {why}; not recorded as one"
        ))
        .detail(serde_json::json!({
            "unvouched": true,
            "claimed": {
                "kind": e.kind,
                "outcome": e.outcome,
                "agent": cap(&e.agent),
                "instance": cap(&e.instance),
                "task": cap(&e.task),
                "on_behalf_of": cap(&e.on_behalf_of),
                "jti": cap(&e.jti),
                "tool": cap(&e.detail.get("tool").and_then(serde_json::Value::as_str).map(str::to_owned)),
            },
        }))
}

/// Checks a tool's gateway at registration: a gateway name, for a tool a
/// gateway serves. The embedded gateway is the default, so it is not
/// recorded by name. The gateway need not be registered yet: the binding
/// names who will serve the tool once it is.
pub(crate) fn check_binding(
    gateway: Option<String>,
    upstream: Option<&Upstream>,
) -> Result<Option<String>, Error> {
    let Some(g) = gateway.filter(|g| g != EMBEDDED_GATEWAY) else {
        return Ok(None);
    };
    if !valid_gateway_name(&g) {
        return Err(Error::Invalid(
            "gateway name must be 1-64 characters of [A-Za-z0-9._-]".into(),
        ));
    }
    if !upstream.is_some_and(Upstream::is_gateway) {
        return Err(Error::Invalid(
            "only a tool with an HTTP or MCP upstream is served by a gateway".into(),
        ));
    }
    Ok(Some(g))
}

pub(crate) fn secret_purpose(tool: &ToolName) -> String {
    format!("writ tool secret {tool}")
}

/// Checks a tool's upstream at registration.
pub(crate) fn check_upstream(u: &Upstream) -> Result<(), Error> {
    let origins = u.origins();
    if origins.len() > 32 || origins.iter().any(|o| !writ_core::api::valid_origin(o)) {
        return Err(Error::Invalid(
            "origins must be at most 32 lower-case http(s)://host[:port] origins".into(),
        ));
    }
    match u {
        Upstream::Http { url, .. } | Upstream::Mcp { url, .. } => {
            let ok = url::Url::parse(url).is_ok_and(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.host_str().is_some()
                    && p.query().is_none()
                    && p.fragment().is_none()
                    && p.username().is_empty()
                    && p.password().is_none()
            });
            if !ok || url.len() > 2048 {
                return Err(Error::Invalid(format!(
                    "upstream url {url:?} must be an http(s) URL without credentials, query or fragment"
                )));
            }
        }
        Upstream::Postgres { grants } => super::dbcreds::check_grants(grants)?,
        Upstream::McpStdio { command, .. } => {
            if command.is_empty()
                || command.len() > 64
                || command.iter().any(|a| a.is_empty() || a.len() > 4096)
                || command.first().is_some_and(|p| p.contains('\0'))
            {
                return Err(Error::Invalid(
                    "an mcp-stdio upstream needs a command: 1 to 64 non-empty arguments".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `name` may carry a stdio MCP server's secret: an environment
/// variable name (`[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes) that is none
/// the gateway sets itself and none that changes how programs are loaded.
fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"].contains(&name)
        && !name.starts_with("LD_")
        && !name.starts_with("DYLD_")
}

#[cfg(test)]
mod env_name_tests {
    use super::env_name_ok;

    #[test]
    fn a_stdio_secret_goes_only_in_a_plain_environment_variable() {
        for ok in ["GITHUB_TOKEN", "_KEY", "notes_api_key2"] {
            assert!(env_name_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "2KEY",
            "A-B",
            "A B",
            "PATH",
            "HOME",
            "LD_PRELOAD",
            "DYLD_INSERT_LIBRARIES",
            "K=V",
        ] {
            assert!(!env_name_ok(bad), "{bad}");
        }
        assert!(!env_name_ok(&"K".repeat(129)));
    }
}
