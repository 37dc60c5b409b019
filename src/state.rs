//! Keyed state: the primitives every operator is written on, the per-operator keyed backend
//! that tracks which keys changed since the last checkpoint, and event/processing-time timers.
//!
//! Invariant: state is owned by exactly one shard thread; nothing here locks.

mod expiry;
mod index;
mod json_text;
mod keyed;
mod keys;
mod num;
mod primitives;
mod timers;

pub use expiry::ExpiryQueue;
pub use json_text::JsonText;
pub use keyed::{Change, KeyedState, key_hash};
pub use keys::KeyTable;
pub use num::Num;
pub use primitives::{
    AggregateFunction, AggregatingState, ListState, MapState, ReducingState, ValueState,
};
pub use timers::TimerQueue;

/// A key as routed: a string (integer keys become their decimal string). Short keys are inline.
pub type Key = compact_str::CompactString;

/// One key's state as checkpointed (the persisted shape the engine drains and the store
/// writes): `value` is `None` for a key that no longer has state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRow {
    pub operator: u16,
    pub key: Key,
    pub key_group: u16,
    /// Newest event time of the key (for TTL).
    pub last_time: i64,
    pub value: Option<Vec<u8>>,
}
