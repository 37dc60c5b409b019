//! The write path: a batch, watermark post or tick is ordered under the sequencer lock (the
//! decision is `Sequencer`'s), checked against the key limit, framed as a WAL record and
//! dispatched to the shards once that record is durable; WAL records are reapplied at
//! recovery through the same path without being logged again.

use super::EngineError;
use super::idempotency::IdempotencyEntry;
use super::ingest::{BodyFormat, ParsedBatch, parse_batch};
use super::pipeline::{Locked, Pipeline};
use super::runner::StateRow;
use super::sequencer::{Ack, Arrival, Mark, Sequencer};
use super::shard::{Command, Item, ShardBatch};
use crate::clock::now_ms;
use crate::wal::Record;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

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

/// Most reapplied records unfinished at once in a recovery's replay.
const REAPPLY_AHEAD: usize = 16;

impl Pipeline {
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

    /// The first answer of an idempotency key, once its batch is applied. A look-up only:
    /// the check that holds under concurrency is the one `sequence_events` makes under the
    /// lock (the API uses this one to answer a retry without reading its body).
    pub async fn first_answer(&self, key: &str) -> Option<Ack> {
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

    /// `submit`; `live` batches (not a WAL record reapplied) count as accepted once applied.
    async fn submit_counted(
        &self,
        submission: Submission,
        live: bool,
    ) -> Result<Ingested, EngineError> {
        let (ack, late, done) = match self.sequence_events(submission)? {
            Sequenced::Repeated(key) => {
                let ack = self
                    .first_answer(&key)
                    .await
                    .ok_or_else(|| self.stopped())?;
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
        let (watermark, done) = self.sequence_watermark(time)?;
        self.applied(done).await?;
        Ok(watermark)
    }

    fn sequence_watermark(
        &self,
        time: i64,
    ) -> Result<(Option<i64>, oneshot::Receiver<u64>), EngineError> {
        self.sequence_marks(|seq| (seq.advance(time), None, Record::Watermark { time }))
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
        let done = self.sequence_tick(at)?;
        self.applied(done).await
    }

    fn sequence_tick(&self, at: Arrival) -> Result<oneshot::Receiver<u64>, EngineError> {
        let (_, done) = self.sequence_marks(|seq| {
            let now = seq.arrival(at, now_ms);
            (seq.tick(now), Some(now), Record::Tick { now })
        })?;
        Ok(done)
    }

    /// Applies logged records again, in order (recovery), without logging them anew; answers
    /// how many. Each is sequenced while the shards still apply the ones before it (at most
    /// [`REAPPLY_AHEAD`] unfinished, fewer than a shard's mailbox holds), so the parse of one
    /// batch and the shards' work on the others overlap.
    pub async fn reapply_all(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<usize, EngineError> {
        let ahead = self
            .shards
            .iter()
            .map(|shard| shard.max_capacity())
            .fold(REAPPLY_AHEAD, usize::min);
        let mut applying = std::collections::VecDeque::with_capacity(ahead);
        let mut count = 0;
        for record in records {
            if applying.len() == ahead
                && let Some(done) = applying.pop_front()
            {
                self.applied(done).await?;
            }
            applying.extend(self.resequence(record)?);
            count += 1;
        }
        for done in applying {
            self.applied(done).await?;
        }
        Ok(count)
    }

    async fn applied(&self, done: oneshot::Receiver<u64>) -> Result<(), EngineError> {
        done.await.map_err(|_| self.failed_or_stopped()).map(|_| ())
    }

    /// Sequences one logged record again, without logging it: what a partition's owner does
    /// with each record of the pipeline's log. Answers what says when it is applied (with the
    /// newest output offset then), or nothing for a mark (epoch, barrier, restore) or a batch
    /// whose idempotency key an earlier record already carried.
    pub fn reapply(&self, record: Record) -> Result<Option<oneshot::Receiver<u64>>, EngineError> {
        self.resequence(record)
    }

    /// Sequences one logged record again; answers what says when it is applied (nothing for
    /// an epoch mark, or a batch whose idempotency key an earlier record already carried).
    fn resequence(&self, record: Record) -> Result<Option<oneshot::Receiver<u64>>, EngineError> {
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
                    EngineError::Reapply {
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
                Ok(match self.sequence_events(submission)? {
                    Sequenced::Repeated(_) => None,
                    Sequenced::New(_, _, done) => Some(done),
                })
            }
            Record::Watermark { time } => Ok(Some(self.sequence_watermark(time)?.1)),
            Record::Tick { now } => Ok(Some(self.sequence_tick(Arrival::At(now))?)),
            // Marks in the log (a new leader's, a partitioned checkpoint's barrier, a
            // restore's): nothing changes.
            Record::Epoch { .. } | Record::Barrier { .. } | Record::Restore { .. } => Ok(None),
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
    pub(super) fn dispatch(
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
}

enum Sequenced {
    /// The answer, the batch's late events, and the batch's completion.
    New(Ack, u64, oneshot::Receiver<u64>),
    /// The idempotency key was sequenced before.
    Repeated(String),
}
