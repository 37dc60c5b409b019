//! The service: shared state, the router with its layers, start-up (store, migrations,
//! pipelines), the processing-time ticker, and serving with graceful shutdown.

use crate::api;
use crate::api::problem::{ApiError, PROBLEM_JSON, problem_response};
use crate::auth::{Tokens, TokensError};
use crate::checkpoint::{CheckpointError, Checkpointer};
use crate::config::Config;
use crate::engine::{Engine, EngineError, FailedPipeline, Pipeline};
use crate::metrics::{LogLimit, Rejection};
use crate::spec::PipelineSpec;
use crate::store::Trigger;
use crate::store::{self, Store, StoreError};
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// Set once pipelines are loaded (and, later, recovered).
    pub ready: Arc<AtomicBool>,
    /// Cancelled when the service shuts down (ends long polls and streams).
    pub shutdown: CancellationToken,
    pub checkpoints: Arc<Checkpointer>,
    /// API tokens; `None`: open access. Swapped whole on SIGHUP.
    pub tokens: Arc<std::sync::RwLock<Option<Arc<Tokens>>>>,
}

impl AppState {
    /// The running pipeline `name` (a failed one answers `pipeline_failed`).
    pub fn pipeline(&self, name: &str) -> Result<Arc<Pipeline>, ApiError> {
        match self.served(name)? {
            Served::Running(pipeline) => Ok(pipeline),
            Served::Failed(failed) => Err(ApiError::PipelineFailed {
                name: name.to_owned(),
                reason: failed.reason,
            }),
        }
    }

    /// The pipeline `name`, running or failed.
    pub fn served(&self, name: &str) -> Result<Served, ApiError> {
        if let Some(pipeline) = self.engine.get(name) {
            return Ok(Served::Running(pipeline));
        }
        self.engine
            .failed(name)
            .map(|f| Served::Failed(Box::new(f)))
            .ok_or_else(|| ApiError::PipelineNotFound {
                name: name.to_owned(),
            })
    }

    /// Every pipeline, running or failed, by name.
    pub fn served_list(&self) -> std::collections::BTreeMap<String, Served> {
        let mut served: std::collections::BTreeMap<String, Served> = self
            .engine
            .list()
            .into_iter()
            .map(|p| (p.name().to_owned(), Served::Running(p)))
            .collect();
        for failed in self.engine.failed_list() {
            served.insert(failed.spec.name.clone(), Served::Failed(Box::new(failed)));
        }
        served
    }

    /// Serves `pipeline` (replacing one of its name) and checkpoints it periodically.
    pub fn launch(&self, pipeline: Pipeline) -> Arc<Pipeline> {
        let pipeline = Arc::new(pipeline);
        crate::metrics::pipeline_served(pipeline.name());
        self.engine.insert(pipeline.clone());
        let interval = pipeline.spec().map_or(Duration::from_secs(10), |s| {
            Duration::from_millis(s.checkpoint_interval.millis().max(1) as u64)
        });
        let (state, weak) = (self.clone(), Arc::downgrade(&pipeline));
        let (closed, shutdown) = (pipeline.closed(), self.shutdown.clone());
        tokio::spawn(async move {
            // Failed in a row: the next attempt waits longer, so that while the store is down
            // the slot is mostly free for a manual trigger (which then says why it fails).
            let mut failures = 0;
            loop {
                let pause = crate::checkpoint::periodic_delay(interval, failures);
                tokio::select! {
                    _ = closed.cancelled() => return,
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                match state.checkpoints.take(&pipeline, Trigger::Periodic).await {
                    Ok(_) => failures = 0,
                    Err(
                        e @ (CheckpointError::Running { .. } | CheckpointError::Restoring { .. }),
                    ) => {
                        tracing::debug!(pipeline = pipeline.name(), error = %e, "periodic checkpoint skipped");
                    }
                    // Counted, logged and listed where it failed.
                    Err(_) => failures = failures.saturating_add(1),
                }
            }
        });
        pipeline
    }

    /// Takes a final checkpoint of every pipeline (at shutdown).
    pub async fn checkpoint_all(&self, trigger: Trigger) {
        for pipeline in self.engine.list() {
            match self.checkpoints.take(&pipeline, trigger).await {
                Ok(meta) => tracing::info!(
                    pipeline = pipeline.name(),
                    checkpoint = meta.id,
                    "final checkpoint"
                ),
                // A failure was logged (once, as a warning) where it happened.
                Err(e) => tracing::info!(
                    pipeline = pipeline.name(),
                    error = %e,
                    "final checkpoint not taken; the next start replays the WAL"
                ),
            }
        }
    }
}

/// A known pipeline: serving, or failed at start.
pub enum Served {
    Running(Arc<Pipeline>),
    Failed(Box<FailedPipeline>),
}

/// Failures of start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("stored pipeline {name:?} is no longer valid: {detail}")]
    InvalidStoredSpec { name: String, detail: String },
    #[error("{0}")]
    Tokens(#[from] TokensError),
    #[error("pipeline {name:?} cannot be recovered: {source}")]
    Recovery {
        name: String,
        source: CheckpointError,
    },
}

/// Opens the store, applies migrations and recovers every stored pipeline.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<AppState, StartError> {
    let state = open(config, shutdown).await?;
    recover(&state).await?;
    Ok(state)
}

/// Opens the store and applies migrations: a state that serves, not ready yet.
pub async fn open(config: Config, shutdown: CancellationToken) -> Result<AppState, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = store::connect_with(&config.database_url, config.store_acquire_timeout).await?;
    store.migrate().await?;
    let tokens = config
        .tokens_file
        .as_deref()
        .map(Tokens::load)
        .transpose()?
        .map(Arc::new);
    let config = Arc::new(config);
    crate::metrics::install();
    let state = AppState {
        tokens: Arc::new(std::sync::RwLock::new(tokens)),
        engine: Arc::new(Engine::default()),
        checkpoints: Arc::new(Checkpointer::new(store.clone(), config.clone())),
        store,
        config,
        ready: Arc::new(AtomicBool::new(false)),
        shutdown,
    };
    Ok(state)
}

/// Recovers every stored pipeline (latest checkpoint, then its WAL), then marks the state
/// ready: until then `/readyz` and the API answer 503. A pipeline whose WAL fails its check
/// stays failed (listed, its requests 503 `pipeline_failed`) while the others serve.
pub async fn recover(state: &AppState) -> Result<(), StartError> {
    for stored in state.store.pipelines().await? {
        let spec = PipelineSpec::from_json(&stored.spec).map_err(|errors| {
            StartError::InvalidStoredSpec {
                name: stored.name.clone(),
                detail: format!("{errors:?}"),
            }
        })?;
        match state.checkpoints.recover(spec.clone()).await {
            Ok(pipeline) => {
                state.launch(pipeline);
            }
            Err(e) if fails_only_the_pipeline(&e) => {
                let name = &stored.name;
                tracing::error!(pipeline = %name, reason = %e, next = "pipeline stays failed until restored or repaired (eddy wal repair)", "pipeline failed to start");
                state.engine.fail(spec, e.to_string());
            }
            Err(source) => {
                return Err(StartError::Recovery {
                    name: stored.name.clone(),
                    source,
                });
            }
        }
    }
    state.ready.store(true, Ordering::Release);
    Ok(())
}

/// Whether a recovery failure is the pipeline's own (its WAL or what is logged in it), so
/// that the others can still serve; a store failure stops start-up instead.
fn fails_only_the_pipeline(e: &CheckpointError) -> bool {
    matches!(
        e,
        CheckpointError::Wal(_) | CheckpointError::Engine(EngineError::Replay { .. })
    )
}

impl AppState {
    /// Reads the tokens file again (SIGHUP); on error the old tokens stay.
    pub fn reload_tokens(&self) -> Result<usize, TokensError> {
        let Some(path) = &self.config.tokens_file else {
            return Ok(0);
        };
        let tokens = Tokens::load(path)?;
        let count = tokens.len();
        *self.tokens.write().expect("tokens lock") = Some(Arc::new(tokens));
        Ok(count)
    }
}

/// Epoch milliseconds now (the engine's clock, which the sequencer reads).
pub use crate::engine::now_ms;

/// The `/metrics` text: the registry's series, the live pipelines' gauges (a deleted
/// pipeline's vanish with it) and the process's figures.
pub async fn scrape_metrics(state: &AppState) -> String {
    let mut scrape = crate::metrics::Scrape::new(&crate::metrics::ProcessStats::read());
    for pipeline in state.engine.list() {
        // A pipeline that cannot answer (stopped, failed) has no live gauges this time.
        let Ok(status) = pipeline.status().await else {
            continue;
        };
        let view = crate::metrics::PipelineView {
            name: pipeline.name().to_owned(),
            watermark: status.watermark,
            keys: status.keys,
            changed_keys: status.changed_keys,
            queue_depths: pipeline.queue_depths(),
            checkpoint_interval_ms: pipeline.spec().map(|s| s.checkpoint_interval.millis()),
        };
        scrape.pipeline(&view, now_ms());
    }
    crate::metrics::render(&scrape)
}

/// Ticks every pipeline once a second (processing-time watermark and timers) until shutdown.
pub fn spawn_ticker(state: &AppState) -> tokio::task::JoinHandle<()> {
    let (engine, shutdown) = (state.engine.clone(), state.shutdown.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            for pipeline in engine.list() {
                // A full queue skips this tick; the next one catches up (the clock only grows).
                // The clock is read as the tick is sequenced, in order with the batches.
                if let Err(e) = pipeline.tick_now().await {
                    tracing::debug!(pipeline = pipeline.name(), error = %e, "tick skipped");
                }
            }
        }
    })
}

/// The full router: the API, `/docs`, the pages, problem+json for every error, and the layers.
pub fn router(state: AppState) -> Router {
    use crate::api::conventions;
    let (api_router, openapi) = api::routes().split_for_parts();
    let openapi = api::document(openapi);
    let request_id = HeaderName::from_static("x-request-id");
    let shed = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(shed_error))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.config.max_concurrent_requests,
        ));
    let router = api_router
        .layer(shed)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .merge(crate::ui::routes())
        .merge(api::pages::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::api::access::require_access,
        ))
        .fallback(route_not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_ready))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout,
        ))
        // Outside the timeout, so that its 408 is a problem document too.
        .layer(middleware::map_response(problem_for_bare_errors))
        .layer(middleware::from_fn(conventions::docs_validators))
        // Outside everything that builds a body, so that it compresses the final one.
        .layer(conventions::compression());
    // CORS outside the readiness and access checks: a preflight is answered by itself, and
    // their refusals carry CORS headers, so that a page can read why it was refused.
    let router = match state.config.cors.clone() {
        Some(origins) => router.layer(middleware::from_fn_with_state(
            conventions::Cors::new(origins),
            conventions::cors,
        )),
        None => router,
    };
    router
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        // Outside the timeout and the problem rewriting: it sees every answer as sent.
        .layer(middleware::from_fn(record_http))
        .layer(middleware::from_fn(conventions::close_when_body_unread))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or(req.uri().path(), |m| m.as_str());
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %req.method(), route, request_id = id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Serves until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = crate::api::cluster::LocalAddr(listener.local_addr()?);
    axum::serve(listener, router(state).layer(axum::Extension(local)))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Counts and times every answered request by route template, and each 503 by reason; logs
/// shed requests (at most one line per second per reason, with how many were not logged).
async fn record_http(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = crate::metrics::route_label(route.as_ref().map(MatchedPath::as_str)).to_owned();
    let method = crate::metrics::method_label(req.method().as_str());
    let pipeline = req
        .uri()
        .path()
        .strip_prefix("/v1/pipelines/")
        .and_then(|rest| rest.split('/').next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    let response = next.run(req).await;
    let status = response.status();
    crate::metrics::http_request(&route, method, status.as_u16(), started.elapsed());
    // A readiness probe's 503 answers a question; it rejects no work.
    if status == StatusCode::SERVICE_UNAVAILABLE && route != "/readyz" {
        let reason = response
            .extensions()
            .get::<Rejection>()
            .map_or("unavailable", |r| r.0);
        crate::metrics::rejected(reason);
        log_shed(reason, pipeline.as_deref().unwrap_or("-"), &route);
    }
    response
}

/// One warning per second at most for each kind of shed request.
fn log_shed(reason: &'static str, pipeline: &str, route: &str) {
    static BUSY: LogLimit = LogLimit::new();
    static OVERLOADED: LogLimit = LogLimit::new();
    let (limit, why) = match reason {
        "busy" => (
            &BUSY,
            "the server is at its limit of concurrent requests (EDDY_MAX_CONCURRENT_REQUESTS)",
        ),
        "overloaded" => (
            &OVERLOADED,
            "a shard queue of the pipeline is full (EDDY_SHARD_QUEUE)",
        ),
        _ => return,
    };
    if let Some(suppressed) = limit.admit(now_ms(), 1000) {
        tracing::warn!(
            pipeline = %pipeline,
            reason = %why,
            next = "answered 503 with Retry-After: 1; nothing was applied, the client retries",
            route = %route,
            suppressed,
            "request shed"
        );
    }
}

/// Requests beyond the concurrency limit are shed (503), never queued without bound.
async fn shed_error(error: tower::BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Busy
    } else {
        ApiError::Internal {
            cause: error.to_string(),
        }
    }
}

async fn route_not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound {
        path: req.uri().path().to_owned(),
    }
}

/// The API answers 503 until start-up (and recovery) is done.
async fn require_ready(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v1/") && !state.ready.load(Ordering::Acquire) {
        let detail = "eddy is starting: recovery is not finished".into();
        let mut response = ApiError::Unavailable { detail }.into_response();
        response.extensions_mut().insert(Rejection("not_ready"));
        return response;
    }
    next.run(req).await
}

/// The code of an error answer that axum or a layer made itself, by its status.
fn bare_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "route_not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Turns axum's own plain-text rejections (bad query, 405, timeout…) into problem+json.
async fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        text => text.to_owned(),
    };
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this path".into(),
        StatusCode::REQUEST_TIMEOUT => "the request took longer than the request timeout".into(),
        s if s.is_server_error() => {
            tracing::error!(error.cause_chain = %detail, "request failed");
            "internal error".into()
        }
        _ => detail,
    };
    let mut fixed = problem_response(status, bare_code(status), detail, None, None);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name, value.clone());
        }
    }
    let (mut fixed_parts, body) = fixed.into_parts();
    fixed_parts.extensions = parts.extensions;
    Response::from_parts(fixed_parts, Body::new(body))
}
