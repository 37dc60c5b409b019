//! Memory per key per operator kind: RSS growth after loading 1,000,000 distinct keys (one
//! event each) into a one-operator pipeline, divided by the keys. Also the six-operator
//! pipeline per key, its operators alone and as the whole seed spec (with its state TTL), with
//! one event per user and with five. Linux only (reads /proc/self/statm).
//!
//! Run: cargo bench --bench memory

use eddy::engine::{BodyFormat, EngineConfig, Pipeline, parse_batch};
use eddy::spec::PipelineSpec;
use serde_json::{Value, json};

const KEYS: usize = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Loads the keys into a pipeline of `spec`: operators alone (keyed by `/user_id`, event time
/// from `/ts`, no TTL) or, when it names itself, a whole pipeline spec. Each key gets one
/// event per round.
async fn load(spec: Value, rounds: usize) -> (f64, usize) {
    let spec = if spec.get("name").is_some() {
        spec
    } else {
        json!({"name": "mem", "key": "/user_id", "time": {"field": "/ts"}, "operators": spec})
    };
    let spec = PipelineSpec::from_json(&spec).unwrap();
    let pipeline = Pipeline::from_spec(
        spec,
        &EngineConfig {
            shards: 1,
            ..EngineConfig::default()
        },
    );
    let before = rss_bytes();
    for (round, chunk) in (0..rounds).flat_map(|r| (0..KEYS / 10_000).map(move |c| (r, c))) {
        let mut body = Vec::new();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            // One round: a millisecond per key, all on one page (as this bench always
            // loaded). More: every key's events within seconds, so that no session or window
            // closes (the growth is state, not retained output), each on a page of its own.
            let (ts, page) = if rounds == 1 {
                (i as i64, "/p/1".to_owned())
            } else {
                (
                    ((round * KEYS + i) / 1_000) as i64,
                    format!("/p/{}", (i + round) % 50),
                )
            };
            let ts = 1_700_000_000_000_i64 + ts;
            let event = json!({"user_id": format!("user{i:07}"), "ts": ts,
                               "page": page, "type": "purchase", "amount": 12.5});
            serde_json::to_writer(&mut body, &event).unwrap();
            body.push(b'\n');
        }
        let batch = parse_batch(&body, BodyFormat::NdJson, pipeline.extractor()).unwrap();
        pipeline.ingest(batch, 0).await.unwrap();
    }
    let keys = pipeline
        .status()
        .await
        .unwrap()
        .keys
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    let grown = rss_bytes().saturating_sub(before);
    (grown as f64 / KEYS as f64, keys)
}

fn kinds() -> Vec<(&'static str, Value)> {
    vec![
        (
            "latest",
            json!([{"name": "o", "kind": "latest", "value": "/ts"}]),
        ),
        (
            "aggregate",
            json!([{"name": "o", "kind": "aggregate", "value": "/amount", "functions": ["sum", "count"], "reset": "month"}]),
        ),
        (
            "session",
            json!([{"name": "o", "kind": "session", "gap": "30m"}]),
        ),
        (
            "last_n(5)",
            json!([{"name": "o", "kind": "last_n", "value": "/page", "n": 5}]),
        ),
        (
            "map",
            json!([{"name": "o", "kind": "map", "entry_key": "/page", "value": "/amount", "reduce": "sum"}]),
        ),
        (
            "window",
            json!([{"name": "o", "kind": "window", "size": "1m", "functions": ["count"]}]),
        ),
        (
            "seed (6 ops)",
            eddy::workload::seed_spec("mem")["operators"].clone(),
        ),
        // The whole seed spec: also its 7-day state TTL and 5 s out-of-orderness.
        ("seed spec", eddy::workload::seed_spec("mem")),
        // The same with five events per user: `last_n` holds five values.
        ("seed spec x5", eddy::workload::seed_spec("mem")),
    ]
}

/// Each kind is measured in a fresh process: memory freed by an earlier measurement would
/// otherwise be reused and hide the growth.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // cargo test --benches: nothing to list
    }
    if let Some(i) = args.iter().position(|a| a == "--kind") {
        let name = &args[i + 1];
        let (_, ops) = kinds()
            .into_iter()
            .find(|(n, _)| n == name)
            .expect("known kind");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let rounds = if name.ends_with("x5") { 5 } else { 1 };
        let (per_key, keys) = runtime.block_on(load(ops, rounds));
        println!("{name:<12} {keys:>10} {per_key:>14.1}");
        return;
    }
    println!("{:<12} {:>10} {:>14}", "operator", "keys", "RSS bytes/key");
    let me = std::env::current_exe().unwrap();
    for (name, _) in kinds() {
        let out = std::process::Command::new(&me)
            .args(["--kind", name])
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
