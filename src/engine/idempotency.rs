//! Idempotency keys of a pipeline: the first answer of each key, kept while it is younger than
//! 24 hours and among the newest 1,000,000 keys (whichever is smaller), by arrival time of its
//! batch, so that reapplying the log at recovery rebuilds exactly the same set.

use super::sequencer::Ack;
use std::collections::{HashMap, VecDeque};

/// How long a key is kept, in ms.
pub const KEEP_MS: i64 = 24 * 3_600_000;
/// Most keys kept per pipeline.
pub const KEEP_KEYS: usize = 1_000_000;

/// One remembered answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyEntry {
    pub key: String,
    pub ack: Ack,
    /// Arrival time of the batch, epoch ms.
    pub created: i64,
    /// Sequence number of the batch, to wait until it is applied; `None` when it was applied
    /// before this process started (restored from a checkpoint).
    pub batch: Option<u64>,
}

/// The remembered answers, oldest first.
#[derive(Debug, Default)]
pub struct Idempotency {
    by_key: HashMap<String, IdempotencyEntry>,
    order: VecDeque<String>,
    /// Keys added since the last checkpoint took them.
    unsaved: Vec<String>,
}

impl Idempotency {
    /// The first answer of `key`, if remembered.
    pub fn get(&self, key: &str) -> Option<&IdempotencyEntry> {
        self.by_key.get(key)
    }

    /// Remembers an answer, forgetting what is too old or too many.
    pub fn insert(&mut self, entry: IdempotencyEntry) {
        let now = entry.created;
        self.order.push_back(entry.key.clone());
        self.unsaved.push(entry.key.clone());
        self.by_key.insert(entry.key.clone(), entry);
        while let Some(oldest) = self.order.front() {
            let expired = self
                .by_key
                .get(oldest)
                .is_none_or(|e| e.created < now - KEEP_MS);
            if !expired && self.order.len() <= KEEP_KEYS {
                break;
            }
            let key = self.order.pop_front().expect("checked");
            self.by_key.remove(&key);
        }
    }

    /// Restores a remembered answer (from a checkpoint), not marked unsaved.
    pub fn restore(&mut self, entry: IdempotencyEntry) {
        self.order.push_back(entry.key.clone());
        self.by_key.insert(entry.key.clone(), entry);
    }

    /// The answers added since the last call that are still remembered.
    pub fn take_unsaved(&mut self) -> Vec<IdempotencyEntry> {
        std::mem::take(&mut self.unsaved)
            .into_iter()
            .filter_map(|k| self.by_key.get(&k).cloned())
            .collect()
    }

    /// Marks answers unsaved again (their checkpoint failed).
    pub fn unsave(&mut self, entries: &[IdempotencyEntry]) {
        self.unsaved.extend(entries.iter().map(|e| e.key.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, created: i64) -> IdempotencyEntry {
        let ack = Ack {
            accepted: 1,
            first_offset: 1,
            last_offset: 1,
        };
        IdempotencyEntry {
            key: key.into(),
            ack,
            created,
            batch: Some(0),
        }
    }

    #[test]
    fn keys_older_than_a_day_are_forgotten() {
        let mut ids = Idempotency::default();
        ids.insert(entry("old", 0));
        ids.insert(entry("new", KEEP_MS));
        assert!(ids.get("old").is_some(), "exactly 24h old is kept");
        ids.insert(entry("newer", KEEP_MS + 1));
        assert!(ids.get("old").is_none());
        assert!(ids.get("new").is_some());
    }

    #[test]
    fn unsaved_keys_are_handed_over_once() {
        let mut ids = Idempotency::default();
        ids.insert(entry("a", 1));
        assert_eq!(ids.take_unsaved().len(), 1);
        assert!(ids.take_unsaved().is_empty());
        ids.unsave(&[entry("a", 1)]);
        assert_eq!(ids.take_unsaved().len(), 1);
    }
}
