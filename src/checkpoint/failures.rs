//! Recording failed checkpoints, in ONE place ([`Checkpointer::failed`]): counted, logged
//! once, and listed as `failed` at once or, while the store cannot take even that, kept and
//! listed by the next checkpoint that reaches it.

use super::{CheckpointError, Checkpointer, reason};
use crate::clock::now_ms;
use crate::store::{StoreError, Trigger};

/// Failures kept per pipeline while the store cannot take them; beyond it the oldest go
/// (they were counted and logged).
const PENDING_LIMIT: usize = 100;

/// A failure the store could not take yet.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    /// The `in_progress` row to mark failed, or none when it was never written.
    id: Option<i64>,
    trigger: Trigger,
    started_at: i64,
    completed_at: i64,
    error: String,
}

impl Checkpointer {
    /// The one place a checkpoint is recorded failed: counted, logged once, and its row
    /// marked `failed` (or written `failed`, if it never was written) with the error. When the
    /// store cannot take that either, the failure is kept and listed by the next checkpoint
    /// that reaches the store. Answers `error`.
    pub(super) async fn failed(
        &self,
        name: &str,
        trigger: Trigger,
        id: Option<i64>,
        started_at: i64,
        error: CheckpointError,
    ) -> CheckpointError {
        if let CheckpointError::Store(StoreError::Fenced { epoch, .. }) = &error {
            // Not this instance's pipeline any more: it writes nothing, not even a failure
            // (the new leader's recovery marked any row it had begun as failed).
            tracing::warn!(pipeline = %name, epoch, trigger = trigger.as_str(), next = "the instance stops leading the pipeline", "checkpoint fenced: another instance leads the pipeline");
            return error;
        }
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
    pub(super) async fn list_pending(&self, name: &str) -> Result<(), StoreError> {
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
