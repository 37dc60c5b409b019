//! One conformance suite for every store backend: what the `Store` trait promises.

mod common;

use common::{Backend, database_for};
use eddy::state::StateRow;
use eddy::store::{self, CheckpointWrite, Progress, Store, StoreError, Trigger};
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

fn row(operator: u16, key: &str, value: Option<&str>) -> StateRow {
    StateRow {
        operator,
        key: key.into(),
        key_group: 3,
        last_time: 10,
        value: value.map(|v| v.as_bytes().to_vec()),
    }
}

/// Commits checkpoint `rows` of `pipeline` (begun now); its id.
async fn checkpoint(
    store: &dyn Store,
    pipeline: &str,
    rows: &[StateRow],
) -> Result<i64, StoreError> {
    let id = store
        .begin_checkpoint(pipeline, Trigger::Manual, 1, None)
        .await?;
    let write = CheckpointWrite {
        pipeline,
        id,
        progress: Progress::default(),
        rows,
        outputs: &[],
        idempotency: &[],
        fence: None,
    };
    store.commit_checkpoint(&write).await?;
    Ok(id)
}

/// (operator, key, value) of the state at checkpoint `id`, in that order.
async fn state_at(store: &dyn Store, pipeline: &str, id: i64) -> Vec<(u16, String, String)> {
    let (sink, mut chunks) = tokio::sync::mpsc::unbounded_channel();
    store.load_checkpoint(pipeline, id, 10, sink).await.unwrap();
    let mut rows = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        rows.extend(chunk);
    }
    let mut state: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let value = String::from_utf8(r.value.expect("loaded rows have values")).unwrap();
            (r.operator, r.key.as_str().to_owned(), value)
        })
        .collect();
    state.sort();
    state
}

async fn a_checkpoint_loads_the_newest_version_of_each_key_and_its_state_goes_with_its_pipeline(
    backend: Backend,
) {
    let (store, _dir) = open(backend).await;
    let store = &*store;
    store.insert_pipeline("p", &json!({})).await.unwrap();
    let first = checkpoint(
        store,
        "p",
        &[
            row(0, "a", Some("a1")),
            row(0, "b", Some("b1")),
            row(1, "a", Some("x1")),
        ],
    )
    .await
    .unwrap();
    // Checkpoint 2 changes a, deletes b, adds c; operator 1's a is unchanged.
    let second = checkpoint(
        store,
        "p",
        &[
            row(0, "a", Some("a2")),
            row(0, "b", None),
            row(0, "c", Some("c2")),
        ],
    )
    .await
    .unwrap();
    let own = |v: &[(u16, &str, &str)]| -> Vec<(u16, String, String)> {
        v.iter()
            .map(|&(o, k, x)| (o, k.to_owned(), x.to_owned()))
            .collect()
    };
    assert_eq!(
        state_at(store, "p", first).await,
        own(&[(0, "a", "a1"), (0, "b", "b1"), (1, "a", "x1")])
    );
    assert_eq!(
        state_at(store, "p", second).await,
        own(&[(0, "a", "a2"), (0, "c", "c2"), (1, "a", "x1")])
    );
    // Deleted with its pipeline: a pipeline of the same name starts with no state, and a
    // checkpoint of the deleted one writes nothing.
    let late = store
        .begin_checkpoint("p", Trigger::Manual, 1, None)
        .await
        .unwrap();
    assert!(store.delete_pipeline("p").await.unwrap());
    let write = CheckpointWrite {
        pipeline: "p",
        id: late,
        progress: Progress::default(),
        rows: &[row(0, "z", Some("late"))],
        outputs: &[],
        idempotency: &[],
        fence: None,
    };
    assert!(
        store.commit_checkpoint(&write).await.is_err(),
        "the pipeline is gone"
    );
    store.insert_pipeline("p", &json!({})).await.unwrap();
    assert!(state_at(store, "p", late).await.is_empty());
    assert!(state_at(store, "p", i64::MAX).await.is_empty());
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
    a_checkpoint_loads_the_newest_version_of_each_key_and_its_state_goes_with_its_pipeline,
);
