//! `POST …/events` and `POST …/watermark`: ingest. The body is read once, under the configured
//! limit, parsed and validated as one atomic batch, then sequenced. The answer comes once the
//! batch is applied (and, with the WAL, durable). In cluster mode a batch for a pipeline led
//! elsewhere is validated here the same way, then handed to its leader.

use super::AppState;
use super::forward::forward_batch;
use super::problem::ApiError;
use crate::engine::{
    Ack, Arrival, BatchError, BatchLimits, BodyFormat, Extractor, Ingested, ParsedBatch,
    Submission, parse_batch_limited,
};
use crate::service::cluster::{Cluster, Route};
use axum::Json;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use std::time::Instant;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // The events route enforces its own (configurable) limit while reading the body.
        .routes(routes!(post_events))
        .layer(DefaultBodyLimit::disable())
        .merge(OpenApiRouter::new().routes(routes!(post_watermark)))
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsAccepted {
    pub accepted: u64,
    /// Offset of the batch's first event (offsets start at 1 and are never reused).
    pub first_offset: u64,
    pub last_offset: u64,
}

impl From<Ack> for EventsAccepted {
    fn from(ack: Ack) -> EventsAccepted {
        EventsAccepted {
            accepted: ack.accepted,
            first_offset: ack.first_offset,
            last_offset: ack.last_offset,
        }
    }
}

/// An event: a JSON object whose fields the pipeline's pointers address.
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[expect(
    dead_code,
    reason = "request schema only: the batch is read by the fast scanner"
)]
pub struct Event(serde_json::Map<String, Value>);

/// A JSON events body: one event, or an array of them (one atomic batch).
#[derive(ToSchema)]
#[serde(untagged)]
#[expect(
    dead_code,
    reason = "request schema only: the batch is read by the fast scanner"
)]
pub enum EventsBody {
    One(Event),
    Many(Vec<Event>),
}

/// An NDJSON events body: UTF-8 text, one event object per line (blank lines are skipped).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[expect(
    dead_code,
    reason = "request schema only: the batch is read by the fast scanner"
)]
pub struct NdjsonEvents(Vec<u8>);

/// A watermark advance.
#[derive(ToSchema)]
#[expect(dead_code, reason = "request schema only: the body is read as JSON")]
pub struct WatermarkRequest {
    /// Epoch ms, or `"max"` (end of stream: closes everything).
    time: WatermarkTime,
}

/// A watermark time: epoch milliseconds, or `"max"`.
#[derive(ToSchema)]
#[expect(dead_code, reason = "request schema only: the body is read as JSON")]
#[serde(untagged)]
pub enum WatermarkTime {
    Millis(i64),
    End(EndOfStream),
}

/// The end of the stream.
#[derive(ToSchema)]
#[expect(dead_code, reason = "request schema only: the body is read as JSON")]
#[serde(rename_all = "lowercase")]
pub enum EndOfStream {
    Max,
}

/// The watermark after an advance.
#[derive(Debug, Serialize, ToSchema)]
pub struct WatermarkResponse {
    pub watermark: Option<i64>,
}

/// Longest idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 256;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => Ok(Some(key.to_owned())),
        _ => Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))),
    }
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let unsupported = |found: &str| ApiError::UnsupportedMediaType {
        detail: format!(
            "content type must be application/json or application/x-ndjson, not {found}"
        ),
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported("none"));
    };
    let text = value
        .to_str()
        .map_err(|_| unsupported("an unreadable header"))?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" => Ok(BodyFormat::NdJson),
        _ => Err(unsupported(text)),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    // A declared length over the limit is refused before a byte of it is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = e
            .into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        match too_large {
            true => ApiError::PayloadTooLarge { limit },
            false => ApiError::bad_request("the request body could not be read"),
        }
    })
}

/// Post a batch of events
#[utoipa::path(
    post, path = "/v1/pipelines/{name}/events", tag = "events",
    params(
        ("name" = String, Path, description = "Pipeline name"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 256, description = "Answer a retry with the first answer (1 to 256 visible ASCII characters)"),
    ),
    request_body(
        description = "One event object or an array of them (JSON), or one object per line (NDJSON)",
        content(
            (EventsBody = "application/json"),
            (NdjsonEvents = "application/x-ndjson"),
        )
    ),
    responses(
        (status = 200, description = "The batch is durable and applied (or, with a known Idempotency-Key, its first answer, with `Idempotent-Replayed: true`)", body = EventsAccepted),
        (status = 400, description = "Invalid events (`errors`) or unparseable body"),
        (status = 404, description = "No such pipeline"),
        (status = 413, description = "Body or number of events over the limit"),
        (status = 507, description = "The pipeline holds as many keys as it may; nothing applied"),
        (status = 415, description = "Missing or other content type"),
        (status = 503, description = "Overloaded: retry after `Retry-After` seconds"),
    )
)]
async fn post_events(
    State(app): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    if let Some(cluster) = app.cluster.clone() {
        match cluster.route(&name).await {
            Route::Here => {}
            Route::There(leader) => {
                return validate_and_forward(&app, &cluster, &name, &leader, &uri, &headers, body)
                    .await;
            }
            Route::Unavailable => return Err(ApiError::NoLeader { name }),
        }
    }
    let pipeline = app.pipeline(&name)?;
    let idempotency_key = idempotency_key(&headers)?;
    if let Some(key) = &idempotency_key
        && let Some(ack) = pipeline.first_answer(key).await
    {
        let mut response = Json(EventsAccepted::from(ack)).into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }
    let format = body_format(&headers)?;
    let bytes = read_body(body, app.config.max_body_bytes).await?;
    let events = parse(&app, &bytes, format, pipeline.extractor())?;
    let submission = Submission {
        events,
        // Read by the sequencer when it orders the batch, not here: a time read before its
        // lock could land below the watermark of a batch that won the race for it.
        arrival: Arrival::Now,
        idempotency_key,
        body: Some((bytes, format)),
    };
    let (ack, replayed) = match pipeline.submit(submission).await? {
        Ingested::Applied(ack) => (ack, false),
        Ingested::Replayed(ack) => (ack, true),
    };
    if !replayed {
        let batch = &pipeline.metrics().batch_duration;
        batch.record(started.elapsed().as_secs_f64());
    }
    let body = Json(EventsAccepted::from(ack));
    let mut response = body.into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The events of a body, checked against the limits and the pipeline's fields.
fn parse(
    app: &AppState,
    bytes: &Bytes,
    format: BodyFormat,
    extractor: &Extractor,
) -> Result<ParsedBatch, ApiError> {
    let limits = BatchLimits {
        max_events: app.config.max_batch_events,
        max_event_bytes: app.config.max_event_bytes,
    };
    parse_batch_limited(bytes, format, extractor, limits).map_err(|e| match e {
        BatchError::TooManyEvents { found, limit } => ApiError::TooManyEvents { found, limit },
        BatchError::Syntax(detail) => ApiError::InvalidJson { detail },
        BatchError::Empty => ApiError::bad_request(e.to_string()),
        BatchError::Invalid(errors) => ApiError::InvalidEvents { errors },
    })
}

/// Cluster mode, a pipeline led elsewhere: the batch is read and checked here as its leader
/// would (bad input is answered here and never reaches it), then handed to the leader.
async fn validate_and_forward(
    app: &AppState,
    cluster: &Cluster,
    name: &str,
    leader: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    idempotency_key(headers)?;
    let format = body_format(headers)?;
    let bytes = read_body(body, app.config.max_body_bytes).await?;
    // A definition this instance has not read yet is checked by the leader alone.
    if let Some(extractor) = app.edge(cluster, name).await? {
        parse(app, &bytes, format, &extractor)?;
    }
    Ok(forward_batch(cluster, name, leader, uri, headers, bytes).await)
}

fn watermark_time(body: &[u8]) -> Result<i64, ApiError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson {
        detail: e.to_string(),
    })?;
    let expected = "body must be {\"time\": <epoch ms integer> | \"max\"}";
    let obj = doc
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| ApiError::bad_request(expected))?;
    match obj.get("time") {
        Some(Value::String(s)) if s == "max" => Ok(i64::MAX),
        Some(t) => t.as_i64().ok_or_else(|| ApiError::bad_request(expected)),
        None => Err(ApiError::bad_request(expected)),
    }
}

/// Advance the watermark
#[utoipa::path(
    post, path = "/v1/pipelines/{name}/watermark", tag = "events",
    params(("name" = String, Path, description = "Pipeline name")),
    request_body(content = WatermarkRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The watermark now (a lower time is ignored)", body = WatermarkResponse),
        (status = 400, description = "Bad body"),
        (status = 404, description = "No such pipeline"),
        (status = 503, description = "Overloaded"),
    )
)]
async fn post_watermark(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<WatermarkResponse>, ApiError> {
    let pipeline = app.pipeline(&name)?;
    let time = watermark_time(&body)?;
    let watermark = pipeline.advance_watermark(time).await?;
    Ok(Json(WatermarkResponse { watermark }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_bodies_take_an_integer_or_max_only() {
        assert_eq!(watermark_time(br#"{"time": 5}"#).unwrap(), 5);
        assert_eq!(watermark_time(br#"{"time": "max"}"#).unwrap(), i64::MAX);
        for bad in [
            &br#"{"time": 1.5}"#[..],
            br#"{"time": "soon"}"#,
            br#"{}"#,
            br#"[5]"#,
            br#"{"time": 1, "x": 2}"#,
        ] {
            assert!(matches!(
                watermark_time(bad),
                Err(ApiError::BadRequest { .. })
            ));
        }
        assert!(matches!(
            watermark_time(b"nope"),
            Err(ApiError::InvalidJson { .. })
        ));
    }

    #[test]
    fn content_types_are_matched_on_their_essence() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            body_format(&h)
        };
        assert_eq!(
            with("application/json; charset=utf-8").unwrap(),
            BodyFormat::Json
        );
        assert_eq!(with("Application/X-NDJSON").unwrap(), BodyFormat::NdJson);
        assert!(with("text/plain").is_err());
        assert!(body_format(&HeaderMap::new()).is_err());
    }
}
