//! Restoring a checkpoint (also of a pipeline that failed to start: its damaged WAL set
//! aside first) and `eddy wal repair` (the WAL cut at its damage, the offset floor raised
//! above every offset a cut record took). Offsets and ids are never reused.

use super::claim::Holder;
use super::{CheckpointError, Checkpointer, stamp};
use crate::engine::Pipeline;
use crate::spec::PipelineSpec;
use crate::store::{CheckpointRecord, CheckpointStatus, Floors};
use crate::wal::{self, Beyond, Record, Repaired, Wal};
use std::path::PathBuf;

impl Checkpointer {
    /// Makes checkpoint `id` the pipeline's state: later events, outputs and checkpoints are
    /// discarded; offsets and ids are never reused. Answers the new pipeline and how many
    /// events were discarded.
    pub async fn restore(
        &self,
        old: &Pipeline,
        id: i64,
    ) -> Result<(Pipeline, u64), CheckpointError> {
        let claim = self.claim(old.name()).await?;
        claim.hold(Holder::Restore(id));
        let name = old.name();
        let cp = self.restorable(name, id).await?;
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
            discard_after_lsn: Some(cp.progress.wal_lsn),
        };
        self.store.restore_checkpoint(name, id, floors).await?;
        let fence = old.fence().cloned();
        if fence.is_none() {
            Wal::truncate_after(&self.wal_dir(name), cp.progress.wal_lsn as u64)?;
            self.store.clear_discard(name).await?;
        }
        // In cluster mode the recovery cuts the stream (and clears the discard) itself.
        let spec = old.spec().cloned().expect("served pipelines have a spec");
        let spread = fence.is_some() && spec.partitions > 1;
        let pipeline = self.recover(spec, fence).await?;
        if spread {
            // Every partition's owner starts again from the checkpoint when it reads this.
            pipeline
                .log_mark(Record::Restore { checkpoint: id })
                .await?;
        }
        Ok((
            pipeline,
            now.events.saturating_sub(cp.progress.events as u64),
        ))
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
        let claim = self.claim(&name).await?;
        claim.hold(Holder::Restore(id));
        let cp = self.restorable(&name, id).await?;
        let checkpoints = self.store.checkpoints(&name).await?;
        let newest_id = checkpoints.first().map_or(id, |c| c.id);
        let latest = self.latest(&name).await?;
        let covered = latest.as_ref().map_or(0, |c| c.progress.wal_lsn as u64);
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
        let lsn = cp.progress.wal_lsn as u64;
        let (before, after): (Vec<_>, Vec<_>) =
            left.records.into_iter().partition(|(l, _)| *l <= lsn);
        let beyond: Vec<Beyond> = after
            .into_iter()
            .map(|(l, r)| Beyond::Record(l, r))
            .chain(cut)
            .collect();
        let loss = wal::loss(&before, &beyond, lsn, cp.progress.next_offset as u64);
        let output = latest.map_or(1, |c| c.progress.output_offset + 1);
        let floors = Floors {
            offset: floors.offset.max(loss.next_offset as i64),
            output: floors.output.max(output),
            checkpoint: newest_id,
            discard_after_lsn: Some(cp.progress.wal_lsn),
        };
        self.store.restore_checkpoint(&name, id, floors).await?;
        Wal::truncate_after(&dir, lsn)?;
        self.store.clear_discard(&name).await?;
        let pipeline = self.recover(spec, None).await?;
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
        let covered = latest.as_ref().map_or(0, |c| c.progress.wal_lsn as u64);
        let start = latest.as_ref().map_or(1, |c| c.progress.next_offset as u64);
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

impl Checkpointer {
    /// Checkpoint `id`, if it exists and completed: only those can be restored.
    async fn restorable(&self, name: &str, id: i64) -> Result<CheckpointRecord, CheckpointError> {
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
        Ok(cp)
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
