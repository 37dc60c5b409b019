//! Every input limit: configurable, answered with its documented status as problem+json,
//! nothing half-applied, and the server keeps serving.

mod common;

use common::{Backend, TestServer, body_json, expect_problem, seed_spec};
use eddy::config::{Config, Settings};
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

/// Peak resident memory of this process so far (Linux), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A server with the defaults of `eddy serve` (no tweak of any limit) on `backend`.
async fn server_with_defaults(backend: Backend) -> TestServer {
    let dir = tempfile::TempDir::new().unwrap();
    let url = common::database_for(backend, dir.path()).await;
    let settings = Settings {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_owned()),
        database_url: Some(url),
        ..Settings::default()
    };
    TestServer::start_config(Config::resolve(settings).unwrap(), Some(dir)).await
}

async fn a_12_mib_body_of_190_000_events_is_accepted_by_default(backend: Backend) {
    let s = server_with_defaults(backend).await;
    s.create_seed().await;
    let mut body = Vec::new();
    let mut events = 0;
    while body.len() < 12 * 1024 * 1024 - 100 {
        let line = format!(
            "{{\"user_id\":\"u{:04}\",\"ts\":{},\"page\":\"/p{}\"}}\n",
            events % 5_000,
            1_700_000_000_000_i64 + events,
            events % 7
        );
        body.extend_from_slice(line.as_bytes());
        events += 1;
    }
    assert!(events > 190_000, "{events} events");
    let resp = s.post_raw(EVENTS, Some("application/x-ndjson"), body).await;
    let ack = body_json(resp, StatusCode::OK).await;
    assert_eq!(ack["accepted"], events);
    assert_eq!(s.status("clicks").await["events"], events);
}

async fn a_16_mib_body_of_two_million_tiny_events_is_accepted_in_bounded_memory(backend: Backend) {
    let s = server_with_defaults(backend).await;
    let spec = json!({"name": "tiny", "key": "/k",
                      "operators": [{"name": "n", "kind": "window", "size": "1h", "functions": ["count"]}]});
    body_json(
        s.post_json("/v1/pipelines", &spec).await,
        StatusCode::CREATED,
    )
    .await;
    let line = b"{\"k\":1}\n";
    let events = (16 * 1024 * 1024 - 1) / line.len();
    let body = line.repeat(events);
    let before = peak_rss();
    let resp = s
        .post_raw(
            "/v1/pipelines/tiny/events",
            Some("application/x-ndjson"),
            body,
        )
        .await;
    let ack = body_json(resp, StatusCode::OK).await;
    assert_eq!(ack["accepted"], events);
    // About 290 MiB today (the parsed events, routed, beside the body and its WAL record);
    // 64 bytes held per byte of body would be absurd.
    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "{events} events of 8 bytes: peak RSS grew by {} MiB",
        grown >> 20
    );
    assert!(grown < 1 << 30, "peak RSS grew by {} MiB", grown >> 20);
    let status = s.status("tiny").await;
    assert_eq!(status["events"], events);
    assert_eq!(status["late_events"], 0);
}

async fn an_event_of_2_mib_is_accepted_by_default(backend: Backend) {
    let s = server_with_defaults(backend).await;
    s.create_seed().await;
    let big = json!({"user_id": "big", "ts": 1, "page": "/p", "pad": "x".repeat(2 << 20)});
    s.post_events("clicks", &json!([click("a"), big])).await;
    assert_eq!(s.status("clicks").await["events"], 2);
}

backend_tests!(
    a_12_mib_body_of_190_000_events_is_accepted_by_default,
    a_16_mib_body_of_two_million_tiny_events_is_accepted_in_bounded_memory,
    an_event_of_2_mib_is_accepted_by_default,
);
