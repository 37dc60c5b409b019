//! A running pipeline: the sequencer that orders batches, moves the watermark per event and
//! routes (event, operator) pairs to shards, plus the shards and the output log.
//!
//! Invariant: everything that changes state passes the sequencer lock once, in one order, the
//! order of the WAL; the lock is never held across an `.await`. A batch either reserves a
//! mailbox slot on every shard it needs, or nothing of it is applied. With a WAL attached,
//! shards receive a batch only once its record is durable (the WAL's after-action sends it),
//! so nothing is applied, visible or answered before it would survive a crash. The arrival
//! clock (processing time) is read under the same lock, so arrival times follow that order.

use super::batch::{BodyFormat, ParsedBatch, parse_batch};
use super::definition::OperatorDef;
use super::extract::Extractor;
use super::idempotency::{Idempotency, IdempotencyEntry};
use super::output::{Output, OutputRecord};
use super::runner::StateRow;
use super::sequencer::{Ack, Arrival, Counters, Mark, Sequencer};
use super::shard::{Command, Item, Shard, ShardBatch};
use super::{EngineConfig, EngineError, key_group, shard_of};
use crate::metrics::{PipelineMetrics, RECORDS_IN, RECORDS_OUT, operator_counters};
use crate::spec::PipelineSpec;
use crate::state::Key;
use crate::wal::{Record, Wal};
use bytes::Bytes;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the sequencer lock guards: the sequencer's state and the idempotency answers it
/// hands out, decided together so that a key is seen once whatever the concurrency.
#[derive(Debug, Default)]
struct Locked {
    seq: Sequencer,
    idempotency: Idempotency,
}

/// Epoch milliseconds now: the service's one wall clock (a vDSO read, cheap under a lock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A batch of extracted events with what the WAL records of it.
pub struct Submission {
    pub events: ParsedBatch,
    /// Arrival time (event time in processing time).
    pub arrival: Arrival,
    pub idempotency_key: Option<String>,
    /// The request body, logged as received (required once a WAL is attached).
    pub body: Option<(Bytes, BodyFormat)>,
}

/// How a submission was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    Applied(Ack),
    /// The idempotency key was seen before: its first answer, nothing applied.
    Replayed(Ack),
}

/// Everything a checkpoint takes at its barrier.
#[derive(Debug)]
pub struct Barrier {
    pub counters: Counters,
    /// LSN of the last WAL record the barrier follows (0 without a WAL).
    pub wal_lsn: u64,
    /// Offset of the last output record of the state.
    pub output_offset: u64,
    /// Every key changed since the previous barrier.
    pub rows: Vec<StateRow>,
    /// Idempotency answers added since the previous barrier.
    pub idempotency: Vec<IdempotencyEntry>,
}

/// A checkpoint to start a pipeline from.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub counters: Counters,
    pub rows: Vec<StateRow>,
    /// The newest output records of the checkpoint, oldest first.
    pub output: Vec<OutputRecord>,
    /// Offset the next output record gets.
    pub next_output_offset: u64,
    pub idempotency: Vec<IdempotencyEntry>,
}

/// Counters and keys of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub events: u64,
    pub late_events: u64,
    pub watermark: Option<i64>,
    /// Offset of the last accepted event.
    pub wal_offset: Option<u64>,
    /// Keys with state, per operator, in spec order.
    pub keys: Vec<(String, usize)>,
    /// Keys changed since the last checkpoint, over all operators (an upper bound).
    pub changed_keys: usize,
}

/// A running pipeline.
pub struct Pipeline {
    name: String,
    spec: Option<PipelineSpec>,
    extractor: Extractor,
    operators: Vec<String>,
    processing_time: bool,
    shards: Vec<mpsc::Sender<Command>>,
    sequencer: Mutex<Locked>,
    output: Arc<Output>,
    /// Cancelled when the pipeline is deleted: ends its long polls and streams.
    closed: CancellationToken,
    wal: OnceLock<Wal>,
    /// Why the pipeline stopped accepting (its WAL failed).
    failure: Arc<OnceLock<String>>,
    /// Keys with state per shard (all operators), published by each shard after a batch.
    keys: Arc<[AtomicUsize]>,
    max_keys: usize,
    metrics: PipelineMetrics,
}

impl Pipeline {
    /// Starts the pipeline of a validated spec.
    pub fn from_spec(spec: PipelineSpec, config: &EngineConfig) -> Pipeline {
        let defs: Vec<OperatorDef> = spec
            .operators
            .iter()
            .map(|op| super::operators::definition(op, config.max_map_entries))
            .collect();
        let mut pipeline = Pipeline::start(&spec, defs, config);
        pipeline.spec = Some(spec);
        pipeline
    }

    /// Starts a pipeline with the key, time and TTL of `spec` but the operators of `defs`
    /// (built-in or a crate user's own).
    pub fn start(spec: &PipelineSpec, defs: Vec<OperatorDef>, config: &EngineConfig) -> Pipeline {
        let names: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
        let extractor = Extractor::new(
            spec.key.clone(),
            spec.time.clone(),
            defs.iter()
                .map(|d| (d.name.clone(), d.inputs.clone()))
                .collect(),
        )
        .routed(config.shards);
        let output = Arc::new(
            Output::new(
                names.iter().map(|n| Arc::from(n.as_str())).collect(),
                config.output_retain,
            )
            .counting(operator_counters(&RECORDS_OUT, &spec.name, &names)),
        );
        let ttl = spec.state_ttl.map(|t| t.millis());
        let keys: Arc<[AtomicUsize]> = (0..config.shards.max(1))
            .map(|_| AtomicUsize::new(0))
            .collect();
        let shards = (0..config.shards.max(1))
            .map(|i| {
                let runners = defs
                    .iter()
                    .enumerate()
                    .map(|(index, d)| d.instance(index as u16, ttl))
                    .collect();
                let records_in = operator_counters(&RECORDS_IN, &spec.name, &names);
                let shard = Shard::new(runners, output.clone(), keys.clone(), i, records_in);
                let (tx, rx) = mpsc::channel(config.shard_queue.max(1));
                std::thread::Builder::new()
                    .name(format!("eddy-shard-{i}"))
                    .spawn(move || shard.run(rx))
                    .expect("spawn shard thread");
                tx
            })
            .collect();
        Pipeline {
            name: spec.name.clone(),
            spec: None,
            extractor,
            operators: names,
            processing_time: spec.processing_time(),
            shards,
            sequencer: Mutex::new(Locked {
                seq: Sequencer::new(
                    spec.time
                        .as_ref()
                        .map_or(0, |t| t.max_out_of_orderness.millis()),
                    spec.processing_time(),
                ),
                idempotency: Idempotency::default(),
            }),
            output,
            closed: CancellationToken::new(),
            wal: OnceLock::new(),
            failure: Arc::new(OnceLock::new()),
            keys,
            max_keys: config.max_keys,
            metrics: PipelineMetrics::new(&spec.name),
        }
    }

    /// From now on, every change is logged to `wal` before it is applied.
    pub fn attach_wal(&self, wal: Wal) {
        let _ = self.wal.set(wal);
    }

    /// Why the pipeline stopped accepting (its WAL failed a write), if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// The attached WAL.
    pub fn wal(&self) -> Option<&Wal> {
        self.wal.get()
    }

    /// Handles on the pipeline's ingest metrics.
    pub fn metrics(&self) -> &PipelineMetrics {
        &self.metrics
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec it was started from (`None` for pipelines built from definitions in code).
    pub fn spec(&self) -> Option<&PipelineSpec> {
        self.spec.as_ref()
    }

    /// How events of this pipeline are validated and extracted.
    pub fn extractor(&self) -> &Extractor {
        &self.extractor
    }

    /// The output log.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// A shared handle on the output log, for readers that outlive a request.
    pub fn output_handle(&self) -> Arc<Output> {
        self.output.clone()
    }

    /// Cancelled once the pipeline is deleted.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Marks the pipeline deleted (readers end); its shards stop when the last handle goes.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Operator names, in spec order.
    pub fn operators(&self) -> &[String] {
        &self.operators
    }

    /// Whether event time is arrival time.
    pub fn processing_time(&self) -> bool {
        self.processing_time
    }

    /// Sequences, applies and acknowledges a batch of extracted events that arrived at
    /// `arrival` (epoch ms). Returns once every event is applied and its outputs are logged.
    pub async fn ingest(&self, events: ParsedBatch, arrival: i64) -> Result<Ack, EngineError> {
        let submission = Submission {
            events,
            arrival: Arrival::At(arrival),
            idempotency_key: None,
            body: None,
        };
        match self.submit(submission).await? {
            Ingested::Applied(ack) | Ingested::Replayed(ack) => Ok(ack),
        }
    }

    /// The first answer of an idempotency key, once its batch is applied.
    pub async fn replayed(&self, key: &str) -> Option<Ack> {
        let entry = self
            .sequencer
            .lock()
            .expect("sequencer lock")
            .idempotency
            .get(key)
            .cloned()?;
        if let Some(batch) = entry.batch {
            self.output.wait_flushed(batch).await;
        }
        Some(entry.ack)
    }

    /// Sequences, logs, applies and acknowledges a batch; an idempotency key seen before gets
    /// its first answer instead.
    pub async fn submit(&self, submission: Submission) -> Result<Ingested, EngineError> {
        self.submit_counted(submission, true).await
    }

    /// `submit`; `live` batches (not a WAL replay) count as accepted once applied.
    async fn submit_counted(
        &self,
        submission: Submission,
        live: bool,
    ) -> Result<Ingested, EngineError> {
        if let Some(key) = &submission.idempotency_key
            && let Some(ack) = self.replayed(key).await
        {
            return Ok(Ingested::Replayed(ack));
        }
        let (ack, late, done) = match self.sequence_events(submission)? {
            Sequenced::Repeated(key) => {
                let ack = self.replayed(&key).await.ok_or_else(|| self.stopped())?;
                return Ok(Ingested::Replayed(ack));
            }
            Sequenced::New(ack, late, done) => (ack, late, done),
        };
        done.await.map_err(|_| self.failed_or_stopped())?;
        if live {
            self.metrics.events_accepted.increment(ack.accepted);
            self.metrics.events_late.increment(late);
        }
        Ok(Ingested::Applied(ack))
    }

    /// Advances the watermark to `time` (ignored when lower); answers the watermark after it.
    pub async fn advance_watermark(&self, time: i64) -> Result<Option<i64>, EngineError> {
        let (watermark, done) =
            self.sequence_marks(|seq| (seq.advance(time), None, Record::Watermark { time }))?;
        done.await.map_err(|_| self.failed_or_stopped())?;
        Ok(watermark)
    }

    /// A processing-time tick at `now`: fires processing-time timers and, in processing time,
    /// moves the watermark to the clock.
    pub async fn tick(&self, now: i64) -> Result<(), EngineError> {
        self.tick_at(Arrival::At(now)).await
    }

    /// A tick at the clock, read when the tick is ordered with the batches around it.
    pub async fn tick_now(&self) -> Result<(), EngineError> {
        self.tick_at(Arrival::Now).await
    }

    async fn tick_at(&self, at: Arrival) -> Result<(), EngineError> {
        let (_, done) = self.sequence_marks(|seq| {
            let now = seq.arrival(at, now_ms);
            (seq.tick(now), Some(now), Record::Tick { now })
        })?;
        done.await.map_err(|_| self.failed_or_stopped()).map(|_| ())
    }

    /// Applies one logged record again (recovery), without logging it anew.
    pub async fn replay(&self, record: Record) -> Result<(), EngineError> {
        match record {
            Record::Events {
                arrival,
                format,
                idempotency_key,
                first_offset,
                body,
            } => {
                // Offsets skipped before the record (a restore's or repair's floor) stay skipped.
                self.raise_next_offset(first_offset);
                let format = if format == 1 {
                    BodyFormat::NdJson
                } else {
                    BodyFormat::Json
                };
                let events = parse_batch(&body, format, &self.extractor).map_err(|e| {
                    EngineError::Replay {
                        pipeline: self.name.clone(),
                        detail: e.to_string(),
                    }
                })?;
                let submission = Submission {
                    events,
                    arrival: Arrival::At(arrival),
                    idempotency_key,
                    body: None,
                };
                self.submit_counted(submission, false).await.map(|_| ())
            }
            Record::Watermark { time } => self.advance_watermark(time).await.map(|_| ()),
            Record::Tick { now } => self.tick(now).await,
        }
    }

    fn sequence_events(&self, submission: Submission) -> Result<Sequenced, EngineError> {
        let Submission {
            events,
            arrival,
            idempotency_key,
            body,
        } = submission;
        let mut locked = self.sequencer.lock().expect("sequencer lock");
        let Locked { seq, idempotency } = &mut *locked;
        if let Some(key) = &idempotency_key
            && idempotency.get(key).is_some()
        {
            return Ok(Sequenced::Repeated(key.clone()));
        }
        let arrival = seq.arrival(arrival, now_ms);
        let keys: usize = self.keys.iter().map(|k| k.load(Ordering::Relaxed)).sum();
        if keys >= self.max_keys {
            return Err(EngineError::KeyLimit {
                pipeline: self.name.clone(),
                keys,
            });
        }
        let ParsedBatch { times, mut items } = events;
        debug_assert_eq!(items.len(), self.shards.len(), "parsed for this pipeline");
        let mut decision = seq.decide(&times, arrival, |_, _| {});
        if self.processing_time {
            for item in items.iter_mut().flatten() {
                item.time = arrival;
            }
        }
        let ack = decision.ack;
        let record = body.map(|(body, format)| Record::Events {
            arrival,
            format: u8::from(format == BodyFormat::NdJson),
            idempotency_key: idempotency_key.clone(),
            first_offset: ack.first_offset,
            body,
        });
        let marks = std::mem::take(&mut decision.marks);
        let (batch, done) = self.dispatch(seq, items, marks, None, None, record)?;
        seq.commit(&decision);
        if let Some(key) = idempotency_key {
            idempotency.insert(IdempotencyEntry {
                key,
                ack,
                created: arrival,
                batch: Some(batch),
            });
        }
        Ok(Sequenced::New(ack, decision.late, done))
    }

    /// Sequences a watermark advance or tick: `decide` answers, under the lock, the watermark
    /// it moves to (if it moves), the clock it carries and its record.
    fn sequence_marks(
        &self,
        decide: impl FnOnce(&mut Sequencer) -> (Option<i64>, Option<i64>, Record),
    ) -> Result<(Option<i64>, oneshot::Receiver<u64>), EngineError> {
        let mut locked = self.sequencer.lock().expect("sequencer lock");
        let seq = &mut locked.seq;
        let (moved, clock, record) = decide(seq);
        let marks: Vec<Mark> = moved
            .map(|watermark| Mark { step: 0, watermark })
            .into_iter()
            .collect();
        let items = self.shards.iter().map(|_| Vec::new()).collect();
        let (_, done) = self.dispatch(seq, items, marks, clock, None, Some(record))?;
        seq.moved(moved);
        Ok((seq.counters.watermark, done))
    }

    /// Reserves a mailbox slot on each shard that needs the batch (all of them when the
    /// watermark or clock moves, or at a barrier) or fails with nothing done; then logs the
    /// record and hands the shards their parts once it is durable.
    fn dispatch(
        &self,
        seq: &mut Sequencer,
        items: Vec<Vec<Item>>,
        marks: Vec<Mark>,
        clock: Option<i64>,
        checkpoint: Option<Vec<oneshot::Sender<Vec<StateRow>>>>,
        record: Option<Record>,
    ) -> Result<(u64, oneshot::Receiver<u64>), EngineError> {
        if let Some(reason) = self.failure.get() {
            return Err(EngineError::Failed {
                pipeline: self.name.clone(),
                reason: reason.clone(),
            });
        }
        let broadcast = !marks.is_empty() || clock.is_some() || checkpoint.is_some();
        let mut permits = Vec::new();
        for (shard, part) in items.into_iter().enumerate() {
            if broadcast || !part.is_empty() {
                let permit =
                    self.shards[shard]
                        .clone()
                        .try_reserve_owned()
                        .map_err(|e| match e {
                            mpsc::error::TrySendError::Full(_) => EngineError::Overloaded {
                                pipeline: self.name.clone(),
                            },
                            mpsc::error::TrySendError::Closed(_) => self.stopped(),
                        })?;
                permits.push((permit, part));
            }
        }
        let batch = seq.take_batch();
        // A batch no shard needs (every event filtered out, the watermark unmoved) still
        // waits for its record to be durable: the WAL's after-action completes it.
        let unsent = permits.is_empty();
        let done = self.output.register(batch, permits.len().max(1));
        let marks: Arc<[Mark]> = marks.into();
        let mut replies = checkpoint.map(Vec::into_iter);
        let (output, failure) = (self.output.clone(), self.failure.clone());
        let send = move |durable: Result<(), crate::wal::WalFailed>| match durable {
            Ok(()) => {
                if unsent {
                    output.complete(batch, Vec::new());
                }
                for (permit, items) in permits {
                    let checkpoint = replies.as_mut().and_then(Iterator::next);
                    permit.send(Command::Batch(ShardBatch {
                        seq: batch,
                        items,
                        marks: marks.clone(),
                        clock,
                        checkpoint,
                    }));
                }
            }
            Err(failed) => {
                let _ = failure.set(failed.to_string());
                output.fail();
            }
        };
        match (self.wal.get(), record) {
            (Some(wal), Some(record)) => {
                wal.append(&record, Box::new(send));
            }
            (Some(wal), None) => wal.after_queued(Box::new(send)),
            (None, _) => send(Ok(())),
        }
        Ok((batch, done))
    }

    /// A checkpoint barrier: the counters, WAL position and output offset at this point of
    /// the order, and every change since the previous barrier. Ingest goes on meanwhile.
    pub async fn barrier(&self) -> Result<Barrier, EngineError> {
        let (counters, wal_lsn, idempotency, done, replies) = {
            let mut locked = self.sequencer.lock().expect("sequencer lock");
            let (senders, replies): (Vec<_>, Vec<_>) =
                self.shards.iter().map(|_| oneshot::channel()).unzip();
            let items = self.shards.iter().map(|_| Vec::new()).collect();
            let (_, done) = self.dispatch(
                &mut locked.seq,
                items,
                Vec::new(),
                None,
                Some(senders),
                None,
            )?;
            let wal_lsn = self.wal.get().map_or(0, Wal::last_lsn);
            (
                locked.seq.counters,
                wal_lsn,
                locked.idempotency.take_unsaved(),
                done,
                replies,
            )
        };
        let output_offset = done.await.map_err(|_| self.failed_or_stopped())?;
        let mut rows = Vec::new();
        for reply in replies {
            rows.extend(reply.await.map_err(|_| self.failed_or_stopped())?);
        }
        Ok(Barrier {
            counters,
            wal_lsn,
            output_offset,
            rows,
            idempotency,
        })
    }

    /// Hands a failed checkpoint's changes back: they go into the next one.
    pub async fn unbarrier(&self, barrier: Barrier) -> Result<(), EngineError> {
        self.sequencer
            .lock()
            .expect("sequencer lock")
            .idempotency
            .unsave(&barrier.idempotency);
        let mut per_shard: Vec<Vec<(u16, Key)>> = self.shards.iter().map(|_| Vec::new()).collect();
        for row in barrier.rows {
            per_shard[shard_of(u32::from(row.key_group), self.shards.len())]
                .push((row.operator, row.key));
        }
        for (shard, keys) in per_shard.into_iter().enumerate() {
            self.send(shard, Command::Remark { keys }).await?;
        }
        Ok(())
    }

    /// Starts the pipeline from a checkpoint. Call before any other batch.
    pub async fn restore(&self, snapshot: Snapshot) -> Result<(), EngineError> {
        let watermark = snapshot.counters.watermark;
        let mut per_shard: Vec<Vec<StateRow>> = self.shards.iter().map(|_| Vec::new()).collect();
        for row in snapshot.rows {
            per_shard[shard_of(u32::from(row.key_group), self.shards.len())].push(row);
        }
        for (shard, rows) in per_shard.into_iter().enumerate() {
            let (reply, answer) = oneshot::channel();
            self.send(
                shard,
                Command::Restore {
                    rows,
                    watermark,
                    reply,
                },
            )
            .await?;
            answer
                .await
                .map_err(|_| self.stopped())?
                .map_err(|detail| EngineError::Replay {
                    pipeline: self.name.clone(),
                    detail,
                })?;
        }
        self.output
            .restore(snapshot.output, snapshot.next_output_offset.max(1));
        let mut locked = self.sequencer.lock().expect("sequencer lock");
        locked.seq.counters = snapshot.counters;
        for entry in snapshot.idempotency {
            locked.idempotency.restore(entry);
        }
        Ok(())
    }

    /// Stops accepting (the pipeline is closed) and waits until everything sequenced before
    /// is durable and applied; answers the counters then.
    pub async fn quiesce(&self) -> Counters {
        let (counters, last) = {
            let locked = self.sequencer.lock().expect("sequencer lock");
            self.closed.cancel();
            (locked.seq.counters, locked.seq.next_batch)
        };
        if last > 0 {
            self.output.wait_flushed(last - 1).await;
        }
        counters
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.sequencer.lock().expect("sequencer lock").seq.counters
    }

    /// Raises the next event offset to at least `offset` (offsets are never reused).
    pub fn raise_next_offset(&self, offset: u64) {
        let mut locked = self.sequencer.lock().expect("sequencer lock");
        locked.seq.raise_next_offset(offset);
    }

    /// The state of `key` in `operator`, or `None` when the key has none.
    pub async fn state(&self, operator: &str, key: &str) -> Result<Option<Value>, EngineError> {
        let operator = self.operator_index(operator)?;
        let shard = shard_of(key_group(key), self.shards.len());
        let (reply, answer) = oneshot::channel();
        self.send(
            shard,
            Command::Get {
                operator,
                key: key.into(),
                reply,
            },
        )
        .await?;
        answer.await.map_err(|_| self.stopped())
    }

    /// Up to `limit` keys of `operator` after `after` starting with `prefix`, in byte order,
    /// and whether more follow.
    pub async fn list_state(
        &self,
        operator: &str,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<(Key, Value)>, bool), EngineError> {
        let operator = self.operator_index(operator)?;
        let mut answers = Vec::new();
        for shard in 0..self.shards.len() {
            let (reply, answer) = oneshot::channel();
            let command = Command::List {
                operator,
                after: after.map(str::to_owned),
                prefix: prefix.to_owned(),
                limit: limit + 1,
                reply,
            };
            self.send(shard, command).await?;
            answers.push(answer);
        }
        let mut items = Vec::new();
        for answer in answers {
            items.extend(answer.await.map_err(|_| self.stopped())?);
        }
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let more = items.len() > limit;
        items.truncate(limit);
        Ok((items, more))
    }

    /// Counters, watermark and keys per operator, reflecting every acknowledged batch.
    pub async fn status(&self) -> Result<Status, EngineError> {
        let seq = self.sequencer.lock().expect("sequencer lock").seq.counters;
        let mut keys = vec![0; self.operators.len()];
        let mut changed_keys = 0;
        for shard in 0..self.shards.len() {
            let (reply, answer) = oneshot::channel();
            self.send(shard, Command::KeyCounts { reply }).await?;
            for (total, (n, changed)) in keys
                .iter_mut()
                .zip(answer.await.map_err(|_| self.stopped())?)
            {
                *total += n;
                changed_keys += changed;
            }
        }
        Ok(Status {
            events: seq.events,
            late_events: seq.late_events,
            watermark: seq.watermark,
            wal_offset: seq.last_offset,
            keys: self.operators.iter().cloned().zip(keys).collect(),
            changed_keys,
        })
    }

    /// Messages waiting in each shard's mailbox.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|s| s.max_capacity() - s.capacity())
            .collect()
    }

    /// Whether `operator` exists.
    pub fn has_operator(&self, operator: &str) -> bool {
        self.operators.iter().any(|o| o == operator)
    }

    fn operator_index(&self, operator: &str) -> Result<usize, EngineError> {
        self.operators
            .iter()
            .position(|o| o == operator)
            .ok_or_else(|| EngineError::UnknownOperator {
                pipeline: self.name.clone(),
                operator: operator.to_owned(),
            })
    }

    async fn send(&self, shard: usize, command: Command) -> Result<(), EngineError> {
        self.shards[shard]
            .send(command)
            .await
            .map_err(|_| self.stopped())
    }

    fn stopped(&self) -> EngineError {
        EngineError::Stopped {
            pipeline: self.name.clone(),
        }
    }

    fn failed_or_stopped(&self) -> EngineError {
        match self.failure.get() {
            Some(reason) => EngineError::Failed {
                pipeline: self.name.clone(),
                reason: reason.clone(),
            },
            None => self.stopped(),
        }
    }
}

enum Sequenced {
    /// The answer, the batch's late events, and the batch's completion.
    New(Ack, u64, oneshot::Receiver<u64>),
    /// The idempotency key was sequenced before.
    Repeated(String),
}
