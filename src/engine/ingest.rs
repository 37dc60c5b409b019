//! Ingest: a request body becomes a parsed batch routed to shards. `scan` finds the few
//! fields a pipeline reads in one pass over an event's bytes, `extract` turns them into the
//! key, the event time and each operator's input, and `batch` parses a JSON array or NDJSON
//! body into events grouped by shard, reporting every invalid event (the batch is atomic).

mod batch;
mod extract;
mod scan;

pub use batch::{
    BatchError, BatchLimits, BodyFormat, EventError, MAX_REPORTED_ERRORS, ParsedBatch, parse_batch,
    parse_batch_limited,
};
pub use extract::{Event, Extractor, FieldKind, Inputs, MAX_KEY_BYTES, OpInput};
