//! Recovering a pipeline at start (or, in cluster mode, when this instance takes its lease):
//! checkpoints a crash interrupted marked failed, an unfinished restore's log cut finished,
//! the latest completed checkpoint loaded, then the log after it reapplied: the local WAL, or
//! the pipeline's JetStream stream. A log that fails its check fails the recovery.

use super::{CheckpointError, Checkpointer, stored};
use crate::clock::now_ms;
use crate::engine::{Counters, OutputRecord, Pipeline, Snapshot};
use crate::log::Log;
use crate::spec::{KEY_GROUPS, KeyGroups, PipelineSpec};
use crate::store::{CheckpointRecord, Fence, RowSink};
use crate::wal::{Record, Wal};
use std::ops::RangeInclusive;

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
        // Cluster mode with partitions spread: the leader only sequences; the partitions'
        // owners apply (`follow`).
        let spread = fence.is_some() && spec.partitions > 1;
        let owned = if spread {
            KeyGroups::NONE
        } else {
            KeyGroups::ALL
        };
        let pipeline = Pipeline::from_spec_owning(spec, &self.config.engine, owned);
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
                Some(cp) => {
                    let parts = match spread {
                        true => 0,
                        false => self.config.engine.shards.min(MAX_LOAD_PARTS),
                    };
                    let (snapshot, ()) = tokio::try_join!(
                        self.snapshot(&pipeline, cp),
                        self.load_state(&name, cp.id, parts, sink),
                    )?;
                    Ok(snapshot)
                }
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
        let after = records.into_iter().filter(|(lsn, _)| *lsn > from);
        let replayed = pipeline
            .reapply_all(after.map(|(_, record)| record))
            .await?;
        // After the replay: a repair's floor lies above records that are replayed at the
        // offsets they took (each record raises the offset to its own first one).
        pipeline.raise_next_offset(floors.offset as u64);
        pipeline.attach_log(log);
        if let Some(fence) = fence {
            // Spread partitions publish their own output records.
            if !spread {
                self.start_sink(&pipeline, fence.epoch).await?;
            }
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

    /// The state of checkpoint `id` to `rows` (none when `parts` is 0): read in `parts` loads of disjoint key-group
    /// ranges side by side (each decodes on its own task), so that every shard is fed from
    /// the start. One load of every key group would feed the shards one after the other: the
    /// store returns chunks in key-group order, and shards own contiguous key groups.
    async fn load_state(
        &self,
        name: &str,
        id: i64,
        parts: usize,
        rows: RowSink,
    ) -> Result<(), CheckpointError> {
        let mut loads = tokio::task::JoinSet::new();
        // No part: nothing of the state is applied here (a leader of spread partitions).
        let parts = if parts == 0 {
            Vec::new()
        } else {
            load_parts(parts)
        };
        for key_groups in parts {
            let (store, name, rows) = (self.store.clone(), name.to_owned(), rows.clone());
            loads.spawn(async move { store.load_state(&name, id, key_groups, rows).await });
        }
        drop(rows);
        while let Some(done) = loads.join_next().await {
            done.expect("a state load panicked")?;
        }
        Ok(())
    }

    /// Everything of checkpoint `cp` but its state rows.
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

/// Most state loads of one recovery side by side (each holds a database connection).
const MAX_LOAD_PARTS: usize = 4;

/// `parts` (at least one) key-group ranges that together hold every key group once, as even
/// as the key groups allow. The first starts at `i32::MIN` and the last ends at `i32::MAX`: a chunk
/// filed under a key group no key has is read too, and fails the load as damaged.
fn load_parts(parts: usize) -> Vec<RangeInclusive<i32>> {
    let parts = parts.max(1);
    let first = |part: usize| (part * KEY_GROUPS as usize).div_ceil(parts) as i32;
    (0..parts)
        .map(|part| {
            let start = if part == 0 { i32::MIN } else { first(part) };
            let end = if part + 1 == parts {
                i32::MAX
            } else {
                first(part + 1) - 1
            };
            start..=end
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::shard_of;

    #[test]
    fn load_parts_hold_every_key_group_once_and_follow_the_shards() {
        for parts in 1..=9 {
            let ranges = load_parts(parts);
            assert_eq!(ranges.len(), parts);
            assert_eq!(*ranges[0].start(), i32::MIN);
            assert_eq!(*ranges[parts - 1].end(), i32::MAX);
            for pair in ranges.windows(2) {
                assert_eq!(*pair[0].end() + 1, *pair[1].start(), "{ranges:?}");
            }
            for group in 0..KEY_GROUPS {
                let part = ranges
                    .iter()
                    .position(|r| r.contains(&(group as i32)))
                    .unwrap();
                // With as many parts as shards, a part feeds exactly one shard.
                assert_eq!(part, shard_of(group, parts), "key group {group} of {parts}");
            }
        }
    }
}
