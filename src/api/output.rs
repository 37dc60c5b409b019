//! `GET …/output` (paged, long-polling with `wait`) and `GET …/output/stream` (Server-Sent
//! Events, resumable with `Last-Event-ID`): closed sessions and windows in offset order.

use super::AppState;
use super::answers::OutputRecordAnswer;
use super::page_limit;
use super::problem::ApiError;
use crate::engine::{Output, OutputRecord};
use crate::spec::Span;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest `wait` of a long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_output))
        .routes(routes!(stream_output))
}

/// Query parameters of an output read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputParams {
    /// Records with offset above this (default: from the oldest kept).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Long-poll up to this duration (e.g. `5s`, at most `60s`) when there is no record yet.
    wait: Option<String>,
}

/// A page of output records.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputPage<'r> {
    pub records: Vec<OutputRecordAnswer<'r>>,
    /// Pass as `after` to read on.
    pub next: u64,
}

/// Read output records
#[utoipa::path(
    get, path = "/v1/pipelines/{name}/output", tag = "output",
    params(("name" = String, Path, description = "Pipeline name"), OutputParams),
    responses(
        (status = 200, description = "Records after `after`", body = OutputPage),
        (status = 400, description = "Bad limit or wait"),
        (status = 404, description = "No such pipeline"),
    )
)]
async fn get_output(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<OutputParams>,
) -> Result<Response, ApiError> {
    let pipeline = app.pipeline(&name)?;
    let limit = page_limit(params.limit)?;
    let wait = params
        .wait
        .as_deref()
        .map(parse_wait)
        .transpose()?
        .unwrap_or_default();
    let output = pipeline.output();
    let mut updates = output.subscribe();
    let after = offset_param(params.after)?;
    let (mut records, mut next) = output.read(after, limit);
    let deadline = tokio::time::Instant::now() + wait;
    let closed = pipeline.closed();
    while records.is_empty() && !wait.is_zero() {
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = app.shutdown.cancelled() => break,
            _ = closed.cancelled() => break,
        }
        (records, next) = output.read(Some(next), limit);
    }
    let records = records
        .iter()
        .map(|r| OutputRecordAnswer::from(&**r))
        .collect();
    Ok(Json(OutputPage { records, next }).into_response())
}

/// An `after` offset: 0 or more.
fn offset_param(after: Option<i64>) -> Result<Option<u64>, ApiError> {
    after
        .map(|a| {
            u64::try_from(a)
                .map_err(|_| ApiError::bad_request(format!("after must be 0 or more, not {a}")))
        })
        .transpose()
}

fn parse_wait(text: &str) -> Result<Duration, ApiError> {
    let span = Span::parse(text).map_err(|e| ApiError::bad_request(format!("wait: {e}")))?;
    let wait = Duration::from_millis(span.millis() as u64);
    if wait > MAX_WAIT {
        return Err(ApiError::bad_request("wait must be at most 60s"));
    }
    Ok(wait)
}

/// Query parameters of an output stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Records with offset above this; `Last-Event-ID` wins when both are given.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// End the stream after this many records (default: never). Lets a client that reads
    /// a whole answer before it returns (most generated clients) take a bounded part of the
    /// feed.
    #[param(minimum = 1)]
    limit: Option<u64>,
}

/// Stream output records (Server-Sent Events)
#[utoipa::path(
    get, path = "/v1/pipelines/{name}/output/stream", tag = "output",
    params(
        ("name" = String, Path, description = "Pipeline name"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]+$", description = "Resume after this output offset (the `id` of the last event received: decimal digits)"),
        StreamParams,
    ),
    responses(
        (status = 200, description = "Server-Sent Events: one event per record, `id` its offset, `data` its JSON (an `OutputRecordDoc`); comment lines keep the connection alive. Endless unless `limit` is given.", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad Last-Event-ID, after or limit"),
        (status = 404, description = "No such pipeline"),
    )
)]
async fn stream_output(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let pipeline = app.pipeline(&name)?;
    let last_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an output offset"))?,
        ),
        None => None,
    };
    let stop = CancellationToken::new();
    let (shutdown, closed, stop_on) = (app.shutdown.clone(), pipeline.closed(), stop.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {},
            _ = closed.cancelled() => {},
            _ = stop_on.cancelled() => {},
        }
        stop_on.cancel();
    });
    let remaining = match params.limit {
        Some(0) => return Err(ApiError::bad_request("limit must be at least 1")),
        limit => limit,
    };
    let feed = Feed {
        output: pipeline.output_handle(),
        after: last_id.or(offset_param(params.after)?),
        remaining,
        buffered: VecDeque::new(),
        stop: stop.clone(),
        _guard: stop.drop_guard(),
    };
    Ok(Sse::new(futures::stream::unfold(feed, Feed::next)).keep_alive(KeepAlive::default()))
}

/// The state of one SSE stream.
struct Feed {
    output: Arc<Output>,
    after: Option<u64>,
    /// Records still to send before the stream ends; `None`: endless.
    remaining: Option<u64>,
    buffered: VecDeque<Arc<OutputRecord>>,
    /// Cancelled on shutdown or pipeline deletion.
    stop: CancellationToken,
    /// Cancels `stop` when the client goes (the stream is dropped), ending the watcher task.
    _guard: tokio_util::sync::DropGuard,
}

impl Feed {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Feed)> {
        let stop = self.stop.clone();
        let mut updates = self.output.subscribe();
        loop {
            if self.remaining == Some(0) {
                return None;
            }
            if let Some(record) = self.buffered.pop_front() {
                self.remaining = self.remaining.map(|n| n - 1);
                let answer = OutputRecordAnswer::from(&*record);
                let data = serde_json::to_string(&answer).expect("records serialise");
                let event = Event::default().id(record.offset.to_string()).data(data);
                return Some((Ok(event), self));
            }
            let (records, next) = self.output.read(self.after, 1_000);
            self.after = Some(next);
            if !records.is_empty() {
                self.buffered.extend(records);
                continue;
            }
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return None },
                _ = stop.cancelled() => return None,
            }
        }
    }
}
