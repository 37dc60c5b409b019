//! The HTTP middleware of the service, outermost first as `app::router` stacks them: the
//! request span, the HTTP metrics with the shed-request log, problem+json for the answers
//! axum and tower make themselves, the readiness gate, and the shed and no-route answers.

use super::AppState;
use super::problem::{ApiError, PROBLEM_JSON, problem_response};
use crate::clock::now_ms;
use crate::metrics::{LogLimit, Rejection};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

/// The span of a request: its method, route template and request id.
pub fn request_span(req: &Request) -> tracing::Span {
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
}

/// Counts and times every answered request by route template, and each 503 by reason; logs
/// shed requests (at most one line per second per reason, with how many were not logged).
pub async fn record_http(req: Request, next: Next) -> Response {
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
pub async fn shed_error(error: tower::BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Busy
    } else {
        ApiError::Internal {
            cause: error.to_string(),
        }
    }
}

/// No route matched the path.
pub async fn route_not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound {
        path: req.uri().path().to_owned(),
    }
}

/// The API answers 503 until start-up (and recovery) is done.
pub async fn require_ready(State(state): State<AppState>, req: Request, next: Next) -> Response {
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
pub async fn problem_for_bare_errors(response: Response) -> Response {
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
