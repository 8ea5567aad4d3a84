//! Admin endpoints (`/v1/agents`, `/v1/tools`, `/v1/keys`, `/v1/audit`).

use std::sync::Arc;

use axum::Json as AxumJson;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use writ_core::api::{
    AdminCredential, AdminCredentialIssued, Agent, AuditPage, AuditVerified, BindTool,
    CreateAdminCredential, CreateJoinToken, JoinTokenCreated, KeyRotated, Quarantined,
    RegisterAgent, RegisterTool, Removed, Tool, UpdateAgent, UpdateTool,
};
use writ_core::{AgentName, ToolName};

use super::{Administer, Approve, Audit, AuthorPolicy, Op, Operate, ReadPolicy};
use crate::error::ApiError;
use crate::extract::{AuthzenJson, Json};
use crate::service::{Broker, authzen};

type R<T> = Result<AxumJson<T>, ApiError>;

fn agent_name(s: &str) -> Result<AgentName, ApiError> {
    s.parse().map_err(|e| ApiError::BadRequest(format!("{e}")))
}

fn tool_name(s: &str) -> Result<ToolName, ApiError> {
    s.parse().map_err(|e| ApiError::BadRequest(format!("{e}")))
}

pub async fn register_agent(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Json(req): Json<RegisterAgent>,
) -> Result<(StatusCode, AxumJson<Agent>), ApiError> {
    Ok((
        StatusCode::CREATED,
        AxumJson(b.registry.register_agent(req, &op.actor()).await?),
    ))
}

pub async fn list_agents(State(b): State<Arc<Broker>>, _: Op<Operate>) -> R<Vec<Agent>> {
    Ok(AxumJson(b.registry.agents().await?))
}

pub async fn get_agent(
    State(b): State<Arc<Broker>>,
    _: Op<Operate>,
    Path(name): Path<String>,
) -> R<Agent> {
    Ok(AxumJson(b.registry.agent(&agent_name(&name)?).await?))
}

/// Changes an agent's attestation or attributes.
pub async fn update_agent(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
    Json(req): Json<UpdateAgent>,
) -> R<Agent> {
    Ok(AxumJson(
        b.registry
            .update_agent(&agent_name(&name)?, req, &op.actor())
            .await?,
    ))
}

/// Deletes an agent; its live tasks end and their tokens die.
pub async fn delete_agent(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
) -> R<Removed> {
    Ok(AxumJson(
        b.registry
            .delete_agent(&agent_name(&name)?, &op.actor())
            .await?,
    ))
}

/// Changes a tool's scopes, attributes or upstream.
pub async fn update_tool(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
    Json(req): Json<UpdateTool>,
) -> R<Tool> {
    Ok(AxumJson(
        b.registry
            .update_tool(&tool_name(&name)?, req, &op.actor())
            .await?,
    ))
}

/// Deletes a tool; the tasks that declared it end and their tokens die.
pub async fn delete_tool(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
) -> R<Removed> {
    Ok(AxumJson(
        b.registry
            .delete_tool(&tool_name(&name)?, &op.actor())
            .await?,
    ))
}

pub async fn join_token(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
    Json(req): Json<CreateJoinToken>,
) -> Result<(StatusCode, AxumJson<JoinTokenCreated>), ApiError> {
    let created = b
        .registry
        .create_join_token(&agent_name(&name)?, req, &op.actor())
        .await?;
    Ok((StatusCode::CREATED, AxumJson(created)))
}

pub async fn admin_tokens(
    State(b): State<Arc<Broker>>,
    _: Op<Administer>,
) -> R<Vec<AdminCredential>> {
    Ok(AxumJson(b.operators.admin_credentials().await?))
}

/// A new named operator credential; its secret is in this answer only.
pub async fn create_admin_token(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
    Json(req): Json<CreateAdminCredential>,
) -> Result<(StatusCode, AxumJson<AdminCredentialIssued>), ApiError> {
    let issued = b.operators.create_admin_credential(&op.who, req).await?;
    Ok((StatusCode::CREATED, AxumJson(issued)))
}

/// A new secret for a credential; the old one is refused at once.
pub async fn rotate_admin_token(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
    Path(name): Path<String>,
) -> R<AdminCredentialIssued> {
    Ok(AxumJson(
        b.operators.rotate_admin_credential(&op.who, &name).await?,
    ))
}

pub async fn revoke_admin_token(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    b.operators
        .revoke_admin_credential(&name, &op.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn quarantine(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
) -> R<Quarantined> {
    Ok(AxumJson(
        b.registry
            .quarantine(&agent_name(&name)?, true, &op.actor(), None)
            .await?,
    ))
}

pub async fn release(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
) -> R<Quarantined> {
    Ok(AxumJson(
        b.registry
            .quarantine(&agent_name(&name)?, false, &op.actor(), None)
            .await?,
    ))
}

pub async fn register_tool(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Json(req): Json<RegisterTool>,
) -> Result<(StatusCode, AxumJson<Tool>), ApiError> {
    Ok((
        StatusCode::CREATED,
        AxumJson(b.registry.register_tool(req, &op.actor()).await?),
    ))
}

pub async fn list_tools(State(b): State<Arc<Broker>>, _: Op<Operate>) -> R<Vec<Tool>> {
    Ok(AxumJson(b.registry.tools().await?))
}

pub async fn get_tool(
    State(b): State<Arc<Broker>>,
    _: Op<Operate>,
    Path(name): Path<String>,
) -> R<Tool> {
    Ok(AxumJson(b.registry.tool(&tool_name(&name)?).await?))
}

/// Serves a tool from another gateway.
pub async fn bind_tool(
    State(b): State<Arc<Broker>>,
    op: Op<Operate>,
    Path(name): Path<String>,
    Json(req): Json<BindTool>,
) -> R<Tool> {
    Ok(AxumJson(
        b.registry
            .bind_tool(&tool_name(&name)?, req, &op.actor())
            .await?,
    ))
}

pub async fn rotate_spiffe_keys(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
) -> R<serde_json::Value> {
    Ok(AxumJson(b.rotate_spiffe_keys(&op.actor()).await?))
}

pub async fn rotate_keys(State(b): State<Arc<Broker>>, op: Op<Administer>) -> R<KeyRotated> {
    Ok(AxumJson(b.rotate_keys(&op.actor()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: u32,
    /// The last N records instead of those after `after`.
    last: Option<u32>,
}

fn default_limit() -> u32 {
    100
}

pub async fn audit(
    State(b): State<Arc<Broker>>,
    _: Op<Audit>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> R<AuditPage> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(AxumJson(b.audit.page(q.after, q.limit, q.last).await?))
}

pub async fn audit_verify(State(b): State<Arc<Broker>>, _: Op<Audit>) -> R<AuditVerified> {
    Ok(AxumJson(b.audit.verify().await?))
}

/// The checkpoints the broker signed and kept, as signed.
pub async fn audit_checkpoints(State(b): State<Arc<Broker>>, _: Op<Audit>) -> R<Vec<String>> {
    Ok(AxumJson(b.audit.checkpoint_tokens().await?))
}

/// Every signing key's public half, retired ones included.
pub async fn audit_keys(
    State(b): State<Arc<Broker>>,
    _: Op<Audit>,
) -> R<jsonwebtoken::jwk::JwkSet> {
    Ok(AxumJson(b.audit.keys()))
}

pub async fn policies(
    State(b): State<Arc<Broker>>,
    _: Op<ReadPolicy>,
) -> R<writ_core::api::PolicyInfo> {
    Ok(AxumJson(b.policies.info()))
}

pub async fn push_policies(
    State(b): State<Arc<Broker>>,
    op: Op<AuthorPolicy>,
    Json(req): Json<writ_core::api::PushPolicies>,
) -> R<writ_core::api::PolicyInfo> {
    Ok(AxumJson(b.policies.push(req, &op.actor()).await?))
}

pub async fn policy_history(
    State(b): State<Arc<Broker>>,
    _: Op<ReadPolicy>,
) -> R<Vec<writ_core::api::PolicyVersion>> {
    Ok(AxumJson(b.policies.history(100).await?))
}

/// AuthZEN access evaluation, for enforcement points: a gateway credential
/// (`writ gateway register`) or an admin one.
pub async fn evaluation(
    State(b): State<Arc<Broker>>,
    point: super::PointAuth,
    AuthzenJson(req): AuthzenJson<authzen::Evaluation>,
) -> R<authzen::EvaluationResponse> {
    Ok(AxumJson(b.authzen.evaluate(req, &point.actor).await?))
}

pub async fn evaluations(
    State(b): State<Arc<Broker>>,
    point: super::PointAuth,
    AuthzenJson(req): AuthzenJson<authzen::Evaluations>,
) -> R<authzen::BatchResponse> {
    Ok(AxumJson(b.authzen.evaluate_batch(req, &point.actor).await?))
}

pub async fn search_subject(
    State(b): State<Arc<Broker>>,
    point: super::PointAuth,
    AuthzenJson(req): AuthzenJson<authzen::SubjectSearch>,
) -> R<authzen::SearchResponse<authzen::Found>> {
    Ok(AxumJson(
        b.authzen.search_subjects(req, &point.actor).await?,
    ))
}

pub async fn search_resource(
    State(b): State<Arc<Broker>>,
    point: super::PointAuth,
    AuthzenJson(req): AuthzenJson<authzen::ResourceSearch>,
) -> R<authzen::SearchResponse<authzen::Found>> {
    Ok(AxumJson(
        b.authzen.search_resources(req, &point.actor).await?,
    ))
}

pub async fn search_action(
    State(b): State<Arc<Broker>>,
    point: super::PointAuth,
    AuthzenJson(req): AuthzenJson<authzen::ActionSearch>,
) -> R<authzen::SearchResponse<authzen::FoundAction>> {
    Ok(AxumJson(b.authzen.search_actions(req, &point.actor).await?))
}

/// Replaces the entity data policy decides with (`entities.json`).
pub async fn push_entities(
    State(b): State<Arc<Broker>>,
    op: Op<AuthorPolicy>,
    Json(req): Json<serde_json::Value>,
) -> R<writ_core::api::PolicyInfo> {
    Ok(AxumJson(b.policies.push_entities(req, &op.actor()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalQuery {
    #[serde(default)]
    all: bool,
}

pub async fn approvals(
    State(b): State<Arc<Broker>>,
    _: Op<Approve>,
    q: Result<Query<ApprovalQuery>, axum::extract::rejection::QueryRejection>,
) -> R<Vec<writ_core::api::Approval>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(AxumJson(b.approvals.list(q.all).await?))
}

fn approval_id(s: &str) -> Result<writ_core::ApprovalId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::NotFound(format!("approval {s:.64} not found")))
}

pub async fn approve(
    State(b): State<Arc<Broker>>,
    op: super::Decider,
    Path(id): Path<String>,
    Json(req): Json<writ_core::api::DecideApproval>,
) -> R<writ_core::api::Approval> {
    Ok(AxumJson(
        b.approvals
            .decide(&approval_id(&id)?, true, req, &op.0.actor())
            .await?,
    ))
}

pub async fn deny(
    State(b): State<Arc<Broker>>,
    op: super::Decider,
    Path(id): Path<String>,
    Json(req): Json<writ_core::api::DecideApproval>,
) -> R<writ_core::api::Approval> {
    Ok(AxumJson(
        b.approvals
            .decide(&approval_id(&id)?, false, req, &op.0.actor())
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    #[serde(default)]
    exceptions: bool,
}

/// Tasks, newest first (`?exceptions=true`: live exceptions only).
pub async fn list_tasks(
    State(b): State<Arc<Broker>>,
    _: Op<Operate>,
    q: Result<Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> R<Vec<writ_core::api::Task>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(AxumJson(b.tasks.list(q.exceptions).await?))
}

/// Live exceptions with their expiry, owner, justification and uses.
pub async fn list_exceptions(
    State(b): State<Arc<Broker>>,
    _: Op<Operate>,
) -> R<Vec<writ_core::api::ExceptionTask>> {
    Ok(AxumJson(b.tasks.exceptions().await?))
}

/// Shadow mode: a candidate set decides beside the live one; differences are audited.
pub async fn push_shadow(
    State(b): State<Arc<Broker>>,
    op: Op<AuthorPolicy>,
    Json(req): Json<writ_core::api::PushPolicies>,
) -> R<writ_core::api::PolicyInfo> {
    Ok(AxumJson(b.policies.push_shadow(req, &op.actor()).await?))
}

pub async fn clear_shadow(
    State(b): State<Arc<Broker>>,
    op: Op<AuthorPolicy>,
) -> Result<StatusCode, ApiError> {
    b.policies.set_shadow(None, &op.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    #[serde(default)]
    after: u64,
    /// Seconds to wait for news when there is none (at most 30).
    #[serde(default)]
    wait: u64,
    /// The same in milliseconds (wins over `wait`).
    #[serde(default)]
    wait_ms: Option<u64>,
    /// Which process of a gateway credential follows (each is tracked).
    #[serde(default)]
    follower: Option<String>,
}

/// The revocation feed (long-poll), for enforcement points.
pub async fn revocations(
    State(b): State<Arc<Broker>>,
    point: super::PointAuth,
    q: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> R<writ_core::api::RevocationPage> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wait = match q.wait_ms {
        Some(ms) => std::time::Duration::from_millis(ms),
        None => std::time::Duration::from_secs(q.wait),
    };
    let follower = match q.follower.as_deref() {
        Some(f) if !f.is_empty() && f.len() <= 64 => f,
        _ => "",
    };
    let who = point.gateway.as_deref().map(|g| (g, follower));
    Ok(AxumJson(b.revocations.page(who, q.after, wait).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// How far back: `90s`, `15m`, `24h`, `7d` (default 24h).
    since: Option<String>,
    /// Only this agent.
    agent: Option<String>,
    /// `json` (default), `table`, `markdown` or `html`.
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQuery {
    /// One of `report::framework_names()`.
    framework: Option<String>,
    /// `json` (default), `table`, `markdown` or `html`.
    format: Option<String>,
}

/// `GET /v1/reports/evidence`: a framework's items, each with the live
/// evidence for it and a status.
pub async fn evidence(
    State(b): State<Arc<Broker>>,
    _: Op<Audit>,
    q: Result<Query<EvidenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use crate::service::report;
    use axum::response::IntoResponse as _;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Some(framework) = q.framework else {
        return Err(ApiError::BadRequest(format!(
            "framework is required: one of {}",
            report::framework_names().join(", ")
        )));
    };
    let format = report::Format::parse(q.format.as_deref().unwrap_or("json"))?;
    let r = b.reports.evidence_report(&framework).await?;
    let body = report::render_evidence(&r, format)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response())
}

/// `GET /v1/reports/least-privilege`: granted against used, the narrower
/// policy set and its replay, as a document.
pub async fn least_privilege(
    State(b): State<Arc<Broker>>,
    _: Op<Audit>,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use crate::service::report;
    use axum::response::IntoResponse as _;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let since_secs = match q.since.as_deref() {
        Some(s) => report::parse_since(s)?,
        None => report::DEFAULT_SINCE_SECS,
    };
    let agent = q.agent.as_deref().map(agent_name).transpose()?;
    let format = report::Format::parse(q.format.as_deref().unwrap_or("json"))?;
    let r = b
        .reports
        .least_privilege(&report::ReportQuery { since_secs, agent })
        .await?;
    let body = report::render(&r, format)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response())
}

/// Where operators sign in with single sign-on (404 when it is not
/// configured).
pub async fn sso_info(State(b): State<Arc<Broker>>) -> R<writ_core::api::OperatorSsoInfo> {
    Ok(AxumJson(b.operators.operator_sso_info()?))
}

/// An identity token from the operators' OIDC provider for a short-lived
/// operator credential. Limited per client address (its own allowance).
pub async fn sso_sign_in(
    State(b): State<Arc<Broker>>,
    _: super::SignInAdmitted,
    Json(req): Json<writ_core::api::OperatorSignIn>,
) -> Result<(StatusCode, AxumJson<writ_core::api::OperatorSession>), ApiError> {
    let session = b.operators.operator_sign_in(&req.id_token).await?;
    Ok((StatusCode::CREATED, AxumJson(session)))
}
