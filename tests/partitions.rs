//! Cluster mode with a pipeline's partitions spread over instances (`"partitions": 8`), on the
//! real parts: three `eddy serve` child processes sharing one PostgreSQL database and a real
//! `nats-server -js`, clients that retry with their idempotency keys at other instances,
//! kill -9, SIGSTOP/SIGCONT and restarts. What is checked: the owners `GET /v1/cluster`
//! shows (every partition owned, spread, moved off a dead or paused instance and back to one
//! that joins); state, status and output answered at any instance, which equal an in-process
//! reference pipeline fed the acknowledged batches in offset order (the output per operator
//! and key, offsets dense from 1); single-key and paged listings that need a remote owner;
//! checkpoints that cover every partition and recovery from them; and, while a partition has
//! no owner, `503` with `Retry-After` or the right answer, never a wrong one.
//!
//! Over 400 lines for a reason: one test binary for the scenarios of spread partitions, which
//! share the owner helpers (the view's owners, waiting for a placement, the per-key answers
//! allowed while a partition moves).

mod common;

use common::cluster::{Cluster, ClusterClient, DEADLINE};
use common::nats::{connect, nats_url};
use common::reference::{
    Acked, Answers, BATCH, Feed, Load, OPERATORS, all_state_paged, answers_of_reference,
    assert_same_state, batches, by_key, cluster_and_reference, consistent_checkpoints, post_all,
    reference, single_with, spec_named, status_fields,
};
use eddy::engine::Pipeline;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Partitions of the pipeline under test.
const PARTITIONS: u16 = 8;

/// The contract's example pipeline `clicks` in [`PARTITIONS`] partitions, checkpointing every
/// `interval`, without a wall-clock TTL.
fn spread_spec(interval: &str) -> Value {
    let mut spec = spec_named("clicks", interval);
    spec["partitions"] = json!(PARTITIONS);
    spec
}

/// The partition of `clicks` that holds `key`.
fn partition_of_key(key: &str) -> u16 {
    eddy::spec::partition_of(PARTITIONS, eddy::engine::key_group(key))
}

/// The owner of each partition of `clicks` in a `/v1/cluster` answer (`""` while none).
fn owners_in(view: &Value) -> Option<Vec<String>> {
    let pipeline = view["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "clicks")?;
    let partitions = pipeline["partitions"].as_array()?;
    assert_eq!(partitions.len(), usize::from(PARTITIONS), "{view}");
    partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            assert_eq!(p["id"], i, "partitions in order: {view}");
            p["owner"].as_str().map(str::to_owned)
        })
        .collect()
}

/// Every partition has an owner.
fn all_owned(owners: &[String]) -> bool {
    owners.iter().all(|o| !o.is_empty())
}

/// Waits until the view of every instance that is up shows owners for which `ok` holds;
/// those owners.
async fn wait_owners(cluster: &Cluster, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut seen: Vec<(&str, Option<Vec<String>>)> = Vec::new();
        for (i, instance) in cluster.instances.iter().enumerate() {
            if instance.is_up() {
                let owners = cluster.view(i).await.as_ref().and_then(owners_in);
                seen.push((instance.node.as_str(), owners));
            }
        }
        if let Some((_, Some(first))) = seen.first()
            && seen.iter().all(|(_, o)| o.as_ref().is_some_and(|o| ok(o)))
        {
            return first.clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the views never showed {what} within {DEADLINE:?}: {seen:?}\n{}",
            cluster.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Index of the instance named `node`.
fn index_of(cluster: &Cluster, node: &str) -> usize {
    cluster
        .index_of(node)
        .unwrap_or_else(|| panic!("no instance {node}"))
}

/// A state query path for `key` (percent-encoded) of `op`.
fn key_path(op: &str, key: &str) -> String {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect();
    format!("/v1/pipelines/clicks/operators/{op}/state?key={encoded}")
}

/// What a single-key GET of the reference answers: `{"key", "value"}`, or 404
/// `key_not_found` for a key without state (only the status and `code` of a problem are
/// compared).
async fn reference_key(reference: &Pipeline, op: &str, key: &str) -> (StatusCode, Value) {
    match reference.state(op, key).await.expect("reference state") {
        Some(value) => (StatusCode::OK, json!({"key": key, "value": value})),
        None => (StatusCode::NOT_FOUND, json!({"code": "key_not_found"})),
    }
}

/// A single-key GET answered `got`, the reference `want` (see [`reference_key`]).
#[track_caller]
fn assert_key_answer(got: &(StatusCode, Value), want: &(StatusCode, Value), what: &str) {
    if want.0 == StatusCode::OK {
        assert_eq!(
            got, want,
            "{what}: a wrong answer (the reference's on the right)"
        );
    } else {
        assert_eq!(
            (got.0, &got.1["code"]),
            (want.0, &want.1["code"]),
            "{what}: a wrong answer (the reference's on the right): {}",
            got.1
        );
    }
}

/// The cluster's answers at the instances of `client` (status, every operator's state listed
/// in pages of 1000, the whole output feed read from offset 0, which checks the offsets are
/// dense from 1) equal the reference's for `acked`: the same status and state; the same
/// output records, each (operator, key)'s in the same order. With `small_pages`, every
/// operator's state listed in pages of 7 equals the reference's whole listing too. Returns
/// the cluster's output feed.
async fn assert_equals_reference(
    client: &ClusterClient,
    spec: &Value,
    acked: &[Acked],
    start: usize,
    small_pages: bool,
    what: &str,
) -> Vec<Value> {
    let (got, expected) = cluster_and_reference(client, spec, acked, start).await;
    assert_same_per_key(&got, &expected, what);
    if small_pages {
        for (i, op) in OPERATORS.iter().enumerate() {
            let items = all_state_paged(client, "clicks", op, start + i, 7).await;
            assert_eq!(
                items, expected.state[op],
                "{what}: {op} listed in pages of 7"
            );
        }
    }
    got.output
}

/// Status and state equal; the output holds the same records, each (operator, key)'s in the
/// same order.
#[track_caller]
fn assert_same_per_key(got: &Answers, expected: &Answers, what: &str) {
    assert_same_state(got, expected, what);
    assert_eq!(
        got.output.len(),
        expected.output.len(),
        "{what}: output records"
    );
    let (got, expected) = (by_key(&got.output), by_key(&expected.output));
    for (key, records) in &expected {
        assert_eq!(
            got.get(key),
            Some(records),
            "{what}: output records of {key:?}"
        );
    }
    assert_eq!(got.len(), expected.len(), "{what}: output keys");
}

/// What a request answers when it is answered (200, or 404 for a key without state).
enum Want<'a> {
    /// A single-key GET: the reference's answer (see [`reference_key`]).
    Key(&'a (StatusCode, Value)),
    /// `GET /v1/pipelines/clicks`: the reference's [`status_fields`].
    Status(&'a Value),
    /// One page of the whole output feed: the reference's records by (operator, key).
    Output(&'a BTreeMap<(String, String), Vec<Value>>),
}

/// GET `path` at instance `at` while a partition may have no owner: `true` for the answer
/// `want` (anything else answered fails), `false` for a 503, which must carry `Retry-After`
/// and be an `unavailable` problem whose detail names one of `partitions`. No answer within
/// 30 s fails.
async fn answer_or_unavailable(
    cluster: &Cluster,
    at: usize,
    path: &str,
    want: Want<'_>,
    partitions: &[u16],
) -> bool {
    let url = format!("{}{path}", cluster.instances[at].base);
    let sent = Instant::now();
    let resp = cluster
        .http
        .get(&url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} at n{at}: no answer: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("a body");
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let what = format!("GET {path} at n{at}");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            headers.contains_key(reqwest::header::RETRY_AFTER),
            "{what}: a 503 without Retry-After: {text}"
        );
        assert!(
            headers
                .get(reqwest::header::CONTENT_TYPE)
                .is_some_and(|c| c.as_bytes().starts_with(b"application/problem+json")),
            "{what}: a 503 that is not problem+json: {headers:?}"
        );
        assert_eq!(body["code"], "unavailable", "{what}: {text}");
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(
            partitions
                .iter()
                .any(|p| detail.contains(&format!("partition {p} "))),
            "{what}: the 503 names none of partitions {partitions:?}: {text}"
        );
        eprintln!("{what}: 503 after {:?}: {detail}", sent.elapsed());
        return false;
    }
    match want {
        Want::Key(expected) => assert_key_answer(&(status, body), expected, &what),
        Want::Status(expected) => {
            assert_eq!(status, StatusCode::OK, "{what}: {text}");
            assert_eq!(&status_fields(&body["status"]), expected, "{what}");
        }
        Want::Output(expected) => {
            assert_eq!(status, StatusCode::OK, "{what}: {text}");
            let records = body["records"].as_array().expect("records");
            assert!(records.len() < 1000, "{what}: the whole feed in one page");
            assert_eq!(&by_key(records), expected, "{what}");
        }
    }
    true
}

/// `POST /v1/pipelines/clicks/checkpoints` at instance `at` without retries (a checkpoint
/// waits up to 30 s for a partition to write): status and body.
async fn checkpoint_at(
    cluster: &Cluster,
    at: usize,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = cluster
        .http
        .post(format!(
            "{}/v1/pipelines/clicks/checkpoints",
            cluster.instances[at].base
        ))
        .timeout(Duration::from_secs(90))
        .send()
        .await
        .expect("an answer to the checkpoint");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Kills every instance (-9), starts them all again and waits until each is ready and every
/// partition has an owner.
async fn kill_all_and_restart(cluster: &mut Cluster) {
    cluster.kill_all_and_restart().await;
    wait_owners(
        cluster,
        "every partition owned after the restart",
        all_owned,
    )
    .await;
}

/// An instance that owns a partition and does not lead `clicks`, given the owners; the first
/// from `from` on.
fn owner_not_leading(cluster: &Cluster, owners: &[String], leader: usize, from: usize) -> usize {
    let n = cluster.instances.len();
    (0..n)
        .map(|i| (from + i) % n)
        .find(|&i| i != leader && owners.contains(&cluster.instances[i].node))
        .unwrap_or_else(|| panic!("no owner but the leader n{leader}: {owners:?}"))
}

/// `stream` cut into consecutive parts of `sizes` batches (one stream in event time, posted
/// in parts).
fn segments(mut stream: Vec<(String, Vec<u8>)>, sizes: &[usize]) -> Vec<Vec<(String, Vec<u8>)>> {
    assert_eq!(stream.len(), sizes.iter().sum::<usize>(), "batches to cut");
    sizes
        .iter()
        .map(|&n| {
            let rest = stream.split_off(n);
            std::mem::replace(&mut stream, rest)
        })
        .collect()
}

/// Balanced over `members`: every partition owned by one of them, each holding `floor(P/n)`
/// or `ceil(P/n)`.
fn balanced(owners: &[String], members: &[&str]) -> bool {
    let n = members.len();
    let (low, high) = (owners.len() / n, owners.len().div_ceil(n));
    owners.iter().all(|o| members.contains(&o.as_str()))
        && members.iter().all(|m| {
            let held = owners.iter().filter(|o| o == m).count();
            (low..=high).contains(&held)
        })
}

/// Spread: every partition owned, by at least two instances.
fn spread(owners: &[String]) -> bool {
    all_owned(owners) && owners.iter().collect::<BTreeSet<_>>().len() >= 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_partitions_equal_the_reference() {
    let cluster = Cluster::start(3, &nats_url(), &[("EDDY_LEASE_TIMEOUT", "2s")]).await;
    let spec = spread_spec("1h");
    let created = cluster.create(0, &spec).await;
    assert_eq!(created["partitions"], PARTITIONS, "{created}");
    let owners = wait_owners(&cluster, "the partitions spread", spread).await;
    eprintln!("owners: {owners:?}");
    let members = ["n0", "n1", "n2"];
    wait_owners(&cluster, "the partitions balanced over three", |o| {
        balanced(o, &members)
    })
    .await;
    let client = cluster.client();
    let acked = post_all(&client, "clicks", &batches("p", 51, 30), 0).await;

    // Everything, at each instance on its own, then spread over them.
    for at in 0..3 {
        assert_equals_reference(
            &cluster.client_of(&[at]),
            &spec,
            &acked,
            0,
            true,
            &format!("at n{at}"),
        )
        .await;
    }
    let output = assert_equals_reference(&client, &spec, &acked, 1, false, "everywhere").await;
    assert!(!output.is_empty(), "the run closes sessions and windows");

    // Single keys: one key with state per partition and operator (most of them owned by
    // another instance than the one asked), and keys without state.
    let reference = reference(&spec, &acked).await;
    let owners = wait_owners(&cluster, "every partition owned", all_owned).await;
    let mut remote = 0;
    for op in OPERATORS {
        let (items, _) = reference.list_state(op, None, "", 100_000).await.unwrap();
        let mut per_partition: BTreeMap<u16, String> = BTreeMap::new();
        for (key, _) in &items {
            per_partition
                .entry(partition_of_key(key.as_str()))
                .or_insert_with(|| key.as_str().to_owned());
        }
        if op == "sessions" {
            assert_eq!(
                per_partition.len(),
                usize::from(PARTITIONS),
                "sessions has keys in every partition"
            );
        }
        let missing = format!("nobody-{op}");
        for key in per_partition.values().chain([&missing]) {
            let expected = reference_key(&reference, op, key).await;
            for at in 0..3 {
                let got = cluster.client_of(&[at]).get(&key_path(op, key), 0).await;
                assert_key_answer(&got, &expected, &format!("{op} {key:?} at n{at}"));
                remote += usize::from(
                    owners[usize::from(partition_of_key(key))] != cluster.instances[at].node,
                );
            }
        }
        assert_eq!(
            reference_key(&reference, op, &missing).await.0,
            StatusCode::NOT_FOUND,
            "{missing:?} has no state"
        );
    }
    assert!(
        remote > 0,
        "some keys were asked at an instance that does not own them"
    );
    // An owner asked something unreadable says so, and goes on answering (below).
    let nats = connect(&[nats_url()]).await.expect("connect");
    let subject = format!("{}.own.clicks.0", cluster.name);
    let answer = nats.request(subject, "not a request".into()).await;
    let answer: Value = serde_json::from_slice(&answer.expect("an answer").payload).unwrap();
    let detail = answer["unavailable"].as_str().unwrap_or_default();
    assert!(detail.starts_with("unreadable request"), "{answer}");
    // The status' keys are the sum over the owners, at every instance.
    let want = answers_of_reference(&reference).await.status;
    for at in 0..3 {
        let status = cluster
            .client_of(&[at])
            .get_ok("/v1/pipelines/clicks", 0)
            .await;
        assert_eq!(status_fields(&status["status"]), want, "status at n{at}");
        assert_eq!(status["partitions"], PARTITIONS, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_when_instances_join_and_leave_under_load() {
    const CLIENTS: usize = 3;
    const BATCHES: usize = 200;
    const KILLS: usize = 5;
    /// Each client's pause after a batch: about 17 batches a second, for about 35 s, which
    /// outlasts the faults (about 5 s each).
    const PAUSE: Duration = Duration::from_millis(150);
    /// Batches acknowledged between faults.
    const STEP: usize = 15;
    let mut cluster = Cluster::start(3, &nats_url(), &[("EDDY_LEASE_TIMEOUT", "2s")]).await;
    let spec = spread_spec("2s");
    cluster.create(0, &spec).await;
    wait_owners(&cluster, "the partitions spread", spread).await;
    let client = cluster.client();
    let per_client = (0..CLIENTS)
        .map(|c| batches(&format!("m{c}"), 300 + c as u64, BATCHES))
        .collect();
    let mut load = Load::paced(&client, per_client, PAUSE);
    let mut feed = Feed::new("clicks");
    let total = CLIENTS * BATCHES;
    let started = Instant::now();
    for k in 1..=KILLS {
        load.wait_progress(load.acknowledged() + STEP).await;
        let leader = cluster.leader_of("clicks").await;
        let owners = wait_owners(&cluster, "every partition owned", all_owned).await;
        let victim = owner_not_leading(&cluster, &owners, leader, k);
        let gone = cluster.instances[victim].node.clone();
        let begun = Instant::now();
        cluster.instances[victim].kill9();
        wait_owners(&cluster, &format!("{gone}'s partitions taken over"), |o| {
            all_owned(o) && !o.contains(&gone)
        })
        .await;
        eprintln!(
            "kill {k} at {:?}, {} batches acknowledged: {gone}'s partitions {:?} moved in {:?}",
            started.elapsed(),
            load.acknowledged(),
            owners
                .iter()
                .enumerate()
                .filter(|(_, o)| **o == gone)
                .map(|(p, _)| p)
                .collect::<Vec<_>>(),
            begun.elapsed()
        );
        cluster.instances[victim].restart();
        cluster.instances[victim].wait_ready(&cluster.http).await;
        let owners = wait_owners(&cluster, &format!("{gone} owning again, balanced"), |o| {
            balanced(o, &["n0", "n1", "n2"])
        })
        .await;
        eprintln!("kill {k}: {gone} rejoined, owners {owners:?}");
        feed.catch_up(&client, k).await;
        load.reap().await;
    }
    // The leader, which sequences and may own partitions too.
    load.wait_progress(load.acknowledged() + STEP).await;
    let leader = cluster.leader_of("clicks").await;
    let gone = cluster.instances[leader].node.clone();
    let at = load.acknowledged();
    cluster.instances[leader].kill9();
    assert!(
        at < total,
        "the load ended before the kill of the leader: make it longer"
    );
    let new = cluster.leader_other_than("clicks", leader).await;
    eprintln!(
        "n{new} leads after the kill of {gone} at {:?}, {at} batches acknowledged",
        started.elapsed()
    );
    wait_owners(&cluster, &format!("{gone}'s partitions taken over"), |o| {
        all_owned(o) && !o.contains(&gone)
    })
    .await;
    feed.catch_up(&client, new).await;
    cluster.instances[leader].restart();
    cluster.instances[leader].wait_ready(&cluster.http).await;
    let acked = load.finish().await;
    assert_eq!(acked.len(), total, "every batch acknowledged");
    eprintln!("the load ended after {:?}", started.elapsed());
    wait_owners(&cluster, &format!("{gone} owning again, balanced"), |o| {
        balanced(o, &["n0", "n1", "n2"])
    })
    .await;
    let output = assert_equals_reference(&client, &spec, &acked, 0, true, "after the moves").await;
    feed.catch_up(&client, 1).await;
    assert_eq!(
        feed.records, output,
        "a consumer reading across every move saw each record once, offsets stable"
    );
    consistent_checkpoints(&client, 2).await;
    cluster.assert_none_exited();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_covers_every_partition_and_recovery_uses_it() {
    let mut cluster = Cluster::start(3, &nats_url(), &[("EDDY_LEASE_TIMEOUT", "2s")]).await;
    let spec = spread_spec("1h");
    cluster.create(0, &spec).await;
    let (_dir, _single, alone) = single_with(&cluster, &spec).await;
    wait_owners(&cluster, "the partitions spread", spread).await;
    let client = cluster.client();
    // One stream in event time, posted in parts (a new stream would start over, and be late).
    let mut parts = segments(batches("c", 61, 60), &[15, 10, 5, 20, 5, 5]).into_iter();
    let first = parts.next().unwrap();
    let mut acked = post_all(&client, "clicks", &first, 0).await;
    let single = post_all(&alone, "clicks", &first, 0).await;
    for (a, s) in acked.iter().zip(&single) {
        assert_eq!(
            (a.first, a.last),
            (s.first, s.last),
            "offsets as a single instance's"
        );
    }

    // A checkpoint: every partition wrote; its figures are a single instance's.
    let (status, _, cp) = checkpoint_at(&cluster, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{cp}");
    let (status, want) = alone
        .post_empty("/v1/pipelines/clicks/checkpoints", 0)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{want}");
    assert_eq!(cp["status"], "completed", "{cp}");
    assert!(cp["keys_written"].as_u64().unwrap_or(0) > 0, "{cp}");
    for field in ["input_offset", "events", "keys_written", "keys_deleted"] {
        assert_eq!(
            cp[field], want[field],
            "{field}: {cp} vs a single instance's {want}"
        );
    }
    for at in 0..3 {
        let items = consistent_checkpoints(&cluster.client_of(&[at]), 0).await;
        assert!(
            items
                .iter()
                .any(|c| c["id"] == cp["id"] && c["status"] == "completed"),
            "the checkpoint listed at n{at}: {items:#?}"
        );
    }
    // The log is purged up to the checkpoint: recovering without it would lose those events.
    let js = async_nats::jetstream::new(connect(&[nats_url()]).await.expect("connect"));
    let log = format!("{}_log_clicks", cluster.name);
    let begun = Instant::now();
    loop {
        let info = js
            .get_stream(&log)
            .await
            .expect("the log stream")
            .info()
            .await
            .expect("stream info")
            .clone();
        if info.state.first_sequence > 1 {
            break;
        }
        assert!(
            begun.elapsed() < DEADLINE,
            "the log is not purged up to the checkpoint: {:?}",
            info.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // After the checkpoint: only in the log.
    acked.extend(post_all(&client, "clicks", &parts.next().unwrap(), 1).await);

    // Every instance at once: recovered from the checkpoint and the log.
    kill_all_and_restart(&mut cluster).await;
    assert_equals_reference(&client, &spec, &acked, 0, false, "after kill -9 of all").await;

    // A checkpoint right after a join, while partitions move to the joining instance: it
    // completes, or fails naming the partitions; either way nothing is wrong after it.
    let leader = cluster.leader_of("clicks").await;
    let owners = wait_owners(&cluster, "every partition owned", all_owned).await;
    let victim = owner_not_leading(&cluster, &owners, leader, 1);
    let gone = cluster.instances[victim].node.clone();
    cluster.instances[victim].kill9();
    wait_owners(&cluster, &format!("{gone}'s partitions taken over"), |o| {
        all_owned(o) && !o.contains(&gone)
    })
    .await;
    acked.extend(post_all(&client, "clicks", &parts.next().unwrap(), 2).await);
    // From the restart on, a batch and a checkpoint at the leader, one after the other,
    // until three checkpoints after the view shows the joining instance owning partitions.
    let mut during = parts.next().unwrap().into_iter();
    cluster.instances[victim].restart();
    let begun = Instant::now();
    let (mut outcomes, mut after_join) = (Vec::new(), 0);
    while after_join < 3 {
        if let Some((key, body)) = during.next() {
            let ack = client
                .post_batch("clicks", &key, &body, outcomes.len())
                .await;
            acked.push(Acked::new(ack, &body));
        }
        let through = acked.iter().map(|a| a.last).max().unwrap();
        let (status, headers, joined) = checkpoint_at(&cluster, leader).await;
        match status {
            StatusCode::CREATED => {
                assert_eq!(joined["status"], "completed", "{joined}");
                assert_eq!(joined["input_offset"], through, "{joined}");
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    headers.contains_key(reqwest::header::RETRY_AFTER),
                    "{joined}"
                );
                assert_eq!(joined["code"], "unavailable", "{joined}");
                assert!(
                    joined["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("partitions")),
                    "the failure names the partitions: {joined}"
                );
            }
            other => panic!("a checkpoint during a rebalance answered {other}: {joined}"),
        }
        eprintln!(
            "checkpoint {:?} after {gone} restarted: {status} {joined}",
            begun.elapsed()
        );
        outcomes.push(status);
        let owns = cluster
            .view(leader)
            .await
            .as_ref()
            .and_then(owners_in)
            .is_some_and(|o| o.contains(&gone));
        after_join += usize::from(owns);
        assert!(
            begun.elapsed() < DEADLINE,
            "{gone} owns nothing {DEADLINE:?} after its restart: {outcomes:?}"
        );
    }
    cluster.instances[victim].wait_ready(&cluster.http).await;
    let rest: Vec<(String, Vec<u8>)> = during.chain(parts.next().unwrap()).collect();
    acked.extend(post_all(&client, "clicks", &rest, 0).await);
    wait_owners(&cluster, &format!("{gone} owning again"), |o| {
        all_owned(o) && o.contains(&gone)
    })
    .await;
    assert_equals_reference(&client, &spec, &acked, 1, false, "after the rebalance").await;
    let items = consistent_checkpoints(&client, 0).await;
    if outcomes.contains(&StatusCode::SERVICE_UNAVAILABLE) {
        assert!(
            items.iter().any(|c| c["status"] == "failed"
                && c["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("partitions"))),
            "the failed checkpoint is listed with its error: {items:#?}"
        );
    }
    // Recovery from whatever that checkpoint left.
    kill_all_and_restart(&mut cluster).await;
    assert_equals_reference(
        &client,
        &spec,
        &acked,
        2,
        false,
        "after the second kill of all",
    )
    .await;
    acked.extend(post_all(&client, "clicks", &parts.next().unwrap(), 1).await);
    assert_equals_reference(&client, &spec, &acked, 0, false, "events after recovery").await;
    consistent_checkpoints(&client, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_without_an_owner_answers_503_with_retry_after() {
    let mut cluster = Cluster::start(3, &nats_url(), &[("EDDY_LEASE_TIMEOUT", "2s")]).await;
    let spec = spread_spec("1h");
    cluster.create(0, &spec).await;
    wait_owners(&cluster, "the partitions spread", spread).await;
    let client = cluster.client();
    // One stream: the later batches go on in event time (a new stream would start over and
    // be late).
    let mut stream = batches("u", 91, 25);
    let later = stream.split_off(15);
    let mut acked = post_all(&client, "clicks", &stream, 0).await;
    let before = reference(&spec, &acked).await;
    let after = {
        let mut all = acked.clone();
        // Offsets as they will be: the batches go on after the acknowledged ones.
        let mut next = acked.iter().map(|a| a.last).max().unwrap() + 1;
        for (_, body) in &later {
            all.push(Acked {
                first: next,
                last: next + BATCH as u64 - 1,
                body: body.clone(),
            });
            next += BATCH as u64;
        }
        reference(&spec, &all).await
    };

    // A user of a partition owned by an instance that does not lead, whose state the later
    // batches change (so that a stale answer would show).
    let leader = cluster.leader_of("clicks").await;
    let owners = wait_owners(&cluster, "every partition owned", all_owned).await;
    let (items, _) = before
        .list_state("sessions", None, "", 100_000)
        .await
        .unwrap();
    let mut chosen = None;
    for (key, value) in &items {
        let key = key.as_str();
        let owner = &owners[usize::from(partition_of_key(key))];
        let at = index_of(&cluster, owner);
        if at != leader && after.state("sessions", key).await.unwrap().as_ref() != Some(value) {
            chosen = Some((key.to_owned(), at));
            break;
        }
    }
    let (key, victim) = chosen.expect("a key owned by an instance that does not lead");
    let partition = partition_of_key(&key);
    let node = cluster.instances[victim].node.clone();
    let missing = (0..)
        .map(|i| format!("nobody-{i}"))
        .find(|k| partition_of_key(k) == partition)
        .unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    eprintln!("{key:?} in partition {partition}, owned by {node}; n{leader} leads");

    // Paused past its lease: 503 with Retry-After, or the right answer, until another
    // instance owns the partition and answers.
    let path = key_path("sessions", &key);
    let missing_path = key_path("sessions", &missing);
    let want = reference_key(&before, "sessions", &key).await;
    let want_missing = reference_key(&before, "sessions", &missing).await;
    let before_answers = answers_of_reference(&before).await;
    let want_status = before_answers.status;
    let want_output = by_key(&before_answers.output);
    let held: Vec<u16> = (0..PARTITIONS)
        .filter(|&p| owners[usize::from(p)] == node)
        .collect();
    cluster.instances[victim].sigstop();
    let paused = Instant::now();
    let (mut refused, mut answered) = (0, 0);
    loop {
        // At both other instances at once: the key, a key without state in the same
        // partition, the status and the output feed (which need every partition).
        let probes = others.iter().flat_map(|&at| {
            [
                (at, path.clone(), Want::Key(&want), vec![partition]),
                (
                    at,
                    missing_path.clone(),
                    Want::Key(&want_missing),
                    vec![partition],
                ),
                (
                    at,
                    "/v1/pipelines/clicks".to_owned(),
                    Want::Status(&want_status),
                    held.clone(),
                ),
                (
                    at,
                    "/v1/pipelines/clicks/output?after=0&limit=1000".to_owned(),
                    Want::Output(&want_output),
                    held.clone(),
                ),
            ]
        });
        let results = futures::future::join_all(probes.map(|(at, path, want, parts)| {
            let cluster = &cluster;
            async move { answer_or_unavailable(cluster, at, &path, want, &parts).await }
        }))
        .await;
        let right = results.iter().filter(|r| **r).count();
        answered += right;
        refused += results.len() - right;
        let owners = cluster
            .view(others[0])
            .await
            .as_ref()
            .and_then(owners_in)
            .unwrap_or_default();
        let owner = owners
            .get(usize::from(partition))
            .cloned()
            .unwrap_or_default();
        if right == results.len() && !owner.is_empty() && owner != node {
            eprintln!(
                "partition {partition} owned by {owner} and answered {:?} after the pause \
                 ({refused} answers 503, {answered} right)",
                paused.elapsed()
            );
            break;
        }
        assert!(
            paused.elapsed() < DEADLINE,
            "partition {partition} not answered by another owner within {DEADLINE:?} \
             (owners {owners:?}, {refused} answers 503)\n{}",
            cluster.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Events the paused owner never saw, then it wakes: it gave the partition up, and
    // nothing it answers is stale.
    let survivors = cluster.client_of(&others);
    for (i, (k, body)) in later.iter().enumerate() {
        let ack = survivors.post_batch("clicks", k, body, i).await;
        acked.push(Acked::new(ack, body));
    }
    let want = reference_key(&after, "sessions", &key).await;
    for &at in &others {
        let got = cluster.client_of(&[at]).get(&path, 0).await;
        assert_key_answer(&got, &want, &format!("{key:?} at n{at} with {node} paused"));
    }
    cluster.instances[victim].sigcont();
    let owners = cluster
        .view(others[0])
        .await
        .as_ref()
        .and_then(owners_in)
        .expect("a view");
    assert!(
        !owners[usize::from(partition)].is_empty() && owners[usize::from(partition)] != node,
        "partition {partition} is another instance's when {node} wakes: {owners:?}"
    );
    let woke = Instant::now();
    let given_up = format!("partition=\"{partition}\"");
    let want_status = answers_of_reference(&after).await.status;
    loop {
        // At the woken instance first, and at the others: the right answer or 503, never
        // its old state.
        let probes = [victim, others[0], others[1]].into_iter().flat_map(|at| {
            [
                (at, path.clone(), Want::Key(&want), vec![partition]),
                (
                    at,
                    "/v1/pipelines/clicks".to_owned(),
                    Want::Status(&want_status),
                    (0..PARTITIONS).collect(),
                ),
            ]
        });
        let results = futures::future::join_all(probes.map(|(at, path, want, parts)| {
            let cluster = &cluster;
            async move { answer_or_unavailable(cluster, at, &path, want, &parts).await }
        }))
        .await;
        let right = results.iter().filter(|r| **r).count();
        let metrics = cluster
            .http
            .get(format!("{}/metrics", cluster.instances[victim].base))
            .send()
            .await
            .ok();
        let metrics = match metrics {
            Some(resp) => resp.text().await.unwrap_or_default(),
            None => String::new(),
        };
        let lost = metrics.lines().any(|l| {
            l.starts_with("eddy_lease_changes_total{")
                && l.contains("pipeline=\"clicks\"")
                && l.contains(&given_up)
                && (l.contains("kind=\"lost\"") || l.contains("kind=\"released\""))
        });
        if lost && right == results.len() {
            eprintln!(
                "{node} gave partition {partition} up {:?} after it woke",
                woke.elapsed()
            );
            break;
        }
        assert!(
            woke.elapsed() < DEADLINE,
            "{node} woken: partition {partition} given up: {lost}, right answers {right}/{}\n{}",
            results.len(),
            cluster.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_owners(&cluster, "every partition owned", all_owned).await;
    assert_equals_reference(&client, &spec, &acked, 0, false, "after the pause").await;
    for at in 0..3 {
        let got = cluster.client_of(&[at]).get(&path, 0).await;
        assert_key_answer(&got, &want, &format!("{key:?} at n{at} at the end"));
    }
    // Nothing the woken instance wrote is kept: a checkpoint through everything, then every
    // instance recovers from it and the log.
    let through = acked.iter().map(|a| a.last).max().unwrap();
    let (status, _, cp) = checkpoint_at(&cluster, cluster.leader_of("clicks").await).await;
    assert_eq!(status, StatusCode::CREATED, "{cp}");
    assert_eq!(
        (&cp["status"], &cp["input_offset"]),
        (&json!("completed"), &json!(through)),
        "{cp}"
    );
    kill_all_and_restart(&mut cluster).await;
    assert_equals_reference(&client, &spec, &acked, 1, false, "after kill -9 of all").await;
    consistent_checkpoints(&client, 2).await;
}

/// Every output record of `clicks` at the instances of `client`, by (operator, key), read in
/// pages from the oldest kept (a restore leaves offsets that no record has any more, so
/// offsets are not checked for density here).
async fn feed_by_key(client: &ClusterClient) -> BTreeMap<(String, String), Vec<Value>> {
    let (mut after, mut records) = (0, Vec::new());
    loop {
        let path = format!("/v1/pipelines/clicks/output?after={after}&limit=500");
        let page = client.get_ok(&path, 0).await;
        let got = page["records"].as_array().expect("records").clone();
        if got.is_empty() {
            return by_key(&records);
        }
        after = page["next"].as_u64().expect("next");
        records.extend(got);
    }
}

/// Status, every operator's state and the output per (operator, key) at `client`.
async fn restored_answers(
    client: &ClusterClient,
) -> (
    Value,
    Vec<Vec<Value>>,
    BTreeMap<(String, String), Vec<Value>>,
) {
    let status = client.get_ok("/v1/pipelines/clicks", 0).await;
    let mut state = Vec::new();
    for op in OPERATORS {
        state.push(all_state_paged(client, "clicks", op, 0, 7).await);
    }
    (
        status_fields(&status["status"]),
        state,
        feed_by_key(client).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_after_partitions_moved_equals_a_single_instances() {
    let mut cluster = Cluster::start(3, &nats_url(), &[("EDDY_LEASE_TIMEOUT", "2s")]).await;
    let spec = spread_spec("1h");
    let (_dir, _single, alone) = single_with(&cluster, &spec).await;
    cluster.create(0, &spec).await;
    wait_owners(&cluster, "the partitions spread", spread).await;
    let parts = segments(batches("r", 57, 30), &[10, 10, 10]);
    post_both(&cluster.client_of(&[1]), &alone, &parts[0]).await;
    let checkpoints = "/v1/pipelines/clicks/checkpoints";
    let (status, cp) = cluster.client_of(&[2]).post_empty(checkpoints, 0).await;
    assert_eq!(status, StatusCode::CREATED, "{cp}");
    assert_eq!(cp["status"], "completed", "{cp}");
    let (status, want_cp) = alone.post_empty(checkpoints, 0).await;
    assert_eq!(status, StatusCode::CREATED, "{want_cp}");
    post_both(&cluster.client_of(&[2]), &alone, &parts[1]).await;

    // An owner that does not lead dies; its partitions move before the restore.
    let leader = cluster.leader_of("clicks").await;
    let owners = wait_owners(&cluster, "every partition owned", all_owned).await;
    let victim = owner_not_leading(&cluster, &owners, leader, 0);
    let node = cluster.instances[victim].node.clone();
    cluster.instances[victim].kill9();
    wait_owners(&cluster, "the dead owner's partitions moved", |o| {
        all_owned(o) && !o.contains(&node)
    })
    .await;
    let at = (0..3).find(|&i| i != victim && i != leader).unwrap();
    let restore = |id: &Value| format!("/v1/pipelines/clicks/checkpoints/{id}/restore");
    let (status, restored) = cluster
        .client_of(&[at])
        .post_empty(&restore(&cp["id"]), 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    let (status, want) = alone.post_empty(&restore(&want_cp["id"]), 0).await;
    assert_eq!(status, StatusCode::OK, "{want}");
    assert_eq!(
        restored["discarded_events"],
        json!(10 * BATCH),
        "{restored}"
    );
    let expected = restored_answers(&alone).await;
    for i in (0..3).filter(|&i| i != victim) {
        let got = restored_answers(&cluster.client_of(&[i])).await;
        assert_eq!(got.0, expected.0, "status after the restore at n{i}");
        assert_eq!(got.1, expected.1, "state after the restore at n{i}");
        assert_eq!(
            got.2, expected.2,
            "output per key after the restore at n{i}"
        );
    }

    // The dead owner comes back (partitions move to it again), events go on after the
    // restore, and every partition answers as the single instance does.
    cluster.instances[victim].restart();
    cluster.instances[victim].wait_ready(&cluster.http).await;
    wait_owners(
        &cluster,
        "the restarted instance owning partitions again",
        |o| all_owned(o) && o.contains(&node),
    )
    .await;
    post_both(&cluster.client_of(&[victim]), &alone, &parts[2]).await;
    let expected = restored_answers(&alone).await;
    for i in 0..3 {
        let got = restored_answers(&cluster.client_of(&[i])).await;
        assert_eq!(got.0, expected.0, "status after more events at n{i}");
        assert_eq!(got.1, expected.1, "state after more events at n{i}");
        assert_eq!(
            got.2, expected.2,
            "output per key after more events at n{i}"
        );
    }
    kill_all_and_restart(&mut cluster).await;
    let got = restored_answers(&cluster.client()).await;
    let what = "after every instance was killed and restarted";
    assert_eq!(got.0, expected.0, "status {what}");
    assert_eq!(got.1, expected.1, "state {what}");
    for (key, records) in &expected.2 {
        assert_eq!(got.2.get(key), Some(records), "output of {key:?} {what}");
    }
    assert_eq!(got.2.len(), expected.2.len(), "output keys {what}");
}

/// Posts `part` to the cluster (through `cluster`'s instances) and to the single instance
/// `alone`, batch by batch; both answer the same offsets.
async fn post_both(cluster: &ClusterClient, alone: &ClusterClient, part: &[(String, Vec<u8>)]) {
    for (i, (key, body)) in part.iter().enumerate() {
        let got = cluster.post_batch("clicks", key, body, i).await;
        let want = alone.post_batch("clicks", key, body, 0).await;
        assert_eq!(
            (got.first, got.last),
            (want.first, want.last),
            "the same offsets"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_fails_naming_the_partitions_a_paused_owner_did_not_write() {
    // A lease longer than the checkpoint's wait for its partitions (30 s): the paused owner's
    // partitions are not taken over meanwhile, so nobody writes them.
    let (mut cluster, spec, owners, acked) = spread_and_post(2, "40s", ("f", 31, 6)).await;
    let client = cluster.client();
    let leader = cluster.leader_of("clicks").await;
    let victim = 1 - leader;
    let node = cluster.instances[victim].node.clone();
    let held: Vec<u16> = (0..PARTITIONS)
        .filter(|&p| owners[usize::from(p)] == node)
        .collect();
    assert!(!held.is_empty(), "{node} owns partitions: {owners:?}");
    cluster.instances[victim].sigstop();
    let (status, headers, body) = checkpoint_at(&cluster, leader).await;
    cluster.instances[victim].sigcont();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        headers.contains_key(reqwest::header::RETRY_AFTER),
        "{headers:?}"
    );
    assert_eq!(body["code"], "unavailable", "{body}");
    let named = format!("partitions {held:?} did not write their state");
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.contains(&named), "{detail}");
    let list = client.get_ok("/v1/pipelines/clicks/checkpoints", 0).await;
    let failed = &list["items"][0];
    assert_eq!(failed["status"], "failed", "{list}");
    let error = failed["error"].as_str().unwrap_or("");
    assert!(error.contains(&named), "{failed}");

    // Awake, the owner reads the failed checkpoint's barrier and writes nothing for it; the
    // next checkpoint covers every partition, and nothing acknowledged is lost.
    let (status, _, cp) = checkpoint_at(&cluster, leader).await;
    assert_eq!(status, StatusCode::CREATED, "{cp}");
    assert_eq!(cp["status"], "completed", "{cp}");
    assert_eq!(cp["input_offset"], json!(acked.len() * BATCH), "{cp}");
    assert_equals_reference(
        &client,
        &spec,
        &acked,
        0,
        false,
        "after a failed checkpoint",
    )
    .await;
    kill_all_and_restart(&mut cluster).await;
    assert_equals_reference(
        &client,
        &spec,
        &acked,
        0,
        false,
        "recovered from the next one",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_an_owner_takes_a_shutdown_checkpoint_and_hands_its_partitions_over() {
    let (mut cluster, spec, owners, acked) = spread_and_post(3, "2s", ("t", 41, 8)).await;
    let leader = cluster.leader_of("clicks").await;
    let victim = owner_not_leading(&cluster, &owners, leader, 0);
    let node = cluster.instances[victim].node.clone();
    cluster.instances[victim].sigterm().await;
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let survivors = cluster.client_of(&others);
    let list = survivors
        .get_ok("/v1/pipelines/clicks/checkpoints", 0)
        .await;
    let newest = &list["items"][0];
    assert_eq!(newest["trigger"], "shutdown", "{list}");
    assert_eq!(newest["status"], "completed", "{newest}");
    assert_eq!(
        newest["input_offset"],
        json!(acked.len() * BATCH),
        "{newest}"
    );
    wait_owners(&cluster, "its partitions handed over", |o| {
        all_owned(o) && !o.contains(&node)
    })
    .await;
    assert_equals_reference(&survivors, &spec, &acked, 0, false, "after the hand-over").await;
}

/// `n` instances (lease timeout `lease`) with `clicks` in [`PARTITIONS`] partitions spread
/// over them, and `count` batches of `(tag, seed, count)` posted through them: the cluster,
/// the spec, the partitions' owners and what was acknowledged.
async fn spread_and_post(
    n: usize,
    lease: &str,
    (tag, seed, count): (&str, u64, usize),
) -> (Cluster, Value, Vec<String>, Vec<Acked>) {
    let cluster = Cluster::start(n, &nats_url(), &[("EDDY_LEASE_TIMEOUT", lease)]).await;
    let spec = spread_spec("1h");
    cluster.create(0, &spec).await;
    let owners = wait_owners(&cluster, "the partitions spread", spread).await;
    let acked = post_all(&cluster.client(), "clicks", &batches(tag, seed, count), 0).await;
    (cluster, spec, owners, acked)
}
