//! One conformance suite for every store backend: what the `Store` trait promises.

mod common;

use common::{Backend, database_for};
use eddy::store::{self, Store, StoreError};
use serde_json::json;
use std::sync::Arc;

async fn open(backend: Backend) -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::TempDir::new().unwrap();
    let url = database_for(backend, dir.path()).await;
    let store = store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    assert_eq!(
        store.backend(),
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    (store, dir)
}

async fn migrations_are_idempotent_and_the_store_answers(backend: Backend) {
    let (store, _dir) = open(backend).await;
    store.migrate().await.expect("second migrate is a no-op");
    store.ping().await.unwrap();
}

async fn pipelines_round_trip_in_name_order(backend: Backend) {
    let (store, _dir) = open(backend).await;
    let spec = json!({"name": "b", "key": "/k", "nested": {"x": [1, 2.5, "s"]}});
    store.insert_pipeline("b", &spec).await.unwrap();
    store
        .insert_pipeline("a", &json!({"name": "a"}))
        .await
        .unwrap();
    store
        .insert_pipeline("B", &json!({"name": "B"}))
        .await
        .unwrap();
    let all = store.pipelines().await.unwrap();
    let names: Vec<_> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["B", "a", "b"], "byte order");
    assert_eq!(all[2].spec, spec);
}

async fn a_duplicate_name_is_refused_as_such(backend: Backend) {
    let (store, _dir) = open(backend).await;
    store.insert_pipeline("p", &json!({})).await.unwrap();
    let err = store
        .insert_pipeline("p", &json!({"other": 1}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { ref name } if name == "p"),
        "{err:?}"
    );
    assert_eq!(store.pipelines().await.unwrap()[0].spec, json!({}));
}

async fn delete_reports_whether_there_was_a_pipeline(backend: Backend) {
    let (store, _dir) = open(backend).await;
    store.insert_pipeline("p", &json!({})).await.unwrap();
    assert!(store.delete_pipeline("p").await.unwrap());
    assert!(!store.delete_pipeline("p").await.unwrap());
    assert!(store.pipelines().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unsupported_url_names_the_url_without_its_password() {
    let err = store::connect("mysql://u:pw@h/db")
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("mysql://u:***@h/db") && !text.contains("pw"),
        "{text}"
    );
}

backend_tests!(
    migrations_are_idempotent_and_the_store_answers,
    pipelines_round_trip_in_name_order,
    a_duplicate_name_is_refused_as_such,
    delete_reports_whether_there_was_a_pipeline,
);
