//! Every input limit: configurable, answered with its documented status as problem+json,
//! nothing half-applied, and the server keeps serving.

mod common;

use common::{Backend, TestServer, body_json, expect_problem, seed_spec};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const EVENTS: &str = "/v1/pipelines/clicks/events";

fn click(user: &str) -> Value {
    json!({"user_id": user, "ts": 1, "page": "/p"})
}

/// Posting `body` as events is refused, its event named as nested too deep.
async fn expect_too_deep(s: &TestServer, body: String) {
    let doc = expect_problem(
        s.post_raw(EVENTS, Some("application/json"), body).await,
        StatusCode::BAD_REQUEST,
        "invalid_events",
    )
    .await;
    let detail = doc["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("recursion limit"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_events_in_a_batch_is_413_and_applies_nothing() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.max_batch_events = 3).await;
    s.create_seed().await;
    let resp = s
        .post_json(
            EVENTS,
            &json!([click("a"), click("b"), click("c"), click("d")]),
        )
        .await;
    expect_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "too_many_events").await;
    assert_eq!(s.status("clicks").await["events"], 0);
    s.post_events("clicks", &json!([click("a"), click("b"), click("c")]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_size_limit_is_named_and_the_batch_refused() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.max_event_bytes = 100).await;
    s.create_seed().await;
    let big = json!({"user_id": "b", "ts": 1, "page": "/p", "pad": "x".repeat(200)});
    let doc = expect_problem(
        s.post_json(EVENTS, &json!([click("a"), big])).await,
        StatusCode::BAD_REQUEST,
        "invalid_events",
    )
    .await;
    assert_eq!(doc["errors"][0]["index"], 1);
    assert!(
        doc["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("100 bytes")
    );
    assert_eq!(s.status("clicks").await["events"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_longer_than_1024_bytes_is_invalid() {
    let s = TestServer::start(Backend::Sqlite).await;
    s.create_seed().await;
    let doc = expect_problem(
        s.post_json(EVENTS, &click(&"k".repeat(1_025))).await,
        StatusCode::BAD_REQUEST,
        "invalid_events",
    )
    .await;
    assert!(
        doc["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("1024")
    );
    s.post_events("clicks", &click(&"k".repeat(1_024))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_400_and_the_server_keeps_serving() {
    let s = TestServer::start(Backend::Sqlite).await;
    s.create_seed().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // The outer array parses; its one element is too deep: a bad event, named.
    expect_too_deep(&s, deep.clone()).await;
    let deep_object = ["{\"a\":".repeat(100_000), "1".into(), "}".repeat(100_000)].concat();
    expect_too_deep(&s, deep_object).await;
    let deep_spec = s
        .post_raw("/v1/pipelines", Some("application/json"), deep)
        .await;
    expect_problem(deep_spec, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert_eq!(s.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_timeout_is_408() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.request_timeout = Duration::from_millis(300)
    })
    .await;
    s.create_seed().await;
    let resp = s.get("/v1/pipelines/clicks/output?wait=5s").await;
    expect_problem(resp, StatusCode::REQUEST_TIMEOUT, "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_are_shed_with_503() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.max_concurrent_requests = 1).await;
    s.create_seed().await;
    let (client, url) = (
        s.client.clone(),
        s.url("/v1/pipelines/clicks/output?wait=2s"),
    );
    let held = tokio::spawn(async move { client.get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = s.get("/v1/pipelines").await;
    assert_eq!(resp.headers()["retry-after"], "1");
    expect_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    body_json(s.get("/v1/pipelines").await, StatusCode::OK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_beyond_the_limit_are_507() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.max_pipelines = 1).await;
    s.create_seed().await;
    let mut second = seed_spec();
    second["name"] = json!("second");
    expect_problem(
        s.post_json("/v1/pipelines", &second).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "limit_reached",
    )
    .await;
    let list = body_json(s.get("/v1/pipelines").await, StatusCode::OK).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_per_pipeline_and_last_n_are_bounded_by_the_spec() {
    let s = TestServer::start(Backend::Sqlite).await;
    let ops: Vec<Value> = (0..65)
        .map(|i| json!({"name": format!("o{i}"), "kind": "latest", "value": "/v"}))
        .collect();
    let spec = json!({"name": "wide", "key": "/k", "operators": ops});
    let doc = expect_problem(
        s.post_json("/v1/pipelines", &spec).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_spec",
    )
    .await;
    assert_eq!(doc["errors"][0]["field"], "operators");
    let spec = json!({"name": "long", "key": "/k", "operators": [{"name": "n", "kind": "last_n", "value": "/v", "n": 1001}]});
    let doc = expect_problem(
        s.post_json("/v1/pipelines", &spec).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_spec",
    )
    .await;
    assert_eq!(doc["errors"][0]["field"], "operators[0].n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_key_keeps_at_most_its_entry_limit_and_existing_entries_still_update() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.engine.max_map_entries = 2).await;
    s.create_seed().await;
    let cart = |p: &str, q: i64| json!({"user_id": "u", "ts": 1, "page": "/p", "type": "cart", "product_id": p, "qty": q});
    s.post_events(
        "clicks",
        &json!([cart("a", 1), cart("b", 1), cart("c", 1), cart("a", 5)]),
    )
    .await;
    assert_eq!(
        s.state_of("clicks", "cart", "u").await,
        json!({"entries": {"a": 6, "b": 1}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_at_its_key_limit_refuses_batches_whole_with_507() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.engine.max_keys = 4).await;
    s.create_seed().await;
    // One event makes 3 keys (sessions, last_pages, page_views); two make 5.
    s.post_events("clicks", &json!([click("a"), click("b")]))
        .await;
    let resp = s.post_json(EVENTS, &click("c")).await;
    expect_problem(resp, StatusCode::INSUFFICIENT_STORAGE, "limit_reached").await;
    assert_eq!(
        s.status("clicks").await["events"],
        2,
        "nothing of the refused batch applied"
    );
    assert_eq!(s.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limits_admit_the_contracts_example_workload() {
    let s = TestServer::start(Backend::Sqlite).await;
    s.create_seed().await;
    let stream = eddy::workload::ClickStream {
        users: 2_000,
        ..Default::default()
    };
    for body in stream.ndjson_batches(20_000, 5_000) {
        let resp = s.post_raw(EVENTS, Some("application/x-ndjson"), body).await;
        body_json(resp, StatusCode::OK).await;
    }
    assert_eq!(s.status("clicks").await["events"], 20_000);
}
