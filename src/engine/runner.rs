//! Runs one operator instance over its keyed state: the type-erased face a shard drives, so a
//! shard holds built-in and user operators alike as `Box<dyn Runner>`. The shard's key table,
//! shared by its runners, is handed to each call.

use super::operator::{Context, Emission, Input, Operator, TimeDomain, Timers};
pub use crate::state::StateRow;
use crate::state::{Change, ExpiryQueue, Key, KeyTable, KeyedState, key_hash};
use serde_json::Value;

/// How a key's state is brought into the cache ahead of its use, one dependent step at a
/// time: the key table's index slot, then the key and its entry numbers (found through the
/// slot), then the operator's entry (found through those).
#[derive(Clone, Copy)]
pub(crate) enum Prefetch {
    Slot,
    Key,
    Entry,
}

impl Prefetch {
    /// Takes this step for the key with `hash`: the key table's own steps here, the
    /// operator's entry through `entry`.
    #[inline]
    pub(crate) fn take(self, keys: &KeyTable, hash: u32, entry: impl FnOnce(&KeyTable, u32)) {
        match self {
            Prefetch::Slot => keys.prefetch_slot(hash),
            Prefetch::Key => keys.prefetch_key(hash),
            Prefetch::Entry => entry(keys, hash),
        }
    }
}

/// How many keys ahead of the one applied (or fired) each step is taken.
pub(crate) const PREFETCH_STAGES: [(usize, Prefetch); 3] = [
    (12, Prefetch::Slot),
    (8, Prefetch::Key),
    (4, Prefetch::Entry),
];

/// Where a shard stands when it calls a runner.
pub(crate) struct Step<'a> {
    pub watermark: Option<i64>,
    pub step: u32,
    pub out: &'a mut Vec<Emission>,
}

/// What a shard needs of an operator instance.
pub(crate) trait Runner: Send {
    /// Applies one event to `key`, whose `key_hash` is `hash`.
    fn apply(&mut self, keys: &mut KeyTable, key: &Key, hash: u32, input: &Input<'_>, at: Step<'_>);
    /// Brings the entry of a key soon applied into the cache, once the key table's part is
    /// there: a hint with no effect on results.
    fn prefetch(&self, keys: &KeyTable, hash: u32);
    /// Fires due event-time timers and expires keys past their TTL.
    fn advance_watermark(&mut self, keys: &mut KeyTable, at: Step<'_>);
    /// Fires due processing-time timers.
    fn advance_clock(&mut self, keys: &mut KeyTable, now: i64, at: Step<'_>);
    fn query(&self, keys: &KeyTable, key: &str) -> Option<Value>;
    /// Up to `limit` keys after `after` that start with `prefix`, in byte order, answered.
    fn list(
        &self,
        keys: &KeyTable,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Vec<(Key, Value)>;
    fn key_count(&self) -> usize;
    fn changed_keys(&self) -> usize;
    /// Appends every change since the last drain to `out`, encoded.
    fn drain_changes(&mut self, keys: &KeyTable, out: &mut Vec<StateRow>);
    /// Puts a key's state from a checkpoint and registers the timers it needs; `hash` is the
    /// key's `key_hash`.
    fn restore(
        &mut self,
        keys: &mut KeyTable,
        row: &StateRow,
        hash: u32,
        watermark: Option<i64>,
    ) -> Result<(), String>;
    /// Lists a key as changed again.
    fn remark(&mut self, keys: &KeyTable, key: &Key);
}

/// An operator with its keyed state, its timers and the pipeline's TTL.
pub(crate) struct OperatorRunner<O: Operator> {
    op: O,
    index: u16,
    state: KeyedState<O::State>,
    timers: Timers,
    /// TTL checks, by entry number.
    expiry: ExpiryQueue,
    ttl: Option<i64>,
}

impl<O: Operator> OperatorRunner<O> {
    pub fn new(op: O, index: u16, ttl: Option<i64>) -> Self {
        OperatorRunner {
            op,
            index,
            state: KeyedState::new(usize::from(index)),
            timers: Timers::default(),
            expiry: ExpiryQueue::default(),
            ttl,
        }
    }

    fn fire(
        &mut self,
        keys: &mut KeyTable,
        key: &Key,
        time: i64,
        (domain, phase): (TimeDomain, u8),
        at: &mut Step<'_>,
    ) {
        let Self {
            op,
            state,
            timers,
            index,
            ..
        } = self;
        state.update(
            keys,
            key,
            key_hash(key),
            None,
            false,
            |s| op.is_empty(s),
            |s| {
                let mut cx =
                    Context::new(key, at.watermark, timers, at.out, (at.step, phase), *index);
                op.on_timer(s, time, domain, &mut cx);
            },
        );
    }

    /// Drops every key whose newest event is older than watermark − TTL.
    fn expire(&mut self, keys: &mut KeyTable, watermark: i64, ttl: i64) {
        let state = &self.state;
        let due = self.expiry.due(watermark, |entry| {
            state.entry_last_time(entry).map(|t| expires_at(t, ttl))
        });
        for entry in due {
            self.state.remove_entry(keys, entry);
        }
    }
}

/// When a key whose newest event is at `time` expires: once the watermark passes time + TTL.
fn expires_at(time: i64, ttl: i64) -> i64 {
    time.saturating_add(ttl).saturating_add(1)
}

impl<O: Operator> Runner for OperatorRunner<O> {
    fn apply(
        &mut self,
        keys: &mut KeyTable,
        key: &Key,
        hash: u32,
        input: &Input<'_>,
        at: Step<'_>,
    ) {
        let Self {
            op,
            state,
            timers,
            index,
            ..
        } = self;
        let created = state.update(
            keys,
            key,
            hash,
            Some(input.time),
            true,
            |s| op.is_empty(s),
            |s| {
                let mut cx = Context::new(key, at.watermark, timers, at.out, (at.step, 0), *index);
                op.on_event(s, input, &mut cx);
            },
        );
        if let (Some(ttl), Some(((), Some(entry)))) = (self.ttl, created) {
            self.expiry.register(expires_at(input.time, ttl), entry);
        }
    }

    fn prefetch(&self, keys: &KeyTable, hash: u32) {
        self.state.prefetch_entry(keys, hash);
    }

    fn advance_watermark(&mut self, keys: &mut KeyTable, mut at: Step<'_>) {
        let Some(wm) = at.watermark else { return };
        while let Some((time, key)) = self.timers.event.pop_due(wm) {
            // Timers fire in time order, their keys in no order: overlap the lookups' misses.
            for (ahead, stage) in PREFETCH_STAGES {
                if let Some(next) = self.timers.event.upcoming(ahead) {
                    let state = &self.state;
                    stage.take(keys, key_hash(next), |keys, hash| {
                        state.prefetch_entry(keys, hash)
                    });
                }
            }
            self.fire(keys, &key, time, (TimeDomain::EventTime, 1), &mut at);
        }
        if let Some(ttl) = self.ttl {
            self.expire(keys, wm, ttl);
        }
    }

    fn advance_clock(&mut self, keys: &mut KeyTable, now: i64, mut at: Step<'_>) {
        while let Some((time, key)) = self.timers.processing.pop_due(now) {
            self.fire(keys, &key, time, (TimeDomain::ProcessingTime, 1), &mut at);
        }
    }

    fn query(&self, keys: &KeyTable, key: &str) -> Option<Value> {
        self.state.get(keys, key).map(|s| self.op.query(s))
    }

    fn list(
        &self,
        table: &KeyTable,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Vec<(Key, Value)> {
        let mut keys: Vec<&Key> = self
            .state
            .iter(table)
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .collect();
        if keys.len() > limit {
            keys.select_nth_unstable(limit);
            keys.truncate(limit);
        }
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| {
                let state = self.state.get(table, k).expect("listed");
                (k.clone(), self.op.query(state))
            })
            .collect()
    }

    fn key_count(&self) -> usize {
        self.state.len()
    }

    fn changed_keys(&self) -> usize {
        self.state.changed_len()
    }

    fn drain_changes(&mut self, keys: &KeyTable, out: &mut Vec<StateRow>) {
        let operator = self.index;
        self.state.drain_changes(keys, |change, last_time| {
            let (key, value) = match change {
                Change::Put(key, s) => {
                    let value = serde_json::to_vec(s).expect("operator state serialises");
                    (key.clone(), Some(value))
                }
                Change::Delete(key) => (key, None),
            };
            out.push(StateRow {
                operator,
                key_group: super::key_group(&key) as u16,
                key,
                last_time,
                value,
            });
        });
    }

    fn restore(
        &mut self,
        keys: &mut KeyTable,
        row: &StateRow,
        hash: u32,
        watermark: Option<i64>,
    ) -> Result<(), String> {
        let Some(bytes) = &row.value else {
            return Ok(());
        };
        let mut state: O::State =
            serde_json::from_slice(bytes).map_err(|e| format!("key {:?}: {e}", row.key))?;
        let mut out = Vec::new();
        let mut cx = Context::new(
            &row.key,
            watermark,
            &mut self.timers,
            &mut out,
            (0, 0),
            self.index,
        );
        self.op.restore_timers(&mut state, &mut cx);
        let entry = self
            .state
            .restore(keys, &row.key, hash, state, row.last_time);
        if let Some(ttl) = self.ttl {
            self.expiry.register(expires_at(row.last_time, ttl), entry);
        }
        Ok(())
    }

    fn remark(&mut self, keys: &KeyTable, key: &Key) {
        self.state.mark_changed(keys, key);
    }
}
