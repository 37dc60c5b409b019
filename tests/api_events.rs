//! `POST …/events` and `POST …/watermark` over real HTTP: formats, atomic validation, limits,
//! backpressure; on SQLite and PostgreSQL.

mod common;

use common::{Backend, TestServer, body_json, expect_problem};
use eddy::engine::{Context, Input, Inputs, Operator, OperatorDef, Pipeline};
use eddy::spec::PipelineSpec;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const EVENTS: &str = "/v1/pipelines/clicks/events";

fn click(user: &str, ts: i64) -> Value {
    json!({"user_id": user, "ts": ts, "page": "/home"})
}

async fn status(s: &TestServer) -> Value {
    body_json(s.get("/v1/pipelines/clicks").await, StatusCode::OK).await["status"].clone()
}

async fn a_json_object_an_array_and_ndjson_are_batches_with_increasing_offsets(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let one = s.post_events("clicks", &click("a", 1)).await;
    assert_eq!(
        one,
        json!({"accepted": 1, "first_offset": 1, "last_offset": 1})
    );
    let two = s
        .post_events("clicks", &json!([click("a", 2), click("b", 3)]))
        .await;
    assert_eq!(
        two,
        json!({"accepted": 2, "first_offset": 2, "last_offset": 3})
    );
    let ndjson = format!("{}\n\n{}\n", click("c", 4), click("a", 5));
    let resp = s
        .post_raw(EVENTS, Some("application/x-ndjson"), ndjson)
        .await;
    assert_eq!(
        body_json(resp, StatusCode::OK).await,
        json!({"accepted": 2, "first_offset": 4, "last_offset": 5})
    );
    let st = status(&s).await;
    assert_eq!(
        (st["events"].clone(), st["wal_offset"].clone()),
        (json!(5), json!(5))
    );
    let state = body_json(
        s.get("/v1/pipelines/clicks/operators/sessions/state?key=a")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(state["value"]["sessions"][0]["events"], 3);
}

async fn one_bad_event_refuses_the_whole_batch_naming_every_bad_one(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let batch = json!([
        click("a", 1),
        {"user_id": "a", "page": "/x"},
        "not an object",
        {"user_id": 1.5, "ts": 2, "page": "/x"},
        {"user_id": "a", "ts": 3, "page": "/x", "type": "cart", "product_id": "p"},
        {"user_id": "a", "ts": 3, "page": "/x", "type": "purchase", "amount": "12"},
    ]);
    let doc = expect_problem(
        s.post_json(EVENTS, &batch).await,
        StatusCode::BAD_REQUEST,
        "invalid_events",
    )
    .await;
    let indices: Vec<_> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].clone())
        .collect();
    assert_eq!(indices, [json!(1), json!(2), json!(3), json!(4), json!(5)]);
    let details: Vec<_> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect();
    assert!(details[0].contains("/ts"), "{details:?}");
    assert!(
        details[3].contains("/product_id") || details[3].contains("/qty"),
        "{details:?}"
    );
    assert!(details[4].contains("/amount"), "{details:?}");
    assert_eq!(status(&s).await["events"], 0, "nothing was applied");
}

async fn ndjson_errors_are_numbered_by_line(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let body = format!(
        "{}\n{{broken\n\n{}\n",
        click("a", 1),
        json!({"user_id": "a"})
    );
    let resp = s.post_raw(EVENTS, Some("application/x-ndjson"), body).await;
    let doc = expect_problem(resp, StatusCode::BAD_REQUEST, "invalid_events").await;
    let indices: Vec<_> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].clone())
        .collect();
    assert_eq!(indices, [json!(1), json!(3)]);
}

/// Text a document parse refuses is refused where it is read, not only where it is skipped:
/// a key with a lone surrogate and an amount beyond any f64 (each used to panic the parse).
async fn unicode_and_numbers_a_document_cannot_hold_are_named(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let body = [
        r#"{"user_id": "a", "ts": 1, "page": "/p"}"#,
        r#"{"user_id": "\ud800", "ts": 1, "page": "/p"}"#,
        r#"{"user_id": "b", "ts": 1, "page": "/p", "amount": 1e400}"#,
        r#"{"user_id": "c", "ts": 1, "page": "/p", "pad": "\udc00"}"#,
    ]
    .join("\n");
    let resp = s.post_raw(EVENTS, Some("application/x-ndjson"), body).await;
    let doc = expect_problem(resp, StatusCode::BAD_REQUEST, "invalid_events").await;
    let errors: Vec<(u64, String)> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["detail"].to_string()))
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!((errors[0].0, errors[1].0, errors[2].0), (1, 2, 3));
    assert!(errors[0].1.contains("lone surrogate"), "{errors:?}");
    assert!(errors[1].1.contains("number out of range"), "{errors:?}");
    assert!(errors[2].1.contains("lone surrogate"), "{errors:?}");
    assert_eq!(status(&s).await["events"], 0, "nothing was applied");
    s.post_events("clicks", &click("a", 1)).await;
    assert_eq!(status(&s).await["events"], 1, "the server keeps serving");
}

async fn a_body_that_does_not_parse_is_400_with_its_position(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let resp = s
        .post_raw(
            EVENTS,
            Some("application/json"),
            "[{\"user_id\": \"a\",\n \"ts\" 1}]",
        )
        .await;
    let doc = expect_problem(resp, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert!(
        doc["detail"].as_str().unwrap().contains("line 2 column"),
        "{doc}"
    );
    let resp = s.post_raw(EVENTS, Some("application/json"), "[]").await;
    expect_problem(resp, StatusCode::BAD_REQUEST, "bad_request").await;
}

async fn a_body_over_the_limit_is_413(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_body_bytes = 1_024).await;
    s.create_seed().await;
    let big: Vec<Value> = (0..100).map(|i| click("a", i)).collect();
    let resp = s.post_json(EVENTS, &Value::Array(big)).await;
    expect_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    s.post_events("clicks", &click("a", 1)).await;
    assert_eq!(status(&s).await["events"], 1);
}

async fn a_missing_or_other_content_type_is_415(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let body = click("a", 1).to_string();
    expect_problem(
        s.post_raw(EVENTS, None, body.clone()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect_problem(
        s.post_raw(EVENTS, Some("text/plain"), body).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

async fn an_unknown_pipeline_is_404(backend: Backend) {
    let s = TestServer::start(backend).await;
    let resp = s
        .post_json("/v1/pipelines/nope/events", &click("a", 1))
        .await;
    expect_problem(resp, StatusCode::NOT_FOUND, "pipeline_not_found").await;
    let resp = s
        .post_json("/v1/pipelines/nope/watermark", &json!({"time": 1}))
        .await;
    expect_problem(resp, StatusCode::NOT_FOUND, "pipeline_not_found").await;
}

async fn the_watermark_advances_ignores_lower_times_and_max_closes_everything(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    s.post_events("clicks", &click("a", 1_000_000)).await;
    let wm = "/v1/pipelines/clicks/watermark";
    assert_eq!(
        body_json(
            s.post_json(wm, &json!({"time": 2_000_000})).await,
            StatusCode::OK
        )
        .await,
        json!({"watermark": 2_000_000})
    );
    assert_eq!(
        body_json(s.post_json(wm, &json!({"time": 5})).await, StatusCode::OK).await,
        json!({"watermark": 2_000_000})
    );
    assert_eq!(status(&s).await["watermark"], 2_000_000);
    let max = body_json(
        s.post_json(wm, &json!({"time": "max"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(max, json!({"watermark": i64::MAX}));
    let out = body_json(s.get("/v1/pipelines/clicks/output").await, StatusCode::OK).await;
    let types: Vec<_> = out["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].clone())
        .collect();
    // The window [960000, 1020000) closed at 2_000_000 already; the 30m session only at max.
    assert_eq!(types, [json!("window_closed"), json!("session_closed")]);
    assert_eq!(
        status(&s).await["events"],
        1,
        "a watermark takes no event offset"
    );
    for bad in [
        json!({"time": "soon"}),
        json!({"time": 1.5}),
        json!({}),
        json!([1]),
    ] {
        expect_problem(
            s.post_json(wm, &bad).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    expect_problem(
        s.post_raw(wm, Some("application/json"), "{").await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
}

/// An operator that holds its shard until the gate opens: makes a full queue deterministic.
struct Gate {
    entered: Arc<AtomicBool>,
    open: Arc<AtomicBool>,
}

impl Operator for Gate {
    type State = ();
    fn on_event(&self, _: &mut (), _: &Input<'_>, _: &mut Context<'_>) {
        self.entered.store(true, Ordering::SeqCst);
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    fn is_empty(&self, _: &()) -> bool {
        true
    }
    fn query(&self, _: &()) -> Value {
        Value::Null
    }
}

async fn a_full_shard_queue_is_503_with_retry_after_and_applies_nothing(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.engine.shards = 1;
        c.engine.shard_queue = 1;
    })
    .await;
    let (entered, open) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let spec = PipelineSpec::from_json(&json!({"name": "gated", "key": "/k",
        "operators": [{"name": "g", "kind": "latest", "value": "/k"}]}))
    .unwrap();
    let (e, o) = (entered.clone(), open.clone());
    let gate = OperatorDef::new("g", Inputs::default(), move || Gate {
        entered: e.clone(),
        open: o.clone(),
    });
    let pipeline = Arc::new(Pipeline::start(&spec, vec![gate], &s.state.config.engine));
    s.state.engine.insert(pipeline.clone());

    let path = "/v1/pipelines/gated/events";
    let (client, url) = (s.client.clone(), s.url(path));
    let post = move || {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"k": "x"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let first = post();
    while !entered.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let second = post();
    while pipeline.queue_depths() != [1] {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let resp = s.post_json(path, &json!({"k": "x"})).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    expect_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    open.store(true, Ordering::SeqCst);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(second.await.unwrap(), StatusCode::OK);
    assert_eq!(
        pipeline.status().await.unwrap().events,
        2,
        "the refused batch left no trace"
    );
}

async fn under_a_flood_every_batch_is_accepted_or_refused_whole(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.engine.shard_queue = 1).await;
    s.create_seed().await;
    let batch: Vec<Value> = (0..2_000)
        .map(|i| click(&format!("u{}", i % 300), i))
        .collect();
    let body = Arc::new(serde_json::to_vec(&batch).unwrap());
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let (client, url, body) = (s.client.clone(), s.url(EVENTS), body.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body((*body).clone())
                    .send()
                    .await
                    .unwrap();
                let retry = resp.headers().get("retry-after").is_some();
                (resp.status(), retry)
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            (StatusCode::OK, _) => accepted += 1,
            (StatusCode::SERVICE_UNAVAILABLE, true) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(accepted >= 1);
    assert_eq!(status(&s).await["events"], accepted * 2_000);
}

/// A retry is recognised by its key alone: its body is not read (docs/api.md), so even a
/// body that would be refused gets the first answer. This is why the API keeps its look-up
/// before reading the body; the engine's check under the sequencer lock is the one that holds
/// when retries race.
async fn a_retry_is_answered_by_its_key_without_reading_its_body(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let post = |content_type: &'static str, body: String| {
        let req = s
            .client
            .post(s.url(EVENTS))
            .header("Idempotency-Key", "retry-1")
            .header("content-type", content_type)
            .body(body);
        async move { req.send().await.unwrap() }
    };
    let first = post("application/json", click("a", 1).to_string()).await;
    let first = body_json(first, StatusCode::OK).await;
    for (content_type, body) in [
        ("application/json", "not json".to_owned()),
        ("text/plain", "[]".to_owned()),
        ("application/json", click("b", 2).to_string()),
    ] {
        let again = post(content_type, body).await;
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(body_json(again, StatusCode::OK).await, first);
    }
    assert_eq!(status(&s).await["events"], 1, "nothing applied twice");
}

backend_tests!(
    a_json_object_an_array_and_ndjson_are_batches_with_increasing_offsets,
    one_bad_event_refuses_the_whole_batch_naming_every_bad_one,
    ndjson_errors_are_numbered_by_line,
    unicode_and_numbers_a_document_cannot_hold_are_named,
    a_body_that_does_not_parse_is_400_with_its_position,
    a_body_over_the_limit_is_413,
    a_missing_or_other_content_type_is_415,
    an_unknown_pipeline_is_404,
    the_watermark_advances_ignores_lower_times_and_max_closes_everything,
    a_full_shard_queue_is_503_with_retry_after_and_applies_nothing,
    under_a_flood_every_batch_is_accepted_or_refused_whole,
    a_retry_is_answered_by_its_key_without_reading_its_body,
);
