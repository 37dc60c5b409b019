//! Checkpoint endpoints over real HTTP, on SQLite and PostgreSQL: trigger, list, get, restore.

mod common;

use common::{Backend, FeedReader, TestServer, body_json, expect_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn click(user: &str, ts: i64) -> Value {
    json!({"user_id": user, "ts": ts, "page": "/home"})
}

/// The output record of `user`'s one-event session at `ts`, at `offset`.
fn closed_session(offset: u64, user: &str, ts: i64) -> Value {
    json!({"offset": offset, "operator": "sessions", "key": user, "type": "session_closed",
           "value": {"start": ts, "end": ts, "duration_ms": 0, "events": 1}})
}

/// The output record of `/home`'s page-view minute from `start` with `count` views.
fn closed_minute(offset: u64, start: i64, count: u64) -> Value {
    json!({"offset": offset, "operator": "page_views", "key": "/home", "type": "window_closed",
           "value": {"start": start, "end": start + 60_000, "closed": true, "count": count}})
}

async fn a_checkpoint_answers_201_with_every_field(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    s.post_events("clicks", &json!([click("a", 1_000), click("b", 2_000)]))
        .await;
    let cp = s.checkpoint("clicks").await;
    assert_eq!(cp["status"], "completed");
    assert_eq!(cp["trigger"], "manual");
    assert_eq!(cp["input_offset"], 2);
    assert_eq!(cp["events"], 2);
    // sessions a, b; last_pages a, b; page_views /home.
    assert_eq!(cp["keys_written"], 5);
    assert_eq!(cp["keys_deleted"], 0);
    assert!(cp["bytes"].as_i64().unwrap() > 0);
    assert!(cp["duration_ms"].as_i64().unwrap() >= 0);
    for field in ["started_at", "completed_at"] {
        let text = cp[field].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{text}"
        );
    }
    assert!(
        cp.get("error").is_none(),
        "only failed checkpoints carry an error"
    );
    let status = s.status("clicks").await;
    assert_eq!(status["last_checkpoint"]["id"], cp["id"]);
}

async fn a_checkpoint_of_an_empty_pipeline_succeeds(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let cp = s.checkpoint("clicks").await;
    assert_eq!(
        (
            cp["status"].clone(),
            cp["input_offset"].clone(),
            cp["events"].clone()
        ),
        (json!("completed"), Value::Null, json!(0))
    );
}

async fn checkpoints_are_incremental_and_listed_newest_first(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let users: Vec<Value> = (0..50).map(|i| click(&format!("u{i}"), 1_000)).collect();
    s.post_events("clicks", &Value::Array(users)).await;
    let first = s.checkpoint("clicks").await;
    assert_eq!(
        first["keys_written"], 101,
        "50 sessions, 50 last_pages, 1 page"
    );
    s.post_events("clicks", &click("u7", 2_000)).await;
    let second = s.checkpoint("clicks").await;
    assert_eq!(
        second["keys_written"], 3,
        "only u7's two keys and the page changed"
    );
    assert!(second["id"].as_i64() > first["id"].as_i64());
    let list = body_json(
        s.get("/v1/pipelines/clicks/checkpoints").await,
        StatusCode::OK,
    )
    .await;
    let ids: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(ids, [second["id"].clone(), first["id"].clone()]);
    let one = body_json(
        s.get(&format!("/v1/pipelines/clicks/checkpoints/{}", first["id"]))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(one, first);
}

async fn unknown_checkpoints_and_pipelines_are_404(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    expect_problem(
        s.get("/v1/pipelines/clicks/checkpoints/99").await,
        StatusCode::NOT_FOUND,
        "checkpoint_not_found",
    )
    .await;
    let restore = s.post("/v1/pipelines/clicks/checkpoints/99/restore").await;
    expect_problem(restore, StatusCode::NOT_FOUND, "checkpoint_not_found").await;
    expect_problem(
        s.get("/v1/pipelines/nope/checkpoints").await,
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
    )
    .await;
    let trigger = s.post("/v1/pipelines/nope/checkpoints").await;
    expect_problem(trigger, StatusCode::NOT_FOUND, "pipeline_not_found").await;
    expect_problem(
        s.get("/v1/pipelines/clicks/checkpoints/x").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
}

async fn restore_returns_state_counters_and_output_to_the_checkpoint(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let key = |k: &str| format!("idem-{k}");
    let post_with_key = |k: String, body: Value| {
        let (client, url) = (s.client.clone(), s.url("/v1/pipelines/clicks/events"));
        async move {
            client
                .post(url)
                .header("Idempotency-Key", k)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    post_with_key(key("1"), json!([click("a", 1_000), click("b", 1_500)])).await;
    let cp = s.checkpoint("clicks").await;
    let at_cp = (
        s.state_of("clicks", "sessions", "a").await,
        s.status("clicks").await,
        s.output("clicks").await,
    );

    // After the checkpoint: more events, a late one, closed sessions, another checkpoint.
    post_with_key(
        key("2"),
        json!([click("a", 2_000_000), click("c", 3_000_000), click("b", 10)]),
    )
    .await;
    let later = s.checkpoint("clicks").await;
    assert!(!s.output("clicks").await.is_empty());
    assert_eq!(s.status("clicks").await["late_events"], 1);
    // a@2,000,000 moves the watermark to 1,995,000: a's and b's sessions and /home's first
    // minute close; c@3,000,000 closes the minute a@2,000,000 opened.
    let mut expected = vec![
        closed_session(1, "a", 1_000),
        closed_session(2, "b", 1_500),
        closed_minute(3, 0, 2),
        closed_minute(4, 1_980_000, 1),
    ];
    let mut reader = FeedReader::new("clicks");
    reader.catch_up(&s.client, &s.base).await;
    reader.assert_saw(&expected);

    let resp = s
        .post(&format!(
            "/v1/pipelines/clicks/checkpoints/{}/restore",
            cp["id"]
        ))
        .await;
    assert_eq!(
        body_json(resp, StatusCode::OK).await,
        json!({"restored": cp["id"], "discarded_events": 3})
    );
    assert_eq!(s.state_of("clicks", "sessions", "a").await, at_cp.0);
    assert_eq!(s.state_of("clicks", "sessions", "c").await, Value::Null);
    let status = s.status("clicks").await;
    for field in ["events", "late_events", "watermark", "wal_offset", "keys"] {
        assert_eq!(status[field], at_cp.1[field], "{field}");
    }
    assert_eq!(
        s.output("clicks").await,
        at_cp.2,
        "output after the checkpoint is dropped"
    );
    reader.catch_up(&s.client, &s.base).await;
    reader.assert_saw(&expected);
    let listed = body_json(
        s.get("/v1/pipelines/clicks/checkpoints").await,
        StatusCode::OK,
    )
    .await;
    let ids: Vec<_> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(ids, [cp["id"].clone()], "newer checkpoints are deleted");
    expect_problem(
        s.get(&format!("/v1/pipelines/clicks/checkpoints/{}", later["id"]))
            .await,
        StatusCode::NOT_FOUND,
        "checkpoint_not_found",
    )
    .await;

    // The idempotency key of the discarded batch is forgotten, the kept one remembered.
    let again = post_with_key(key("1"), json!([click("zz", 5)])).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let redo = post_with_key(key("2"), json!([click("d", 4_000)])).await;
    assert!(redo.headers().get("idempotent-replayed").is_none());
    let ack = body_json(redo, StatusCode::OK).await;
    assert_eq!(
        ack["first_offset"], 6,
        "offsets 3..5 were used before the restore and are not reused"
    );
    let next = s.checkpoint("clicks").await;
    assert!(
        next["id"].as_i64() > later["id"].as_i64(),
        "checkpoint ids are not reused"
    );

    // And all of it survives a restart.
    let s = s.restart().await;
    assert_eq!(s.state_of("clicks", "sessions", "c").await, Value::Null);
    assert_eq!(s.status("clicks").await["events"], 3);
    let ack = s.post_events("clicks", &click("e", 5_000)).await;
    assert_eq!(ack["first_offset"], 7);
    reader.catch_up(&s.client, &s.base).await;
    reader.assert_saw(&expected);

    // New output continues above the dropped offsets 1..4: the sessions of a, b, d, e and
    // /home's first minute (a, b, d and e: the late b@10 went with the restore).
    s.post_events("clicks", &click("f", 10_000_000)).await;
    let after_restore = [
        closed_session(5, "a", 1_000),
        closed_session(6, "b", 1_500),
        closed_session(7, "d", 4_000),
        closed_session(8, "e", 5_000),
        closed_minute(9, 0, 4),
    ];
    expected.extend(after_restore.iter().cloned());
    reader.catch_up(&s.client, &s.base).await;
    reader.assert_saw(&expected);
    let s = s.restart().await;
    let mut fresh = FeedReader::new("clicks");
    fresh.catch_up(&s.client, &s.base).await;
    fresh.assert_saw(&after_restore);
}

async fn only_completed_checkpoints_can_be_restored(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let id = s
        .state
        .store
        .begin_checkpoint("clicks", eddy::store::Trigger::Manual, 0, None)
        .await
        .unwrap();
    s.state
        .store
        .fail_checkpoint("clicks", id, "injected", 1)
        .await
        .unwrap();
    let failed = body_json(
        s.get(&format!("/v1/pipelines/clicks/checkpoints/{id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (failed["status"].clone(), failed["error"].clone()),
        (json!("failed"), json!("injected"))
    );
    let resp = s
        .post(&format!("/v1/pipelines/clicks/checkpoints/{id}/restore"))
        .await;
    expect_problem(resp, StatusCode::CONFLICT, "conflict").await;
}

backend_tests!(
    a_checkpoint_answers_201_with_every_field,
    a_checkpoint_of_an_empty_pipeline_succeeds,
    checkpoints_are_incremental_and_listed_newest_first,
    unknown_checkpoints_and_pipelines_are_404,
    restore_returns_state_counters_and_output_to_the_checkpoint,
    only_completed_checkpoints_can_be_restored,
);
