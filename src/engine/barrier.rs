//! Checkpoint barriers: a barrier is ordered by the sequencer like a batch and collects, at
//! that point of the order, the counters, WAL position, output offset and every change since
//! the previous barrier; a failed checkpoint hands its changes back; a restore puts a
//! checkpoint in before the first batch; quiesce waits until everything ordered is applied.

use super::EngineError;
use super::idempotency::IdempotencyEntry;
use super::output::OutputRecord;
use super::pipeline::Pipeline;
use super::runner::StateRow;
use super::sequencer::Counters;
use super::shard::Command;
use super::shard_of;
use crate::state::Key;
use crate::wal::Record;
use tokio::sync::oneshot;

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

/// A restore under way: the shards decode the rows handed to them while more are read.
pub struct Restoring<'a> {
    pipeline: &'a Pipeline,
    watermark: Option<i64>,
    answers: Vec<oneshot::Receiver<Result<(), String>>>,
}

impl Restoring<'_> {
    /// Hands `rows` to their shards, which restore them at once, in the background.
    pub async fn rows(&mut self, rows: Vec<StateRow>) -> Result<(), EngineError> {
        self.send(rows, false).await
    }

    /// Sends each shard its part of `rows`; with `every`, also the shards with no part (each
    /// shard takes the checkpoint's watermark from a restore command, rows or not).
    async fn send(&mut self, rows: Vec<StateRow>, every: bool) -> Result<(), EngineError> {
        let pipeline = self.pipeline;
        let shards = pipeline.shards.len();
        let mut per_shard: Vec<Vec<StateRow>> = (0..shards).map(|_| Vec::new()).collect();
        let owned = pipeline.owned();
        for row in rows {
            // A row of a key group owned elsewhere: a load of a wider range than owned.
            if !owned.contains(u32::from(row.key_group)) {
                continue;
            }
            per_shard[shard_of(u32::from(row.key_group), shards)].push(row);
        }
        for (shard, rows) in per_shard.into_iter().enumerate() {
            if rows.is_empty() && !every {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let watermark = self.watermark;
            pipeline
                .send(
                    shard,
                    Command::Restore {
                        rows,
                        watermark,
                        reply,
                    },
                )
                .await?;
            self.answers.push(answer);
        }
        Ok(())
    }

    /// Waits until every row is restored, then puts the rest of `snapshot` in (its rows too,
    /// if it has any).
    pub async fn finish(mut self, mut snapshot: Snapshot) -> Result<(), EngineError> {
        self.send(std::mem::take(&mut snapshot.rows), true).await?;
        let pipeline = self.pipeline;
        for answer in self.answers {
            answer
                .await
                .map_err(|_| pipeline.stopped())?
                .map_err(|detail| EngineError::Reapply {
                    pipeline: pipeline.name.clone(),
                    detail,
                })?;
        }
        pipeline
            .output
            .restore(snapshot.output, snapshot.next_output_offset.max(1));
        let mut locked = pipeline.sequencer.lock().expect("sequencer lock");
        locked.seq.counters = snapshot.counters;
        for entry in snapshot.idempotency {
            locked.idempotency.restore(entry);
        }
        Ok(())
    }
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

impl Pipeline {
    /// A checkpoint barrier: the counters, WAL position and output offset at this point of
    /// the order, and every change since the previous barrier. Ingest goes on meanwhile.
    pub async fn barrier(&self) -> Result<Barrier, EngineError> {
        self.barrier_with(None).await
    }

    /// A barrier logged as [`Record::Barrier`] of checkpoint `checkpoint` (cluster mode,
    /// partitions spread: every owner writes its partition when it reads the record); its
    /// `wal_lsn` is the record's own.
    pub async fn barrier_logged(&self, checkpoint: i64) -> Result<Barrier, EngineError> {
        self.barrier_with(Some(Record::Barrier { checkpoint }))
            .await
    }

    async fn barrier_with(&self, record: Option<Record>) -> Result<Barrier, EngineError> {
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
                record,
            )?;
            let wal_lsn = self.wal.get().map_or(0, |log| log.last_lsn());
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

    /// Logs a mark that changes no state (a restore's, in cluster mode with partitions
    /// spread), in order with the batches around it; returns once it is durable.
    pub async fn log_mark(&self, record: Record) -> Result<(), EngineError> {
        let done = {
            let mut locked = self.sequencer.lock().expect("sequencer lock");
            let items = self.shards.iter().map(|_| Vec::new()).collect();
            let (_, done) =
                self.dispatch(&mut locked.seq, items, Vec::new(), None, None, Some(record))?;
            done
        };
        done.await.map_err(|_| self.failed_or_stopped()).map(|_| ())
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
        self.restoring(snapshot.counters.watermark)
            .finish(snapshot)
            .await
    }

    /// Starts the pipeline from a checkpoint whose state rows arrive in chunks (as they are
    /// read from the store): [`Restoring::rows`] for each, then [`Restoring::finish`]. Every
    /// row is the newest version of its key; `watermark` is the checkpoint's. Call before any
    /// other batch.
    pub fn restoring(&self, watermark: Option<i64>) -> Restoring<'_> {
        Restoring {
            pipeline: self,
            watermark,
            answers: Vec::new(),
        }
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
}
