//! Property test: random event sequences (out of order, late, with watermark posts) run
//! through the sharded engine and through a deliberately simple single-threaded reference model
//! written here from the contract; state, status and the whole output feed must be identical,
//! with 1 shard and with 3.
//!
//! The model recomputes instead of maintaining: sessions are the connected components of a
//! key's open event times, windows a map of start to counts, TTL a check at every watermark.
//!
//! Over 400 lines for a reason: the reference model written from the contract is half of it, and
//! it must sit beside the property that compares against it.

use eddy::engine::{BodyFormat, EngineConfig, Pipeline, parse_batch};
use eddy::spec::{KeyGroups, PipelineSpec};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};

const GAP: i64 = 10;
const SIZE: i64 = 10;
const RETAIN: usize = 2;
const OOO: i64 = 20;
const TTL: i64 = 60;
const LAST_N: usize = 3;
const OPS: [&str; 6] = ["s", "w", "l", "n", "m", "a"];

fn spec() -> PipelineSpec {
    PipelineSpec::from_json(&json!({
        "name": "model", "key": "/k", "state_ttl": "60ms",
        "time": {"field": "/t", "max_out_of_orderness": "20ms"},
        "operators": [
            {"name": "s", "kind": "session", "gap": "10ms"},
            {"name": "w", "kind": "window", "key": "/p", "size": "10ms", "value": "/v",
             "functions": ["count", "sum"], "retain": 2},
            {"name": "l", "kind": "latest", "value": "/v"},
            {"name": "n", "kind": "last_n", "value": "/v", "n": 3},
            {"name": "m", "kind": "map", "entry_key": "/e", "value": "/v", "reduce": "sum"},
            {"name": "a", "kind": "aggregate", "value": "/v", "functions": ["count", "sum", "min", "max"]}
        ]
    }))
    .unwrap()
}

#[derive(Clone, Debug)]
struct Ev {
    k: Value,
    p: String,
    t: i64,
    v: i64,
    e: u8,
}

impl Ev {
    fn json(&self) -> Value {
        json!({"k": self.k, "p": self.p, "t": self.t, "v": self.v, "e": self.e})
    }

    fn key(&self) -> String {
        match &self.k {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<Ev>),
    Watermark(i64),
}

/// One operator's state for one key, as the model keeps it.
#[derive(Clone, Debug)]
enum KeyState {
    Session(Vec<i64>),
    Window {
        open: BTreeMap<i64, (u64, i64)>,
        closed: VecDeque<(i64, u64, i64)>,
    },
    Latest(i64, i64),
    LastN(VecDeque<i64>),
    Map(BTreeMap<String, i64>),
    Agg {
        count: u64,
        sum: i64,
        min: i64,
        max: i64,
    },
}

#[derive(Default)]
struct Model {
    watermark: Option<i64>,
    events: u64,
    late: u64,
    /// Per operator: key -> (state, newest event time).
    ops: [BTreeMap<String, (KeyState, i64)>; 6],
    output: Vec<Value>,
}

fn components(times: &[i64]) -> Vec<(i64, i64, u64)> {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(i64, i64, u64)> = Vec::new();
    for t in sorted {
        match out.last_mut() {
            Some(last) if t - last.1 <= GAP => {
                last.1 = t;
                last.2 += 1;
            }
            _ => out.push((t, t, 1)),
        }
    }
    out
}

fn session_json(start: i64, end: i64, events: u64) -> Value {
    json!({"start": start, "end": end, "duration_ms": end - start, "events": events})
}

fn window_json(start: i64, count: u64, sum: i64, closed: bool) -> Value {
    json!({"start": start, "end": start + SIZE, "closed": closed, "count": count, "sum": sum})
}

impl KeyState {
    fn is_empty(&self) -> bool {
        match self {
            KeyState::Session(t) => t.is_empty(),
            KeyState::Window { open, closed } => open.is_empty() && closed.is_empty(),
            KeyState::LastN(v) => v.is_empty(),
            KeyState::Map(m) => m.is_empty(),
            KeyState::Latest(..) | KeyState::Agg { .. } => false,
        }
    }

    fn answer(&self) -> Value {
        match self {
            KeyState::Session(times) => {
                let s: Vec<Value> = components(times)
                    .into_iter()
                    .map(|(a, b, n)| session_json(a, b, n))
                    .collect();
                json!({"sessions": s})
            }
            KeyState::Window { open, closed } => {
                let c = closed
                    .iter()
                    .map(|(s, n, sum)| window_json(*s, *n, *sum, true));
                let o = open
                    .iter()
                    .map(|(s, (n, sum))| window_json(*s, *n, *sum, false));
                json!({"windows": c.chain(o).collect::<Vec<_>>()})
            }
            KeyState::Latest(t, v) => json!({"value": v, "time": t}),
            KeyState::LastN(vs) => json!({"values": vs.iter().rev().collect::<Vec<_>>()}),
            KeyState::Map(m) => json!({"entries": m}),
            KeyState::Agg {
                count,
                sum,
                min,
                max,
            } => {
                json!({"period_start": null, "count": count, "sum": sum, "min": min, "max": max})
            }
        }
    }
}

impl Model {
    fn apply(&mut self, op: usize, key: String, ev: &Ev, late: bool) {
        let fresh = match op {
            0 => KeyState::Session(Vec::new()),
            1 => KeyState::Window {
                open: BTreeMap::new(),
                closed: VecDeque::new(),
            },
            2 => KeyState::Latest(i64::MIN, 0),
            3 => KeyState::LastN(VecDeque::new()),
            4 => KeyState::Map(BTreeMap::new()),
            _ => KeyState::Agg {
                count: 0,
                sum: 0,
                min: i64::MAX,
                max: i64::MIN,
            },
        };
        let existed = self.ops[op].contains_key(&key);
        let (mut state, last) = self.ops[op].remove(&key).unwrap_or((fresh, ev.t));
        match &mut state {
            KeyState::Session(times) if !late => times.push(ev.t),
            KeyState::Window { open, .. } if !late => {
                let w = open.entry(ev.t.div_euclid(SIZE) * SIZE).or_default();
                w.0 += 1;
                w.1 += ev.v;
            }
            KeyState::Latest(t, v) if ev.t >= *t => (*t, *v) = (ev.t, ev.v),
            KeyState::LastN(vs) => {
                vs.push_back(ev.v);
                if vs.len() > LAST_N {
                    vs.pop_front();
                }
            }
            KeyState::Map(m) => {
                let e = m.entry(ev.e.to_string()).or_insert(0);
                *e += ev.v;
                if *e == 0 {
                    m.remove(&ev.e.to_string());
                }
            }
            KeyState::Agg {
                count,
                sum,
                min,
                max,
            } => {
                *count += 1;
                *sum += ev.v;
                *min = (*min).min(ev.v);
                *max = (*max).max(ev.v);
            }
            _ => {}
        }
        let last = if existed { last.max(ev.t) } else { ev.t };
        if !state.is_empty() {
            self.ops[op].insert(key, (state, last));
        }
    }

    fn event(&mut self, ev: &Ev) {
        self.events += 1;
        let late = self.watermark.is_some_and(|w| ev.t < w);
        self.late += u64::from(late);
        for op in 0..OPS.len() {
            let key = if op == 1 { ev.p.clone() } else { ev.key() };
            self.apply(op, key, ev, late);
        }
        self.advance(ev.t - OOO);
    }

    fn advance(&mut self, to: i64) {
        if self.watermark.is_some_and(|w| to <= w) {
            return;
        }
        self.watermark = Some(to);
        for op in 0..OPS.len() {
            let keys: Vec<String> = self.ops[op].keys().cloned().collect();
            for key in keys {
                let (mut state, last) = self.ops[op].remove(&key).unwrap();
                self.close(op, &key, &mut state, to);
                let expired = last + TTL < to;
                if !state.is_empty() && !expired {
                    self.ops[op].insert(key, (state, last));
                }
            }
        }
    }

    fn close(&mut self, op: usize, key: &str, state: &mut KeyState, wm: i64) {
        let record = |value: Value, kind: &str| json!({"operator": OPS[op], "key": key, "type": kind, "value": value});
        match state {
            KeyState::Session(times) => {
                for (start, end, n) in components(times) {
                    if end + GAP < wm {
                        self.output
                            .push(record(session_json(start, end, n), "session_closed"));
                        times.retain(|t| *t < start || *t > end);
                    }
                }
            }
            KeyState::Window { open, closed } => {
                let due: Vec<i64> = open.keys().copied().filter(|s| s + SIZE <= wm).collect();
                for start in due {
                    let (n, sum) = open.remove(&start).unwrap();
                    self.output
                        .push(record(window_json(start, n, sum, true), "window_closed"));
                    closed.push_back((start, n, sum));
                    if closed.len() > RETAIN {
                        closed.pop_front();
                    }
                }
            }
            _ => {}
        }
    }
}

async fn run_engine(steps: &[Step], shards: usize) -> Observed {
    run_owning(steps, shards, KeyGroups::ALL).await
}

/// The engine applying only the key groups `owned` (cluster mode's partition owners).
async fn run_owning(steps: &[Step], shards: usize, owned: KeyGroups) -> Observed {
    let p = Pipeline::from_spec_owning(
        spec(),
        &EngineConfig {
            shards,
            ..EngineConfig::default()
        },
        owned,
    );
    for step in steps {
        match step {
            Step::Batch(evs) => {
                let body =
                    serde_json::to_vec(&evs.iter().map(Ev::json).collect::<Vec<_>>()).unwrap();
                let batch = parse_batch(&body, BodyFormat::Json, p.extractor()).unwrap();
                p.ingest(batch, 0).await.unwrap();
            }
            Step::Watermark(t) => {
                p.advance_watermark(*t).await.unwrap();
            }
        }
    }
    let (records, _) = p.output().read(None, usize::MAX);
    let output = records
        .iter()
        .map(|r| serde_json::to_value(&**r).unwrap())
        .collect();
    let mut states = Vec::new();
    for op in OPS {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = p.list_state(op, after.as_deref(), "", 2).await.unwrap();
            after = page.last().map(|(k, _)| k.to_string());
            all.extend(page.into_iter().map(|(k, v)| (k.to_string(), v)));
            if !more {
                break;
            }
        }
        states.push(all);
    }
    let s = p.status().await.unwrap();
    let keys: Map<String, Value> = s.keys.into_iter().map(|(k, n)| (k, n.into())).collect();
    let status =
        json!({"events": s.events, "late": s.late_events, "watermark": s.watermark, "keys": keys});
    (output, states, status)
}

/// Output feed, per-operator (key, answer) lists, and status.
type Observed = (Vec<Value>, Vec<Vec<(String, Value)>>, Value);

fn run_model(steps: &[Step]) -> Observed {
    let mut m = Model::default();
    for step in steps {
        match step {
            Step::Batch(evs) => evs.iter().for_each(|ev| m.event(ev)),
            Step::Watermark(t) => m.advance(*t),
        }
    }
    let output = m
        .output
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r["offset"] = json!(i + 1);
            r
        })
        .collect();
    let states = m
        .ops
        .iter()
        .map(|op| {
            op.iter()
                .map(|(k, (s, _))| (k.clone(), s.answer()))
                .collect()
        })
        .collect();
    let keys: Map<String, Value> = OPS
        .iter()
        .zip(&m.ops)
        .map(|(n, op)| (n.to_string(), op.len().into()))
        .collect();
    let status =
        json!({"events": m.events, "late": m.late, "watermark": m.watermark, "keys": keys});
    (output, states, status)
}

fn event() -> impl Strategy<Value = Ev> {
    let keys = prop_oneof![
        Just(json!("a")),
        Just(json!("b")),
        Just(json!("c")),
        Just(json!(1)),
        Just(json!(22))
    ];
    (keys, 0..3u8, 0..250i64, -3..=3i64, 0..3u8).prop_map(|(k, p, t, v, e)| Ev {
        k,
        p: format!("/page{p}"),
        t,
        v,
        e,
    })
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        8 => prop::collection::vec(event(), 1..8).prop_map(Step::Batch),
        1 => (0..320i64).prop_map(Step::Watermark),
        1 => Just(Step::Watermark(i64::MAX)),
    ];
    prop::collection::vec(step, 1..40)
}

/// What instances owning the partitions `owners` (partition i owned by instance
/// `owners[i]`) observe together: states merged in key order, status keys summed (counters
/// checked equal at every instance), and the output feed taken per (operator, key) in order,
/// with the model's feed taken apart the same way.
async fn run_partitioned(steps: &[Step], owners: &[usize]) -> Observed {
    let partitions = owners.len() as u16;
    let instances = owners.iter().max().map_or(0, |m| m + 1);
    let mut merged: Option<Observed> = None;
    for instance in 0..instances {
        let ids = (0..partitions).filter(|&i| owners[usize::from(i)] == instance);
        let owned = KeyGroups::of_partitions(partitions, ids);
        let got = run_owning(steps, 2, owned).await;
        merged = Some(match merged {
            None => got,
            Some(mut all) => {
                all.0.extend(got.0);
                for (op, state) in all.1.iter_mut().zip(got.1) {
                    op.extend(state);
                    op.sort_by(|a, b| a.0.cmp(&b.0));
                }
                let keys = &mut all.2["keys"];
                for (name, n) in got.2["keys"].as_object().unwrap() {
                    keys[name] = json!(keys[name].as_u64().unwrap() + n.as_u64().unwrap());
                }
                for counter in ["events", "late", "watermark"] {
                    assert_eq!(
                        all.2[counter], got.2[counter],
                        "{counter} at instance {instance}"
                    );
                }
                all
            }
        });
    }
    let mut merged = merged.expect("at least one instance");
    merged.0 = per_key(&merged.0);
    merged
}

/// An output feed as each (operator, key)'s records in order, without offsets: what stays
/// the same however partitions are spread.
fn per_key(feed: &[Value]) -> Vec<Value> {
    let mut by_key: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for record in feed {
        let mut record = record.clone();
        record.as_object_mut().unwrap().remove("offset");
        let id = (record["operator"].to_string(), record["key"].to_string());
        by_key.entry(id).or_default().push(record);
    }
    by_key.into_values().map(Value::from).collect()
}

fn owners() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..3usize, 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn partitions_applied_by_different_instances_match_the_reference_model(
        steps in steps(),
        owners in owners(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut expected = run_model(&steps);
        expected.0 = per_key(&expected.0);
        let got = rt.block_on(run_partitioned(&steps, &owners));
        prop_assert_eq!(&got.0, &expected.0, "output per key, owners {:?}", owners);
        prop_assert_eq!(&got.1, &expected.1, "state, owners {:?}", owners);
        prop_assert_eq!(&got.2, &expected.2, "status, owners {:?}", owners);
    }

    #[test]
    fn the_sharded_engine_matches_the_reference_model(steps in steps()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let expected = run_model(&steps);
        for shards in [1, 3] {
            let got = rt.block_on(run_engine(&steps, shards));
            prop_assert_eq!(&got.0, &expected.0, "output feed, {} shard(s)", shards);
            prop_assert_eq!(&got.1, &expected.1, "state, {} shard(s)", shards);
            prop_assert_eq!(&got.2, &expected.2, "status, {} shard(s)", shards);
        }
    }
}
