//! `/v1/pipelines/{name}/checkpoints`: trigger (waits), list (newest first), get, restore.

use super::answers::{CheckpointStatusDto, TriggerDto};
use super::problem::ApiError;
use crate::app::{AppState, Served};
use crate::checkpoint::CheckpointError;
use crate::store::{CheckpointMeta, CheckpointStatus, Trigger};
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

impl From<CheckpointMeta> for CheckpointDto {
    fn from(c: CheckpointMeta) -> CheckpointDto {
        CheckpointDto {
            id: c.id,
            status: c.status.into(),
            trigger: c.trigger.into(),
            started_at: rfc3339(c.started_at),
            completed_at: c.completed_at.map(rfc3339),
            duration_ms: c.completed_at.map(|done| done - c.started_at),
            input_offset: c.input_offset,
            events: c.events,
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

impl From<CheckpointError> for ApiError {
    fn from(e: CheckpointError) -> ApiError {
        match e {
            CheckpointError::Running { id } => ApiError::CheckpointRunning { id },
            CheckpointError::NotFound { id } => ApiError::CheckpointNotFound { id },
            CheckpointError::NotRestorable { .. } | CheckpointError::Restoring { .. } => {
                ApiError::Conflict {
                    detail: e.to_string(),
                }
            }
            CheckpointError::Engine(e) => e.into(),
            CheckpointError::Store(e) => e.into(),
            e @ CheckpointError::Wal(_) => ApiError::internal(&e),
        }
    }
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
    let pipeline = app.pipeline(&name)?;
    // On its own task: a request that times out or is dropped must not cut a checkpoint short
    // (its row would stay in_progress and the barrier's changes would not go back).
    let checkpoints = app.checkpoints.clone();
    let meta = tokio::spawn(async move { checkpoints.take(&pipeline, Trigger::Manual).await })
        .await
        .map_err(|e| ApiError::internal(&e))??;
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
    app.served(&name)?;
    let items = app
        .store
        .checkpoints(&name)
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
    app.served(&name)?;
    let meta = app
        .store
        .checkpoint(&name, id)
        .await?
        .ok_or(ApiError::CheckpointNotFound { id })?;
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
    let (pipeline, discarded_events) = match app.served(&name)? {
        Served::Running(old) => app.checkpoints.restore(&old, id).await?,
        Served::Failed(failed) => {
            app.checkpoints
                .restore_failed(failed.spec.clone(), id)
                .await?
        }
    };
    app.launch(pipeline);
    tracing::info!(pipeline = %name, checkpoint = id, discarded_events, "checkpoint restored");
    Ok(Json(Restored {
        restored: id,
        discarded_events,
    }))
}
