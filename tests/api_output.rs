//! The output feed over real HTTP: paging by offset, long-polling, and Server-Sent Events with
//! `Last-Event-ID` resume; on SQLite and PostgreSQL.

mod common;

use common::{Backend, FeedReader, SseEvents, TestServer, body_json, expect_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const OUTPUT: &str = "/v1/pipelines/clicks/output";

/// Closes `n` sessions, one per user, at once.
async fn close_sessions(s: &TestServer, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"user_id": format!("u{i:03}"), "ts": 1_000, "page": "/p"}))
        .collect();
    s.post_events("clicks", &Value::Array(events)).await;
    let wm = s
        .post_json(
            "/v1/pipelines/clicks/watermark",
            &json!({"time": 10_000_000}),
        )
        .await;
    body_json(wm, StatusCode::OK).await;
}

fn offsets(page: &Value) -> Vec<u64> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect()
}

async fn records_page_by_offset_to_the_end(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    close_sessions(&s, 5).await;
    // 5 sessions and 1 window (all events on one page, one minute).
    let all = body_json(s.get(OUTPUT).await, StatusCode::OK).await;
    assert_eq!(offsets(&all), [1, 2, 3, 4, 5, 6]);
    assert_eq!(all["next"], 6);
    let first = &all["records"][0];
    assert_eq!(first["type"], "session_closed");
    assert_eq!(first["operator"], "sessions");
    assert_eq!(first["key"], "u000");
    assert_eq!(
        first["value"],
        json!({"start": 1000, "end": 1000, "duration_ms": 0, "events": 1})
    );
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = body_json(
            s.get(&format!("{OUTPUT}?after={after}&limit=4")).await,
            StatusCode::OK,
        )
        .await;
        if offsets(&page).is_empty() {
            assert_eq!(page["next"], after, "an empty page keeps the position");
            break;
        }
        seen.extend(offsets(&page));
        after = page["next"].as_u64().unwrap();
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    let window = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "window_closed")
        .unwrap();
    assert_eq!(
        window["value"],
        json!({"start": 0, "end": 60_000, "closed": true, "count": 5})
    );
}

async fn a_long_poll_returns_as_soon_as_a_record_arrives(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let (client, url) = (
        s.client.clone(),
        s.url(&format!("{OUTPUT}?after=0&wait=20s")),
    );
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        client
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    close_sessions(&s, 1).await;
    let page = poll.await.unwrap();
    assert!(!offsets(&page).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the poll did not wait for its deadline"
    );
}

async fn a_long_poll_with_nothing_new_answers_empty_after_its_wait(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let started = Instant::now();
    let page = body_json(
        s.get(&format!("{OUTPUT}?after=0&wait=300ms")).await,
        StatusCode::OK,
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(page, json!({"records": [], "next": 0}));
}

async fn bad_output_parameters_are_400_and_an_unknown_pipeline_404(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    for bad in ["wait=5%20s", "wait=2m", "limit=0", "limit=5000", "after=-1"] {
        expect_problem(
            s.get(&format!("{OUTPUT}?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    expect_problem(
        s.get("/v1/pipelines/nope/output").await,
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
    )
    .await;
    expect_problem(
        s.get("/v1/pipelines/nope/output/stream").await,
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
    )
    .await;
}

/// Reads `n` events (id, data) from an SSE response.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<(u64, Value)> {
    let mut events = SseEvents::new(resp);
    let mut read = Vec::new();
    while read.len() < n {
        read.push(events.next().await);
    }
    read
}

async fn server_sent_events_stream_records_and_resume_after_last_event_id(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let stream = s.get(&format!("{OUTPUT}/stream")).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    close_sessions(&s, 3).await;
    let first = read_events(stream, 2).await;
    assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(first[0].1["offset"], 1);
    assert_eq!(first[0].1["type"], "session_closed");
    // The client drops after id 2 and resumes.
    let resumed = s
        .client
        .get(s.url(&format!("{OUTPUT}/stream")))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let rest = read_events(resumed, 2).await;
    assert_eq!(rest.iter().map(|e| e.0).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(rest[1].1["type"], "window_closed");
    let bad = s
        .client
        .get(s.url(&format!("{OUTPUT}/stream")))
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    expect_problem(bad, StatusCode::BAD_REQUEST, "bad_request").await;
}

/// One tumbling count window of 1 s per key, in event time.
fn window_spec() -> Value {
    json!({"name": "w", "key": "/k", "time": {"field": "/ts"},
           "operators": [{"name": "counts", "kind": "window", "size": "1s", "functions": ["count"]}]})
}

/// The record of key `k`'s window `[start, start + 1s)` closed with one event, at `offset`.
fn closed_window(offset: u64, start: i64) -> Value {
    json!({"offset": offset, "operator": "counts", "key": "k", "type": "window_closed",
           "value": {"start": start, "end": start + 1_000, "closed": true, "count": 1}})
}

/// Posts one event of key `k` per time, in order: each closes the window before it.
async fn post_times(s: &TestServer, times: &[i64]) {
    let events: Vec<Value> = times.iter().map(|t| json!({"k": "k", "ts": t})).collect();
    s.post_events("w", &Value::Array(events)).await;
}

/// Offsets of a read of `w`'s feed with `query`.
async fn read_offsets(s: &TestServer, query: &str) -> Vec<u64> {
    let page = body_json(
        s.get(&format!("/v1/pipelines/w/output?{query}")).await,
        StatusCode::OK,
    )
    .await;
    offsets(&page)
}

async fn pages_long_polls_and_streams_cross_the_offset_gap_a_restore_leaves(backend: Backend) {
    let s = TestServer::start(backend).await;
    let created = s.post_json("/v1/pipelines", &window_spec()).await;
    body_json(created, StatusCode::CREATED).await;
    let mut reader = FeedReader::new("w");
    post_times(&s, &[0, 1_000]).await;
    let cp = s.checkpoint("w").await;
    post_times(&s, &[2_000, 3_000]).await;
    reader.catch_up(&s.client, &s.base).await;
    let mut expected = vec![
        closed_window(1, 0),
        closed_window(2, 1_000),
        closed_window(3, 2_000),
    ];
    reader.assert_saw(&expected);

    // Offsets 2 and 3 are dropped and never reused: the kept records are 1, 4, 5, 6.
    let restore = format!("/v1/pipelines/w/checkpoints/{}/restore", cp["id"]);
    body_json(s.post(&restore).await, StatusCode::OK).await;
    post_times(&s, &[2_000, 3_000, 4_000]).await;
    expected.extend([
        closed_window(4, 1_000),
        closed_window(5, 2_000),
        closed_window(6, 3_000),
    ]);
    // A long poll past the gap answers at once with what follows it.
    assert_eq!(read_offsets(&s, "after=4&limit=3&wait=20s").await, [5, 6]);
    assert_eq!(read_offsets(&s, "after=2&limit=1").await, [4]);
    reader.catch_up(&s.client, &s.base).await;
    reader.assert_saw(&expected);

    // The same after a restart, the records before the gap loaded from the checkpoint.
    let s = s.restart().await;
    assert_eq!(read_offsets(&s, "after=4&limit=3").await, [5, 6]);
    assert_eq!(read_offsets(&s, "limit=2").await, [1, 4]);
    post_times(&s, &[5_000]).await;
    expected.push(closed_window(7, 4_000));
    reader.catch_up(&s.client, &s.base).await;
    reader.assert_saw(&expected);
    let mut fresh = FeedReader::new("w");
    fresh.catch_up(&s.client, &s.base).await;
    let kept: Vec<Value> = expected
        .into_iter()
        .filter(|r| ![2, 3].contains(&r["offset"].as_u64().unwrap()))
        .collect();
    fresh.assert_saw(&kept);
}

backend_tests!(
    pages_long_polls_and_streams_cross_the_offset_gap_a_restore_leaves,
    records_page_by_offset_to_the_end,
    a_long_poll_returns_as_soon_as_a_record_arrives,
    a_long_poll_with_nothing_new_answers_empty_after_its_wait,
    bad_output_parameters_are_400_and_an_unknown_pipeline_404,
    server_sent_events_stream_records_and_resume_after_last_event_id,
);
