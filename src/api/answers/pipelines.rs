//! The answer for a pipeline: the spec document as it was accepted, with the contract's
//! defaults made explicit, plus its live `status`.

use crate::api::checkpoints::CheckpointDto;
use crate::api::pipelines::{OperatorDoc, TimeDoc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A pipeline: its spec (with defaults) plus `status`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PipelineDoc)]
pub struct PipelineAnswer {
    /// The spec's members, echoed as accepted (an embedded pipeline without one has none).
    #[serde(flatten)]
    #[schema(value_type = PipelineDefinition)]
    pub spec: Map<String, Value>,
    pub status: PipelineStatus,
}

impl PipelineAnswer {
    /// The answer for a spec document (a JSON object) and a status.
    pub fn new(document: Option<&Value>, status: PipelineStatus) -> PipelineAnswer {
        let spec = document
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        PipelineAnswer { spec, status }
    }
}

/// Every pipeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineList {
    pub items: Vec<PipelineAnswer>,
}

/// Live counters of a pipeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineStatus {
    /// Every accepted event, late ones included.
    pub events: u64,
    pub late_events: u64,
    /// Epoch ms, or null before any event.
    pub watermark: Option<i64>,
    /// Offset of the last accepted event, or null.
    pub wal_offset: Option<u64>,
    /// Keys with state, per operator.
    pub keys: BTreeMap<String, usize>,
    /// The newest checkpoint, or null.
    pub last_checkpoint: Option<CheckpointDto>,
    /// `running`, or `failed` (it did not start: its WAL failed its check; or its WAL failed
    /// a write). A failed pipeline's counters are those of its latest completed checkpoint.
    pub state: PipelineState,
    /// Why it failed; null while running.
    pub error: Option<String>,
}

/// Whether a pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    Running,
    Failed,
}

/// A pipeline's spec with its defaults: how the spec module stores the accepted document.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the spec document is echoed as JSON")]
pub struct PipelineDefinition {
    name: String,
    key: String,
    time: Option<TimeDoc>,
    checkpoint_interval: String,
    retain_checkpoints: u32,
    state_ttl: Option<String>,
    partitions: u16,
    operators: Vec<OperatorDoc>,
}
