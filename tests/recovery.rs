//! Recovery over real HTTP, on SQLite and PostgreSQL: WAL replay after a stop without a final
//! checkpoint, checkpoint plus WAL, a corrupt WAL tail, idempotency across restarts, and a
//! store failure in the middle of a checkpoint transaction.

mod common;

use common::{Backend, FeedReader, TestServer, body_json};
use eddy::engine::{BodyFormat, EngineConfig, Pipeline, parse_batch};
use eddy::spec::PipelineSpec;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;

/// The seed pipeline run in-process on the same events the test posts: the output feed the
/// server must show, worked out without asking the server.
struct Reference(Pipeline);

impl Reference {
    fn new() -> Reference {
        let spec = PipelineSpec::from_json(&common::seed_spec()).unwrap();
        let config = EngineConfig {
            shards: 1,
            ..EngineConfig::default()
        };
        Reference(Pipeline::from_spec(spec, &config))
    }

    async fn post(&self, events: &Value) {
        let body = serde_json::to_vec(events).unwrap();
        let batch = parse_batch(&body, BodyFormat::Json, self.0.extractor()).unwrap();
        self.0.ingest(batch, 0).await.unwrap();
    }

    fn records(&self) -> Vec<Value> {
        let (records, _) = self.0.output().read(None, usize::MAX);
        records
            .iter()
            .map(|r| serde_json::to_value(&**r).unwrap())
            .collect()
    }
}

/// `reader` catches up with `s` and has seen exactly the reference's records.
async fn check_feed(s: &TestServer, reader: &mut FeedReader, reference: &Reference) {
    reader.catch_up(&s.client, &s.base).await;
    reader.assert_saw(&reference.records());
}

fn click(user: &str, ts: i64, page: &str) -> Value {
    json!({"user_id": user, "ts": ts, "page": page, "type": "purchase", "amount": 2})
}

/// Everything a client can observe of the seed pipeline's keys `u0..u9`.
async fn observe(s: &TestServer) -> Value {
    let mut keys = Vec::new();
    for u in 0..10 {
        let user = format!("u{u}");
        keys.push(json!([
            s.state_of("clicks", "sessions", &user).await,
            s.state_of("clicks", "spend", &user).await,
            s.state_of("clicks", "last_pages", &user).await
        ]));
    }
    let mut status = s.status("clicks").await;
    status.as_object_mut().unwrap().remove("last_checkpoint");
    json!({"keys": keys, "status": status, "output": s.output("clicks").await,
           "pages": s.state_of("clicks", "page_views", "/p1").await})
}

/// Posts rounds of events that also close sessions and windows, to the server and the
/// reference.
async fn traffic(s: &TestServer, reference: &Reference, round: i64) {
    let base = round * 10_000_000;
    let batch: Vec<Value> = (0..10)
        .map(|u| click(&format!("u{u}"), base + u * 1_000, &format!("/p{}", u % 3)))
        .collect();
    let second = json!([
        click("u1", base + 5_000_000, "/p1"),
        click("u2", base - 10_000_000, "/p2")
    ]);
    for events in [Value::Array(batch), second] {
        s.post_events("clicks", &events).await;
        reference.post(&events).await;
    }
}

async fn a_restart_without_a_checkpoint_replays_the_wal_to_the_same_state(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let (reference, mut reader) = (Reference::new(), FeedReader::new("clicks"));
    for round in 1..4 {
        traffic(&s, &reference, round).await;
    }
    check_feed(&s, &mut reader, &reference).await;
    let before = observe(&s).await;
    assert!(!before["output"].as_array().unwrap().is_empty());
    assert!(before["status"]["late_events"].as_u64().unwrap() > 0);
    let s = s.restart().await;
    assert_eq!(
        observe(&s).await,
        before,
        "state, status and output offsets as before"
    );
    check_feed(&s, &mut reader, &reference).await;
    traffic(&s, &reference, 4).await;
    check_feed(&s, &mut reader, &reference).await;
    let out = s.output("clicks").await;
    let offsets: Vec<u64> = out.iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    assert_eq!(
        offsets,
        (1..=offsets.len() as u64).collect::<Vec<_>>(),
        "new outputs continue the numbering"
    );
}

async fn a_checkpoint_plus_the_wal_after_it_restores_everything(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let (reference, mut reader) = (Reference::new(), FeedReader::new("clicks"));
    traffic(&s, &reference, 1).await;
    s.checkpoint("clicks").await;
    traffic(&s, &reference, 2).await;
    check_feed(&s, &mut reader, &reference).await;
    s.checkpoint("clicks").await;
    traffic(&s, &reference, 3).await;
    let before = observe(&s).await;
    let s = s.restart().await;
    assert_eq!(observe(&s).await, before);
    check_feed(&s, &mut reader, &reference).await;
    let s = s.restart().await;
    assert_eq!(
        observe(&s).await,
        before,
        "a second recovery from the same place"
    );
    check_feed(&s, &mut reader, &reference).await;
    let mut fresh = FeedReader::new("clicks");
    check_feed(&s, &mut fresh, &reference).await;
}

/// A replay of many more records than a shard's mailbox holds (3 here): the replay keeps
/// several records in flight, never more than a mailbox takes (one too many would be refused as
/// overload and fail the recovery), and ends in the same state and output feed.
async fn a_replay_longer_than_the_shard_queue_applies_every_record_in_order(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.engine.shard_queue = 3).await;
    s.create_seed().await;
    let (reference, mut reader) = (Reference::new(), FeedReader::new("clicks"));
    traffic(&s, &reference, 1).await;
    s.checkpoint("clicks").await;
    for round in 2..30 {
        traffic(&s, &reference, round).await;
    }
    check_feed(&s, &mut reader, &reference).await;
    let before = observe(&s).await;
    let s = s.restart().await;
    assert_eq!(observe(&s).await, before, "56 records replayed");
    check_feed(&s, &mut reader, &reference).await;
    traffic(&s, &reference, 30).await;
    check_feed(&s, &mut reader, &reference).await;
}

/// Enough keys that a checkpoint's state is read and restored in many chunks, over two
/// checkpoints (the second rewrites a part of the keys): every key comes back as the reference
/// has it, and the key counts are what was posted.
async fn many_keys_over_two_checkpoints_restore_every_key(backend: Backend) {
    const USERS: usize = 30_000;
    const UPDATED: usize = 2_500;
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let reference = Reference::new();
    // Every event within a few seconds of event time: no session or window closes.
    let post = |users: std::ops::Range<usize>, ts: i64| {
        let events: Vec<Value> = users
            .map(|u| {
                click(
                    &format!("u{u}"),
                    ts + u as i64 % 1_000,
                    &format!("/p{}", u % 7),
                )
            })
            .collect();
        Value::Array(events)
    };
    for first in (0..USERS).step_by(1_000) {
        let events = post(first..first + 1_000, 1_000_000);
        s.post_events("clicks", &events).await;
        reference.post(&events).await;
    }
    s.checkpoint("clicks").await;
    let events = post(0..UPDATED, 1_002_000);
    s.post_events("clicks", &events).await;
    reference.post(&events).await;
    s.checkpoint("clicks").await;
    let s = s.restart().await;
    let keys = &s.status("clicks").await["keys"];
    for operator in ["sessions", "spend", "last_pages"] {
        assert_eq!(keys[operator], USERS, "{operator}: every key restored");
    }
    let sample = (0..50)
        .chain((0..USERS).step_by(97))
        .chain(UPDATED - 5..UPDATED + 5);
    for u in sample {
        let user = format!("u{u}");
        for operator in ["sessions", "spend", "last_pages"] {
            let expected = reference.0.state(operator, &user).await.unwrap();
            assert_eq!(
                s.state_of("clicks", operator, &user).await,
                expected.unwrap_or(Value::Null),
                "{operator} of {user}"
            );
        }
    }
}

async fn a_corrupt_wal_tail_is_cut_and_everything_acknowledged_survives(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let (reference, mut reader) = (Reference::new(), FeedReader::new("clicks"));
    traffic(&s, &reference, 1).await;
    check_feed(&s, &mut reader, &reference).await;
    let before = observe(&s).await;
    let wal_dir = s.config.data_dir.join("wal").join("clicks");
    let (config, dir) = s.stop().await;
    let segment = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .unwrap();
    drop(file);
    let s = TestServer::start_config(config, dir).await;
    assert_eq!(observe(&s).await, before);
    check_feed(&s, &mut reader, &reference).await;
    traffic(&s, &reference, 2).await;
    let after = observe(&s).await;
    let s = s.restart().await;
    assert_eq!(
        observe(&s).await,
        after,
        "new records after the cut are readable"
    );
    check_feed(&s, &mut reader, &reference).await;
}

async fn idempotency_keys_survive_restarts_from_the_wal_and_from_a_checkpoint(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let post = |s: &TestServer, key: &str, body: Value| {
        let req = s
            .client
            .post(s.url("/v1/pipelines/clicks/events"))
            .header("Idempotency-Key", key)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    let first = body_json(
        post(
            &s,
            "k1",
            json!([click("u1", 1_000, "/a"), click("u2", 1_000, "/a")]),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let again = post(&s, "k1", json!(click("u9", 1, "/a"))).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(body_json(again, StatusCode::OK).await, first);
    assert_eq!(
        s.status("clicks").await["events"],
        2,
        "nothing applied twice"
    );

    let s = s.restart().await;
    let replayed = post(&s, "k1", json!(click("u9", 1, "/a"))).await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(body_json(replayed, StatusCode::OK).await, first);

    s.checkpoint("clicks").await;
    body_json(
        post(&s, "k2", json!(click("u3", 2_000, "/a"))).await,
        StatusCode::OK,
    )
    .await;
    let s = s.restart().await;
    for key in ["k1", "k2"] {
        let resp = post(&s, key, json!(click("u9", 1, "/a"))).await;
        assert_eq!(resp.headers()["idempotent-replayed"], "true", "{key}");
    }
    assert_eq!(s.status("clicks").await["events"], 3);
    let bad = s
        .client
        .post(s.url("/v1/pipelines/clicks/events"))
        .header("Idempotency-Key", "")
        .json(&click("u1", 1, "/a"))
        .send()
        .await
        .unwrap();
    common::expect_problem(bad, StatusCode::BAD_REQUEST, "bad_request").await;
}

/// Makes the checkpoint row update fail inside the checkpoint transaction: on PostgreSQL the
/// connection terminates itself, on SQLite the statement aborts.
async fn break_checkpoint_commits(s: &TestServer, backend: Backend) {
    let url = &s.config.database_url;
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(
                "create function die() returns trigger language plpgsql as $$ \
                         begin perform pg_terminate_backend(pg_backend_pid()); return new; end $$",
            )
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "create trigger die before update on checkpoints for each row \
                         when (new.status = 'completed') execute function die()",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(
                "create trigger die before update on checkpoints when new.status = 'completed' \
                         begin select raise(abort, 'injected failure'); end",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
    }
}

async fn heal_checkpoint_commits(s: &TestServer, backend: Backend) {
    let url = &s.config.database_url;
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query("drop trigger die on checkpoints")
                .execute(&pool)
                .await
                .unwrap();
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query("drop trigger die")
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

async fn a_store_failure_mid_checkpoint_keeps_the_previous_one_and_loses_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let (reference, mut reader) = (Reference::new(), FeedReader::new("clicks"));
    traffic(&s, &reference, 1).await;
    let good = s.checkpoint("clicks").await;
    traffic(&s, &reference, 2).await;
    break_checkpoint_commits(&s, backend).await;
    let resp = s.post("/v1/pipelines/clicks/checkpoints").await;
    // PostgreSQL: the connection was killed, the store may be unreachable (503); SQLite: the
    // statement was refused (500).
    let refused = match backend {
        Backend::Postgres => StatusCode::SERVICE_UNAVAILABLE,
        Backend::Sqlite => StatusCode::INTERNAL_SERVER_ERROR,
    };
    assert_eq!(resp.status(), refused);
    heal_checkpoint_commits(&s, backend).await;
    let list = body_json(
        s.get("/v1/pipelines/clicks/checkpoints").await,
        StatusCode::OK,
    )
    .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items[0]["status"], "failed", "marked on another connection");
    assert!(items[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(items[1]["id"], good["id"]);
    assert_eq!(items[1]["status"], "completed");

    // The next checkpoint still writes the keys the failed one drained.
    let next = s.checkpoint("clicks").await;
    assert!(next["keys_written"].as_i64().unwrap() >= 20, "{next}");
    traffic(&s, &reference, 3).await;
    check_feed(&s, &mut reader, &reference).await;
    let before = observe(&s).await;
    let s = s.restart().await;
    assert_eq!(observe(&s).await, before);
    check_feed(&s, &mut reader, &reference).await;
    let list = body_json(
        s.get("/v1/pipelines/clicks/checkpoints").await,
        StatusCode::OK,
    )
    .await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] != "in_progress")
    );
}

async fn deleting_a_pipeline_removes_its_wal(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    traffic(&s, &Reference::new(), 1).await;
    let wal_dir = s.config.data_dir.join("wal").join("clicks");
    assert!(wal_dir.exists());
    assert_eq!(
        s.delete("/v1/pipelines/clicks").await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(!wal_dir.exists());
    s.create_seed().await;
    let s = s.restart().await;
    assert_eq!(
        s.status("clicks").await["events"],
        0,
        "nothing of the old pipeline comes back"
    );
}

/// Flips a bit in a stored state chunk of `pipeline`, as a damaged disk under the database
/// would; answers the checkpoint of the chunk.
async fn damage_a_state_chunk(backend: Backend, url: &str, pipeline: &str) -> i64 {
    let read = "select checkpoint, key_group, data from state_chunks where pipeline = $1 \
                order by checkpoint desc, key_group limit 1";
    let write = "update state_chunks set data = $4 \
                 where pipeline = $1 and checkpoint = $2 and key_group = $3";
    macro_rules! damage {
        ($pool:expr) => {{
            let pool = $pool;
            let (checkpoint, key_group, mut data): (i64, i32, Vec<u8>) = sqlx::query_as(read)
                .bind(pipeline)
                .fetch_one(&pool)
                .await
                .unwrap();
            let at = data.len() / 2;
            data[at] ^= 0x01;
            let query = sqlx::query(write)
                .bind(pipeline)
                .bind(checkpoint)
                .bind(key_group);
            query.bind(data).execute(&pool).await.unwrap();
            checkpoint
        }};
    }
    match backend {
        Backend::Postgres => damage!(sqlx::PgPool::connect(url).await.unwrap()),
        Backend::Sqlite => damage!(sqlx::SqlitePool::connect(url).await.unwrap()),
    }
}

/// A damaged state chunk (a flipped bit under the database) fails its pipeline's recovery
/// visibly, naming the checkpoint; nothing of it is restored, and the other pipeline serves.
/// Restoring the checkpoint before the damaged one brings the pipeline back.
async fn a_damaged_state_chunk_fails_its_pipeline_and_nothing_else(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.create_seed().await;
    let other = eddy::workload::seed_spec("other");
    body_json(
        s.post_json("/v1/pipelines", &other).await,
        StatusCode::CREATED,
    )
    .await;
    for pipeline in ["clicks", "other"] {
        s.post_events(
            pipeline,
            &json!([click("u1", 1_000, "/a"), click("u2", 2_000, "/b")]),
        )
        .await;
        s.checkpoint(pipeline).await;
    }
    let first = s.state_of("clicks", "spend", "u1").await;
    s.post_events("clicks", &json!([click("u1", 3_000, "/c")]))
        .await;
    let older = s.checkpoint("clicks").await["id"].as_i64().unwrap() - 1;
    assert_ne!(s.state_of("clicks", "spend", "u1").await, first);
    let before = s.state_of("other", "spend", "u1").await;
    let (config, dir) = s.stop().await;
    let checkpoint = damage_a_state_chunk(backend, &config.database_url, "clicks").await;
    let s = TestServer::start_config(config, dir).await;
    let status = s.status("clicks").await;
    assert_eq!(status["state"], "failed", "{status}");
    let reason = status["error"].as_str().expect("a reason");
    assert!(
        reason.contains("damaged")
            && reason.contains("CRC-32C")
            && reason.contains(&format!("checkpoint {checkpoint}")),
        "{reason}"
    );
    let resp = s
        .get("/v1/pipelines/clicks/operators/spend/state?key=u1")
        .await;
    common::expect_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "pipeline_failed").await;
    assert_eq!(s.status("other").await["state"], "running");
    assert_eq!(s.state_of("other", "spend", "u1").await, before);
    // The checkpoint before the damaged one reads none of its chunks: restoring it brings the
    // pipeline back with the state it had then.
    let resp = s
        .post(&format!("/v1/pipelines/clicks/checkpoints/{older}/restore"))
        .await;
    assert_eq!(body_json(resp, StatusCode::OK).await["restored"], older);
    assert_eq!(s.status("clicks").await["state"], "running");
    assert_eq!(s.state_of("clicks", "spend", "u1").await, first);
}

backend_tests!(
    a_damaged_state_chunk_fails_its_pipeline_and_nothing_else,
    a_restart_without_a_checkpoint_replays_the_wal_to_the_same_state,
    a_checkpoint_plus_the_wal_after_it_restores_everything,
    a_replay_longer_than_the_shard_queue_applies_every_record_in_order,
    many_keys_over_two_checkpoints_restore_every_key,
    a_corrupt_wal_tail_is_cut_and_everything_acknowledged_survives,
    idempotency_keys_survive_restarts_from_the_wal_and_from_a_checkpoint,
    a_store_failure_mid_checkpoint_keeps_the_previous_one_and_loses_nothing,
    deleting_a_pipeline_removes_its_wal,
);
