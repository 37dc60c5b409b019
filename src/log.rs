//! The log a pipeline's sequencer appends to, in processing order: the local WAL (one
//! instance) or the pipeline's JetStream stream (cluster mode, `stream`). Both take a record
//! under the sequencer lock, make it durable (one `fdatasync` / the JetStream ack), then run
//! its `after` action, in order: nothing is applied, answered or visible before it is durable.
//! An LSN is the WAL's record number or the stream's sequence: dense from 1 and increasing,
//! what a checkpoint records as `wal_lsn`.

pub mod follow;
pub mod outputs;
pub mod stream;

use crate::wal::{After, Record, Wal};

/// An open log of one pipeline.
pub trait Log: Send + Sync {
    /// Queues `record`; `after` runs once it is durable, in LSN order. Returns its LSN.
    fn append(&self, record: &Record, after: After) -> u64;
    /// Queues an action that runs after everything queued before it is durable (no record).
    fn after_queued(&self, after: After);
    /// LSN of the newest record queued (0 before any).
    fn last_lsn(&self) -> u64;
    /// Drops records checkpoints cover: `latest` is the LSN the newest completed checkpoint
    /// covers, `oldest` the oldest retained one's. A failure is logged; the next checkpoint
    /// tries again.
    fn trim(&self, latest: u64, oldest: u64);
}

impl Log for Wal {
    fn append(&self, record: &Record, after: After) -> u64 {
        Wal::append(self, record, after)
    }

    fn after_queued(&self, after: After) {
        Wal::after_queued(self, after);
    }

    fn last_lsn(&self) -> u64 {
        Wal::last_lsn(self)
    }

    /// Segments before the newest checkpoint go: recovery never reads them, and a restore
    /// discards what follows its checkpoint.
    fn trim(&self, latest: u64, _oldest: u64) {
        if let Err(e) = self.remove_through(latest) {
            tracing::warn!(wal = %self.dir().display(), reason = %e, next = "the next completed checkpoint deletes them", "cannot delete old WAL segments");
        }
    }
}
