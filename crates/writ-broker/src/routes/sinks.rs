//! Audit sinks (`/v1/sinks`): their state for auditors, a test event for
//! admins.

use std::sync::Arc;

use axum::Json as AxumJson;
use axum::extract::{Path, State};
use writ_core::api::{SinkInfo, SinkTested};

use super::{Administer, Audit, Op};
use crate::error::ApiError;
use crate::service::Broker;

/// Every configured sink: kind, target, cursor, lag and last error
/// (never a secret).
pub async fn list(
    State(b): State<Arc<Broker>>,
    _: Op<Audit>,
) -> Result<AxumJson<Vec<SinkInfo>>, ApiError> {
    Ok(AxumJson(b.sinks.list().await?))
}

/// Sends one test event through the sink, past its cursor.
pub async fn test(
    State(b): State<Arc<Broker>>,
    op: Op<Administer>,
    Path(name): Path<String>,
) -> Result<AxumJson<SinkTested>, ApiError> {
    Ok(AxumJson(b.sinks.test(&name, &op.actor()).await?))
}
