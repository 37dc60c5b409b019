//! TTL checks of one operator instance: which keys to drop as the watermark advances, for 4
//! bytes a key.
//!
//! A check is only an entry number, filed in the bucket (2^10 ms, as for timers) of the time
//! its key falls due. When the watermark reaches a bucket, each check asks the state when its
//! entry's key falls due now (the key may have had newer events, or be gone, or the entry may
//! hold another key by then): a key due in a later bucket is filed there again, the rest are
//! sorted by due time and handed out as the watermark passes them. So a check costs 4 bytes
//! while its bucket is ahead, and a key is dropped exactly when the watermark passes its
//! newest event time plus the TTL, whichever check finds it.
//!
//! Invariant: every key that holds state has a check filed at or before the bucket of its due
//! time (the caller files one when it creates a key; re-filing only moves a check later when
//! the key's due time moved later).

use super::timers::{Buckets, bucket, insert_into_run};

/// Pending TTL checks, by entry number.
#[derive(Debug, Default)]
pub struct ExpiryQueue {
    /// Checks of the buckets not yet reached.
    buckets: Buckets<u32>,
    /// (due time, entry) of the checks of the buckets reached so far, latest first.
    reached_checks: Vec<(i64, u32)>,
}

impl ExpiryQueue {
    /// Files a check of `entry`, whose key falls due at `due`.
    pub fn register(&mut self, due: i64, entry: u32) {
        let b = bucket(due);
        if self.buckets.is_reached(b) {
            insert_into_run(&mut self.reached_checks, (due, entry));
        } else {
            self.buckets.push(b, entry);
        }
    }

    /// Every entry whose key is due at `watermark` (due time <= watermark), in entry order;
    /// `due_of` answers when an entry's key falls due now, `None` for a free entry. The caller
    /// drops those keys before it files any new check.
    pub fn due(&mut self, watermark: i64, due_of: impl Fn(u32) -> Option<i64>) -> Vec<u32> {
        let mut out = Vec::new();
        loop {
            while let Some(&(due, entry)) = self.reached_checks.last() {
                if due > watermark {
                    break;
                }
                self.reached_checks.pop();
                match due_of(entry) {
                    Some(now_due) if now_due <= watermark => out.push(entry),
                    Some(now_due) => self.register(now_due, entry),
                    None => {}
                }
            }
            // Every reached check is earlier than every bucket ahead: none left due, none ahead.
            if !self.reached_checks.is_empty() {
                break;
            }
            let Some((b, entries)) = self.buckets.pop_reached(watermark) else {
                break;
            };
            for entry in entries {
                match due_of(entry) {
                    Some(due) if bucket(due) <= b => self.reached_checks.push((due, entry)),
                    Some(due) => self.register(due, entry),
                    None => {}
                }
            }
            self.reached_checks.sort_unstable_by(|x, y| y.cmp(x));
        }
        // An entry checked twice (a check re-filed beside the key's own) is handed out once.
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Op {
        /// Create a key in the lowest free entry (or a new one) with this newest event time.
        Create(i64),
        /// A newer event time for the key of entry (modulo the entries).
        Touch(u8, i64),
        /// The key of entry (modulo) goes away by itself (its state emptied).
        Drop(u8),
        Advance(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (-3_000i64..20_000).prop_map(Op::Create),
            3 => (any::<u8>(), 0i64..3_000).prop_map(|(e, by)| Op::Touch(e, by)),
            1 => any::<u8>().prop_map(Op::Drop),
            2 => (0i64..4_000).prop_map(Op::Advance),
        ]
    }

    const TTL: i64 = 1_500;

    proptest! {
        /// Against a scan of every key at every advance: the same keys are due, whatever the
        /// interleaving of creations, newer events, keys going away, entry reuse and advances.
        #[test]
        fn hands_out_exactly_the_keys_a_full_scan_finds_due(ops in proptest::collection::vec(op(), 0..300)) {
            // entry -> newest event time of the key it holds (absent: free)
            let mut live: BTreeMap<u32, i64> = BTreeMap::new();
            let mut next = 0u32;
            let mut q = ExpiryQueue::default();
            let mut watermark = -5_000i64;
            for op in ops {
                match op {
                    Op::Create(time) => {
                        let entry = (0..next).find(|e| !live.contains_key(e)).unwrap_or_else(|| {
                            next += 1;
                            next - 1
                        });
                        live.insert(entry, time);
                        q.register(time + TTL + 1, entry);
                    }
                    Op::Touch(e, by) if !live.is_empty() => {
                        let entry = *live.keys().nth(usize::from(e) % live.len()).unwrap();
                        *live.get_mut(&entry).unwrap() += by;
                    }
                    Op::Drop(e) if !live.is_empty() => {
                        let entry = *live.keys().nth(usize::from(e) % live.len()).unwrap();
                        live.remove(&entry);
                    }
                    Op::Touch(..) | Op::Drop(_) => {}
                    Op::Advance(by) => {
                        watermark += by;
                        let expected: Vec<u32> = live
                            .iter()
                            .filter(|(_, t)| **t + TTL < watermark)
                            .map(|(e, _)| *e)
                            .collect();
                        let got = q.due(watermark, |e| live.get(&e).map(|t| t + TTL + 1));
                        prop_assert_eq!(&got, &expected, "at watermark {}", watermark);
                        for e in got {
                            live.remove(&e);
                        }
                    }
                }
            }
        }
    }
}
