//! Checkpoints: taking them (a barrier in the event order, then ONE store transaction), the
//! periodic and shutdown triggers, restoring one (also of a pipeline that failed to start),
//! recovering a pipeline at start (latest completed checkpoint, then the WAL after it), and
//! `eddy wal repair` (the WAL cut at its damage, the offset floor raised above the cut).
//!
//! Invariant: at most one checkpoint or restore runs per pipeline at a time; a failed
//! checkpoint hands its changes back to the shards, so the next one still writes them.
//! Every checkpoint that fails, whatever failed and whatever triggered it, is recorded in ONE
//! place ([`Checkpointer::failed`]): counted, logged once, and listed as `failed` — at once,
//! or, when the store cannot take even that, as soon as it answers again.

use crate::clock::now_ms;
use crate::config::Config;
use crate::engine::{Counters, EngineError, OutputRecord, Pipeline, Snapshot};
use crate::spec::PipelineSpec;
use crate::store::{
    CheckpointMeta, CheckpointStatus, CheckpointWrite, Floors, Store, StoreError, Trigger,
};
use crate::wal::{self, Beyond, Repaired, Wal, WalError, WalOptions};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Why a checkpoint, restore or recovery did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Another checkpoint of the pipeline is running (recorded `in_progress` as `id`).
    #[error("checkpoint {id} is running")]
    Running { id: i64 },
    /// A restore of checkpoint `id` is running.
    #[error("checkpoint {id} is being restored")]
    Restoring { id: i64 },
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

/// Failures kept per pipeline while the store cannot take them; beyond it the oldest go
/// (they were counted and logged).
const PENDING_LIMIT: usize = 100;

/// The longest pause between periodic attempts after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The pause before the next periodic checkpoint, after `failures` failed in a row: the
/// interval, doubled per failure, capped at [`MAX_BACKOFF`] (or the interval, if longer).
pub fn periodic_delay(interval: Duration, failures: u32) -> Duration {
    let backoff = interval.saturating_mul(2_u32.saturating_pow(failures.min(31)));
    backoff.min(MAX_BACKOFF.max(interval))
}

/// Who holds a pipeline's checkpoint slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    /// A checkpoint whose `in_progress` row is not written yet: it has no id to name.
    Starting,
    /// Checkpoint `id`, recorded `in_progress`.
    Checkpoint(i64),
    /// A restore of checkpoint `id`.
    Restore(i64),
}

/// A failure the store could not take yet.
#[derive(Clone, Debug)]
struct Failure {
    /// The `in_progress` row to mark failed, or none when it was never written.
    id: Option<i64>,
    trigger: Trigger,
    started_at: i64,
    completed_at: i64,
    error: String,
}

/// Takes, restores and recovers checkpoints.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    /// Pipeline name → who holds its slot; waiters subscribe to learn the id or the release.
    running: Mutex<HashMap<String, watch::Sender<Holder>>>,
    /// Pipeline name → failures not yet listed (the store was unreachable), oldest first.
    /// Only the holder of the pipeline's slot touches its entry.
    pending: Mutex<HashMap<String, VecDeque<Failure>>>,
}

/// Releases the pipeline's checkpoint slot when dropped.
pub struct Claim<'a> {
    checkpointer: &'a Checkpointer,
    pipeline: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Dropping the sender wakes every waiter.
        self.checkpointer
            .running
            .lock()
            .expect("running lock")
            .remove(&self.pipeline);
    }
}

impl Claim<'_> {
    fn hold(&self, holder: Holder) {
        if let Some(slot) = self
            .checkpointer
            .running
            .lock()
            .expect("running lock")
            .get(&self.pipeline)
        {
            slot.send_replace(holder);
        }
    }

    /// Names the checkpoint that holds the slot (its `in_progress` row exists).
    pub fn set(&self, id: i64) {
        self.hold(Holder::Checkpoint(id));
    }
}

impl Checkpointer {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>) -> Checkpointer {
        Checkpointer {
            store,
            config,
            running: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves the pipeline's checkpoint slot, or says which checkpoint or restore holds
    /// it. A checkpoint that holds it before its row exists has no id yet: this waits until
    /// it has one (or ends), so that a refusal always names a checkpoint GET can find.
    pub async fn claim(&self, pipeline: &str) -> Result<Claim<'_>, CheckpointError> {
        loop {
            let mut holder = {
                let mut running = self.running.lock().expect("running lock");
                match running.get(pipeline) {
                    Some(slot) => slot.subscribe(),
                    None => {
                        running.insert(pipeline.to_owned(), watch::channel(Holder::Starting).0);
                        return Ok(Claim {
                            checkpointer: self,
                            pipeline: pipeline.to_owned(),
                        });
                    }
                }
            };
            let held = holder
                .wait_for(|h| *h != Holder::Starting)
                .await
                .map(|h| *h);
            match held {
                Ok(Holder::Checkpoint(id)) => return Err(CheckpointError::Running { id }),
                Ok(Holder::Restore(id)) => return Err(CheckpointError::Restoring { id }),
                // Released before it had an id (its row could not be written): try again.
                Ok(Holder::Starting) | Err(_) => {}
            }
        }
    }

    /// The WAL directory of a pipeline.
    pub fn wal_dir(&self, pipeline: &str) -> PathBuf {
        self.config.data_dir.join("wal").join(pipeline)
    }

    /// Takes a checkpoint of `pipeline` and waits for it. A failure is recorded (see
    /// [`Checkpointer::failed`]) before it is answered.
    pub async fn take(
        &self,
        pipeline: &Pipeline,
        trigger: Trigger,
    ) -> Result<CheckpointMeta, CheckpointError> {
        let claim = self.claim(pipeline.name()).await?;
        let name = pipeline.name();
        let started_at = now_ms();
        let started = std::time::Instant::now();
        // A store that cannot take the earlier failures cannot take this one: say so at once
        // rather than wait for it twice.
        let begun = match self.list_pending(name).await {
            Ok(()) => self.store.begin_checkpoint(name, trigger, started_at).await,
            Err(e) => Err(e),
        };
        let id = match begun {
            Ok(id) => id,
            Err(e) => return Err(self.failed(name, trigger, None, started_at, e.into()).await),
        };
        claim.set(id);
        match self.write(pipeline, id).await {
            Ok(meta) => {
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
    async fn write(&self, pipeline: &Pipeline, id: i64) -> Result<CheckpointMeta, CheckpointError> {
        let name = pipeline.name();
        let barrier = self.barrier(pipeline).await?;
        let outputs = pipeline
            .output()
            .range(pipeline.output().persisted() + 1, barrier.output_offset);
        let c = barrier.counters;
        let write = CheckpointWrite {
            pipeline: name,
            id,
            completed_at: now_ms(),
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
                if let Err(back) = pipeline.unbarrier(barrier).await {
                    // Only a stopped pipeline refuses them, and it takes no more checkpoints.
                    tracing::warn!(pipeline = name, checkpoint = id, error = %back, "changes of a failed checkpoint not handed back");
                }
                Err(e.into())
            }
        }
    }

    /// The one place a checkpoint is recorded failed: counted, logged once, and its row
    /// marked `failed` (or written `failed`, if it never was written) with the error. When the
    /// store cannot take that either, the failure is kept and listed by the next checkpoint
    /// that reaches the store. Answers `error`.
    async fn failed(
        &self,
        name: &str,
        trigger: Trigger,
        id: Option<i64>,
        started_at: i64,
        error: CheckpointError,
    ) -> CheckpointError {
        crate::metrics::checkpoint_failed(name, trigger.as_str());
        let failure = Failure {
            id,
            trigger,
            started_at,
            completed_at: now_ms(),
            error: reason(&error),
        };
        // Tried even when the store just failed to answer: a lost connection (a server that
        // killed it) is not an outage, and another connection lists the failure at once.
        let listed = match self.record(name, &failure).await {
            Ok(()) => true,
            Err(e) if e.is_unavailable() => {
                self.keep(name, failure.clone());
                false
            }
            Err(e) => {
                tracing::warn!(pipeline = %name, checkpoint = id, error = %reason(&e), "a failed checkpoint cannot be listed");
                true
            }
        };
        tracing::warn!(
            pipeline = %name,
            reason = %failure.error,
            next = next_step(trigger, listed),
            checkpoint = id,
            trigger = trigger.as_str(),
            "checkpoint failed"
        );
        error
    }

    /// Writes `failure` as a `failed` row.
    async fn record(&self, name: &str, failure: &Failure) -> Result<(), StoreError> {
        match failure.id {
            Some(id) => {
                self.store
                    .fail_checkpoint(name, id, &failure.error, failure.completed_at)
                    .await
            }
            None => self
                .store
                .record_failed_checkpoint(
                    name,
                    failure.trigger,
                    failure.started_at,
                    failure.completed_at,
                    &failure.error,
                )
                .await
                .map(drop),
        }
    }

    fn keep(&self, name: &str, failure: Failure) {
        let mut pending = self.pending.lock().expect("pending lock");
        let queue = pending.entry(name.to_owned()).or_default();
        if queue.len() == PENDING_LIMIT {
            queue.pop_front();
        }
        queue.push_back(failure);
    }

    /// Lists the failures the store could not take before, oldest first; while the store is
    /// still unreachable, keeps the rest and answers why.
    async fn list_pending(&self, name: &str) -> Result<(), StoreError> {
        let Some(mut queue) = self.pending.lock().expect("pending lock").remove(name) else {
            return Ok(());
        };
        let mut outcome = Ok(());
        while let Some(failure) = queue.front() {
            match self.record(name, failure).await {
                Err(e) if e.is_unavailable() => {
                    outcome = Err(e);
                    break;
                }
                Err(e) => {
                    tracing::warn!(pipeline = %name, checkpoint = failure.id, error = %reason(&e), "a failed checkpoint cannot be listed");
                }
                Ok(()) => {}
            }
            queue.pop_front();
        }
        if !queue.is_empty() {
            self.pending
                .lock()
                .expect("pending lock")
                .insert(name.to_owned(), queue);
        }
        outcome
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
        let claim = self.claim(old.name()).await?;
        claim.hold(Holder::Restore(id));
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
        let claim = self.claim(&name).await?;
        claim.hold(Holder::Restore(id));
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

/// What an operator reads after a checkpoint failed.
fn next_step(trigger: Trigger, listed: bool) -> &'static str {
    match (trigger, listed) {
        (Trigger::Periodic, true) => {
            "its changes stay for the next checkpoint; periodic checkpoints retry with backoff"
        }
        (Trigger::Periodic, false) => {
            "listed as failed once the store answers; periodic checkpoints retry with backoff"
        }
        (Trigger::Manual, true) => {
            "its changes stay for the next checkpoint; the trigger answers the error"
        }
        (Trigger::Manual, false) => {
            "listed as failed once the store answers; the trigger answers 503"
        }
        (Trigger::Shutdown, _) => {
            "the next start replays the WAL since the last completed checkpoint"
        }
    }
}

/// `e` and the causes its text does not already say, `: `-separated: the `error` of a failed
/// checkpoint.
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_checkpoints_back_off_doubling_up_to_the_cap() {
        let ms = Duration::from_millis;
        let delays: Vec<_> = (0..6).map(|n| periodic_delay(ms(100), n)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(3200)]
        );
        assert_eq!(periodic_delay(ms(100), 20), MAX_BACKOFF);
        assert_eq!(periodic_delay(ms(100), u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn an_interval_longer_than_the_cap_is_kept_after_failures() {
        let hour = Duration::from_secs(3600);
        assert_eq!(periodic_delay(hour, 0), hour);
        assert_eq!(periodic_delay(hour, 3), hour);
    }

    async fn checkpointer() -> (Checkpointer, tempfile::TempDir) {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}", dir.path().join("eddy.db").display());
        let store = crate::store::connect(&url).await.unwrap();
        let config = Config::for_tests(dir.path().to_owned(), url);
        (Checkpointer::new(store, Arc::new(config)), dir)
    }

    #[tokio::test]
    async fn a_claim_racing_a_checkpoint_without_its_id_yet_waits_to_name_it() {
        let (checkpointer, _dir) = checkpointer().await;
        let first = checkpointer.claim("p").await.unwrap();
        let second = checkpointer.claim("p");
        let set = async {
            tokio::task::yield_now().await;
            first.set(7);
        };
        let (refused, ()) = tokio::join!(second, set);
        assert!(matches!(refused, Err(CheckpointError::Running { id: 7 })));
    }

    #[tokio::test]
    async fn a_claim_waiting_on_a_checkpoint_that_never_got_an_id_takes_the_slot() {
        let (checkpointer, _dir) = checkpointer().await;
        let first = checkpointer.claim("p").await.unwrap();
        let second = checkpointer.claim("p");
        let release = async {
            tokio::task::yield_now().await;
            drop(first);
        };
        let (taken, ()) = tokio::join!(second, release);
        assert!(taken.is_ok());
        assert!(matches!(
            checkpointer.claim("other").await.map(drop),
            Ok(())
        ));
    }

    #[tokio::test]
    async fn a_restore_holding_the_slot_is_named_as_a_restore() {
        let (checkpointer, _dir) = checkpointer().await;
        let restore = checkpointer.claim("p").await.unwrap();
        restore.hold(Holder::Restore(3));
        assert!(matches!(
            checkpointer.claim("p").await.map(drop),
            Err(CheckpointError::Restoring { id: 3 })
        ));
    }

    #[test]
    fn a_failure_reason_says_each_cause_once() {
        let store = StoreError::Database(sqlx::Error::RowNotFound);
        let text = reason(&CheckpointError::Store(store));
        assert_eq!(
            text,
            "store: database error: no rows returned by a query that expected to return at least one row"
        );
    }
}
