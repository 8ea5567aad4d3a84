//! The writ gateway: an enforcement point in front of tools.
//!
//! Every request names a tool by its first path segment (`/{tool}/...`).
//! The gateway verifies the tool token locally (JWKS, audience, lifetime,
//! DPoP binding with a replay cache, the revocation set it follows from the
//! broker), decides with Cedar over the live policy bundle and the request's
//! facts, records the decision for the broker's audit chain, and forwards:
//! plain HTTP with the tool's upstream secret injected and the agent's own
//! credentials stripped, or MCP with `tools/call` decided per call and
//! `tools/list` filtered to what the task may use.
//!
//! It fails closed: with no bundle yet, or a revocation view older than the
//! staleness bound, it refuses everything.

mod auth;
mod error;
mod mcp;
mod proxy;
mod spool;
mod state;
mod stdio;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use writ_core::api::{ApprovalStatus, CallHeld, HoldCall, Upstream};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::{ApprovalId, Clock, Scope, Timestamp};
use writ_policy::{Behaviour, CallRequest, Chain, Decision, Facts, TaskView, Verdict};

pub use auth::{Caller, caller_of};
pub use error::GatewayError;
pub use state::{Bundle, View};

/// Longest request text (path, MCP method or tool name) kept in a record.
const MAX_RECORDED: usize = 512;

/// How a gateway is run.
#[derive(Clone)]
pub struct Config {
    /// The broker's base URL.
    pub broker: String,
    /// The gateway credential (`POST /v1/gateways`).
    pub token: String,
    /// The base URL agents address the gateway by (DPoP `htu`, metadata).
    pub public_url: String,
    /// Past this age of its revocation view, the gateway refuses everything.
    pub staleness: Duration,
    /// How often the bundle (policies, tools, agents, secrets) is refreshed.
    pub refresh: Duration,
    /// Where undelivered decisions are kept across restarts.
    pub spool_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("broker", &self.broker)
            .field("token", &"<redacted>")
            .field("public_url", &self.public_url)
            .field("staleness", &self.staleness)
            .field("refresh", &self.refresh)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

impl Config {
    pub fn new(broker: String, token: String, public_url: String) -> Self {
        Self {
            broker,
            token,
            public_url,
            staleness: Duration::from_secs(5),
            refresh: Duration::from_secs(1),
            spool_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("gateway HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("decision spool: {0}")]
    Spool(#[from] std::io::Error),
}

/// A running gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    pub view: Arc<View>,
    replay: auth::Replay,
    verified: auth::Verified,
    spool: Arc<spool::Spool>,
    upstream: reqwest::Client,
    sessions: stdio::Sessions,
    mcp_owners: mcp::SessionOwners,
}

impl Gateway {
    /// Builds the gateway and starts following the broker (bundle, JWKS,
    /// revocations, decision delivery) in the background.
    pub fn start(cfg: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StartError> {
        let spool = Arc::new(spool::Spool::open(cfg.spool_dir.clone())?);
        let view = Arc::new(View::new(cfg, clock)?);
        let upstream = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()?;
        let gw = Arc::new(Self {
            view: Arc::clone(&view),
            replay: auth::Replay::default(),
            verified: auth::Verified::default(),
            spool: Arc::clone(&spool),
            upstream,
            sessions: stdio::Sessions::default(),
            mcp_owners: mcp::SessionOwners::default(),
        });
        let v = Arc::clone(&view);
        tokio::spawn(async move {
            // The first bundle and JWKS as soon as the broker answers.
            let mut backoff = Duration::from_millis(50);
            loop {
                let b = v.refresh_bundle().await;
                let j = v.refresh_jwks().await;
                match (b, j) {
                    (Ok(()), Ok(())) => break,
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "gateway cannot load its bundle yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            tracing::info!("gateway bundle loaded");
            v.follow_bundle().await;
        });
        tokio::spawn(Arc::clone(&view).follow_revocations());
        tokio::spawn(spool.run(Arc::clone(&view)));
        let sweeper = Arc::clone(&gw);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                sweeper.sessions.sweep().await;
            }
        });
        Ok(gw)
    }

    /// Whether the gateway can decide now (bundle loaded, revocations fresh).
    pub fn ready(&self) -> bool {
        self.view.bundle().is_some() && self.view.fresh()
    }

    /// Undelivered decisions.
    pub fn pending_decisions(&self) -> usize {
        self.spool.pending()
    }

    /// Decides one request of `caller` on `tool`, holds it for approval
    /// when policy says so (asking the broker where the approval stands),
    /// records the outcome, and returns it.
    pub(crate) async fn enforce(
        &self,
        bundle: &state::Bundle,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        request: CallRequest<'_>,
    ) -> Enforced {
        let decision = self.evaluate(bundle, caller, tool, request.clone());
        let out = match decision.verdict() {
            Verdict::Allow => Enforced::Pass(decision),
            Verdict::Deny => Enforced::Refused(decision),
            Verdict::NeedsApproval => match self.hold(caller, tool, &request).await {
                Ok(CallHeld {
                    approval_id,
                    status: ApprovalStatus::Approved,
                }) => Enforced::Approved(decision, approval_id),
                Ok(CallHeld {
                    approval_id,
                    status,
                }) => Enforced::Held(decision, approval_id, status),
                Err(e) => Enforced::Refused(Decision::refused(
                    decision.policy_version(),
                    format!(
                        "{}; the approval cannot be looked up now ({e}), so the call is refused",
                        decision.reason()
                    ),
                )),
            },
        };
        self.record(caller, tool, &request, &out);
        out
    }

    /// Asks the broker where the approval of a held call stands.
    async fn hold(
        &self,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        r: &CallRequest<'_>,
    ) -> Result<CallHeld, String> {
        let task = caller
            .claims
            .task
            .as_deref()
            .ok_or("the token names no task")?
            .parse()
            .map_err(|_| "the token's task id is malformed".to_owned())?;
        let req = HoldCall {
            task,
            scopes: caller
                .scopes
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            call: r.to_approval(&tool.name, &caller.agent.name),
        };
        self.view.post("/v1/gateway/approvals", &req).await
    }

    /// Records a refusal made before policy (an MCP tool outside the scopes).
    pub(crate) fn record_refusal(
        &self,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        request: &CallRequest<'_>,
        decision: Decision,
    ) -> Enforced {
        let out = Enforced::Refused(decision);
        self.record(caller, tool, request, &out);
        out
    }

    /// Decides without recording or holding (filtering `tools/list`).
    pub(crate) fn evaluate(
        &self,
        bundle: &state::Bundle,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        request: CallRequest<'_>,
    ) -> Decision {
        decide_call(bundle, caller, tool, request, self.view.now())
    }

    fn record(
        &self,
        caller: &auth::Caller,
        tool: &writ_core::api::Tool,
        request: &CallRequest<'_>,
        out: &Enforced,
    ) {
        let (decision, outcome, approval) = match out {
            Enforced::Pass(d) => (d, Outcome::Success, None),
            Enforced::Approved(d, id) => {
                (d, Outcome::Success, Some((id, ApprovalStatus::Approved)))
            }
            Enforced::Refused(d) => (d, Outcome::Deny, None),
            Enforced::Held(d, id, status) => (d, Outcome::Deny, Some((id, *status))),
        };
        let chain: Vec<&str> = caller
            .chain
            .iter()
            .map(|a| a.name.as_str())
            .chain(std::iter::once(caller.agent.name.as_str()))
            .collect();
        // What the agent chose (path, tool name) is capped: a record stays
        // small whatever the request was.
        let cap = |s: &str| -> String {
            if s.len() <= MAX_RECORDED {
                return s.to_owned();
            }
            let mut end = MAX_RECORDED;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", s.get(..end).unwrap_or_default())
        };
        let mut event = AuditEvent::new(AuditKind::ToolCall, outcome, "gateway")
            .agent(&caller.agent.name)
            .instance(&caller.claims.client_id)
            .jti(&caller.claims.jti)
            .on_behalf_of(caller.claims.obo.as_ref())
            .policy(
                decision.policy_version(),
                decision.determining_policies().to_vec(),
            )
            .reason(out.reason())
            .detail(serde_json::json!({
                "tool": tool.name,
                "method": cap(request.method),
                "path": cap(request.path),
                "mcp_method": request.mcp_method.map(cap),
                "mcp_tool": request.mcp_tool.map(cap),
                "chain": chain,
                "verdict": decision.verdict().as_str(),
                // Held for a person: refused for now, but not counted as
                // misbehaviour (the broker skips these when counting).
                "held": matches!(out, Enforced::Held(..)),
                "approval_id": approval.as_ref().map(|(id, _)| id),
                "approval_status": approval.map(|(_, s)| s),
            }));
        if let Some(t) = &caller.claims.task {
            event = event.task(t);
        }
        self.spool.push(event);
    }
}

/// What the gateway does with one request.
#[derive(Debug, Clone)]
pub(crate) enum Enforced {
    /// Policy allows it.
    Pass(Decision),
    /// Policy holds it for approval, and a person approved it.
    Approved(Decision, ApprovalId),
    /// Refused.
    Refused(Decision),
    /// Held for a person: the approval is pending, or was denied or expired.
    Held(Decision, ApprovalId, ApprovalStatus),
}

impl Enforced {
    pub(crate) fn passes(&self) -> bool {
        match self {
            Enforced::Pass(_) | Enforced::Approved(..) => true,
            Enforced::Refused(_) | Enforced::Held(..) => false,
        }
    }

    pub(crate) fn reason(&self) -> String {
        match self {
            Enforced::Pass(d) | Enforced::Refused(d) => d.reason(),
            Enforced::Approved(d, id) => format!("approved ({id}); {}", d.reason()),
            Enforced::Held(d, id, ApprovalStatus::Denied) => {
                format!("approval {id} was denied; {}", d.reason())
            }
            Enforced::Held(d, id, ApprovalStatus::Expired) => {
                format!("approval {id} expired undecided; {}", d.reason())
            }
            Enforced::Held(d, id, ApprovalStatus::Pending | ApprovalStatus::Approved) => {
                format!("held for approval {id}: {}", d.reason())
            }
        }
    }

    /// The refusal to answer with (`None` when the request passes).
    pub(crate) fn refusal(&self) -> Option<GatewayError> {
        match self {
            Enforced::Pass(_) | Enforced::Approved(..) => None,
            Enforced::Refused(d) => Some(GatewayError::Forbidden {
                reason: self.reason(),
                policy_version: Some(d.policy_version().to_owned()),
                determining_policies: d.determining_policies().to_vec(),
                approval_id: None,
            }),
            Enforced::Held(d, id, _) => Some(GatewayError::Forbidden {
                reason: self.reason(),
                policy_version: Some(d.policy_version().to_owned()),
                determining_policies: d.determining_policies().to_vec(),
                approval_id: Some(id.clone()),
            }),
        }
    }
}

/// The gateway's decision about one request: the caller's tool token and
/// the bundle's policy set, agents and behaviour counts, through the same
/// fact constructor the broker uses for `CallTool`.
pub fn decide_call(
    bundle: &state::Bundle,
    caller: &auth::Caller,
    tool: &writ_core::api::Tool,
    request: CallRequest<'_>,
    now: Timestamp,
) -> Decision {
    let version = bundle.policy.version();
    let task = match TaskView::of_token(&caller.claims) {
        Ok(t) => t,
        Err(e) => {
            return Decision::refused(
                version,
                format!("{e}: exchange the task token for a new tool token"),
            );
        }
    };
    let scopes: std::collections::BTreeSet<Scope> = caller
        .scopes
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let behaviour = Behaviour {
        denials_5m: bundle
            .behaviour
            .get(&caller.agent.name)
            .copied()
            .unwrap_or(0),
    };
    let facts = Facts::call_tool(
        Chain::new(&caller.agent, caller.chain.iter()),
        &task,
        scopes,
        tool,
        request,
        behaviour,
        now,
    );
    bundle.policy.decide(&facts)
}

/// The gateway's HTTP surface.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata_root),
        )
        .route(
            "/.well-known/oauth-protected-resource/{tool}",
            get(resource_metadata),
        )
        .route("/healthz", get(healthz))
        .fallback(dispatch)
        .with_state(gw)
}

/// Serves the gateway on `listener` until the future is dropped.
pub async fn serve(gw: Arc<Gateway>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // A proxy relays small writes both ways: never hold them back (Nagle).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router(gw).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

pub(crate) fn metadata_url(public_url: &str, tool: &str) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource/{tool}",
        public_url.trim_end_matches('/')
    )
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> Response {
    let body = serde_json::json!({
        "ready": gw.ready(),
        "bundle": gw.view.bundle().is_some(),
        "revocations_fresh": gw.view.fresh(),
        "pending_decisions": gw.pending_decisions(),
    });
    let status = if gw.ready() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// RFC 9728 metadata for the gateway as a whole.
async fn resource_metadata_root(State(gw): State<Arc<Gateway>>) -> Response {
    let Some(b) = gw.view.bundle() else {
        return GatewayError::Unavailable("gateway has no bundle yet".into()).into_response();
    };
    axum::Json(serde_json::json!({
        "resource": gw.view.cfg.public_url.trim_end_matches('/'),
        "authorization_servers": [b.issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
        "resource_name": "writ gateway",
    }))
    .into_response()
}

/// RFC 9728 metadata for one tool behind the gateway.
async fn resource_metadata(State(gw): State<Arc<Gateway>>, Path(tool): Path<String>) -> Response {
    let Some(b) = gw.view.bundle() else {
        return GatewayError::Unavailable("gateway has no bundle yet".into()).into_response();
    };
    let Some(t) = b.tools.get(&tool).filter(|t| t.upstream.is_some()) else {
        return GatewayError::NotFound(format!("no tool {tool} behind this gateway"))
            .into_response();
    };
    axum::Json(serde_json::json!({
        "resource": format!("{}/{}", gw.view.cfg.public_url.trim_end_matches('/'), t.name),
        "authorization_servers": [b.issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
        "scopes_supported": t.scopes,
        "resource_name": t.name,
    }))
    .into_response()
}

/// Routes `/{tool}/...` to the tool's kind of proxy.
async fn dispatch(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    match route(gw, peer, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(gw: Arc<Gateway>, peer: SocketAddr, req: Request) -> Result<Response, GatewayError> {
    let path = req.uri().path().to_owned();
    let trimmed = path.strip_prefix('/').unwrap_or(&path);
    let (tool_name, rest) = match trimmed.split_once('/') {
        Some((t, r)) => (t.to_owned(), format!("/{r}")),
        None => (trimmed.to_owned(), String::new()),
    };
    check_path(&rest)?;
    let bundle = gw
        .view
        .bundle()
        .ok_or_else(|| GatewayError::Unavailable("gateway has no policy bundle yet".into()))?;
    let tool = bundle
        .tools
        .get(&tool_name)
        .filter(|t| t.upstream.as_ref().is_some_and(Upstream::is_gateway))
        .cloned()
        .ok_or_else(|| {
            GatewayError::NotFound(format!("no tool {tool_name:?} behind this gateway"))
        })?;
    if !gw.view.fresh() {
        return Err(GatewayError::Unavailable(
            "the gateway's revocation view is stale; refusing until it catches up".into(),
        ));
    }
    let caller = auth::authenticate(
        &gw.view,
        &gw.replay,
        &gw.verified,
        &bundle,
        &tool,
        req.method(),
        &path,
        req.headers(),
    )
    .await?;
    match &tool.upstream {
        Some(Upstream::Http { url, .. }) => {
            proxy::forward(&gw, &bundle, &caller, &tool, url, &rest, peer, req).await
        }
        Some(u) => mcp::handle(&gw, &bundle, &caller, &tool, u, peer, req).await,
        None => Err(GatewayError::NotFound(format!(
            "no tool {tool_name:?} behind this gateway"
        ))),
    }
}

/// Refuses paths that would mean something else upstream than what policy
/// decided: dot segments (which an upstream URL resolves, escaping the
/// tool's base path) and encoded dots, slashes and backslashes.
fn check_path(rest: &str) -> Result<(), GatewayError> {
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        // `//` (an upstream may merge it) and percent-encoded unreserved
        // characters (an upstream may decode them) would let a request mean
        // another path than the one policy saw.
        if segment.is_empty() && i != last {
            return Err(GatewayError::BadRequest(
                "empty path segments are not allowed in tool paths".into(),
            ));
        }
        if encodes_unreserved(segment) {
            return Err(GatewayError::BadRequest(
                "percent-encoded letters, digits or -._~ are not allowed in tool paths".into(),
            ));
        }
        let lower = segment.to_ascii_lowercase();
        let decoded_dot = lower.replace("%2e", ".");
        if decoded_dot == "."
            || decoded_dot == ".."
            || lower.contains("%2f")
            || lower.contains("%5c")
            || segment.contains('\\')
        {
            return Err(GatewayError::BadRequest(
                "dot segments and encoded slashes are not allowed in tool paths".into(),
            ));
        }
    }
    Ok(())
}

fn encodes_unreserved(segment: &str) -> bool {
    let b = segment.as_bytes();
    b.windows(3).any(|w| {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            w,
            hex(w.get(1).copied().unwrap_or(0)),
            hex(w.get(2).copied().unwrap_or(0)),
        ) {
            ([b'%', _, _], Some(h), Some(l)) => {
                let c = (h * 16 + l) as u8;
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn paths_cannot_escape_the_tools_base() {
        for ok in [
            "",
            "/",
            "/customers/42",
            "/customers/",
            "/a.b/c..d",
            "/v1/x.json",
            "/a%20b",
            "/%2Bx",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "//admin",
            "/a//b",
            "/%61dmin",
            "/x%7E",
            "/..",
            "/a/../b",
            "/./a",
            "/%2e%2e/x",
            "/%2E./x",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
