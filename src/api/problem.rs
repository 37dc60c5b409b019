//! The one error type of the HTTP edge: every failure leaves as RFC 9457 problem+json with a
//! stable `code`. 5xx answers carry a fixed detail; their cause is logged, never sent.
//!
//! Over 400 lines by a few: the variants, their one mapping from the service's errors, and the
//! answer they write belong together.

use crate::checkpoint::CheckpointError;
use crate::engine::{EngineError, EventError};
use crate::service::ServiceError;
use crate::spec::FieldError;
use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<code>`, relative to the server: names the error, and answers with its
    /// documentation (docs/problems.md).
    #[serde(rename = "type")]
    #[schema(format = "uri-reference", example = "/problems/invalid_spec")]
    pub kind: String,
    /// The HTTP status phrase.
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable cause, e.g. `invalid_spec`.
    pub code: &'static str,
    /// Spec problems (`invalid_spec`: `field`) or bad events (`invalid_events`: `index`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ProblemItem>>,
    /// The running checkpoint (`checkpoint_running`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<i64>,
}

/// One item of a problem's `errors`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ProblemItem {
    /// A field of a pipeline spec (`invalid_spec`).
    Field {
        /// Where in the spec, e.g. `operators[2].gap`.
        field: String,
        detail: String,
    },
    /// An event of a batch (`invalid_events`).
    Event {
        /// Position in the batch from 0 (NDJSON: the line number from 0).
        index: u64,
        detail: String,
    },
}

impl From<&FieldError> for ProblemItem {
    fn from(e: &FieldError) -> ProblemItem {
        ProblemItem::Field {
            field: e.field.clone(),
            detail: e.detail.clone(),
        }
    }
}

impl From<&EventError> for ProblemItem {
    fn from(e: &EventError) -> ProblemItem {
        ProblemItem::Event {
            index: e.index as u64,
            detail: e.detail.clone(),
        }
    }
}

/// The `type` URI of the problems of `code`: the one place it is derived.
pub fn problem_type(code: &str) -> String {
    format!("/problems/{code}")
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a malformed request (query, header, body shape).
    #[error("{detail}")]
    BadRequest { detail: String },
    /// 400: the body is not JSON.
    #[error("body is not valid JSON: {detail}")]
    InvalidJson { detail: String },
    /// 400: some events of a batch are invalid; nothing was applied.
    #[error("{} event(s) of the batch are invalid; nothing was applied", errors.len())]
    InvalidEvents { errors: Vec<EventError> },
    /// 422: the pipeline spec is invalid.
    #[error("the pipeline spec is invalid")]
    InvalidSpec { errors: Vec<FieldError> },
    /// 401 with `WWW-Authenticate: Bearer`.
    #[error("{detail}")]
    Unauthorized { detail: String },
    /// 403: the token lacks the scope or the pipeline.
    #[error("{detail}")]
    Forbidden { detail: String },
    /// 404.
    #[error("pipeline {name:?} does not exist")]
    PipelineNotFound { name: String },
    /// 404.
    #[error("pipeline {pipeline:?} has no operator {operator:?}")]
    OperatorNotFound { pipeline: String, operator: String },
    /// 404: the key has no state.
    #[error("key {key:?} has no state in operator {operator:?}")]
    KeyNotFound { operator: String, key: String },
    /// 404: no such route.
    #[error("no route for {path}")]
    RouteNotFound { path: String },
    /// 405.
    #[error("{detail}")]
    MethodNotAllowed { detail: String },
    /// 409.
    #[error("pipeline {name:?} already exists")]
    PipelineExists { name: String },
    /// 409, with `checkpoint_id`.
    #[error("checkpoint {id} is running")]
    CheckpointRunning { id: i64 },
    /// 409.
    #[error("{detail}")]
    Conflict { detail: String },
    /// 404.
    #[error("checkpoint {id} does not exist")]
    CheckpointNotFound { id: i64 },
    /// 413.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 413: more events than a batch may hold.
    #[error("the batch holds {found} events; at most {limit} are allowed")]
    TooManyEvents { found: usize, limit: usize },
    /// 507: a capacity limit (pipelines, keys per pipeline) is reached; nothing was applied.
    #[error("{detail}")]
    LimitReached { detail: String },
    /// 415.
    #[error("{detail}")]
    UnsupportedMediaType { detail: String },
    /// 503 with `Retry-After`: a shard queue is full.
    #[error("pipeline {pipeline:?} is overloaded; retry shortly")]
    Overloaded { pipeline: String },
    /// 503 with `Retry-After`: more requests at once than the server takes.
    #[error("the server is at its limit of concurrent requests; retry shortly")]
    Busy,
    /// 503: the pipeline did not start: its WAL failed its check (restore a checkpoint, or
    /// `eddy wal repair`).
    #[error("pipeline {name:?} failed: {reason}")]
    PipelineFailed { name: String, reason: String },
    /// 503: recovery is not finished or the store does not answer.
    #[error("{detail}")]
    Unavailable { detail: String },
    /// 503 with `Retry-After`: cluster mode, the pipeline's leader is gone or being taken
    /// over.
    #[error(
        "pipeline {name:?} has no reachable leader right now (failover in progress); retry shortly"
    )]
    NoLeader { name: String },
    /// 503 with `Retry-After`: the store cannot be reached; the cause is logged.
    #[error("the checkpoint store ({store}) cannot be reached; retry shortly")]
    StoreUnavailable { store: &'static str, cause: String },
    /// 500: the cause is logged, the answer says nothing of it.
    #[error("internal error")]
    Internal { cause: String },
}

impl ApiError {
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadRequest { .. } | InvalidJson { .. } | InvalidEvents { .. } => {
                StatusCode::BAD_REQUEST
            }
            InvalidSpec { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Forbidden { .. } => StatusCode::FORBIDDEN,
            PipelineNotFound { .. }
            | OperatorNotFound { .. }
            | KeyNotFound { .. }
            | RouteNotFound { .. }
            | CheckpointNotFound { .. } => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            PipelineExists { .. } | CheckpointRunning { .. } | Conflict { .. } => {
                StatusCode::CONFLICT
            }
            PayloadTooLarge { .. } | TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            LimitReached { .. } => StatusCode::INSUFFICIENT_STORAGE,
            UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Overloaded { .. }
            | Unavailable { .. }
            | NoLeader { .. }
            | Busy
            | PipelineFailed { .. }
            | StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            BadRequest { .. } => "bad_request",
            InvalidJson { .. } => "invalid_json",
            InvalidEvents { .. } => "invalid_events",
            InvalidSpec { .. } => "invalid_spec",
            Unauthorized { .. } => "unauthorized",
            Forbidden { .. } => "forbidden",
            PipelineNotFound { .. } => "pipeline_not_found",
            OperatorNotFound { .. } => "operator_not_found",
            KeyNotFound { .. } => "key_not_found",
            RouteNotFound { .. } => "route_not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            PipelineExists { .. } => "pipeline_exists",
            CheckpointRunning { .. } => "checkpoint_running",
            Conflict { .. } => "conflict",
            CheckpointNotFound { .. } => "checkpoint_not_found",
            PayloadTooLarge { .. } => "payload_too_large",
            TooManyEvents { .. } => "too_many_events",
            LimitReached { .. } => "limit_reached",
            UnsupportedMediaType { .. } => "unsupported_media_type",
            Overloaded { .. } => "overloaded",
            Busy => "busy",
            Unavailable { .. } => "unavailable",
            NoLeader { .. } => "no_leader",
            PipelineFailed { .. } => "pipeline_failed",
            StoreUnavailable { .. } => "store_unavailable",
            Internal { .. } => "internal",
        }
    }

    /// A bad request with this detail.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            detail: detail.into(),
        }
    }

    /// An internal error whose cause chain is logged.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> ApiError {
        ApiError::Internal {
            cause: cause_chain(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal { cause } = &self {
            tracing::error!(error.cause_chain = %cause, "request failed");
        } else if let ApiError::StoreUnavailable { cause, .. } = &self {
            tracing::warn!(error.cause_chain = %cause, "request failed: the store cannot be reached");
        } else {
            tracing::debug!(status = status.as_u16(), code = self.code(), detail = %self, "request refused");
        }
        let errors = match &self {
            ApiError::InvalidEvents { errors } => Some(errors.iter().map(Into::into).collect()),
            ApiError::InvalidSpec { errors } => Some(errors.iter().map(Into::into).collect()),
            _ => None,
        };
        let checkpoint_id = match &self {
            ApiError::CheckpointRunning { id } => Some(*id),
            _ => None,
        };
        let mut response =
            problem_response(status, self.code(), self.to_string(), errors, checkpoint_id);
        if matches!(self, ApiError::Unauthorized { .. }) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"eddy\""),
            );
        }
        let retry_after = match self {
            ApiError::Overloaded { .. }
            | ApiError::Busy
            | ApiError::NoLeader { .. }
            | ApiError::Unavailable { .. } => Some("1"),
            // An outage outlasts a full queue: a client polling every second helps no one.
            ApiError::StoreUnavailable { .. } => Some("5"),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        response
    }
}

/// `e` and its sources, `: `-separated.
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    chain
}

/// A problem+json response: `title` is the status phrase, `code` the stable cause.
pub fn problem_response(
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Option<Vec<ProblemItem>>,
    checkpoint_id: Option<i64>,
) -> Response {
    let body = Problem {
        kind: problem_type(code),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        code,
        errors,
        checkpoint_id,
    };
    let mut response = (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // The HTTP metrics layer counts 503s by this reason.
        response
            .extensions_mut()
            .insert(crate::metrics::Rejection(code));
    }
    response
}

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The ONE place service errors become HTTP errors: each keeps its status, code and detail.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::PipelineNotFound { name } => ApiError::PipelineNotFound { name },
            ServiceError::PipelineFailed { name, reason } => {
                ApiError::PipelineFailed { name, reason }
            }
            e @ ServiceError::TooManyPipelines { .. } => ApiError::LimitReached {
                detail: e.to_string(),
            },
            e @ (ServiceError::Recovering | ServiceError::StoreSilent { .. }) => {
                ApiError::Unavailable {
                    detail: e.to_string(),
                }
            }
            e @ (ServiceError::Open { .. } | ServiceError::Task(_)) => ApiError::internal(&e),
            ServiceError::Store(e) => store_error(e),
            ServiceError::Engine(e) => engine_error(e),
            ServiceError::Checkpoint(e) => checkpoint_error(e),
            ServiceError::NoLeader { name } => ApiError::NoLeader { name },
            e @ ServiceError::PartitionUnavailable { .. } => ApiError::Unavailable {
                detail: format!("{e}; retry shortly"),
            },
            e @ ServiceError::Stream { .. } => ApiError::internal(&e),
        }
    }
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Overloaded { pipeline } => ApiError::Overloaded { pipeline },
        EngineError::UnknownOperator { pipeline, operator } => {
            ApiError::OperatorNotFound { pipeline, operator }
        }
        e @ (EngineError::Stopped { .. } | EngineError::Failed { .. }) => ApiError::Unavailable {
            detail: e.to_string(),
        },
        e @ EngineError::Reapply { .. } => ApiError::internal(&e),
        e @ EngineError::KeyLimit { .. } => ApiError::LimitReached {
            detail: e.to_string(),
        },
    }
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Duplicate { name } => ApiError::PipelineExists { name },
        StoreError::Fenced { pipeline, .. } => ApiError::NoLeader { name: pipeline },
        e @ StoreError::Unavailable { store, .. } => ApiError::StoreUnavailable {
            store,
            cause: cause_chain(&e),
        },
        e => ApiError::internal(&e),
    }
}

fn checkpoint_error(e: CheckpointError) -> ApiError {
    match e {
        CheckpointError::Running { id } => ApiError::CheckpointRunning { id },
        CheckpointError::NotFound { id } => ApiError::CheckpointNotFound { id },
        CheckpointError::NotRestorable { .. } | CheckpointError::Restoring { .. } => {
            ApiError::Conflict {
                detail: e.to_string(),
            }
        }
        CheckpointError::Engine(e) => engine_error(e),
        CheckpointError::Store(e) => store_error(e),
        e @ CheckpointError::PartitionsMissing { .. } => ApiError::Unavailable {
            detail: format!("the checkpoint failed: {e}; retry shortly"),
        },
        e @ (CheckpointError::Wal(_) | CheckpointError::Stream(_)) => ApiError::internal(&e),
    }
}

/// An engine-handle call's error (a handler's one call may be on the pipeline it got from
/// the service): the same mapping, through [`ServiceError`].
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        ServiceError::from(e).into()
    }
}

/// A store read of an answer's details: the same mapping, through [`ServiceError`].
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ServiceError::from(e).into()
    }
}
