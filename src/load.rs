//! `eddy load`: a load generator against a running server. It creates the pipeline, posts a
//! pre-encoded, seeded click stream from many connections (closed loop, or open loop at a fixed
//! rate, where latency counts from the intended send time so a slow server cannot hide its
//! queueing), optionally queries state and long-polls the output meanwhile, and reports
//! acknowledged events/s, batch and query latency percentiles, failures by status, and the
//! server's RSS.
//!
//! Over 400 lines for a reason: the generator is one loop with its report, about 400 lines; the
//! rest are its unit tests.

use crate::workload::{ClickStream, seed_spec};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadArgs {
    /// Base URLs (at least one): connection `i` posts to `urls[i % n]`; the pipeline is
    /// created, queried, polled and checkpointed at the first.
    pub urls: Vec<String>,
    pub pipeline: String,
    pub duration: Duration,
    pub batch: usize,
    pub connections: usize,
    pub users: u64,
    /// Partitions of the pipeline created.
    pub partitions: u16,
    /// Batches per second over all connections (open loop); `None`: as fast as acknowledged.
    pub rate: Option<f64>,
    /// Also query state and long-poll the output.
    pub queries: bool,
    /// Take a checkpoint this often.
    pub checkpoint_every: Option<Duration>,
    pub token: Option<String>,
    /// The server's pid, to report its RSS.
    pub server_pid: Option<u32>,
}

/// What a load run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub events: u64,
    pub seconds: f64,
    pub batch_ms: Vec<f64>,
    pub query_ms: Vec<f64>,
    /// Failed requests by status (0: no answer).
    pub failures: BTreeMap<u16, u64>,
    pub rss_bytes: Option<u64>,
    /// The pipeline's counters at the end: (events, late events, keys of `sessions`).
    pub pipeline: Option<(u64, u64, u64)>,
}

/// The `p`-th percentile (0..=100) of `samples`, in their unit.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

impl Report {
    /// A human-readable summary, one figure per line.
    pub fn summary(&mut self) -> String {
        let mut lines = vec![
            format!(
                "events_per_s={:.0}",
                self.events as f64 / self.seconds.max(1e-9)
            ),
            format!("events={} seconds={:.1}", self.events, self.seconds),
            format!(
                "batch_ms p50={:.2} p99={:.2} p999={:.2} (n={})",
                percentile(&mut self.batch_ms, 50.0),
                percentile(&mut self.batch_ms, 99.0),
                percentile(&mut self.batch_ms, 99.9),
                self.batch_ms.len()
            ),
        ];
        if !self.query_ms.is_empty() {
            lines.push(format!(
                "query_ms p50={:.2} p99={:.2} (n={})",
                percentile(&mut self.query_ms, 50.0),
                percentile(&mut self.query_ms, 99.0),
                self.query_ms.len()
            ));
        }
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        lines.push(format!(
            "failures={}",
            if failures.is_empty() {
                "none".into()
            } else {
                failures.join(",")
            }
        ));
        if let Some((events, late, keys)) = self.pipeline {
            lines.push(format!(
                "pipeline events={events} late={late} session_keys={keys}"
            ));
        }
        if let Some(rss) = self.rss_bytes {
            lines.push(format!("server_rss_mb={:.1}", rss as f64 / 1_048_576.0));
        }
        lines.join("\n")
    }
}

/// The base URLs of a comma-separated list (`--url`), in order, each trimmed; an empty entry
/// is an error.
pub fn parse_urls(text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(|url| {
            let url = url.trim();
            if url.is_empty() {
                Err(format!(
                    "--url {text:?}: an empty entry in the list of URLs"
                ))
            } else {
                Ok(url.to_owned())
            }
        })
        .collect()
}

/// The resident set of a process, from /proc.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[derive(Default)]
struct Shared {
    /// The next batch of the stream to send, over all connections: taken in order, so the
    /// server sees the stream in order but for the batches in flight at once.
    next_batch: AtomicUsize,
    batch_ms: Mutex<Vec<f64>>,
    query_ms: Mutex<Vec<f64>>,
    failures: Mutex<BTreeMap<u16, u64>>,
    events: AtomicU64,
}

/// Sends `req` (with the bearer token, if any); answers the response when its status is
/// accepted, else counts the failure (status 0: no answer).
async fn send(
    req: reqwest::RequestBuilder,
    token: &Option<String>,
    shared: &Shared,
    accepted: impl Fn(reqwest::StatusCode) -> bool,
) -> Option<reqwest::Response> {
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let status = match req.send().await {
        Ok(resp) if accepted(resp.status()) => return Some(resp),
        Ok(resp) => resp.status().as_u16(),
        Err(_) => 0,
    };
    *shared.failures.lock().await.entry(status).or_default() += 1;
    None
}

/// Runs the load; fails only when the pipeline cannot be created.
pub async fn run(args: LoadArgs) -> Result<Report, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections * 2)
        .build()
        .map_err(|e| e.to_string())?;
    let auth = |req: reqwest::RequestBuilder| match &args.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let mut spec = seed_spec(&args.pipeline);
    spec["checkpoint_interval"] = serde_json::json!("1h");
    spec["partitions"] = serde_json::json!(args.partitions);
    let first = args.urls.first().ok_or("no URL to load")?.clone();
    let created = auth(client.post(format!("{first}/v1/pipelines")))
        .json(&spec)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !(created.status().is_success() || created.status() == 409) {
        return Err(format!("creating the pipeline: {}", created.status()));
    }
    // Pre-encoded batches, a few per connection, reused round robin with their times moved
    // on by the span of all of them on every pass, so the stream keeps advancing.
    // Ten events per ms: a round of every connection's batch spans less event time than the
    // pipeline's out-of-orderness, so what arrives late is only the generator's own disorder.
    let stream = ClickStream {
        users: args.users,
        events_per_step: 10,
        ..ClickStream::default()
    };
    // Enough batches that every user appears (twice the users in events, at most 2,000,000),
    // so the working set is the users asked for, not what a few batches happen to hold.
    let batches = ((2 * args.users as usize).min(2_000_000) / args.batch.max(1)).max(64);
    let templates = stream.ndjson_batches(args.batch * batches, args.batch);
    let span = (args.batch * batches) as i64 / stream.events_per_step * stream.step_ms;
    let bodies: Arc<Vec<Template>> = Arc::new(templates.into_iter().map(Template::new).collect());
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let base = &args.urls[c % args.urls.len()];
        let url = format!("{base}/v1/pipelines/{}/events", args.pipeline);
        let (client, bodies, shared, args) =
            (client.clone(), bodies.clone(), shared.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let interval = args
                .rate
                .map(|r| Duration::from_secs_f64(args.connections as f64 / r));
            let mut intended = Instant::now()
                + interval.map_or(Duration::ZERO, |i| {
                    i.mul_f64(c as f64 / args.connections as f64)
                });
            while Instant::now() < deadline {
                if interval.is_some() {
                    tokio::time::sleep_until(intended.into()).await;
                }
                let sent_at = if interval.is_some() {
                    intended
                } else {
                    Instant::now()
                };
                let i = shared.next_batch.fetch_add(1, Ordering::Relaxed);
                let req = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(bodies[i % bodies.len()].stamped((i / bodies.len()) as i64 * span));
                if send(req, &args.token, &shared, |s| s.is_success())
                    .await
                    .is_some()
                {
                    shared
                        .events
                        .fetch_add(args.batch as u64, Ordering::Relaxed);
                    shared
                        .batch_ms
                        .lock()
                        .await
                        .push(sent_at.elapsed().as_secs_f64() * 1e3);
                }
                if let Some(interval) = interval {
                    intended += interval;
                }
            }
        }));
    }
    if args.queries {
        tasks.push(tokio::spawn(query_loop(
            client.clone(),
            args.clone(),
            shared.clone(),
            deadline,
        )));
        tasks.push(tokio::spawn(poll_loop(
            client.clone(),
            args.clone(),
            shared.clone(),
            deadline,
        )));
    }
    if let Some(every) = args.checkpoint_every {
        let (client, args, shared) = (client.clone(), args.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let url = format!(
                "{}/v1/pipelines/{}/checkpoints",
                args.urls[0], args.pipeline
            );
            while Instant::now() + every < deadline {
                tokio::time::sleep(every).await;
                send(client.post(&url), &args.token, &shared, |s| {
                    s.is_success() || s == 409
                })
                .await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let status_url = format!("{first}/v1/pipelines/{}", args.pipeline);
    let pipeline = match send(client.get(status_url), &args.token, &shared, |s| {
        s.is_success()
    })
    .await
    {
        Some(resp) => resp.json::<serde_json::Value>().await.ok().map(|doc| {
            let status = &doc["status"];
            let field = |name: &str| status[name].as_u64().unwrap_or(0);
            let keys = status["keys"]["sessions"].as_u64();
            (field("events"), field("late_events"), keys.unwrap_or(0))
        }),
        None => None,
    };
    Ok(Report {
        pipeline,
        events: shared.events.load(Ordering::Relaxed),
        seconds,
        batch_ms: std::mem::take(&mut *shared.batch_ms.lock().await),
        query_ms: std::mem::take(&mut *shared.query_ms.lock().await),
        failures: std::mem::take(&mut *shared.failures.lock().await),
        rss_bytes: args.server_pid.and_then(rss_of),
    })
}

/// A pre-encoded batch and where its event times are, to send it again later in event time.
struct Template {
    body: bytes::Bytes,
    /// Offsets of the digits of every `"ts":` value.
    times: Vec<std::ops::Range<usize>>,
}

impl Template {
    fn new(body: Vec<u8>) -> Template {
        const FIELD: &[u8] = b"\"ts\":";
        let mut times = Vec::new();
        let mut from = 0;
        while let Some(at) = memchr::memmem::find(&body[from..], FIELD) {
            let start = from + at + FIELD.len();
            let len = body[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            times.push(start..start + len);
            from = start + len;
        }
        Template {
            body: body.into(),
            times,
        }
    }

    /// The batch with every time moved `shift` ms later (a copy, unless `shift` is 0).
    fn stamped(&self, shift: i64) -> bytes::Bytes {
        if shift == 0 {
            return self.body.clone();
        }
        let mut body = Vec::with_capacity(self.body.len() + self.times.len());
        let mut copied = 0;
        for digits in &self.times {
            body.extend_from_slice(&self.body[copied..digits.start]);
            let text = std::str::from_utf8(&self.body[digits.clone()]).expect("ASCII digits");
            let time: i64 = text.parse().expect("an epoch-ms time");
            write!(body, "{}", time + shift).expect("writing to a Vec");
            copied = digits.end;
        }
        body.extend_from_slice(&self.body[copied..]);
        body.into()
    }
}

async fn query_loop(
    client: reqwest::Client,
    args: LoadArgs,
    shared: Arc<Shared>,
    deadline: Instant,
) {
    let mut n = 0_u64;
    while Instant::now() < deadline {
        let user = format!("u{}", n % args.users.max(1));
        n += 1;
        let url = format!(
            "{}/v1/pipelines/{}/operators/sessions/state?key={user}",
            args.urls[0], args.pipeline
        );
        let start = Instant::now();
        if let Some(resp) = send(client.get(url), &args.token, &shared, |s| {
            s.is_success() || s == 404
        })
        .await
        {
            let _ = resp.bytes().await;
            shared
                .query_ms
                .lock()
                .await
                .push(start.elapsed().as_secs_f64() * 1e3);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn poll_loop(
    client: reqwest::Client,
    args: LoadArgs,
    shared: Arc<Shared>,
    deadline: Instant,
) {
    let mut after = 0_u64;
    while Instant::now() + Duration::from_secs(2) < deadline {
        let url = format!(
            "{}/v1/pipelines/{}/output?after={after}&limit=1000&wait=1s",
            args.urls[0], args.pipeline
        );
        if let Some(resp) = send(client.get(url), &args.token, &shared, |s| s.is_success()).await {
            let page: serde_json::Value = resp.json().await.unwrap_or_default();
            after = page["next"].as_u64().unwrap_or(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Template, parse_urls, percentile};

    #[test]
    fn templates_move_every_time_and_nothing_else() {
        let body = br#"{"user_id":"u1","ts":1700000000000,"page":"/p/1"}
{"ts":999,"user_id":"u2","qty":1}
"#;
        let t = Template::new(body.to_vec());
        assert_eq!(&t.stamped(0)[..], &body[..]);
        let moved = t.stamped(64_000);
        assert_eq!(
            std::str::from_utf8(&moved).unwrap(),
            "{\"user_id\":\"u1\",\"ts\":1700000064000,\"page\":\"/p/1\"}\n{\"ts\":64999,\"user_id\":\"u2\",\"qty\":1}\n"
        );
    }

    #[test]
    fn a_url_list_is_split_at_commas_in_order_and_trimmed() {
        assert_eq!(
            parse_urls("http://127.0.0.1:8080").unwrap(),
            ["http://127.0.0.1:8080"]
        );
        assert_eq!(
            parse_urls("http://a:1, http://b:2 ,http://c:3").unwrap(),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        assert!(parse_urls("").is_err());
        assert!(parse_urls("http://a:1,,http://b:2").is_err());
        assert!(parse_urls("http://a:1,").is_err());
    }

    #[test]
    fn percentiles_pick_by_rank() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&mut samples, 50.0), 51.0);
        assert_eq!(percentile(&mut samples, 99.0), 99.0);
        assert_eq!(percentile(&mut samples, 100.0), 100.0);
        assert_eq!(percentile(&mut [], 99.0), 0.0);
    }
}
