//! The keyed backend of one operator instance: the state of every key it owns, the newest
//! event time per key (for TTL), and the keys changed since the last checkpoint.
//!
//! Layout, for memory and speed at millions of keys: the entries live in one dense vector
//! (slots of removed keys are reused), and a hash table of 4-byte entry numbers (plus the
//! 4-byte hash, so growing never rereads a key) finds them. A hash map of whole entries would
//! leave half of its (large) buckets empty after it doubles; here an empty bucket costs 8
//! bytes. Changes are entry numbers, 4 bytes each, so draining costs O(changed keys). The two
//! flags of an entry (it holds a key; it is listed as changed) are bits beside the entries,
//! not fields of them: two bools would pad every entry by 8 bytes.
//!
//! Invariant: a live entry holds non-empty state; an update that leaves a key empty removes it.

use super::Key;
use super::index::{Index, prefetch};
use std::hash::{BuildHasher, Hasher};

#[derive(Debug)]
struct Entry<S> {
    key: Key,
    /// Newest event time applied to this key.
    last_time: i64,
    state: S,
}

/// One bit per entry.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, i: usize, on: bool) {
        if i / 64 >= self.0.len() {
            self.0.resize(i / 64 + 1, 0);
        }
        let word = &mut self.0[i / 64];
        if on {
            *word |= 1 << (i % 64);
        } else {
            *word &= !(1 << (i % 64));
        }
    }
}

/// One change since the last checkpoint.
#[derive(Debug, PartialEq)]
pub enum Change<'a, S> {
    /// The key's state is now this.
    Put(&'a Key, &'a S),
    /// The key has no state any more.
    Delete(Key),
}

/// Per-key state of one operator instance.
#[derive(Debug)]
pub struct KeyedState<S> {
    /// Entry number of every live key, by hash.
    index: Index,
    entries: Vec<Entry<S>>,
    /// Which entries hold a key (the others are free).
    occupied: Bits,
    /// Which entries are listed in `changed` with their key not yet drained.
    dirty: Bits,
    /// Numbers of free entries.
    free: Vec<u32>,
    live: usize,
    /// Entry numbers changed since the last drain (a number may repeat; the flag decides).
    changed: Vec<u32>,
    /// Keys removed since the last drain.
    removed: Vec<Key>,
}

impl<S> Default for KeyedState<S> {
    fn default() -> Self {
        KeyedState {
            index: Index::default(),
            entries: Vec::new(),
            occupied: Bits::default(),
            dirty: Bits::default(),
            free: Vec::new(),
            live: 0,
            changed: Vec::new(),
            removed: Vec::new(),
        }
    }
}

/// 32 well-mixed bits of the key's hash (FxHash's own low and middle bits are weak, so its
/// output is multiplied once more and the high half kept). Computed once per event, at
/// extraction, and carried with the key.
pub fn key_hash(key: &str) -> u32 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(key.as_bytes());
    (h.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}

impl<S: Default> KeyedState<S> {
    fn find(&self, key: &str) -> Option<usize> {
        self.find_hashed(key, key_hash(key))
    }

    fn find_hashed(&self, key: &str, hash: u32) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(hash, |i| entries[i as usize].key.as_str() == key)
            .map(|i| i as usize)
    }

    /// Brings the index slot of the key with `hash` into the cache (a hint: see [`Index`]).
    pub fn prefetch_slot(&self, hash: u32) {
        self.index.prefetch_slot(hash);
    }

    /// Brings the entry of the key with `hash` into the cache, once its slot is there.
    pub fn prefetch_entry(&self, hash: u32) {
        if let Some(entry) = self
            .index
            .likely_entry(hash)
            .and_then(|e| self.entries.get(e as usize))
        {
            prefetch(entry);
        }
    }

    /// The state of `key`.
    pub fn get(&self, key: &str) -> Option<&S> {
        self.find(key).map(|i| &self.entries[i].state)
    }

    /// The newest event time applied to `key`.
    pub fn last_time(&self, key: &str) -> Option<i64> {
        self.find(key).map(|i| self.entries[i].last_time)
    }

    fn mark(&mut self, i: usize) {
        if !self.dirty.get(i) {
            self.dirty.set(i, true);
            self.changed.push(i as u32);
        }
    }

    /// Puts a new live entry for `key`, whose hash is `h`; answers its number.
    fn insert(&mut self, key: Key, h: u32, state: S, last_time: i64, changed: bool) -> usize {
        let entry = Entry {
            key,
            last_time,
            state,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = entry;
                i as usize
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        self.index.insert(h, i as u32);
        self.occupied.set(i, true);
        self.dirty.set(i, changed);
        self.live += 1;
        if changed {
            self.changed.push(i as u32);
        }
        i
    }

    /// Frees entry `i`, remembering its key as removed.
    fn free_entry(&mut self, i: usize) {
        self.index.remove(key_hash(&self.entries[i].key), i as u32);
        let entry = &mut self.entries[i];
        entry.state = S::default();
        self.removed.push(std::mem::take(&mut entry.key));
        self.occupied.set(i, false);
        self.dirty.set(i, false);
        self.free.push(i as u32);
        self.live -= 1;
    }

    /// Runs `f` on the state of `key`, creating it (empty) when `create` is set. Records `time`
    /// as the key's newest event time, marks the key changed, and drops it when left empty.
    /// Returns `None` when the key had no state and `create` is false; else `f`'s result and,
    /// when the key was created, its entry number. `hash` is `key_hash(key)`.
    pub fn update<R>(
        &mut self,
        key: &Key,
        hash: u32,
        time: Option<i64>,
        create: bool,
        is_empty: impl Fn(&S) -> bool,
        f: impl FnOnce(&mut S) -> R,
    ) -> Option<(R, Option<u32>)> {
        debug_assert_eq!(hash, key_hash(key));
        if let Some(i) = self.find_hashed(key, hash) {
            let entry = &mut self.entries[i];
            let result = f(&mut entry.state);
            if let Some(t) = time {
                entry.last_time = entry.last_time.max(t);
            }
            if is_empty(&entry.state) {
                self.free_entry(i);
            } else {
                self.mark(i);
            }
            return Some((result, None));
        }
        if !create {
            return None;
        }
        let mut state = S::default();
        let result = f(&mut state);
        let created = (!is_empty(&state))
            .then(|| self.insert(key.clone(), hash, state, time.unwrap_or(i64::MIN), true) as u32);
        Some((result, created))
    }

    /// Lists `key` as changed again (its checkpoint failed): its current state, or its absence,
    /// goes into the next checkpoint.
    pub fn mark_changed(&mut self, key: &Key) {
        match self.find(key) {
            Some(i) => self.mark(i),
            None => self.removed.push(key.clone()),
        }
    }

    /// Puts restored state without marking it changed (it is what the checkpoint holds);
    /// `hash` is the key's [`key_hash`]. Answers the key's entry number.
    pub fn restore(&mut self, key: Key, hash: u32, state: S, last_time: i64) -> u32 {
        debug_assert_eq!(hash, key_hash(&key));
        let i = match self.find_hashed(&key, hash) {
            Some(i) => {
                let entry = &mut self.entries[i];
                entry.state = state;
                entry.last_time = last_time;
                i
            }
            None => self.insert(key, hash, state, last_time, false),
        };
        i as u32
    }

    /// The newest event time of the key in entry `i`, if the entry holds one. Entry numbers
    /// are reused once a key is gone: the key may not be the one the number was taken for.
    pub fn entry_last_time(&self, i: u32) -> Option<i64> {
        let i = i as usize;
        self.occupied.get(i).then(|| self.entries[i].last_time)
    }

    /// Drops the key in entry `i` (TTL expiry), which must hold one.
    pub fn remove_entry(&mut self, i: u32) {
        debug_assert!(self.occupied.get(i as usize));
        self.free_entry(i as usize);
    }

    /// Number of keys with state.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every key and its state, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &S)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, _)| self.occupied.get(*i))
            .map(|(_, e)| (&e.key, &e.state))
    }

    /// Number of keys changed since the last drain (an upper bound: a key may be counted as
    /// removed and changed).
    pub fn changed_len(&self) -> usize {
        self.changed.len() + self.removed.len()
    }

    /// Hands every change since the last drain to `sink`, once per key, and forgets them: the
    /// removals of keys that have no state now, then the keys' current states.
    pub fn drain_changes(&mut self, mut sink: impl FnMut(Change<'_, S>, i64)) {
        let mut removed = std::mem::take(&mut self.removed);
        removed.sort_unstable();
        removed.dedup();
        for key in removed {
            if self.find(&key).is_none() {
                sink(Change::Delete(key), 0);
            }
        }
        for i in std::mem::take(&mut self.changed) {
            // A freed entry's bit is cleared: only entries holding a key are still dirty.
            let i = i as usize;
            if self.dirty.get(i) {
                self.dirty.set(i, false);
                let entry = &self.entries[i];
                sink(Change::Put(&entry.key, &entry.state), entry.last_time);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(ks: &mut KeyedState<Vec<i32>>, key: &str, v: i32) {
        ks.update(
            &key.into(),
            key_hash(key),
            Some(i64::from(v)),
            true,
            Vec::is_empty,
            |s| s.push(v),
        );
    }

    fn drain(ks: &mut KeyedState<Vec<i32>>) -> Vec<String> {
        let mut out = Vec::new();
        ks.drain_changes(|c, _| {
            out.push(match c {
                Change::Put(k, s) => format!("put {k} {s:?}"),
                Change::Delete(k) => format!("del {k}"),
            })
        });
        out.sort();
        out
    }

    #[test]
    fn only_keys_changed_since_the_last_drain_are_handed_over() {
        let mut ks = KeyedState::default();
        add(&mut ks, "a", 1);
        add(&mut ks, "a", 2);
        add(&mut ks, "b", 3);
        assert_eq!(drain(&mut ks), ["put a [1, 2]", "put b [3]"]);
        assert_eq!(drain(&mut ks), Vec::<String>::new());
        add(&mut ks, "b", 4);
        assert_eq!(drain(&mut ks), ["put b [3, 4]"]);
    }

    #[test]
    fn a_key_left_empty_is_removed_and_drained_as_a_delete() {
        let mut ks = KeyedState::default();
        add(&mut ks, "a", 1);
        drain(&mut ks);
        ks.update(
            &"a".into(),
            key_hash("a"),
            None,
            false,
            Vec::is_empty,
            Vec::clear,
        );
        assert_eq!(ks.get("a"), None);
        assert_eq!(drain(&mut ks), ["del a"]);
    }

    #[test]
    fn creating_nothing_leaves_no_trace() {
        let mut ks: KeyedState<Vec<i32>> = KeyedState::default();
        ks.update(
            &"a".into(),
            key_hash("a"),
            Some(1),
            true,
            Vec::is_empty,
            |_| (),
        );
        assert!(ks.is_empty());
        assert_eq!(drain(&mut ks), Vec::<String>::new());
    }

    #[test]
    fn deleted_then_recreated_is_one_put() {
        let mut ks = KeyedState::default();
        add(&mut ks, "a", 1);
        drain(&mut ks);
        let entry = ks.find("a").expect("a has state") as u32;
        assert_eq!(ks.entry_last_time(entry), Some(1));
        ks.remove_entry(entry);
        assert_eq!(ks.entry_last_time(entry), None, "the entry is free");
        add(&mut ks, "a", 2);
        assert_eq!(drain(&mut ks), ["put a [2]"]);
    }

    #[test]
    fn last_time_is_the_newest_event_time() {
        let mut ks = KeyedState::default();
        add(&mut ks, "a", 5);
        add(&mut ks, "a", 3);
        assert_eq!(ks.last_time("a"), Some(5));
    }
}
