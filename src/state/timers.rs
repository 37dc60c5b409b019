//! Timers of one operator instance: a min-heap of (time, key), so firing is in time order and
//! costs O(log n) per timer, never a scan over keys.
//!
//! Timers are hints: a registration is never cancelled, so a timer may fire after the state it
//! was set for changed. Operators check their state when a timer fires (the built-ins also keep
//! at most one pending timer per key, see `timer_at` in their states).

use super::Key;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Pending timers, earliest first.
#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<(i64, Key)>>,
}

impl TimerQueue {
    /// Registers a timer for `key` at `time`.
    pub fn register(&mut self, time: i64, key: Key) {
        self.heap.push(Reverse((time, key)));
    }

    /// Removes and returns the earliest timer due at `now` (time <= now).
    pub fn pop_due(&mut self, now: i64) -> Option<(i64, Key)> {
        match self.heap.peek() {
            Some(Reverse((time, _))) if *time <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Forgets every timer.
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_time_then_key_order_and_only_when_due() {
        let mut q = TimerQueue::default();
        q.register(20, "b".into());
        q.register(10, "z".into());
        q.register(20, "a".into());
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(20), Some((10, "z".into())));
        assert_eq!(q.pop_due(20), Some((20, "a".into())));
        assert_eq!(q.pop_due(20), Some((20, "b".into())));
        assert!(q.is_empty());
    }
}
