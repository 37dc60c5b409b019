//! The checkpoint slot of a pipeline: at most one checkpoint or restore runs per pipeline at
//! a time, and a refusal names the checkpoint (or restore) that holds it.

use super::{CheckpointError, Checkpointer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Who holds a pipeline's checkpoint slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holder {
    /// A checkpoint whose `in_progress` row is not written yet: it has no id to name.
    Starting,
    /// Checkpoint `id`, recorded `in_progress`.
    Checkpoint(i64),
    /// A restore of checkpoint `id`.
    Restore(i64),
    /// A completed (and answered) checkpoint pruning what it made old: the next claim waits
    /// for it rather than being refused, and so do listings.
    Pruning,
}

/// Pipeline name → who holds its slot; waiters subscribe to learn the id or the release.
pub(super) type Slots = Arc<Mutex<HashMap<String, watch::Sender<Holder>>>>;

/// Releases the pipeline's checkpoint slot when dropped.
pub struct Claim {
    slots: Slots,
    pipeline: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Dropping the sender wakes every waiter.
        self.slots
            .lock()
            .expect("running lock")
            .remove(&self.pipeline);
    }
}

impl Claim {
    pub(super) fn hold(&self, holder: Holder) {
        if let Some(slot) = self.slots.lock().expect("running lock").get(&self.pipeline) {
            slot.send_replace(holder);
        }
    }

    /// Names the checkpoint that holds the slot (its `in_progress` row exists).
    pub fn set(&self, id: i64) {
        self.hold(Holder::Checkpoint(id));
    }
}

impl Checkpointer {
    /// Waits until no completed checkpoint of `pipeline` is still pruning, so that a listing
    /// shows what is kept.
    pub async fn settled(&self, pipeline: &str) {
        let holder = self
            .running
            .lock()
            .expect("running lock")
            .get(pipeline)
            .map(|slot| slot.subscribe());
        if let Some(mut holder) = holder {
            let _ = holder.wait_for(|h| *h != Holder::Pruning).await;
        }
    }

    /// Reserves the pipeline's checkpoint slot, or says which checkpoint or restore holds
    /// it. A checkpoint that holds it before its row exists has no id yet: this waits until
    /// it has one (or ends), so that a refusal always names a checkpoint GET can find.
    pub async fn claim(&self, pipeline: &str) -> Result<Claim, CheckpointError> {
        loop {
            let mut holder = {
                let mut running = self.running.lock().expect("running lock");
                match running.get(pipeline) {
                    Some(slot) => slot.subscribe(),
                    None => {
                        running.insert(pipeline.to_owned(), watch::channel(Holder::Starting).0);
                        return Ok(Claim {
                            slots: self.running.clone(),
                            pipeline: pipeline.to_owned(),
                        });
                    }
                }
            };
            let held = holder
                .wait_for(|h| !matches!(h, Holder::Starting | Holder::Pruning))
                .await
                .map(|h| *h);
            match held {
                Ok(Holder::Checkpoint(id)) => return Err(CheckpointError::Running { id }),
                Ok(Holder::Restore(id)) => return Err(CheckpointError::Restoring { id }),
                // Released before it had an id (its row could not be written), or pruned:
                // try again.
                Ok(Holder::Starting | Holder::Pruning) | Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::Arc;

    async fn checkpointer() -> (Checkpointer, tempfile::TempDir) {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}", dir.path().join("eddy.db").display());
        let store = crate::store::connect(&url).await.unwrap();
        let config = Config::for_tests(dir.path().to_owned(), url);
        (Checkpointer::new(store, Arc::new(config), None), dir)
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

    #[tokio::test]
    async fn a_pruning_checkpoint_is_waited_for_by_the_next_claim_and_by_listings() {
        let (checkpointer, _dir) = checkpointer().await;
        let pruning = checkpointer.claim("p").await.unwrap();
        pruning.set(4);
        pruning.hold(Holder::Pruning);
        let waits = std::time::Duration::from_millis(50);
        let next = tokio::time::timeout(waits, checkpointer.claim("p")).await;
        assert!(next.is_err(), "the next claim waits, it is not refused");
        let listing = tokio::time::timeout(waits, checkpointer.settled("p")).await;
        assert!(listing.is_err(), "a listing waits");
        let release = async {
            tokio::time::sleep(waits).await;
            drop(pruning);
        };
        let (next, (), ()) =
            tokio::join!(checkpointer.claim("p"), checkpointer.settled("p"), release);
        assert!(next.is_ok(), "the slot is taken once the prune is done");
        tokio::time::timeout(waits, checkpointer.settled("other"))
            .await
            .expect("nothing to wait for");
    }
}
