//! Property: every operator's state survives its checkpoint encoding. Random events go into a
//! pipeline of all six kinds; a barrier hands over every changed key encoded; a fresh pipeline
//! restored from those rows must answer every key exactly the same, and go on identically.

use eddy::engine::{BodyFormat, EngineConfig, Pipeline, Snapshot, parse_batch};
use eddy::spec::PipelineSpec;
use proptest::prelude::*;
use serde_json::{Value, json};

const OPS: [&str; 6] = ["s", "w", "l", "n", "m", "a"];

fn spec() -> PipelineSpec {
    PipelineSpec::from_json(&json!({
        "name": "rt", "key": "/k", "state_ttl": "1h",
        "time": {"field": "/t", "max_out_of_orderness": "30ms"},
        "operators": [
            {"name": "s", "kind": "session", "gap": "10ms"},
            {"name": "w", "kind": "window", "size": "10ms", "slide": "5ms", "value": "/v", "functions": ["count", "sum", "min", "max", "avg"], "retain": 2},
            {"name": "l", "kind": "latest", "value": "/x"},
            {"name": "n", "kind": "last_n", "value": "/x", "n": 3},
            {"name": "m", "kind": "map", "entry_key": "/e", "value": "/v", "reduce": "sum"},
            {"name": "a", "kind": "aggregate", "value": "/v", "functions": ["count", "sum", "avg", "min", "max"], "reset": "day"}
        ]
    }))
    .unwrap()
}

fn event() -> impl Strategy<Value = Value> {
    let x = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z\\u{e9}\\u{1f600}\"\\\\]{0,6}".prop_map(Value::from),
        Just(json!({"nested": [1, {"deep": null}]})),
    ];
    let v = prop_oneof![
        (-5i64..5).prop_map(Value::from),
        (-5.0f64..5.0).prop_map(Value::from)
    ];
    (0..6u8, 0..300i64, x, v, 0..3u8)
        .prop_map(|(k, t, x, v, e)| json!({"k": format!("k{k}"), "t": t * 3_600_000 / 100, "x": x, "v": v, "e": e}))
}

async fn answers(p: &Pipeline) -> Vec<Vec<(String, Value)>> {
    let mut all = Vec::new();
    for op in OPS {
        let (items, _) = p.list_state(op, None, "", 10_000).await.unwrap();
        all.push(items.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    }
    all
}

async fn feed(p: &Pipeline, events: &[Value]) {
    let body = serde_json::to_vec(events).unwrap();
    let batch = parse_batch(&body, BodyFormat::Json, p.extractor()).unwrap();
    p.ingest(batch, 0).await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn restored_state_answers_and_behaves_like_the_original(
        before in prop::collection::vec(event(), 1..60),
        after in prop::collection::vec(event(), 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let config = EngineConfig { shards: 2, ..EngineConfig::default() };
            let original = Pipeline::from_spec(spec(), &config);
            feed(&original, &before).await;
            let barrier = original.barrier().await.unwrap();
            let restored = Pipeline::from_spec(spec(), &config);
            let snapshot = Snapshot {
                counters: barrier.counters,
                rows: barrier.rows.into_iter().filter(|r| r.value.is_some()).collect(),
                next_output_offset: barrier.output_offset + 1,
                ..Snapshot::default()
            };
            restored.restore(snapshot).await.unwrap();
            assert_eq!(answers(&restored).await, answers(&original).await, "after restore");
            // Timers and TTL were derived again: both go on the same way.
            feed(&original, &after).await;
            feed(&restored, &after).await;
            original.advance_watermark(i64::MAX).await.unwrap();
            restored.advance_watermark(i64::MAX).await.unwrap();
            assert_eq!(answers(&restored).await, answers(&original).await, "after more events");
            let tail = |p: &Pipeline| {
                let (records, _) = p.output().read(Some(barrier.output_offset), usize::MAX);
                records.iter().map(|r| serde_json::to_value(&**r).unwrap()).collect::<Vec<_>>()
            };
            assert_eq!(tail(&restored), tail(&original), "outputs after the barrier");
        });
    }
}
