//! `eddy replay`: the real binary over a generated file; shard counts do not change the result;
//! bad input fails naming what is wrong.

use std::process::Command;

const EDDY: &str = env!("CARGO_BIN_EXE_eddy");

fn files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let spec = dir.join("spec.json");
    std::fs::write(&spec, eddy::workload::seed_spec("clicks").to_string()).unwrap();
    let input = dir.join("events.ndjson");
    let stream = eddy::workload::ClickStream {
        users: 500,
        step_ms: 500,
        ..Default::default()
    };
    std::fs::write(&input, stream.ndjson_batches(20_000, 20_000).concat()).unwrap();
    (spec, input)
}

fn replay(
    spec: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    shards: &str,
) -> String {
    replay_keeping(spec, input, output, shards, "100000")
}

/// A replay whose output log keeps at most `retain` records in memory.
fn replay_keeping(
    spec: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    shards: &str,
    retain: &str,
) -> String {
    let out = Command::new(EDDY)
        .env("EDDY_OUTPUT_RETAIN", retain)
        .args(["replay", "--spec"])
        .arg(spec)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--shards", shards, "--batch", "1000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_replay_writes_every_output_and_the_same_totals_with_any_number_of_shards() {
    let dir = tempfile::TempDir::new().unwrap();
    let (spec, input) = files(dir.path());
    let (one, two) = (dir.path().join("one.ndjson"), dir.path().join("two.ndjson"));
    let printed_one = replay(&spec, &input, &one, "1");
    let printed_two = replay(&spec, &input, &two, "2");
    let totals = |printed: &str| printed.lines().next().unwrap().to_owned();
    assert_eq!(totals(&printed_one), totals(&printed_two));
    assert!(
        totals(&printed_one).starts_with("events=20000 "),
        "{printed_one}"
    );
    assert!(
        printed_one
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("events_per_s="),
        "{printed_one}"
    );
    let records = std::fs::read_to_string(&one).unwrap();
    assert_eq!(
        records,
        std::fs::read_to_string(&two).unwrap(),
        "identical output, offsets included"
    );
    let parsed: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(parsed.iter().any(|r| r["type"] == "session_closed"));
    assert!(parsed.iter().any(|r| r["type"] == "window_closed"));
    let sessions = parsed
        .iter()
        .filter(|r| r["operator"] == "sessions")
        .count();
    assert!(
        totals(&printed_one).contains(&format!("sessions:{sessions}")),
        "{printed_one}"
    );
    assert_eq!(
        parsed
            .iter()
            .map(|r| r["offset"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (1..=parsed.len() as u64).collect::<Vec<_>>()
    );
    // Records are written as they come and let go: a log keeping 10 loses none of them.
    let small = dir.path().join("small.ndjson");
    let printed_small = replay_keeping(&spec, &input, &small, "2", "10");
    assert!(parsed.len() > 100, "{} records", parsed.len());
    assert_eq!(totals(&printed_small), totals(&printed_one));
    assert_eq!(std::fs::read_to_string(&small).unwrap(), records);
}

#[test]
fn a_bad_spec_or_event_fails_naming_it() {
    let dir = tempfile::TempDir::new().unwrap();
    let (spec, input) = files(dir.path());
    let bad_spec = dir.path().join("bad.json");
    std::fs::write(
        &bad_spec,
        r#"{"name": "x", "key": "nope", "operators": []}"#,
    )
    .unwrap();
    let out = Command::new(EDDY)
        .args(["replay", "--spec"])
        .arg(&bad_spec)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec is invalid"));
    let bad_input = dir.path().join("bad.ndjson");
    std::fs::write(
        &bad_input,
        "{\"user_id\": \"a\", \"ts\": 1, \"page\": \"/p\"}\n{\"user_id\": \"a\"}\n",
    )
    .unwrap();
    let out = Command::new(EDDY)
        .args(["replay", "--spec"])
        .arg(&spec)
        .arg("--input")
        .arg(&bad_input)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 1: time \"/ts\" is missing"),
        "{stderr}"
    );
    let unwritable = dir.path().join("no-such-dir").join("out.ndjson");
    let out = Command::new(EDDY)
        .args(["replay", "--spec"])
        .arg(&spec)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&unwritable)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-dir"), "{stderr}");
}
