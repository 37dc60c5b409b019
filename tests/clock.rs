//! Processing time over real HTTP: an event's arrival time is read where its order is decided,
//! so concurrent requests and the once-a-second tick never make an event late by accident.

mod common;

use common::{Backend, TestServer, body_json};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

const CLIENTS: usize = 48;
/// How long the clients post: long enough for several ticks.
const POSTING: Duration = Duration::from_secs(4);

/// Posts small batches until `until`; answers how many events were accepted.
async fn post_until(client: reqwest::Client, url: String, me: usize, until: Instant) -> u64 {
    let mut accepted = 0;
    let mut n = 0;
    while Instant::now() < until {
        let events: Vec<_> = (0..1 + n % 3)
            .map(|i| json!({"k": format!("c{me}-{i}")}))
            .collect();
        n += 1;
        let resp = client.post(&url).json(&events).send().await.expect("POST");
        match resp.status() {
            StatusCode::OK => accepted += events.len() as u64,
            StatusCode::SERVICE_UNAVAILABLE => tokio::task::yield_now().await,
            other => panic!("unexpected {other}: {}", resp.text().await.unwrap()),
        }
    }
    accepted
}

async fn concurrent_posts_in_processing_time_are_never_late(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ticker = eddy::service::spawn_ticker(&s.state);
    let spec = json!({"name": "pt", "key": "/k",
                      "operators": [{"name": "c", "kind": "window", "size": "1s", "functions": ["count"]}]});
    body_json(
        s.post_json("/v1/pipelines", &spec).await,
        StatusCode::CREATED,
    )
    .await;
    let until = Instant::now() + POSTING;
    let url = s.url("/v1/pipelines/pt/events");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|me| tokio::spawn(post_until(s.client.clone(), url.clone(), me, until)))
        .collect();
    let mut accepted = 0;
    for client in clients {
        accepted += client.await.unwrap();
    }
    let status = s.status("pt").await;
    assert_eq!(status["events"], accepted);
    assert_eq!(
        status["late_events"], 0,
        "no event arrives below the clock's watermark"
    );
    // The clock moved on while the clients posted (ticks and later arrivals close windows).
    assert!(!s.output("pt").await.is_empty(), "windows closed");
    ticker.abort();
}

backend_tests!(concurrent_posts_in_processing_time_are_never_late);
