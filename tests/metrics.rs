//! `/metrics` as Prometheus sees it: `promtool check metrics` is clean on a fresh server and
//! after a server has done everything once, every family of the contract is there, a deleted
//! pipeline's series are gone, and a real Prometheus scrapes every family.
//!
//! promtool and prometheus come from Debian's `prometheus` package (scripts/test.sh installs
//! it when missing); without them these tests fail, never skip.
//!
//! Over 400 lines for a reason: one server that does everything once is checked for every
//! family of the contract; the list of what it must show is most of the file.

mod common;

use common::{Backend, TestServer, body_json, seed_spec};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The families the contract lists (cluster mode's are not built yet), plus process and build.
const CONTRACT: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
    "eddy_build_info",
    "eddy_pipelines",
    "eddy_pipeline_events_accepted_total",
    "eddy_pipeline_events_late_total",
    "eddy_operator_records_in_total",
    "eddy_operator_records_out_total",
    "eddy_operator_keys",
    "eddy_pipeline_watermark_seconds",
    "eddy_pipeline_watermark_lag_seconds",
    "eddy_pipeline_end_of_stream",
    "eddy_batch_duration_seconds",
    "eddy_http_requests_total",
    "eddy_http_request_duration_seconds",
    "eddy_wal_append_duration_seconds",
    "eddy_wal_fsync_duration_seconds",
    "eddy_wal_appended_bytes_total",
    "eddy_checkpoint_duration_seconds",
    "eddy_checkpoint_size_bytes",
    "eddy_checkpoint_keys_written_total",
    "eddy_checkpoint_failures_total",
    "eddy_checkpoint_last_completed_timestamp_seconds",
    "eddy_rejections_total",
    "eddy_shard_queue_depth",
    "eddy_pipeline_checkpoint_interval_seconds",
];

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{name} is missing: apt-get install -y prometheus (scripts/test.sh does it)"
    );
    path
}

/// Runs `promtool check metrics` on `text`: (exit success, everything it printed).
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}

#[track_caller]
fn assert_promtool_clean(text: &str) {
    let (ok, printed) = promtool_check(text);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics: {printed}\n--- exposition ---\n{text}"
    );
}

async fn scrape(s: &TestServer) -> String {
    let resp = s.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn has_family(text: &str, name: &str) -> bool {
    let (help, kind) = (format!("# HELP {name} "), format!("# TYPE {name} "));
    text.lines().any(|l| l.starts_with(&help)) && text.lines().any(|l| l.starts_with(&kind))
}

fn has_samples(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| !l.starts_with('#') && l.starts_with(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_shows_process_and_build_info_and_is_clean_for_promtool() {
    let s = TestServer::start(Backend::Sqlite).await;
    let text = scrape(&s).await;
    assert_promtool_clean(&text);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
    ] {
        assert!(has_samples(&text, name), "{name} missing in\n{text}");
    }
    let version = format!(
        "eddy_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &version), Some(1.0), "{text}");
    assert_eq!(value(&text, "eddy_pipelines"), Some(0.0));
    assert_eq!(
        value(&text, "eddy_rejections_total{reason=\"busy\"}"),
        Some(0.0),
        "503 reasons are counted from start"
    );
    let started = value(&text, "process_start_time_seconds").unwrap();
    let now = eddy::clock::now_ms() as f64 / 1000.0;
    assert!(started <= now + 1.0 && started > now - 3600.0, "{started}");
}

/// Holds the server's only request slot with long polls and answers a request it shed (503
/// busy). Retries if the polls ended before the shed request was seen.
async fn provoke_a_shed_request(s: &TestServer) {
    for _ in 0..5 {
        let poll = s.url("/v1/pipelines/clicks/output?after=1000000&wait=3s");
        let client = s.client.clone();
        let holder = tokio::spawn(async move { client.get(poll).send().await });
        loop {
            let resp = s.get("/healthz").await;
            if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(resp.headers()["retry-after"], "1");
                holder.await.unwrap().unwrap();
                return;
            }
            if holder.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    panic!("no request was shed while the only slot was held");
}

async fn everything_once_is_clean_and_every_family_is_there(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.max_concurrent_requests = 1).await;
    s.create_seed().await;
    for name in ["other", "gone"] {
        let resp = s
            .post_json("/v1/pipelines", &eddy::workload::seed_spec(name))
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    // On time, then late (below watermark 100000 - 5s), then a purchase.
    s.post_events(
        "clicks",
        &json!([{"user_id": "u1", "ts": 100_000, "page": "/a"}]),
    )
    .await;
    s.post_events(
        "clicks",
        &json!([{"user_id": "u2", "ts": 1_000, "page": "/b"}]),
    )
    .await;
    s.post_events(
        "other",
        &json!({"user_id": "o", "ts": eddy::clock::now_ms(), "page": "/o"}),
    )
    .await;
    s.post_events("gone", &json!({"user_id": "g", "ts": 5, "page": "/g"}))
        .await;
    assert!(s.state_of("clicks", "sessions", "u1").await.is_object());
    let cp = s.checkpoint("clicks").await;
    s.checkpoint("gone").await;
    s.post_events(
        "clicks",
        &json!({"user_id": "u3", "ts": 200_000, "page": "/c"}),
    )
    .await;
    let before_restore = value(
        &scrape(&s).await,
        "eddy_pipeline_events_accepted_total{pipeline=\"clicks\"}",
    );
    let restore = s
        .post(&format!(
            "/v1/pipelines/clicks/checkpoints/{}/restore",
            cp["id"]
        ))
        .await;
    assert_eq!(restore.status(), StatusCode::OK);
    let max = s
        .post_json("/v1/pipelines/clicks/watermark", &json!({"time": "max"}))
        .await;
    assert_eq!(max.status(), StatusCode::OK);
    assert!(
        !s.output("clicks").await.is_empty(),
        "max closed the sessions"
    );
    s.checkpoint("clicks").await;
    assert_eq!(
        s.get("/v1/pipelines/nope").await.status(),
        StatusCode::NOT_FOUND
    );
    let again = s.post_json("/v1/pipelines", &seed_spec()).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    provoke_a_shed_request(&s).await;
    assert_eq!(
        s.delete("/v1/pipelines/gone").await.status(),
        StatusCode::NO_CONTENT
    );

    let text = scrape(&s).await;
    assert_promtool_clean(&text);
    for name in CONTRACT {
        assert!(
            has_family(&text, name),
            "no HELP/TYPE for {name} in\n{text}"
        );
        assert!(has_samples(&text, name), "no samples of {name} in\n{text}");
    }
    assert!(
        !text.contains("pipeline=\"gone\""),
        "a deleted pipeline's series stay:\n{text}"
    );
    let p = |name: &str| format!("{name}{{pipeline=\"clicks\"}}");
    assert_eq!(
        value(&text, &p("eddy_pipeline_events_accepted_total")),
        Some(3.0)
    );
    assert!(before_restore == Some(3.0), "{before_restore:?}");
    assert_eq!(
        value(&text, &p("eddy_pipeline_events_late_total")),
        Some(1.0)
    );
    assert_eq!(value(&text, &p("eddy_pipeline_end_of_stream")), Some(1.0));
    assert_eq!(
        value(&text, &p("eddy_pipeline_watermark_seconds")),
        None,
        "max is no number"
    );
    assert_eq!(
        value(&text, &p("eddy_pipeline_watermark_lag_seconds")),
        None
    );
    let lag = value(
        &text,
        "eddy_pipeline_watermark_lag_seconds{pipeline=\"other\"}",
    )
    .unwrap();
    assert!((0.0..3600.0).contains(&lag), "lag {lag}");
    assert!(
        value(
            &text,
            "eddy_operator_records_in_total{pipeline=\"clicks\",operator=\"sessions\"}"
        )
        .is_some_and(|n| n >= 3.0)
    );
    assert!(
        value(
            &text,
            "eddy_operator_records_out_total{pipeline=\"clicks\",operator=\"sessions\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(value(&text, "eddy_rejections_total{reason=\"busy\"}").is_some_and(|n| n >= 1.0));
    let route = "eddy_http_requests_total{route=\"/v1/pipelines/{name}/events\",method=\"POST\",status=\"200\"}";
    assert_eq!(value(&text, route), Some(5.0), "{text}");
    let unknown =
        "eddy_http_requests_total{route=\"/v1/pipelines/{name}\",method=\"GET\",status=\"404\"}";
    assert_eq!(
        value(&text, unknown),
        Some(1.0),
        "by route template, not by path"
    );
    let manual = "eddy_checkpoint_duration_seconds_count{pipeline=\"clicks\",trigger=\"manual\"}";
    assert_eq!(value(&text, manual), Some(2.0));
    assert_eq!(
        value(
            &text,
            "eddy_checkpoint_failures_total{pipeline=\"clicks\",trigger=\"periodic\"}"
        ),
        Some(0.0)
    );
    let last = value(
        &text,
        &p("eddy_checkpoint_last_completed_timestamp_seconds"),
    )
    .unwrap();
    assert!(
        (last - eddy::clock::now_ms() as f64 / 1000.0).abs() < 3600.0,
        "{last}"
    );
}

async fn a_deleted_pipelines_series_go_and_a_new_one_of_its_name_starts_at_zero(backend: Backend) {
    let s = TestServer::start(backend).await;
    let spec = eddy::workload::seed_spec("brief");
    assert_eq!(
        s.post_json("/v1/pipelines", &spec).await.status(),
        StatusCode::CREATED
    );
    s.post_events(
        "brief",
        &json!([{"user_id": "a", "ts": 1, "page": "/a"}, {"user_id": "b", "ts": 2, "page": "/b"}]),
    )
    .await;
    s.checkpoint("brief").await;
    let text = scrape(&s).await;
    let series = text
        .lines()
        .filter(|l| l.contains("pipeline=\"brief\""))
        .count();
    assert!(
        series > 20,
        "a live pipeline has its series: {series}\n{text}"
    );
    assert_eq!(
        s.delete("/v1/pipelines/brief").await.status(),
        StatusCode::NO_CONTENT
    );
    let text = scrape(&s).await;
    let stale: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("pipeline=\"brief\""))
        .collect();
    assert!(stale.is_empty(), "series of a deleted pipeline: {stale:#?}");
    assert_promtool_clean(&text);

    assert_eq!(
        s.post_json("/v1/pipelines", &spec).await.status(),
        StatusCode::CREATED
    );
    s.post_events("brief", &json!({"user_id": "c", "ts": 3, "page": "/c"}))
        .await;
    let text = scrape(&s).await;
    assert_eq!(
        value(
            &text,
            "eddy_pipeline_events_accepted_total{pipeline=\"brief\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

backend_tests!(
    everything_once_is_clean_and_every_family_is_there,
    a_deleted_pipelines_series_go_and_a_new_one_of_its_name_starts_at_zero,
);

/// A real Prometheus, scraping the server every second, sees every family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrape_sees_every_family() {
    let s = TestServer::start(Backend::Sqlite).await;
    s.create_seed().await;
    s.post_events(
        "clicks",
        &json!({"user_id": "u", "ts": eddy::clock::now_ms(), "page": "/p"}),
    )
    .await;
    s.checkpoint("clicks").await;
    let dir = tempfile::TempDir::new().unwrap();
    let target = s.base.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: eddy\n    \
         static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start prometheus");
    let _stop = KillOnDrop(child);
    let api = format!("http://127.0.0.1:{port}/api/v1/query");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<&str> = CONTRACT.to_vec();
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let query = "count by (__name__) ({job=\"eddy\"})";
        let Ok(resp) = client.get(&api).query(&[("query", query)]).send().await else {
            continue; // not listening yet
        };
        let Ok(answer) = resp.json::<Value>().await else {
            continue;
        };
        let seen: Vec<String> = answer["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        missing.retain(|family| {
            !seen
                .iter()
                .any(|n| n == family || n.strip_suffix("_bucket") == Some(*family))
        });
    }
    let up = client
        .get(&api)
        .query(&[("query", "up{job=\"eddy\"}")])
        .send()
        .await
        .unwrap();
    let up = body_json(up, StatusCode::OK).await;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The alert rules of deploy/prometheus pass `promtool check rules`, fire in their unit tests
/// (`promtool test rules`), and name only families eddy exposes.
#[test]
fn the_alert_rules_are_valid_fire_as_tested_and_name_real_families() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    for args in [
        ["check", "rules", "eddy-alerts.yml"],
        ["test", "rules", "eddy-alerts.test.yml"],
    ] {
        let out = Command::new(tool("promtool"))
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(format!("{dir}/eddy-alerts.yml")).unwrap();
    let names = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("eddy_"));
    for name in names {
        assert!(
            eddy::metrics::family_of(name).is_some(),
            "the rules name {name}, which eddy does not expose"
        );
    }
}

/// docs/metrics.md names every family eddy exposes.
#[test]
fn docs_metrics_md_names_every_family() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    for family in eddy::metrics::FAMILIES {
        assert!(
            docs.contains(&format!("`{}`", family.name)),
            "docs/metrics.md does not describe {}",
            family.name
        );
    }
}
