//! Durability figures on a real store (PostgreSQL from DATABASE_URL, or the SQLite default),
//! with criterion:
//! - `checkpoint/full`: a checkpoint of 1,000,000 keys, all changed;
//! - `checkpoint/incremental`: 10,000 changed keys out of 1,000,000, until answered;
//! - `checkpoint/incremental+prune`: the same, until the older checkpoints it made old are
//!   pruned and compacted (after the answer, see `checkpoint::take`);
//! - `restore`: recovery of a pipeline from a checkpoint of 1,000,000 keys plus 1,000,000
//!   events in the WAL after it;
//! - `ingest_wal`: events/s through the WAL (no HTTP), fdatasync on and off.
//!
//! Each measures only its step (`iter_custom`): loading the keys before a checkpoint, or
//! changing 10,000 of them, is set-up and not timed.
//!
//! Run: DATABASE_URL=postgres://… cargo bench --bench durability

use criterion::{Criterion, SamplingMode, Throughput};
use eddy::checkpoint::Checkpointer;
use eddy::config::{Config, Settings};
use eddy::engine::{BodyFormat, Pipeline, Submission, parse_batch};
use eddy::spec::PipelineSpec;
use eddy::store::Store;
use eddy::store::{self, Trigger};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 1_000_000;
const BATCH: usize = 1_000;
/// Events per run of `ingest_wal`.
const WAL_EVENTS: usize = 500_000;

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

async fn ingest(pipeline: &Pipeline, bodies: Vec<Vec<u8>>) {
    futures::stream::iter(bodies)
        .map(|body| {
            let events = parse_batch(&body, BodyFormat::NdJson, pipeline.extractor()).unwrap();
            let body = Some((bytes::Bytes::from(body), BodyFormat::NdJson));
            pipeline.submit(Submission {
                events,
                arrival: eddy::engine::Arrival::At(0),
                idempotency_key: None,
                body,
            })
        })
        .buffered(16)
        .for_each(|r| async move {
            r.unwrap();
        })
        .await;
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

struct Bench {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    config: Config,
    _dir: tempfile::TempDir,
    /// Pipelines created so far (each needs a name of its own).
    created: usize,
}

impl Bench {
    fn new() -> Bench {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (store, config) = runtime.block_on(async {
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
            let config = Config::resolve(settings).unwrap();
            std::fs::create_dir_all(&config.data_dir).unwrap();
            let store = store::connect(&config.database_url).await.unwrap();
            store.migrate().await.unwrap();
            println!("store: {}", store.backend());
            (store, config)
        });
        Bench {
            runtime,
            store,
            config,
            _dir: dir,
            created: 0,
        }
    }

    fn checkpointer(&self, fsync: bool) -> Checkpointer {
        let config = Config {
            wal_fsync: fsync,
            ..self.config.clone()
        };
        Checkpointer::new(self.store.clone(), Arc::new(config), None)
    }

    /// A new pipeline with `keys` keys loaded.
    fn loaded(&mut self, checkpointer: &Checkpointer, keys: usize) -> (String, Pipeline) {
        self.created += 1;
        let name = format!("p{}", self.created);
        let pipeline = self.runtime.block_on(async {
            self.store
                .insert_pipeline(&name, &spec(&name).document)
                .await
                .unwrap();
            let pipeline = checkpointer.recover(spec(&name), None).await.unwrap();
            ingest(&pipeline, bodies(0, keys, 1)).await;
            pipeline
        });
        (name, pipeline)
    }

    /// A checkpoint, timed until answered (and until pruned if `pruned`); it always returns
    /// pruned, so that no prune runs into the next step.
    fn checkpoint(
        &self,
        checkpointer: &Checkpointer,
        pipeline: &Pipeline,
        pruned: bool,
    ) -> Duration {
        self.runtime.block_on(async {
            let start = Instant::now();
            checkpointer.take(pipeline, Trigger::Manual).await.unwrap();
            let answered = start.elapsed();
            checkpointer.settled(pipeline.name()).await;
            if pruned { start.elapsed() } else { answered }
        })
    }
}

/// A group of steps that take seconds: ten samples of one run each.
fn slow_group<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group
}

/// The summed time of `iters` runs of `run`, each timing its own step.
fn each(iters: u64, mut run: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| run()).sum()
}

fn durability(c: &mut Criterion) {
    // Only `cargo bench` (which passes --bench) measures: listing (nextest, --list) must not
    // build millions of events, connect to a database or print anything.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut bench = Bench::new();
    let checkpointer = bench.checkpointer(true);

    let mut group = slow_group(c, "checkpoint");
    group.bench_function("full/1000000_keys", |b| {
        b.iter_custom(|iters| {
            each(iters, || {
                let (_, pipeline) = bench.loaded(&checkpointer, KEYS);
                bench.checkpoint(&checkpointer, &pipeline, false)
            })
        })
    });
    let (_, pipeline) = bench.loaded(&checkpointer, KEYS);
    bench.checkpoint(&checkpointer, &pipeline, false);
    let mut round = 1;
    for (id, pruned) in [("incremental", false), ("incremental+prune", true)] {
        group.bench_function(format!("{id}/10000_of_1000000_keys"), |b| {
            b.iter_custom(|iters| {
                each(iters, || {
                    round += 1;
                    let first = (round * KEYS / 100) % KEYS;
                    let changed = bodies(first, KEYS / 100, round as i64);
                    bench.runtime.block_on(ingest(&pipeline, changed));
                    bench.checkpoint(&checkpointer, &pipeline, pruned)
                })
            })
        });
    }
    group.finish();
    drop(pipeline);

    let (name, pipeline) = bench.loaded(&checkpointer, KEYS);
    bench.checkpoint(&checkpointer, &pipeline, false);
    bench
        .runtime
        .block_on(ingest(&pipeline, bodies(0, KEYS, 3)));
    drop(pipeline);
    let mut group = slow_group(c, "restore");
    group.bench_function("1000000_keys+1000000_wal_events", |b| {
        b.iter_custom(|iters| {
            each(iters, || {
                bench.runtime.block_on(async {
                    let start = Instant::now();
                    let recovered = checkpointer.recover(spec(&name), None).await.unwrap();
                    let status = recovered.status().await.unwrap();
                    let took = start.elapsed();
                    assert_eq!(status.keys[0].1, KEYS);
                    took
                })
            })
        })
    });
    group.finish();

    let mut group = slow_group(c, "ingest_wal");
    group.throughput(Throughput::Elements(WAL_EVENTS as u64));
    for fsync in [true, false] {
        let checkpointer = bench.checkpointer(fsync);
        let id = format!("fdatasync_{}", if fsync { "on" } else { "off" });
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                each(iters, || {
                    let (_, pipeline) = bench.loaded(&checkpointer, 0);
                    let batches = bodies(0, WAL_EVENTS, 1);
                    bench.runtime.block_on(async {
                        let start = Instant::now();
                        ingest(&pipeline, batches).await;
                        start.elapsed()
                    })
                })
            })
        });
    }
    group.finish();
}

criterion::criterion_group!(benches, durability);
criterion::criterion_main!(benches);
