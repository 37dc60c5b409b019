//! Cluster mode: the leader's output records go to the pipeline's output stream
//! (`log::outputs`), exactly once, whatever fails over.
//!
//! - A batch is answered once its output records are in the stream (`Output::attach_sink`),
//!   so an answer means its outputs can be read at any instance. A barrier is a batch too: a
//!   checkpoint covers only records the stream holds, and after any failover every record
//!   the stream lacks lies after the checkpoint, where the replay makes it again, with the
//!   same offset (outputs are a function of the log).
//! - The sink of a leader that has just recovered starts after the stream's last sequence;
//!   records there beyond what the recovery holds were dropped by a restore (one finished
//!   here, or one a crash interrupted) and are deleted. Its first publish follows whatever is
//!   there; every later one follows its own (see `log::outputs`), so a stale leader cannot
//!   add a record after it.
//! - A publish that fails is retried from the stream's last sequence (its message id makes a
//!   retry of a stored one a no-op); one refused because another epoch's record is there
//!   means this leader is stale: its output log fails, and its waiting batches with it.

use super::{CheckpointError, Checkpointer};
use crate::engine::{Output, Pipeline};
use crate::log::outputs::{OutputStream, PublishError};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Records published before their acks are awaited.
const CHUNK: u64 = 1_000;
/// Records published between two purges of what the feed no longer keeps.
const TRIM_EVERY: u64 = 10_000;

/// A running sink: stopped when its pipeline closes or another sink of the pipeline starts.
pub(super) struct Sink {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Sink {
    /// Stops the sink and waits until it has (its last publishes acked or given up).
    pub(super) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Where a sink stands: the stream holds every record up to `published`; `own`: the last of
/// them is this epoch's.
struct Position {
    published: u64,
    own: bool,
}

impl Checkpointer {
    /// Starts publishing `pipeline`'s output records (led under `epoch`) to its output
    /// stream, after a sink of the same pipeline running here has stopped. Returns once the
    /// stream holds nothing the recovery dropped.
    pub(super) async fn start_sink(
        &self,
        pipeline: &Pipeline,
        epoch: i64,
    ) -> Result<(), CheckpointError> {
        let Some(streams) = &self.streams else {
            return Ok(());
        };
        let name = pipeline.name().to_owned();
        let previous = self.sinks.lock().expect("sinks lock").remove(&name);
        if let Some(previous) = previous {
            previous.stop().await;
        }
        let mut stream = streams.outputs(&name).await?;
        let output = pipeline.output_handle();
        let position = open(&mut stream, &output, epoch).await?;
        output.attach_sink(position.published);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            stream,
            output,
            epoch,
            position,
            stop.clone(),
            pipeline.closed(),
        ));
        self.sinks
            .lock()
            .expect("sinks lock")
            .insert(name, Sink { stop, task });
        Ok(())
    }

    /// Stops and forgets the sink of a deleted pipeline.
    pub async fn forget_sink(&self, name: &str) {
        let sink = self.sinks.lock().expect("sinks lock").remove(name);
        if let Some(sink) = sink {
            sink.stop().await;
        }
    }
}

/// The sink's start: what the stream holds beyond the recovered records goes (a restore
/// dropped it); then, if the output log's offsets go beyond the stream's tip, the next one
/// (its record, or an empty message) is published at once, marking this epoch's tip before a
/// stale leader could put a dropped record there.
async fn open(
    stream: &mut OutputStream,
    output: &Output,
    epoch: i64,
) -> Result<Position, CheckpointError> {
    loop {
        let (_, last) = stream.stored().await?;
        let held = output.newest();
        if last > held {
            let deleted = stream.delete_after(held, last).await?;
            tracing::info!(
                stream = stream.name(),
                after = held,
                upto = last,
                deleted,
                "output records a restore dropped deleted"
            );
        }
        // Offsets are never reused, even those whose records a restore dropped.
        output.raise_next_offset(last + 1);
        // Nothing this recovery made lies beyond the stream's tip: nothing a stale leader
        // still holds can (its records are the log's, which the recovery replayed).
        if output.next_offset() - 1 <= last {
            return Ok(Position {
                published: last,
                own: false,
            });
        }
        let offset = last + 1;
        let ack = stream
            .publish(offset, payload(output, offset), epoch, false)
            .await?;
        match stream.acked(offset, ack).await {
            Ok(()) => {
                return Ok(Position {
                    published: offset,
                    own: true,
                });
            }
            // A stale leader's record went in after the read: read again.
            Err(PublishError::NotNext { .. }) => continue,
            Err(PublishError::Stream(e)) => return Err(e.into()),
        }
    }
}

/// Record `offset`'s JSON, or nothing for an offset without a record.
fn payload(output: &Output, offset: u64) -> Bytes {
    match output.range(offset, offset).first() {
        Some(record) => Bytes::from(serde_json::to_vec(&**record).expect("records serialise")),
        None => Bytes::new(),
    }
}

/// Publishes each new record until stopped; retries what fails.
async fn run(
    mut stream: OutputStream,
    output: Arc<Output>,
    epoch: i64,
    mut at: Position,
    stop: CancellationToken,
    closed: CancellationToken,
) {
    let mut updates = output.subscribe();
    let mut since_trim = 0;
    let mut backoff = Duration::from_millis(50);
    loop {
        match publish_new(&stream, &output, epoch, &mut at).await {
            Ok(published) => {
                backoff = Duration::from_millis(50);
                since_trim += published;
                if since_trim >= TRIM_EVERY {
                    since_trim = 0;
                    trim(&stream, &output).await;
                }
                if output.newest() > at.published {
                    continue;
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    _ = stop.cancelled() => return,
                    _ = closed.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::warn!(stream = stream.name(), reason = %e, next = "retried from the stream's last record", "output records not published");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = stop.cancelled() => return,
                    _ = closed.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                match resume(&mut stream, epoch, &mut at).await {
                    Ok(true) => output.set_published(at.published),
                    Ok(false) => {
                        tracing::error!(
                            stream = stream.name(),
                            epoch,
                            next = "this instance no longer leads the pipeline; its waiting batches fail",
                            "another leader published output records"
                        );
                        output.fail();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(stream = stream.name(), reason = %e, "output stream not readable");
                    }
                }
            }
        }
    }
}

/// Publishes the records after `at` (and an empty message for each offset without one),
/// a chunk at a time; answers how many went.
async fn publish_new(
    stream: &OutputStream,
    output: &Output,
    epoch: i64,
    at: &mut Position,
) -> Result<u64, PublishError> {
    let newest = output.newest();
    if newest <= at.published {
        return Ok(0);
    }
    let upto = newest.min(at.published + CHUNK);
    let mut records: VecDeque<_> = output.range(at.published + 1, upto).into();
    let mut acks = Vec::with_capacity((upto - at.published) as usize);
    for offset in at.published + 1..=upto {
        let payload = match records.front() {
            Some(record) if record.offset == offset => {
                let record = records.pop_front().expect("checked");
                Bytes::from(serde_json::to_vec(&*record).expect("records serialise"))
            }
            _ => Bytes::new(),
        };
        let follows_own = at.own || offset > at.published + 1;
        acks.push((
            offset,
            stream.publish(offset, payload, epoch, follows_own).await?,
        ));
    }
    let count = upto - at.published;
    for (offset, ack) in acks {
        stream.acked(offset, ack).await?;
        at.published = offset;
        at.own = true;
    }
    output.set_published(at.published);
    Ok(count)
}

/// After a failed publish: where the stream stands. `false`: another epoch's record is at
/// its tip beyond ours (this leader is stale).
async fn resume(
    stream: &mut OutputStream,
    epoch: i64,
    at: &mut Position,
) -> Result<bool, CheckpointError> {
    let (_, last) = stream.stored().await?;
    if last <= at.published {
        return Ok(true);
    }
    if stream.epoch_of(last).await? == Some(epoch) {
        // Our own publishes were stored though their acks were lost: the chain of this
        // epoch's message ids makes every one up to `last` ours.
        at.published = last;
        at.own = true;
        return Ok(true);
    }
    Ok(false)
}

/// Purges what the output log no longer keeps (the stream keeps at least as much).
async fn trim(stream: &OutputStream, output: &Output) {
    let Some(oldest) = output.read(None, 1).0.first().map(|r| r.offset) else {
        return;
    };
    if let Err(e) = stream.purge_before(oldest).await {
        tracing::warn!(stream = stream.name(), reason = %e, next = "the next trim purges it", "cannot trim the output stream");
    }
}
