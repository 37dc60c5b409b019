//! Operations endpoints, problem+json for axum's own errors, and a broken store giving 500.

mod common;

use common::{Backend, TestServer, body_json, expect_problem};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::Ordering;

async fn health_and_readiness(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert_eq!(
        body_json(s.get("/healthz").await, StatusCode::OK).await,
        json!({"status": "ok"})
    );
    assert_eq!(
        body_json(s.get("/readyz").await, StatusCode::OK).await,
        json!({"status": "ready"})
    );
    s.state.ready.store(false, Ordering::Release);
    expect_problem(
        s.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    expect_problem(
        s.get("/v1/pipelines").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    assert_eq!(
        s.get("/healthz").await.status(),
        StatusCode::OK,
        "alive while not ready"
    );
}

async fn metrics_expose_ingest_and_per_pipeline_gauges(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    s.post_events("clicks", &json!({"user_id": "m", "ts": 1, "page": "/p"}))
        .await;
    let resp = s.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    for needle in [
        "eddy_pipeline_events_accepted_total{pipeline=\"clicks\"} 1",
        "eddy_batch_duration_seconds_bucket{pipeline=\"clicks\",le=",
        "eddy_pipeline_events_late_total{pipeline=\"clicks\"} 0",
        "eddy_pipeline_watermark_seconds{pipeline=\"clicks\"} -4.999",
        "eddy_operator_keys{pipeline=\"clicks\",operator=\"sessions\"} 1",
        "eddy_shard_queue_depth{pipeline=\"clicks\",shard=\"0\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let s = TestServer::start(backend).await;
    expect_problem(
        s.get("/v2/nothing").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;
    let put = s.client.put(s.url("/v1/pipelines")).send().await.unwrap();
    expect_problem(put, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

async fn every_answer_carries_a_request_id(backend: Backend) {
    let s = TestServer::start(backend).await;
    let resp = s.get("/healthz").await;
    assert!(!resp.headers()["x-request-id"].is_empty());
    let given = s
        .client
        .get(s.url("/healthz"))
        .header("x-request-id", "abc-1")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "abc-1");
}

async fn the_openapi_document_and_docs_are_served(backend: Backend) {
    let s = TestServer::start(backend).await;
    let doc = body_json(s.get("/openapi.json").await, StatusCode::OK).await;
    assert_eq!(doc, serde_json::to_value(eddy::api::openapi()).unwrap());
    let docs = s.get("/docs/").await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "an embedded renderer"
    );
}

async fn a_broken_store_gives_500_without_leaking_the_cause(backend: Backend) {
    let s = TestServer::start(backend).await;
    let url = &s.config.database_url;
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query("drop table pipelines cascade")
                .execute(&pool)
                .await
                .unwrap();
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query("drop table pipelines")
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    let resp = s.post_json("/v1/pipelines", &common::seed_spec()).await;
    let doc = expect_problem(resp, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    assert_eq!(doc["detail"], "internal error");
    assert_eq!(
        s.get("/healthz").await.status(),
        StatusCode::OK,
        "the server keeps serving"
    );
    expect_problem(
        s.get("/v1/pipelines/clicks").await,
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
    )
    .await;
}

backend_tests!(
    health_and_readiness,
    metrics_expose_ingest_and_per_pipeline_gauges,
    unknown_routes_and_methods_are_problems,
    every_answer_carries_a_request_id,
    the_openapi_document_and_docs_are_served,
    a_broken_store_gives_500_without_leaking_the_cause,
);
