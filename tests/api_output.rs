//! The output feed over real HTTP: paging by offset, long-polling, and Server-Sent Events with
//! `Last-Event-ID` resume; on SQLite and PostgreSQL.

mod common;

use common::{Backend, TestServer, body_json, expect_problem};
use futures::StreamExt;
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
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event in time");
        buffer.push_str(std::str::from_utf8(&chunk.unwrap().unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse().unwrap());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(v.trim()).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    events
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

backend_tests!(
    records_page_by_offset_to_the_end,
    a_long_poll_returns_as_soon_as_a_record_arrives,
    a_long_poll_with_nothing_new_answers_empty_after_its_wait,
    bad_output_parameters_are_400_and_an_unknown_pipeline_404,
    server_sent_events_stream_records_and_resume_after_last_event_id,
);
