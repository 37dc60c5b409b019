//! Cluster mode on the real parts: three `eddy serve` child processes on loopback ports sharing
//! one PostgreSQL database and a real `nats-server -js` (a three-server NATS cluster for R=3),
//! clients that retry with their idempotency keys at other instances, kill -9, SIGTERM,
//! SIGSTOP/SIGCONT and wiped data dirs. Every run ends by comparing every key's state of every
//! operator, the status and the whole output feed with an in-process reference pipeline fed the
//! acknowledged batches in offset order (or with a single instance fed the same batches):
//! nothing acknowledged lost, nothing applied twice, no stale leader's work kept.
//!
//! Over 400 lines for a reason: one test binary for every cluster scenario of the contract
//! with a pipeline led by one instance (they share the reference, the feed follower and the
//! load runner of `common::reference` with `tests/partitions.rs`), and the harness's own
//! checks, so that the suite starts one NATS server per process.

mod common;

use common::cluster::{Ack, Cluster, ClusterClient, DEADLINE, Instance, http_client};
use common::nats::{NatsCluster, ThrowawayNats, connect, free_port, nats_url};
use common::reference::{
    Acked, BATCH, Feed, Load, answers_of, assert_matches_reference, assert_same, assert_same_state,
    batches, by_key, consistent_checkpoints, post_all, single_with, spec_named,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The contract's example pipeline, `clicks`, checkpointing every `interval`.
fn spec(interval: &str) -> Value {
    spec_named("clicks", interval)
}

// ---- the harness itself ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_a_throwaway_nats_server_serves_jetstream() {
    let mut nats = ThrowawayNats::start();
    let client = connect(&[nats.url()]).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "harness".to_owned(),
            subjects: vec!["harness.>".to_owned()],
            ..Default::default()
        })
        .await
        .expect("create a stream");
    for i in 0..3 {
        js.publish("harness.x", format!("{i}").into())
            .await
            .unwrap()
            .await
            .expect("acknowledged");
    }
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    nats.kill();
    assert!(
        connect(&[nats.url()]).await.is_err(),
        "a killed server takes no connections"
    );
    // The process-wide server (or the test script's) is up too.
    assert!(connect(&[nats_url()]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_a_three_server_nats_cluster_keeps_an_r3_stream_when_one_dies() {
    let mut nats = NatsCluster::start(3).await;
    let client = connect(&nats.urls()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "harness3".to_owned(),
        subjects: vec!["harness3.>".to_owned()],
        num_replicas: 3,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create an R=3 stream");
    let publish = |js: async_nats::jetstream::Context, i: usize| async move {
        let start = Instant::now();
        loop {
            // A message id: a retry of a message that was stored after all is not kept twice.
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(format!("{i}").into())
                .message_id(format!("m{i}"));
            if let Ok(ack) = js.send_publish("harness3.x", message).await
                && ack.await.is_ok()
            {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "message {i} never acknowledged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    for i in 0..10 {
        publish(js.clone(), i).await;
    }
    let victim = nats.stream_leader("harness3");
    assert!(victim.is_some(), "the monitor names the stream's leader");
    let victim = victim.unwrap();
    nats.kill(victim);
    for i in 10..20 {
        publish(js.clone(), i).await;
    }
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| nats.urls()[i].clone())
        .collect();
    let js = async_nats::jetstream::new(connect(&survivors).await.expect("connect"));
    let start = Instant::now();
    loop {
        if let Ok(mut stream) = js.get_stream("harness3").await
            && let Ok(info) = stream.info().await
        {
            assert_eq!(info.state.messages, 20, "every acknowledged message kept");
            assert_eq!(info.config.num_replicas, 3);
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the stream never answered again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_instances_pause_stop_restart_and_wipe() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = format!(
        "sqlite://{}",
        dir.path().join("n0").join("eddy.db").display()
    );
    let mut node = Instance::new(dir.path(), "n0", &[("DATABASE_URL".to_owned(), db)]);
    let http = http_client();
    node.start();
    node.wait_ready(&http).await;
    let client = ClusterClient {
        http: http.clone(),
        bases: vec![node.base.clone()],
    };
    let resp = http
        .post(format!("{}/v1/pipelines", node.base))
        .json(&spec("1h"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (key, body) = &batches("h", 1, 1)[0];
    assert_eq!(client.post_batch("clicks", key, body, 0).await.first, 1);

    node.sigstop();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(
        quick
            .get(format!("{}/healthz", node.base))
            .send()
            .await
            .is_err(),
        "a paused instance does not answer"
    );
    node.sigcont();
    node.wait_ready(&http).await;

    node.sigterm().await;
    node.restart();
    node.wait_ready(&http).await;
    let again = client.post_batch("clicks", key, body, 0).await;
    assert!(
        again.replayed && again.first == 1,
        "kept over a restart: {again:?}"
    );

    node.kill9();
    node.restart();
    node.wait_ready(&http).await;
    node.kill9();
    node.wipe_data_dir();
    node.restart();
    node.wait_ready(&http).await;
    let (status, _) = client.get("/v1/pipelines/clicks", 0).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a wiped SQLite dir holds nothing"
    );
}

// ---- the contract ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_with_nats_exits_naming_database_url() {
    let dir = tempfile::TempDir::new().unwrap();
    let log = dir.path().join("stderr.log");
    let mut command = std::process::Command::new(common::cluster::EDDY);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EDDY_") {
            command.env_remove(key);
        }
    }
    command
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("eddy.db").display()),
        )
        .env("EDDY_NATS_URL", nats_url())
        .env("EDDY_CLUSTER_NAME", common::cluster::unique_name("sqlite"))
        .env("EDDY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("EDDY_DATA_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = common::nats::spawn_tied(&mut command).expect("spawn eddy");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "eddy serve with EDDY_NATS_URL and SQLite was still running after a minute:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "exit status {status}; stderr: {stderr}");
    assert!(
        stderr.contains("DATABASE_URL"),
        "stderr names DATABASE_URL: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_created_at_one_instance_is_served_by_every_instance() {
    let cluster = Cluster::start(3, &nats_url(), &[]).await;
    cluster.create(0, &spec("10s")).await;
    // Visible at the others at once: no retry.
    for i in [1, 2] {
        let resp = cluster
            .http
            .get(format!("{}/v1/pipelines/clicks", cluster.instances[i].base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "at n{i}");
        let list: Value = cluster
            .http
            .get(format!("{}/v1/pipelines", cluster.instances[i].base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["items"][0]["name"], "clicks", "listed at n{i}");
    }
    // Ingest at one instance, answers at another.
    let client = cluster.client();
    let batch = &batches("b", 3, 1)[0];
    let ack = client.post_batch("clicks", &batch.0, &batch.1, 1).await;
    assert_eq!((ack.first, ack.last), (1, BATCH as u64));
    let status = client.get_ok("/v1/pipelines/clicks", 2).await;
    assert_eq!(status["status"]["events"], BATCH);

    // Every instance names the same leader (the creator) and three live members.
    let urls: BTreeMap<String, String> = cluster
        .instances
        .iter()
        .map(|i| (i.node.clone(), i.base.clone()))
        .collect();
    let start = Instant::now();
    for (i, instance) in cluster.instances.iter().enumerate() {
        loop {
            let view = cluster.view(i).await.expect("GET /v1/cluster");
            assert_eq!(view["node"], instance.node.as_str(), "{view}");
            let members: BTreeMap<String, (String, bool)> = view["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| {
                    let node = m["node"].as_str().unwrap().to_owned();
                    (
                        node,
                        (m["url"].as_str().unwrap().to_owned(), m["alive"] == true),
                    )
                })
                .collect();
            let expected: BTreeMap<String, (String, bool)> = urls
                .iter()
                .map(|(n, u)| (n.clone(), (u.clone(), true)))
                .collect();
            if members != expected {
                assert!(
                    start.elapsed() < DEADLINE,
                    "n{i} never saw all three members alive: {view}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let pipelines = view["pipelines"].as_array().expect("pipelines");
            assert_eq!(pipelines.len(), 1, "{view}");
            assert_eq!(pipelines[0]["name"], "clicks");
            assert_eq!(pipelines[0]["leader"], "n0", "the creator leads: {view}");
            let partitions = pipelines[0]["partitions"].as_array().unwrap();
            assert_eq!(partitions.len(), 1, "{view}");
            assert_eq!(partitions[0]["id"], 0);
            assert_eq!(partitions[0]["key_groups"], json!([0, 255]));
            assert_eq!(partitions[0]["owner"], "n0");
            for m in view["members"].as_array().unwrap() {
                assert!(m["last_seen"].is_string(), "{m}");
            }
            break;
        }
    }

    // Deleted at an instance that does not lead it: gone everywhere, its streams too; a new
    // pipeline of the same name starts from nothing.
    let resp = cluster
        .http
        .delete(format!("{}/v1/pipelines/clicks", cluster.instances[1].base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for (i, instance) in cluster.instances.iter().enumerate() {
        let resp = cluster
            .http
            .get(format!("{}/v1/pipelines/clicks", instance.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "at n{i}");
    }
    let js = async_nats::jetstream::new(connect(&[nats_url()]).await.expect("connect"));
    for kind in ["log", "out"] {
        let name = format!("{}_{kind}_clicks", cluster.name);
        assert!(js.get_stream(&name).await.is_err(), "{name} deleted");
    }
    cluster.create(2, &spec("10s")).await;
    let ack = client.post_batch("clicks", &batch.0, &batch.1, 0).await;
    assert_eq!(
        (ack.first, ack.last),
        (1, BATCH as u64),
        "offsets from 1 again"
    );
    let status = client.get_ok("/v1/pipelines/clicks", 0).await;
    assert_eq!(
        status["status"]["events"], BATCH,
        "nothing of the old pipeline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_results_equal_a_single_instance() {
    let cluster = Cluster::start(3, &nats_url(), &[]).await;
    let (_dir, _single, alone) = single_with(&cluster, &spec("10s")).await;
    cluster.create(0, &spec("10s")).await;
    // The same pipeline in three partitions: the same answers, whatever the partitions.
    let mut three = spec_named("clicks3", "10s");
    three["partitions"] = json!(3);
    cluster.create(1, &three).await;

    let stream = batches("c", 5, 30);
    // Read-your-writes checks that found state (not two 404s).
    let mut found = 0;
    for (i, (key, body)) in stream.iter().enumerate() {
        let (a, b) = (i % 3, (i + 1) % 3);
        let got = cluster
            .client_of(&[a])
            .post_batch("clicks", key, body, 0)
            .await;
        let got3 = cluster
            .client_of(&[b])
            .post_batch("clicks3", key, body, 0)
            .await;
        let want = alone.post_batch("clicks", key, body, 0).await;
        assert_eq!((got.first, got.last), (want.first, want.last), "batch {i}");
        assert_eq!(
            (got3.first, got3.last),
            (want.first, want.last),
            "batch {i}"
        );
        // Read-your-writes at another instance than the one that acknowledged.
        let last: Value =
            serde_json::from_slice(body.split(|b| *b == b'\n').nth(BATCH - 1).unwrap())
                .expect("an event");
        for (op, key) in [
            ("last_pages", &last["user_id"]),
            ("page_views", &last["page"]),
        ] {
            let path = |p: &str| {
                format!(
                    "/v1/pipelines/{p}/operators/{op}/state?key={}",
                    key.as_str().unwrap()
                )
            };
            let expected = alone.get(&path("clicks"), 0).await;
            found += usize::from(expected.0 == StatusCode::OK);
            let seen = cluster.client_of(&[b]).get(&path("clicks"), 0).await;
            assert_eq!(
                seen, expected,
                "batch {i}: {op} at n{b} right after the ack at n{a}"
            );
            let seen3 = cluster.client_of(&[a]).get(&path("clicks3"), 0).await;
            assert_eq!(seen3, expected, "batch {i}: clicks3 {op} at n{a}");
        }
        let status = cluster
            .client_of(&[(i + 2) % 3])
            .get_ok("/v1/pipelines/clicks", 0)
            .await;
        assert_eq!(status["status"]["events"], (i + 1) * BATCH, "batch {i}");
    }
    assert!(found > stream.len(), "{found} state answers with state");
    // An idempotency key is recognised at any instance.
    let (key, body) = &stream[0];
    let again = cluster
        .client_of(&[2])
        .post_batch("clicks", key, body, 0)
        .await;
    assert!(again.replayed, "replayed at n2: {again:?}");
    assert_eq!((again.first, again.last), (1, BATCH as u64));

    let expected = answers_of(&alone, "clicks", 0).await;
    assert!(
        !expected.output.is_empty(),
        "the run closes sessions and windows"
    );
    for start in 0..3 {
        let got = answers_of(&cluster.client_of(&[start]), "clicks", 0).await;
        assert_same(&got, &expected, &format!("cluster at n{start} vs single"));
    }
    // Three partitions: same status and state; the same records, each key's in the same
    // order, offsets dense from 1 (partitions may interleave differently).
    let got3 = answers_of(&cluster.client(), "clicks3", 2).await;
    assert_same_state(&got3, &expected, "clicks3 (three partitions) vs single");
    assert_eq!(
        by_key(&got3.output),
        by_key(&expected.output),
        "clicks3 output per key"
    );
}

/// A bad batch posted at an instance that does not lead the pipeline is answered there, as
/// the leader would answer it, without the leader: it is paused (SIGSTOP) and the answer
/// still comes at once. Nothing is applied.
/// The output feed is the pipeline's output stream (its sequence the output offset), read at
/// any instance: right after an answer (read-your-writes), while the pipeline has no leader,
/// and as Server-Sent Events resumed with `Last-Event-ID`. A missing stream is a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_feed_is_its_stream_read_at_any_instance_even_without_a_leader() {
    let mut cluster = Cluster::start(3, &nats_url(), &[]).await;
    let (_dir, _single, alone) = single_with(&cluster, &spec("1h")).await;
    cluster.create(0, &spec("1h")).await;
    let mut seen = Feed::new("clicks");
    let mut want = Feed::new("clicks");
    for (i, (key, body)) in batches("o", 9, 12).iter().enumerate() {
        cluster
            .client_of(&[i % 3])
            .post_batch("clicks", key, body, 0)
            .await;
        alone.post_batch("clicks", key, body, 0).await;
        // Read at the next instance: every record of the answered batch is there.
        seen.catch_up(&cluster.client_of(&[(i + 1) % 3]), 0).await;
        want.catch_up(&alone, 0).await;
        assert_eq!(seen.records, want.records, "after batch {i}");
    }
    assert!(!want.records.is_empty(), "sessions and windows closed");
    let last = seen.after;

    let nats = connect(&[nats_url()]).await.expect("connect");
    let js = async_nats::jetstream::new(nats);
    let stream_name = format!("{}_out_clicks", cluster.name);
    let mut stream = js
        .get_stream(&stream_name)
        .await
        .expect("the output stream");
    let info = stream.info().await.expect("info");
    assert_eq!(
        (info.state.last_sequence, info.state.messages),
        (last, last),
        "one message per record, its sequence the offset"
    );

    // No leader: the feed is still read, at every other instance.
    let leader = cluster.leader_of("clicks").await;
    cluster.instances[leader].kill9();
    for at in (0..3).filter(|&i| i != leader) {
        let page = cluster
            .client_of(&[at])
            .get_ok("/v1/pipelines/clicks/output?after=0&limit=1000", 0)
            .await;
        assert_eq!(
            page["records"].as_array().expect("records"),
            &want.records,
            "at n{at} with the leader dead"
        );
        // Resumed after the third record, three events: ids and data as the page's.
        let other = &cluster.instances[at];
        let sse = cluster
            .http
            .get(format!(
                "{}/v1/pipelines/clicks/output/stream?limit=3",
                other.base
            ))
            .header("Last-Event-ID", "3")
            .send()
            .await
            .expect("stream");
        assert_eq!(sse.status(), StatusCode::OK);
        let text = sse.text().await.expect("stream text");
        let events: Vec<(u64, Value)> = text
            .split("\n\n")
            .filter(|e| e.contains("data:"))
            .map(|e| {
                let field = |name: &str| {
                    e.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .expect("field")
                        .trim()
                        .to_owned()
                };
                (
                    field("id:").parse().expect("id"),
                    serde_json::from_str(&field("data:")).expect("data"),
                )
            })
            .collect();
        let expected: Vec<(u64, Value)> = want.records[3..6]
            .iter()
            .map(|r| (r["offset"].as_u64().unwrap(), r.clone()))
            .collect();
        assert_eq!(events, expected, "SSE at n{at}");
    }

    // The stream gone (damage outside eddy): 503 naming the feed, and the server serves on.
    js.delete_stream(&stream_name).await.expect("delete");
    let other = (leader + 1) % 3;
    let answer = cluster
        .http
        .get(format!(
            "{}/v1/pipelines/clicks/output",
            cluster.instances[other].base
        ))
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    let problem: Value = answer.json().await.expect("problem+json");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("output feed") && d.contains("missing")),
        "{problem}"
    );
    let (status, _) = cluster.client_of(&[other]).get("/v1/cluster", 0).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_is_refused_where_it_arrives() {
    let mut cluster = Cluster::start(3, &nats_url(), &[("EDDY_LEASE_TIMEOUT", "30s")]).await;
    cluster.create(0, &spec("1h")).await;
    let client = cluster.client();
    post_all(&client, "clicks", &batches("v1", 81, 2), 1).await;
    let http = cluster.http.clone();
    let bad = |at: String, body: &'static str, content_type: &'static str| {
        http.post(format!("{at}/v1/pipelines/clicks/events"))
            .header("content-type", content_type)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
    };
    let (leader, other) = (
        cluster.instances[0].base.clone(),
        cluster.instances[1].base.clone(),
    );
    let at_leader = bad(leader, "[{\"user_id\": 5}]", "application/json")
        .await
        .unwrap();
    let (status, leader_answer) = (at_leader.status(), at_leader.text().await.unwrap());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{leader_answer}");
    cluster.instances[0].sigstop();
    let cases = [
        (
            "[{\"user_id\": 5}]",
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        ("{not json", "application/json", StatusCode::BAD_REQUEST),
        ("[]", "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ];
    for (body, content_type, want) in cases {
        let resp = bad(other.clone(), body, content_type)
            .await
            .expect("answered without the leader");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, want, "{body}: {text}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert!(doc["code"].is_string(), "problem+json: {text}");
        if body.starts_with("[{") {
            let leader: Value = serde_json::from_str(&leader_answer).unwrap();
            assert_eq!(doc, leader, "the same answer as the leader's");
        }
    }
    cluster.instances[0].sigcont();
    let status = client.get_ok("/v1/pipelines/clicks", 2).await;
    assert_eq!(
        status["status"]["events"],
        2 * BATCH,
        "nothing of the bad batches applied"
    );
}

/// Posts each batch at a cluster and at a single instance: the same offsets.
async fn post_both(cluster: &ClusterClient, alone: &ClusterClient, stream: Vec<(String, Vec<u8>)>) {
    for (key, body) in stream {
        let got = cluster.post_batch("clicks", &key, &body, 0).await;
        let want = alone.post_batch("clicks", &key, &body, 0).await;
        assert_eq!((got.first, got.last), (want.first, want.last), "{key}");
    }
}

/// The same checkpoint, later events, restore and events after it, at a single instance and
/// at a cluster (each step at another instance); then the cluster's leader is killed and the
/// next one recovers: answers equal the single instance's all along (offsets of discarded
/// events are not reused, the discarded ones are gone from the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_through_any_instance_equals_a_single_instances_and_survives_failover() {
    let mut cluster = Cluster::start(3, &nats_url(), &[]).await;
    let (_dir, _single, alone) = single_with(&cluster, &spec("1h")).await;
    cluster.create(0, &spec("1h")).await;
    post_both(&cluster.client_of(&[1]), &alone, batches("r1", 71, 8)).await;
    let (status, cp) = cluster
        .client_of(&[2])
        .post_empty("/v1/pipelines/clicks/checkpoints", 0)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cp}");
    let (status, want_cp) = alone
        .post_empty("/v1/pipelines/clicks/checkpoints", 0)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{want_cp}");
    post_both(&cluster.client_of(&[2]), &alone, batches("r2", 72, 5)).await;
    let restore = |id: &Value| format!("/v1/pipelines/clicks/checkpoints/{id}/restore");
    let (status, restored) = cluster
        .client_of(&[1])
        .post_empty(&restore(&cp["id"]), 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    let (status, want) = alone.post_empty(&restore(&want_cp["id"]), 0).await;
    assert_eq!(status, StatusCode::OK, "{want}");
    assert_eq!(
        restored["discarded_events"], want["discarded_events"],
        "{restored} vs {want}"
    );
    assert_eq!(restored["discarded_events"], 5 * BATCH);
    post_both(&cluster.client_of(&[0]), &alone, batches("r3", 73, 6)).await;
    let expected = answers_of(&alone, "clicks", 0).await;
    for at in 0..3 {
        let got = answers_of(&cluster.client_of(&[at]), "clicks", 0).await;
        assert_same(&got, &expected, &format!("after the restore, at n{at}"));
    }
    // The leader dies; the next one recovers from the restored checkpoint and the stream
    // after it, which holds none of the discarded records.
    let leader = cluster.leader_of("clicks").await;
    cluster.instances[leader].kill9();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let survivors = cluster.client_of(&others);
    let got = answers_of(&survivors, "clicks", 0).await;
    assert_same(&got, &expected, "after the failover");
    post_both(
        &cluster.client_of(&[others[0]]),
        &alone,
        batches("r4", 74, 3),
    )
    .await;
    let expected = answers_of(&alone, "clicks", 0).await;
    let got = answers_of(&survivors, "clicks", 0).await;
    assert_same(&got, &expected, "events after the failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_under_load_loses_nothing() {
    const KILLS: usize = 10;
    const CLIENTS: usize = 4;
    const BATCHES: usize = 50;
    let mut cluster = Cluster::start(3, &nats_url(), &[]).await;
    let spec = spec("1s");
    cluster.create(0, &spec).await;
    let client = cluster.client();
    let per_client = (0..CLIENTS)
        .map(|c| batches(&format!("k{c}"), 100 + c as u64, BATCHES))
        .collect();
    let mut load = Load::start(&client, per_client);
    let mut rng = SmallRng::seed_from_u64(13);
    let mut feed = Feed::new("clicks");
    let total = CLIENTS * BATCHES;
    let step = total / (KILLS + 1);
    let mut kills = 0;
    for k in 1..=KILLS {
        // A random moment in the k-th stretch of the run, with a new leader serving by then.
        load.wait_progress(k * step + rng.random_range(0..step / 2))
            .await;
        let leader = cluster.leader_of("clicks").await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        cluster.instances[leader].kill9();
        kills += 1;
        if k % 5 == 0 {
            // A second fault during fail-over: kill the next leader as soon as it leads.
            let next = cluster.leader_other_than("clicks", leader).await;
            cluster.instances[next].kill9();
            kills += 1;
            cluster.instances[next].restart();
        }
        if k % 3 == 0 {
            cluster.instances[leader].wipe_data_dir();
        }
        cluster.instances[leader].restart();
        feed.catch_up(&client, k).await;
    }
    let acked = load.finish().await;
    assert!(kills >= 10, "{kills} kills of a leader");
    assert_eq!(acked.len(), total, "every batch acknowledged");
    let expected_output = assert_matches_reference(&client, &spec, &acked, 0).await;
    feed.catch_up(&client, 1).await;
    assert_eq!(
        feed.records, expected_output,
        "a consumer reading across every fail-over saw each record once, offsets stable"
    );
    consistent_checkpoints(&client, 2).await;
    cluster.assert_none_exited();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_over_with_a_shutdown_checkpoint() {
    let mut cluster = Cluster::start(3, &nats_url(), &[]).await;
    let spec = spec("1h");
    cluster.create(0, &spec).await;
    assert_eq!(cluster.leader_of("clicks").await, 0, "the creator leads");
    let client = cluster.client();
    let mut acked = post_all(&client, "clicks", &batches("t1", 21, 15), 0).await;
    let last = acked.iter().map(|a| a.last).max().unwrap();

    let begun = Instant::now();
    cluster.instances[0].sigterm().await;
    let new = cluster.leader_other_than("clicks", 0).await;
    eprintln!("n{new} leads {:?} after SIGTERM of n0", begun.elapsed());
    let others = cluster.client_of(&[1, 2]);
    let checkpoints = consistent_checkpoints(&others, 0).await;
    assert!(
        checkpoints.iter().any(|c| c["trigger"] == "shutdown"
            && c["status"] == "completed"
            && c["input_offset"] == last),
        "a completed shutdown checkpoint through offset {last}: {checkpoints:#?}"
    );
    acked.extend(post_all(&others, "clicks", &batches("t2", 22, 15), 0).await);
    // The new leader counted the lease it took.
    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.instances[new].base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let acquired = metrics.lines().any(|l| {
        l.starts_with("eddy_lease_changes_total{")
            && l.contains("kind=\"acquired\"")
            && l.contains("pipeline=\"clicks\"")
            && l.ends_with(" 1")
    });
    assert!(acquired, "no acquired lease change at n{new}:\n{metrics}");
    cluster.instances[0].restart();
    cluster.instances[0].wait_ready(&cluster.http).await;
    acked.extend(post_all(&client, "clicks", &batches("t3", 23, 10), 0).await);
    assert_matches_reference(&client, &spec, &acked, 0).await;
    consistent_checkpoints(&client, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_with_its_data_dir_deleted_loses_nothing() {
    let mut cluster = Cluster::start(3, &nats_url(), &[]).await;
    let spec = spec("1h");
    cluster.create(0, &spec).await;
    let client = cluster.client();
    let checkpoint = |client: ClusterClient| async move {
        let start = Instant::now();
        loop {
            let (status, body) = client
                .post_empty("/v1/pipelines/clicks/checkpoints", 0)
                .await;
            if status == StatusCode::CREATED {
                return body;
            }
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            assert!(start.elapsed() < DEADLINE, "no checkpoint: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut acked = post_all(&client, "clicks", &batches("w1", 31, 10), 0).await;
    checkpoint(client.clone()).await;
    // Acknowledged after the checkpoint: only in the log.
    acked.extend(post_all(&client, "clicks", &batches("w2", 32, 10), 1).await);

    let leader = cluster.leader_of("clicks").await;
    cluster.instances[leader].kill9();
    cluster.instances[leader].wipe_data_dir();
    cluster.instances[leader].restart();
    cluster.instances[leader].wait_ready(&cluster.http).await;
    acked.extend(post_all(&client, "clicks", &batches("w3", 33, 10), 2).await);
    checkpoint(client.clone()).await;
    acked.extend(post_all(&client, "clicks", &batches("w4", 34, 5), 0).await);
    assert_matches_reference(&client, &spec, &acked, leader).await;

    // Every instance gone at once, every data dir with it: the store and the log hold it all.
    for instance in &mut cluster.instances {
        instance.kill9();
        instance.wipe_data_dir();
    }
    for instance in &mut cluster.instances {
        instance.restart();
    }
    for instance in &mut cluster.instances {
        instance.wait_ready(&cluster.http).await;
    }
    assert_matches_reference(&client, &spec, &acked, 1).await;
    acked.extend(post_all(&client, "clicks", &batches("w5", 35, 5), 2).await);
    assert_matches_reference(&client, &spec, &acked, 0).await;
    consistent_checkpoints(&client, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_is_fenced() {
    let mut cluster = Cluster::start(3, &nats_url(), &[("EDDY_LEASE_TIMEOUT", "2s")]).await;
    let spec = spec("1s");
    cluster.create(0, &spec).await;
    assert_eq!(cluster.leader_of("clicks").await, 0, "the creator leads");
    let client = cluster.client();
    let mut acked = post_all(&client, "clicks", &batches("s1", 41, 10), 0).await;

    cluster.instances[0].sigstop();
    let new = cluster.leader_other_than("clicks", 0).await;
    let good = cluster.client_of(&[1, 2]);
    acked.extend(post_all(&good, "clicks", &batches("s2", 42, 10), new - 1).await);
    // A checkpoint by the new leader through everything so far: any later one of the stale
    // leader's older state would go backwards.
    let begun = Instant::now();
    let manual = loop {
        let (status, body) = good.post_empty("/v1/pipelines/clicks/checkpoints", 0).await;
        if status == StatusCode::CREATED {
            break body;
        }
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(begun.elapsed() < DEADLINE, "no checkpoint: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let through = acked.iter().map(|a| a.last).max().unwrap();
    assert_eq!(manual["input_offset"], through, "{manual}");

    cluster.instances[0].sigcont();
    let stale = cluster.instances[0].base.clone();
    let (mut refused, mut unknown, mut answered) = (Vec::new(), Vec::new(), 0);
    for (i, (key, body)) in batches("s3", 43, 10).into_iter().enumerate() {
        let sent = cluster
            .http
            .post(format!("{stale}/v1/pipelines/clicks/events"))
            .header("content-type", "application/x-ndjson")
            .header("Idempotency-Key", &key)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status() == StatusCode::OK => {
                let ack: Value = resp.json().await.expect("JSON ack");
                let ack = Ack {
                    first: ack["first_offset"].as_u64().unwrap(),
                    last: ack["last_offset"].as_u64().unwrap(),
                    replayed: false,
                    at: 0,
                };
                acked.push(Acked::new(ack, &body));
                answered += 1;
            }
            Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                assert!(resp.headers().contains_key("retry-after"));
                refused.push((key, body));
                answered += 1;
            }
            Ok(resp) => panic!(
                "the woken stale leader answered {} to write {i}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ),
            Err(_) => unknown.push((key, body)),
        }
        // Its reads answer 503 or the truth: every acknowledged event, nothing else.
        if let Ok(resp) = cluster
            .http
            .get(format!("{stale}/v1/pipelines/clicks"))
            .send()
            .await
        {
            match resp.status() {
                StatusCode::OK => {
                    let status: Value = resp.json().await.unwrap();
                    let events = status["status"]["events"].as_u64().unwrap() as usize;
                    // Acknowledged: all of them. Unanswered or refused: perhaps applied after
                    // all (a forward that timed out), never more.
                    let known = acked.len() * BATCH;
                    let open = (unknown.len() + refused.len()) * BATCH;
                    assert!(
                        events >= known && events <= known + open,
                        "the woken stale leader answered {events} events, {known} acknowledged"
                    );
                }
                StatusCode::SERVICE_UNAVAILABLE => {}
                other => panic!("the woken stale leader answered {other} to a read"),
            }
        }
    }
    assert!(
        answered > 0,
        "the woken stale leader never answered a write"
    );
    // Writes it refused were not applied; writes whose answer was lost may have been: either
    // way the key settles it, once, at the live instances.
    for (key, body) in refused.iter().chain(&unknown) {
        let ack = good.post_batch("clicks", key, body, 0).await;
        acked.push(Acked::new(ack, body));
    }
    // Let the stale instance run through several checkpoint intervals.
    let newest = |items: &[Value]| items[0]["id"].as_u64().unwrap();
    let mut seen = newest(&consistent_checkpoints(&good, 0).await);
    for round in 0..3 {
        acked.extend(
            post_all(
                &good,
                "clicks",
                &batches(&format!("s4-{round}"), 44 + round, 1),
                0,
            )
            .await,
        );
        let start = Instant::now();
        loop {
            let id = newest(&consistent_checkpoints(&good, 0).await);
            if id > seen {
                seen = id;
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no periodic checkpoint after {seen}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // It follows the new leader once awake.
    let start = Instant::now();
    loop {
        let leader = cluster
            .view(0)
            .await
            .and_then(|v| common::cluster::leader_in(&v, "clicks").map(str::to_owned));
        if leader.as_deref() == Some(cluster.instances[new].node.as_str()) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the woken instance still names {leader:?} leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consistent_checkpoints(&client, 0).await;
    assert_matches_reference(&client, &spec, &acked, 0).await;
    // Whatever was written survives recovery by everyone from the store and the log.
    cluster.kill_all_and_restart().await;
    assert_matches_reference(&client, &spec, &acked, 1).await;
    consistent_checkpoints(&client, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nats_server_of_three_killed_under_load_with_r3_loses_nothing() {
    const CLIENTS: usize = 4;
    const BATCHES: usize = 30;
    let mut nats = NatsCluster::start(3).await;
    let cluster = Cluster::start(3, &nats.url_list(), &[("EDDY_NATS_REPLICAS", "3")]).await;
    let spec = spec("1s");
    cluster.create(0, &spec).await;
    let client = cluster.client();
    let per_client = (0..CLIENTS)
        .map(|c| batches(&format!("r{c}"), 200 + c as u64, BATCHES))
        .collect();
    let mut load = Load::start(&client, per_client);
    load.wait_progress(CLIENTS * BATCHES / 3).await;
    // The server leading the pipeline's stream, if it can be told; else the first.
    let victim = nats.stream_leader(&cluster.name).unwrap_or(0);
    nats.kill(victim);
    let acked = load.finish().await;
    assert_eq!(acked.len(), CLIENTS * BATCHES);
    assert_matches_reference(&client, &spec, &acked, 0).await;
    consistent_checkpoints(&client, 1).await;
}
