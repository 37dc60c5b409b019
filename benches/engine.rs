//! Engine throughput without HTTP or WAL, from NDJSON bytes (what ingest does per request:
//! parse, extract, route, apply), for
//! - `six`: the contract's six-operator example pipeline over the click stream,
//! - `three`: the three-operator click pipeline (`examples/clicks3.json`),
//!
//! at 100,000 and 1,000,000 users, on 1 and 2 shards. Batches of 1,000 events, 8 in flight as
//! concurrent requests would have them, parsed on the runtime's two workers. `apply` starts
//! from extracted events, to separate the engine from the parse; `parse` is the parse alone
//! (scan, extract, route) on one thread.
//!
//! Run: cargo bench --bench engine   (EDDY_BENCH_EVENTS=… changes the events per run)

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use eddy::engine::{BodyFormat, EngineConfig, ParsedBatch, Pipeline, parse_batch};
use eddy::spec::PipelineSpec;
use eddy::workload::{ClickStream, seed_spec, three_operator_spec};
use futures::StreamExt;
use serde_json::Value;
use std::sync::Arc;

const BATCH: usize = 1_000;
/// Batches in flight at once.
const IN_FLIGHT: usize = 8;

fn events_per_run() -> usize {
    std::env::var("EDDY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000)
}

fn pipeline(spec: &Value, shards: usize) -> Arc<Pipeline> {
    let spec = PipelineSpec::from_json(spec).unwrap();
    let config = EngineConfig {
        shards,
        ..EngineConfig::default()
    };
    Arc::new(Pipeline::from_spec(spec, &config))
}

/// Parses each body on a blocking worker and applies the batches in order.
async fn parse_and_apply(pipeline: &Arc<Pipeline>, bodies: &Arc<Vec<Vec<u8>>>) {
    futures::stream::iter(0..bodies.len())
        .map(|i| {
            let (p, bodies) = (pipeline.clone(), bodies.clone());
            tokio::task::spawn_blocking(move || {
                parse_batch(&bodies[i], BodyFormat::NdJson, p.extractor()).unwrap()
            })
        })
        .buffered(IN_FLIGHT)
        .map(|parsed| pipeline.ingest(parsed.unwrap(), 0))
        .buffered(IN_FLIGHT)
        .for_each(|ack| async move {
            ack.expect("ingest");
        })
        .await;
}

async fn apply(pipeline: &Pipeline, batches: Vec<ParsedBatch>) {
    futures::stream::iter(batches)
        .map(|batch| pipeline.ingest(batch, 0))
        .buffered(IN_FLIGHT)
        .for_each(|ack| async move {
            ack.expect("ingest");
        })
        .await;
}

fn engine(c: &mut Criterion) {
    // Only `cargo bench` (which passes --bench) measures: listing (nextest, --list) must not
    // build millions of events, connect to a database or print anything.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // As the server runs: its per-batch metric work is part of what is measured.
    eddy::metrics::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let events = events_per_run();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let pipelines = [
        ("six", seed_spec("bench")),
        ("three", three_operator_spec("bench")),
    ];
    for users in [100_000, 1_000_000] {
        let stream = ClickStream {
            users,
            amount_always: true,
            ..ClickStream::default()
        };
        let bodies = Arc::new(stream.ndjson_batches(events, BATCH));
        for (name, spec) in &pipelines {
            for shards in [1, 2] {
                let id = format!("parse+apply/{name}/{users}_users/{shards}_shards");
                group.bench_function(id, |b| {
                    b.iter_batched(
                        || pipeline(spec, shards),
                        |p| runtime.block_on(parse_and_apply(&p, &bodies)),
                        BatchSize::PerIteration,
                    )
                });
            }
        }
        if users == 100_000 {
            for (name, spec) in &pipelines {
                let p = pipeline(spec, 2);
                group.bench_function(format!("parse/{name}/{users}_users"), |b| {
                    b.iter(|| {
                        for body in bodies.iter() {
                            parse_batch(body, BodyFormat::NdJson, p.extractor()).unwrap();
                        }
                    })
                });
            }
            let spec = &pipelines[0].1;
            for shards in [1, 2] {
                group.bench_function(format!("apply/six/{users}_users/{shards}_shards"), |b| {
                    b.iter_batched(
                        || {
                            let p = pipeline(spec, shards);
                            let parsed = bodies.iter().map(|body| {
                                parse_batch(body, BodyFormat::NdJson, p.extractor()).unwrap()
                            });
                            let batches: Vec<ParsedBatch> = parsed.collect();
                            (p, batches)
                        },
                        |(p, batches)| runtime.block_on(apply(&p, batches)),
                        BatchSize::PerIteration,
                    )
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
