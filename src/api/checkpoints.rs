//! `/v1/pipelines/{name}/checkpoints`: trigger (waits), list (newest first), get, restore.

use super::AppState;
use super::answers::{CheckpointStatusDto, TriggerDto};
use super::problem::ApiError;
use crate::store::{CheckpointRecord, CheckpointStatus};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(trigger_checkpoint, list_checkpoints))
        .routes(routes!(get_checkpoint))
        .routes(routes!(restore_checkpoint))
}

/// A checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointDto {
    /// Increasing per pipeline, never reused.
    pub id: i64,
    pub status: CheckpointStatusDto,
    pub trigger: TriggerDto,
    /// RFC 3339.
    pub started_at: String,
    pub completed_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// Offset of the last event included, or null.
    pub input_offset: Option<i64>,
    /// Events in the state's history at the barrier.
    pub events: i64,
    pub keys_written: i64,
    pub keys_deleted: i64,
    pub bytes: i64,
    /// Why it failed (failed checkpoints only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Epoch milliseconds as an RFC 3339 timestamp (UTC).
pub(super) fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

impl From<CheckpointRecord> for CheckpointDto {
    fn from(c: CheckpointRecord) -> CheckpointDto {
        CheckpointDto {
            id: c.id,
            status: c.status.into(),
            trigger: c.trigger.into(),
            started_at: rfc3339(c.started_at),
            completed_at: c.completed_at.map(rfc3339),
            duration_ms: c.completed_at.map(|done| done - c.started_at),
            input_offset: c.progress.input_offset,
            events: c.progress.events,
            keys_written: c.keys_written,
            keys_deleted: c.keys_deleted,
            bytes: c.bytes,
            error: c.error.filter(|_| c.status == CheckpointStatus::Failed),
        }
    }
}

/// Every checkpoint of a pipeline, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    pub items: Vec<CheckpointDto>,
}

/// The answer to a restore.
#[derive(Debug, Serialize, ToSchema)]
pub struct Restored {
    pub restored: i64,
    /// Events applied after the checkpoint, now discarded.
    pub discarded_events: u64,
}

/// Take a checkpoint and wait for it
#[utoipa::path(
    post, path = "/v1/pipelines/{name}/checkpoints", tag = "checkpoints",
    params(("name" = String, Path, description = "Pipeline name")),
    responses(
        (status = 201, description = "The completed checkpoint", body = CheckpointDto),
        (status = 404, description = "No such pipeline"),
        (status = 409, description = "One is running (`checkpoint_id`, which GET finds `in_progress`), or a restore is"),
        (status = 500, description = "It failed (it is listed as failed)"),
        (status = 503, description = "The store cannot be reached (`store_unavailable`, `Retry-After`); the failure is listed once it answers"),
    )
)]
async fn trigger_checkpoint(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<CheckpointDto>), ApiError> {
    let meta = app.checkpoint_now(&name).await?;
    Ok((StatusCode::CREATED, Json(meta.into())))
}

/// List checkpoints, newest first
#[utoipa::path(
    get, path = "/v1/pipelines/{name}/checkpoints", tag = "checkpoints",
    params(("name" = String, Path, description = "Pipeline name")),
    responses(
        (status = 200, description = "Every kept checkpoint", body = CheckpointList),
        (status = 404, description = "No such pipeline"),
    )
)]
async fn list_checkpoints(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CheckpointList>, ApiError> {
    let items = app
        .checkpoint_list(&name)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(CheckpointList { items }))
}

/// Get one checkpoint
#[utoipa::path(
    get, path = "/v1/pipelines/{name}/checkpoints/{id}", tag = "checkpoints",
    params(("name" = String, Path, description = "Pipeline name"), ("id" = i64, Path, description = "Checkpoint id")),
    responses(
        (status = 200, description = "The checkpoint", body = CheckpointDto),
        (status = 400, description = "The id is not an integer"),
        (status = 404, description = "No such pipeline or checkpoint"),
    )
)]
async fn get_checkpoint(
    State(app): State<AppState>,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Json<CheckpointDto>, ApiError> {
    let meta = app.checkpoint_meta(&name, id).await?;
    Ok(Json(meta.into()))
}

/// Restore a checkpoint: later events, outputs and checkpoints are discarded
#[utoipa::path(
    post, path = "/v1/pipelines/{name}/checkpoints/{id}/restore", tag = "checkpoints",
    params(("name" = String, Path, description = "Pipeline name"), ("id" = i64, Path, description = "Checkpoint id")),
    responses(
        (status = 200, description = "The state is the checkpoint's (a failed pipeline runs again)", body = Restored),
        (status = 400, description = "The id is not an integer"),
        (status = 404, description = "No such pipeline or checkpoint"),
        (status = 409, description = "A checkpoint is running, or this one is not completed"),
    )
)]
async fn restore_checkpoint(
    State(app): State<AppState>,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Json<Restored>, ApiError> {
    // A failed pipeline is restored too: that is the operator's way out of the failed state.
    let discarded_events = app.restore(&name, id).await?;
    Ok(Json(Restored {
        restored: id,
        discarded_events,
    }))
}
