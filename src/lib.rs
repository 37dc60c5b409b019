//! eddy: a stateful stream-processing service. Events arrive over HTTP, are routed by key into
//! keyed operator state on shard threads, and are queried and checkpointed through a REST API.
//!
//! Layout (dependencies flow downwards):
pub mod api; // HTTP: AppState, handlers, DTOs, middleware, problem+json, the OpenAPI document
pub mod app; // the wiring on top: start-up, the router with its layers, serving
pub mod auth; // API tokens: file format, hashing, scopes
pub mod checkpoint; // taking, restoring and recovering checkpoints
pub mod clock; // the wall clock (epoch ms): a leaf every layer may read
pub mod config; // flags, environment and TOML settings
pub mod engine; // pipelines: sequencer, shards, operators, output log
#[doc(hidden)]
pub mod fuzzing; // entry points of the fuzz targets and the corpus test
pub mod load; // eddy load: the load generator
pub mod log; // the log a sequencer appends to: the WAL, or a JetStream stream (cluster mode)
pub mod metrics; // every metric family (name, type, HELP), the recorder, /metrics text
pub mod replay; // eddy replay: a pipeline over a file through the engine
pub mod service; // the running service: lifecycle of pipelines, periodic checkpoints, ticker
pub mod spec; // pipeline specs and their validation
pub mod state; // keyed state primitives, keyed backend, timers
pub mod store; // every SQL statement: PostgreSQL and SQLite backends
pub mod telemetry; // tracing set-up
pub mod ui; // the dashboard at /ui: embedded static files
pub mod wal; // the write-ahead log: records, segments, group commit
pub mod workload; // seeded click streams for benchmarks, examples and load
