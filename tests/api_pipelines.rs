//! `/v1/pipelines` over real HTTP, on SQLite and PostgreSQL.

mod common;

use common::{Backend, TestServer, body_json, expect_problem, seed_spec};
use reqwest::StatusCode;
use serde_json::json;

async fn create_answers_201_with_the_spec_its_defaults_and_a_zero_status(backend: Backend) {
    let s = TestServer::start(backend).await;
    let spec = json!({"name": "p1", "key": "/u", "operators": [{"name": "l", "kind": "latest", "value": "/v"}]});
    let resp = s.post_json("/v1/pipelines", &spec).await;
    assert_eq!(resp.headers()["location"], "/v1/pipelines/p1");
    let body = body_json(resp, StatusCode::CREATED).await;
    assert_eq!(body["name"], "p1");
    assert_eq!(body["operators"], spec["operators"]);
    assert_eq!(body["checkpoint_interval"], "10s");
    assert_eq!(body["retain_checkpoints"], 5);
    assert_eq!(
        body["status"],
        json!({"events": 0, "late_events": 0, "watermark": null, "wal_offset": null,
               "keys": {"l": 0}, "last_checkpoint": null, "state": "running", "error": null})
    );
}

async fn a_duplicate_name_is_409_and_changes_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    s.post_events("clicks", &json!({"user_id": "u", "ts": 1, "page": "/a"}))
        .await;
    let resp = s.post_json("/v1/pipelines", &seed_spec()).await;
    expect_problem(resp, StatusCode::CONFLICT, "pipeline_exists").await;
    let body = body_json(s.get("/v1/pipelines/clicks").await, StatusCode::OK).await;
    assert_eq!(
        body["status"]["events"], 1,
        "the first pipeline keeps its state"
    );
}

async fn an_invalid_spec_is_422_naming_each_field(backend: Backend) {
    let s = TestServer::start(backend).await;
    let mut spec = seed_spec();
    spec["operators"][0]["gap"] = json!("30 minutes");
    spec["operators"][2]["reduce"] = json!("median");
    let doc = expect_problem(
        s.post_json("/v1/pipelines", &spec).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_spec",
    )
    .await;
    let fields: Vec<_> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["operators[0].gap", "operators[2].reduce"]);
    assert!(
        doc["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("30 minutes")
    );
    let list = body_json(s.get("/v1/pipelines").await, StatusCode::OK).await;
    assert_eq!(list["items"], json!([]), "nothing was created");
}

async fn a_body_that_is_not_json_is_400(backend: Backend) {
    let s = TestServer::start(backend).await;
    let resp = s
        .post_raw("/v1/pipelines", Some("application/json"), "{name: clicks")
        .await;
    let doc = expect_problem(resp, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert!(doc["detail"].as_str().unwrap().contains("line 1"));
}

async fn list_get_and_delete(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let spec = json!({"name": "another", "key": "/u", "operators": [{"name": "l", "kind": "latest", "value": "/v"}]});
    body_json(
        s.post_json("/v1/pipelines", &spec).await,
        StatusCode::CREATED,
    )
    .await;
    let list = body_json(s.get("/v1/pipelines").await, StatusCode::OK).await;
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("another"), json!("clicks")]);
    assert_eq!(list["items"][1]["status"]["keys"]["sessions"], 0);
    let one = body_json(s.get("/v1/pipelines/clicks").await, StatusCode::OK).await;
    assert_eq!(one["operators"], seed_spec()["operators"]);
    expect_problem(
        s.get("/v1/pipelines/nope").await,
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
    )
    .await;

    assert_eq!(
        s.delete("/v1/pipelines/clicks").await.status(),
        StatusCode::NO_CONTENT
    );
    expect_problem(
        s.get("/v1/pipelines/clicks").await,
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
    )
    .await;
    expect_problem(
        s.delete("/v1/pipelines/clicks").await,
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
    )
    .await;
}

async fn state_goes_with_a_deleted_pipeline(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    s.post_events("clicks", &json!({"user_id": "u", "ts": 1, "page": "/a"}))
        .await;
    assert_eq!(
        s.delete("/v1/pipelines/clicks").await.status(),
        StatusCode::NO_CONTENT
    );
    s.create_seed().await;
    let resp = s
        .get("/v1/pipelines/clicks/operators/last_pages/state?key=u")
        .await;
    expect_problem(resp, StatusCode::NOT_FOUND, "key_not_found").await;
    let body = body_json(s.get("/v1/pipelines/clicks").await, StatusCode::OK).await;
    assert_eq!(body["status"]["events"], 0);
}

async fn definitions_come_back_after_a_restart(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let (config, dir) = s.stop().await;
    let s = TestServer::start_config(config, dir).await;
    let body = body_json(s.get("/v1/pipelines/clicks").await, StatusCode::OK).await;
    assert_eq!(body["operators"], seed_spec()["operators"]);
    assert_eq!(body["state_ttl"], "7d");
    s.post_events("clicks", &json!({"user_id": "u", "ts": 1, "page": "/a"}))
        .await;
}

backend_tests!(
    create_answers_201_with_the_spec_its_defaults_and_a_zero_status,
    a_duplicate_name_is_409_and_changes_nothing,
    an_invalid_spec_is_422_naming_each_field,
    a_body_that_is_not_json_is_400,
    list_get_and_delete,
    state_goes_with_a_deleted_pipeline,
    definitions_come_back_after_a_restart,
);
