//! A running pipeline: the sequencer that orders batches, moves the watermark per event and
//! routes (event, operator) pairs to shards, plus the shards and the output log.
//!
//! Invariant: everything that changes state passes the sequencer lock once, in one order (the
//! order the WAL will record); the lock is never held across an `.await`. A batch either
//! reserves a mailbox slot on every shard it needs, or nothing of it is applied.

use super::definition::OperatorDef;
use super::extract::{Event, Extractor};
use super::output::Output;
use super::shard::{Command, Item, Mark, Shard, ShardBatch, is_late};
use super::{EngineConfig, EngineError, key_group, shard_of};
use crate::spec::PipelineSpec;
use crate::state::Key;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the sequencer has decided so far.
#[derive(Clone, Copy, Debug, Default)]
struct Sequencer {
    /// Offset the next event gets.
    next_offset: u64,
    events: u64,
    late_events: u64,
    watermark: Option<i64>,
    next_batch: u64,
}

/// The answer to an accepted batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub accepted: u64,
    pub first_offset: u64,
    pub last_offset: u64,
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
    out_of_orderness: i64,
    processing_time: bool,
    shards: Vec<mpsc::Sender<Command>>,
    sequencer: Mutex<Sequencer>,
    output: Arc<Output>,
    /// Cancelled when the pipeline is deleted: ends its long polls and streams.
    closed: CancellationToken,
}

impl Pipeline {
    /// Starts the pipeline of a validated spec.
    pub fn from_spec(spec: PipelineSpec, config: &EngineConfig) -> Pipeline {
        let defs: Vec<OperatorDef> = spec
            .operators
            .iter()
            .map(super::operators::definition)
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
        );
        let output = Arc::new(Output::new(
            names.iter().map(|n| Arc::from(n.as_str())).collect(),
            config.output_retain,
        ));
        let ttl = spec.state_ttl.map(|t| t.millis());
        let shards = (0..config.shards.max(1))
            .map(|i| {
                let runners = defs
                    .iter()
                    .enumerate()
                    .map(|(index, d)| d.instance(index as u16, ttl))
                    .collect();
                let shard = Shard::new(runners, output.clone());
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
            out_of_orderness: spec
                .time
                .as_ref()
                .map_or(0, |t| t.max_out_of_orderness.millis()),
            processing_time: spec.processing_time(),
            shards,
            sequencer: Mutex::new(Sequencer {
                next_offset: 1,
                ..Sequencer::default()
            }),
            output,
            closed: CancellationToken::new(),
        }
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
    pub async fn ingest(&self, events: Vec<Event>, arrival: i64) -> Result<Ack, EngineError> {
        let (ack, done) = self.sequence_events(events, arrival)?;
        done.await.map_err(|_| self.stopped())?;
        Ok(ack)
    }

    /// Advances the watermark to `time` (ignored when lower); answers the watermark after it.
    pub async fn advance_watermark(&self, time: i64) -> Result<Option<i64>, EngineError> {
        let (watermark, done) =
            self.sequence_marks(|wm| wm.is_none_or(|w| time > w).then_some(time), None)?;
        done.await.map_err(|_| self.stopped())?;
        Ok(watermark)
    }

    /// A processing-time tick at `now`: fires processing-time timers and, in processing time,
    /// moves the watermark to the clock.
    pub async fn tick(&self, now: i64) -> Result<(), EngineError> {
        let processing = self.processing_time;
        let (_, done) = self.sequence_marks(
            |wm| (processing && wm.is_none_or(|w| now > w)).then_some(now),
            Some(now),
        )?;
        done.await.map_err(|_| self.stopped())
    }

    fn sequence_events(
        &self,
        events: Vec<Event>,
        arrival: i64,
    ) -> Result<(Ack, oneshot::Receiver<()>), EngineError> {
        let mut seq = self.sequencer.lock().expect("sequencer lock");
        let count = events.len() as u64;
        let mut items: Vec<Vec<Item>> = self.shards.iter().map(|_| Vec::new()).collect();
        let mut marks = Vec::new();
        let mut watermark = seq.watermark;
        let mut late = 0;
        for (step, event) in events.into_iter().enumerate() {
            let step = step as u32;
            let time = event.time.unwrap_or(arrival);
            late += u64::from(is_late(time, watermark));
            for (operator, input) in event.inputs.into_iter().enumerate() {
                if let Some(input) = input {
                    let shard = shard_of(key_group(&input.key), self.shards.len());
                    items[shard].push(Item {
                        step,
                        operator: operator as u16,
                        time,
                        input,
                    });
                }
            }
            let candidate = time.saturating_sub(self.out_of_orderness);
            if watermark.is_none_or(|w| candidate > w) {
                watermark = Some(candidate);
                marks.push(Mark {
                    step,
                    watermark: candidate,
                });
            }
        }
        let done = self.dispatch(&mut seq, items, marks, None)?;
        let ack = Ack {
            accepted: count,
            first_offset: seq.next_offset,
            last_offset: seq.next_offset + count - 1,
        };
        seq.next_offset += count;
        seq.events += count;
        seq.late_events += late;
        seq.watermark = watermark;
        Ok((ack, done))
    }

    fn sequence_marks(
        &self,
        next: impl FnOnce(Option<i64>) -> Option<i64>,
        clock: Option<i64>,
    ) -> Result<(Option<i64>, oneshot::Receiver<()>), EngineError> {
        let mut seq = self.sequencer.lock().expect("sequencer lock");
        let moved = next(seq.watermark);
        let marks: Vec<Mark> = moved
            .map(|watermark| Mark { step: 0, watermark })
            .into_iter()
            .collect();
        let items = self.shards.iter().map(|_| Vec::new()).collect();
        let done = self.dispatch(&mut seq, items, marks, clock)?;
        if moved.is_some() {
            seq.watermark = moved;
        }
        Ok((seq.watermark, done))
    }

    /// Sends each shard its part (all shards when the watermark or clock moves), or nothing
    /// when any needed mailbox is full.
    fn dispatch(
        &self,
        seq: &mut Sequencer,
        items: Vec<Vec<Item>>,
        marks: Vec<Mark>,
        clock: Option<i64>,
    ) -> Result<oneshot::Receiver<()>, EngineError> {
        let broadcast = !marks.is_empty() || clock.is_some();
        let mut permits = Vec::new();
        for (shard, part) in items.into_iter().enumerate() {
            if broadcast || !part.is_empty() {
                let permit = self.shards[shard].try_reserve().map_err(|e| match e {
                    mpsc::error::TrySendError::Full(()) => EngineError::Overloaded {
                        pipeline: self.name.clone(),
                    },
                    mpsc::error::TrySendError::Closed(()) => self.stopped(),
                })?;
                permits.push((permit, part));
            }
        }
        let batch = seq.next_batch;
        seq.next_batch += 1;
        let done = self.output.register(batch, permits.len());
        let marks: Arc<[Mark]> = marks.into();
        for (permit, items) in permits {
            permit.send(Command::Batch(ShardBatch {
                seq: batch,
                items,
                marks: marks.clone(),
                clock,
            }));
        }
        Ok(done)
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
        let seq = *self.sequencer.lock().expect("sequencer lock");
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
            wal_offset: (seq.next_offset > 1).then(|| seq.next_offset - 1),
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
}
