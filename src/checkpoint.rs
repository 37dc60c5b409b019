//! Checkpoints: taking them (a barrier in the event order, then ONE store transaction),
//! restoring one (also of a pipeline that failed to start), recovering a pipeline at start
//! (latest completed checkpoint, then the WAL after it), `eddy wal repair`, and the backoff of
//! periodic checkpoints. The rooms: `claim` (the per-pipeline slot), `take`, `failures`
//! (recording failed checkpoints), `recover`, `restore` (restore and repair), and `stored`
//! (engine shapes to the store's and back: the only conversion between them).
//!
//! Invariant: at most one checkpoint or restore runs per pipeline at a time; a failed
//! checkpoint hands its changes back to the shards, so the next one still writes them.
//! Every checkpoint that fails, whatever failed and whatever triggered it, is recorded in ONE
//! place ([`Checkpointer::failed`]): counted, logged once, and listed as `failed` — at once,
//! or, when the store cannot take even that, as soon as it answers again.

mod barrier_writes;
mod claim;
mod failures;
mod follow;
mod recover;
mod restore;
mod sink;
mod stored;
mod take;

pub use claim::Claim;
pub use follow::Owning;
pub use restore::RepairReport;
pub use stored::counters;

use crate::clock::now_ms;
use crate::config::Config;
use crate::engine::EngineError;
use crate::log::stream::{StreamError, Streams};
use crate::store::{CheckpointRecord, CheckpointStatus, Store, StoreError};
use crate::wal::{WalError, WalOptions};
use failures::Failure;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Cluster mode, partitions spread: partitions whose owners did not write their state
    /// at the checkpoint's barrier in time.
    #[error("partitions {missing:?} did not write their state within {waited:?}")]
    PartitionsMissing {
        missing: Vec<u16>,
        waited: std::time::Duration,
    },
    /// The pipeline's JetStream log failed to open or read.
    #[error("{0}")]
    Stream(#[from] StreamError),
}

/// The longest pause between periodic attempts after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The pause before the next periodic checkpoint, after `failures` failed in a row: the
/// interval, doubled per failure, capped at [`MAX_BACKOFF`] (or the interval, if longer).
pub fn periodic_delay(interval: Duration, failures: u32) -> Duration {
    let backoff = interval.saturating_mul(2_u32.saturating_pow(failures.min(31)));
    backoff.min(MAX_BACKOFF.max(interval))
}

/// Takes, restores and recovers checkpoints.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    /// Pipeline name → who holds its slot; waiters subscribe to learn the id or the release.
    running: claim::Slots,
    /// Pipeline name → failures not yet listed (the store was unreachable), oldest first.
    /// Only the holder of the pipeline's slot touches its entry.
    pending: Mutex<HashMap<String, VecDeque<Failure>>>,
    /// Cluster mode: the pipelines' logs are JetStream streams, not WALs.
    streams: Option<Streams>,
    /// Cluster mode: pipeline name → the sink publishing its output records.
    sinks: Mutex<HashMap<String, sink::Sink>>,
}

impl Checkpointer {
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        streams: Option<Streams>,
    ) -> Checkpointer {
        Checkpointer {
            store,
            config,
            streams,
            running: claim::Slots::default(),
            pending: Mutex::new(HashMap::new()),
            sinks: Mutex::new(HashMap::new()),
        }
    }

    /// The WAL directory of a pipeline.
    pub fn wal_dir(&self, pipeline: &str) -> PathBuf {
        self.config.data_dir.join("wal").join(pipeline)
    }

    fn wal_options(&self) -> WalOptions {
        WalOptions {
            fsync: self.config.wal_fsync,
            segment_bytes: self.config.wal_segment_bytes,
        }
    }

    async fn latest(&self, name: &str) -> Result<Option<CheckpointRecord>, CheckpointError> {
        Ok(self
            .store
            .checkpoints(name)
            .await?
            .into_iter()
            .find(|c| c.status == CheckpointStatus::Completed))
    }
}

/// A UTC timestamp for a copy directory's name, e.g. `20261201T231500Z`.
fn stamp() -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| now_ms().to_string())
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
