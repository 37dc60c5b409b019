//! The `eddy` binary itself: subcommands, the loopback rule, and a graceful SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EDDY: &str = env!("CARGO_BIN_EXE_eddy");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

#[test]
fn sigterm_finishes_and_exits_zero() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let mut child = Command::new(EDDY)
        .env("EDDY_LISTEN", format!("127.0.0.1:{port}"))
        .env("EDDY_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "eddy did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "eddy did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
