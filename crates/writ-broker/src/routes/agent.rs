//! Agent endpoints: attestation and tasks.

use std::sync::Arc;

use axum::Json as AxumJson;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use writ_core::TaskId;
use writ_core::api::{AttestRequest, Attested, StartTask, Task, TaskEnded};

use super::{AgentAuth, AnyCaller, AttestAdmitted};
use crate::error::ApiError;
use crate::extract::{Json, dpop_proof};
use crate::service::Broker;
use crate::service::tasks::Started;
use axum::response::{IntoResponse, Response};

fn task_id(s: &str) -> Result<TaskId, ApiError> {
    // A malformed id cannot name a task: answer as for an unknown one.
    s.parse()
        .map_err(|_| ApiError::NotFound(format!("task {s:.64} not found")))
}

/// An instance binds its token to its key with a `DPoP` proof (RFC 9449 §5).
/// Within the client's rate only; the proof is verified here and
/// remembered by the service once the credential has been checked.
pub async fn attest(
    State(b): State<Arc<Broker>>,
    _: AttestAdmitted,
    headers: HeaderMap,
    Json(req): Json<AttestRequest>,
) -> Result<(StatusCode, AxumJson<Attested>), ApiError> {
    let proof = match dpop_proof(&headers)? {
        Some(proof) => Some(b.attestations.attest_proof(proof)?),
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        AxumJson(b.attestations.attest(req, proof).await?),
    ))
}

/// 201 with a task token, or 202 while a person decides.
fn started(s: Started, ok: StatusCode) -> Response {
    match s {
        Started::Token(t) => (ok, AxumJson(t)).into_response(),
        Started::Pending(p) => (StatusCode::ACCEPTED, AxumJson(p)).into_response(),
    }
}

pub async fn start_task(
    State(b): State<Arc<Broker>>,
    AgentAuth(caller): AgentAuth,
    Json(req): Json<StartTask>,
) -> Result<Response, ApiError> {
    Ok(started(
        b.tasks.start(&caller, req).await?,
        StatusCode::CREATED,
    ))
}

pub async fn heartbeat(
    State(b): State<Arc<Broker>>,
    AgentAuth(caller): AgentAuth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(started(
        b.tasks.heartbeat(&caller, &task_id(&id)?).await?,
        StatusCode::OK,
    ))
}

pub async fn complete(
    State(b): State<Arc<Broker>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> Result<AxumJson<TaskEnded>, ApiError> {
    Ok(AxumJson(b.tasks.complete(&caller, &task_id(&id)?).await?))
}

/// A database role of the task's own for a postgres tool it was granted.
pub async fn db_credential(
    State(b): State<Arc<Broker>>,
    AnyCaller(caller): AnyCaller,
    Path((id, tool)): Path<(String, String)>,
) -> Result<(StatusCode, AxumJson<writ_core::api::DbCredential>), ApiError> {
    let tool: writ_core::ToolName = tool
        .parse()
        .map_err(|_| ApiError::NotFound(format!("tool {tool:?} not found")))?;
    let cred = b
        .issue_db_credential(&caller, &task_id(&id)?, &tool)
        .await?;
    Ok((StatusCode::CREATED, AxumJson(cred)))
}

pub async fn show_task(
    State(b): State<Arc<Broker>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> Result<AxumJson<Task>, ApiError> {
    Ok(AxumJson(b.tasks.show(&caller, &task_id(&id)?).await?))
}

/// The delegation tree under a task: its own instance, or an admin.
pub async fn tree(
    State(b): State<Arc<Broker>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> Result<AxumJson<Vec<Task>>, ApiError> {
    let id = task_id(&id)?;
    b.tasks.show(&caller, &id).await?;
    Ok(AxumJson(b.store.task_tree(&id).await?))
}
