//! Checkpoints that fail for real, over real HTTP: a store that refuses writes, a store that is
//! slow (a table locked from another connection), a store that is stopped, and periodic
//! checkpoints of several pipelines on SQLite that must not contend.
//!
//! Over 400 lines for a reason: four real failures of a store (refusing, slow, stopped, SQLite
//! contention), each a whole scenario with its check of what is listed and counted.

mod common;

use common::pg::ThrowawayPostgres;
use common::{Backend, TestServer, body_json, expect_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn click(user: &str, ts: i64) -> Value {
    json!({"user_id": user, "ts": ts, "page": "/home"})
}

/// The seed pipeline as `name`, checkpointed every `interval`, keeping every checkpoint.
async fn create(s: &TestServer, name: &str, interval: &str) {
    let mut spec = eddy::workload::seed_spec(name);
    spec["checkpoint_interval"] = json!(interval);
    spec["retain_checkpoints"] = json!(1000);
    let resp = s.post_json("/v1/pipelines", &spec).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{}",
        resp.text().await.unwrap()
    );
}

/// Every listed checkpoint of `pipeline`, newest first.
async fn checkpoints(s: &TestServer, pipeline: &str) -> Vec<Value> {
    let list = body_json(
        s.get(&format!("/v1/pipelines/{pipeline}/checkpoints"))
            .await,
        StatusCode::OK,
    )
    .await;
    list["items"].as_array().unwrap().clone()
}

/// `eddy_checkpoint_failures_total` of `pipeline` and `trigger` on /metrics (0 when absent).
async fn failures_counted(s: &TestServer, pipeline: &str, trigger: &str) -> u64 {
    let text = s.get("/metrics").await.text().await.unwrap();
    let (p, t) = (
        format!("pipeline=\"{pipeline}\""),
        format!("trigger=\"{trigger}\""),
    );
    text.lines()
        .filter(|l| l.starts_with("eddy_checkpoint_failures_total{"))
        .filter(|l| l.contains(&p) && l.contains(&t))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// Polls `done` every 50ms until it holds; panics naming `what` after two minutes.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A trigger refusing every insert into `state_chunks`: the checkpoint's write fails for real.
async fn break_state_chunks(backend: Backend, url: &str) {
    let statements: &[&str] = match backend {
        Backend::Sqlite => &["create trigger refuse before insert on state_chunks \
             begin select raise(abort, 'state_chunks refuses writes'); end"],
        Backend::Postgres => &[
            "create function refuse() returns trigger language plpgsql as \
             $$ begin raise exception 'state_chunks refuses writes'; end $$",
            "create trigger refuse before insert on state_chunks \
             for each row execute function refuse()",
        ],
    };
    execute(backend, url, statements).await;
}

async fn repair_state_chunks(backend: Backend, url: &str) {
    let statement = match backend {
        Backend::Sqlite => "drop trigger refuse",
        Backend::Postgres => "drop trigger refuse on state_chunks",
    };
    execute(backend, url, &[statement]).await;
}

async fn execute(backend: Backend, url: &str, statements: &[&str]) {
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        }
    }
}

async fn a_failed_manual_checkpoint_is_listed_counted_and_keeps_its_changes(backend: Backend) {
    let s = TestServer::start(backend).await;
    create(&s, "clicks", "1h").await;
    s.post_events("clicks", &json!([click("a", 1_000), click("b", 2_000)]))
        .await;
    break_state_chunks(backend, &s.config.database_url).await;
    let resp = s.post("/v1/pipelines/clicks/checkpoints").await;
    let doc = expect_problem(resp, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    assert_eq!(
        doc["detail"], "internal error",
        "the cause is logged, not sent"
    );

    let listed = checkpoints(&s, "clicks").await;
    let failed = &listed[0];
    assert_eq!(
        (&failed["status"], &failed["trigger"]),
        (&json!("failed"), &json!("manual"))
    );
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("state_chunks refuses writes"), "{error}");
    assert!(failed["completed_at"].is_string(), "{failed}");
    let got = body_json(
        s.get(&format!(
            "/v1/pipelines/clicks/checkpoints/{}",
            failed["id"]
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(&got, failed);
    assert_eq!(failures_counted(&s, "clicks", "manual").await, 1);

    repair_state_chunks(backend, &s.config.database_url).await;
    let cp = s.checkpoint("clicks").await;
    assert!(cp["id"].as_i64() > failed["id"].as_i64());
    // sessions a, b; last_pages a, b; page_views /home: nothing of the failed one is lost.
    assert_eq!(cp["keys_written"], 5, "{cp}");
    assert_eq!(failures_counted(&s, "clicks", "manual").await, 1);
}

async fn a_failing_periodic_checkpoint_is_listed_and_counted(backend: Backend) {
    let s = TestServer::start(backend).await;
    create(&s, "clicks", "100ms").await;
    break_state_chunks(backend, &s.config.database_url).await;
    s.post_events("clicks", &json!([click("a", 1_000)])).await;
    until("a failed periodic checkpoint in the list", || async {
        checkpoints(&s, "clicks").await.iter().any(|c| {
            c["status"] == "failed"
                && c["trigger"] == "periodic"
                && c["error"].as_str().unwrap().contains("refuses writes")
        })
    })
    .await;
    assert!(failures_counted(&s, "clicks", "periodic").await >= 1);
    repair_state_chunks(backend, &s.config.database_url).await;
    until("a completed periodic checkpoint", || async {
        checkpoints(&s, "clicks").await[0]["status"] == "completed"
    })
    .await;
}

/// Posts clicks to every pipeline of `names` until `stop` is set.
fn ingest(s: &TestServer, names: &[&str], stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let urls: Vec<String> = names
        .iter()
        .map(|n| s.url(&format!("/v1/pipelines/{n}/events")))
        .collect();
    let client = s.client.clone();
    tokio::spawn(async move {
        let mut ts = 10_000;
        while !stop.load(Ordering::Relaxed) {
            for url in &urls {
                ts += 1;
                let batch: Vec<Value> = (0..20).map(|i| click(&format!("u{i}"), ts)).collect();
                let resp = client.post(url).json(&batch).send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
            }
        }
    })
}

async fn periodic_checkpoints_of_pipelines_on_the_same_tick_do_not_fail(backend: Backend) {
    let s = TestServer::start(backend).await;
    let names = ["p1", "p2", "p3"];
    for name in names {
        create(&s, name, "100ms").await;
        s.post_events(name, &json!([click("a", 1_000)])).await;
    }
    // After a restart every pipeline's periodic timer starts at once: their ticks coincide.
    let s = s.restart().await;
    let before: Vec<usize> = futures::future::join_all(names.map(|n| {
        let s = &s;
        async move { checkpoints(s, n).await.len() }
    }))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = ingest(&s, &names, stop.clone());
    for (name, before) in names.iter().zip(before) {
        until("20 periodic checkpoints per pipeline", || async {
            checkpoints(&s, name).await.len() >= before + 20
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    for name in names {
        let failed: Vec<Value> = checkpoints(&s, name)
            .await
            .into_iter()
            .filter(|c| c["status"] == "failed")
            .collect();
        assert!(failed.is_empty(), "{name}: {failed:#?}");
        assert_eq!(failures_counted(&s, name, "periodic").await, 0, "{name}");
    }
}

backend_tests!(
    a_failed_manual_checkpoint_is_listed_counted_and_keeps_its_changes,
    a_failing_periodic_checkpoint_is_listed_and_counted,
    periodic_checkpoints_of_pipelines_on_the_same_tick_do_not_fail,
);

/// Holds `lock table <table> in access exclusive mode` in an open transaction until dropped
/// (the connection closes, the transaction rolls back).
async fn lock_table(url: &str, table: &str) -> sqlx::PgConnection {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("begin").execute(&mut c).await.unwrap();
    sqlx::query(&format!("lock table {table} in access exclusive mode"))
        .execute(&mut c)
        .await
        .unwrap();
    c
}

/// Whether some session waits for a lock (a checkpoint blocked by [`lock_table`]).
async fn a_session_waits_for_a_lock(url: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let (waiting,): (i64,) = sqlx::query_as(
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' \
         and datname = current_database()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    waiting > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_409_names_the_running_checkpoint_which_get_finds_in_progress() {
    let s = TestServer::start(Backend::Postgres).await;
    create(&s, "clicks", "1h").await;
    s.post_events("clicks", &json!([click("a", 1_000)])).await;
    let url = s.config.database_url.clone();
    // The first checkpoint writes its in_progress row, then waits to insert its state chunks;
    // until its row is written it waits on the checkpoints table, without an id.
    let rows = lock_table(&url, "state_chunks").await;
    let ids = lock_table(&url, "checkpoints").await;
    let first = tokio::spawn({
        let (client, url) = (s.client.clone(), s.url("/v1/pipelines/clicks/checkpoints"));
        async move { client.post(url).send().await.unwrap() }
    });
    until("the first checkpoint to wait for its row", || {
        a_session_waits_for_a_lock(&url)
    })
    .await;
    // Sent while the running checkpoint has no id yet: it must not answer with a made-up one.
    let second = tokio::spawn({
        let (client, url) = (s.client.clone(), s.url("/v1/pipelines/clicks/checkpoints"));
        async move { client.post(url).send().await.unwrap() }
    });
    drop(ids);
    let doc = expect_problem(
        second.await.unwrap(),
        StatusCode::CONFLICT,
        "checkpoint_running",
    )
    .await;
    let id = doc["checkpoint_id"].as_i64().unwrap();
    assert!(id > 0, "{doc}");
    let running = body_json(
        s.get(&format!("/v1/pipelines/clicks/checkpoints/{id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(running["status"], "in_progress", "{running}");
    let again = s.post("/v1/pipelines/clicks/checkpoints").await;
    let doc = expect_problem(again, StatusCode::CONFLICT, "checkpoint_running").await;
    assert_eq!(doc["checkpoint_id"], id);
    drop(rows);
    let done = body_json(first.await.unwrap(), StatusCode::CREATED).await;
    assert_eq!(
        (done["id"].as_i64(), &done["status"]),
        (Some(id), &json!("completed"))
    );
}

/// Triggers until one is taken, while a periodic one may legitimately run (its 409 must name
/// a checkpoint GET finds); answers the taken checkpoint.
async fn trigger_until_taken(s: &TestServer) -> Value {
    for _ in 0..200 {
        let resp = s.post("/v1/pipelines/clicks/checkpoints").await;
        if resp.status() == StatusCode::CREATED {
            return body_json(resp, StatusCode::CREATED).await;
        }
        let doc = expect_problem(resp, StatusCode::CONFLICT, "checkpoint_running").await;
        let id = &doc["checkpoint_id"];
        let got = s
            .get(&format!("/v1/pipelines/clicks/checkpoints/{id}"))
            .await;
        assert_eq!(
            got.status(),
            StatusCode::OK,
            "409 names {id}, which GET does not find"
        );
    }
    panic!("every trigger was refused with 409");
}

fn epoch_ms(rfc3339: &Value) -> i64 {
    let t = time::OffsetDateTime::parse(
        rfc3339.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_run_answers_503_backs_off_and_lists_the_failures() {
    let pg = ThrowawayPostgres::start();
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = eddy::config::Config::for_tests(dir.path().to_owned(), pg.url());
    config.store_acquire_timeout = Duration::from_millis(500);
    // A trigger that hung would answer 408, not 503.
    config.request_timeout = Duration::from_secs(20);
    let s = TestServer::start_config(config, Some(dir)).await;
    create(&s, "clicks", "100ms").await;
    s.post_events("clicks", &json!([click("a", 1_000)])).await;
    until("a completed periodic checkpoint", || async {
        checkpoints(&s, "clicks")
            .await
            .iter()
            .any(|c| c["status"] == "completed")
    })
    .await;

    pg.stop();
    // Once one periodic checkpoint failed, none can hold the slot with an id (none can write
    // its row): a trigger must then answer 503, never 409.
    until("a failed periodic checkpoint", || async {
        failures_counted(&s, "clicks", "periodic").await >= 1
    })
    .await;
    let resp = s.post("/v1/pipelines/clicks/checkpoints").await;
    assert_eq!(resp.headers()["retry-after"], "5");
    let doc = expect_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
    let detail = doc["detail"].as_str().unwrap();
    assert!(detail.contains("postgres"), "{detail}");
    // Events are still taken (the WAL is local); their state waits for the store.
    s.post_events("clicks", &json!([click("b", 2_000)])).await;
    until("five failed periodic checkpoints", || async {
        failures_counted(&s, "clicks", "periodic").await >= 5
    })
    .await;

    pg.start_again();
    let cp = trigger_until_taken(&s).await;
    assert_eq!(cp["status"], "completed");
    // Every failure is listed: by the first checkpoint that reached the store again, or (one
    // that timed out as the store came back) by the next.
    let failed_rows = || async {
        let listed = checkpoints(&s, "clicks").await;
        listed
            .into_iter()
            .filter(|c| c["status"] == "failed")
            .collect::<Vec<_>>()
    };
    until("every counted failure listed", || async {
        let counted = failures_counted(&s, "clicks", "periodic").await
            + failures_counted(&s, "clicks", "manual").await;
        failed_rows().await.len() as u64 == counted
    })
    .await;
    let failed = failed_rows().await;
    assert!(
        failed.iter().any(|c| c["trigger"] == "manual"),
        "{failed:#?}"
    );
    for c in &failed {
        let error = c["error"].as_str().unwrap();
        assert!(
            error.contains("postgres store cannot be reached"),
            "{error}"
        );
    }
    // After the n-th failure in a row the next attempt waits 100ms * 2^n at least.
    let mut periodic: Vec<i64> = failed
        .iter()
        .filter(|c| c["trigger"] == "periodic")
        .map(|c| epoch_ms(&c["started_at"]))
        .collect();
    periodic.sort();
    for (n, pair) in periodic.windows(2).enumerate().take(5) {
        let pause = eddy::checkpoint::periodic_delay(Duration::from_millis(100), n as u32 + 1);
        assert!(
            pair[1] - pair[0] >= pause.as_millis() as i64,
            "failure {} started {}ms after the one before, before its backoff of {pause:?}: {periodic:?}",
            n + 2,
            pair[1] - pair[0]
        );
    }
    // The state posted during the outage is in the store now.
    assert!(cp["events"].as_i64() >= Some(2), "{cp}");
}
