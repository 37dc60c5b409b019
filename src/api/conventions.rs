//! HTTP conventions around every answer: compression (gzip, br, zstd) of JSON and of the docs
//! assets, validators and cache lifetimes on the docs assets and the document, and CORS for
//! the configured origins only, and `Connection: close` on an answer given before its request's
//! body was read. None of it changes what an answer says.

use crate::config::CorsOrigins;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, ServiceExt};
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, DefaultPredicate};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Answers below this many bytes go uncompressed: the saving is a fraction of one packet and
/// costs a compressor's set-up (the events answer, ~50 bytes, is always below).
pub const MIN_COMPRESSED_BYTES: u16 = 1024;

/// Compresses answers of at least [`MIN_COMPRESSED_BYTES`] as the client accepts (gzip, br,
/// zstd), except Server-Sent Events, which must reach the client event by event, and images.
pub fn compression() -> CompressionLayer<impl Predicate> {
    // DefaultPredicate excludes SSE, gRPC and images, but with a 32-byte floor; ours adds to it.
    let predicate = DefaultPredicate::new().and(SizeAbove::new(MIN_COMPRESSED_BYTES));
    CompressionLayer::new().compress_when(predicate)
}

/// How long a client may keep a docs answer without asking again, by path; `None`: not a
/// docs answer (no validator added).
pub fn cache_policy(path: &str) -> Option<&'static str> {
    match path {
        // The page, its initializer (which names the document) and the document itself change
        // with the server: always revalidated, cheaply, with the ETag.
        "/openapi.json"
        | "/docs"
        | "/docs/"
        | "/docs/index.html"
        | "/docs/swagger-initializer.js" => Some("no-cache"),
        // The Swagger UI bundle, styles and icons change only with eddy's release.
        p if p.starts_with("/docs/") => Some("public, max-age=3600"),
        _ => None,
    }
}

/// A weak validator of a docs body: CRC-32C and length. Weak because the same ETag stands for
/// each content coding the compressor may apply outside this layer.
pub fn etag_of(body: &[u8]) -> String {
    format!("W/\"{:08x}-{:x}\"", crc32c::crc32c(body), body.len())
}

/// Whether an `If-None-Match` value names `etag` (weak comparison, RFC 9110 §13.1.2).
pub fn none_match(if_none_match: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .any(|candidate| opaque(candidate) == opaque(etag))
}

/// Adds `ETag` and `Cache-Control` to the docs assets and the document, and answers `304`
/// to a request that names the current ETag.
pub async fn docs_validators(req: Request, next: Next) -> Response {
    let Some(policy) = cache_policy(req.uri().path()) else {
        return next.run(req).await;
    };
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(req).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The assets are in memory already (vendored in the binary); the largest is ~1.5 MB.
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let etag = etag_of(&bytes);
    let headers = &mut parts.headers;
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("an ETag is ASCII"),
    );
    if if_none_match.is_some_and(|inm| none_match(&inm, &etag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The headers a browser page may send beyond the safelisted ones.
const ALLOWED_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("last-event-id"),
];

/// The answer headers a browser page may read beyond the safelisted ones.
const EXPOSED_HEADERS: [HeaderName; 6] = [
    HeaderName::from_static("idempotent-replayed"),
    header::RETRY_AFTER,
    header::ETAG,
    header::LOCATION,
    header::WWW_AUTHENTICATE,
    HeaderName::from_static("x-request-id"),
];

/// CORS for the configured origins.
#[derive(Clone)]
pub struct Cors {
    origins: CorsOrigins,
    layer: CorsLayer,
}

impl Cors {
    /// CORS for `origins`.
    pub fn new(origins: CorsOrigins) -> Cors {
        let allow = match &origins {
            CorsOrigins::Any => AllowOrigin::any(),
            CorsOrigins::Exact(list) => AllowOrigin::list(
                list.iter()
                    .map(|o| HeaderValue::from_str(o).expect("origins are checked at start")),
            ),
        };
        let layer = CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(ALLOWED_HEADERS)
            .expose_headers(EXPOSED_HEADERS)
            .max_age(Duration::from_secs(3600));
        Cors { origins, layer }
    }

    /// Whether a request from `origin` gets CORS answers.
    pub fn allows(&self, origin: &[u8]) -> bool {
        match &self.origins {
            CorsOrigins::Any => true,
            CorsOrigins::Exact(list) => list.iter().any(|o| o.as_bytes() == origin),
        }
    }
}

/// Requests from an allowed origin get CORS headers (a preflight is answered here); any other
/// request passes as if CORS were off: a refused origin's preflight gets no CORS header (a
/// `405` problem), and its other requests no `Access-Control-Allow-Origin`, so the browser
/// keeps the answer from the page.
pub async fn cors(
    axum::extract::State(cors): axum::extract::State<Cors>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| cors.allows(o.as_bytes()));
    if !allowed {
        let mut response = next.run(req).await;
        // The answer differs by origin: a cache must not hand this one to an allowed origin.
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("origin"));
        return response;
    }
    let inner = tower::service_fn(move |req: Request| {
        let next = next.clone();
        async move { Ok::<_, Infallible>(next.run(req).await) }
    });
    match cors.layer.layer(inner).oneshot(req).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// Says `Connection: close` on an answer given before its request's body was read to the end
/// (a retry answered by its idempotency key, a 404 or 415 before the body, a 413 part way):
/// the server then closes the connection rather than read the rest, and a keep-alive client
/// that was not told so would send its next request into a closing connection.
pub async fn close_when_body_unread(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let watched = read.clone();
    let req = req.map(|inner| {
        Body::new(WatchedBody {
            inner,
            read: watched,
        })
    });
    let mut response = next.run(req).await;
    if !read.load(Ordering::Acquire) {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
    }
    response
}

/// A request body that notes when it has been read to its end.
struct WatchedBody {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let etag = etag_of(b"swagger");
        assert!(none_match(&etag, &etag));
        assert!(none_match(&etag.replace("W/", ""), &etag));
        assert!(none_match(&format!("\"other\", {etag}"), &etag));
        assert!(none_match("*", &etag));
        assert!(!none_match("\"other\"", &etag));
        assert!(!none_match(&etag_of(b"swagger!"), &etag));
    }

    #[test]
    fn only_docs_answers_get_a_cache_policy() {
        assert_eq!(cache_policy("/docs/"), Some("no-cache"));
        assert_eq!(cache_policy("/openapi.json"), Some("no-cache"));
        assert_eq!(
            cache_policy("/docs/swagger-ui-bundle.js"),
            Some("public, max-age=3600")
        );
        assert_eq!(cache_policy("/v1/pipelines"), None);
        assert_eq!(cache_policy("/docsx"), None);
    }

    #[test]
    fn exact_origins_are_matched_exactly() {
        let cors = Cors::new(CorsOrigins::Exact(vec!["https://a.example".into()]));
        assert!(cors.allows(b"https://a.example"));
        assert!(!cors.allows(b"https://a.example.evil"));
        assert!(!cors.allows(b"http://a.example"));
        assert!(Cors::new(CorsOrigins::Any).allows(b"https://anyone.example"));
    }
}
