//! No heap allocation per event in steady state: once every key, map entry and window of a
//! stream exists, applying more events of the same shape allocates only per batch (the batch's
//! vectors, channel messages), never per event. Checked with a counting global allocator over
//! the contract's six-operator pipeline, from NDJSON bytes through parse, routing and apply.
//!
//! Counts, not times: deterministic on a noisy machine.

use eddy::engine::{BodyFormat, EngineConfig, Pipeline, parse_batch};
use eddy::spec::PipelineSpec;
use eddy::workload::seed_spec;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const USERS: usize = 1_000;
const PRODUCTS: usize = 10;
const PAGES: usize = 10;
/// A minute boundary plus one second: every event below stays in one page-view window.
const T0: i64 = 1_700_000_040_000 + 1_000;

/// Event `i` of the stream: users, products, pages and event types in a fixed rotation, times
/// within 4 s, less than the out-of-orderness (nothing late, no window or session closes).
fn event(i: usize) -> String {
    let user = (i / 4) % USERS;
    let ts = T0 + (i % 4_000) as i64;
    let page = i % PAGES;
    match i % 4 {
        0 => format!(r#"{{"user_id":"u{user}","ts":{ts},"type":"view","page":"/p/{page}"}}"#),
        1 => format!(
            r#"{{"user_id":"u{user}","ts":{ts},"type":"cart","page":"/p/{page}","product_id":"prod{}","qty":1}}"#,
            (i / 4 / USERS) % PRODUCTS
        ),
        2 => format!(
            r#"{{"user_id":"u{user}","ts":{ts},"type":"purchase","page":"/p/{page}","amount":12.5}}"#
        ),
        _ => format!(r#"{{"user_id":"u{user}","ts":{ts},"type":"login","page":"/p/{page}"}}"#),
    }
}

fn bodies(events: std::ops::Range<usize>, batch: usize) -> Vec<Vec<u8>> {
    events
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|i| [event(*i).into_bytes(), b"\n".to_vec()])
                .flatten()
                .collect()
        })
        .collect()
}

async fn ingest(pipeline: &Pipeline, bodies: &[Vec<u8>]) {
    for body in bodies {
        let events = parse_batch(body, BodyFormat::NdJson, pipeline.extractor()).unwrap();
        pipeline.ingest(events, 0).await.unwrap();
    }
}

async fn allocations_per_event(shards: usize) -> f64 {
    let spec = PipelineSpec::from_json(&seed_spec("alloc")).unwrap();
    let config = EngineConfig {
        shards,
        ..EngineConfig::default()
    };
    let pipeline = Pipeline::from_spec(spec, &config);
    // Every (user, product) pair once, and every user, page and type: the steady state.
    let warm = USERS * PRODUCTS * 4;
    ingest(&pipeline, &bodies(0..warm, 1_000)).await;
    let measured = 50_000;
    let batches = bodies(warm..warm + measured, 1_000);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    ingest(&pipeline, &batches).await;
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let status = pipeline.status().await.unwrap();
    assert_eq!(status.events, (warm + measured) as u64);
    assert_eq!(status.late_events, 0);
    allocated as f64 / measured as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_events_allocate_nothing_per_event() {
    for shards in [1, 2] {
        let per_event = allocations_per_event(shards).await;
        println!("{shards} shard(s): {per_event:.4} allocations per event");
        // Batches of 1,000 events: a few dozen allocations per batch is 0.0x per event; one
        // allocation per event anywhere would make it at least 1.
        assert!(
            per_event < 0.1,
            "{shards} shard(s): {per_event} allocations per event"
        );
    }
}
