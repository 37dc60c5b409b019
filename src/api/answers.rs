//! The answers of the API as the types that are serialised, so that the OpenAPI document is
//! derived from what goes on the wire. Handlers build them from engine and store values
//! (`From` or a constructor); no engine or store type is serialised directly. JSON the engine
//! or the spec already holds (a key's state, an output record's value, the spec document)
//! stays JSON inside a typed answer, described by a schema-only type.

mod checkpoints;
mod output;
mod pipelines;
mod values;

pub use checkpoints::{CheckpointStatusDto, TriggerDto};
pub use output::OutputRecordAnswer;
pub use pipelines::{PipelineAnswer, PipelineList, PipelineState, PipelineStatus};
pub use values::StateValue;
