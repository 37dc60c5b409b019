//! Checkpoints: taking them (a barrier in the event order, then ONE store transaction), the
//! periodic and shutdown triggers, restoring one (also of a pipeline that failed to start),
//! recovering a pipeline at start (latest completed checkpoint, then the WAL after it), and
//! `eddy wal repair` (the WAL cut at its damage, the offset floor raised above the cut).
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
use crate::wal::{self, Beyond, Repaired, Wal, WalError, WalOptions};
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
        let name = pipeline.name();
        let id = self.store.begin_checkpoint(name, trigger, now_ms()).await?;
        claim.set(id);
        let barrier = match self.barrier(pipeline).await {
            Ok(barrier) => barrier,
            Err(e) => {
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
                tracing::warn!(pipeline = name, checkpoint = id, error = %e, "checkpoint failed");
                pipeline.unbarrier(barrier).await?;
                if let Err(mark) = self
                    .store
                    .fail_checkpoint(name, id, &e.to_string(), now_ms())
                    .await
                {
                    tracing::warn!(pipeline = name, checkpoint = id, error = %mark, "cannot mark the checkpoint failed");
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
            tracing::warn!(pipeline = pipeline.name(), error = %e, "cannot delete old WAL segments");
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
            tracing::warn!(pipeline = pipeline.name(), error = %e, "cannot prune old checkpoints");
        }
    }

    /// Starts `spec`'s pipeline from its latest completed checkpoint and the WAL after it.
    /// A WAL that fails its check fails the recovery ([`WalError::Corrupt`]) before anything
    /// is loaded; only a torn tail is cut.
    pub async fn recover(&self, spec: PipelineSpec) -> Result<Pipeline, CheckpointError> {
        let name = spec.name.clone();
        self.store.fail_interrupted(&name, now_ms()).await?;
        let floors = self.store.floors(&name).await?;
        let dir = self.wal_dir(&name);
        if let Some(lsn) = floors.discard_after_lsn {
            Wal::truncate_after(&dir, lsn as u64)?;
            self.store.clear_discard(&name).await?;
        }
        let latest = self.latest(&name).await?;
        let from = latest.as_ref().map_or(0, |c| c.wal_lsn as u64);
        let opened = Wal::open(&dir, self.wal_options(), from + 1)?;
        if let Some((segment, at)) = &opened.cut_at {
            let reason = format!(
                "torn tail of {} bytes at byte {at} of {}",
                opened.cut_bytes,
                segment.display()
            );
            tracing::warn!(pipeline = %name, reason = %reason, next = "the pipeline starts without it: an interrupted write was never acknowledged", "WAL torn tail cut");
        }
        let pipeline = Pipeline::from_spec(spec, &self.config.engine);
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
        pipeline.output().raise_next_offset(floors.output as u64);
        let mut replayed = 0;
        for (lsn, record) in opened.records {
            if lsn > from {
                pipeline.replay(record).await?;
                replayed += 1;
            }
        }
        // After the replay: a repair's floor lies above records that are replayed at the
        // offsets they took (each record raises the offset to its own first one).
        pipeline.raise_next_offset(floors.offset as u64);
        pipeline.attach_wal(opened.wal);
        tracing::info!(pipeline = %name, checkpoint = latest.map(|c| c.id), replayed, "pipeline recovered");
        Ok(pipeline)
    }

    fn wal_options(&self) -> WalOptions {
        WalOptions {
            fsync: self.config.wal_fsync,
            segment_bytes: self.config.wal_segment_bytes,
        }
    }

    async fn latest(&self, name: &str) -> Result<Option<CheckpointMeta>, CheckpointError> {
        Ok(self
            .store
            .checkpoints(name)
            .await?
            .into_iter()
            .find(|c| c.status == CheckpointStatus::Completed))
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

    /// Restores checkpoint `id` of a pipeline that failed to start: the damaged part of its
    /// WAL is set aside first (as `eddy wal repair` would: a copy of every cut byte), then the
    /// WAL after the checkpoint is discarded as any restore does, with the offset floor above
    /// every offset a record of the WAL took. Answers the running pipeline and the events
    /// discarded (those that could be counted).
    pub async fn restore_failed(
        &self,
        spec: PipelineSpec,
        id: i64,
    ) -> Result<(Pipeline, u64), CheckpointError> {
        let name = spec.name.clone();
        let _claim = self.claim(&name)?;
        let cp = self
            .store
            .checkpoint(&name, id)
            .await?
            .ok_or(CheckpointError::NotFound { id })?;
        if cp.status != CheckpointStatus::Completed {
            return Err(CheckpointError::NotRestorable {
                id,
                status: cp.status.as_str(),
            });
        }
        let checkpoints = self.store.checkpoints(&name).await?;
        let newest_id = checkpoints.first().map_or(id, |c| c.id);
        let latest = self.latest(&name).await?;
        let covered = latest.as_ref().map_or(0, |c| c.wal_lsn as u64);
        let floors = self.store.floors(&name).await?;
        let dir = self.wal_dir(&name);
        let cut = match wal::repair(&dir, covered, &stamp())? {
            Repaired::Cut(cut) => {
                tracing::warn!(pipeline = %name, reason = %cut.reason, next = "the checkpoint is restored; the cut bytes are kept", copy = %cut.copy.display(), "damaged WAL set aside for a restore");
                cut.beyond
            }
            _ => Vec::new(),
        };
        let left = wal::inspect(&dir, covered)?;
        let lsn = cp.wal_lsn as u64;
        let (before, after): (Vec<_>, Vec<_>) =
            left.records.into_iter().partition(|(l, _)| *l <= lsn);
        let beyond: Vec<Beyond> = after
            .into_iter()
            .map(|(l, r)| Beyond::Record(l, r))
            .chain(cut)
            .collect();
        let loss = wal::loss(&before, &beyond, lsn, cp.next_offset as u64);
        let output = latest.map_or(1, |c| c.output_offset + 1);
        let floors = Floors {
            offset: floors.offset.max(loss.next_offset as i64),
            output: floors.output.max(output),
            checkpoint: newest_id,
            discard_after_lsn: Some(cp.wal_lsn),
        };
        self.store.restore_checkpoint(&name, id, floors).await?;
        Wal::truncate_after(&dir, lsn)?;
        self.store.clear_discard(&name).await?;
        let pipeline = self.recover(spec).await?;
        Ok((pipeline, loss.events))
    }

    /// `eddy wal repair`: cuts the pipeline's WAL at its first damage that recovery needs,
    /// keeping every cut byte, and raises the offset floor above every offset a cut record
    /// took. The server must not be running on the data dir.
    pub async fn repair(&self, name: &str) -> Result<RepairReport, CheckpointError> {
        let floors = self.store.floors(name).await?;
        let dir = self.wal_dir(name);
        if let Some(lsn) = floors.discard_after_lsn {
            // A restore was interrupted: finish its cut first, as recovery would.
            Wal::truncate_after(&dir, lsn as u64)?;
            self.store.clear_discard(name).await?;
        }
        let latest = self.latest(name).await?;
        let covered = latest.as_ref().map_or(0, |c| c.wal_lsn as u64);
        let start = latest.as_ref().map_or(1, |c| c.next_offset as u64);
        let cut = match wal::repair(&dir, covered, &stamp())? {
            Repaired::Whole => return Ok(RepairReport::Whole),
            Repaired::Torn { path, bytes } => return Ok(RepairReport::Torn { path, bytes }),
            Repaired::Cut(cut) => cut,
        };
        let loss = wal::loss(&cut.kept, &cut.beyond, covered, start);
        let floor = loss.next_offset.max(floors.offset as u64);
        self.store.raise_offset_floor(name, floor as i64).await?;
        Ok(RepairReport::Cut {
            cut,
            loss,
            next_offset: floor,
        })
    }
}

/// What `eddy wal repair` did.
#[derive(Debug)]
pub enum RepairReport {
    /// The WAL is whole: nothing to repair.
    Whole,
    /// Only a torn tail, which the server cuts at start by itself.
    Torn { path: PathBuf, bytes: u64 },
    /// The WAL was cut.
    Cut {
        cut: wal::Cut,
        loss: wal::Loss,
        /// The next event offset is at least this.
        next_offset: u64,
    },
}

/// A UTC timestamp for a copy directory's name, e.g. `20261201T231500Z`.
fn stamp() -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| now_ms().to_string())
}
