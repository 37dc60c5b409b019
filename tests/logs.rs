//! Operator-facing warnings of the real binary with `LOG_FORMAT=json`: one JSON line each,
//! naming the pipeline, the reason and what happens next.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "common/ports.rs"]
mod ports;

use ports::free_port;

const EDDY: &str = env!("CARGO_BIN_EXE_eddy");

/// A child `eddy serve` whose stdout (the log) is read line by line.
struct Server {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    base: String,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(dir: &Path, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let mut child = Command::new(EDDY)
        .env("EDDY_LISTEN", format!("127.0.0.1:{port}"))
        .env("EDDY_DATA_DIR", dir)
        .env("LOG_FORMAT", "json")
        .env("EDDY_LOG", "info")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let server = Server {
        child,
        lines,
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = server.client.get(server.url("/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return server;
        }
        assert!(Instant::now() < deadline, "eddy did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_json(&self, path: &str, body: &Value) -> reqwest::StatusCode {
        let resp = self.client.post(self.url(path)).json(body).send().await;
        resp.unwrap().status()
    }

    /// The first JSON log line whose message is `message` (within 30 s).
    fn log_line(&self, message: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let parsed: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
            if parsed["fields"]["message"] == message {
                return parsed;
            }
            seen.push(line);
        }
        panic!("no {message:?} line in the log:\n{}", seen.join("\n"));
    }

    /// Stops with SIGTERM (a shutdown checkpoint) and waits for the exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        assert!(self.child.wait().unwrap().success());
    }
}

#[track_caller]
fn assert_operator_line(line: &Value, level: &str, pipeline: &str) {
    let fields = &line["fields"];
    assert_eq!(line["level"], level, "{line}");
    assert_eq!(fields["pipeline"], pipeline, "{line}");
    for field in ["reason", "next"] {
        let text = fields[field].as_str().unwrap_or_default();
        assert!(text.len() > 10, "{field} says nothing: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_request_is_one_json_warning_with_pipeline_reason_and_next() {
    let dir = tempfile::TempDir::new().unwrap();
    let s = serve(dir.path(), &[("EDDY_MAX_CONCURRENT_REQUESTS", "1")]).await;
    let spec = eddy::workload::seed_spec("clicks");
    assert_eq!(s.post_json("/v1/pipelines", &spec).await, 201);
    let event = json!({"user_id": "u", "ts": 1, "page": "/p"});
    let shed = 'provoke: {
        for _ in 0..5 {
            // A long poll holds the only request slot for up to 3 s.
            let poll = s
                .client
                .get(s.url("/v1/pipelines/clicks/output?after=1000&wait=3s"));
            let holder = tokio::spawn(poll.send());
            while !holder.is_finished() {
                if s.post_json("/v1/pipelines/clicks/events", &event).await == 503 {
                    break 'provoke true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        false
    };
    assert!(shed, "no request was shed while the only slot was held");
    let line = s.log_line("request shed");
    assert_operator_line(&line, "WARN", "clicks");
    assert!(
        line["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("EDDY_MAX_CONCURRENT_REQUESTS"),
        "{line}"
    );
    assert_eq!(line["fields"]["suppressed"], 0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_wal_tail_cut_at_start_is_one_json_warning_with_pipeline_reason_and_next() {
    let dir = tempfile::TempDir::new().unwrap();
    let s = serve(dir.path(), &[]).await;
    let spec = eddy::workload::seed_spec("torn");
    assert_eq!(s.post_json("/v1/pipelines", &spec).await, 201);
    let event = json!({"user_id": "u", "ts": 1, "page": "/p"});
    assert_eq!(s.post_json("/v1/pipelines/torn/events", &event).await, 200);
    s.stop();

    // Half a record at the end of the newest segment, as a crash mid-write leaves it.
    let wal = dir.path().join("wal").join("torn");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    let newest = segments.last().expect("a WAL segment");
    let record = eddy::wal::Record::Watermark { time: 5 }.encode(1_000);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap();
    file.write_all(&record[..record.len() / 2]).unwrap();
    drop(file);

    let again = serve(dir.path(), &[]).await;
    let line = again.log_line("WAL torn tail cut");
    assert_operator_line(&line, "WARN", "torn");
}
