//! eddy: a stateful stream-processing service.
pub mod spec;
pub mod state;
