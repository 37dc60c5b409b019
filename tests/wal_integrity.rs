//! Integrity of what was acknowledged, over real HTTP on SQLite and PostgreSQL: a real server
//! takes batches with idempotency keys and checkpoints, is stopped, its WAL files are damaged
//! on disk, and it is started again. A torn tail is cut and served; a bad record followed by
//! good ones, a bad record in an older segment, a missing segment and a cut-off start fail
//! only that pipeline (status, 503 `pipeline_failed`, /readyz) and change no byte on disk,
//! until the real `eddy wal repair` binary or a restore over the API brings it back, with
//! offsets above every one ever acknowledged.
//!
//! Over 400 lines for a reason: one test per kind of damage, each the whole scenario (post,
//! stop, damage, start, check against the posted model), on both stores.

mod common;

use common::{Backend, TestServer, body_json, expect_problem};
use eddy::config::Config;
use eddy::wal::Record;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn spec(name: &str) -> Value {
    json!({"name": name, "key": "/user", "checkpoint_interval": "1h",
           "operators": [{"name": "last", "kind": "latest", "value": "/v"}]})
}

/// A server with `a` and `b`, WAL segments of `segment_bytes`.
async fn server(backend: Backend, segment_bytes: u64) -> TestServer {
    let s = TestServer::start_with(backend, |c| c.wal_segment_bytes = segment_bytes).await;
    for name in ["a", "b"] {
        let resp = s.post_json("/v1/pipelines", &spec(name)).await;
        body_json(resp, StatusCode::CREATED).await;
    }
    s
}

/// Posts two events to `pipeline` with `key`: (status, body, whether it was a replay).
async fn post(s: &TestServer, pipeline: &str, key: &str) -> (StatusCode, Value, bool) {
    let events = json!([{"user": "u1", "v": key}, {"user": "u2", "v": key}]);
    let resp = s
        .client
        .post(s.url(&format!("/v1/pipelines/{pipeline}/events")))
        .header("Idempotency-Key", key)
        .json(&events)
        .send()
        .await
        .unwrap();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    let status = resp.status();
    (status, resp.json().await.unwrap(), replayed)
}

/// Posts batches `k<from>..=k<to>` to `a`, each taking two offsets.
async fn batches(s: &TestServer, from: u32, to: u32) {
    for i in from..=to {
        let (status, ack, _) = post(s, "a", &format!("k{i}")).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["first_offset"], u64::from(2 * i - 1), "{ack}");
    }
}

fn wal_dir(config: &Config, pipeline: &str) -> PathBuf {
    config.data_dir.join("wal").join(pipeline)
}

/// Segment files of a WAL directory, by name (= by first LSN).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    found.sort();
    found
}

/// (position, lsn, record) of every frame of a segment that reads.
fn frames(data: &[u8]) -> Vec<(usize, u64, Record)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok((lsn, record, used)) = Record::decode(&data[pos..]) {
        out.push((pos, lsn, record));
        pos += used;
    }
    out
}

/// Where the events record of idempotency key `key` is: (segment, byte position).
fn record_of(dir: &Path, key: &str) -> (PathBuf, usize) {
    for segment in segments(dir) {
        let data = std::fs::read(&segment).unwrap();
        for (pos, _, record) in frames(&data) {
            if let Record::Events {
                idempotency_key: Some(k),
                ..
            } = record
                && k == key
            {
                return (segment, pos);
            }
        }
    }
    panic!("no record of {key}")
}

/// Idempotency keys of the records in segments before `segment`, in order.
fn keys_before(dir: &Path, segment: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    for earlier in segments(dir).into_iter().filter(|p| p.as_path() < segment) {
        for (_, _, record) in frames(&std::fs::read(&earlier).unwrap()) {
            if let Record::Events {
                idempotency_key: Some(k),
                ..
            } = record
            {
                keys.push(k);
            }
        }
    }
    keys
}

/// Flips a byte inside the body of the record of `key`.
fn flip_body_byte(dir: &Path, key: &str) -> (PathBuf, usize) {
    let (segment, pos) = record_of(dir, key);
    let mut data = std::fs::read(&segment).unwrap();
    data[pos + 60] ^= 0x20;
    std::fs::write(&segment, &data).unwrap();
    (segment, pos)
}

/// SHA-256 of every file under `dir`.
fn hashes(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(hashes(&path));
        } else {
            let digest = Sha256::digest(std::fs::read(&path).unwrap());
            out.insert(path, hex::encode(digest));
        }
    }
    out
}

/// Asserts `a` failed visibly while `b` serves; answers the failure reason.
async fn assert_failed_while_b_serves(s: &TestServer) -> String {
    let status = s.status("a").await;
    assert_eq!(status["state"], "failed", "{status}");
    let reason = status["error"].as_str().expect("a reason").to_owned();
    assert!(reason.contains("damaged at byte"), "{reason}");
    let list = body_json(s.get("/v1/pipelines").await, StatusCode::OK).await;
    let states: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["status"]["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("a", "failed"), ("b", "running")]);
    let (status, problem, _) = post(s, "a", "new").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["code"], "pipeline_failed", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains(&reason));
    for path in [
        "/v1/pipelines/a/operators/last/state?key=u1",
        "/v1/pipelines/a/operators/last/state",
        "/v1/pipelines/a/output?after=0",
    ] {
        expect_problem(
            s.get(path).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "pipeline_failed",
        )
        .await;
    }
    for path in ["/v1/pipelines/a/checkpoints", "/v1/pipelines/a/watermark"] {
        let resp = s.post_json(path, &json!({"time": 5})).await;
        expect_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "pipeline_failed").await;
    }
    body_json(s.get("/v1/pipelines/a/checkpoints").await, StatusCode::OK).await;
    let ready = expect_problem(
        s.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "pipeline_failed",
    )
    .await;
    assert!(
        ready["detail"].as_str().unwrap().contains("\"a\""),
        "{ready}"
    );
    let (status, _, _) = post(s, "b", "b1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.state_of("b", "last", "u1").await["value"], "b1");
    reason
}

/// Runs the real `eddy wal repair` on a stopped server's data.
fn run_repair(config: &Config, pipeline: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["wal", "repair", pipeline])
        .env("EDDY_DATA_DIR", &config.data_dir)
        .env("DATABASE_URL", &config.database_url)
        .env("EDDY_LOG", "warn")
        .output()
        .expect("run eddy")
}

/// Runs the real `eddy wal repair` and expects success; answers its stdout.
fn repair(config: &Config, pipeline: &str) -> String {
    let out = run_repair(config, pipeline);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// The copy directory a repair or restore made.
fn copy_dir(dir: &Path) -> PathBuf {
    let copies: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("repaired-")
    );
    copies[0].clone()
}

/// After a repair: `a` serves with the `kept` batch last applied, new offsets start above
/// every acknowledged one (`acked`), a retry of a lost batch's key is applied again once, a
/// kept one is answered as first.
async fn assert_serves_again(s: TestServer, acked: u64, lost_key: &str, kept: &str) -> TestServer {
    assert_eq!(s.status("a").await["state"], "running");
    body_json(s.get("/readyz").await, StatusCode::OK).await;
    assert_eq!(
        s.state_of("a", "last", "u1").await["value"],
        kept,
        "the kept records replayed"
    );
    let (status, ack, replayed) = post(&s, "a", "fresh").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!replayed);
    assert!(ack["first_offset"].as_u64().unwrap() > acked, "{ack}");
    let (_, retry, replayed) = post(&s, "a", lost_key).await;
    assert!(!replayed, "the lost batch is applied again: {retry}");
    assert!(retry["first_offset"].as_u64().unwrap() > acked, "{retry}");
    let (_, again, replayed) = post(&s, "a", lost_key).await;
    assert!(replayed, "then remembered: {again}");
    assert_eq!(again, retry);
    let (_, kept, replayed) = post(&s, "a", "k2").await;
    assert!(replayed);
    assert_eq!(kept["first_offset"], 3);
    assert_eq!(s.state_of("a", "last", "u1").await["value"], lost_key);
    s
}

async fn restart(config: Config, dir: Option<TempDir>) -> TestServer {
    TestServer::start_config(config, dir).await
}

async fn a_torn_tail_is_cut_and_the_pipeline_serves(backend: Backend) {
    let s = server(backend, eddy::wal::SEGMENT_BYTES).await;
    batches(&s, 1, 3).await;
    let (config, dir) = s.stop().await;
    let segment = segments(&wal_dir(&config, "a")).pop().unwrap();
    let mut data = std::fs::read(&segment).unwrap();
    let good = data.len();
    let last = frames(&data).last().unwrap().0;
    let torn: Vec<u8> = data[last..last + 30].to_vec();
    data.extend_from_slice(&torn);
    std::fs::write(&segment, &data).unwrap();
    assert!(repair(&config, "a").contains("torn tail (30 bytes"));
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        data,
        "the repair left it to the server"
    );
    let s = restart(config, dir).await;
    assert_eq!(s.status("a").await["state"], "running");
    assert_eq!(s.status("a").await["events"], 6);
    body_json(s.get("/readyz").await, StatusCode::OK).await;
    assert_eq!(std::fs::metadata(&segment).unwrap().len() as usize, good);
    batches(&s, 4, 4).await;
}

async fn a_bad_record_followed_by_good_ones_fails_the_pipeline_until_repaired(backend: Backend) {
    let s = server(backend, eddy::wal::SEGMENT_BYTES).await;
    batches(&s, 1, 2).await;
    s.checkpoint("a").await;
    batches(&s, 3, 6).await;
    let (config, dir) = s.stop().await;
    let wal = wal_dir(&config, "a");
    let (segment, pos) = flip_body_byte(&wal, "k4");
    let damaged = std::fs::read(&segment).unwrap();
    let before = hashes(&wal);
    let s = restart(config, dir).await;
    let reason = assert_failed_while_b_serves(&s).await;
    assert!(reason.contains(&format!("byte {pos}")), "{reason}");
    assert_eq!(hashes(&wal), before, "no byte changed on disk");
    let (config, dir) = s.stop().await;
    let report = repair(&config, "a");
    assert!(
        report.contains("acknowledged events lost: 6 (offsets 7 to 12)"),
        "{report}"
    );
    assert!(
        report.contains("lost batches (a retry with one is applied again, once): k5, k6"),
        "{report}"
    );
    assert!(
        report.contains("next event offset: at least 13"),
        "{report}"
    );
    let copy = copy_dir(&wal);
    let name = segment.file_name().unwrap();
    assert_eq!(
        std::fs::read(copy.join(name)).unwrap(),
        &damaged[pos..],
        "the cut bytes, kept"
    );
    assert_eq!(std::fs::read(&segment).unwrap(), &damaged[..pos]);
    assert!(repair(&config, "a").contains("nothing to repair"));
    let s = assert_serves_again(restart(config, dir).await, 12, "k5", "k3").await;
    let s = s.restart().await;
    assert_eq!(
        s.state_of("a", "last", "u1").await["value"],
        "k5",
        "the repaired log replays"
    );
}

async fn a_bad_record_in_an_older_segment_fails_the_pipeline_until_restored(backend: Backend) {
    let s = server(backend, 200).await;
    batches(&s, 1, 2).await;
    let checkpoint = s.checkpoint("a").await;
    batches(&s, 3, 8).await;
    let (config, dir) = s.stop().await;
    let wal = wal_dir(&config, "a");
    let (segment, _) = flip_body_byte(&wal, "k4");
    assert_ne!(Some(&segment), segments(&wal).last(), "an older segment");
    let damaged = std::fs::read(&segment).unwrap();
    let before = hashes(&wal);
    let s = restart(config, dir).await;
    assert_failed_while_b_serves(&s).await;
    assert_eq!(hashes(&wal), before);
    let id = checkpoint["id"].as_i64().unwrap();
    let restored = body_json(
        s.post(&format!("/v1/pipelines/a/checkpoints/{id}/restore"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(restored["restored"], id);
    assert_eq!(
        restored["discarded_events"], 12,
        "k3..k8, as far as they could be counted"
    );
    let copy = copy_dir(&wal);
    assert_eq!(
        std::fs::read(copy.join(segment.file_name().unwrap())).unwrap(),
        damaged
    );
    assert_eq!(s.status("a").await["state"], "running");
    body_json(s.get("/readyz").await, StatusCode::OK).await;
    assert_eq!(s.state_of("a", "last", "u1").await["value"], "k2");
    let (_, ack, replayed) = post(&s, "a", "k3").await;
    assert!(!replayed, "a restore forgets later keys: {ack}");
    assert!(ack["first_offset"].as_u64().unwrap() > 16, "{ack}");
    let s = s.restart().await;
    assert_eq!(s.state_of("a", "last", "u1").await["value"], "k3");
}

async fn a_missing_segment_fails_the_pipeline_until_repaired(backend: Backend) {
    let s = server(backend, 200).await;
    batches(&s, 1, 2).await;
    s.checkpoint("a").await;
    batches(&s, 3, 8).await;
    let (config, dir) = s.stop().await;
    let wal = wal_dir(&config, "a");
    let (segment, _) = record_of(&wal, "k5");
    let all = segments(&wal);
    assert!(all.len() >= 3 && Some(&segment) != all.last(), "{all:?}");
    let gone = std::fs::read(&segment).unwrap();
    let kept = keys_before(&wal, &segment)
        .pop()
        .expect("batches before the gap");
    std::fs::remove_file(&segment).unwrap();
    let later: Vec<(PathBuf, Vec<u8>)> = all
        .iter()
        .filter(|p| **p > segment)
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    let before = hashes(&wal);
    let s = restart(config, dir).await;
    let reason = assert_failed_while_b_serves(&s).await;
    assert!(reason.contains("missing"), "{reason}");
    assert_eq!(hashes(&wal), before);
    let (config, dir) = s.stop().await;
    let report = repair(&config, "a");
    assert!(
        report.contains("next event offset: at least 17"),
        "{report}"
    );
    assert!(report.contains("acknowledged events lost:"), "{report}");
    assert!(!gone.is_empty());
    let copy = copy_dir(&wal);
    for (path, data) in &later {
        assert_eq!(
            &std::fs::read(copy.join(path.file_name().unwrap())).unwrap(),
            data
        );
    }
    assert_serves_again(restart(config, dir).await, 16, "k8", &kept).await;
}

async fn a_cut_off_start_of_the_segment_after_the_checkpoint_fails_the_pipeline(backend: Backend) {
    let s = server(backend, eddy::wal::SEGMENT_BYTES).await;
    batches(&s, 1, 2).await;
    s.checkpoint("a").await;
    batches(&s, 3, 5).await;
    let (config, dir) = s.stop().await;
    let wal = wal_dir(&config, "a");
    let (segment, k3) = record_of(&wal, "k3");
    let data = std::fs::read(&segment).unwrap();
    // The file loses its start up to the middle of k3's record: the checkpoint covers what
    // went before k3, but k3 itself is acknowledged and after it.
    std::fs::write(&segment, &data[k3 + 20..]).unwrap();
    let before = hashes(&wal);
    let s = restart(config, dir).await;
    assert_failed_while_b_serves(&s).await;
    assert_eq!(hashes(&wal), before);
    let (config, dir) = s.stop().await;
    let report = repair(&config, "a");
    assert!(report.contains("cut "), "{report}");
    assert!(
        report.contains("next event offset: at least 11"),
        "{report}"
    );
    let s = restart(config, dir).await;
    assert_eq!(s.status("a").await["state"], "running");
    let (_, ack, _) = post(&s, "a", "after").await;
    assert!(ack["first_offset"].as_u64().unwrap() > 10, "{ack}");
}

async fn a_failed_pipeline_can_be_deleted_and_refuses_what_cannot_be_restored(backend: Backend) {
    let s = server(backend, eddy::wal::SEGMENT_BYTES).await;
    batches(&s, 1, 4).await;
    let (config, dir) = s.stop().await;
    let wal = wal_dir(&config, "a");
    flip_body_byte(&wal, "k2");
    let s = restart(config, dir).await;
    assert_eq!(s.status("a").await["state"], "failed");
    let resp = s.post("/v1/pipelines/a/checkpoints/99/restore").await;
    expect_problem(resp, StatusCode::NOT_FOUND, "checkpoint_not_found").await;
    let resp = s.get("/v1/pipelines/a/checkpoints/99").await;
    expect_problem(resp, StatusCode::NOT_FOUND, "checkpoint_not_found").await;
    assert_eq!(
        s.status("a").await["state"],
        "failed",
        "a refused restore changes nothing"
    );
    let (config, dir) = s.stop().await;
    let out = run_repair(&config, "nope");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pipeline \"nope\""));
    let s = restart(config, dir).await;
    assert_eq!(
        s.delete("/v1/pipelines/a").await.status(),
        StatusCode::NO_CONTENT
    );
    expect_problem(
        s.get("/v1/pipelines/a").await,
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
    )
    .await;
    body_json(s.get("/readyz").await, StatusCode::OK).await;
    assert!(!wal.exists(), "its WAL went with it");
    let resp = s.post_json("/v1/pipelines", &spec("a")).await;
    body_json(resp, StatusCode::CREATED).await;
    batches(&s, 1, 1).await;
}

backend_tests!(
    a_failed_pipeline_can_be_deleted_and_refuses_what_cannot_be_restored,
    a_torn_tail_is_cut_and_the_pipeline_serves,
    a_bad_record_followed_by_good_ones_fails_the_pipeline_until_repaired,
    a_bad_record_in_an_older_segment_fails_the_pipeline_until_restored,
    a_missing_segment_fails_the_pipeline_until_repaired,
    a_cut_off_start_of_the_segment_after_the_checkpoint_fails_the_pipeline,
);
