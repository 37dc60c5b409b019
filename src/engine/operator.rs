//! The operator API: what a built-in or a user's own operator implements, and the context it
//! is called with. Written after Flink's `KeyedProcessFunction`: per-key state, event-time and
//! processing-time timers, and outputs.

use crate::state::{JsonText, Key, Num, TimerQueue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

/// The field an operator reads from an event, as extracted at ingest.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    /// The operator reads no value.
    Absent,
    /// A number (`map`, `aggregate`, `window`).
    Number(Num),
    /// Any JSON value, kept as its compact text (`latest`, `last_n`).
    Json(JsonText),
}

/// One event as one operator sees it.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Event time, epoch milliseconds.
    pub time: i64,
    /// The event's time is below the watermark it was judged against.
    pub late: bool,
    /// The operator's `value` field.
    pub value: &'a Field,
    /// The operator's `entry_key` field, if it reads one.
    pub entry_key: Option<&'a Key>,
}

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's time.
    EventTime,
    /// Fires when the (logged) processing-time clock reaches the timer's time.
    ProcessingTime,
}

/// A keyed operator. One instance serves every key of a shard; the engine hands it the state
/// of the current key.
pub trait Operator: Send + 'static {
    /// The state kept for one key.
    type State: Default + Serialize + DeserializeOwned + Send + 'static;

    /// Applies one event to the state of its key.
    fn on_event(&self, state: &mut Self::State, input: &Input<'_>, cx: &mut Context<'_>);

    /// A timer registered for this key is due.
    fn on_timer(
        &self,
        _state: &mut Self::State,
        _time: i64,
        _domain: TimeDomain,
        _cx: &mut Context<'_>,
    ) {
    }

    /// Whether the key holds nothing; an empty key is dropped.
    fn is_empty(&self, state: &Self::State) -> bool;

    /// The answer to a state query for one key.
    fn query(&self, state: &Self::State) -> Value;

    /// Registers the timers `state` needs after it was restored from a checkpoint (timers are
    /// derived from state, not stored).
    fn restore_timers(&self, _state: &mut Self::State, _cx: &mut Context<'_>) {}
}

/// One output record as an operator emits it, tagged so that the engine can order the outputs
/// of every shard the same way, whatever the number of shards.
#[derive(Clone, Debug)]
pub struct Emission {
    /// Position in the batch (index of the event, or of the watermark change after it).
    pub step: u32,
    /// 0: emitted while applying the event; 1: by a timer after it.
    pub phase: u8,
    /// The operator's index in the pipeline.
    pub operator: u16,
    pub key: Key,
    /// The record's type, e.g. `session_closed`.
    pub kind: &'static str,
    /// The record's value as compact JSON text: serialised once, where it is emitted.
    pub value: Box<RawValue>,
}

impl PartialEq for Emission {
    fn eq(&self, other: &Emission) -> bool {
        let tag = |e: &Emission| (e.step, e.phase, e.operator, e.kind);
        tag(self) == tag(other) && self.key == other.key && self.value.get() == other.value.get()
    }
}

/// The timer queues of one operator instance.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    pub event: TimerQueue,
    pub processing: TimerQueue,
}

/// Where the engine stands while an operator runs, and the operator's means to act on it.
pub struct Context<'a> {
    key: &'a Key,
    watermark: Option<i64>,
    timers: &'a mut Timers,
    out: &'a mut Vec<Emission>,
    step: u32,
    phase: u8,
    operator: u16,
}

impl<'a> Context<'a> {
    /// The context of operator `operator` for `key` at `step` (phase 0: an event, 1: a timer).
    pub(crate) fn new(
        key: &'a Key,
        watermark: Option<i64>,
        timers: &'a mut Timers,
        out: &'a mut Vec<Emission>,
        (step, phase): (u32, u8),
        operator: u16,
    ) -> Context<'a> {
        Context {
            key,
            watermark,
            timers,
            out,
            step,
            phase,
            operator,
        }
    }
}

impl Context<'_> {
    /// The key whose state is being handled.
    pub fn key(&self) -> &Key {
        self.key
    }

    /// The current watermark (`None` before any event).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Calls `on_timer` for this key once the watermark is at least `time`.
    pub fn register_event_time_timer(&mut self, time: i64) {
        self.timers.event.register(time, self.key.clone());
    }

    /// Calls `on_timer` for this key once the processing-time clock is at least `time`.
    pub fn register_processing_time_timer(&mut self, time: i64) {
        self.timers.processing.register(time, self.key.clone());
    }

    /// Emits an output record for the current key.
    pub fn emit(&mut self, kind: &'static str, value: Value) {
        let value = serde_json::value::to_raw_value(&value).expect("a Value serialises");
        self.emit_json(kind, value);
    }

    /// Emits an output record whose value is already JSON text (no document is built).
    pub fn emit_json(&mut self, kind: &'static str, value: Box<RawValue>) {
        self.out.push(Emission {
            step: self.step,
            phase: self.phase,
            operator: self.operator,
            key: self.key.clone(),
            kind,
            value,
        });
    }
}
