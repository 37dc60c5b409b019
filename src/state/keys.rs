//! The keys of one shard, shared by its operators: each key is held and indexed once, with,
//! per operator, the number of its entry in that operator's [`KeyedState`](super::KeyedState).
//!
//! A key with state in three operators used to be copied and indexed three times (24 bytes
//! of key and some 17 of index slot each, at a million keys); here it costs one copy, one slot
//! and 4 bytes per operator. An event's items for its operators follow one another, so the
//! second and third lookups of its key find the slot and the key in cache.
//!
//! Invariant: an id is indexed (and its key held) exactly while some operator has an entry
//! for it; a free id holds an empty key and no entries.

use super::Key;
use super::index::{Index, prefetch};
use super::keyed::key_hash;

/// The keys of one shard and their entries per operator.
#[derive(Debug)]
pub struct KeyTable {
    /// Id of every key, by hash.
    index: Index,
    /// Keys by id.
    keys: Vec<Key>,
    /// `operators` numbers per id: entry number + 1 in that operator's state, 0 for none.
    entries: Vec<u32>,
    operators: usize,
    /// Free ids.
    free: Vec<u32>,
}

impl KeyTable {
    /// The table of a shard running `operators` operators.
    pub fn new(operators: usize) -> KeyTable {
        KeyTable {
            index: Index::default(),
            keys: Vec::new(),
            entries: Vec::new(),
            operators: operators.max(1),
            free: Vec::new(),
        }
    }

    /// The id of `key`, whose hash is `hash`.
    pub fn find(&self, key: &str, hash: u32) -> Option<u32> {
        debug_assert_eq!(hash, key_hash(key));
        let keys = &self.keys;
        self.index
            .find(hash, |id| keys[id as usize].as_str() == key)
    }

    /// The key of id `id`.
    pub fn key(&self, id: u32) -> &Key {
        &self.keys[id as usize]
    }

    fn at(&self, id: u32, operator: usize) -> usize {
        id as usize * self.operators + operator
    }

    /// The entry number of key `id` in operator `operator`'s state.
    pub fn entry(&self, id: u32, operator: usize) -> Option<u32> {
        self.entries[self.at(id, operator)].checked_sub(1)
    }

    /// Adds `key` (hash `hash`), which must not be held, with no entries; answers its id.
    pub fn add(&mut self, key: &Key, hash: u32) -> u32 {
        debug_assert!(self.find(key, hash).is_none());
        let id = match self.free.pop() {
            Some(id) => {
                self.keys[id as usize] = key.clone();
                id
            }
            None => {
                self.keys.push(key.clone());
                self.entries.resize(self.entries.len() + self.operators, 0);
                (self.keys.len() - 1) as u32
            }
        };
        self.index.insert(hash, id);
        id
    }

    /// Sets operator `operator`'s entry for key `id`; a key left with no entry in any operator
    /// is dropped and its id freed.
    pub fn set_entry(&mut self, id: u32, operator: usize, entry: Option<u32>) {
        let at = self.at(id, operator);
        self.entries[at] = entry.map_or(0, |e| e + 1);
        if entry.is_some() {
            return;
        }
        let first = self.at(id, 0);
        if self.entries[first..first + self.operators]
            .iter()
            .all(|&e| e == 0)
        {
            let key = std::mem::take(&mut self.keys[id as usize]);
            self.index.remove(key_hash(&key), id);
            self.free.push(id);
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len() - self.free.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings the index slot of the key with `hash` into the cache (a hint).
    pub fn prefetch_slot(&self, hash: u32) {
        self.index.prefetch_slot(hash);
    }

    /// Brings the key with `hash`, and its entry numbers, into the cache, once its slot is
    /// there (a hint).
    pub fn prefetch_key(&self, hash: u32) {
        if let Some(id) = self.index.likely_entry(hash) {
            if let Some(key) = self.keys.get(id as usize) {
                prefetch(key);
            }
            if let Some(entry) = self.entries.get(id as usize * self.operators) {
                prefetch(entry);
            }
        }
    }

    /// Operator `operator`'s entry number for the key with `hash`, most likely (unverified:
    /// for a prefetch only).
    pub fn likely_entry(&self, hash: u32, operator: usize) -> Option<u32> {
        let id = self.index.likely_entry(hash)?;
        self.entries
            .get(id as usize * self.operators + operator)?
            .checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Against a map of (key, operator) to entry: a key is found exactly while some
        /// operator has an entry for it, with the entries it was given, and freed ids are
        /// reused without mixing keys up.
        #[test]
        fn holds_a_key_while_an_operator_has_an_entry(ops in proptest::collection::vec((0u8..12, 0usize..3, proptest::option::of(0u32..1000)), 0..300)) {
            let mut table = KeyTable::new(3);
            let mut model: BTreeMap<(String, usize), u32> = BTreeMap::new();
            for (k, operator, entry) in ops {
                let key: Key = format!("key{k}").into();
                let hash = key_hash(&key);
                match entry {
                    Some(entry) => {
                        let id = table.find(&key, hash).unwrap_or_else(|| table.add(&key, hash));
                        table.set_entry(id, operator, Some(entry));
                        model.insert((key.to_string(), operator), entry);
                    }
                    None => {
                        if let Some(id) = table.find(&key, hash) {
                            table.set_entry(id, operator, None);
                        }
                        model.remove(&(key.to_string(), operator));
                    }
                }
                for k in 0u8..12 {
                    let key = format!("key{k}");
                    let id = table.find(&key, key_hash(&key));
                    let held = model.keys().any(|(m, _)| *m == key);
                    prop_assert_eq!(id.is_some(), held, "{}", key);
                    if let Some(id) = id {
                        prop_assert_eq!(table.key(id).as_str(), key.as_str());
                        for operator in 0..3 {
                            prop_assert_eq!(table.entry(id, operator), model.get(&(key.clone(), operator)).copied());
                        }
                    }
                }
                let distinct: std::collections::BTreeSet<&String> = model.keys().map(|(k, _)| k).collect();
                prop_assert_eq!(table.len(), distinct.len());
            }
        }
    }
}
