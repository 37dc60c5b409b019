//! `GET …/output` (paged, long-polling with `wait`) and `GET …/output/stream` (Server-Sent
//! Events, resumable with `Last-Event-ID`): closed sessions and windows in offset order.

use super::AppState;
use super::answers::OutputRecordAnswer;
use super::page_limit;
use super::problem::ApiError;
use crate::engine::{Output, OutputRecord, Pipeline};
use crate::log::outputs::OutputFeed;
use crate::service::cluster::Cluster;
use crate::spec::Span;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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
    let origin = origin(&app, &name).await?;
    let limit = page_limit(params.limit)?;
    let wait = params
        .wait
        .as_deref()
        .map(parse_wait)
        .transpose()?
        .unwrap_or_default();
    let after = offset_param(params.after)?;
    let pipeline = match origin {
        Origin::Here(pipeline) => pipeline,
        Origin::Stream(cluster) => {
            return stream_page(&app, cluster, &name, after, limit, wait).await;
        }
    };
    let output = pipeline.output();
    let mut updates = output.subscribe();
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

/// Where `name`'s output is read; 404 unless the pipeline is here or (cluster mode) defined,
/// wherever it is led.
async fn origin<'a>(app: &'a AppState, name: &str) -> Result<Origin<'a>, ApiError> {
    let Some(cluster) = &app.cluster else {
        return Ok(Origin::Here(app.pipeline(name)?));
    };
    match app.edge(cluster, name).await? {
        Some(_) => {
            // Spread partitions publish their records themselves: each catches up with the
            // log first, so the stream holds every record of what was acknowledged.
            if let Some(spec) = cluster.spec(name).filter(|s| s.partitions > 1) {
                cluster.sync_partitions(&spec).await?;
            }
            Ok(Origin::Stream(cluster))
        }
        None => Err(ApiError::PipelineNotFound {
            name: name.to_owned(),
        }),
    }
}

/// A page of records as stored in the output stream (each its record's JSON): the same
/// document as [`OutputPage`].
#[derive(Serialize)]
struct StoredPage {
    records: Vec<Box<RawValue>>,
    next: u64,
}

/// Cluster mode: a page read from the pipeline's output stream, which holds every record
/// of every batch answered before the request (a batch is answered once its records are
/// there), whoever leads.
async fn stream_page(
    app: &AppState,
    cluster: &Cluster,
    name: &str,
    after: Option<u64>,
    limit: usize,
    wait: Duration,
) -> Result<Response, ApiError> {
    let mut outputs = cluster.streams.outputs(name).await.map_err(unreadable)?;
    let mut next = match after {
        Some(after) => after,
        None => outputs
            .stored()
            .await
            .map_err(unreadable)?
            .0
            .saturating_sub(1),
    };
    let mut feed = outputs.feed(after).await.map_err(unreadable)?;
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut first = true;
    while records.len() < limit {
        let caught_up = feed.caught_up();
        if caught_up && (!records.is_empty() || wait.is_zero()) {
            break;
        }
        // Records stored come at once; a silence that long is a server that stopped.
        let until = match caught_up {
            true => deadline,
            false => tokio::time::Instant::now() + STREAM_SILENCE,
        };
        let message = tokio::select! {
            message = tokio::time::timeout_at(until, feed.next()) => message,
            _ = app.shutdown.cancelled() => break,
        };
        let (offset, payload) = match message {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(unreadable(e)),
            Err(_) if caught_up => break,
            Err(_) => return Err(unreadable("no record for 30 s")),
        };
        if first && after.is_none() {
            next = offset - 1;
        }
        first = false;
        if let Some(record) = stored_record(payload, offset) {
            records.push(record);
            next = offset;
        }
    }
    Ok(Json(StoredPage { records, next }).into_response())
}

/// How long a read of records the stream holds may wait for the next one.
const STREAM_SILENCE: Duration = Duration::from_secs(30);

/// A stored message's record (`None`: an offset without a record, or not ours). A
/// partition's record is stored without its offset, which is its sequence `offset`.
fn stored_record(payload: bytes::Bytes, offset: u64) -> Option<Box<RawValue>> {
    if payload.is_empty() {
        return None;
    }
    let mut text = String::from_utf8(payload.to_vec()).ok()?;
    if !text.starts_with("{\"offset\":") && text.starts_with('{') && text.len() > 2 {
        text = format!("{{\"offset\":{offset},{}", &text[1..]);
    }
    RawValue::from_string(text).ok()
}

/// The output stream cannot be read: 503, retry.
fn unreadable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable {
        detail: format!("the output feed cannot be read right now ({e}); retry shortly"),
    }
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
    let origin = origin(&app, &name).await?;
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
    // In cluster mode the stream of a deleted pipeline goes, which ends the feed.
    let closed = match &origin {
        Origin::Here(pipeline) => pipeline.closed(),
        Origin::Stream(_) => CancellationToken::new(),
    };
    let (shutdown, stop_on) = (app.shutdown.clone(), stop.clone());
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
    let after = last_id.or(offset_param(params.after)?);
    let source = match origin {
        Origin::Here(pipeline) => Source::Memory {
            output: pipeline.output_handle(),
            buffered: VecDeque::new(),
        },
        Origin::Stream(cluster) => {
            let outputs = cluster.streams.outputs(&name).await.map_err(unreadable)?;
            Source::Stream(Box::new(outputs.feed(after).await.map_err(unreadable)?))
        }
    };
    let feed = Feed {
        source,
        after,
        remaining,
        stop: stop.clone(),
        _guard: stop.drop_guard(),
    };
    Ok(Sse::new(futures::stream::unfold(feed, Feed::next)).keep_alive(KeepAlive::default()))
}

/// The state of one SSE stream.
struct Feed {
    source: Source,
    after: Option<u64>,
    /// Records still to send before the stream ends; `None`: endless.
    remaining: Option<u64>,
    /// Cancelled on shutdown or pipeline deletion.
    stop: CancellationToken,
    /// Cancels `stop` when the client goes (the stream is dropped), ending the watcher task.
    _guard: tokio_util::sync::DropGuard,
}

/// Where a pipeline's output is read: from the pipeline served here, or (cluster mode) from
/// its output stream.
enum Origin<'a> {
    Here(Arc<Pipeline>),
    Stream(&'a Cluster),
}

/// Where a feed's records come from.
enum Source {
    /// The output log of a pipeline served here.
    Memory {
        output: Arc<Output>,
        buffered: VecDeque<Arc<OutputRecord>>,
    },
    /// Cluster mode: the pipeline's output stream, read from `after` on.
    Stream(Box<OutputFeed>),
}

impl Feed {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Feed)> {
        if self.remaining == Some(0) {
            return None;
        }
        let stop = self.stop.clone();
        let (offset, data) = match &mut self.source {
            Source::Memory { output, buffered } => {
                let record = next_in_memory(output, buffered, &mut self.after, &stop).await?;
                let answer = OutputRecordAnswer::from(&*record);
                let data = serde_json::to_string(&answer).expect("records serialise");
                (record.offset, data)
            }
            Source::Stream(feed) => loop {
                let message = tokio::select! {
                    message = feed.next() => message,
                    _ = stop.cancelled() => return None,
                };
                match message {
                    Ok(Some((offset, payload))) => {
                        if let Some(record) = stored_record(payload, offset) {
                            break (offset, record.get().to_owned());
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::info!(reason = %e, "output stream feed ended");
                        return None;
                    }
                }
            },
        };
        self.remaining = self.remaining.map(|n| n - 1);
        let event = Event::default().id(offset.to_string()).data(data);
        Some((Ok(event), self))
    }
}

/// The next record after `after` of a pipeline served here; waits for one.
async fn next_in_memory(
    output: &Output,
    buffered: &mut VecDeque<Arc<OutputRecord>>,
    after: &mut Option<u64>,
    stop: &CancellationToken,
) -> Option<Arc<OutputRecord>> {
    let mut updates = output.subscribe();
    loop {
        if let Some(record) = buffered.pop_front() {
            return Some(record);
        }
        let (records, next) = output.read(*after, 1_000);
        *after = Some(next);
        if !records.is_empty() {
            buffered.extend(records);
            continue;
        }
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { return None },
            _ = stop.cancelled() => return None,
        }
    }
}
