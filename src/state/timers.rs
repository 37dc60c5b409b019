//! Timers of one operator instance, fired in (time, key) order without a scan over keys and
//! without a heap over every pending timer.
//!
//! Timers are bucketed by time (about a second each) in a hash map, the buckets' times kept in
//! order beside it; a bucket is sorted once, when the clock first reaches it, and then fired
//! from the end of that sorted run. Registering costs one hash lookup and a push (an ordered
//! map of buckets cost several times that: a restore registers millions of timers); firing
//! costs a share of one sort. A binary heap over a million timers, by contrast, costs some
//! twenty cache misses per pop.
//!
//! Timers are hints: a registration is never cancelled, so a timer may fire after the state it
//! was set for changed. As in Flink, there is one timer per key and time: registering one that
//! is pending already fires it once. Operators check their state when a timer fires (the
//! built-ins also keep about one pending timer per key, see `TimerSlot` and `SessionState`).

use super::Key;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::collections::hash_map::Entry;

/// Bucket width: 2^10 ms.
const BUCKET_BITS: u32 = 10;

/// The bucket of `time`.
pub(super) fn bucket(time: i64) -> i64 {
    time >> BUCKET_BITS
}

/// Items filed by bucket, handed out a whole bucket at a time in bucket order: a hash map of
/// buckets, their times kept in order beside it (timers and TTL checks both file this way).
#[derive(Debug)]
pub(super) struct Buckets<T> {
    /// Items by bucket, unsorted within a bucket.
    map: FxHashMap<i64, Vec<T>>,
    /// The buckets of `map`, in order.
    order: BTreeSet<i64>,
    /// The last bucket handed out.
    reached: Option<i64>,
}

impl<T> Default for Buckets<T> {
    fn default() -> Self {
        Buckets {
            map: FxHashMap::default(),
            order: BTreeSet::new(),
            reached: None,
        }
    }
}

/// Inserts `item` into `run`, which is sorted latest first: what is filed for a bucket
/// already handed out joins the run being worked through.
pub(super) fn insert_into_run<T: Ord>(run: &mut Vec<T>, item: T) {
    let at = run.partition_point(|x| *x > item);
    run.insert(at, item);
}

impl<T> Buckets<T> {
    /// Whether bucket `b` has been handed out already (what falls in it goes to the run
    /// being worked through, not here).
    pub fn is_reached(&self, b: i64) -> bool {
        self.reached.is_some_and(|reached| b <= reached)
    }

    /// Files `item` in bucket `b`.
    pub fn push(&mut self, b: i64, item: T) {
        match self.map.entry(b) {
            Entry::Occupied(bucket) => bucket.into_mut().push(item),
            Entry::Vacant(bucket) => {
                self.order.insert(b);
                bucket.insert(vec![item]);
            }
        }
    }

    /// Removes the earliest bucket and its items, once `now` has reached its start.
    pub fn pop_reached(&mut self, now: i64) -> Option<(i64, Vec<T>)> {
        let b = *self.order.first()?;
        if b << BUCKET_BITS > now {
            return None;
        }
        self.order.pop_first();
        self.reached = Some(b);
        let items = self.map.remove(&b).expect("every ordered bucket is held");
        Some((b, items))
    }
}

/// Pending timers, earliest first.
#[derive(Debug, Default)]
pub struct TimerQueue {
    /// Timers of the buckets not yet reached.
    buckets: Buckets<(i64, Key)>,
    /// The timers of the buckets reached so far, sorted latest first: every one of them is
    /// earlier than every timer in `buckets`.
    firing: Vec<(i64, Key)>,
    len: usize,
}

impl TimerQueue {
    /// Registers a timer for `key` at `time`.
    pub fn register(&mut self, time: i64, key: Key) {
        self.len += 1;
        let b = bucket(time);
        if self.buckets.is_reached(b) {
            insert_into_run(&mut self.firing, (time, key));
        } else {
            self.buckets.push(b, (time, key));
        }
    }

    /// Removes and returns the earliest timer due at `now` (time <= now), and every copy of it
    /// registered while it was pending.
    pub fn pop_due(&mut self, now: i64) -> Option<(i64, Key)> {
        loop {
            if let Some((time, _)) = self.firing.last() {
                if *time > now {
                    return None;
                }
                let timer = self.firing.pop().expect("a last timer");
                self.len -= 1;
                // Copies sort next to each other.
                while self.firing.last() == Some(&timer) {
                    self.firing.pop();
                    self.len -= 1;
                }
                return Some(timer);
            }
            let (_, mut timers) = self.buckets.pop_reached(now)?;
            timers.sort_unstable_by(|a, b| b.cmp(a));
            // Reuse the emptied run's allocation for the next bucket.
            std::mem::swap(&mut self.firing, &mut timers);
        }
    }

    /// The key of the timer `n` places after the next one in firing order, if it is already
    /// in the bucket being fired: for prefetching its state (a hint, it may not be due yet).
    pub fn upcoming(&self, n: usize) -> Option<&Key> {
        let at = self.firing.len().checked_sub(n + 1)?;
        Some(&self.firing[at].1)
    }

    /// Number of pending timers (copies of one counted until it fires).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every timer.
    pub fn clear(&mut self) {
        *self = TimerQueue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timers_fire_in_time_then_key_order_and_only_when_due() {
        let mut q = TimerQueue::default();
        assert_eq!(q.upcoming(0), None);
        q.register(20, "b".into());
        q.register(10, "z".into());
        q.register(20, "a".into());
        assert_eq!(q.pop_due(5), None);
        assert_eq!(
            q.upcoming(0),
            Some(&"z".into()),
            "its bucket is reached, it is next"
        );
        assert_eq!(q.pop_due(20), Some((10, "z".into())));
        assert_eq!(q.upcoming(0), Some(&"a".into()));
        assert_eq!(q.upcoming(1), Some(&"b".into()));
        assert_eq!(q.upcoming(2), None);
        assert_eq!(q.pop_due(20), Some((20, "a".into())));
        assert_eq!(q.pop_due(20), Some((20, "b".into())));
        assert!(q.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Register(i64, u8),
        Advance(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (-5_000i64..20_000, 0u8..8).prop_map(|(t, k)| Op::Register(t, k)),
            1 => (0i64..3_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Against an ordered set (one timer per key and time): same timers, same order,
        /// whatever the interleaving of registrations (also repeated, into the past and into
        /// the bucket being fired) and advances.
        #[test]
        fn fires_exactly_as_an_ordered_set_would(ops in proptest::collection::vec(op(), 0..300)) {
            let mut q = TimerQueue::default();
            let mut pending = BTreeSet::new();
            let mut now = -6_000i64;
            for op in ops {
                match op {
                    Op::Register(time, k) => {
                        let key: Key = format!("k{k}").into();
                        q.register(time, key.clone());
                        pending.insert((time, key));
                    }
                    Op::Advance(by) => {
                        now += by;
                        let mut expected = Vec::new();
                        while pending.first().is_some_and(|(t, _)| *t <= now) {
                            expected.push(pending.pop_first().unwrap());
                        }
                        let fired: Vec<_> = std::iter::from_fn(|| q.pop_due(now)).collect();
                        prop_assert_eq!(fired, expected);
                    }
                }
                prop_assert!(q.len() >= pending.len(), "copies are counted until they fire");
            }
            let fired: Vec<_> = std::iter::from_fn(|| q.pop_due(i64::MAX)).collect();
            prop_assert_eq!(fired, pending.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(q.len(), 0);
        }
    }
}
