//! The engine: running pipelines by name, each a sequencer, N shard threads and an output log.
//!
//! Rooms: `ingest` turns a body into a routed batch; `sequencer` decides offsets, lateness
//! and watermark marks as plain data; `pipeline` builds a running pipeline; `submit` is the
//! write path around the sequencer (lock, key limit, WAL framing, dispatch, and WAL records
//! reapplied at recovery); `barrier` takes checkpoint barriers and restores; `queries`
//! answers state and status; `shard`, `runner`, `operator(s)` and `output` apply and log.
//!
//! Routing: `key_group = crc32c(key bytes) % 256` (CRC-32C, Castagnoli: fixed by its
//! specification, so state rows tagged with it stay valid across releases and machines), and
//! shard `s` of `n` owns the contiguous key groups `[256·s/n, 256·(s+1)/n)`.

mod barrier;
mod definition;
mod idempotency;
mod ingest;
mod operator;
pub mod operators;
mod output;
mod pipeline;
mod queries;
mod runner;
mod sequencer;
mod shard;
mod submit;

pub use barrier::{Barrier, Restoring, Snapshot};
pub use definition::OperatorDef;
pub use idempotency::{IdempotencyEntry, KEEP_KEYS, KEEP_MS};
pub use ingest::{
    BatchError, BatchLimits, BodyFormat, EventError, MAX_REPORTED_ERRORS, ParsedBatch, parse_batch,
    parse_batch_limited,
};
pub use ingest::{Event, Extractor, FieldKind, Inputs, MAX_KEY_BYTES, OpInput};
pub use operator::{Context, Emission, Field, Input, Operator, TimeDomain};
pub use output::{Output, OutputRecord};
pub use pipeline::{Pipeline, spec_extractor};
pub use queries::Status;
pub use runner::StateRow;
pub use sequencer::{Ack, Arrival, Counters, is_late};
pub use submit::{Ingested, Submission};

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub use crate::spec::KEY_GROUPS;

/// The key group of a key.
pub fn key_group(key: &str) -> u32 {
    crc32c::crc32c(key.as_bytes()) % KEY_GROUPS
}

/// The shard of `shards` that owns `key_group`.
pub fn shard_of(key_group: u32, shards: usize) -> usize {
    (key_group as usize * shards) / KEY_GROUPS as usize
}

/// How pipelines run.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Shard threads per pipeline.
    pub shards: usize,
    /// Batches a shard's mailbox holds before ingest answers 503.
    pub shard_queue: usize,
    /// Output records kept per pipeline (at least the newest this many).
    pub output_retain: usize,
    /// Keys with state per pipeline (all operators) at which batches are refused.
    pub max_keys: usize,
    /// Entries one key of a `map` may hold; new entries beyond are ignored.
    pub max_map_entries: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shard_queue: 64,
            output_retain: 100_000,
            max_keys: 20_000_000,
            max_map_entries: 10_000,
        }
    }
}

/// What the engine refuses.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A shard mailbox is full: back off and retry.
    #[error("pipeline {pipeline:?} is overloaded: a shard queue is full")]
    Overloaded { pipeline: String },
    /// The pipeline was deleted or its shards stopped.
    #[error("pipeline {pipeline:?} is stopped")]
    Stopped { pipeline: String },
    #[error("pipeline {pipeline:?} has no operator {operator:?}")]
    UnknownOperator { pipeline: String, operator: String },
    /// The pipeline's WAL failed: it accepts nothing until a restart recovers it.
    #[error("pipeline {pipeline:?} stopped accepting: {reason}")]
    Failed { pipeline: String, reason: String },
    /// The pipeline holds as many keys as it may.
    #[error("pipeline {pipeline:?} holds {keys} keys, its limit")]
    KeyLimit { pipeline: String, keys: usize },
    /// A logged record or checkpointed state could not be applied again.
    #[error("pipeline {pipeline:?} cannot recover: {detail}")]
    Reapply { pipeline: String, detail: String },
}

/// A stored pipeline that did not start (its WAL failed its check): listed, not served.
#[derive(Clone, Debug)]
pub struct FailedPipeline {
    pub spec: crate::spec::PipelineSpec,
    /// Why it did not start.
    pub reason: String,
}

/// The running pipelines by name, and the failed ones.
#[derive(Default)]
pub struct Engine {
    // std RwLock: held only to look up or swap an Arc, never across an await.
    pipelines: RwLock<BTreeMap<String, Arc<Pipeline>>>,
    // Invariant: a name is in at most one of the two maps.
    failed: RwLock<BTreeMap<String, FailedPipeline>>,
}

impl Engine {
    /// The pipeline called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.pipelines
            .read()
            .expect("engine lock")
            .get(name)
            .cloned()
    }

    /// Adds a running pipeline (replacing one of the same name, running or failed).
    pub fn insert(&self, pipeline: Arc<Pipeline>) {
        let name = pipeline.name().to_owned();
        self.failed.write().expect("engine lock").remove(&name);
        self.pipelines
            .write()
            .expect("engine lock")
            .insert(name, pipeline);
    }

    /// Removes a pipeline; its shards stop once the last handle is gone.
    pub fn remove(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.pipelines.write().expect("engine lock").remove(name)
    }

    /// Records that `spec`'s pipeline did not start, and why.
    pub fn fail(&self, spec: crate::spec::PipelineSpec, reason: String) {
        let name = spec.name.clone();
        self.pipelines.write().expect("engine lock").remove(&name);
        let failed = FailedPipeline { spec, reason };
        self.failed
            .write()
            .expect("engine lock")
            .insert(name, failed);
    }

    /// The failed pipeline called `name`.
    pub fn failed(&self, name: &str) -> Option<FailedPipeline> {
        self.failed.read().expect("engine lock").get(name).cloned()
    }

    /// Forgets a failed pipeline (deleted).
    pub fn remove_failed(&self, name: &str) -> Option<FailedPipeline> {
        self.failed.write().expect("engine lock").remove(name)
    }

    /// Every failed pipeline, by name.
    pub fn failed_list(&self) -> Vec<FailedPipeline> {
        self.failed
            .read()
            .expect("engine lock")
            .values()
            .cloned()
            .collect()
    }

    /// Every running pipeline, by name.
    pub fn list(&self) -> Vec<Arc<Pipeline>> {
        self.pipelines
            .read()
            .expect("engine lock")
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_are_crc32c_mod_256() {
        // CRC-32C("123456789") = 0xE3069283, the standard check value.
        assert_eq!(key_group("123456789"), 0x83);
    }

    #[test]
    fn shards_own_contiguous_key_group_ranges() {
        assert_eq!(shard_of(0, 2), 0);
        assert_eq!(shard_of(127, 2), 0);
        assert_eq!(shard_of(128, 2), 1);
        assert_eq!(shard_of(255, 2), 1);
        assert!((0..256).all(|g| shard_of(g, 1) == 0));
        assert!((0..256).all(|g| shard_of(g, 3) < 3));
    }
}
