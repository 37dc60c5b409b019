//! Test support: a real eddy server on a loopback port, driven by a real HTTP client, on a
//! fresh SQLite file or a fresh PostgreSQL database. PostgreSQL tests need `DATABASE_URL`
//! (scripts/test.sh starts a throwaway server); without it they fail, never skip.
//!
//! Over 400 lines for a reason: every test binary shares this one harness (server, clients,
//! feed reader, SSE reader, PostgreSQL databases), and splitting it would make each binary
//! declare several modules.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod cluster;
pub mod nats;
pub mod pg;
pub mod ports;
pub mod reference;

use eddy::api::AppState;
use eddy::app;
use eddy::config::Config;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use sqlx::Connection;
use std::sync::atomic::{AtomicU32, Ordering};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Which store a test server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once per backend, as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Postgres).await })*
        }
    };
}

/// The admin URL of the test PostgreSQL server.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: PostgreSQL tests need a server. Run scripts/test.sh, which \
             starts a throwaway PostgreSQL, or set DATABASE_URL=postgres://…"
        )
    })
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A new, empty PostgreSQL database; its URL.
pub async fn fresh_postgres_url() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin = database_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let db = format!(
        "eddy_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to DATABASE_URL ({}): {e}",
                eddy::store::redact(&admin)
            )
        });
    sqlx::query(&format!("create database \"{db}\""))
        .execute(&mut conn)
        .await
        .expect("create test database");
    with_database(&admin, &db)
}

/// A database URL of `backend` for data dir `dir`.
pub async fn database_for(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("eddy.db").display()),
        Backend::Postgres => fresh_postgres_url().await,
    }
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub client: Client,
    pub state: AppState,
    pub config: Config,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
    dir: Option<TempDir>,
}

impl TestServer {
    /// A server on a fresh database of `backend`.
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// A server on a fresh database of `backend`, its configuration adjusted by `tweak`.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = TempDir::new().expect("temp dir");
        let url = database_for(backend, dir.path()).await;
        let mut config = Config::for_tests(dir.path().to_owned(), url);
        tweak(&mut config);
        Self::start_config(config, Some(dir)).await
    }

    /// A server with exactly this configuration.
    pub async fn start_config(config: Config, dir: Option<TempDir>) -> TestServer {
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = app::start(config.clone(), shutdown.clone())
            .await
            .expect("start");
        let task = tokio::spawn(app::serve(
            listener,
            state.clone(),
            shutdown.clone().cancelled_owned(),
        ));
        TestServer {
            base,
            client: Client::new(),
            state,
            config,
            shutdown,
            task: Some(task),
            dir,
        }
    }

    /// Stops the server gracefully; keeps its data dir for a restart.
    pub async fn stop(mut self) -> (Config, Option<TempDir>) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("serve");
        }
        (self.config.clone(), self.dir.take())
    }

    /// Stops the server (no final checkpoint: like a crash, as far as the WAL goes) and starts
    /// a new one on the same data dir and database.
    pub async fn restart(self) -> TestServer {
        let (config, dir) = self.stop().await;
        TestServer::start_config(config, dir).await
    }

    /// Takes a checkpoint and answers it (expects 201).
    pub async fn checkpoint(&self, pipeline: &str) -> Value {
        let resp = self
            .post(&format!("/v1/pipelines/{pipeline}/checkpoints"))
            .await;
        body_json(resp, StatusCode::CREATED).await
    }

    /// The state answer of a key (`Value::Null` when the key has none).
    pub async fn state_of(&self, pipeline: &str, operator: &str, key: &str) -> Value {
        let resp = self
            .get(&format!(
                "/v1/pipelines/{pipeline}/operators/{operator}/state?key={key}"
            ))
            .await;
        match resp.status() {
            StatusCode::NOT_FOUND => Value::Null,
            _ => body_json(resp, StatusCode::OK).await["value"].clone(),
        }
    }

    /// The pipeline's status.
    pub async fn status(&self, pipeline: &str) -> Value {
        body_json(
            self.get(&format!("/v1/pipelines/{pipeline}")).await,
            StatusCode::OK,
        )
        .await["status"]
            .clone()
    }

    /// Every output record of a pipeline.
    pub async fn output(&self, pipeline: &str) -> Vec<Value> {
        let page = body_json(
            self.get(&format!(
                "/v1/pipelines/{pipeline}/output?after=0&limit=1000"
            ))
            .await,
            StatusCode::OK,
        )
        .await;
        page["records"].as_array().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }

    /// A POST without a body (checkpoint triggers, restores).
    pub async fn post(&self, path: &str) -> Response {
        self.client.post(self.url(path)).send().await.expect("POST")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        req.send().await.expect("POST")
    }

    /// Creates the contract's seed pipeline `clicks`.
    pub async fn create_seed(&self) {
        let resp = self.post_json("/v1/pipelines", &seed_spec()).await;
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{}",
            resp.text().await.unwrap()
        );
    }

    /// Posts events as JSON and expects 200.
    pub async fn post_events(&self, pipeline: &str, events: &Value) -> Value {
        let resp = self
            .post_json(&format!("/v1/pipelines/{pipeline}/events"), events)
            .await;
        body_json(resp, StatusCode::OK).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The contract's example pipeline.
pub fn seed_spec() -> Value {
    eddy::workload::seed_spec("clicks")
}

/// Status, content type and body text of a response.
async fn read(resp: Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, resp.text().await.expect("body"))
}

/// The JSON body of `resp`, after checking its status and content type.
#[track_caller]
pub fn body_json(resp: Response, status: StatusCode) -> impl std::future::Future<Output = Value> {
    let caller = std::panic::Location::caller();
    async move {
        let (got, ct, text) = read(resp).await;
        assert_eq!(got, status, "at {caller}: body {text}");
        assert!(
            ct.starts_with("application/json"),
            "at {caller}: content type {ct:?}, body {text}"
        );
        serde_json::from_str(&text).expect("JSON body")
    }
}

/// The problem document of `resp`, after checking status, content type, fields and code.
#[track_caller]
pub fn expect_problem(
    resp: Response,
    status: StatusCode,
    code: &'static str,
) -> impl std::future::Future<Output = Value> {
    let caller = std::panic::Location::caller();
    async move {
        let (got, ct, text) = read(resp).await;
        assert_eq!(got, status, "at {caller}: body {text}");
        assert_eq!(ct, "application/problem+json", "at {caller}: body {text}");
        let doc: Value = serde_json::from_str(&text).expect("problem JSON");
        for field in ["type", "title", "status", "detail"] {
            assert!(
                doc.get(field).is_some(),
                "at {caller}: problem lacks {field}: {doc}"
            );
        }
        assert_eq!(doc["status"], status.as_u16(), "at {caller}");
        assert_eq!(doc["code"], code, "at {caller}: {doc}");
        doc
    }
}

/// A client of a pipeline's output feed that keeps its place across restores and restarts, as
/// a real consumer does: a pager reading pages of 3 after its `next`, and a Server-Sent Events
/// reader resuming with `Last-Event-ID`. Each keeps every record it was handed, so a test can
/// check that both saw every record exactly once, whatever happened to the server in between.
pub struct FeedReader {
    pipeline: String,
    /// The pager's `after`: the `next` of its last page.
    after: u64,
    /// Offset of the last event the stream delivered (`None` before any).
    last_event_id: Option<u64>,
    /// Every record the pager was handed, in the order it was handed them.
    pub paged: Vec<Value>,
    /// Every record the stream delivered, in order.
    pub streamed: Vec<Value>,
}

/// Records per page: small, so that paging crosses every gap and boundary.
const PAGE: usize = 3;

impl FeedReader {
    /// A reader of `pipeline`'s feed from its start.
    pub fn new(pipeline: &str) -> FeedReader {
        FeedReader {
            pipeline: pipeline.to_owned(),
            after: 0,
            last_event_id: None,
            paged: Vec::new(),
            streamed: Vec::new(),
        }
    }

    /// Reads everything new at the server at `base`: pages of 3 following `next` until a page
    /// is empty, then the stream, reconnected with `Last-Event-ID`, up to the pager's place.
    pub async fn catch_up(&mut self, client: &Client, base: &str) {
        let output = format!("{base}/v1/pipelines/{}/output", self.pipeline);
        loop {
            let url = format!("{output}?after={}&limit={PAGE}", self.after);
            let page = body_json(client.get(url).send().await.expect("GET"), StatusCode::OK).await;
            let records = page["records"].as_array().expect("records").clone();
            assert!(records.len() <= PAGE, "a page holds at most its limit");
            let next = page["next"].as_u64().expect("next");
            match records.last() {
                None => {
                    assert_eq!(next, self.after, "an empty page keeps the position");
                    break;
                }
                Some(last) => assert_eq!(Some(next), last["offset"].as_u64(), "{page}"),
            }
            self.after = next;
            self.paged.extend(records);
        }
        if self.last_event_id.unwrap_or(0) < self.after {
            self.stream_to(client, &output, self.after).await;
        }
    }

    /// Reads the stream from `Last-Event-ID` until it delivers offset `to` (or beyond).
    async fn stream_to(&mut self, client: &Client, output: &str, to: u64) {
        let mut request = client.get(format!("{output}/stream"));
        if let Some(id) = self.last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let resp = request.send().await.expect("GET stream");
        assert_eq!(resp.status(), StatusCode::OK);
        let mut events = SseEvents::new(resp);
        while self.last_event_id.is_none_or(|id| id < to) {
            let (id, record) = events.next().await;
            assert_eq!(record["offset"], id, "an event's id is its record's offset");
            self.last_event_id = Some(id);
            self.streamed.push(record);
        }
    }

    /// Both readers were handed exactly `expected`, in order: every record once, none lost.
    #[track_caller]
    pub fn assert_saw(&self, expected: &[Value]) {
        for (reader, got) in [("pager", &self.paged), ("stream", &self.streamed)] {
            let offsets = |records: &[Value]| -> Vec<u64> {
                records
                    .iter()
                    .map(|r| r["offset"].as_u64().unwrap())
                    .collect()
            };
            assert_eq!(
                offsets(got),
                offsets(expected),
                "{reader}: offsets of the records it was handed"
            );
            if let Some((g, e)) = got.iter().zip(expected).find(|(g, e)| g != e) {
                panic!("{reader}: a record differs\n got      {g}\n expected {e}");
            }
        }
    }
}

/// The events of a Server-Sent Events response, as (id, JSON data).
pub struct SseEvents {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: Vec<u8>,
}

impl SseEvents {
    pub fn new(resp: Response) -> SseEvents {
        SseEvents {
            body: Box::pin(resp.bytes_stream()),
            buffer: Vec::new(),
        }
    }

    /// The next event with an id and data (keep-alive comments are skipped); fails when none
    /// comes within 10 seconds.
    pub async fn next(&mut self) -> (u64, Value) {
        use futures::StreamExt;
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, None);
                for line in std::str::from_utf8(&block).expect("UTF-8 events").lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().expect("a numeric id"));
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(v.trim()).expect("JSON data"));
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return (id, data);
                }
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), self.body.next())
                .await
                .expect("an event in time")
                .expect("the stream stays open")
                .expect("a readable stream");
            self.buffer.extend_from_slice(&chunk);
        }
    }
}
