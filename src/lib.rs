//! eddy: a stateful stream-processing service. Events arrive over HTTP, are routed by key into
//! keyed operator state on shard threads, and are queried and checkpointed through a REST API.
pub mod engine;
pub mod spec;
pub mod state;
