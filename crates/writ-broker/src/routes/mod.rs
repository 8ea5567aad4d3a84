//! The HTTP surface: paths, extractors, and nothing else.

mod admin;
mod agent;
mod clients;
mod gateway;
mod nodes;
mod oauth;
mod sinks;
pub(crate) mod sso;
mod wellknown;

use std::marker::PhantomData;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{get, post};
use writ_core::api::Duty;
use writ_core::token::TokenKind;

use crate::error::ApiError;
use crate::extract::{MAX_BODY_BYTES, bearer, presented};
use crate::service::gateway::EnforcementPoint;
use crate::service::{self, AgentCaller, Broker, Caller, Operator};

/// The body limit of a decision batch from a gateway.
const DECISIONS_BODY_BYTES: usize = 8 * 1024 * 1024;

pub fn router(broker: Arc<Broker>) -> Router {
    // Browsers sign in with single sign-on for the console: with it off,
    // those routes are not there either.
    let console = if broker.config.console {
        crate::console::router().merge(
            Router::new()
                .route("/ui/api/sso", get(sso::options))
                .route(service::BROWSER_SIGN_IN_START, get(sso::start))
                .route(service::BROWSER_SIGN_IN_CALLBACK, get(sso::callback))
                .layer(axum::middleware::from_fn(crate::console::security_headers)),
        )
    } else {
        crate::console::router_off()
    };
    Router::new()
        .merge(console)
        .route("/healthz", get(wellknown::healthz))
        .route("/metrics", get(wellknown::metrics))
        .route("/v1/admin/whoami", get(wellknown::whoami))
        .route(
            "/.well-known/oauth-authorization-server",
            get(wellknown::metadata),
        )
        .route("/.well-known/jwks.json", get(wellknown::jwks))
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route(
            "/v1/agents",
            post(admin::register_agent).get(admin::list_agents),
        )
        .route(
            "/v1/agents/{name}",
            get(admin::get_agent)
                .patch(admin::update_agent)
                .delete(admin::delete_agent),
        )
        .route("/v1/agents/{name}/join-tokens", post(admin::join_token))
        .route(
            "/v1/admin/tokens",
            get(admin::admin_tokens).post(admin::create_admin_token),
        )
        .route(
            "/v1/admin/tokens/{name}",
            axum::routing::delete(admin::revoke_admin_token),
        )
        .route(
            "/v1/admin/tokens/{name}/rotate",
            post(admin::rotate_admin_token),
        )
        .route("/v1/agents/{name}/quarantine", post(admin::quarantine))
        .route("/v1/agents/{name}/release", post(admin::release))
        .route(
            "/v1/tools",
            post(admin::register_tool).get(admin::list_tools),
        )
        .route(
            "/v1/tools/{name}",
            get(admin::get_tool)
                .patch(admin::update_tool)
                .delete(admin::delete_tool),
        )
        .route(
            "/v1/tools/{name}/secret",
            axum::routing::put(gateway::set_secret),
        )
        .route(
            "/v1/tools/{name}/gateway",
            axum::routing::put(admin::bind_tool),
        )
        .route("/v1/gateways", post(gateway::register))
        .route(
            "/v1/gateways/{name}",
            axum::routing::delete(gateway::revoke),
        )
        .route("/v1/clients", post(clients::register).get(clients::list))
        .route("/v1/clients/{id}", axum::routing::delete(clients::revoke))
        .route("/v1/gateway/txn-keys", post(clients::publish_txn_key))
        .route("/v1/gateway/bundle", get(gateway::bundle))
        .route("/v1/gateway/secrets", get(gateway::secrets))
        .route("/v1/gateway/approvals", post(gateway::hold_call))
        // Decision batches are larger than other bodies (up to 1,000 records).
        .route(
            "/v1/gateway/decisions",
            post(gateway::decisions).layer(DefaultBodyLimit::max(DECISIONS_BODY_BYTES)),
        )
        .route("/v1/nodes", post(nodes::register).get(nodes::list))
        .route("/v1/nodes/{name}", get(nodes::show))
        .route("/v1/nodes/{name}/join-tokens", post(nodes::join_token))
        .route("/v1/nodes/{name}/quarantine", post(nodes::quarantine))
        .route("/v1/nodes/{name}/release", post(nodes::release))
        .route("/v1/node/attest", post(nodes::attest))
        .route("/v1/node/entries", get(nodes::entries))
        .route("/v1/node/x509-svid", post(nodes::x509_svid))
        .route("/v1/node/jwt-svid", post(nodes::jwt_svid))
        .route("/v1/bundle", get(nodes::bundle))
        .route("/v1/keys/rotate", post(admin::rotate_keys))
        .route("/v1/keys/rotate-spiffe", post(admin::rotate_spiffe_keys))
        .route(
            "/v1/policies",
            get(admin::policies).put(admin::push_policies),
        )
        .route("/v1/policies/history", get(admin::policy_history))
        .route(
            "/v1/policies/shadow",
            axum::routing::put(admin::push_shadow).delete(admin::clear_shadow),
        )
        .merge(authzen_routes())
        .route(
            "/v1/entities",
            axum::routing::put(admin::push_entities)
                .layer(DefaultBodyLimit::max(ENTITIES_BODY_BYTES)),
        )
        .route("/v1/revocations", get(admin::revocations))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/sinks", get(sinks::list))
        .route("/v1/sinks/{name}/test", post(sinks::test))
        .route("/v1/reports/least-privilege", get(admin::least_privilege))
        .route("/v1/reports/evidence", get(admin::evidence))
        .route("/v1/audit/verify", get(admin::audit_verify))
        .route("/v1/audit/checkpoints", get(admin::audit_checkpoints))
        .route("/v1/audit/keys", get(admin::audit_keys))
        .route(
            "/v1/login/oidc",
            get(admin::sso_info).post(admin::sso_sign_in),
        )
        .route("/v1/attest", post(agent::attest))
        .route("/v1/tasks", post(agent::start_task).get(admin::list_tasks))
        .route("/v1/exceptions", get(admin::list_exceptions))
        .route("/v1/approvals", get(admin::approvals))
        .route("/v1/approvals/{id}/approve", post(admin::approve))
        .route("/v1/approvals/{id}/deny", post(admin::deny))
        .route("/v1/tasks/{id}", get(agent::show_task))
        .route("/v1/tasks/{id}/heartbeat", post(agent::heartbeat))
        .route("/v1/tasks/{id}/complete", post(agent::complete))
        .route(
            "/v1/tasks/{id}/credentials/{tool}",
            post(agent::db_credential),
        )
        .route("/v1/tasks/{id}/tree", get(agent::tree))
        .fallback(wellknown::not_found)
        .method_not_allowed_fallback(wellknown::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(
            crate::console::api_security_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            ("broker", "unmatched"),
            writ_listen::telemetry::track,
        ))
        .with_state(broker)
}

/// The body limit of entity data pushed with `PUT /v1/entities`.
const ENTITIES_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The AuthZEN endpoints (the ones discovery lists), each answering with
/// the `X-Request-ID` it was sent.
fn authzen_routes() -> Router<Arc<Broker>> {
    Router::new()
        .route(AUTHZEN_EVALUATION, post(admin::evaluation))
        .route(AUTHZEN_EVALUATIONS, post(admin::evaluations))
        .route(AUTHZEN_SEARCH_SUBJECT, post(admin::search_subject))
        .route(AUTHZEN_SEARCH_RESOURCE, post(admin::search_resource))
        .route(AUTHZEN_SEARCH_ACTION, post(admin::search_action))
        .route(
            "/.well-known/authzen-configuration",
            get(wellknown::authzen),
        )
        .layer(axum::middleware::from_fn(echo_request_id))
}

pub(crate) const AUTHZEN_EVALUATION: &str = "/access/v1/evaluation";
pub(crate) const AUTHZEN_EVALUATIONS: &str = "/access/v1/evaluations";
pub(crate) const AUTHZEN_SEARCH_SUBJECT: &str = "/access/v1/search/subject";
pub(crate) const AUTHZEN_SEARCH_RESOURCE: &str = "/access/v1/search/resource";
pub(crate) const AUTHZEN_SEARCH_ACTION: &str = "/access/v1/search/action";

/// AuthZEN §10: a response carries the request's `X-Request-ID`, whatever
/// its status.
async fn echo_request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let id = req.headers().get("x-request-id").cloned();
    let mut resp = next.run(req).await;
    if let Some(id) = id {
        resp.headers_mut().insert("x-request-id", id);
    }
    resp
}

/// An unauthenticated attestation request within its client's rate: the
/// client as `writ-listen` names it (the peer, or the address a
/// `--trusted-proxy` appended). Checked before the body is read. (Served
/// in-process, without the listener, there is no client and no limit.)
pub struct AttestAdmitted;

impl FromRequestParts<Arc<Broker>> for AttestAdmitted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let client = parts
            .extensions
            .get::<writ_listen::ClientAddr>()
            .map(|c| c.0);
        broker.attestations.admit_attestation(client)?;
        Ok(AttestAdmitted)
    }
}

/// An unauthenticated operator sign-in within its client's rate: its own
/// allowance, apart from the attestations' (a flood of one never locks
/// out the other).
pub struct SignInAdmitted;

impl FromRequestParts<Arc<Broker>> for SignInAdmitted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let client = parts
            .extensions
            .get::<writ_listen::ClientAddr>()
            .map(|c| c.0);
        broker.operators.admit_sign_in(client)?;
        Ok(SignInAdmitted)
    }
}

/// An operator credential whose role holds the duty `D` was presented:
/// any other credential gets 401, one of another role 403 naming the
/// role needed.
pub struct Op<D> {
    pub who: Operator,
    duty: PhantomData<D>,
}

impl<D> Op<D> {
    /// How the audit names this operator (`operator:NAME`).
    pub fn actor(&self) -> String {
        self.who.actor()
    }
}

/// A duty a route needs, as a type.
pub trait NeedsDuty {
    const DUTY: Duty;
}

macro_rules! duties {
    ($($marker:ident),*) => {$(
        /// Marker: the route needs [`Duty`]'s variant of the same name.
        pub struct $marker;
        impl NeedsDuty for $marker {
            const DUTY: Duty = Duty::$marker;
        }
    )*};
}
duties!(
    Administer,
    Operate,
    Approve,
    Audit,
    AuthorPolicy,
    ReadPolicy
);

impl<D: NeedsDuty> FromRequestParts<Arc<Broker>> for Op<D> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let secret = crate::console::operator_secret(parts, broker)?;
        let who = broker.require_operator(secret.as_deref()).await?;
        who.require(D::DUTY)?;
        Ok(Op {
            who,
            duty: PhantomData,
        })
    }
}

/// Who may decide the approval named in the path: an operator whose role
/// holds [`Duty::Approve`], or the person its task acts for when every
/// permit that held it says `@approval_by("on_behalf_of")`. Anyone else
/// gets the role check's 403, whether or not the approval exists.
pub struct Decider(pub Operator);

impl FromRequestParts<Arc<Broker>> for Decider {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let secret = crate::console::operator_secret(parts, broker)?;
        let who = broker.require_operator(secret.as_deref()).await?;
        let Err(refused) = who.require(Duty::Approve) else {
            return Ok(Decider(who));
        };
        let id = axum::extract::Path::<String>::from_request_parts(parts, broker)
            .await
            .ok()
            .and_then(|axum::extract::Path(id)| id.parse::<writ_core::ApprovalId>().ok());
        match id {
            Some(id) if broker.approvals.on_behalf_of_may_decide(&who, &id).await? => {
                Ok(Decider(who))
            }
            _ => Err(refused.into()),
        }
    }
}

/// The party a verified client certificate names (`named` reads it), for
/// a request that carries no bearer credential (`--tls-client-ca`).
pub(crate) fn certified(
    parts: &Parts,
    named: fn(&writ_listen::PeerCertificates) -> Option<String>,
) -> Option<String> {
    parts
        .extensions
        .get::<writ_listen::PeerCertificates>()
        .and_then(named)
}

/// A gateway credential was presented; the gateway's name.
pub struct GatewayAuth(pub String);

impl FromRequestParts<Arc<Broker>> for GatewayAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        // Without a bearer credential, a verified client certificate that
        // names a gateway stands in for it (`--tls-client-ca`).
        if token.is_none()
            && let Some(name) = certified(parts, crate::mtls::gateway_named)
        {
            return Ok(GatewayAuth(
                broker.gateways.require_gateway_named(&name).await?,
            ));
        }
        Ok(GatewayAuth(broker.gateways.require_gateway(token).await?))
    }
}

/// An enforcement point: a gateway credential (its name), or an operator
/// credential whose role holds [`Duty::Administer`] (the actor).
pub struct PointAuth {
    /// The gateway's name, when a gateway asks.
    pub gateway: Option<String>,
    /// How the audit names the asker (`gateway:NAME`, `operator:NAME`).
    pub actor: String,
}

impl FromRequestParts<Arc<Broker>> for PointAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        // Without a bearer credential, a verified client certificate that
        // names a gateway stands in for it (`--tls-client-ca`).
        if token.is_none()
            && let Some(name) = certified(parts, crate::mtls::gateway_named)
        {
            let g = broker.gateways.require_gateway_named(&name).await?;
            return Ok(PointAuth {
                actor: format!("gateway:{g}"),
                gateway: Some(g),
            });
        }
        match broker.require_operator_or_gateway(token).await? {
            EnforcementPoint::Gateway(g) => Ok(PointAuth {
                actor: format!("gateway:{g}"),
                gateway: Some(g),
            }),
            EnforcementPoint::Operator(op) => {
                op.require(Duty::Administer)?;
                Ok(PointAuth {
                    gateway: None,
                    actor: op.actor(),
                })
            }
        }
    }
}

/// An operator credential (its duty checked by the service) or a live
/// agent token.
pub struct AnyCaller(pub Caller);

impl FromRequestParts<Arc<Broker>> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let Some(p) = presented(&parts.headers)? else {
            // No Authorization: the console's cookie, if any, names an
            // operator (the CSRF rule holds).
            let secret = crate::console::operator_secret(parts, broker)?;
            return Ok(AnyCaller(Caller::Operator(
                broker.require_operator(secret.as_deref()).await?,
            )));
        };
        Ok(AnyCaller(
            broker
                .caller(&p, parts.method.as_str(), parts.uri.path())
                .await?,
        ))
    }
}

/// A live instance or task token.
pub struct AgentAuth(pub AgentCaller);

impl FromRequestParts<Arc<Broker>> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let p = presented(&parts.headers)?
            .ok_or_else(|| ApiError::Unauthorized("missing credential".into()))?;
        Ok(AgentAuth(
            broker
                .tokens
                .authenticate(&p, parts.method.as_str(), parts.uri.path(), TokenKind::Any)
                .await?,
        ))
    }
}
