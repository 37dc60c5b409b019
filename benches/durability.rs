//! Durability figures on a real store (PostgreSQL from DATABASE_URL, or the SQLite default):
//! a full checkpoint of 1,000,000 keys, an incremental one with 10,000 changed keys, recovery
//! from that checkpoint plus 1,000,000 WAL events, and ingest through the WAL (no HTTP) with
//! fdatasync on and off.
//!
//! Run: DATABASE_URL=postgres://… cargo bench --bench durability

use eddy::checkpoint::Checkpointer;
use eddy::config::{Config, Settings};
use eddy::engine::{BodyFormat, Pipeline, Submission, parse_batch};
use eddy::spec::PipelineSpec;
use eddy::store::{self, Trigger};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

const KEYS: usize = 1_000_000;
const BATCH: usize = 1_000;

fn spec(name: &str) -> PipelineSpec {
    PipelineSpec::from_json(&json!({
        "name": name, "key": "/user_id", "time": {"field": "/ts"}, "checkpoint_interval": "1h",
        "operators": [{"name": "spend", "kind": "aggregate", "value": "/amount", "functions": ["sum", "count"]}]
    }))
    .unwrap()
}

/// NDJSON batches of one event per key `user{first..first+n}`.
fn bodies(first: usize, n: usize, ts: i64) -> Vec<Vec<u8>> {
    (first..first + n)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|ids| {
            let mut body = Vec::new();
            for i in ids {
                serde_json::to_writer(
                    &mut body,
                    &json!({"user_id": format!("user{i:07}"), "ts": ts, "amount": 1.5}),
                )
                .unwrap();
                body.push(b'\n');
            }
            body
        })
        .collect()
}

async fn ingest(pipeline: &Pipeline, bodies: Vec<Vec<u8>>) -> f64 {
    let start = Instant::now();
    let events: usize = bodies
        .iter()
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .sum();
    futures::stream::iter(bodies)
        .map(|body| {
            let events = parse_batch(&body, BodyFormat::NdJson, pipeline.extractor()).unwrap();
            let body = Some((bytes::Bytes::from(body), BodyFormat::NdJson));
            pipeline.submit(Submission {
                events,
                arrival: 0,
                idempotency_key: None,
                body,
            })
        })
        .buffered(16)
        .for_each(|r| async move {
            r.unwrap();
        })
        .await;
    events as f64 / start.elapsed().as_secs_f64()
}

/// A new database on the server of `admin` (dropped by hand or with the server): the bench
/// never writes into an existing database.
async fn fresh_database(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!("eddy_bench_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("DATABASE_URL reachable");
    sqlx::query(&format!("create database {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let host_end = base.find("://").map_or(0, |i| i + 3);
    let cut = base[host_end..]
        .find('/')
        .map_or(base.len(), |i| host_end + i);
    let mut url = format!("{}/{name}", &base[..cut]);
    if let Some(q) = query {
        url = format!("{url}?{q}");
    }
    println!("database: {name} (drop it when done)");
    url
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = match std::env::var("DATABASE_URL") {
        Ok(admin) if admin.starts_with("postgres") => Some(fresh_database(&admin).await),
        _ => None,
    };
    let settings = Settings {
        data_dir: Some(dir.path().to_owned()),
        database_url,
        shards: Some(2),
        ..Settings::default()
    };
    let mut config = Config::resolve(settings).unwrap();
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let store = store::connect(&config.database_url).await.unwrap();
    store.migrate().await.unwrap();
    println!("store: {}", store.backend());

    for fsync in [true, false] {
        config.wal_fsync = fsync;
        let name = format!("ingest-{fsync}");
        store
            .insert_pipeline(&name, &spec(&name).document)
            .await
            .unwrap();
        let checkpointer = Checkpointer::new(store.clone(), Arc::new(config.clone()));
        let pipeline = checkpointer.recover(spec(&name)).await.unwrap();
        let rate = ingest(&pipeline, bodies(0, 500_000, 1)).await;
        println!(
            "ingest through the WAL, fdatasync {}: {rate:.0} events/s",
            if fsync { "on" } else { "off" }
        );
    }
    config.wal_fsync = true;

    let config = Arc::new(config);
    let checkpointer = Checkpointer::new(store.clone(), config.clone());
    store
        .insert_pipeline("ckpt", &spec("ckpt").document)
        .await
        .unwrap();
    let pipeline = checkpointer.recover(spec("ckpt")).await.unwrap();
    ingest(&pipeline, bodies(0, KEYS, 1)).await;
    let start = Instant::now();
    let full = checkpointer.take(&pipeline, Trigger::Manual).await.unwrap();
    println!(
        "full checkpoint: {} keys, {} bytes in {:.0} ms",
        full.keys_written,
        full.bytes,
        start.elapsed().as_secs_f64() * 1e3
    );

    ingest(&pipeline, bodies(0, KEYS / 100, 2)).await;
    let start = Instant::now();
    let incremental = checkpointer.take(&pipeline, Trigger::Manual).await.unwrap();
    println!(
        "incremental checkpoint: {} of {KEYS} keys changed, {:.0} ms",
        incremental.keys_written,
        start.elapsed().as_secs_f64() * 1e3
    );

    ingest(&pipeline, bodies(0, KEYS, 3)).await;
    drop(pipeline);
    let start = Instant::now();
    let recovered = checkpointer.recover(spec("ckpt")).await.unwrap();
    let status = recovered.status().await.unwrap();
    println!(
        "recovery: checkpoint of {KEYS} keys + {KEYS} WAL events in {:.0} ms (events {}, keys {})",
        start.elapsed().as_secs_f64() * 1e3,
        status.events,
        status.keys[0].1
    );
}
