//! Taking a checkpoint: the slot, the barrier in the event order, ONE store transaction with
//! what changed since the previous one, then the WAL trimmed. It is answered then; old
//! checkpoints are pruned after the answer, still holding the slot (as Flink discards
//! subsumed checkpoints asynchronously). A failure goes to [`Checkpointer::failed`] before
//! it is answered.

use super::claim::{Claim, Holder};
use super::{CheckpointError, Checkpointer, stored};
use crate::clock::now_ms;
use crate::engine::{Barrier, EngineError, Pipeline};
use crate::log::stream::Streams;
use crate::store::{
    CheckpointRecord, CheckpointStatus, CheckpointWrite, PartitionsWritten, Store, Trigger,
};
use std::sync::Arc;
use std::time::Duration;

/// How long a checkpoint of a pipeline whose partitions are spread waits for every
/// partition's owner to write its state.
const PARTITION_WAIT: Duration = Duration::from_secs(30);

/// Cluster mode: the number of partitions of a pipeline led here whose partitions are
/// spread over instances (their owners write their state), `None` otherwise.
fn spread_partitions(pipeline: &Pipeline) -> Option<u16> {
    let spec = pipeline.spec()?;
    (pipeline.fence().is_some() && spec.partitions > 1).then_some(spec.partitions)
}

impl Checkpointer {
    /// Takes a checkpoint of `pipeline` and waits for it. A failure is recorded (see
    /// [`Checkpointer::failed`]) before it is answered.
    pub async fn take(
        &self,
        pipeline: &Pipeline,
        trigger: Trigger,
    ) -> Result<CheckpointRecord, CheckpointError> {
        let claim = self.claim(pipeline.name()).await?;
        let name = pipeline.name();
        let started_at = now_ms();
        let started = std::time::Instant::now();
        // A store that cannot take the earlier failures cannot take this one: say so at once
        // rather than wait for it twice.
        let begun = match self.list_pending(name).await {
            Ok(()) => {
                let fence = pipeline.fence();
                self.store
                    .begin_checkpoint(name, trigger, started_at, fence)
                    .await
            }
            Err(e) => Err(e),
        };
        let id = match begun {
            Ok(id) => id,
            Err(e) => return Err(self.failed(name, trigger, None, started_at, e.into()).await),
        };
        claim.set(id);
        match self.write(pipeline, id).await {
            Ok(meta) => {
                self.after_commit(pipeline, &meta, claim).await;
                crate::metrics::checkpoint_completed(crate::metrics::CheckpointDone {
                    pipeline: name,
                    trigger: trigger.as_str(),
                    duration: started.elapsed(),
                    bytes: meta.bytes.max(0) as u64,
                    keys_written: meta.keys_written.max(0) as u64,
                    keys_deleted: meta.keys_deleted.max(0) as u64,
                    completed_at: meta.completed_at.unwrap_or_else(now_ms),
                });
                Ok(meta)
            }
            Err(e) => Err(self.failed(name, trigger, Some(id), started_at, e).await),
        }
    }

    /// The barrier and the one store transaction of checkpoint `id`; on failure the
    /// barrier's changes go back to the shards.
    async fn write(
        &self,
        pipeline: &Pipeline,
        id: i64,
    ) -> Result<CheckpointRecord, CheckpointError> {
        let name = pipeline.name();
        let started = std::time::Instant::now();
        let spread = spread_partitions(pipeline);
        let barrier = self.barrier(pipeline, spread.map(|_| id)).await?;
        let partitions = match spread {
            Some(count) => match self.await_partitions(name, id, count).await {
                Ok(written) => Some(written),
                Err(e) => {
                    let _ = pipeline.unbarrier(barrier).await;
                    return Err(e);
                }
            },
            None => None,
        };
        let barrier_ms = started.elapsed().as_millis() as u64;
        let outputs = pipeline
            .output()
            .range(pipeline.output().persisted() + 1, barrier.output_offset);
        let outputs = stored::output_rows(&outputs);
        let idempotency = stored::idempotency_rows(&barrier.idempotency);
        let write = CheckpointWrite {
            pipeline: name,
            id,
            progress: stored::progress(&barrier),
            rows: &barrier.rows,
            outputs: &outputs,
            idempotency: &idempotency,
            fence: pipeline.fence(),
            partitions,
        };
        match self.store.commit_checkpoint(&write).await {
            Ok(meta) => {
                let committed = started.elapsed();
                pipeline.output().mark_persisted(barrier.output_offset);
                tracing::info!(
                    pipeline = name,
                    checkpoint = id,
                    keys_written = meta.keys_written,
                    duration_ms = meta.completed_at.unwrap_or(0) - meta.started_at,
                    barrier_ms,
                    write_ms = committed.as_millis() as u64 - barrier_ms,
                    "checkpoint completed"
                );
                Ok(meta)
            }
            Err(e) => {
                if let Err(back) = pipeline.unbarrier(barrier).await {
                    // Only a stopped pipeline refuses them, and it takes no more checkpoints.
                    tracing::warn!(pipeline = name, checkpoint = id, error = %back, "changes of a failed checkpoint not handed back");
                }
                Err(e.into())
            }
        }
    }

    /// Waits until each of the `count` partitions has written its state at checkpoint
    /// `id` (their owners do when they read its barrier record); fails naming the ones that
    /// did not within [`PARTITION_WAIT`].
    async fn await_partitions(
        &self,
        name: &str,
        id: i64,
        count: u16,
    ) -> Result<PartitionsWritten, CheckpointError> {
        let deadline = tokio::time::Instant::now() + PARTITION_WAIT;
        loop {
            let written = self.store.partitions_written(name, id).await?;
            if written.partitions >= i64::from(count) {
                return Ok(written);
            }
            if tokio::time::Instant::now() >= deadline {
                let done = self.store.partitions_done(name, id).await?;
                let missing = (0..count).filter(|p| !done.contains(p)).collect();
                return Err(CheckpointError::PartitionsMissing {
                    missing,
                    waited: PARTITION_WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The barrier (logged as checkpoint `logged`'s barrier record when partitions are
    /// spread), retried briefly while shard queues are full.
    async fn barrier(
        &self,
        pipeline: &Pipeline,
        logged: Option<i64>,
    ) -> Result<Barrier, EngineError> {
        let mut tries = 0;
        loop {
            let barrier = match logged {
                Some(id) => pipeline.barrier_logged(id).await,
                None => pipeline.barrier().await,
            };
            match barrier {
                Err(EngineError::Overloaded { .. }) if tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// After checkpoint `meta` committed: the WAL trimmed to what the checkpoints kept
    /// need (local and quick, so before the answer), then, after the answer, the older
    /// checkpoints pruned and compacted in the store (and a spread pipeline's output stream
    /// trimmed), holding the slot as [`Holder::Pruning`] until done: the next checkpoint or
    /// restore, and listings, wait for it.
    async fn after_commit(&self, pipeline: &Pipeline, meta: &CheckpointRecord, claim: Claim) {
        let name = pipeline.name().to_owned();
        let retain = pipeline
            .spec()
            .map_or(5, |s| i64::from(s.retain_checkpoints));
        if let Some(log) = pipeline.log() {
            let wal_lsn = meta.progress.wal_lsn as u64;
            // The checkpoints the prune keeps: the newest `retain` completed ones.
            let oldest = match self.store.checkpoints(&name).await {
                Ok(kept) => kept
                    .iter()
                    .filter(|c| c.status == CheckpointStatus::Completed)
                    .take(retain.max(1) as usize)
                    .map(|c| c.progress.wal_lsn as u64)
                    .min()
                    .unwrap_or(0)
                    .min(wal_lsn),
                Err(_) => 0,
            };
            log.trim(wal_lsn, oldest);
        }
        claim.hold(Holder::Pruning);
        let prune = Prune {
            store: self.store.clone(),
            streams: self
                .streams
                .clone()
                .filter(|_| spread_partitions(pipeline).is_some()),
            retain,
            keep_outputs: self.config.engine.output_retain as i64,
            checkpoint: meta.id,
        };
        tokio::spawn(async move {
            prune.run(&name).await;
            drop(claim);
        });
    }
}

/// What is pruned after a checkpoint.
struct Prune {
    store: Arc<dyn Store>,
    /// The output stream to trim: a spread pipeline's partitions publish their records
    /// themselves, so it keeps the newest `keep_outputs` (at least what the contract keeps).
    streams: Option<Streams>,
    retain: i64,
    keep_outputs: i64,
    /// The checkpoint that made the others old.
    checkpoint: i64,
}

impl Prune {
    async fn run(self, name: &str) {
        let started = std::time::Instant::now();
        let keys_since = now_ms() - crate::engine::KEEP_MS;
        let pruned = self
            .store
            .prune(name, self.retain, self.keep_outputs, keys_since)
            .await;
        match pruned {
            Ok(()) => tracing::debug!(
                pipeline = name,
                checkpoint = self.checkpoint,
                prune_ms = started.elapsed().as_millis() as u64,
                "old checkpoints pruned"
            ),
            Err(e) => {
                tracing::warn!(pipeline = name, reason = %e, next = "the next completed checkpoint prunes them", "cannot prune old checkpoints")
            }
        }
        let Some(streams) = &self.streams else {
            return;
        };
        let trimmed = match streams.outputs(name).await {
            Ok(outputs) => outputs.purge_keep(self.keep_outputs as u64).await,
            Err(e) => Err(e),
        };
        if let Err(e) = trimmed {
            tracing::warn!(pipeline = name, reason = %e, next = "the next completed checkpoint trims it", "cannot trim the output stream");
        }
    }
}
