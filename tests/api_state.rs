//! State queries over real HTTP: one key, pages to the end, prefixes, limits, and
//! read-your-writes under concurrent ingest; on SQLite and PostgreSQL.

mod common;

use common::{Backend, TestServer, body_json, expect_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

const STATE: &str = "/v1/pipelines/clicks/operators/last_pages/state";

fn click(user: &str, ts: i64, page: &str) -> Value {
    json!({"user_id": user, "ts": ts, "page": page})
}

async fn one_key_answers_its_state_and_a_key_without_state_is_404(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    s.post_events(
        "clicks",
        &json!([click("u1", 1, "/a"), click("u1", 2, "/b")]),
    )
    .await;
    let body = body_json(s.get(&format!("{STATE}?key=u1")).await, StatusCode::OK).await;
    assert_eq!(
        body,
        json!({"key": "u1", "value": {"values": ["/b", "/a"]}})
    );
    expect_problem(
        s.get(&format!("{STATE}?key=u2")).await,
        StatusCode::NOT_FOUND,
        "key_not_found",
    )
    .await;
    let spend = s
        .get("/v1/pipelines/clicks/operators/spend/state?key=u1")
        .await;
    expect_problem(spend, StatusCode::NOT_FOUND, "key_not_found").await;
    let unknown = s
        .get("/v1/pipelines/clicks/operators/nope/state?key=u1")
        .await;
    expect_problem(unknown, StatusCode::NOT_FOUND, "operator_not_found").await;
    let no_pipeline = s.get("/v1/pipelines/nope/operators/x/state").await;
    expect_problem(no_pipeline, StatusCode::NOT_FOUND, "pipeline_not_found").await;
}

async fn keys_page_in_byte_order_to_the_end(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let users = ["b", "a", "B", "ab", "ä", "a b", "z", "0"];
    let events: Vec<Value> = users.iter().map(|u| click(u, 1, "/p")).collect();
    s.post_events("clicks", &Value::Array(events)).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{STATE}?limit=3&cursor={c}"),
            None => format!("{STATE}?limit=3"),
        };
        let page = body_json(s.get(&path).await, StatusCode::OK).await;
        assert!(page["items"].as_array().unwrap().len() <= 3);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["key"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected, "byte order, each key once");
}

async fn a_prefix_filters_keys(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    s.post_events(
        "clicks",
        &json!([
            click("user-1", 1, "/a"),
            click("user-2", 1, "/a"),
            click("admin", 1, "/a")
        ]),
    )
    .await;
    let page = body_json(
        s.get(&format!("{STATE}?prefix=user-")).await,
        StatusCode::OK,
    )
    .await;
    let keys: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].clone())
        .collect();
    assert_eq!(keys, [json!("user-1"), json!("user-2")]);
    assert_eq!(page["next_cursor"], Value::Null);
}

async fn bad_limits_and_cursors_are_400(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    for bad in [
        "limit=1001",
        "limit=0",
        "limit=-1",
        "limit=x",
        "cursor=zz",
        "cursor=ff",
    ] {
        expect_problem(
            s.get(&format!("{STATE}?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    body_json(s.get(&format!("{STATE}?limit=1000")).await, StatusCode::OK).await;
}

async fn a_query_sees_every_event_acknowledged_before_it_under_concurrent_ingest(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (client, base) = (s.client.clone(), s.base.clone());
            tokio::spawn(async move {
                let user = format!("rw{c}");
                for i in 0..40_i64 {
                    let event = json!({"user_id": user, "ts": 1_000 + i, "page": "/p",
                                       "type": "purchase", "amount": 1});
                    let ack = client
                        .post(format!("{base}/v1/pipelines/clicks/events"))
                        .json(&event)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(ack.status(), StatusCode::OK);
                    let url =
                        format!("{base}/v1/pipelines/clicks/operators/spend/state?key={user}");
                    let state: Value = client.get(url).send().await.unwrap().json().await.unwrap();
                    assert_eq!(
                        state["value"]["count"],
                        i + 1,
                        "client {c} after {} acks",
                        i + 1
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let status =
        body_json(s.get("/v1/pipelines/clicks").await, StatusCode::OK).await["status"].clone();
    assert_eq!(status["events"], 320);
    assert_eq!(status["keys"]["spend"], 8);
}

backend_tests!(
    one_key_answers_its_state_and_a_key_without_state_is_404,
    keys_page_in_byte_order_to_the_end,
    a_prefix_filters_keys,
    bad_limits_and_cursors_are_400,
    a_query_sees_every_event_acknowledged_before_it_under_concurrent_ingest,
);
