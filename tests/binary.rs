//! The `eddy` binary itself: subcommands, the loopback rule, and a graceful SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/ports.rs"]
mod ports;

use ports::free_port;

const EDDY: &str = env!("CARGO_BIN_EXE_eddy");

#[test]
fn openapi_prints_the_committed_document() {
    let out = Command::new(EDDY).arg("openapi").output().unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn migrate_creates_the_sqlite_schema_and_exits() {
    let dir = tempfile::TempDir::new().unwrap();
    let out = Command::new(EDDY)
        .arg("migrate")
        .env("EDDY_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("eddy.db").exists());
}

#[test]
fn a_bad_setting_fails_at_start_with_its_name() {
    let out = Command::new(EDDY)
        .args(["migrate"])
        .env("EDDY_REQUEST_TIMEOUT", "5 s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("EDDY_REQUEST_TIMEOUT"));
}

#[test]
fn serve_refuses_a_non_loopback_address_without_insecure() {
    let dir = tempfile::TempDir::new().unwrap();
    let out = Command::new(EDDY)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("EDDY_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure"));
}

/// A child `eddy serve`, killed if a test fails before it stops it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new(EDDY)
        .env("EDDY_LISTEN", format!("127.0.0.1:{port}"))
        .env("EDDY_DATA_DIR", dir)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Child(child)
}

async fn until_ready(client: &reqwest::Client, port: u16) {
    let started = Instant::now();
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "eddy did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_takes_a_shutdown_checkpoint_and_exits_zero() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let client = reqwest::Client::new();
    let mut child = serve(dir.path(), port);
    until_ready(&client, port).await;
    let base = format!("http://127.0.0.1:{port}");
    let spec = eddy::workload::seed_spec("clicks");
    assert_eq!(
        client
            .post(format!("{base}/v1/pipelines"))
            .json(&spec)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let events = serde_json::json!([{"user_id": "a", "ts": 1, "page": "/p"}, {"user_id": "b", "ts": 2, "page": "/p"}]);
    let resp = client
        .post(format!("{base}/v1/pipelines/clicks/events"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "eddy did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _again = serve(dir.path(), port);
    until_ready(&client, port).await;
    let list: serde_json::Value = client
        .get(format!("{base}/v1/pipelines/clicks/checkpoints"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["trigger"], "shutdown", "{list}");
    assert_eq!(list["items"][0]["events"], 2);
}

#[tokio::test]
async fn load_drives_a_server_and_reports_its_figures() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let server = serve(dir.path(), port);
    until_ready(&reqwest::Client::new(), port).await;
    let out = tokio::process::Command::new(EDDY)
        .args([
            "load",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--duration",
            "2s",
            "--batch",
            "200",
        ])
        .args([
            "--connections",
            "4",
            "--users",
            "1000",
            "--queries",
            "--checkpoint-every",
            "500ms",
        ])
        .args(["--server-pid", &server.0.id().to_string()])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("events="))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(events > 0, "{report}");
    for line in [
        "events_per_s=",
        "batch_ms p50=",
        "query_ms p50=",
        "failures=none",
        "server_rss_mb=",
    ] {
        assert!(report.contains(line), "{line} missing in\n{report}");
    }
    let status: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{port}/v1/pipelines/load"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        status["status"]["events"], events,
        "every acknowledged event is in the status"
    );
    let open_loop = tokio::process::Command::new(EDDY)
        .args([
            "load",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--duration",
            "1s",
            "--rate",
            "50",
            "--batch",
            "10",
        ])
        .output()
        .await
        .unwrap();
    assert!(open_loop.status.success());
    let bad = tokio::process::Command::new(EDDY)
        .args(["load", "--duration", "5 s"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test]
async fn with_a_tokens_file_serve_listens_beyond_loopback_and_wants_tokens() {
    let dir = tempfile::TempDir::new().unwrap();
    let (token, line) = eddy::auth::new_token("ops", "read", None).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, line).unwrap();
    let port = free_port();
    let _child = Child(
        Command::new(EDDY)
            .env("EDDY_LISTEN", format!("0.0.0.0:{port}"))
            .env("EDDY_DATA_DIR", dir.path())
            .env("EDDY_TOKENS_FILE", &tokens)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    until_ready(&client, port).await;
    let url = format!("http://127.0.0.1:{port}/v1/pipelines");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
