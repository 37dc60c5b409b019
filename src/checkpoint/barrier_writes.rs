//! Cluster mode, partitions spread: a partition owner's writes at checkpoint barriers, one
//! after the other on a task of their own, so that the owner goes on applying the log while
//! a write runs. A write that does not land (the checkpoint failed or a restore deleted it
//! before the owner read its barrier, or the store refused it) carries its rows to the next
//! barrier's write: a barrier hands over only what changed since the previous one, so the
//! rows of a lost write would otherwise be in no checkpoint at all.

use crate::engine::Barrier;
use crate::state::{Key, StateRow};
use crate::store::{Fence, PartitionWrite, PartitionWritten, Store};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One barrier's changes to write.
pub(super) struct BarrierWrite {
    pub checkpoint: i64,
    /// The barrier record's LSN.
    pub lsn: u64,
    pub generation: u64,
    pub barrier: Barrier,
}

/// Where a partition's barrier writes go.
pub(super) struct Writer {
    pipeline: String,
    partition: u16,
    fence: Fence,
    store: Arc<dyn Store>,
}

impl Writer {
    pub(super) fn new(
        store: Arc<dyn Store>,
        pipeline: &str,
        partition: u16,
        fence: Fence,
    ) -> Writer {
        Writer {
            pipeline: pipeline.to_owned(),
            partition,
            fence,
            store,
        }
    }

    /// Writes each barrier's changes in order until the queue's sender is gone.
    pub(super) async fn run(self, mut queue: mpsc::UnboundedReceiver<BarrierWrite>) {
        let mut carried: Vec<StateRow> = Vec::new();
        while let Some(write) = queue.recv().await {
            let rows = newest(std::mem::take(&mut carried), write.barrier.rows);
            let partition_write = PartitionWrite {
                pipeline: &self.pipeline,
                node: &self.fence.node,
                checkpoint: write.checkpoint,
                partition: self.partition,
                epoch: self.fence.epoch,
                lsn: write.lsn,
                output_position: write.barrier.output_offset,
                generation: write.generation,
                rows: &rows,
            };
            match self.store.write_partition(&partition_write).await {
                Ok(PartitionWritten::Written | PartitionWritten::Already) => {}
                Ok(PartitionWritten::NotInProgress) => carried = rows,
                Err(e) => {
                    tracing::warn!(pipeline = %self.pipeline, partition = self.partition, checkpoint = write.checkpoint, reason = %e, next = "the next barrier writes its changes", "partition not written at the barrier");
                    carried = rows;
                }
            }
        }
    }
}

/// `older` rows with `newer` ones over them: per (operator, key) the newer version.
fn newest(older: Vec<StateRow>, newer: Vec<StateRow>) -> Vec<StateRow> {
    if older.is_empty() {
        return newer;
    }
    let fresh: HashSet<(u16, &Key)> = newer.iter().map(|r| (r.operator, &r.key)).collect();
    let mut rows: Vec<StateRow> = older
        .into_iter()
        .filter(|r| !fresh.contains(&(r.operator, &r.key)))
        .collect();
    rows.extend(newer);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(operator: u16, key: &str, value: &str) -> StateRow {
        StateRow {
            operator,
            key: key.into(),
            key_group: 1,
            last_time: 0,
            value: Some(value.as_bytes().to_vec()),
        }
    }

    #[test]
    fn carried_rows_are_kept_unless_a_newer_barrier_changed_the_same_key() {
        let older = vec![row(0, "a", "1"), row(0, "b", "1"), row(1, "a", "1")];
        let newer = vec![row(0, "a", "2"), row(2, "c", "2")];
        let mut got: Vec<(u16, String, Vec<u8>)> = newest(older, newer)
            .into_iter()
            .map(|r| (r.operator, r.key.to_string(), r.value.unwrap()))
            .collect();
        got.sort();
        let want = [(0, "a", "2"), (0, "b", "1"), (1, "a", "1"), (2, "c", "2")];
        let want: Vec<_> = want
            .iter()
            .map(|(o, k, v)| (*o, k.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, want);
    }
}
