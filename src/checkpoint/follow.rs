//! Cluster mode with partitions spread over instances: one partition of a pipeline, applied
//! here by its owner. The owner starts the partition from the latest completed checkpoint
//! (its key groups' state, the checkpoint's counters, its output position) and then follows
//! the pipeline's log stream from the checkpoint's LSN on, record by record: every record is
//! sequenced again exactly as the leader sequenced it (offsets, watermark and lateness are a
//! function of the log), and only the partition's (event, operator) items are applied.
//!
//! - At a [`Record::Barrier`] the owner hands over its partition's changes since its previous
//!   barrier and writes them as the checkpoint's chunks, in a transaction fenced by its
//!   partition lease (`Store::write_partition`, one write after the other: `barrier_writes`);
//!   the leader completes the checkpoint once every partition has written.
//! - Output records go to the pipeline's output stream on the partition's own subject, each
//!   with its position among the partition's records (dense, a function of the log, restored
//!   from the checkpoint): a new owner starts publishing after the partition's last stored
//!   position, and message ids (`generation:partition:position`) make a record published
//!   twice within the duplicate window stored once. A batch counts as applied only once its
//!   records are in the stream, so "applied through LSN n" means their outputs are readable.
//! - At a [`Record::Restore`] the owner starts again from the restored checkpoint, after
//!   deleting the partition's output records beyond the checkpoint's position that are of
//!   an older generation; its records from then on are of a new generation (the restore
//!   record's LSN), so that no message id of a dropped record is taken for theirs. An owner
//!   that reads the restore record again later (it started from the same checkpoint after a
//!   crash) deletes nothing: the records after the position are then the new generation's.

use super::barrier_writes::{BarrierWrite, Writer};
use super::{CheckpointError, Checkpointer, stored};
use crate::engine::{Barrier, EngineError, Output, Pipeline, Snapshot};
use crate::log::outputs::OutputStream;
use crate::spec::{KeyGroups, PipelineSpec};
use crate::store::{CheckpointRecord, Fence};
use crate::wal::Record;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Records sequenced but not yet applied at once (fewer than a shard's mailbox holds).
const AHEAD: usize = 16;
/// Output records published before their acks are awaited.
const CHUNK: u64 = 1_000;

/// One partition owned here, as the API sees it: the pipeline applying it (once started)
/// and the LSN it has applied through (its output records published).
pub struct Owning {
    pipeline: RwLock<Option<Arc<Pipeline>>>,
    applied: watch::Sender<u64>,
    /// The LSN of the newest record read, and how many the stream held beyond it then.
    read: AtomicU64,
    pending: AtomicU64,
}

impl Default for Owning {
    fn default() -> Self {
        Owning {
            pipeline: RwLock::new(None),
            applied: watch::channel(0).0,
            read: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }
}

impl Owning {
    /// The pipeline applying the partition (`None` while it starts).
    pub fn pipeline(&self) -> Option<Arc<Pipeline>> {
        self.pipeline.read().expect("owning lock").clone()
    }

    /// The LSN the partition has applied through.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Records of the log not applied yet: read and still applying, or still in the stream
    /// when the newest one was read (`None` while the partition starts: its lag is not known
    /// before it follows the log).
    pub fn lag(&self) -> Option<u64> {
        self.pipeline()?;
        let read = self.read.load(Ordering::Relaxed);
        let pending = self.pending.load(Ordering::Relaxed);
        Some(read.saturating_sub(self.applied()) + pending)
    }

    /// The partition's status (its keys), once it has started.
    pub async fn status(&self) -> Option<crate::engine::Status> {
        self.pipeline()?.status().await.ok()
    }

    /// The pipeline once the partition has applied through `lsn` (read-your-writes), or
    /// `None` when it has not within `timeout` (it is still catching up).
    pub async fn caught_up(&self, lsn: u64, timeout: Duration) -> Option<Arc<Pipeline>> {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|a| *a >= lsn)).await;
        match reached {
            Ok(Ok(_)) => self.pipeline(),
            _ => None,
        }
    }

    fn start(&self, pipeline: Arc<Pipeline>, applied: u64) {
        *self.pipeline.write().expect("owning lock") = Some(pipeline);
        self.applied.send_replace(applied);
    }

    fn stop(&self) {
        if let Some(pipeline) = self.pipeline.write().expect("owning lock").take() {
            pipeline.close();
        }
    }
}

/// A record being applied: its LSN, and whether it was (false: the pipeline stopped).
type Applying = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, bool)> + Send>>;

/// How following the log ended.
enum Ended {
    Stopped,
    /// A restore record at this LSN: start again from the restored checkpoint, its records
    /// after the checkpoint deleted first.
    Restored(u64),
}

/// One partition run: what it owns and under which lease.
struct Run<'a> {
    spec: &'a PipelineSpec,
    partition: u16,
    fence: &'a Fence,
    owning: &'a Owning,
    stop: &'a CancellationToken,
}

impl Checkpointer {
    /// Applies partition `partition` of `spec`'s pipeline here, as its owner under `fence`
    /// (its partition lease), until `stop`; `owning` shows it to the API meanwhile. An error
    /// ends it (the caller gives the lease up; a later round starts it again).
    pub async fn own_partition(
        &self,
        spec: PipelineSpec,
        partition: u16,
        fence: Fence,
        owning: Arc<Owning>,
        stop: CancellationToken,
    ) -> Result<(), CheckpointError> {
        let run = Run {
            spec: &spec,
            partition,
            fence: &fence,
            owning: &owning,
            stop: &stop,
        };
        // The newest restore record handled (its LSN): one read again later is not a new one.
        let mut restored = None;
        let ended = loop {
            match self.run_partition(&run, restored).await {
                Ok(Ended::Restored(lsn)) => {
                    owning.stop();
                    restored = Some(lsn);
                }
                Ok(Ended::Stopped) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        owning.stop();
        ended
    }

    /// Starts the partition from the latest completed checkpoint and follows the log.
    /// `restored`: the LSN of the restore record that ended the previous run; the
    /// partition's records beyond the checkpoint are deleted first (the restore dropped them).
    async fn run_partition(
        &self,
        run: &Run<'_>,
        restored: Option<u64>,
    ) -> Result<Ended, CheckpointError> {
        let streams = self
            .streams
            .as_ref()
            .expect("partitions are owned in cluster mode");
        let name = run.spec.name.as_str();
        let latest = self.latest(name).await?;
        let (pipeline, position, generation) = self.start_partition(run, latest.as_ref()).await?;
        let generation = generation.max(restored.unwrap_or(0));
        let pipeline = Arc::new(pipeline);
        let outputs = streams.outputs(name).await?;
        if let (Some(restore), Some(cp)) = (restored, &latest) {
            let deleted = outputs
                .delete_partition_after(run.partition, position, restore, cp.started_at)
                .await?;
            tracing::info!(
                pipeline = name,
                partition = run.partition,
                after = position,
                deleted,
                "output records a restore dropped deleted"
            );
        }
        let published = outputs
            .last_of_partition(run.partition)
            .await?
            .map_or(0, |(_, at)| at);
        let from = latest.as_ref().map_or(1, |c| c.progress.wal_lsn as u64 + 1);
        let follower = streams.follow(name, from).await?;
        let output = pipeline.output_handle();
        output.attach_sink(published.max(position));
        let generation = Arc::new(AtomicU64::new(generation));
        let sink = tokio::spawn(publish(
            outputs,
            output,
            run.partition,
            generation.clone(),
            pipeline.closed(),
        ));
        run.owning.read.store(from - 1, Ordering::Relaxed);
        run.owning
            .pending
            .store(follower.pending(), Ordering::Relaxed);
        run.owning.start(pipeline.clone(), from - 1);
        tracing::info!(
            pipeline = name,
            partition = run.partition,
            epoch = run.fence.epoch,
            checkpoint = latest.as_ref().map(|c| c.id),
            from,
            "partition started"
        );
        let ended = self.follow(run, &pipeline, follower, &generation).await;
        pipeline.close();
        // Its publishes in flight are acked (or given up) before a restore deletes records.
        let _ = sink.await;
        ended
    }

    /// A pipeline applying the partition's key groups, with the state, counters and output
    /// position of checkpoint `cp`; and the generation of its output records.
    async fn start_partition(
        &self,
        run: &Run<'_>,
        cp: Option<&CheckpointRecord>,
    ) -> Result<(Pipeline, u64, u64), CheckpointError> {
        let spec = run.spec;
        let owned = KeyGroups::of_partitions(spec.partitions, [run.partition]);
        let pipeline = Pipeline::from_spec_owning(spec.clone(), &self.config.engine, owned);
        let Some(cp) = cp else {
            return Ok((pipeline, 0, 0));
        };
        let name = spec.name.as_str();
        let (position, generation) = self
            .store
            .output_position(name, cp.id, run.partition)
            .await?;
        let counters = stored::counters(&cp.progress);
        let (sink, mut chunks) = tokio::sync::mpsc::unbounded_channel();
        let load = async {
            let range = partition_range(spec.partitions, run.partition);
            self.store.load_state(name, cp.id, range, sink).await?;
            Ok::<_, CheckpointError>(())
        };
        let restore = async {
            let mut restoring = pipeline.restoring(counters.watermark);
            while let Some(rows) = chunks.recv().await {
                restoring.rows(rows).await?;
            }
            Ok::<_, CheckpointError>(restoring)
        };
        let ((), restoring) = tokio::try_join!(load, restore)?;
        let snapshot = Snapshot {
            counters,
            next_output_offset: position + 1,
            ..Snapshot::default()
        };
        restoring.finish(snapshot).await?;
        Ok((pipeline, position, generation))
    }

    /// Follows the log, applying each record, until stopped or restored.
    async fn follow(
        &self,
        run: &Run<'_>,
        pipeline: &Arc<Pipeline>,
        mut follower: crate::log::follow::Follower,
        generation: &AtomicU64,
    ) -> Result<Ended, CheckpointError> {
        let mut applying: FuturesOrdered<Applying> = FuturesOrdered::new();
        // The barriers' writes, in order, on their own task (it ends once `writes` is gone).
        let (writes, queue) = tokio::sync::mpsc::unbounded_channel();
        let writer = Writer::new(
            self.store.clone(),
            pipeline.name(),
            run.partition,
            run.fence.clone(),
        );
        tokio::spawn(writer.run(queue));
        loop {
            tokio::select! {
                _ = run.stop.cancelled() => return Ok(Ended::Stopped),
                Some((lsn, applied)) = applying.next(), if !applying.is_empty() => {
                    if !applied {
                        return Err(stopped(pipeline).into());
                    }
                    run.owning.applied.send_replace(lsn);
                }
                next = follower.next(), if applying.len() < AHEAD => {
                    let Some((lsn, record)) = next? else {
                        return Err(stopped(pipeline).into());
                    };
                    run.owning.read.store(lsn, Ordering::Relaxed);
                    run.owning.pending.store(follower.pending(), Ordering::Relaxed);
                    let done = match record {
                        // A restore not handled yet (the generation is the newest one's LSN).
                        Record::Restore { checkpoint } if lsn > generation.load(Ordering::Acquire) => {
                            tracing::info!(pipeline = pipeline.name(), partition = run.partition, checkpoint, "restored: the partition starts again");
                            return Ok(Ended::Restored(lsn));
                        }
                        Record::Barrier { checkpoint } => {
                            let barrier = barrier(pipeline).await?;
                            let generation = generation.load(Ordering::Acquire);
                            let write = BarrierWrite { checkpoint, lsn, generation, barrier };
                            let _ = writes.send(write);
                            None
                        }
                        Record::Epoch { .. } | Record::Restore { .. } => None,
                        record => pipeline.reapply(record)?,
                    };
                    applying.push_back(Box::pin(async move {
                        let applied = match done {
                            Some(done) => done.await.is_ok(),
                            None => true,
                        };
                        (lsn, applied)
                    }));
                }
            }
        }
    }
}

/// The key groups of partition `i` as a load reads them: the first partition's range starts
/// at `i32::MIN` and the last one's ends at `i32::MAX`, so a chunk filed under a key group
/// no key has is read too, and fails the load as damaged.
fn partition_range(partitions: u16, i: u16) -> RangeInclusive<i32> {
    let [first, last] = crate::spec::partition_key_groups(partitions, i);
    let start = if i == 0 { i32::MIN } else { first as i32 };
    let end = if i + 1 == partitions {
        i32::MAX
    } else {
        last as i32
    };
    start..=end
}

fn stopped(pipeline: &Pipeline) -> EngineError {
    EngineError::Stopped {
        pipeline: pipeline.name().to_owned(),
    }
}

/// The barrier, retried briefly while shard queues are full.
async fn barrier(pipeline: &Pipeline) -> Result<Barrier, EngineError> {
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

/// Publishes the partition's new output records until the pipeline closes; retries what
/// fails (a record stored twice within the duplicate window is stored once).
async fn publish(
    stream: OutputStream,
    output: Arc<Output>,
    partition: u16,
    generation: Arc<AtomicU64>,
    closed: CancellationToken,
) {
    let mut updates = output.subscribe();
    let mut published = output.published();
    let mut backoff = Duration::from_millis(50);
    loop {
        let newest = output.newest();
        if newest <= published {
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                _ = closed.cancelled() => return,
            }
            continue;
        }
        let upto = newest.min(published + CHUNK);
        let generation = generation.load(Ordering::Acquire);
        match publish_chunk(&stream, &output, partition, generation, published, upto).await {
            Ok(()) => {
                published = upto;
                output.set_published(upto);
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                tracing::warn!(stream = stream.name(), partition, reason = %e, next = "retried", "output records not published");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = closed.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Publishes records `after + 1 ..= upto` and waits for their acks.
async fn publish_chunk(
    stream: &OutputStream,
    output: &Output,
    partition: u16,
    generation: u64,
    after: u64,
    upto: u64,
) -> Result<(), crate::log::stream::StreamError> {
    let mut acks = Vec::with_capacity((upto - after) as usize);
    for record in output.range(after + 1, upto) {
        let json = serde_json::to_vec(&*record).expect("records serialise");
        let payload = Bytes::from(without_offset(json));
        let ack = stream
            .publish_partition(partition, generation, record.offset, payload)
            .await?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await
            .map_err(|e| crate::log::stream::error(stream.name(), "publish", e))?;
    }
    Ok(())
}

/// A record's JSON without its leading `"offset"` member: a partition's record gets its
/// offset from the stream (its sequence), when it is read.
fn without_offset(json: Vec<u8>) -> Vec<u8> {
    const PREFIX: &[u8] = b"{\"offset\":";
    if !json.starts_with(PREFIX) {
        return json;
    }
    match json.iter().position(|&b| b == b',') {
        Some(comma) => {
            let mut out = Vec::with_capacity(json.len() - comma);
            out.push(b'{');
            out.extend_from_slice(&json[comma + 1..]);
            out
        }
        None => json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_record_is_stored_without_its_offset() {
        let json =
            br#"{"offset":12,"operator":"s","key":"a,b","type":"session_closed","value":{}}"#;
        assert_eq!(
            without_offset(json.to_vec()),
            br#"{"operator":"s","key":"a,b","type":"session_closed","value":{}}"#.to_vec()
        );
    }

    #[test]
    fn partition_ranges_cover_every_key_group_and_the_edges() {
        assert_eq!(partition_range(1, 0), i32::MIN..=i32::MAX);
        assert_eq!(partition_range(3, 0), i32::MIN..=85);
        assert_eq!(partition_range(3, 1), 86..=170);
        assert_eq!(partition_range(3, 2), 171..=i32::MAX);
    }
}
