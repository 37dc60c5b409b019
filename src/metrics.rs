//! Every metric family eddy exposes on `/metrics`: its name, type, HELP text, labels and
//! buckets live in one table here ([`FAMILIES`]), and nowhere else.
//!
//! Two sources feed the exposition:
//! - the [`registry`]: eddy's own recorder behind the `metrics` facade. Counters and histograms
//!   are incremented where things happen (`metrics::counter!(CHECKPOINT_FAILURES.name, …)`, or
//!   through handles taken once, like [`PipelineMetrics`]). Series with a `pipeline` label
//!   are dropped when the pipeline is deleted ([`forget_pipeline`]); a restore keeps them, so
//!   counters stay monotonic while the pipeline lives.
//! - a [`Scrape`]: gauges read at scrape time from the live engine (keys, watermark, lag,
//!   queue depths) and from `/proc/self` (process), so a deleted pipeline's vanish by
//!   construction.
//!
//! Invariant: every rendered family has HELP and TYPE, names follow Prometheus conventions
//! (base units: seconds and bytes; `_total` on counters and only there), and a watermark of
//! "max" is never published as a number (see [`watermark_gauges`]).
//!
//! Over 400 lines for a reason: the table of families is most of it, and it is one list on
//! purpose (a family is named, typed and described nowhere else); the rest are the handles taken
//! from it and its unit tests.

mod process;
pub mod registry;
mod text;

pub use process::ProcessStats;
pub use registry::{forget_pipeline, install};

use metrics::{Counter, Histogram};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// What kind of series a family holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The word `# TYPE` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: what `# HELP` and `# TYPE` say of it.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Label names of its series (documentation; the series carry them).
    pub labels: &'static [&'static str],
    /// Upper bounds of a histogram's buckets, increasing (`+Inf` is implied).
    pub buckets: &'static [f64],
}

const fn family(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        help,
        labels,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind: Kind::Histogram,
        help,
        labels,
        buckets,
    }
}

use Kind::{Counter as C, Gauge as G};

/// Request and batch latencies: half a millisecond to ten seconds.
const FAST_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// WAL writes and fsyncs: 50 µs to a second.
const IO_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Checkpoints: 5 ms to five minutes.
const SLOW_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Checkpoint sizes: 1 KiB to 4 GiB, by fours.
const SIZE_BYTES: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

const P: &[&str] = &["pipeline"];
const PO: &[&str] = &["pipeline", "operator"];
const PT: &[&str] = &["pipeline", "trigger"];
const PPK: &[&str] = &["pipeline", "partition", "kind"];
const HTTP: &[&str] = &["route", "method", "status"];

pub const PROCESS_CPU: Family = family(
    "process_cpu_seconds_total",
    C,
    &[],
    "Total user and system CPU time spent in seconds.",
);
pub const PROCESS_RSS: Family = family(
    "process_resident_memory_bytes",
    G,
    &[],
    "Resident memory size in bytes.",
);
pub const PROCESS_VSZ: Family = family(
    "process_virtual_memory_bytes",
    G,
    &[],
    "Virtual memory size in bytes.",
);
pub const PROCESS_START: Family = family(
    "process_start_time_seconds",
    G,
    &[],
    "Start time of the process since unix epoch in seconds.",
);
pub const PROCESS_OPEN_FDS: Family = family(
    "process_open_fds",
    G,
    &[],
    "Number of open file descriptors.",
);
pub const PROCESS_MAX_FDS: Family = family(
    "process_max_fds",
    G,
    &[],
    "Maximum number of open file descriptors.",
);
pub const BUILD_INFO: Family = family(
    "eddy_build_info",
    G,
    &["version"],
    "Always 1; the version label is the eddy release serving.",
);
pub const PIPELINES: Family = family(
    "eddy_pipelines",
    G,
    &[],
    "Pipelines served by this instance.",
);
pub const HTTP_REQUESTS: Family = family(
    "eddy_http_requests_total",
    C,
    HTTP,
    "HTTP requests answered, by route template, method and status code.",
);
pub const HTTP_DURATION: Family = histogram(
    "eddy_http_request_duration_seconds",
    HTTP,
    FAST_SECONDS,
    "Time from a request's arrival to its response head, by route template, method and status \
     code (a stream's body is not included).",
);
pub const REJECTIONS: Family = family(
    "eddy_rejections_total",
    C,
    &["reason"],
    "Requests answered 503, by reason: the problem code (busy, overloaded, pipeline_failed, \
     store_unavailable, unavailable), or not_ready before recovery finished.",
);
pub const EVENTS_ACCEPTED: Family = family(
    "eddy_pipeline_events_accepted_total",
    C,
    P,
    "Events acknowledged by ingest (late ones included; WAL replay at start not counted).",
);
pub const EVENTS_LATE: Family = family(
    "eddy_pipeline_events_late_total",
    C,
    P,
    "Acknowledged events whose time was below the watermark when they were processed.",
);
pub const BATCH_DURATION: Family = histogram(
    "eddy_batch_duration_seconds",
    P,
    FAST_SECONDS,
    "Time to accept one batch of events: read, parse, WAL append and fsync, apply.",
);
pub const RECORDS_IN: Family = family(
    "eddy_operator_records_in_total",
    C,
    PO,
    "Events applied to the operator (those its where passes; WAL replay at start included).",
);
pub const RECORDS_OUT: Family = family(
    "eddy_operator_records_out_total",
    C,
    PO,
    "Output records the operator emitted (closed sessions and windows).",
);
pub const MAP_ENTRIES_IGNORED: Family = family(
    "eddy_map_entries_ignored_total",
    C,
    &[],
    "New map entries ignored because the key already held the most entries it may.",
);
pub const OPERATOR_KEYS: Family = family(
    "eddy_operator_keys",
    G,
    PO,
    "Keys that have state in the operator.",
);
pub const CHANGED_KEYS: Family = family(
    "eddy_pipeline_changed_keys",
    G,
    P,
    "Keys changed since the last checkpoint, over all operators (what the next one writes).",
);
pub const WATERMARK: Family = family(
    "eddy_pipeline_watermark_seconds",
    G,
    P,
    "The pipeline's watermark in epoch seconds; absent before any event and at end of stream.",
);
pub const WATERMARK_LAG: Family = family(
    "eddy_pipeline_watermark_lag_seconds",
    G,
    P,
    "Wall clock minus the watermark, in seconds: how far event time is behind now; absent \
     when the watermark is unset or at end of stream.",
);
pub const END_OF_STREAM: Family = family(
    "eddy_pipeline_end_of_stream",
    G,
    P,
    "1 when the watermark was set to max (end of stream: everything closed), else 0.",
);
pub const SHARD_QUEUE: Family = family(
    "eddy_shard_queue_depth",
    G,
    &["pipeline", "shard"],
    "Batches waiting in a shard's mailbox (a full one answers 503 overloaded).",
);
pub const PARTITION_LAG: Family = family(
    "eddy_partition_consumer_lag_records",
    G,
    &["pipeline", "partition"],
    "Cluster mode, partitions spread: records of the pipeline's log a partition owned here \
     has yet to apply.",
);
pub const PARTITION_KEYS: Family = family(
    "eddy_partition_keys",
    G,
    &["pipeline", "partition", "operator"],
    "Cluster mode, partitions spread: keys with state in an operator, in a partition owned \
     here.",
);
pub const CHECKPOINT_INTERVAL: Family = family(
    "eddy_pipeline_checkpoint_interval_seconds",
    G,
    P,
    "The pipeline's checkpoint_interval in seconds.",
);
pub const WAL_APPEND: Family = histogram(
    "eddy_wal_append_duration_seconds",
    P,
    IO_SECONDS,
    "Time to write one group commit (every record queued) to the WAL, fsync excluded.",
);
pub const WAL_FSYNC: Family = histogram(
    "eddy_wal_fsync_duration_seconds",
    P,
    IO_SECONDS,
    "Time of one WAL fdatasync (one per group commit).",
);
pub const WAL_BYTES: Family = family(
    "eddy_wal_appended_bytes_total",
    C,
    P,
    "Bytes appended to the WAL.",
);
pub const CHECKPOINT_DURATION: Family = histogram(
    "eddy_checkpoint_duration_seconds",
    PT,
    SLOW_SECONDS,
    "Time of a completed checkpoint, from its claim to its commit.",
);
pub const CHECKPOINT_SIZE: Family = histogram(
    "eddy_checkpoint_size_bytes",
    PT,
    SIZE_BYTES,
    "Bytes a completed checkpoint wrote (state values, keys and output records).",
);
pub const CHECKPOINT_KEYS_WRITTEN: Family = family(
    "eddy_checkpoint_keys_written_total",
    C,
    P,
    "Keys written by completed checkpoints (state rows, deletes included).",
);
pub const CHECKPOINT_KEYS_DELETED: Family = family(
    "eddy_checkpoint_keys_deleted_total",
    C,
    P,
    "Keys recorded deleted by completed checkpoints.",
);
pub const CHECKPOINT_FAILURES: Family = family(
    "eddy_checkpoint_failures_total",
    C,
    PT,
    "Checkpoints recorded failed, by trigger.",
);
pub const CHECKPOINT_LAST: Family = family(
    "eddy_checkpoint_last_completed_timestamp_seconds",
    G,
    P,
    "When the pipeline's newest completed checkpoint completed, in epoch seconds.",
);

/// Every family, in the order `/metrics` lists them.
pub const LEASE_CHANGES: Family = family(
    "eddy_lease_changes_total",
    C,
    PPK,
    "Cluster mode: changes of a partition's owner seen by this instance: acquired (taken \
     here), lost (another instance took it), released (given up here).",
);

pub static FAMILIES: &[&Family] = &[
    &PROCESS_CPU,
    &PROCESS_RSS,
    &PROCESS_VSZ,
    &PROCESS_START,
    &PROCESS_OPEN_FDS,
    &PROCESS_MAX_FDS,
    &BUILD_INFO,
    &PIPELINES,
    &HTTP_REQUESTS,
    &HTTP_DURATION,
    &REJECTIONS,
    &EVENTS_ACCEPTED,
    &EVENTS_LATE,
    &BATCH_DURATION,
    &RECORDS_IN,
    &RECORDS_OUT,
    &MAP_ENTRIES_IGNORED,
    &OPERATOR_KEYS,
    &CHANGED_KEYS,
    &WATERMARK,
    &WATERMARK_LAG,
    &END_OF_STREAM,
    &SHARD_QUEUE,
    &PARTITION_LAG,
    &PARTITION_KEYS,
    &CHECKPOINT_INTERVAL,
    &WAL_APPEND,
    &WAL_FSYNC,
    &WAL_BYTES,
    &CHECKPOINT_DURATION,
    &CHECKPOINT_SIZE,
    &CHECKPOINT_KEYS_WRITTEN,
    &CHECKPOINT_KEYS_DELETED,
    &CHECKPOINT_FAILURES,
    &CHECKPOINT_LAST,
    &LEASE_CHANGES,
];

/// The exposition of every family: the process registry's series and `scrape`'s.
pub fn render(scrape: &Scrape) -> String {
    text::render(registry::global(), scrape)
}

/// The family called `name`.
pub fn family_of(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().copied().find(|f| f.name == name)
}

/// The 503 reasons counted from start (at 0), so that `rate()` sees the first one.
pub const REJECTION_REASONS: &[&str] = &[
    "busy",
    "overloaded",
    "not_ready",
    "pipeline_failed",
    "store_unavailable",
    "unavailable",
];

/// Checkpoint triggers, counted from a pipeline's start (failures at 0).
pub const TRIGGERS: &[&str] = &["periodic", "manual", "shutdown"];

/// A 503 answer's reason, carried in the response's extensions to the HTTP metrics layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection(pub &'static str);

/// Handles on a pipeline's ingest counters, taken once when the pipeline starts.
#[derive(Clone)]
pub struct PipelineMetrics {
    pub events_accepted: Counter,
    pub events_late: Counter,
    pub batch_duration: Histogram,
}

impl PipelineMetrics {
    /// The handles of pipeline `name` (the same series again after a restore).
    pub fn new(name: &str) -> PipelineMetrics {
        let name = name.to_owned();
        PipelineMetrics {
            events_accepted: metrics::counter!(EVENTS_ACCEPTED.name, "pipeline" => name.clone()),
            events_late: metrics::counter!(EVENTS_LATE.name, "pipeline" => name.clone()),
            batch_duration: metrics::histogram!(BATCH_DURATION.name, "pipeline" => name),
        }
    }
}

/// Per operator (in spec order), a counter of family `family` of pipeline `pipeline`.
pub fn operator_counters(family: &Family, pipeline: &str, operators: &[String]) -> Vec<Counter> {
    operators
        .iter()
        .map(|op| {
            metrics::counter!(family.name, "pipeline" => pipeline.to_owned(), "operator" => op.clone())
        })
        .collect()
}

/// Handles on one WAL's metrics.
pub struct WalMetrics {
    pub append: Histogram,
    pub fsync: Histogram,
    pub bytes: Counter,
}

impl WalMetrics {
    /// The handles of pipeline `pipeline`'s WAL.
    pub fn new(pipeline: &str) -> WalMetrics {
        let p = pipeline.to_owned();
        WalMetrics {
            append: metrics::histogram!(WAL_APPEND.name, "pipeline" => p.clone()),
            fsync: metrics::histogram!(WAL_FSYNC.name, "pipeline" => p.clone()),
            bytes: metrics::counter!(WAL_BYTES.name, "pipeline" => p),
        }
    }
}

/// Registers a served pipeline's series that must exist before their first increment.
pub fn pipeline_served(pipeline: &str) {
    for trigger in TRIGGERS {
        metrics::counter!(CHECKPOINT_FAILURES.name, "pipeline" => pipeline.to_owned(), "trigger" => *trigger)
            .increment(0);
    }
}

/// What a completed checkpoint did.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointDone<'a> {
    pub pipeline: &'a str,
    pub trigger: &'static str,
    pub duration: Duration,
    pub bytes: u64,
    pub keys_written: u64,
    pub keys_deleted: u64,
    /// Epoch ms.
    pub completed_at: i64,
}

/// Records a completed checkpoint.
pub fn checkpoint_completed(done: CheckpointDone<'_>) {
    let (p, t) = (done.pipeline.to_owned(), done.trigger);
    metrics::histogram!(CHECKPOINT_DURATION.name, "pipeline" => p.clone(), "trigger" => t)
        .record(done.duration.as_secs_f64());
    metrics::histogram!(CHECKPOINT_SIZE.name, "pipeline" => p.clone(), "trigger" => t)
        .record(done.bytes as f64);
    metrics::counter!(CHECKPOINT_KEYS_WRITTEN.name, "pipeline" => p.clone())
        .increment(done.keys_written);
    metrics::counter!(CHECKPOINT_KEYS_DELETED.name, "pipeline" => p).increment(done.keys_deleted);
    checkpoint_last_completed(done.pipeline, done.completed_at);
}

/// Records the completion time (epoch ms) of the pipeline's newest completed checkpoint.
pub fn checkpoint_last_completed(pipeline: &str, completed_at: i64) {
    metrics::gauge!(CHECKPOINT_LAST.name, "pipeline" => pipeline.to_owned())
        .set(completed_at as f64 / 1000.0);
}

/// Records a checkpoint recorded failed.
pub fn checkpoint_failed(pipeline: &str, trigger: &'static str) {
    metrics::counter!(CHECKPOINT_FAILURES.name, "pipeline" => pipeline.to_owned(), "trigger" => trigger)
        .increment(1);
}

/// Cluster mode: this instance acquired, lost or released the lease of a pipeline of
/// `partitions` partitions (the leader owns each of them).
pub fn lease_changed(pipeline: &str, partitions: u16, kind: &'static str) {
    for partition in 0..partitions {
        metrics::counter!(LEASE_CHANGES.name, "pipeline" => pipeline.to_owned(), "partition" => partition.to_string(), "kind" => kind)
            .increment(1);
    }
}

/// Cluster mode, partitions spread: partition `partition`'s owner lease changed here.
pub fn partition_lease_changed(pipeline: &str, partition: u16, kind: &'static str) {
    metrics::counter!(LEASE_CHANGES.name, "pipeline" => pipeline.to_owned(), "partition" => partition.to_string(), "kind" => kind)
        .increment(1);
}

/// The route label of a request: its route template, never the raw path (unbounded).
pub fn route_label(matched: Option<&str>) -> &str {
    matched.unwrap_or("unmatched")
}

/// The method label: the standard methods, anything else `other` (bounded).
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .iter()
        .copied()
        .find(|m| *m == method)
        .unwrap_or("other")
}

/// Records one answered HTTP request.
pub fn http_request(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    let (route, status) = (route.to_owned(), status.to_string());
    metrics::counter!(HTTP_REQUESTS.name, "route" => route.clone(), "method" => method, "status" => status.clone())
        .increment(1);
    metrics::histogram!(HTTP_DURATION.name, "route" => route, "method" => method, "status" => status)
        .record(elapsed.as_secs_f64());
}

/// Records one 503 answer.
pub fn rejected(reason: &'static str) {
    metrics::counter!(REJECTIONS.name, "reason" => reason).increment(1);
}

/// The watermark gauges of a pipeline at `now_ms`: (watermark seconds, lag seconds, end of
/// stream). A watermark of `i64::MAX` is end of stream: neither watermark nor lag is
/// published then (it would read 9.2e18), nor before the first event.
pub fn watermark_gauges(watermark: Option<i64>, now_ms: i64) -> (Option<f64>, Option<f64>, bool) {
    match watermark {
        Some(i64::MAX) => (None, None, true),
        Some(w) => {
            let lag = (now_ms as f64 - w as f64) / 1000.0;
            (Some(w as f64 / 1000.0), Some(lag), false)
        }
        None => (None, None, false),
    }
}

/// What a scrape reads of one live pipeline.
#[derive(Clone, Debug, Default)]
pub struct PipelineView {
    pub name: String,
    pub watermark: Option<i64>,
    /// Keys with state per operator, in spec order.
    pub keys: Vec<(String, usize)>,
    pub changed_keys: usize,
    /// Batches waiting per shard.
    pub queue_depths: Vec<usize>,
    pub checkpoint_interval_ms: Option<i64>,
}

/// Labels of one series, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// The gauges read at scrape time, by family.
#[derive(Debug, Default)]
pub struct Scrape {
    samples: BTreeMap<&'static str, Vec<(Labels, f64)>>,
}

impl Scrape {
    /// A scrape of the process (and build) alone; add pipelines with [`Scrape::pipeline`].
    pub fn new(process: &ProcessStats) -> Scrape {
        let mut s = Scrape::default();
        let version = vec![("version", env!("CARGO_PKG_VERSION").to_owned())];
        s.add(&BUILD_INFO, version, 1.0);
        let stats = [
            (&PROCESS_CPU, process.cpu_seconds),
            (&PROCESS_RSS, process.resident_bytes),
            (&PROCESS_VSZ, process.virtual_bytes),
            (&PROCESS_START, process.start_time_seconds),
            (&PROCESS_OPEN_FDS, process.open_fds),
            (&PROCESS_MAX_FDS, process.max_fds),
        ];
        for (family, value) in stats {
            if let Some(v) = value {
                s.add(family, Vec::new(), v);
            }
        }
        s.add(&PIPELINES, Vec::new(), 0.0);
        s
    }

    /// Adds one sample of `family`.
    pub fn add(&mut self, family: &'static Family, labels: Labels, value: f64) {
        self.samples
            .entry(family.name)
            .or_default()
            .push((labels, value));
    }

    /// Adds the gauges of one live pipeline at `now_ms`.
    pub fn pipeline(&mut self, view: &PipelineView, now_ms: i64) {
        let p = || vec![("pipeline", view.name.clone())];
        if let Some((_, count)) = self
            .samples
            .get_mut(PIPELINES.name)
            .and_then(|v| v.first_mut())
        {
            *count += 1.0;
        }
        for (op, keys) in &view.keys {
            let labels = vec![("pipeline", view.name.clone()), ("operator", op.clone())];
            self.add(&OPERATOR_KEYS, labels, *keys as f64);
        }
        self.add(&CHANGED_KEYS, p(), view.changed_keys as f64);
        let (watermark, lag, end) = watermark_gauges(view.watermark, now_ms);
        if let Some(w) = watermark {
            self.add(&WATERMARK, p(), w);
        }
        if let Some(lag) = lag {
            self.add(&WATERMARK_LAG, p(), lag);
        }
        self.add(&END_OF_STREAM, p(), f64::from(u8::from(end)));
        for (shard, depth) in view.queue_depths.iter().enumerate() {
            let labels = vec![
                ("pipeline", view.name.clone()),
                ("shard", shard.to_string()),
            ];
            self.add(&SHARD_QUEUE, labels, *depth as f64);
        }
        if let Some(ms) = view.checkpoint_interval_ms {
            self.add(&CHECKPOINT_INTERVAL, p(), ms as f64 / 1000.0);
        }
    }

    pub(crate) fn samples(&self, name: &str) -> &[(Labels, f64)] {
        self.samples.get(name).map_or(&[], Vec::as_slice)
    }
}

/// At most one log line per interval for a repeated warning (shed requests come in floods);
/// the lines in between are counted and reported with the next one.
#[derive(Debug, Default)]
pub struct LogLimit {
    /// Epoch ms before which no line is written (0: the next one is).
    next_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A limiter that lets nothing through for `interval_ms` after a line.
    pub const fn new() -> LogLimit {
        LogLimit {
            next_ms: AtomicI64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to write a line at `now_ms`: `Some(lines suppressed since the last one)`, or
    /// `None` (counted) within `interval_ms` of the last line.
    pub fn admit(&self, now_ms: i64, interval_ms: i64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + interval_ms,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_prometheus_naming() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a family is listed twice");
        for f in FAMILIES {
            assert!(f.help.len() > 10, "{} has no real HELP", f.name);
            assert_eq!(
                f.name.ends_with("_total"),
                f.kind == Kind::Counter,
                "{}",
                f.name
            );
            assert!(!f.name.contains("_ms"), "{} is not in base units", f.name);
            assert_eq!(
                f.kind == Kind::Histogram,
                !f.buckets.is_empty(),
                "{}",
                f.name
            );
            assert!(f.buckets.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
        }
    }

    #[test]
    fn the_watermark_is_published_in_seconds_with_its_lag() {
        assert_eq!(
            watermark_gauges(Some(1_700_000_000_000), 1_700_000_002_500),
            (Some(1_700_000_000.0), Some(2.5), false)
        );
    }

    #[test]
    fn a_max_watermark_is_end_of_stream_and_publishes_no_number() {
        assert_eq!(watermark_gauges(Some(i64::MAX), 5), (None, None, true));
        assert_eq!(watermark_gauges(None, 5), (None, None, false));
    }

    #[test]
    fn a_watermark_ahead_of_the_clock_has_a_negative_lag() {
        assert_eq!(watermark_gauges(Some(3_000), 1_000).1, Some(-2.0));
    }

    #[test]
    fn unknown_methods_and_unmatched_routes_get_bounded_labels() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(route_label(None), "unmatched");
        assert_eq!(
            route_label(Some("/v1/pipelines/{name}")),
            "/v1/pipelines/{name}"
        );
    }

    #[test]
    fn a_log_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let limit = LogLimit::new();
        assert_eq!(limit.admit(1_000, 1_000), Some(0));
        assert_eq!(limit.admit(1_500, 1_000), None);
        assert_eq!(limit.admit(1_999, 1_000), None);
        assert_eq!(limit.admit(2_000, 1_000), Some(2));
        assert_eq!(limit.admit(5_000, 1_000), Some(0));
    }

    #[test]
    fn a_scrape_counts_pipelines_and_omits_the_watermark_at_end_of_stream() {
        let mut s = Scrape::new(&ProcessStats::default());
        let view = PipelineView {
            name: "a".into(),
            watermark: Some(i64::MAX),
            keys: vec![("op".into(), 3)],
            queue_depths: vec![0, 1],
            ..PipelineView::default()
        };
        s.pipeline(&view, 0);
        assert_eq!(s.samples(PIPELINES.name)[0].1, 1.0);
        assert!(s.samples(WATERMARK.name).is_empty());
        assert!(s.samples(WATERMARK_LAG.name).is_empty());
        assert_eq!(s.samples(END_OF_STREAM.name)[0].1, 1.0);
        assert_eq!(s.samples(SHARD_QUEUE.name).len(), 2);
        assert_eq!(s.samples(BUILD_INFO.name)[0].1, 1.0);
    }
}
