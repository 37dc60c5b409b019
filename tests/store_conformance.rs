//! One conformance suite for every store backend: what the `Store` trait promises.

mod common;

use common::{Backend, database_for};
use eddy::state::StateRow;
use eddy::store::{self, CheckpointWrite, PartitionWritten, Progress, Store, StoreError, Trigger};
use serde_json::json;
use std::sync::Arc;

async fn open(backend: Backend) -> (Arc<dyn Store>, tempfile::TempDir) {
    let (store, dir, _) = open_raw(backend).await;
    (store, dir)
}

/// As [`open`], with a connection of its own to the same database (to look at and damage
/// what the store wrote).
async fn open_raw(backend: Backend) -> (Arc<dyn Store>, tempfile::TempDir, Raw) {
    let dir = tempfile::TempDir::new().unwrap();
    let url = database_for(backend, dir.path()).await;
    let (store, dir) = open_at(backend, dir, &url).await;
    let raw = match backend {
        Backend::Sqlite => Raw::Sqlite(sqlx::SqlitePool::connect(&url).await.unwrap()),
        Backend::Postgres => Raw::Postgres(sqlx::PgPool::connect(&url).await.unwrap()),
    };
    (store, dir, raw)
}

async fn open_at(
    backend: Backend,
    dir: tempfile::TempDir,
    url: &str,
) -> (Arc<dyn Store>, tempfile::TempDir) {
    let store = store::connect(url).await.expect("connect");
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
        partitions: None,
    };
    store.commit_checkpoint(&write).await?;
    Ok(id)
}

/// (operator, key, value) of the state at checkpoint `id`, in that order: loaded in two
/// key-group ranges (as recovery loads it, one per shard), so that every test here also
/// checks that the ranges split the state between them.
async fn state_at(store: &dyn Store, pipeline: &str, id: i64) -> Vec<(u16, String, String)> {
    let (sink, mut chunks) = tokio::sync::mpsc::unbounded_channel();
    for key_groups in [i32::MIN..=127, 128..=i32::MAX] {
        store
            .load_state(pipeline, id, key_groups, sink.clone())
            .await
            .unwrap();
    }
    drop(sink);
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
        partitions: None,
    };
    assert!(
        store.commit_checkpoint(&write).await.is_err(),
        "the pipeline is gone"
    );
    store.insert_pipeline("p", &json!({})).await.unwrap();
    assert!(state_at(store, "p", late).await.is_empty());
    assert!(state_at(store, "p", i64::MAX).await.is_empty());
}

/// A connection of the test's own to the store's database.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// `$body` with `$pool` bound to the pool of either backend (the same code, two types).
macro_rules! with_pool {
    ($raw:expr, $pool:ident => $body:expr) => {
        match $raw {
            Raw::Sqlite($pool) => $body,
            Raw::Postgres($pool) => $body,
        }
    };
}

impl Raw {
    async fn execute(&self, sql: &str) {
        with_pool!(self, pool => drop(sqlx::query(sql).execute(pool).await.unwrap()))
    }

    /// The one integer `sql` answers.
    async fn number(&self, sql: &str) -> i64 {
        with_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap())
    }

    /// Flips one bit of byte `at` of the stored chunk of key group `key_group`.
    async fn damage_chunk(&self, key_group: i32, at: usize) {
        let read = "select data from state_chunks where key_group = $1";
        let write = "update state_chunks set data = $2 where key_group = $1";
        with_pool!(self, pool => {
            let mut data: Vec<u8> = sqlx::query_scalar(read)
                .bind(key_group)
                .fetch_one(pool)
                .await
                .unwrap();
            data[at] ^= 0x04;
            let update = sqlx::query(write).bind(key_group).bind(data);
            update.execute(pool).await.unwrap();
        })
    }
}

/// A reference of the state at each checkpoint, kept by the test: (operator, key) → value.
type Model = std::collections::BTreeMap<(u16, String), String>;

fn as_listed(model: &Model) -> Vec<(u16, String, String)> {
    model
        .iter()
        .map(|((o, k), v)| (*o, k.clone(), v.clone()))
        .collect()
}

/// Many checkpoints, each changing and deleting some keys, pruned to 3 after each: every
/// retained checkpoint loads exactly the reference's state at it, and compaction keeps what
/// is stored within a bound that 40 uncompacted checkpoints exceed.
async fn compaction_keeps_every_retained_checkpoint_and_bounds_what_is_stored(backend: Backend) {
    const KEYS: usize = 200;
    const RETAIN: i64 = 3;
    let (store, _dir, raw) = open_raw(backend).await;
    let store = &*store;
    store.insert_pipeline("p", &json!({})).await.unwrap();
    let mut model = Model::new();
    let mut kept: Vec<(i64, Model)> = Vec::new();
    let mut most_rows = 0;
    for n in 0..40_usize {
        let mut rows = Vec::new();
        for i in 0..KEYS {
            let key = format!("k{i}");
            let operator = (i % 2) as u16;
            let change = if n == 0 || (i * 7 + n) % 5 == 0 {
                Some(format!("v{n}-{i}"))
            } else if (i + n) % 11 == 0 && n % 3 == 0 {
                None
            } else {
                continue;
            };
            match &change {
                Some(v) => model.insert((operator, key.clone()), v.clone()),
                None => model.remove(&(operator, key.clone())),
            };
            rows.push(StateRow {
                operator,
                key: key.as_str().into(),
                key_group: (i % 4) as u16,
                last_time: n as i64,
                value: change.map(String::into_bytes),
            });
        }
        most_rows = most_rows.max(rows.len());
        let id = checkpoint(store, "p", &rows).await.unwrap();
        kept.push((id, model.clone()));
        store.prune("p", RETAIN, 100, 0).await.unwrap();
        let retained = kept.len().saturating_sub(RETAIN as usize);
        kept.drain(..retained);
        for (id, state) in &kept {
            assert_eq!(
                state_at(store, "p", *id).await,
                as_listed(state),
                "checkpoint {id} after {n} checkpoints"
            );
        }
    }
    let stored = raw
        .number("select cast(sum(rows) as bigint) from state_chunks where pipeline = 'p'")
        .await;
    let bound = (2 * KEYS + RETAIN as usize * most_rows) as i64;
    assert!(
        stored <= bound,
        "{stored} rows stored, at most {bound} expected"
    );
    assert!(
        raw.number("select count(distinct checkpoint) from state_chunks")
            .await
            <= 40 / 2,
        "older checkpoints were merged"
    );
}

/// State rows in the table an older eddy wrote are moved into chunks when the store migrates:
/// each checkpoint loads as it was, and the old table is left empty.
async fn state_rows_of_an_older_eddy_are_moved_into_chunks_at_migrate(backend: Backend) {
    let (store, _dir, raw) = open_raw(backend).await;
    store.insert_pipeline("p", &json!({})).await.unwrap();
    raw.execute(
        "insert into state_rows (pipeline, operator, key, checkpoint, key_group, last_time, value) \
         values ('p', 0, 'a', 1, 3, 10, 'a1'), ('p', 0, 'b', 1, 4, 10, 'b1'), \
         ('p', 1, 'a', 1, 3, 10, 'x1'), ('p', 0, 'a', 2, 3, 20, 'a2'), \
         ('p', 0, 'b', 2, 4, 20, null)",
    )
    .await;
    store.migrate().await.unwrap();
    let own = |v: &[(u16, &str, &str)]| -> Vec<(u16, String, String)> {
        v.iter()
            .map(|&(o, k, x)| (o, k.to_owned(), x.to_owned()))
            .collect()
    };
    assert_eq!(
        state_at(&*store, "p", 1).await,
        own(&[(0, "a", "a1"), (0, "b", "b1"), (1, "a", "x1")])
    );
    assert_eq!(
        state_at(&*store, "p", 2).await,
        own(&[(0, "a", "a2"), (1, "a", "x1")])
    );
    assert_eq!(raw.number("select count(*) from state_rows").await, 0);
    store.migrate().await.expect("nothing left to move");
    assert_eq!(raw.number("select count(*) from state_chunks").await, 4);
}

/// A flipped byte in a stored chunk fails the load with an error naming the pipeline, the
/// checkpoint and the key group; the chunks of other key groups are no excuse to go on.
async fn a_damaged_chunk_fails_the_load_naming_where_it_is(backend: Backend) {
    let (store, _dir, raw) = open_raw(backend).await;
    store.insert_pipeline("p", &json!({})).await.unwrap();
    let mut rows = vec![row(0, "a", Some("a1"))];
    rows.push(StateRow {
        key_group: 9,
        ..row(0, "b", Some("b1"))
    });
    let id = checkpoint(&*store, "p", &rows).await.unwrap();
    raw.damage_chunk(9, 20).await;
    let (sink, _chunks) = tokio::sync::mpsc::unbounded_channel();
    let err = store
        .load_state("p", id, i32::MIN..=i32::MAX, sink)
        .await
        .expect_err("a damaged chunk");
    assert!(
        matches!(&err, StoreError::DamagedState { checkpoint, key_group: 9, .. } if *checkpoint == id),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("\"p\"") && text.contains("CRC-32C") && text.contains("key group 9"),
        "{text}"
    );
}

/// A chunk filed under a key group no key can have (a damaged or foreign row) fails the load
/// as damaged, naming that key group, rather than being restored somewhere.
async fn a_chunk_under_an_impossible_key_group_fails_the_load(backend: Backend) {
    let (store, _dir, raw) = open_raw(backend).await;
    store.insert_pipeline("p", &json!({})).await.unwrap();
    let id = checkpoint(&*store, "p", &[row(0, "a", Some("a1"))])
        .await
        .unwrap();
    raw.execute("update state_chunks set key_group = 70000 where key_group = 3")
        .await;
    let (sink, _chunks) = tokio::sync::mpsc::unbounded_channel();
    let err = store
        .load_state("p", id, i32::MIN..=i32::MAX, sink)
        .await
        .expect_err("an impossible key group");
    assert!(
        matches!(
            &err,
            StoreError::DamagedState {
                key_group: 70000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("out of range"), "{err}");
}

/// Partitions spread over instances: each owner writes its partition at a checkpoint's
/// barrier, once, only under the partition lease it holds; what the partitions wrote is
/// counted into the checkpoint, read back with its state, and goes with a restore.
async fn partition_writes_are_fenced_counted_once_and_go_with_a_restore(backend: Backend) {
    let (store, _dir, raw) = open_raw(backend).await;
    let store = &*store;
    store.insert_pipeline("p", &json!({})).await.unwrap();
    let expires = match raw {
        Raw::Sqlite(_) => "0",
        Raw::Postgres(_) => "now()",
    };
    raw.execute(&format!(
        "insert into cluster_partitions (pipeline, partition, holder, epoch, expires_at) \
         values ('p', 0, 'a', 2, {expires})"
    ))
    .await;
    let before = checkpoint(store, "p", &[row(0, "old", Some("1"))])
        .await
        .unwrap();
    let id = store
        .begin_checkpoint("p", Trigger::Manual, 1, None)
        .await
        .unwrap();
    let rows = [
        row(0, "k1", Some("v1")),
        row(1, "k2", Some("v2")),
        row(0, "old", None),
    ];
    let write = |node, epoch, checkpoint| store::PartitionWrite {
        pipeline: "p",
        node,
        checkpoint,
        partition: 0,
        epoch,
        lsn: 40,
        output_position: 7,
        generation: 3,
        rows: &rows,
    };
    assert_eq!(
        store.write_partition(&write("a", 2, id)).await.unwrap(),
        PartitionWritten::Written
    );
    assert_eq!(
        store.write_partition(&write("a", 2, id)).await.unwrap(),
        PartitionWritten::Already,
        "a partition writes once per checkpoint"
    );
    assert_eq!(
        store
            .write_partition(&write("a", 2, id + 100))
            .await
            .unwrap(),
        PartitionWritten::NotInProgress,
        "no checkpoint of that id is in progress"
    );
    let other = store
        .begin_checkpoint("p", Trigger::Manual, 1, None)
        .await
        .unwrap();
    for (node, epoch) in [("a", 1), ("b", 2)] {
        let refused = store.write_partition(&write(node, epoch, other)).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(
        store.partitions_done("p", other).await.unwrap(),
        Vec::<u16>::new()
    );
    assert_eq!(store.partitions_done("p", id).await.unwrap(), vec![0]);
    let written = store.partitions_written("p", id).await.unwrap();
    assert_eq!(
        (
            written.partitions,
            written.keys_written,
            written.keys_deleted
        ),
        (1, 2, 1)
    );
    assert_eq!(store.output_position("p", id, 0).await.unwrap(), (7, 3));
    assert_eq!(store.output_position("p", id, 1).await.unwrap(), (0, 0));
    let commit = CheckpointWrite {
        pipeline: "p",
        id,
        progress: Progress::default(),
        rows: &[],
        outputs: &[],
        idempotency: &[],
        fence: None,
        partitions: Some(written),
    };
    let done = store.commit_checkpoint(&commit).await.unwrap();
    assert_eq!((done.keys_written, done.keys_deleted), (2, 1));
    assert_eq!(
        store.write_partition(&write("a", 2, id)).await.unwrap(),
        PartitionWritten::NotInProgress,
        "a completed checkpoint takes no more writes"
    );
    let expected = vec![
        (0, "k1".to_owned(), "v1".to_owned()),
        (1, "k2".to_owned(), "v2".to_owned()),
    ];
    assert_eq!(state_at(store, "p", id).await, expected);
    let floors = store.floors("p").await.unwrap();
    store.restore_checkpoint("p", before, floors).await.unwrap();
    assert_eq!(
        store.partitions_done("p", id).await.unwrap(),
        Vec::<u16>::new()
    );
    assert_eq!(store.output_position("p", id, 0).await.unwrap(), (0, 0));
    let after = store
        .begin_checkpoint("p", Trigger::Manual, 1, None)
        .await
        .unwrap();
    assert_eq!(
        store.write_partition(&write("a", 2, after)).await.unwrap(),
        PartitionWritten::Written
    );
    assert!(store.delete_pipeline("p").await.unwrap());
    let left = raw
        .number("select count(*) from checkpoint_partitions where pipeline = 'p'")
        .await;
    assert_eq!(left, 0, "a pipeline's partition writes go with it");
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
    compaction_keeps_every_retained_checkpoint_and_bounds_what_is_stored,
    state_rows_of_an_older_eddy_are_moved_into_chunks_at_migrate,
    a_damaged_chunk_fails_the_load_naming_where_it_is,
    a_chunk_under_an_impossible_key_group_fails_the_load,
    partition_writes_are_fenced_counted_once_and_go_with_a_restore,
);
