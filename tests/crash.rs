//! The crash test: the real `eddy` binary as a child process, several concurrent clients
//! posting a seeded click stream with idempotency keys, and `kill -9` at random points (during
//! ingest, during checkpoints every second, during recovery), 12 times per store. Clients
//! re-send every unacknowledged batch with its key after each restart. Finally every key's
//! state and the whole output feed must equal a reference pipeline fed the acknowledged
//! batches in offset order (the server's processing order): nothing lost, nothing twice. A
//! consumer of the output feed (pages of 3, and SSE resumed with `Last-Event-ID`) reads on
//! after every restart and must have been handed each of the reference's records exactly once.

mod common;

use common::{Backend, FeedReader, database_for};
use eddy::engine::{BodyFormat, EngineConfig, Pipeline, parse_batch};
use eddy::spec::PipelineSpec;
use eddy::workload::ClickStream;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EDDY: &str = env!("CARGO_BIN_EXE_eddy");
const KILLS: usize = 12;
const CLIENTS: usize = 4;
const BATCHES: usize = 60;
const BATCH: usize = 40;
const OPERATORS: [&str; 6] = [
    "sessions",
    "last_pages",
    "cart",
    "spend",
    "last_login",
    "page_views",
];

fn spec() -> Value {
    let mut spec = eddy::workload::seed_spec("clicks");
    spec["checkpoint_interval"] = json!("1s");
    spec["state_ttl"] = Value::Null;
    spec
}

struct Server {
    child: Child,
    base: String,
}

/// A failing assertion must not leave a server running.
impl Drop for Server {
    fn drop(&mut self) {
        kill9(self);
    }
}

fn spawn(dir: &std::path::Path, url: &str, port: u16) -> Server {
    let child = Command::new(EDDY)
        .env("EDDY_LISTEN", format!("127.0.0.1:{port}"))
        .env("EDDY_DATA_DIR", dir)
        .env("DATABASE_URL", url)
        .env("EDDY_LOG", "warn")
        .env("EDDY_SHARDS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eddy");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Waits until `path` of `server` answers 200.
async fn wait_until(client: &reqwest::Client, server: &Server, path: &str) {
    let (url, ok) = (format!("{}{path}", server.base), reqwest::StatusCode::OK);
    let start = Instant::now();
    loop {
        if let Ok(resp) = client.get(&url).send().await
            && resp.status() == ok
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{url} never answered {ok}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One client's batches: (idempotency key, NDJSON body), and the acks it got.
struct Client {
    batches: Vec<(String, Vec<u8>)>,
    acked: Vec<Option<(u64, u64)>>,
}

/// Posts this client's unacknowledged batches until done or the server goes away.
/// The JSON answer to a GET of `url`.
async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Every client posting its batches to `server`, each on a task of its own.
fn start_clients(
    http: &reqwest::Client,
    server: &Server,
    clients: &mut Vec<Client>,
) -> Vec<tokio::task::JoinHandle<Client>> {
    let start = |c| tokio::spawn(run_client(http.clone(), server.base.clone(), c));
    clients.drain(..).map(start).collect()
}

async fn run_client(http: reqwest::Client, base: String, mut me: Client) -> Client {
    let url = format!("{base}/v1/pipelines/clicks/events");
    for i in 0..me.batches.len() {
        if me.acked[i].is_some() {
            continue;
        }
        loop {
            let (key, body) = &me.batches[i];
            let sent = http
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .header("Idempotency-Key", key)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status() == 200 => {
                    let ack: Value = resp.json().await.unwrap_or(Value::Null);
                    if let (Some(first), Some(last)) =
                        (ack["first_offset"].as_u64(), ack["last_offset"].as_u64())
                    {
                        me.acked[i] = Some((first, last));
                        break;
                    }
                    return me;
                }
                Ok(resp) if resp.status() == 503 => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Ok(resp) => panic!("unexpected {} for batch {key}", resp.status()),
                Err(_) => return me,
            }
        }
    }
    me
}

async fn crash_and_recover(backend: Backend) {
    let dir = tempfile::TempDir::new().unwrap();
    let url = database_for(backend, dir.path()).await;
    let port = common::ports::free_port();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stream = ClickStream {
        users: 300,
        pages: 7,
        step_ms: 2_000,
        disorder_ms: 30_000,
        ..ClickStream::default()
    };
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|c| {
            let s = ClickStream {
                seed: 100 + c as u64,
                ..stream.clone()
            };
            let batches = s
                .ndjson_batches(BATCHES * BATCH, BATCH)
                .into_iter()
                .enumerate()
                .map(|(i, body)| (format!("client{c}-batch{i}"), body))
                .collect();
            Client {
                batches,
                acked: vec![None; BATCHES],
            }
        })
        .collect();
    let mut rng = SmallRng::seed_from_u64(7);

    let mut server = spawn(dir.path(), &url, port);
    wait_until(&http, &server, "/readyz").await;
    let created = http
        .post(format!("{}/v1/pipelines", server.base))
        .json(&spec())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // A consumer of the output feed that keeps its place across every restart.
    let mut reader = FeedReader::new("clicks");

    for round in 0..KILLS {
        if round > 0 {
            server = spawn(dir.path(), &url, port);
            wait_until(&http, &server, "/healthz").await;
            if round % 4 == 3 {
                // Kill during recovery, before (or just as) it is ready.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
                kill9(&mut server);
                continue;
            }
            wait_until(&http, &server, "/readyz").await;
            reader.catch_up(&http, &server.base).await;
        }
        let tasks = start_clients(&http, &server, &mut clients);
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..1_400))).await;
        kill9(&mut server);
        for task in tasks {
            clients.push(task.await.unwrap());
        }
    }

    // A last, clean run: every batch gets acknowledged.
    server = spawn(dir.path(), &url, port);
    wait_until(&http, &server, "/readyz").await;
    let tasks = start_clients(&http, &server, &mut clients);
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    assert!(
        clients.iter().all(|c| c.acked.iter().all(Option::is_some)),
        "every batch acknowledged"
    );

    // The reference: the acknowledged batches in offset order, through a fresh pipeline.
    let mut ordered: Vec<(u64, u64, &Vec<u8>)> = clients
        .iter()
        .flat_map(|c| {
            c.acked
                .iter()
                .zip(&c.batches)
                .map(|(ack, (_, body))| (ack.unwrap().0, ack.unwrap().1, body))
        })
        .collect();
    ordered.sort_by_key(|(first, _, _)| *first);
    let total: u64 = ordered.iter().map(|(f, l, _)| l - f + 1).sum();
    assert_eq!(total, (CLIENTS * BATCHES * BATCH) as u64);
    for pair in ordered.windows(2) {
        assert!(
            pair[0].1 < pair[1].0,
            "acknowledged offset ranges never overlap: {pair:?}"
        );
    }
    let reference = Pipeline::from_spec(
        PipelineSpec::from_json(&spec()).unwrap(),
        &EngineConfig {
            shards: 1,
            ..EngineConfig::default()
        },
    );
    for (_, _, body) in &ordered {
        let batch = parse_batch(body, BodyFormat::NdJson, reference.extractor()).unwrap();
        reference.ingest(batch, 0).await.unwrap();
    }

    let status: Value = get_json(&http, format!("{}/v1/pipelines/clicks", server.base)).await;
    let expected = reference.status().await.unwrap();
    assert_eq!(status["status"]["events"], expected.events);
    assert_eq!(status["status"]["late_events"], expected.late_events);
    assert_eq!(status["status"]["watermark"], json!(expected.watermark));
    for op in OPERATORS {
        let (expected_items, _) = reference.list_state(op, None, "", 100_000).await.unwrap();
        let got = all_state(&http, &server.base, op).await;
        let expected_items: Vec<Value> = expected_items
            .into_iter()
            .map(|(k, v)| json!({"key": k.as_str(), "value": v}))
            .collect();
        assert_eq!(got.len(), expected_items.len(), "{op}: number of keys");
        if let Some((g, e)) = got.iter().zip(&expected_items).find(|(g, e)| g != e) {
            panic!(
                "{op}: state differs from the reference, first at\n got      {g}\n expected {e}"
            );
        }
    }
    let (records, _) = reference.output().read(None, usize::MAX);
    let expected_output: Vec<Value> = records
        .iter()
        .map(|r| serde_json::to_value(&**r).unwrap())
        .collect();
    // Every record the reader was handed, before and after each restart, once, offsets included.
    reader.catch_up(&http, &server.base).await;
    reader.assert_saw(&expected_output);
    kill9(&mut server);
}

fn kill9(server: &mut Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
}

async fn all_state(http: &reqwest::Client, base: &str, op: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/pipelines/clicks/operators/{op}/state?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_nothing_acknowledged_on_sqlite() {
    crash_and_recover(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_nothing_acknowledged_on_postgres() {
    crash_and_recover(Backend::Postgres).await;
}
