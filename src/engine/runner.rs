//! Runs one operator instance over its keyed state: the type-erased face a shard drives, so a
//! shard holds built-in and user operators alike as `Box<dyn Runner>`.

use super::operator::{Context, Emission, Input, Operator, TimeDomain, Timers};
pub use crate::state::StateRow;
use crate::state::{Change, ExpiryQueue, Key, KeyedState, key_hash};
use serde_json::Value;

/// How many keys ahead of the one applied (or fired) state is prefetched for.
pub(crate) const PREFETCH_AHEAD: usize = 8;

/// Where a shard stands when it calls a runner.
pub(crate) struct Step<'a> {
    pub watermark: Option<i64>,
    pub step: u32,
    pub out: &'a mut Vec<Emission>,
}

/// What a shard needs of an operator instance.
pub(crate) trait Runner: Send {
    /// Applies one event to `key`, whose `key_hash` is `hash`.
    fn apply(&mut self, key: &Key, hash: u32, input: &Input<'_>, at: Step<'_>);
    /// Brings the index slot (`entry` false) or the entry (true) of a key soon applied into
    /// the cache: a hint with no effect on results.
    fn prefetch(&self, hash: u32, entry: bool);
    /// Fires due event-time timers and expires keys past their TTL.
    fn advance_watermark(&mut self, at: Step<'_>);
    /// Fires due processing-time timers.
    fn advance_clock(&mut self, now: i64, at: Step<'_>);
    fn query(&self, key: &str) -> Option<Value>;
    /// Up to `limit` keys after `after` that start with `prefix`, in byte order, answered.
    fn list(&self, after: Option<&str>, prefix: &str, limit: usize) -> Vec<(Key, Value)>;
    fn key_count(&self) -> usize;
    fn changed_keys(&self) -> usize;
    /// Appends every change since the last drain to `out`, encoded.
    fn drain_changes(&mut self, out: &mut Vec<StateRow>);
    /// Puts a key's state from a checkpoint and registers the timers it needs; `hash` is the
    /// key's `key_hash`.
    fn restore(&mut self, row: &StateRow, hash: u32, watermark: Option<i64>) -> Result<(), String>;
    /// Lists a key as changed again.
    fn remark(&mut self, key: &Key);
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
            state: KeyedState::default(),
            timers: Timers::default(),
            expiry: ExpiryQueue::default(),
            ttl,
        }
    }

    fn fire(&mut self, key: &Key, time: i64, domain: TimeDomain, phase: u8, at: &mut Step<'_>) {
        let Self {
            op,
            state,
            timers,
            index,
            ..
        } = self;
        state.update(
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
    fn expire(&mut self, watermark: i64, ttl: i64) {
        let state = &self.state;
        let due = self.expiry.due(watermark, |entry| {
            state.entry_last_time(entry).map(|t| expires_at(t, ttl))
        });
        for entry in due {
            self.state.remove_entry(entry);
        }
    }
}

/// When a key whose newest event is at `time` expires: once the watermark passes time + TTL.
fn expires_at(time: i64, ttl: i64) -> i64 {
    time.saturating_add(ttl).saturating_add(1)
}

impl<O: Operator> Runner for OperatorRunner<O> {
    fn apply(&mut self, key: &Key, hash: u32, input: &Input<'_>, at: Step<'_>) {
        let Self {
            op,
            state,
            timers,
            index,
            ..
        } = self;
        let created = state.update(
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

    fn prefetch(&self, hash: u32, entry: bool) {
        if entry {
            self.state.prefetch_entry(hash);
        } else {
            self.state.prefetch_slot(hash);
        }
    }

    fn advance_watermark(&mut self, mut at: Step<'_>) {
        let Some(wm) = at.watermark else { return };
        while let Some((time, key)) = self.timers.event.pop_due(wm) {
            // Timers fire in time order, their keys in no order: overlap the lookups' misses.
            if let Some(next) = self.timers.event.upcoming(2 * PREFETCH_AHEAD) {
                self.state.prefetch_slot(key_hash(next));
            }
            if let Some(next) = self.timers.event.upcoming(PREFETCH_AHEAD) {
                self.state.prefetch_entry(key_hash(next));
            }
            self.fire(&key, time, TimeDomain::EventTime, 1, &mut at);
        }
        if let Some(ttl) = self.ttl {
            self.expire(wm, ttl);
        }
    }

    fn advance_clock(&mut self, now: i64, mut at: Step<'_>) {
        while let Some((time, key)) = self.timers.processing.pop_due(now) {
            self.fire(&key, time, TimeDomain::ProcessingTime, 1, &mut at);
        }
    }

    fn query(&self, key: &str) -> Option<Value> {
        self.state.get(key).map(|s| self.op.query(s))
    }

    fn list(&self, after: Option<&str>, prefix: &str, limit: usize) -> Vec<(Key, Value)> {
        let mut keys: Vec<&Key> = self
            .state
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .collect();
        if keys.len() > limit {
            keys.select_nth_unstable(limit);
            keys.truncate(limit);
        }
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| (k.clone(), self.op.query(self.state.get(k).expect("listed"))))
            .collect()
    }

    fn key_count(&self) -> usize {
        self.state.len()
    }

    fn changed_keys(&self) -> usize {
        self.state.changed_len()
    }

    fn drain_changes(&mut self, out: &mut Vec<StateRow>) {
        let operator = self.index;
        self.state.drain_changes(|change, last_time| {
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

    fn restore(&mut self, row: &StateRow, hash: u32, watermark: Option<i64>) -> Result<(), String> {
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
            .restore(row.key.clone(), hash, state, row.last_time);
        if let Some(ttl) = self.ttl {
            self.expiry.register(expires_at(row.last_time, ttl), entry);
        }
        Ok(())
    }

    fn remark(&mut self, key: &Key) {
        self.state.mark_changed(key);
    }
}
