//! Engine throughput without HTTP: the contract's six-operator pipeline over a generated click
//! stream of 1,000,000 events from 100,000 users, with 1 and 2 shards. "parse+apply" starts
//! from NDJSON bytes (what ingest does per request); "apply" from extracted events.
//!
//! Run: cargo bench --bench engine

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eddy::engine::{BodyFormat, EngineConfig, Event, Pipeline, parse_batch};
use eddy::spec::PipelineSpec;
use eddy::workload::{ClickStream, seed_spec};
use futures::StreamExt;

const EVENTS: usize = 1_000_000;
const BATCH: usize = 1_000;
/// Batches in flight at once, as concurrent HTTP requests would have them.
const IN_FLIGHT: usize = 8;

fn pipeline(shards: usize) -> Pipeline {
    let spec = PipelineSpec::from_json(&seed_spec("bench")).unwrap();
    Pipeline::from_spec(
        spec,
        &EngineConfig {
            shards,
            ..EngineConfig::default()
        },
    )
}

async fn apply(pipeline: &Pipeline, batches: Vec<Vec<Event>>) {
    futures::stream::iter(batches)
        .map(|batch| pipeline.ingest(batch, 0))
        .buffered(IN_FLIGHT)
        .for_each(|ack| async move {
            ack.expect("ingest");
        })
        .await;
}

fn engine(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let stream = ClickStream {
        users: 100_000,
        ..ClickStream::default()
    };
    let bodies = stream.ndjson_batches(EVENTS, BATCH);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    for shards in [1, 2] {
        group.bench_function(format!("parse+apply/{shards}_shards"), |b| {
            b.iter_batched(
                || pipeline(shards),
                |p| {
                    runtime.block_on(async {
                        let parsed = bodies.iter().map(|body| {
                            parse_batch(body, BodyFormat::NdJson, p.extractor()).unwrap()
                        });
                        apply(&p, parsed.collect()).await;
                    })
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("apply/{shards}_shards"), |b| {
            b.iter_batched(
                || {
                    let p = pipeline(shards);
                    let parsed = bodies
                        .iter()
                        .map(|body| parse_batch(body, BodyFormat::NdJson, p.extractor()).unwrap());
                    let batches: Vec<Vec<Event>> = parsed.collect();
                    (p, batches)
                },
                |(p, batches)| runtime.block_on(apply(&p, batches)),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
