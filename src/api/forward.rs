//! Cluster mode: a request for a pipeline this instance does not lead is forwarded over HTTP
//! to its leader, whole (method, path, query, headers, body streamed both ways: SSE and long
//! polls included), and the leader's answer is handed back as it is. While the pipeline has
//! no reachable leader (failover), the answer is 503 `no_leader` with `Retry-After`.
//!
//! Not forwarded: a batch of events (validated here first, then handed over), the output
//! feed (read from the pipeline's output stream at any instance), and the state of a
//! pipeline whose partitions are spread (read at the partitions' owners, from here).
//!
//! A forwarded request carries `Eddy-Forwarded-By`; an instance that is not the leader
//! either does not forward it again (it answers 503), so a request crosses at most one hop.

use super::AppState;
use super::problem::ApiError;
use crate::service::cluster::Cluster;
use crate::service::cluster::Route;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// The header a forwarded request carries (the forwarding node's id).
pub const FORWARDED_BY: &str = "eddy-forwarded-by";

/// Forwards a pipeline's request to its leader unless this instance answers it.
pub async fn to_leader(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = app.cluster.clone() else {
        return next.run(req).await;
    };
    let Some(name) = pipeline_of(req.uri().path()) else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    match (route.as_deref(), req.method()) {
        // A batch of events is validated here first: its handler forwards it
        // (`forward_batch`).
        (Some("/v1/pipelines/{name}/events"), &Method::POST) => return next.run(req).await,
        // The output feed is read from its stream, here (no leader needed).
        (Some("/v1/pipelines/{name}/output" | "/v1/pipelines/{name}/output/stream"), _) => {
            return next.run(req).await;
        }
        // State of a pipeline whose partitions are spread is read at their owners, from here.
        (Some("/v1/pipelines/{name}/operators/{op}/state"), &Method::GET)
            if matches!(app.spread(name).await, Ok(Some(_))) =>
        {
            return next.run(req).await;
        }
        _ => {}
    }
    let name = name.to_owned();
    match cluster.route(&name).await {
        Route::Here => next.run(req).await,
        Route::There(_) if req.headers().contains_key(FORWARDED_BY) => {
            ApiError::NoLeader { name }.into_response()
        }
        Route::There(url) => match forward(&cluster.http, cluster.node(), &url, req).await {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(pipeline = %name, leader = %url, reason = %e, "leader not reachable");
                ApiError::NoLeader { name }.into_response()
            }
        },
        Route::Unavailable => ApiError::NoLeader { name }.into_response(),
    }
}

/// The pipeline a path is about: `/v1/pipelines/{name}` and everything below it.
fn pipeline_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/pipelines/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// Headers of one connection, not of the request (RFC 9110 §7.6.1), and the length (the
/// body is streamed again).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

async fn forward(
    http: &reqwest::Client,
    node: &str,
    base: &str,
    req: Request,
) -> Result<Response, reqwest::Error> {
    let (parts, body) = req.into_parts();
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    send(
        http,
        node,
        base,
        &parts.method,
        &parts.uri,
        &parts.headers,
        body,
    )
    .await
}

/// Hands a batch of events, validated here, to the pipeline's leader at `base` (with the
/// request's own headers: its content type and Idempotency-Key) and answers its answer; a
/// leader that cannot be reached is 503 `no_leader`.
pub async fn forward_batch(
    cluster: &Cluster,
    name: &str,
    base: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let sent = send(
        &cluster.http,
        cluster.node(),
        base,
        &Method::POST,
        uri,
        headers,
        body.into(),
    )
    .await;
    sent.unwrap_or_else(|e| {
        tracing::info!(pipeline = %name, leader = %base, reason = %e, "leader not reachable");
        ApiError::NoLeader {
            name: name.to_owned(),
        }
        .into_response()
    })
}

/// Sends a request to `base` and passes its answer on, streamed.
async fn send(
    http: &reqwest::Client,
    node: &str,
    base: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: reqwest::Body,
) -> Result<Response, reqwest::Error> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = http
        .request(method.clone(), format!("{base}{target}"))
        .body(body);
    for (name, value) in headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let answer = out.header(FORWARDED_BY, node).send().await?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) || name == header::CONTENT_LENGTH {
            response = response.header(name, value);
        }
    }
    let body = Body::from_stream(answer.bytes_stream());
    Ok(response
        .body(body)
        .unwrap_or_else(|_| ApiError::internal(&NotForwarded).into_response()))
}

#[derive(Debug, thiserror::Error)]
#[error("the leader's answer could not be passed on")]
struct NotForwarded;

#[cfg(test)]
mod tests {
    use super::pipeline_of;

    #[test]
    fn the_pipeline_of_a_path_is_its_first_segment_after_pipelines() {
        assert_eq!(pipeline_of("/v1/pipelines/clicks"), Some("clicks"));
        assert_eq!(pipeline_of("/v1/pipelines/clicks/events"), Some("clicks"));
        assert_eq!(pipeline_of("/v1/pipelines/"), None);
        assert_eq!(pipeline_of("/v1/pipelines"), None);
        assert_eq!(pipeline_of("/v1/cluster"), None);
    }
}
