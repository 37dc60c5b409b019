//! eddy instances as child processes of the real binary, and clusters of them: one PostgreSQL
//! database and one `EDDY_CLUSTER_NAME` per cluster, each instance on its own loopback port
//! and data dir. Instances can be killed (-9), stopped with SIGTERM, paused (SIGSTOP/SIGCONT),
//! restarted on the same port, and have their data dir wiped. A client posts batches with an
//! idempotency key and retries at the next instance (503, connection errors, timeouts) until
//! acknowledged. Each instance's output goes to a log file; a failing test prints their tails.
//!
//! Over 400 lines for a reason: the process handling, the cluster view and the retrying client
//! are one harness that every cluster test uses together.

use super::fresh_postgres_url;
use super::nats::{free_port, spawn_tied};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const EDDY: &str = env!("CARGO_BIN_EXE_eddy");

/// How long anything may take on a busy two-core machine before a test gives up: start,
/// recovery, fail-over, one acknowledged batch.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// One request's timeout (then the client tries the next instance).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A name no other test (in this or another process) uses: `[A-Za-z0-9_]`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// An HTTP client for tests: a timeout on every request.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// Whether every thread under `/proc/<pid>/task` is in state T (stopped).
fn all_stopped(tasks: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return false;
    };
    entries.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name in parentheses, which may hold spaces.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    })
}

/// One `eddy serve` child process, its port, data dir and environment, which outlive the
/// process: `restart` starts the same instance again.
pub struct Instance {
    pub node: String,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub data_dir: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    paused: bool,
}

impl Instance {
    /// An instance named `node` under `root` (its data dir `root/node`, its log `root/node.log`)
    /// with environment `env` on top of its own listen address, data dir, node id and URL;
    /// not started yet.
    pub fn new(root: &Path, node: &str, env: &[(String, String)]) -> Instance {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let data_dir = root.join(node);
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let mut all = vec![
            ("EDDY_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
            ("EDDY_DATA_DIR".to_owned(), data_dir.display().to_string()),
            ("EDDY_NODE_ID".to_owned(), node.to_owned()),
            ("EDDY_ADVERTISE_URL".to_owned(), base.clone()),
            (
                "EDDY_LOG".to_owned(),
                std::env::var("EDDY_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ),
            ("EDDY_SHARDS".to_owned(), "2".to_owned()),
        ];
        all.extend(env.iter().cloned());
        Instance {
            node: node.to_owned(),
            port,
            base,
            data_dir,
            log: root.join(format!("{node}.log")),
            env: all,
            child: None,
            paused: false,
        }
    }

    /// Starts the process (it must not be running).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.node);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("instance log");
        let mut command = Command::new(EDDY);
        // Only what this instance is given: nothing of the test's own environment (the admin
        // DATABASE_URL, an EDDY_NATS_URL) leaks in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("EDDY_") {
                command.env_remove(key);
            }
        }
        command
            .arg("serve")
            .env_remove("DATABASE_URL")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        self.child = Some(spawn_tied(&mut command).expect("spawn eddy"));
        self.paused = false;
    }

    /// Started, not yet exited (as far as we did it) and not paused: worth asking.
    pub fn is_up(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("a running instance").id() as i32
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on a child we started and have not reaped.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) of {}", self.pid(), self.node);
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERM, then waits for the exit, which must be status 0.
    pub async fn sigterm(&mut self) {
        if self.paused {
            self.sigcont();
        }
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        let status = loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                self.kill9();
                panic!("{} did not exit within {DEADLINE:?} of SIGTERM", self.node);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.child = None;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            self.node,
            self.log_tail(40)
        );
    }

    /// SIGSTOP: the process is paused, its leases age.
    /// SIGSTOP, and waits until every thread of the process is stopped: kill(2) only queues
    /// the signal, and a thread busy on the other core may still answer a request meanwhile.
    pub fn sigstop(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_stopped(&tasks) {
            assert!(Instant::now() < deadline, "{} did not stop", self.node);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT: the paused process runs on.
    pub fn sigcont(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// Starts the (killed or stopped) instance again with the same port, dir and environment.
    pub fn restart(&mut self) {
        self.start();
    }

    /// Deletes everything in the data dir (the instance must not be running).
    pub fn wipe_data_dir(&mut self) {
        assert!(
            self.child.is_none(),
            "wipe the data dir of a running instance"
        );
        std::fs::remove_dir_all(&self.data_dir).expect("remove the data dir");
        std::fs::create_dir_all(&self.data_dir).expect("data dir");
    }

    /// Whether the process has exited by itself (reaps it then).
    pub fn has_exited(&mut self) -> bool {
        let exited = match &mut self.child {
            Some(child) => child.try_wait().expect("wait").is_some(),
            None => return true,
        };
        if exited {
            self.child = None;
        }
        exited
    }

    /// Waits until `/readyz` answers 200; fails with the log when the process exits first.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let url = format!("{}/readyz", self.base);
        let start = Instant::now();
        loop {
            if let Ok(resp) = http.get(&url).send().await
                && resp.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                !self.has_exited(),
                "{} exited before it was ready:\n{}",
                self.node,
                self.log_tail(40)
            );
            assert!(
                start.elapsed() < DEADLINE,
                "{} not ready within {DEADLINE:?}:\n{}",
                self.node,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The last `n` lines the instance wrote (over all its runs).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.paused {
            self.sigcont();
        }
        self.kill9();
    }
}

/// Several instances in cluster mode sharing one PostgreSQL database and one cluster name.
pub struct Cluster {
    pub instances: Vec<Instance>,
    pub database_url: String,
    pub name: String,
    pub http: reqwest::Client,
    _dir: TempDir,
}

impl Cluster {
    /// Kills every instance (-9), starts them all again and waits until each is ready.
    pub async fn kill_all_and_restart(&mut self) {
        for instance in &mut self.instances {
            instance.kill9();
        }
        for instance in &mut self.instances {
            instance.restart();
        }
        for instance in &mut self.instances {
            instance.wait_ready(&self.http).await;
        }
    }

    /// Fails naming any instance that exited by itself (each was only ever stopped by the
    /// test: killed and started again, or paused and woken).
    pub fn assert_none_exited(&mut self) {
        for instance in &mut self.instances {
            assert!(
                !instance.has_exited(),
                "{} exited by itself:\n{}",
                instance.node,
                instance.log_tail(30)
            );
        }
    }

    /// `n` instances `n0`, `n1`, … on the NATS servers `nats` (comma-separated URLs), a fresh
    /// PostgreSQL database, lease timeout 2s and R=1 unless `extra` says otherwise; waits until
    /// each is ready.
    pub async fn start(n: usize, nats: &str, extra: &[(&str, &str)]) -> Cluster {
        let dir = TempDir::new().expect("temp dir");
        let database_url = fresh_postgres_url().await;
        let name = unique_name("c");
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", database_url.as_str()),
            ("EDDY_NATS_URL", nats),
            ("EDDY_CLUSTER_NAME", name.as_str()),
            ("EDDY_NATS_REPLICAS", "1"),
            ("EDDY_LEASE_TIMEOUT", "2s"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut instances: Vec<Instance> = (0..n)
            .map(|i| Instance::new(dir.path(), &format!("n{i}"), &env))
            .collect();
        for instance in &mut instances {
            instance.start();
        }
        let http = http_client();
        for instance in &mut instances {
            instance.wait_ready(&http).await;
        }
        Cluster {
            instances,
            database_url,
            name,
            http,
            _dir: dir,
        }
    }

    /// A client of every instance.
    pub fn client(&self) -> ClusterClient {
        ClusterClient {
            http: self.http.clone(),
            bases: self.instances.iter().map(|i| i.base.clone()).collect(),
        }
    }

    /// A client of these instances only (not, say, a paused one).
    pub fn client_of(&self, which: &[usize]) -> ClusterClient {
        ClusterClient {
            http: self.http.clone(),
            bases: which
                .iter()
                .map(|&i| self.instances[i].base.clone())
                .collect(),
        }
    }

    /// Index of the instance named `node`.
    pub fn index_of(&self, node: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.node == node)
    }

    /// `GET /v1/cluster` at instance `i`, once (None: no 200 answer).
    pub async fn view(&self, i: usize) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/cluster", self.instances[i].base))
            .send()
            .await
            .ok()?;
        if resp.status() != StatusCode::OK {
            return None;
        }
        resp.json().await.ok()
    }

    /// The leader of `pipeline`: the index of an instance that is up and names itself leader
    /// in its `/v1/cluster`. Waits for one (a fail-over may be in progress).
    pub async fn leader_of(&self, pipeline: &str) -> usize {
        self.wait_leader(pipeline, None).await
    }

    /// Waits until an instance other than `old` is up and names itself leader of `pipeline`.
    pub async fn leader_other_than(&self, pipeline: &str, old: usize) -> usize {
        self.wait_leader(pipeline, Some(old)).await
    }

    async fn wait_leader(&self, pipeline: &str, not: Option<usize>) -> usize {
        let start = Instant::now();
        loop {
            for (i, instance) in self.instances.iter().enumerate() {
                if !instance.is_up() || Some(i) == not {
                    continue;
                }
                if let Some(view) = self.view(i).await
                    && leader_in(&view, pipeline) == Some(instance.node.as_str())
                {
                    return i;
                }
            }
            if start.elapsed() > DEADLINE {
                let views: Vec<String> = futures::future::join_all(
                    (0..self.instances.len())
                        .filter(|&i| self.instances[i].is_up())
                        .map(|i| self.view(i)),
                )
                .await
                .into_iter()
                .map(|v| format!("{v:?}"))
                .collect();
                panic!(
                    "no instance (other than {not:?}) named itself leader of {pipeline} within \
                     {DEADLINE:?}; views: {views:#?}\n{}",
                    self.log_tails(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a pipeline at instance `at` (201 expected); the answer.
    pub async fn create(&self, at: usize, spec: &Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/v1/pipelines", self.instances[at].base))
            .json(spec)
            .send()
            .await
            .expect("POST /v1/pipelines");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "create at {at}: {text}");
        serde_json::from_str(&text).expect("JSON")
    }

    /// The last lines of every instance's log, for a failure message.
    pub fn log_tails(&self, n: usize) -> String {
        self.instances
            .iter()
            .map(|i| format!("---- {} ----\n{}", i.node, i.log_tail(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A failing test shows what the instances said.
impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("instance logs (last lines):\n{}", self.log_tails(40));
        }
    }
}

/// The leader that a `/v1/cluster` answer names for `pipeline`.
pub fn leader_in<'a>(view: &'a Value, pipeline: &str) -> Option<&'a str> {
    view["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == pipeline)?["leader"]
        .as_str()
}

/// An acknowledgement of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub first: u64,
    pub last: u64,
    /// `Idempotent-Replayed: true`.
    pub replayed: bool,
    /// Index (in the client's list) of the instance that acknowledged it.
    pub at: usize,
}

/// A client of several instances that moves on to the next one when one cannot answer.
#[derive(Clone)]
pub struct ClusterClient {
    pub http: reqwest::Client,
    pub bases: Vec<String>,
}

/// What one attempt came to.
enum Attempt {
    /// A final answer: status and body.
    Answer(StatusCode, reqwest::header::HeaderMap, String),
    /// 503, a connection error or a timeout: try the next instance.
    Retry(String),
}

impl ClusterClient {
    async fn attempt(&self, request: reqwest::RequestBuilder) -> Attempt {
        match request.send().await {
            Err(e) => Attempt::Retry(format!("{e}")),
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                match resp.text().await {
                    Err(e) => Attempt::Retry(format!("{status}, body lost: {e}")),
                    Ok(text) if status == StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(
                            headers.contains_key(reqwest::header::RETRY_AFTER),
                            "a 503 without Retry-After: {text}"
                        );
                        Attempt::Retry(format!("503 {text}"))
                    }
                    Ok(text) => Attempt::Answer(status, headers, text),
                }
            }
        }
    }

    /// Posts an NDJSON batch with `Idempotency-Key: key`, first at instance `start`, then at
    /// the next ones round-robin, until it is acknowledged; any answer but 200 and 503 fails.
    pub async fn post_batch(&self, pipeline: &str, key: &str, body: &[u8], start: usize) -> Ack {
        let begun = Instant::now();
        let mut errors = Vec::new();
        for turn in 0.. {
            let at = (start + turn) % self.bases.len();
            let request = self
                .http
                .post(format!("{}/v1/pipelines/{pipeline}/events", self.bases[at]))
                .header("content-type", "application/x-ndjson")
                .header("Idempotency-Key", key)
                .body(body.to_vec());
            match self.attempt(request).await {
                Attempt::Answer(status, headers, text) => {
                    assert_eq!(status, StatusCode::OK, "batch {key} at {at}: {text}");
                    let ack: Value = serde_json::from_str(&text).expect("JSON ack");
                    let replayed = headers
                        .get("Idempotent-Replayed")
                        .is_some_and(|v| v == "true");
                    return Ack {
                        first: ack["first_offset"].as_u64().expect("first_offset"),
                        last: ack["last_offset"].as_u64().expect("last_offset"),
                        replayed,
                        at,
                    };
                }
                Attempt::Retry(why) => {
                    errors.push(format!("{at}: {why}"));
                    assert!(
                        begun.elapsed() < DEADLINE,
                        "batch {key} not acknowledged within {DEADLINE:?}; last answers: {:#?}",
                        &errors[errors.len().saturating_sub(5)..]
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        unreachable!()
    }

    /// GET `path`, first at instance `start`, moving on while instances cannot answer; the
    /// first real answer (status and JSON body, Null when it is not JSON).
    pub async fn get(&self, path: &str, start: usize) -> (StatusCode, Value) {
        let begun = Instant::now();
        let mut errors = Vec::new();
        for turn in 0.. {
            let at = (start + turn) % self.bases.len();
            let request = self.http.get(format!("{}{path}", self.bases[at]));
            match self.attempt(request).await {
                Attempt::Answer(status, _, text) => {
                    return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                Attempt::Retry(why) => {
                    errors.push(format!("{at}: {why}"));
                    assert!(
                        begun.elapsed() < DEADLINE,
                        "GET {path} not answered within {DEADLINE:?}; last answers: {:#?}",
                        &errors[errors.len().saturating_sub(5)..]
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        unreachable!()
    }

    /// GET `path` (as [`get`](Self::get)), expecting 200.
    pub async fn get_ok(&self, path: &str, start: usize) -> Value {
        let (status, body) = self.get(path, start).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// POST `path` with no body (checkpoint triggers), moving on while instances cannot
    /// answer; the first real answer.
    pub async fn post_empty(&self, path: &str, start: usize) -> (StatusCode, Value) {
        let begun = Instant::now();
        for turn in 0.. {
            let at = (start + turn) % self.bases.len();
            let request = self.http.post(format!("{}{path}", self.bases[at]));
            match self.attempt(request).await {
                Attempt::Answer(status, _, text) => {
                    return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                Attempt::Retry(why) => {
                    assert!(
                        begun.elapsed() < DEADLINE,
                        "POST {path} not answered within {DEADLINE:?}: {why}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        unreachable!()
    }
}
