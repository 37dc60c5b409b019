//! `/v1/pipelines`: create, list, get (with live status) and delete pipelines.

use super::AppState;
use super::access::may_touch;
use super::problem::{ApiError, Problem};
use crate::auth::Principal;
use crate::checkpoint;
use crate::engine::{FailedPipeline, Pipeline};
use crate::service::Served;
use crate::spec::PipelineSpec;
use crate::store::CheckpointStatus;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_pipeline, list_pipelines))
        .routes(routes!(get_pipeline, delete_pipeline))
}

/// A pipeline spec (documentation of the accepted document; validation names each bad field).
#[derive(ToSchema)]
#[allow(dead_code)] // describes the document for OpenAPI; the server reads it as JSON
pub struct PipelineSpecDoc {
    /// `[a-z0-9_-]{1,64}`.
    name: String,
    /// JSON pointer to the routing key, e.g. `/user_id`.
    key: String,
    time: Option<TimeDoc>,
    /// Duration, default `10s`.
    checkpoint_interval: Option<String>,
    /// Default 5.
    retain_checkpoints: Option<u32>,
    /// Duration, default none.
    state_ttl: Option<String>,
    /// Key-group ranges the state is split into, 1 to 256, default 1; fixed at creation.
    partitions: Option<u16>,
    operators: Vec<OperatorDoc>,
}

/// Event time of a pipeline.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TimeDoc {
    /// JSON pointer to the time field.
    field: String,
    /// `epoch_ms` (default), `epoch_s` or `rfc3339`.
    format: Option<String>,
    /// Duration, default `0s`.
    max_out_of_orderness: Option<String>,
}

/// One operator; which fields apply depends on `kind`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OperatorDoc {
    name: String,
    /// `latest`, `last_n`, `map`, `aggregate`, `session` or `window`.
    kind: String,
    /// The operator's own key pointer.
    key: Option<String>,
    /// Pointer → value that must match for the operator to see an event.
    #[schema(rename = "where", value_type = Option<Object>)]
    filter: Option<Value>,
    value: Option<String>,
    entry_key: Option<String>,
    /// `sum`, `count`, `min`, `max` or `last` (map).
    reduce: Option<String>,
    /// From `count`, `sum`, `min`, `max`, `avg` (aggregate, window).
    functions: Option<Vec<String>>,
    /// `hour`, `day` or `month` (aggregate).
    reset: Option<String>,
    /// Duration (session).
    gap: Option<String>,
    /// How many values (last_n).
    n: Option<u32>,
    /// Duration (window).
    size: Option<String>,
    /// Duration (sliding window).
    slide: Option<String>,
    /// Closed windows kept per key, default 10 (window).
    retain: Option<u32>,
}

/// Live counters of a pipeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineStatus {
    /// Every accepted event, late ones included.
    pub events: u64,
    pub late_events: u64,
    /// Epoch ms, or null before any event.
    pub watermark: Option<i64>,
    /// Offset of the last accepted event, or null.
    pub wal_offset: Option<u64>,
    /// Keys with state, per operator.
    pub keys: BTreeMap<String, usize>,
    /// The newest checkpoint, or null.
    pub last_checkpoint: Option<super::checkpoints::CheckpointDto>,
    /// `running`, or `failed` (it did not start: its WAL failed its check; or its WAL failed
    /// a write). A failed pipeline's counters are those of its latest completed checkpoint.
    #[schema(example = "running")]
    pub state: &'static str,
    /// Why it failed; null while running.
    pub error: Option<String>,
}

/// A pipeline: its spec (with defaults) plus `status`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PipelineDoc {
    name: String,
    key: String,
    time: Option<TimeDoc>,
    checkpoint_interval: String,
    retain_checkpoints: u32,
    state_ttl: Option<String>,
    partitions: u16,
    operators: Vec<OperatorDoc>,
    status: PipelineStatus,
}

/// Every pipeline.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PipelineList {
    items: Vec<PipelineDoc>,
}

async fn answer(app: &AppState, pipeline: &Pipeline) -> Result<Value, ApiError> {
    let status = pipeline.status().await?;
    let last = app
        .store
        .checkpoints(pipeline.name())
        .await?
        .into_iter()
        .next();
    let last_checkpoint = last.map(super::checkpoints::CheckpointDto::from);
    let error = pipeline.failure();
    let status = PipelineStatus {
        events: status.events,
        late_events: status.late_events,
        watermark: status.watermark,
        wal_offset: status.wal_offset,
        keys: status.keys.into_iter().collect(),
        last_checkpoint,
        state: if error.is_some() { "failed" } else { "running" },
        error,
    };
    let mut doc = pipeline.spec().map_or(Value::Null, |s| s.document.clone());
    doc["status"] = serde_json::to_value(status).expect("status serialises");
    Ok(doc)
}

/// The answer for a pipeline that failed to start: its spec, the counters of its latest
/// completed checkpoint (nothing after it could be read back), no keys counted.
async fn failed_answer(app: &AppState, failed: &FailedPipeline) -> Result<Value, ApiError> {
    let checkpoints = app.store.checkpoints(&failed.spec.name).await?;
    let latest = checkpoints
        .iter()
        .find(|c| c.status == CheckpointStatus::Completed);
    let counters = latest.map_or_else(Default::default, |c| checkpoint::counters(&c.progress));
    let status = PipelineStatus {
        events: counters.events,
        late_events: counters.late_events,
        watermark: counters.watermark,
        wal_offset: counters.last_offset,
        keys: failed
            .spec
            .operators
            .iter()
            .map(|op| (op.name.clone(), 0))
            .collect(),
        last_checkpoint: checkpoints
            .into_iter()
            .next()
            .map(super::checkpoints::CheckpointDto::from),
        state: "failed",
        error: Some(failed.reason.clone()),
    };
    let mut doc = failed.spec.document.clone();
    doc["status"] = serde_json::to_value(status).expect("status serialises");
    Ok(doc)
}

async fn served_answer(app: &AppState, served: &Served) -> Result<Value, ApiError> {
    match served {
        Served::Running(pipeline) => answer(app, pipeline).await,
        Served::Failed(failed) => failed_answer(app, failed).await,
    }
}

/// Create a pipeline
#[utoipa::path(
    post, path = "/v1/pipelines", tag = "pipelines",
    request_body(content = PipelineSpecDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = PipelineDoc),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A pipeline of that name exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The spec is invalid; `errors` names each field", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "As many pipelines exist as may", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_pipeline(
    State(app): State<AppState>,
    principal: Option<Extension<Principal>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let doc: Value = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson {
        detail: e.to_string(),
    })?;
    let spec = PipelineSpec::from_json(&doc).map_err(|errors| ApiError::InvalidSpec { errors })?;
    // The limit answers before the access check, as it always has; `create` checks it again.
    app.ensure_room()?;
    if !may_touch(principal.as_deref(), &spec.name) {
        let detail = format!("the token may not touch pipeline {:?}", spec.name);
        return Err(ApiError::Forbidden { detail });
    }
    let pipeline = app.create(spec).await?;
    let location = format!("/v1/pipelines/{}", pipeline.name());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(answer(&app, &pipeline).await?),
    ))
}

/// List pipelines
#[utoipa::path(
    get, path = "/v1/pipelines", tag = "pipelines",
    responses((status = 200, description = "Every pipeline, by name", body = PipelineList))
)]
async fn list_pipelines(
    State(app): State<AppState>,
    principal: Option<Extension<Principal>>,
) -> Result<Json<Value>, ApiError> {
    let served = app.served_list();
    let mut items = Vec::new();
    for (name, pipeline) in &served {
        if may_touch(principal.as_deref(), name) {
            items.push(served_answer(&app, pipeline).await?);
        }
    }
    Ok(Json(serde_json::json!({ "items": items })))
}

/// Get a pipeline with its live status
#[utoipa::path(
    get, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "Pipeline name")),
    responses(
        (status = 200, description = "The pipeline (also when failed: `status.state`)", body = PipelineDoc),
        (status = 404, description = "No such pipeline", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_pipeline(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let served = app.served(&name)?;
    Ok(Json(served_answer(&app, &served).await?))
}

/// Delete a pipeline with its state
#[utoipa::path(
    delete, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "Pipeline name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such pipeline", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_pipeline(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
