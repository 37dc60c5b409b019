//! The contract's operator semantics, pinned through the engine's public API (real shard
//! threads, no HTTP): one test per behaviour that bites.
//!
//! Over 400 lines for a reason: one test per semantic point of the contract, each a few lines;
//! they read best side by side.

use eddy::engine::{BodyFormat, EngineConfig, Pipeline, parse_batch};
use eddy::spec::PipelineSpec;
use serde_json::{Value, json};

fn pipeline(operators: Value, extra: Value) -> Pipeline {
    let mut doc = json!({
        "name": "t", "key": "/k",
        "time": {"field": "/t", "format": "epoch_ms", "max_out_of_orderness": "1h"},
        "operators": operators,
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    let spec = PipelineSpec::from_json(&doc).expect("valid spec");
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    Pipeline::from_spec(spec, &config)
}

async fn post(p: &Pipeline, events: Value) {
    let body = serde_json::to_vec(&events).unwrap();
    let batch = parse_batch(&body, BodyFormat::Json, p.extractor()).expect("valid batch");
    p.ingest(batch, 0).await.expect("ingest");
}

async fn state(p: &Pipeline, op: &str, key: &str) -> Option<Value> {
    p.state(op, key).await.unwrap()
}

fn output(p: &Pipeline) -> Vec<Value> {
    let (records, _) = p.output().read(None, 1_000);
    records
        .iter()
        .map(|r| serde_json::to_value(&**r).unwrap())
        .collect()
}

fn session_op(gap: &str) -> Value {
    json!([{"name": "s", "kind": "session", "gap": gap}])
}

#[tokio::test]
async fn out_of_order_events_merge_two_sessions_into_one() {
    let p = pipeline(session_op("10ms"), json!({}));
    post(&p, json!([{"k": "a", "t": 1000}, {"k": "a", "t": 1020}])).await;
    let two = state(&p, "s", "a").await.unwrap();
    assert_eq!(two["sessions"].as_array().unwrap().len(), 2);
    post(&p, json!({"k": "a", "t": 1010})).await;
    assert_eq!(
        state(&p, "s", "a").await.unwrap(),
        json!({"sessions": [{"start": 1000, "end": 1020, "duration_ms": 20, "events": 3}]})
    );
}

#[tokio::test]
async fn events_exactly_gap_apart_share_a_session_and_one_more_ms_splits() {
    let p = pipeline(session_op("10ms"), json!({}));
    post(
        &p,
        json!([{"k": "a", "t": 0}, {"k": "a", "t": 10}, {"k": "b", "t": 0}, {"k": "b", "t": 11}]),
    )
    .await;
    assert_eq!(
        state(&p, "s", "a").await.unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        state(&p, "s", "b").await.unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_session_closes_only_when_the_watermark_passes_end_plus_gap() {
    let p = pipeline(session_op("10ms"), json!({}));
    post(&p, json!([{"k": "a", "t": 0}, {"k": "a", "t": 10}])).await;
    p.advance_watermark(20).await.unwrap();
    assert!(
        state(&p, "s", "a").await.is_some(),
        "watermark == end + gap keeps it open"
    );
    assert!(output(&p).is_empty());
    p.advance_watermark(21).await.unwrap();
    assert_eq!(
        state(&p, "s", "a").await,
        None,
        "a closed session leaves no state"
    );
    assert_eq!(
        output(&p),
        [
            json!({"offset": 1, "operator": "s", "key": "a", "type": "session_closed",
                "value": {"start": 0, "end": 10, "duration_ms": 10, "events": 2}})
        ]
    );
}

#[tokio::test]
async fn windows_close_on_the_watermark_and_the_newest_closed_are_retained() {
    let ops = json!([{"name": "w", "kind": "window", "size": "10ms", "value": "/v",
                      "functions": ["count", "sum"], "retain": 2}]);
    let p = pipeline(ops, json!({}));
    post(
        &p,
        json!([{"k": "a", "t": 1, "v": 1}, {"k": "a", "t": 5, "v": 2},
                    {"k": "a", "t": 12, "v": 4}, {"k": "a", "t": 25, "v": 8}]),
    )
    .await;
    p.advance_watermark(20).await.unwrap();
    let types: Vec<_> = output(&p)
        .iter()
        .map(|r| (r["value"]["start"].clone(), r["type"].clone()))
        .collect();
    assert_eq!(
        types,
        [
            (json!(0), json!("window_closed")),
            (json!(10), json!("window_closed"))
        ]
    );
    assert_eq!(
        output(&p)[0]["value"],
        json!({"start": 0, "end": 10, "closed": true, "count": 2, "sum": 3})
    );
    p.advance_watermark(30).await.unwrap();
    assert_eq!(
        state(&p, "w", "a").await.unwrap(),
        json!({"windows": [
            {"start": 10, "end": 20, "closed": true, "count": 1, "sum": 4},
            {"start": 20, "end": 30, "closed": true, "count": 1, "sum": 8},
        ]})
    );
}

#[tokio::test]
async fn sliding_windows_count_an_event_in_every_window_that_holds_it() {
    let ops = json!([{"name": "w", "kind": "window", "size": "10ms", "slide": "5ms", "functions": ["count"]}]);
    let p = pipeline(ops, json!({}));
    post(&p, json!({"k": "a", "t": 12})).await;
    assert_eq!(
        state(&p, "w", "a").await.unwrap(),
        json!({"windows": [
            {"start": 5, "end": 15, "closed": false, "count": 1},
            {"start": 10, "end": 20, "closed": false, "count": 1},
        ]})
    );
}

#[tokio::test]
async fn an_aggregate_with_month_reset_follows_the_newest_month_and_ignores_older_ones() {
    let ops = json!([{"name": "a", "kind": "aggregate", "value": "/v",
                      "functions": ["sum", "count", "avg"], "reset": "month"}]);
    let p = pipeline(ops, json!({}));
    let jan_31 = 1_706_659_200_000_i64; // 2024-01-31T00:00:00Z
    let feb_1 = 1_706_745_600_000_i64;
    post(
        &p,
        json!([{"k": "u", "t": jan_31, "v": 10}, {"k": "u", "t": jan_31 + 5, "v": 5}]),
    )
    .await;
    assert_eq!(
        state(&p, "a", "u").await.unwrap(),
        json!({"period_start": 1_704_067_200_000_i64, "sum": 15, "count": 2, "avg": 7.5})
    );
    post(
        &p,
        json!([{"k": "u", "t": feb_1, "v": 7}, {"k": "u", "t": jan_31, "v": 100}]),
    )
    .await;
    assert_eq!(
        state(&p, "a", "u").await.unwrap(),
        json!({"period_start": feb_1, "sum": 7, "count": 1, "avg": 7.0})
    );
}

#[tokio::test]
async fn an_aggregate_without_reset_has_a_null_period() {
    let ops =
        json!([{"name": "a", "kind": "aggregate", "value": "/v", "functions": ["min", "max"]}]);
    let p = pipeline(ops, json!({}));
    post(
        &p,
        json!([{"k": "u", "t": 1, "v": 3}, {"k": "u", "t": 2, "v": -1.5}]),
    )
    .await;
    assert_eq!(
        state(&p, "a", "u").await.unwrap(),
        json!({"period_start": null, "min": -1.5, "max": 3})
    );
}

#[tokio::test]
async fn a_map_sum_entry_reaching_zero_is_removed_and_an_empty_map_has_no_state() {
    let ops =
        json!([{"name": "cart", "kind": "map", "entry_key": "/p", "value": "/q", "reduce": "sum"}]);
    let p = pipeline(ops, json!({}));
    post(
        &p,
        json!([{"k": "u", "t": 1, "p": "x", "q": 3}, {"k": "u", "t": 2, "p": 7, "q": 1}]),
    )
    .await;
    assert_eq!(
        state(&p, "cart", "u").await.unwrap(),
        json!({"entries": {"x": 3, "7": 1}})
    );
    post(&p, json!({"k": "u", "t": 3, "p": "x", "q": -3})).await;
    assert_eq!(
        state(&p, "cart", "u").await.unwrap(),
        json!({"entries": {"7": 1}})
    );
    post(&p, json!({"k": "u", "t": 4, "p": 7, "q": -1})).await;
    assert_eq!(state(&p, "cart", "u").await, None);
    assert_eq!(p.status().await.unwrap().keys, [("cart".to_owned(), 0)]);
}

#[tokio::test]
async fn map_reduces_count_min_max_and_last() {
    let ops = json!([
        {"name": "c", "kind": "map", "entry_key": "/p", "reduce": "count"},
        {"name": "lo", "kind": "map", "entry_key": "/p", "value": "/q", "reduce": "min"},
        {"name": "hi", "kind": "map", "entry_key": "/p", "value": "/q", "reduce": "max"},
        {"name": "l", "kind": "map", "entry_key": "/p", "value": "/q", "reduce": "last"},
    ]);
    let p = pipeline(ops, json!({}));
    post(
        &p,
        json!([{"k": "u", "t": 1, "p": "x", "q": 5}, {"k": "u", "t": 2, "p": "x", "q": 2},
                    {"k": "u", "t": 3, "p": "x", "q": 4}]),
    )
    .await;
    assert_eq!(
        state(&p, "c", "u").await.unwrap(),
        json!({"entries": {"x": 3}})
    );
    assert_eq!(
        state(&p, "lo", "u").await.unwrap(),
        json!({"entries": {"x": 2}})
    );
    assert_eq!(
        state(&p, "hi", "u").await.unwrap(),
        json!({"entries": {"x": 5}})
    );
    assert_eq!(
        state(&p, "l", "u").await.unwrap(),
        json!({"entries": {"x": 4}})
    );
}

#[tokio::test]
async fn last_n_answers_newest_first_and_keeps_n() {
    let ops = json!([{"name": "l", "kind": "last_n", "value": "/v", "n": 3}]);
    let p = pipeline(ops, json!({}));
    post(
        &p,
        json!([{"k": "u", "t": 4, "v": "a"}, {"k": "u", "t": 1, "v": {"b": 1}},
                    {"k": "u", "t": 3, "v": "c"}, {"k": "u", "t": 2, "v": [4]}]),
    )
    .await;
    assert_eq!(
        state(&p, "l", "u").await.unwrap(),
        json!({"values": [[4], "c", {"b": 1}]})
    );
}

#[tokio::test]
async fn latest_keeps_the_greatest_time_and_a_tie_goes_to_the_later_arrival() {
    let ops = json!([{"name": "l", "kind": "latest", "value": "/v"}]);
    let p = pipeline(ops, json!({}));
    post(&p, json!([{"k": "u", "t": 5, "v": "x"}, {"k": "u", "t": 5, "v": "y"}, {"k": "u", "t": 3, "v": "z"}])).await;
    assert_eq!(
        state(&p, "l", "u").await.unwrap(),
        json!({"value": "y", "time": 5})
    );
}

#[tokio::test]
async fn late_events_are_counted_ignored_by_session_and_window_and_applied_by_the_rest() {
    let ops = json!([
        {"name": "s", "kind": "session", "gap": "10ms"},
        {"name": "w", "kind": "window", "size": "10ms", "functions": ["count"]},
        {"name": "l", "kind": "last_n", "value": "/t", "n": 5},
    ]);
    let doc = json!({"name": "t", "key": "/k", "time": {"field": "/t"}, "operators": ops});
    let config = EngineConfig {
        shards: 3,
        ..Default::default()
    };
    let p = Pipeline::from_spec(PipelineSpec::from_json(&doc).unwrap(), &config);
    // The second event is judged against the watermark the first left, inside one batch.
    post(
        &p,
        json!([{"k": "u", "t": 100}, {"k": "u", "t": 50}, {"k": "u", "t": 100}]),
    )
    .await;
    let status = p.status().await.unwrap();
    assert_eq!(
        (status.events, status.late_events, status.watermark),
        (3, 1, Some(100))
    );
    assert_eq!(
        state(&p, "s", "u").await.unwrap()["sessions"][0]["events"],
        2
    );
    assert_eq!(state(&p, "w", "u").await.unwrap()["windows"][0]["count"], 2);
    assert_eq!(
        state(&p, "l", "u").await.unwrap(),
        json!({"values": [100, 50, 100]})
    );
}

#[tokio::test]
async fn the_watermark_never_goes_back() {
    let p = pipeline(session_op("1s"), json!({}));
    assert_eq!(p.status().await.unwrap().watermark, None);
    assert_eq!(p.advance_watermark(500).await.unwrap(), Some(500));
    assert_eq!(p.advance_watermark(100).await.unwrap(), Some(500));
    post(&p, json!({"k": "a", "t": 1000})).await;
    // max_out_of_orderness is 1h: 1000 - 3_600_000 < 500.
    assert_eq!(p.status().await.unwrap().watermark, Some(500));
}

#[tokio::test]
async fn state_ttl_drops_idle_keys_without_output() {
    let ops = json!([{"name": "s", "kind": "session", "gap": "1h"}]);
    let p = pipeline(ops, json!({"state_ttl": "10ms"}));
    post(&p, json!([{"k": "old", "t": 0}, {"k": "new", "t": 5}])).await;
    p.advance_watermark(10).await.unwrap();
    assert!(
        state(&p, "s", "old").await.is_some(),
        "0 is not older than 10 - 10"
    );
    p.advance_watermark(12).await.unwrap();
    assert_eq!(state(&p, "s", "old").await, None);
    assert!(state(&p, "s", "new").await.is_some());
    assert!(output(&p).is_empty(), "expiry emits nothing");
}

#[tokio::test]
async fn where_filters_and_operator_keys_route_each_operator_separately() {
    let ops = json!([
        {"name": "logins", "kind": "latest", "where": {"/type": "login"}, "value": "/t"},
        {"name": "pages", "kind": "window", "key": "/page", "size": "1m", "functions": ["count"]},
    ]);
    let p = pipeline(ops, json!({}));
    post(
        &p,
        json!([{"k": "u1", "t": 1, "type": "login", "page": "/home"},
                    {"k": "u2", "t": 2, "type": "click", "page": "/home"}]),
    )
    .await;
    assert_eq!(
        state(&p, "logins", "u1").await.unwrap(),
        json!({"value": 1, "time": 1})
    );
    assert_eq!(state(&p, "logins", "u2").await, None);
    assert_eq!(
        state(&p, "pages", "/home").await.unwrap()["windows"][0]["count"],
        2
    );
    assert_eq!(state(&p, "pages", "u1").await, None);
}

#[tokio::test]
async fn per_key_outputs_come_in_closing_order() {
    let p = pipeline(session_op("10ms"), json!({}));
    post(
        &p,
        json!([{"k": "b", "t": 50}, {"k": "a", "t": 0}, {"k": "a", "t": 30}, {"k": "b", "t": 0}]),
    )
    .await;
    p.advance_watermark(1_000).await.unwrap();
    let order: Vec<_> = output(&p)
        .iter()
        .map(|r| {
            (
                r["key"].clone(),
                r["value"]["start"].clone(),
                r["offset"].clone(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (json!("a"), json!(0), json!(1)),
            (json!("a"), json!(30), json!(2)),
            (json!("b"), json!(0), json!(3)),
            (json!("b"), json!(50), json!(4))
        ]
    );
}

#[tokio::test]
async fn processing_time_stamps_arrival_and_ticks_close_sessions() {
    let doc = json!({"name": "p", "key": "/k", "operators": [
        {"name": "s", "kind": "session", "gap": "1s"},
        {"name": "l", "kind": "latest", "value": "/v"}]});
    let p = Pipeline::from_spec(
        PipelineSpec::from_json(&doc).unwrap(),
        &EngineConfig::default(),
    );
    let batch = parse_batch(br#"{"k": "a", "v": 1}"#, BodyFormat::Json, p.extractor()).unwrap();
    p.ingest(batch, 10_000).await.unwrap();
    assert_eq!(
        state(&p, "l", "a").await.unwrap(),
        json!({"value": 1, "time": 10_000})
    );
    p.tick(11_000).await.unwrap();
    assert!(state(&p, "s", "a").await.is_some());
    p.tick(11_001).await.unwrap();
    assert_eq!(state(&p, "s", "a").await, None);
    assert_eq!(output(&p)[0]["value"]["start"], 10_000);
}

#[tokio::test]
async fn listing_state_pages_in_byte_order_with_a_prefix() {
    let ops = json!([{"name": "l", "kind": "latest", "value": "/t"}]);
    let p = pipeline(ops, json!({}));
    let events: Vec<Value> = ["b2", "a1", "b1", "c", "b3"]
        .iter()
        .map(|k| json!({"k": k, "t": 1}))
        .collect();
    post(&p, Value::Array(events)).await;
    let (page, more) = p.list_state("l", None, "b", 2).await.unwrap();
    assert_eq!(
        page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["b1", "b2"]
    );
    assert!(more);
    let (page, more) = p.list_state("l", Some("b2"), "b", 2).await.unwrap();
    assert_eq!(
        page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["b3"]
    );
    assert!(!more);
}

/// Attaches to `p` a WAL in `dir` whose second record fails with ENOSPC: its second segment
/// is /dev/full, a real I/O error. (Linked after opening: reading /dev/full never ends.)
fn attach_wal_failing_at_the_second_record(p: &Pipeline, dir: &std::path::Path) {
    use eddy::wal::{Wal, WalOptions};
    let options = WalOptions {
        fsync: true,
        segment_bytes: 1,
    };
    let opened = Wal::open(dir, options, 1).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join(format!("{:020}.wal", 2))).unwrap();
    p.attach_log(Box::new(opened.wal));
}

/// A submission of one JSON event, logged as its body.
fn submission(p: &Pipeline, event: Value) -> eddy::engine::Submission {
    let body = serde_json::to_vec(&event).unwrap();
    let events = parse_batch(&body, BodyFormat::Json, p.extractor()).unwrap();
    eddy::engine::Submission {
        events,
        arrival: eddy::engine::Arrival::At(0),
        idempotency_key: None,
        body: Some((body.into(), BodyFormat::Json)),
    }
}

#[tokio::test]
async fn a_wal_write_failure_stops_the_pipeline_accepting() {
    use eddy::engine::EngineError;
    let dir = tempfile::TempDir::new().unwrap();
    let p = pipeline(
        json!([{"name": "l", "kind": "latest", "value": "/t"}]),
        json!({}),
    );
    attach_wal_failing_at_the_second_record(&p, dir.path());
    let submit = |k: &str| submission(&p, json!({"k": k, "t": 1}));
    p.submit(submit("a"))
        .await
        .expect("the first segment takes it");
    assert!(matches!(
        p.submit(submit("b")).await,
        Err(EngineError::Failed { .. })
    ));
    assert!(
        matches!(p.submit(submit("c")).await, Err(EngineError::Failed { .. })),
        "fail-stop"
    );
    assert_eq!(
        p.state("l", "a").await.unwrap(),
        Some(json!({"value": 1, "time": 1}))
    );
    assert_eq!(
        p.state("l", "b").await.unwrap(),
        None,
        "nothing that was not durable is applied"
    );
}

#[tokio::test]
async fn a_batch_no_shard_needs_is_acknowledged_only_once_durable() {
    use eddy::engine::EngineError;
    let dir = tempfile::TempDir::new().unwrap();
    let p = pipeline(
        json!([{"name": "l", "kind": "latest", "value": "/t", "where": {"/type": "x"}}]),
        json!({}),
    );
    attach_wal_failing_at_the_second_record(&p, dir.path());
    let submit = |kind: &str| submission(&p, json!({"k": "a", "t": 1, "type": kind}));
    p.submit(submit("x"))
        .await
        .expect("the first segment takes it");
    // Filtered out and the watermark unmoved: no shard gets this batch, and its record is the
    // one that fails. It must not be acknowledged.
    assert!(matches!(
        p.submit(submit("y")).await,
        Err(EngineError::Failed { .. })
    ));
}
