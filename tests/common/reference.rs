//! The reference side of the cluster tests: the seeded workload (the contract's example
//! pipeline, batches of clicks), acknowledged batches, concurrent retrying clients, an
//! in-process reference pipeline fed the acknowledged batches in offset order (or a single
//! instance on SQLite fed the same batches), and the answers of a cluster (status, every
//! operator's state, the output feed) in the shape of the reference's, with comparisons that
//! name the first difference.
//!
//! Shared by `tests/cluster.rs` (one pipeline led by one instance) and `tests/partitions.rs`
//! (a pipeline whose partitions are spread over instances).
//!
//! Over 400 lines for a reason: the workload, the reference, a cluster's answers in its shape
//! and the comparisons are one model that both cluster test binaries use together.

use super::cluster::{Ack, Cluster, ClusterClient, DEADLINE, Instance};
use eddy::engine::{BodyFormat, EngineConfig, Pipeline, parse_batch};
use eddy::spec::PipelineSpec;
use eddy::workload::ClickStream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The operators of the seed spec.
pub const OPERATORS: [&str; 6] = [
    "sessions",
    "last_pages",
    "cart",
    "spend",
    "last_login",
    "page_views",
];

/// Events per batch: small batches, many of them, so that kills land between and inside them.
pub const BATCH: usize = 20;

/// The contract's example pipeline named `name`, checkpointing every `interval`, without a
/// wall-clock TTL (so that the reference, fed later, holds the same state).
pub fn spec_named(name: &str, interval: &str) -> Value {
    let mut spec = eddy::workload::seed_spec(name);
    spec["checkpoint_interval"] = json!(interval);
    spec["state_ttl"] = Value::Null;
    spec
}

/// `n` batches of [`BATCH`] seeded clicks (few users and pages: small state, many sessions and
/// windows closing), keyed `tag-b<i>`.
pub fn batches(tag: &str, seed: u64, n: usize) -> Vec<(String, Vec<u8>)> {
    let stream = ClickStream {
        users: 60,
        pages: 5,
        step_ms: 2_000,
        disorder_ms: 8_000,
        seed,
        ..ClickStream::default()
    };
    stream
        .ndjson_batches(n * BATCH, BATCH)
        .into_iter()
        .enumerate()
        .map(|(i, body)| (format!("{tag}-b{i}"), body))
        .collect()
}

/// An acknowledged batch.
#[derive(Clone, Debug)]
pub struct Acked {
    pub first: u64,
    pub last: u64,
    pub body: Vec<u8>,
}

impl Acked {
    pub fn new(ack: Ack, body: &[u8]) -> Acked {
        Acked {
            first: ack.first,
            last: ack.last,
            body: body.to_vec(),
        }
    }
}

/// Posts `batches` one after the other through `client`, starting at instance `start` and
/// moving one instance on per batch.
pub async fn post_all(
    client: &ClusterClient,
    pipeline: &str,
    batches: &[(String, Vec<u8>)],
    start: usize,
) -> Vec<Acked> {
    let mut acked = Vec::new();
    for (i, (key, body)) in batches.iter().enumerate() {
        let ack = client.post_batch(pipeline, key, body, start + i).await;
        acked.push(Acked::new(ack, body));
    }
    acked
}

/// Concurrent clients, each posting its own batches (round-robin over the instances, retrying
/// at the next one) on a task of its own; `progress` counts acknowledged batches.
pub struct Load {
    tasks: Vec<tokio::task::JoinHandle<Vec<Acked>>>,
    acked: Vec<Acked>,
    progress: Arc<AtomicUsize>,
}

impl Load {
    pub fn start(client: &ClusterClient, per_client: Vec<Vec<(String, Vec<u8>)>>) -> Load {
        Load::paced(client, per_client, Duration::ZERO)
    }

    /// As [`start`](Self::start), each client pausing `pause` after each acknowledged batch
    /// (a load that lasts through slow faults without a huge state).
    pub fn paced(
        client: &ClusterClient,
        per_client: Vec<Vec<(String, Vec<u8>)>>,
        pause: Duration,
    ) -> Load {
        let progress = Arc::new(AtomicUsize::new(0));
        let tasks = per_client
            .into_iter()
            .enumerate()
            .map(|(c, batches)| {
                let (client, progress) = (client.clone(), progress.clone());
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for (i, (key, body)) in batches.iter().enumerate() {
                        let ack = client.post_batch("clicks", key, body, c + i).await;
                        acked.push(Acked::new(ack, body));
                        progress.fetch_add(1, Ordering::SeqCst);
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    acked
                })
            })
            .collect();
        Load {
            tasks,
            acked: Vec::new(),
            progress,
        }
    }

    /// Collects the clients that are done; one that failed fails the test with its message.
    pub async fn reap(&mut self) {
        let mut i = 0;
        while i < self.tasks.len() {
            if self.tasks[i].is_finished() {
                let task = self.tasks.swap_remove(i);
                self.acked.extend(join(task).await);
            } else {
                i += 1;
            }
        }
    }

    /// Batches acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.progress.load(Ordering::SeqCst)
    }

    /// Waits until `target` batches are acknowledged.
    pub async fn wait_progress(&mut self, target: usize) {
        let start = Instant::now();
        while self.progress.load(Ordering::SeqCst) < target {
            self.reap().await;
            assert!(
                start.elapsed() < DEADLINE,
                "acknowledged batches stalled at {} (waiting for {target}) for {DEADLINE:?}",
                self.progress.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for every client to be done; every acknowledged batch.
    pub async fn finish(mut self) -> Vec<Acked> {
        for task in std::mem::take(&mut self.tasks) {
            self.acked.extend(join(task).await);
        }
        self.acked
    }
}

async fn join(task: tokio::task::JoinHandle<Vec<Acked>>) -> Vec<Acked> {
    match task.await {
        Ok(acked) => acked,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a client task: {e}"),
    }
}

/// The reference: a fresh in-process pipeline fed the acknowledged batches in offset order (the
/// order the leader applied them in). Checks that the acknowledged ranges never overlap.
pub async fn reference(spec: &Value, acked: &[Acked]) -> Pipeline {
    let mut ordered: Vec<&Acked> = acked.iter().collect();
    ordered.sort_by_key(|a| a.first);
    for pair in ordered.windows(2) {
        assert!(
            pair[0].last < pair[1].first,
            "acknowledged offset ranges overlap: {}..{} and {}..{}",
            pair[0].first,
            pair[0].last,
            pair[1].first,
            pair[1].last
        );
    }
    for a in &ordered {
        assert_eq!(a.last - a.first + 1, BATCH as u64, "offsets of one batch");
    }
    let pipeline = Pipeline::from_spec(
        PipelineSpec::from_json(spec).unwrap(),
        &EngineConfig {
            shards: 1,
            ..EngineConfig::default()
        },
    );
    for a in ordered {
        let batch = parse_batch(&a.body, BodyFormat::NdJson, pipeline.extractor()).unwrap();
        pipeline.ingest(batch, 0).await.unwrap();
    }
    pipeline
}

/// Every item of an operator's state, paged, at the instances of `client` (from `start`).
pub async fn all_state(
    client: &ClusterClient,
    pipeline: &str,
    op: &str,
    start: usize,
) -> Vec<Value> {
    all_state_paged(client, pipeline, op, start, 1000).await
}

/// Every item of an operator's state in pages of `limit`, following `next_cursor`, at the
/// instances of `client` (from `start`).
pub async fn all_state_paged(
    client: &ClusterClient,
    pipeline: &str,
    op: &str,
    start: usize,
    limit: usize,
) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/pipelines/{pipeline}/operators/{op}/state?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = client.get_ok(&path, start).await;
        let got = page["items"].as_array().expect("items");
        assert!(
            got.len() <= limit,
            "a page of {op} over limit {limit}: {page}"
        );
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

/// The fields of a status that must equal a single instance's.
pub fn status_fields(status: &Value) -> Value {
    json!({
        "events": status["events"],
        "late_events": status["late_events"],
        "watermark": status["watermark"],
        "wal_offset": status["wal_offset"],
        "keys": status["keys"],
    })
}

/// Status, every key's state of every operator and the whole output feed, as answered at the
/// instances of `client` (status at `start`, each operator at the next one, the feed at each).
pub async fn answers_of(client: &ClusterClient, pipeline: &str, start: usize) -> Answers {
    let status = client
        .get_ok(&format!("/v1/pipelines/{pipeline}"), start)
        .await;
    let mut state = BTreeMap::new();
    for (i, op) in OPERATORS.iter().enumerate() {
        state.insert(*op, all_state(client, pipeline, op, start + i).await);
    }
    let mut feed = Feed::new(pipeline);
    feed.catch_up(client, start + 1).await;
    Answers {
        status: status_fields(&status["status"]),
        state,
        output: feed.records,
    }
}

/// What a pipeline answers.
#[derive(Debug, PartialEq)]
pub struct Answers {
    pub status: Value,
    pub state: BTreeMap<&'static str, Vec<Value>>,
    pub output: Vec<Value>,
}

/// The reference's answers, in the shape of the API's.
pub async fn answers_of_reference(reference: &Pipeline) -> Answers {
    let s = reference.status().await.unwrap();
    let keys: serde_json::Map<String, Value> = s
        .keys
        .iter()
        .map(|(op, n)| (op.clone(), json!(n)))
        .collect();
    let status = json!({
        "events": s.events,
        "late_events": s.late_events,
        "watermark": s.watermark,
        "wal_offset": s.wal_offset,
        "keys": keys,
    });
    let mut state = BTreeMap::new();
    for op in OPERATORS {
        let (items, _) = reference.list_state(op, None, "", 100_000).await.unwrap();
        let items = items
            .into_iter()
            .map(|(k, v)| json!({"key": k.as_str(), "value": v}))
            .collect();
        state.insert(op, items);
    }
    let (records, _) = reference.output().read(None, usize::MAX);
    let output = records
        .iter()
        .map(|r| serde_json::to_value(&**r).unwrap())
        .collect();
    Answers {
        status,
        state,
        output,
    }
}

/// `got` equals `expected`, part by part, with the first difference named.
#[track_caller]
pub fn assert_same(got: &Answers, expected: &Answers, what: &str) {
    assert_same_state(got, expected, what);
    if let Some((g, e)) = got
        .output
        .iter()
        .zip(&expected.output)
        .find(|(g, e)| g != e)
    {
        panic!("{what}: output differs, first at\n got      {g}\n expected {e}");
    }
    assert_eq!(
        got.output.len(),
        expected.output.len(),
        "{what}: output records"
    );
}

/// Status and every operator's state equal.
#[track_caller]
pub fn assert_same_state(got: &Answers, expected: &Answers, what: &str) {
    assert_eq!(got.status, expected.status, "{what}: status");
    for op in OPERATORS {
        let (g, e) = (&got.state[op], &expected.state[op]);
        if let Some((g, e)) = g.iter().zip(e).find(|(g, e)| g != e) {
            panic!("{what}: {op}: state differs, first at\n got      {g}\n expected {e}");
        }
        assert_eq!(g.len(), e.len(), "{what}: {op}: number of keys");
    }
}

/// The cluster's answers (at the instances of `client`) equal the reference's for `acked`;
/// returns the reference's output feed.
pub async fn assert_matches_reference(
    client: &ClusterClient,
    spec: &Value,
    acked: &[Acked],
    start: usize,
) -> Vec<Value> {
    let (got, expected) = cluster_and_reference(client, spec, acked, start).await;
    assert_same(&got, &expected, "cluster vs reference");
    expected.output
}

/// What the cluster answers for `clicks` (its feed from offset `start`), and what a
/// reference pipeline fed every acknowledged batch answers.
pub async fn cluster_and_reference(
    client: &ClusterClient,
    spec: &Value,
    acked: &[Acked],
    start: usize,
) -> (Answers, Answers) {
    let expected = answers_of_reference(&reference(spec, acked).await).await;
    assert_eq!(
        expected.status["events"],
        json!(acked.len() * BATCH),
        "the reference holds every acknowledged event"
    );
    (answers_of(client, "clicks", start).await, expected)
}

/// A consumer of the output feed that keeps its place across fail-overs: pages after its
/// `next`, at whichever instance answers.
pub struct Feed {
    pipeline: String,
    /// The offset of the last record read (0 before any).
    pub after: u64,
    /// Every record read, in offset order.
    pub records: Vec<Value>,
}

impl Feed {
    pub fn new(pipeline: &str) -> Feed {
        Feed {
            pipeline: pipeline.to_owned(),
            after: 0,
            records: Vec::new(),
        }
    }

    /// Reads pages until one is empty.
    pub async fn catch_up(&mut self, client: &ClusterClient, start: usize) {
        loop {
            let path = format!(
                "/v1/pipelines/{}/output?after={}&limit=500",
                self.pipeline, self.after
            );
            let page = client.get_ok(&path, start).await;
            let records = page["records"].as_array().expect("records").clone();
            let next = page["next"].as_u64().expect("next");
            match records.last() {
                None => {
                    assert_eq!(next, self.after, "an empty page keeps the position");
                    return;
                }
                Some(last) => assert_eq!(Some(next), last["offset"].as_u64(), "{page}"),
            }
            for (i, r) in records.iter().enumerate() {
                assert_eq!(
                    r["offset"].as_u64(),
                    Some(self.after + 1 + i as u64),
                    "output offsets are dense: {r}"
                );
            }
            self.after = next;
            self.records.extend(records);
        }
    }
}

/// The checkpoint list (newest first) at `client`'s instances; checks that ids strictly
/// decrease and the completed ones' input offsets never increase down the list (a stale
/// leader's late checkpoint of older state would break either).
pub async fn consistent_checkpoints(client: &ClusterClient, start: usize) -> Vec<Value> {
    let list = client
        .get_ok("/v1/pipelines/clicks/checkpoints", start)
        .await;
    let items = list["items"].as_array().expect("items").clone();
    for pair in items.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert!(
            newer["id"].as_u64() > older["id"].as_u64(),
            "checkpoint ids decrease down the list: {newer} then {older}"
        );
        if newer["status"] == "completed" && older["status"] == "completed" {
            assert!(
                newer["input_offset"].as_u64().unwrap_or(0)
                    >= older["input_offset"].as_u64().unwrap_or(0),
                "a newer checkpoint covers no fewer events: {newer} then {older}"
            );
        }
    }
    items
}

/// Output records grouped by (operator, key), each group in feed order, offsets left out: what
/// a pipeline whose partitions are spread must equal (partitions may interleave differently).
pub fn by_key(records: &[Value]) -> BTreeMap<(String, String), Vec<Value>> {
    let mut keyed: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for r in records {
        let mut r = r.clone();
        r.as_object_mut().expect("a record").remove("offset");
        keyed
            .entry((r["operator"].to_string(), r["key"].to_string()))
            .or_default()
            .push(r);
    }
    keyed
}

/// A single instance (not in cluster mode, on SQLite) with pipeline `spec`, and a client of it.
pub async fn single_with(
    cluster: &Cluster,
    spec: &Value,
) -> (tempfile::TempDir, Instance, ClusterClient) {
    let dir = tempfile::TempDir::new().unwrap();
    let db = format!(
        "sqlite://{}",
        dir.path().join("single").join("eddy.db").display()
    );
    let mut single = Instance::new(dir.path(), "single", &[("DATABASE_URL".to_owned(), db)]);
    single.start();
    single.wait_ready(&cluster.http).await;
    let alone = ClusterClient {
        http: cluster.http.clone(),
        bases: vec![single.base.clone()],
    };
    let resp = cluster
        .http
        .post(format!("{}/v1/pipelines", single.base))
        .json(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    (dir, single, alone)
}
