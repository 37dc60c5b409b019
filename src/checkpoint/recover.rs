//! Recovering a pipeline at start: checkpoints a crash interrupted marked failed, an
//! unfinished restore's WAL cut finished, the latest completed checkpoint loaded, then the
//! WAL after it reapplied. A WAL that fails its check fails the recovery.

use super::{CheckpointError, Checkpointer, stored};
use crate::clock::now_ms;
use crate::engine::{Counters, OutputRecord, Pipeline, Snapshot};
use crate::spec::PipelineSpec;
use crate::store::CheckpointRecord;
use crate::wal::Wal;

impl Checkpointer {
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
        if let Some(at) = latest.as_ref().and_then(|c| c.completed_at) {
            crate::metrics::checkpoint_last_completed(&name, at);
        }
        let from = latest.as_ref().map_or(0, |c| c.progress.wal_lsn as u64);
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
                pipeline.reapply(record).await?;
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

    async fn snapshot(
        &self,
        pipeline: &Pipeline,
        cp: &CheckpointRecord,
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
            .filter_map(|row| OutputRecord::from_json(&row.record, pipeline.operators()))
            .collect();
        Ok(Snapshot {
            counters: stored::counters(&cp.progress),
            rows: loaded.rows,
            output,
            next_output_offset: cp.progress.output_offset as u64 + 1,
            idempotency: loaded
                .idempotency
                .into_iter()
                .map(stored::idempotency_entry)
                .collect(),
        })
    }
}
