//! Recovering a pipeline at start (or, in cluster mode, when this instance takes its lease):
//! checkpoints a crash interrupted marked failed, an unfinished restore's log cut finished,
//! the latest completed checkpoint loaded, then the log after it reapplied: the local WAL, or
//! the pipeline's JetStream stream. A log that fails its check fails the recovery.

use super::{CheckpointError, Checkpointer, stored};
use crate::clock::now_ms;
use crate::engine::{Counters, OutputRecord, Pipeline, Snapshot};
use crate::log::Log;
use crate::spec::PipelineSpec;
use crate::store::{CheckpointRecord, Fence, RowSink};
use crate::wal::{Record, Wal};

impl Checkpointer {
    /// Starts `spec`'s pipeline from its latest completed checkpoint and the WAL after it.
    /// A WAL that fails its check fails the recovery ([`WalError::Corrupt`]) before anything
    /// is restored; only a torn tail is cut.
    ///
    /// In cluster mode `fence` is the lease just taken: the stream is fenced with it (see
    /// `log::stream`) and the pipeline's checkpoints are written under it.
    pub async fn recover(
        &self,
        spec: PipelineSpec,
        fence: Option<Fence>,
    ) -> Result<Pipeline, CheckpointError> {
        let name = spec.name.clone();
        let started = std::time::Instant::now();
        self.store.fail_interrupted(&name, now_ms()).await?;
        let floors = self.store.floors(&name).await?;
        let latest = self.latest(&name).await?;
        if let Some(at) = latest.as_ref().and_then(|c| c.completed_at) {
            crate::metrics::checkpoint_last_completed(&name, at);
        }
        let from = latest.as_ref().map_or(0, |c| c.progress.wal_lsn as u64);
        let pipeline = Pipeline::from_spec(spec, &self.config.engine);
        // The log is read while the checkpoint loads: both are only read until the restore.
        let open_log = async {
            match (&self.streams, &fence) {
                (Some(streams), Some(fence)) => {
                    let discard = floors.discard_after_lsn.is_some();
                    let opened = streams.open(&name, from + 1, fence, discard).await?;
                    if discard {
                        self.store.clear_discard(&name).await?;
                    }
                    Ok::<_, CheckpointError>((Box::new(opened.log) as Box<dyn Log>, opened.records))
                }
                _ => self.open_wal(&name, floors.discard_after_lsn, from).await,
            }
        };
        // The checkpoint's state rows are restored by the shards as they are read.
        let (sink, mut chunks) = tokio::sync::mpsc::unbounded_channel();
        let load = async {
            match &latest {
                Some(cp) => self.snapshot(&pipeline, cp, sink).await,
                None => Ok(Snapshot {
                    counters: Counters {
                        next_offset: 1,
                        ..Counters::default()
                    },
                    next_output_offset: 1,
                    ..Snapshot::default()
                }),
            }
        };
        let watermark = latest
            .as_ref()
            .and_then(|cp| stored::counters(&cp.progress).watermark);
        let restore_rows = async {
            let mut restoring = pipeline.restoring(watermark);
            while let Some(rows) = chunks.recv().await {
                restoring.rows(rows).await?;
            }
            Ok::<_, CheckpointError>(restoring)
        };
        let ((log, records), snapshot, restoring) = tokio::try_join!(open_log, load, restore_rows)?;
        let read_ms = started.elapsed().as_millis() as u64;
        restoring.finish(snapshot).await?;
        pipeline.output().raise_next_offset(floors.output as u64);
        let mut replayed = 0;
        for (lsn, record) in records {
            if lsn > from {
                pipeline.reapply(record).await?;
                replayed += 1;
            }
        }
        // After the replay: a repair's floor lies above records that are replayed at the
        // offsets they took (each record raises the offset to its own first one).
        pipeline.raise_next_offset(floors.offset as u64);
        pipeline.attach_log(log);
        if let Some(fence) = fence {
            self.start_sink(&pipeline, fence.epoch).await?;
            pipeline.set_fence(fence);
        }
        tracing::info!(
            pipeline = %name,
            checkpoint = latest.map(|c| c.id),
            replayed,
            read_ms,
            took_ms = started.elapsed().as_millis() as u64,
            "pipeline recovered"
        );
        Ok(pipeline)
    }

    /// Opens the local WAL after finishing an unfinished restore's cut: the log and its
    /// records.
    async fn open_wal(
        &self,
        name: &str,
        discard_after: Option<i64>,
        from: u64,
    ) -> Result<(Box<dyn Log>, Vec<(u64, Record)>), CheckpointError> {
        let dir = self.wal_dir(name);
        if let Some(lsn) = discard_after {
            Wal::truncate_after(&dir, lsn as u64)?;
            self.store.clear_discard(name).await?;
        }
        let opened = Wal::open(&dir, self.wal_options(), from + 1)?;
        if let Some((segment, at)) = &opened.cut_at {
            let reason = format!(
                "torn tail of {} bytes at byte {at} of {}",
                opened.cut_bytes,
                segment.display()
            );
            tracing::warn!(pipeline = %name, reason = %reason, next = "the pipeline starts without it: an interrupted write was never acknowledged", "WAL torn tail cut");
        }
        Ok((Box::new(opened.wal), opened.records))
    }

    /// Everything of checkpoint `cp` but its state rows, which go to `rows` as they are read.
    async fn snapshot(
        &self,
        pipeline: &Pipeline,
        cp: &CheckpointRecord,
        rows: RowSink,
    ) -> Result<Snapshot, CheckpointError> {
        let loaded = self
            .store
            .load_checkpoint(
                pipeline.name(),
                cp.id,
                self.config.engine.output_retain as i64,
                rows,
            )
            .await?;
        let output = loaded
            .outputs
            .iter()
            .filter_map(|row| OutputRecord::from_json(&row.record, pipeline.operators()))
            .collect();
        Ok(Snapshot {
            counters: stored::counters(&cp.progress),
            rows: Vec::new(),
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
