//! Keyed state: the primitives every operator is written on, the per-operator keyed backend
//! that tracks which keys changed since the last checkpoint, and event/processing-time timers.
//!
//! Invariant: state is owned by exactly one shard thread; nothing here locks.

mod index;
mod json_text;
mod keyed;
mod num;
mod primitives;
mod timers;

pub use json_text::JsonText;
pub use keyed::{Change, KeyedState, key_hash};
pub use num::Num;
pub use primitives::{
    AggregateFunction, AggregatingState, ListState, MapState, ReducingState, ValueState,
};
pub use timers::TimerQueue;

/// A key as routed: a string (integer keys become their decimal string). Short keys are inline.
pub type Key = compact_str::CompactString;
