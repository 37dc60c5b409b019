//! `eddy replay`: a pipeline over a file of events through the same engine as the server (no
//! HTTP, no WAL), for backfills, for testing a pipeline on recorded data, and for measuring the
//! engine without the network. Batches are parsed in parallel but sequenced in file order, so
//! a replay's outputs are a function of the file (and the batch size) alone.

use crate::engine::{BodyFormat, EngineConfig, OutputRecord, Pipeline, parse_batch};
use crate::spec::PipelineSpec;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayArgs {
    pub spec: PathBuf,
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    pub shards: usize,
    /// Lines per batch.
    pub batch: usize,
    /// Output records kept in memory (the rest are written and let go).
    pub retain: usize,
}

/// What a replay did.
#[derive(Debug, Default, PartialEq)]
pub struct Totals {
    pub events: u64,
    pub late_events: u64,
    /// Output records per operator.
    pub records: BTreeMap<String, u64>,
    /// Sum of `count` over window records (and `events` over session records).
    pub count_sum: u64,
    /// Sum of `duration_ms` over session records.
    pub duration_sum: i64,
}

impl Totals {
    fn add(&mut self, record: &OutputRecord) {
        /// The fields summed, read without building the record's document.
        #[derive(serde::Deserialize, Default)]
        struct Counted {
            count: Option<i64>,
            events: Option<i64>,
            duration_ms: Option<i64>,
        }
        // Looked up by `&str` first: no `String` per record.
        match self.records.get_mut(&*record.operator) {
            Some(n) => *n += 1,
            None => {
                self.records.insert(record.operator.to_string(), 1);
            }
        }
        let counted: Counted = serde_json::from_str(record.value.get()).unwrap_or_default();
        self.count_sum += (counted.count.unwrap_or(0) + counted.events.unwrap_or(0)) as u64;
        self.duration_sum += counted.duration_ms.unwrap_or(0);
    }

    /// The comparable line: `events=… late=… records=op:n,… count_sum=… duration_sum=…`.
    pub fn line(&self) -> String {
        let records: Vec<String> = self
            .records
            .iter()
            .map(|(op, n)| format!("{op}:{n}"))
            .collect();
        format!(
            "events={} late={} records={} count_sum={} duration_sum={}",
            self.events,
            self.late_events,
            records.join(","),
            self.count_sum,
            self.duration_sum
        )
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the spec is invalid: {detail}")]
    Spec { path: PathBuf, detail: String },
    #[error("{path} (batch from line {line}): {detail}")]
    Events {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
}

/// Runs the replay; answers the totals and the events per second.
pub async fn replay(args: &ReplayArgs) -> Result<(Totals, f64), ReplayError> {
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| ReplayError::Io { path, source }
    };
    let text = std::fs::read(&args.spec).map_err(io(&args.spec))?;
    let doc = serde_json::from_slice(&text).map_err(|e| ReplayError::Spec {
        path: args.spec.clone(),
        detail: e.to_string(),
    })?;
    let spec = PipelineSpec::from_json(&doc).map_err(|errors| ReplayError::Spec {
        path: args.spec.clone(),
        detail: format!("{errors:?}"),
    })?;
    let input = std::fs::read(&args.input).map_err(io(&args.input))?;
    let config = EngineConfig {
        shards: args.shards.max(1),
        output_retain: args.retain.max(1),
        ..EngineConfig::default()
    };
    let pipeline = Arc::new(Pipeline::from_spec(spec, &config));

    let mut chunks = Vec::new();
    let (mut start, mut line, mut lines) = (0, 0, 0);
    for (i, byte) in input.iter().enumerate() {
        if *byte == b'\n' {
            lines += 1;
            if lines == args.batch.max(1) {
                chunks.push((line, start, i + 1));
                (start, line, lines) = (i + 1, line + lines, 0);
            }
        }
    }
    if start < input.len() {
        chunks.push((line, start, input.len()));
    }
    let input = Arc::new(input);
    let began = Instant::now();
    // Output records are written (and counted) as they come, and then let go: a replay's
    // memory does not grow with its output.
    // Nothing may be trimmed before the consumer has read it.
    pipeline.output().mark_persisted(0);
    let (end_tx, end_rx) = tokio::sync::watch::channel(None);
    let consumer = tokio::spawn(consume(pipeline.clone(), args.output.clone(), end_rx));
    let parsed = futures::stream::iter(chunks).map(|(line, from, to)| {
        let (input, pipeline) = (input.clone(), pipeline.clone());
        tokio::task::spawn_blocking(move || {
            let body = &input[from..to];
            let batch = match parse_batch(body, BodyFormat::NdJson, pipeline.extractor()) {
                Err(crate::engine::BatchError::Empty) => Ok(None),
                other => other.map(Some),
            };
            (line, batch)
        })
    });
    let mut applied = parsed.buffered(4).map(|joined| {
        let pipeline = pipeline.clone();
        let path = args.input.clone();
        async move {
            let (line, batch) = joined.expect("parse task");
            let events = batch.map_err(|e| {
                let detail = match e {
                    crate::engine::BatchError::Invalid(errors) => errors
                        .iter()
                        .take(5)
                        .map(|e| format!("line {}: {}", line + e.index, e.detail))
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                };
                ReplayError::Events { path, line, detail }
            })?;
            let Some(events) = events else {
                return Ok(());
            };
            pipeline
                .ingest(events, crate::clock::now_ms())
                .await
                .map(|_| ())
                .map_err(ReplayError::from)
        }
    });
    let mut in_flight = futures::stream::FuturesOrdered::new();
    while let Some(next) = applied.next().await {
        in_flight.push_back(next);
        if in_flight.len() >= 8 {
            in_flight.next().await.expect("in flight")?;
        }
    }
    while let Some(done) = in_flight.next().await {
        done?;
    }
    pipeline.advance_watermark(i64::MAX).await?;
    end_tx.send_replace(Some(pipeline.output().last_offset()));
    let mut totals = consumer.await.expect("output consumer")?;
    let elapsed = began.elapsed().as_secs_f64();
    let status = pipeline.status().await?;
    totals.events = status.events;
    totals.late_events = status.late_events;
    Ok((totals, status.events as f64 / elapsed.max(1e-9)))
}

/// Reads the output log as it grows, until offset `end` once it is known: counts every record,
/// writes it to `path` (if any), and marks it persisted so that the log may trim it.
async fn consume(
    pipeline: Arc<Pipeline>,
    path: Option<PathBuf>,
    mut end: tokio::sync::watch::Receiver<Option<u64>>,
) -> Result<Totals, ReplayError> {
    let io = |source| ReplayError::Io {
        path: path.clone().unwrap_or_default(),
        source,
    };
    let mut out = match &path {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(io)?,
        )),
        None => None,
    };
    let output = pipeline.output();
    let mut appended = output.subscribe();
    let (mut totals, mut after) = (Totals::default(), 0);
    loop {
        appended.borrow_and_update();
        let last = *end.borrow_and_update();
        let (records, next) = output.read(Some(after), 10_000);
        for record in &records {
            totals.add(record);
            if let Some(out) = &mut out {
                serde_json::to_writer(&mut *out, &**record).expect("records serialise");
                out.write_all(b"\n").map_err(io)?;
            }
        }
        if !records.is_empty() {
            after = next;
            output.mark_persisted(after);
            continue;
        }
        if last.is_some_and(|last| after >= last) {
            break;
        }
        tokio::select! {
            _ = appended.changed() => {}
            _ = end.changed() => {}
        }
    }
    if let Some(mut out) = out {
        out.flush().map_err(io)?;
    }
    Ok(totals)
}
