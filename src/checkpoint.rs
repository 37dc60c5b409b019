//! Checkpoints: taking them (a barrier in the event order, then ONE store transaction), the
//! periodic and shutdown triggers, restoring one, and recovering a pipeline at start (latest
//! completed checkpoint, then the WAL after it).
//!
//! Invariant: at most one checkpoint or restore runs per pipeline at a time; a failed
//! checkpoint hands its changes back to the shards, so the next one still writes them.

use crate::app::now_ms;
use crate::config::Config;
use crate::engine::{Counters, EngineError, OutputRecord, Pipeline, Snapshot};
use crate::spec::PipelineSpec;
use crate::store::{
    CheckpointMeta, CheckpointStatus, CheckpointWrite, Floors, Store, StoreError, Trigger,
};
use crate::wal::{Wal, WalError, WalOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a checkpoint, restore or recovery did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Another checkpoint (or restore) of the pipeline is running.
    #[error("checkpoint {id} is running")]
    Running { id: i64 },
    #[error("checkpoint {id} does not exist")]
    NotFound { id: i64 },
    /// Only a completed checkpoint can be restored.
    #[error("checkpoint {id} is {status} and cannot be restored")]
    NotRestorable { id: i64, status: &'static str },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Wal(#[from] WalError),
}

/// Takes, restores and recovers checkpoints.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    /// Pipeline name → id of its running checkpoint (0 while a restore runs).
    running: Mutex<HashMap<String, i64>>,
}

/// Releases the pipeline's checkpoint slot when dropped.
pub struct Claim<'a> {
    checkpointer: &'a Checkpointer,
    pipeline: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.checkpointer
            .running
            .lock()
            .expect("running lock")
            .remove(&self.pipeline);
    }
}

impl Claim<'_> {
    fn set(&self, id: i64) {
        self.checkpointer
            .running
            .lock()
            .expect("running lock")
            .insert(self.pipeline.clone(), id);
    }
}

impl Checkpointer {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>) -> Checkpointer {
        Checkpointer {
            store,
            config,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves the pipeline's checkpoint slot, or says which checkpoint holds it.
    pub fn claim(&self, pipeline: &str) -> Result<Claim<'_>, CheckpointError> {
        let mut running = self.running.lock().expect("running lock");
        if let Some(id) = running.get(pipeline) {
            return Err(CheckpointError::Running { id: *id });
        }
        running.insert(pipeline.to_owned(), 0);
        Ok(Claim {
            checkpointer: self,
            pipeline: pipeline.to_owned(),
        })
    }

    /// The WAL directory of a pipeline.
    pub fn wal_dir(&self, pipeline: &str) -> PathBuf {
        self.config.data_dir.join("wal").join(pipeline)
    }

    /// Takes a checkpoint of `pipeline` and waits for it.
    pub async fn take(
        &self,
        pipeline: &Pipeline,
        trigger: Trigger,
    ) -> Result<CheckpointMeta, CheckpointError> {
        let claim = self.claim(pipeline.name())?;
        let started = std::time::Instant::now();
        let name = pipeline.name();
        let id = match self.store.begin_checkpoint(name, trigger, now_ms()).await {
            Ok(id) => id,
            Err(e) => {
                crate::metrics::checkpoint_failed(name, trigger.as_str());
                tracing::warn!(pipeline = name, reason = %e, next = "the next checkpoint retries; the WAL is kept until one completes", "checkpoint not started");
                return Err(e.into());
            }
        };
        claim.set(id);
        let barrier = match self.barrier(pipeline).await {
            Ok(barrier) => barrier,
            Err(e) => {
                crate::metrics::checkpoint_failed(name, trigger.as_str());
                tracing::warn!(pipeline = name, reason = %e, next = "the next checkpoint retries; the WAL is kept until one completes", checkpoint = id, "checkpoint failed");
                self.store
                    .fail_checkpoint(name, id, &e.to_string(), now_ms())
                    .await?;
                return Err(e.into());
            }
        };
        let outputs = pipeline
            .output()
            .range(pipeline.output().persisted() + 1, barrier.output_offset);
        let c = barrier.counters;
        let write = CheckpointWrite {
            pipeline: name,
            id,
            completed_at: 0,
            events: c.events as i64,
            late_events: c.late_events as i64,
            watermark: c.watermark,
            next_offset: c.next_offset as i64,
            input_offset: c.last_offset.map(|o| o as i64),
            output_offset: barrier.output_offset as i64,
            wal_lsn: barrier.wal_lsn as i64,
            rows: &barrier.rows,
            outputs: &outputs,
            idempotency: &barrier.idempotency,
        };
        let write = CheckpointWrite {
            completed_at: now_ms(),
            ..write
        };
        match self.store.commit_checkpoint(&write).await {
            Ok(meta) => {
                pipeline.output().mark_persisted(barrier.output_offset);
                self.after_commit(pipeline, barrier.wal_lsn).await;
                crate::metrics::checkpoint_completed(crate::metrics::CheckpointDone {
                    pipeline: name,
                    trigger: trigger.as_str(),
                    duration: started.elapsed(),
                    bytes: meta.bytes.max(0) as u64,
                    keys_written: meta.keys_written.max(0) as u64,
                    keys_deleted: meta.keys_deleted.max(0) as u64,
                    completed_at: meta.completed_at.unwrap_or_else(now_ms),
                });
                tracing::info!(
                    pipeline = name,
                    checkpoint = id,
                    keys_written = meta.keys_written,
                    duration_ms = meta.completed_at.unwrap_or(0) - meta.started_at,
                    "checkpoint completed"
                );
                Ok(meta)
            }
            Err(e) => {
                crate::metrics::checkpoint_failed(name, trigger.as_str());
                tracing::warn!(pipeline = name, reason = %e, next = "its changes go into the next checkpoint; the WAL is kept until one completes", checkpoint = id, "checkpoint failed");
                pipeline.unbarrier(barrier).await?;
                if let Err(mark) = self
                    .store
                    .fail_checkpoint(name, id, &e.to_string(), now_ms())
                    .await
                {
                    tracing::warn!(pipeline = name, reason = %mark, next = "it is marked failed at the next start", checkpoint = id, "cannot mark the checkpoint failed");
                }
                Err(e.into())
            }
        }
    }

    /// The barrier, retried briefly while shard queues are full.
    async fn barrier(&self, pipeline: &Pipeline) -> Result<crate::engine::Barrier, EngineError> {
        let mut tries = 0;
        loop {
            match pipeline.barrier().await {
                Err(EngineError::Overloaded { .. }) if tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn after_commit(&self, pipeline: &Pipeline, wal_lsn: u64) {
        if let Some(wal) = pipeline.wal()
            && let Err(e) = wal.remove_through(wal_lsn)
        {
            tracing::warn!(pipeline = pipeline.name(), reason = %e, next = "the next completed checkpoint deletes them", "cannot delete old WAL segments");
        }
        let retain = pipeline
            .spec()
            .map_or(5, |s| i64::from(s.retain_checkpoints));
        let keep_outputs = self.config.engine.output_retain as i64;
        let keys_since = now_ms() - crate::engine::KEEP_MS;
        if let Err(e) = self
            .store
            .prune(pipeline.name(), retain, keep_outputs, keys_since)
            .await
        {
            tracing::warn!(pipeline = pipeline.name(), reason = %e, next = "the next completed checkpoint prunes them", "cannot prune old checkpoints");
        }
    }

    /// Starts `spec`'s pipeline from its latest completed checkpoint and the WAL after it.
    pub async fn recover(&self, spec: PipelineSpec) -> Result<Pipeline, CheckpointError> {
        let name = spec.name.clone();
        let pipeline = Pipeline::from_spec(spec, &self.config.engine);
        self.store.fail_interrupted(&name, now_ms()).await?;
        let floors = self.store.floors(&name).await?;
        let dir = self.wal_dir(&name);
        if let Some(lsn) = floors.discard_after_lsn {
            Wal::truncate_after(&dir, lsn as u64)?;
            self.store.clear_discard(&name).await?;
        }
        let latest = self
            .store
            .checkpoints(&name)
            .await?
            .into_iter()
            .find(|c| c.status == CheckpointStatus::Completed);
        if let Some(at) = latest.as_ref().and_then(|c| c.completed_at) {
            crate::metrics::checkpoint_last_completed(&name, at);
        }
        let snapshot = match &latest {
            Some(cp) => self.snapshot(&pipeline, cp).await?,
            None => Snapshot {
                counters: Counters {
                    next_offset: 1,
                    ..Counters::default()
                },
                next_output_offset: 1,
                ..Snapshot::default()
            },
        };
        pipeline.restore(snapshot).await?;
        pipeline.raise_next_offset(floors.offset as u64);
        pipeline.output().raise_next_offset(floors.output as u64);
        let from = latest.as_ref().map_or(0, |c| c.wal_lsn as u64);
        let options = WalOptions {
            fsync: self.config.wal_fsync,
            ..WalOptions::default()
        };
        let opened = Wal::open(&dir, options, from + 1)?;
        if opened.cut_bytes > 0 {
            // The WAL logged the warning (with its reason); this says how much went.
            tracing::info!(pipeline = %name, bytes = opened.cut_bytes, "a torn or corrupt WAL tail was cut");
        }
        let mut replayed = 0;
        for (lsn, record) in opened.records {
            if lsn > from {
                pipeline.replay(record).await?;
                replayed += 1;
            }
        }
        pipeline.attach_wal(opened.wal);
        tracing::info!(pipeline = %name, checkpoint = latest.map(|c| c.id), replayed, "pipeline recovered");
        Ok(pipeline)
    }

    async fn snapshot(
        &self,
        pipeline: &Pipeline,
        cp: &CheckpointMeta,
    ) -> Result<Snapshot, CheckpointError> {
        let loaded = self
            .store
            .load_checkpoint(
                pipeline.name(),
                cp.id,
                self.config.engine.output_retain as i64,
            )
            .await?;
        let output = loaded
            .outputs
            .iter()
            .filter_map(|(_, json)| OutputRecord::from_json(json, pipeline.operators()))
            .collect();
        Ok(Snapshot {
            counters: Counters {
                next_offset: cp.next_offset as u64,
                events: cp.events as u64,
                late_events: cp.late_events as u64,
                watermark: cp.watermark,
                last_offset: cp.input_offset.map(|o| o as u64),
            },
            rows: loaded.rows,
            output,
            next_output_offset: cp.output_offset as u64 + 1,
            idempotency: loaded.idempotency,
        })
    }

    /// Makes checkpoint `id` the pipeline's state: later events, outputs and checkpoints are
    /// discarded; offsets and ids are never reused. Answers the new pipeline and how many
    /// events were discarded.
    pub async fn restore(
        &self,
        old: &Pipeline,
        id: i64,
    ) -> Result<(Pipeline, u64), CheckpointError> {
        let _claim = self.claim(old.name())?;
        let name = old.name();
        let cp = self
            .store
            .checkpoint(name, id)
            .await?
            .ok_or(CheckpointError::NotFound { id })?;
        if cp.status != CheckpointStatus::Completed {
            return Err(CheckpointError::NotRestorable {
                id,
                status: cp.status.as_str(),
            });
        }
        let now = old.quiesce().await;
        let newest_id = self
            .store
            .checkpoints(name)
            .await?
            .first()
            .map_or(id, |c| c.id);
        let floors = Floors {
            offset: now.next_offset as i64,
            output: old.output().next_offset() as i64,
            checkpoint: newest_id,
            discard_after_lsn: Some(cp.wal_lsn),
        };
        self.store.restore_checkpoint(name, id, floors).await?;
        Wal::truncate_after(&self.wal_dir(name), cp.wal_lsn as u64)?;
        self.store.clear_discard(name).await?;
        let spec = old.spec().cloned().expect("served pipelines have a spec");
        let pipeline = self.recover(spec).await?;
        Ok((pipeline, now.events.saturating_sub(cp.events as u64)))
    }
}
