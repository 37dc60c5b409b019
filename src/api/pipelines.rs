//! `/v1/pipelines`: create, list, get (with live status) and delete pipelines.

use super::AppState;
use super::access::may_touch;
use super::answers::{PipelineAnswer, PipelineList, PipelineState, PipelineStatus};
use super::checkpoints::CheckpointDto;
use super::problem::ApiError;
use crate::auth::Principal;
use crate::checkpoint;
use crate::engine::{FailedPipeline, Pipeline};
use crate::service::Served;
use crate::service::cluster::Route;
use crate::spec::PipelineSpec;
use crate::store::CheckpointStatus;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::Value;
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
#[expect(
    dead_code,
    reason = "schema only: the spec is read (to report every error) and echoed as JSON"
)]
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
#[expect(
    dead_code,
    reason = "schema only: the spec is read (to report every error) and echoed as JSON"
)]
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
#[expect(
    dead_code,
    reason = "schema only: the spec is read (to report every error) and echoed as JSON"
)]
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

async fn answer(app: &AppState, pipeline: &Pipeline) -> Result<PipelineAnswer, ApiError> {
    let status = app.status_of(pipeline).await?;
    let last = app
        .store
        .checkpoints(pipeline.name())
        .await?
        .into_iter()
        .next();
    let last_checkpoint = last.map(CheckpointDto::from);
    let error = pipeline.failure();
    let status = PipelineStatus {
        events: status.events,
        late_events: status.late_events,
        watermark: status.watermark,
        wal_offset: status.wal_offset,
        keys: status.keys.into_iter().collect(),
        last_checkpoint,
        state: match error {
            Some(_) => PipelineState::Failed,
            None => PipelineState::Running,
        },
        error,
    };
    Ok(PipelineAnswer::new(
        pipeline.spec().map(|s| &s.document),
        status,
    ))
}

/// The answer for a pipeline that failed to start: its spec, the counters of its latest
/// completed checkpoint (nothing after it could be read back), no keys counted.
async fn failed_answer(
    app: &AppState,
    failed: &FailedPipeline,
) -> Result<PipelineAnswer, ApiError> {
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
        last_checkpoint: checkpoints.into_iter().next().map(CheckpointDto::from),
        state: PipelineState::Failed,
        error: Some(failed.reason.clone()),
    };
    Ok(PipelineAnswer::new(Some(&failed.spec.document), status))
}

async fn served_answer(app: &AppState, served: &Served) -> Result<PipelineAnswer, ApiError> {
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
        (status = 201, description = "Created", body = PipelineAnswer),
        (status = 400, description = "The body is not JSON"),
        (status = 409, description = "A pipeline of that name exists"),
        (status = 422, description = "The spec is invalid; `errors` names each field"),
        (status = 507, description = "As many pipelines exist as may"),
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
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    if app.cluster.is_some() {
        return Ok(Json(cluster_list(&app, principal.as_deref(), &headers).await?).into_response());
    }
    let served = app.served_list();
    let mut items = Vec::new();
    for (name, pipeline) in &served {
        if may_touch(principal.as_deref(), name) {
            items.push(served_answer(&app, pipeline).await?);
        }
    }
    Ok(Json(PipelineList { items }).into_response())
}

/// Cluster mode: every stored pipeline, each answered by its leader (this instance's own
/// answer for those led here). A pipeline without a reachable leader fails the list with
/// 503 rather than leave it out.
async fn cluster_list(
    app: &AppState,
    principal: Option<&Principal>,
    headers: &HeaderMap,
) -> Result<Value, ApiError> {
    let cluster = app.cluster.clone().expect("cluster mode");
    let mut items = Vec::new();
    for stored in app.store.pipelines().await? {
        let name = stored.name;
        if !may_touch(principal, &name) {
            continue;
        }
        let no_leader = || ApiError::NoLeader { name: name.clone() };
        match cluster.route(&name).await {
            Route::Here => match app.served(&name) {
                Ok(served) => items.push(
                    serde_json::to_value(served_answer(app, &served).await?)
                        .map_err(|e| ApiError::internal(&e))?,
                ),
                // Stored, not led anywhere yet.
                Err(_) => return Err(no_leader()),
            },
            Route::There(url) => {
                let mut get = cluster.http.get(format!("{url}/v1/pipelines/{name}"));
                if let Some(auth) = headers.get(header::AUTHORIZATION) {
                    get = get.header(header::AUTHORIZATION, auth);
                }
                let answer = get
                    .header(super::forward::FORWARDED_BY, cluster.node())
                    .send()
                    .await
                    .map_err(|_| no_leader())?;
                match answer.status() {
                    StatusCode::OK => {
                        items.push(answer.json::<Value>().await.map_err(|_| no_leader())?)
                    }
                    // Deleted since the list was read.
                    StatusCode::NOT_FOUND => {}
                    _ => return Err(no_leader()),
                }
            }
            Route::Unavailable => return Err(no_leader()),
        }
    }
    Ok(serde_json::json!({ "items": items }))
}

/// Get a pipeline with its live status
#[utoipa::path(
    get, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "Pipeline name")),
    responses(
        (status = 200, description = "The pipeline (also when failed: `status.state`)", body = PipelineAnswer),
        (status = 404, description = "No such pipeline"),
    )
)]
async fn get_pipeline(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PipelineAnswer>, ApiError> {
    let served = app.served(&name)?;
    Ok(Json(served_answer(&app, &served).await?))
}

/// Delete a pipeline with its state
#[utoipa::path(
    delete, path = "/v1/pipelines/{name}", tag = "pipelines",
    params(("name" = String, Path, description = "Pipeline name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such pipeline"),
    )
)]
async fn delete_pipeline(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
