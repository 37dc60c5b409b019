//! A running pipeline and how it is built (definition → sequencer, shard threads, output log).
//! Its jobs live in their own rooms: the write path in `submit.rs`, the sequencer's
//! decisions in `sequencer.rs`, checkpoint barriers in `barrier.rs`, queries in `queries.rs`.
//!
//! Invariant: everything that changes state passes the sequencer lock once, in one order, the
//! order of the WAL; the lock is never held across an `.await`. A batch either reserves a
//! mailbox slot on every shard it needs, or nothing of it is applied. With a WAL attached,
//! shards receive a batch only once its record is durable (the WAL's after-action sends it),
//! so nothing is applied, visible or answered before it would survive a crash. The arrival
//! clock (processing time) is read under the same lock, so arrival times follow that order.

use super::definition::OperatorDef;
use super::idempotency::Idempotency;
use super::ingest::Extractor;
use super::output::Output;
use super::sequencer::{Counters, Sequencer};
use super::shard::{Command, Shard};
use super::{EngineConfig, EngineError};
use crate::log::Log;
use crate::metrics::{PipelineMetrics, RECORDS_IN, RECORDS_OUT, operator_counters};
use crate::spec::{KeyGroups, PipelineSpec};
use crate::store::Fence;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the sequencer lock guards: the sequencer's state and the idempotency answers it
/// hands out, decided together so that a key is seen once whatever the concurrency.
#[derive(Debug, Default)]
pub(super) struct Locked {
    pub(super) seq: Sequencer,
    pub(super) idempotency: Idempotency,
}

/// A running pipeline.
pub struct Pipeline {
    pub(super) name: String,
    pub(super) spec: Option<PipelineSpec>,
    pub(super) extractor: Extractor,
    pub(super) operators: Vec<String>,
    pub(super) processing_time: bool,
    pub(super) shards: Vec<mpsc::Sender<Command>>,
    pub(super) sequencer: Mutex<Locked>,
    pub(super) output: Arc<Output>,
    /// Cancelled when the pipeline is deleted: ends its long polls and streams.
    pub(super) closed: CancellationToken,
    pub(super) wal: OnceLock<Box<dyn Log>>,
    /// Cluster mode: the lease this instance leads the pipeline under (its checkpoints
    /// are written only while it still holds it).
    pub(super) fence: OnceLock<Fence>,
    /// Why the pipeline stopped accepting (its log failed).
    pub(super) failure: Arc<OnceLock<String>>,
    /// Keys with state per shard (all operators), published by each shard after a batch.
    pub(super) keys: Arc<[AtomicUsize]>,
    pub(super) max_keys: usize,
    pub(super) metrics: PipelineMetrics,
}

/// What reads and checks the events of `spec`'s pipeline (of operators `defs`), routed to
/// its shards.
fn extractor_of(spec: &PipelineSpec, defs: &[OperatorDef], config: &EngineConfig) -> Extractor {
    Extractor::new(
        spec.key.clone(),
        spec.time.clone(),
        defs.iter()
            .map(|d| (d.name.clone(), d.inputs.clone()))
            .collect(),
    )
    .routed(config.shards)
}

/// What reads and checks the events of a validated spec's pipeline, without the pipeline:
/// what an instance that does not lead it validates a batch with before forwarding it.
pub fn spec_extractor(spec: &PipelineSpec, config: &EngineConfig) -> Extractor {
    extractor_of(spec, &definitions(spec, config), config)
}

/// The built-in operators of `spec`.
fn definitions(spec: &PipelineSpec, config: &EngineConfig) -> Vec<OperatorDef> {
    spec.operators
        .iter()
        .map(|op| super::operators::definition(op, config.max_map_entries))
        .collect()
}

impl Pipeline {
    /// Starts the pipeline of a validated spec.
    pub fn from_spec(spec: PipelineSpec, config: &EngineConfig) -> Pipeline {
        Pipeline::from_spec_owning(spec, config, KeyGroups::ALL)
    }

    /// Starts the pipeline of a validated spec applying only the key groups in `owned` (in
    /// cluster mode, the partitions this instance owns): every event is still sequenced, so
    /// offsets, watermark and lateness are the whole pipeline's, but only the (event,
    /// operator) items of owned key groups reach the shards, and only their state is restored.
    pub fn from_spec_owning(
        spec: PipelineSpec,
        config: &EngineConfig,
        owned: KeyGroups,
    ) -> Pipeline {
        let defs = definitions(&spec, config);
        let mut pipeline = Pipeline::start(&spec, defs, config);
        pipeline.extractor = pipeline.extractor.owning(owned);
        pipeline.spec = Some(spec);
        pipeline
    }

    /// The key groups the pipeline applies.
    pub fn owned(&self) -> KeyGroups {
        self.extractor.owned()
    }

    /// Starts a pipeline with the key, time and TTL of `spec` but the operators of `defs`
    /// (built-in or a crate user's own).
    pub fn start(spec: &PipelineSpec, defs: Vec<OperatorDef>, config: &EngineConfig) -> Pipeline {
        let names: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
        let extractor = extractor_of(spec, &defs, config);
        let output = Arc::new(
            Output::new(
                names.iter().map(|n| Arc::from(n.as_str())).collect(),
                config.output_retain,
            )
            .counting(operator_counters(&RECORDS_OUT, &spec.name, &names)),
        );
        let ttl = spec.state_ttl.map(|t| t.millis());
        let keys: Arc<[AtomicUsize]> = (0..config.shards.max(1))
            .map(|_| AtomicUsize::new(0))
            .collect();
        let shards = (0..config.shards.max(1))
            .map(|i| {
                let runners = defs
                    .iter()
                    .enumerate()
                    .map(|(index, d)| d.instance(index as u16, ttl))
                    .collect();
                let records_in = operator_counters(&RECORDS_IN, &spec.name, &names);
                let shard = Shard::new(runners, output.clone(), keys.clone(), i, records_in);
                let (tx, rx) = mpsc::channel(config.shard_queue.max(1));
                std::thread::Builder::new()
                    .name(format!("eddy-shard-{i}"))
                    .spawn(move || shard.run(rx))
                    .expect("spawn shard thread");
                tx
            })
            .collect();
        Pipeline {
            name: spec.name.clone(),
            spec: None,
            extractor,
            operators: names,
            processing_time: spec.processing_time(),
            shards,
            sequencer: Mutex::new(Locked {
                seq: Sequencer::new(
                    spec.time
                        .as_ref()
                        .map_or(0, |t| t.max_out_of_orderness.millis()),
                    spec.processing_time(),
                ),
                idempotency: Idempotency::default(),
            }),
            output,
            closed: CancellationToken::new(),
            wal: OnceLock::new(),
            fence: OnceLock::new(),
            failure: Arc::new(OnceLock::new()),
            keys,
            max_keys: config.max_keys,
            metrics: PipelineMetrics::new(&spec.name),
        }
    }

    /// From now on, every change is logged to `log` before it is applied.
    pub fn attach_log(&self, log: Box<dyn Log>) {
        let _ = self.wal.set(log);
    }

    /// Cluster mode: the lease the pipeline is led under.
    pub fn set_fence(&self, fence: Fence) {
        let _ = self.fence.set(fence);
    }

    /// The lease the pipeline is led under (cluster mode).
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.get()
    }

    /// Why the pipeline stopped accepting (its WAL failed a write), if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// The attached log.
    pub fn log(&self) -> Option<&dyn Log> {
        self.wal.get().map(|log| &**log)
    }

    /// Handles on the pipeline's ingest metrics.
    pub fn metrics(&self) -> &PipelineMetrics {
        &self.metrics
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec it was started from (`None` for pipelines built from definitions in code).
    pub fn spec(&self) -> Option<&PipelineSpec> {
        self.spec.as_ref()
    }

    /// How events of this pipeline are validated and extracted.
    pub fn extractor(&self) -> &Extractor {
        &self.extractor
    }

    /// The output log.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// A shared handle on the output log, for readers that outlive a request.
    pub fn output_handle(&self) -> Arc<Output> {
        self.output.clone()
    }

    /// Cancelled once the pipeline is deleted.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Marks the pipeline deleted (readers end); its shards stop when the last handle goes.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Operator names, in spec order.
    pub fn operators(&self) -> &[String] {
        &self.operators
    }

    /// Whether event time is arrival time.
    pub fn processing_time(&self) -> bool {
        self.processing_time
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.sequencer.lock().expect("sequencer lock").seq.counters
    }

    /// Raises the next event offset to at least `offset` (offsets are never reused).
    pub fn raise_next_offset(&self, offset: u64) {
        let mut locked = self.sequencer.lock().expect("sequencer lock");
        locked.seq.raise_next_offset(offset);
    }

    pub(super) async fn send(&self, shard: usize, command: Command) -> Result<(), EngineError> {
        self.shards[shard]
            .send(command)
            .await
            .map_err(|_| self.stopped())
    }

    pub(super) fn stopped(&self) -> EngineError {
        EngineError::Stopped {
            pipeline: self.name.clone(),
        }
    }

    pub(super) fn failed_or_stopped(&self) -> EngineError {
        match self.failure.get() {
            Some(reason) => EngineError::Failed {
                pipeline: self.name.clone(),
                reason: reason.clone(),
            },
            None => self.stopped(),
        }
    }
}
