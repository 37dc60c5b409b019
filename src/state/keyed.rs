//! The keyed backend of one operator instance: the state of every key it owns, the newest
//! event time per key (for TTL), and the keys changed since the last checkpoint.
//!
//! Layout, for memory and speed at millions of keys: the entries live in one dense vector
//! (slots of removed keys are reused); the keys themselves, and the index that finds them,
//! are the shard's [`KeyTable`], shared by its operators, which keeps each key's entry number
//! per operator. An entry names its key by id (4 bytes, not a 24-byte copy, kept beside the
//! entries: the hot path never reads it, and inside an entry it would be padded to 8); a free
//! entry's id is `FREE`. Whether an entry changed since the last drain is a bit beside the
//! entries, not a field (a bool would pad every entry by 8 bytes); a drain scans the bits (a
//! word per 64 entries), so a changed key costs no more than its bit.
//!
//! Invariant: a live entry holds non-empty state, and the key table names it as its key's
//! entry for this operator; an update that leaves a key empty removes it.

use super::Key;
use super::index::prefetch;
use super::keys::KeyTable;
use std::hash::{BuildHasher, Hasher};

#[derive(Debug)]
struct Entry<S> {
    /// Newest event time applied to this key.
    last_time: i64,
    state: S,
}

/// The id of a free entry.
const FREE: u32 = u32::MAX;

/// One bit per entry.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The numbers of the set bits, in order, clearing them.
    fn drain(&mut self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter_mut().enumerate().flat_map(|(w, word)| {
            let mut bits = std::mem::take(word);
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + bit
                })
            })
        })
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

/// Per-key state of one operator instance: operator `operator` of its shard's key table.
#[derive(Debug)]
pub struct KeyedState<S> {
    operator: usize,
    entries: Vec<Entry<S>>,
    /// The key id of each entry, `FREE` for a free one.
    ids: Vec<u32>,
    /// Which entries changed since the last drain (found by a scan of the bits at a drain:
    /// 1,000,000 entries are 16,000 words, where a list of entry numbers would take 4 bytes
    /// a changed key).
    dirty: Bits,
    /// How many bits of `dirty` are set.
    dirty_count: usize,
    /// Numbers of free entries.
    free: Vec<u32>,
    /// Keys removed since the last drain.
    removed: Vec<Key>,
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
    /// The state of operator `operator` of a shard's key table.
    pub fn new(operator: usize) -> KeyedState<S> {
        KeyedState {
            operator,
            entries: Vec::new(),
            ids: Vec::new(),
            dirty: Bits::default(),
            free: Vec::new(),
            dirty_count: 0,
            removed: Vec::new(),
        }
    }

    fn holds_key(&self, i: usize) -> bool {
        self.ids.get(i).is_some_and(|&id| id != FREE)
    }

    fn find(&self, keys: &KeyTable, key: &str, hash: u32) -> Option<usize> {
        let id = keys.find(key, hash)?;
        keys.entry(id, self.operator).map(|e| e as usize)
    }

    /// Brings the entry of the key with `hash` into the cache, once the key table's slot and
    /// entry numbers are there (a hint).
    pub fn prefetch_entry(&self, keys: &KeyTable, hash: u32) {
        if let Some(entry) = keys
            .likely_entry(hash, self.operator)
            .and_then(|e| self.entries.get(e as usize))
        {
            prefetch(entry);
        }
    }

    /// The state of `key`.
    pub fn get(&self, keys: &KeyTable, key: &str) -> Option<&S> {
        self.find(keys, key, key_hash(key))
            .map(|i| &self.entries[i].state)
    }

    fn mark(&mut self, i: usize) {
        if !self.dirty.get(i) {
            self.dirty.set(i, true);
            self.dirty_count += 1;
        }
    }

    /// Puts a new live entry for key `id`; answers its number.
    fn insert(
        &mut self,
        keys: &mut KeyTable,
        id: u32,
        state: S,
        last_time: i64,
        changed: bool,
    ) -> usize {
        let entry = Entry { last_time, state };
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = entry;
                self.ids[i as usize] = id;
                i as usize
            }
            None => {
                self.entries.push(entry);
                self.ids.push(id);
                self.entries.len() - 1
            }
        };
        keys.set_entry(id, self.operator, Some(i as u32));
        self.dirty.set(i, changed);
        self.dirty_count += usize::from(changed);
        i
    }

    /// Frees entry `i`, remembering its key as removed.
    fn free_entry(&mut self, keys: &mut KeyTable, i: usize) {
        self.entries[i].state = S::default();
        let id = std::mem::replace(&mut self.ids[i], FREE);
        self.removed.push(keys.key(id).clone());
        keys.set_entry(id, self.operator, None);
        self.dirty_count -= usize::from(self.dirty.get(i));
        self.dirty.set(i, false);
        self.free.push(i as u32);
    }

    /// Runs `f` on the state of `key`, creating it (empty) when `create` is set. Records `time`
    /// as the key's newest event time, marks the key changed, and drops it when left empty.
    /// Returns `None` when the key had no state and `create` is false; else `f`'s result and,
    /// when the key was created, its entry number. `hash` is `key_hash(key)`.
    #[allow(clippy::too_many_arguments)]
    pub fn update<R>(
        &mut self,
        keys: &mut KeyTable,
        key: &Key,
        hash: u32,
        time: Option<i64>,
        create: bool,
        is_empty: impl Fn(&S) -> bool,
        f: impl FnOnce(&mut S) -> R,
    ) -> Option<(R, Option<u32>)> {
        let id = keys.find(key, hash);
        if let Some(i) = id.and_then(|id| keys.entry(id, self.operator)) {
            let i = i as usize;
            let entry = &mut self.entries[i];
            let result = f(&mut entry.state);
            if let Some(t) = time {
                entry.last_time = entry.last_time.max(t);
            }
            if is_empty(&entry.state) {
                self.free_entry(keys, i);
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
        let created = (!is_empty(&state)).then(|| {
            let id = id.unwrap_or_else(|| keys.add(key, hash));
            self.insert(keys, id, state, time.unwrap_or(i64::MIN), true) as u32
        });
        Some((result, created))
    }

    /// Lists `key` as changed again (its checkpoint failed): its current state, or its absence,
    /// goes into the next checkpoint.
    pub fn mark_changed(&mut self, keys: &KeyTable, key: &Key) {
        match self.find(keys, key, key_hash(key)) {
            Some(i) => self.mark(i),
            None => self.removed.push(key.clone()),
        }
    }

    /// Puts restored state without marking it changed (it is what the checkpoint holds);
    /// `hash` is the key's [`key_hash`]. Answers the key's entry number.
    pub fn restore(
        &mut self,
        keys: &mut KeyTable,
        key: &Key,
        hash: u32,
        state: S,
        last_time: i64,
    ) -> u32 {
        let id = keys.find(key, hash);
        let i = match id.and_then(|id| keys.entry(id, self.operator)) {
            Some(i) => {
                let i = i as usize;
                let entry = &mut self.entries[i];
                entry.state = state;
                entry.last_time = last_time;
                i
            }
            None => {
                let id = id.unwrap_or_else(|| keys.add(key, hash));
                self.insert(keys, id, state, last_time, false)
            }
        };
        i as u32
    }

    /// The newest event time of the key in entry `i`, if the entry holds one. Entry numbers
    /// are reused once a key is gone: the key may not be the one the number was taken for.
    pub fn entry_last_time(&self, i: u32) -> Option<i64> {
        let i = i as usize;
        self.holds_key(i).then(|| self.entries[i].last_time)
    }

    /// Drops the key in entry `i` (TTL expiry), which must hold one.
    pub fn remove_entry(&mut self, keys: &mut KeyTable, i: u32) {
        debug_assert!(self.holds_key(i as usize));
        self.free_entry(keys, i as usize);
    }

    /// Number of keys with state.
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key and its state, in no particular order.
    pub fn iter<'a>(&'a self, keys: &'a KeyTable) -> impl Iterator<Item = (&'a Key, &'a S)> {
        self.entries
            .iter()
            .zip(&self.ids)
            .filter(|(_, id)| **id != FREE)
            .map(|(e, &id)| (keys.key(id), &e.state))
    }

    /// Number of keys changed since the last drain (an upper bound: a key may be counted as
    /// removed and changed).
    pub fn changed_len(&self) -> usize {
        self.dirty_count + self.removed.len()
    }

    /// Hands every change since the last drain to `sink`, once per key, and forgets them: the
    /// removals of keys that have no state now, then the keys' current states.
    pub fn drain_changes(&mut self, keys: &KeyTable, mut sink: impl FnMut(Change<'_, S>, i64)) {
        let mut removed = std::mem::take(&mut self.removed);
        removed.sort_unstable();
        removed.dedup();
        for key in removed {
            if self.find(keys, &key, key_hash(&key)).is_none() {
                sink(Change::Delete(key), 0);
            }
        }
        // A freed entry's bit is cleared: only entries holding a key are dirty.
        for i in self.dirty.drain() {
            let entry = &self.entries[i];
            sink(
                Change::Put(keys.key(self.ids[i]), &entry.state),
                entry.last_time,
            );
        }
        self.dirty_count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two operators over one shard's key table.
    struct Shard {
        keys: KeyTable,
        ops: [KeyedState<Vec<i32>>; 2],
    }

    impl Shard {
        fn new() -> Shard {
            Shard {
                keys: KeyTable::new(2),
                ops: [KeyedState::new(0), KeyedState::new(1)],
            }
        }

        fn add(&mut self, op: usize, key: &str, v: i32) {
            self.ops[op].update(
                &mut self.keys,
                &key.into(),
                key_hash(key),
                Some(i64::from(v)),
                true,
                Vec::is_empty,
                |s| s.push(v),
            );
        }

        fn clear(&mut self, op: usize, key: &str) {
            self.ops[op].update(
                &mut self.keys,
                &key.into(),
                key_hash(key),
                None,
                false,
                Vec::is_empty,
                Vec::clear,
            );
        }

        fn get(&self, op: usize, key: &str) -> Option<&Vec<i32>> {
            self.ops[op].get(&self.keys, key)
        }

        fn drain(&mut self, op: usize) -> Vec<String> {
            let mut out = Vec::new();
            self.ops[op].drain_changes(&self.keys, |c, _| {
                out.push(match c {
                    Change::Put(k, s) => format!("put {k} {s:?}"),
                    Change::Delete(k) => format!("del {k}"),
                })
            });
            out.sort();
            out
        }
    }

    #[test]
    fn only_keys_changed_since_the_last_drain_are_handed_over() {
        let mut sh = Shard::new();
        sh.add(0, "a", 1);
        sh.add(0, "a", 2);
        sh.add(0, "b", 3);
        assert_eq!(sh.drain(0), ["put a [1, 2]", "put b [3]"]);
        assert_eq!(sh.drain(0), Vec::<String>::new());
        sh.add(0, "b", 4);
        assert_eq!(sh.drain(0), ["put b [3, 4]"]);
    }

    #[test]
    fn a_key_left_empty_is_removed_and_drained_as_a_delete() {
        let mut sh = Shard::new();
        sh.add(0, "a", 1);
        sh.drain(0);
        sh.clear(0, "a");
        assert_eq!(sh.get(0, "a"), None);
        assert_eq!(sh.drain(0), ["del a"]);
        assert!(
            sh.keys.is_empty(),
            "no operator holds a: the table lets it go"
        );
    }

    #[test]
    fn operators_share_a_key_and_each_keeps_its_own_state() {
        let mut sh = Shard::new();
        sh.add(0, "a", 1);
        sh.add(1, "a", 2);
        sh.add(1, "b", 3);
        assert_eq!(sh.keys.len(), 2);
        assert_eq!(sh.get(0, "a"), Some(&vec![1]));
        assert_eq!(sh.get(1, "a"), Some(&vec![2]));
        assert_eq!(sh.get(0, "b"), None);
        sh.clear(1, "a");
        assert_eq!(sh.get(0, "a"), Some(&vec![1]), "operator 0 still holds a");
        assert_eq!(sh.keys.len(), 2);
        sh.clear(0, "a");
        assert_eq!(sh.keys.len(), 1, "a is gone, b stays");
        sh.add(0, "c", 4);
        assert_eq!(
            sh.get(0, "c"),
            Some(&vec![4]),
            "a reused id holds its new key"
        );
        assert_eq!(sh.get(1, "b"), Some(&vec![3]));
        let listed: Vec<(&Key, &Vec<i32>)> = sh.ops[1].iter(&sh.keys).collect();
        assert_eq!(listed, [(&Key::from("b"), &vec![3])]);
        assert_eq!(sh.drain(1), ["del a", "put b [3]"]);
    }

    #[test]
    fn creating_nothing_leaves_no_trace() {
        let mut sh = Shard::new();
        sh.ops[0].update(
            &mut sh.keys,
            &"a".into(),
            key_hash("a"),
            Some(1),
            true,
            Vec::is_empty,
            |_| (),
        );
        assert!(sh.ops[0].is_empty());
        assert!(sh.keys.is_empty());
        assert_eq!(sh.drain(0), Vec::<String>::new());
    }

    #[test]
    fn deleted_then_recreated_is_one_put() {
        let mut sh = Shard::new();
        sh.add(0, "a", 5);
        sh.add(0, "a", 3);
        sh.drain(0);
        let entry = sh.ops[0]
            .find(&sh.keys, "a", key_hash("a"))
            .expect("a has state") as u32;
        assert_eq!(
            sh.ops[0].entry_last_time(entry),
            Some(5),
            "the newest event time"
        );
        sh.ops[0].remove_entry(&mut sh.keys, entry);
        assert_eq!(sh.ops[0].entry_last_time(entry), None, "the entry is free");
        sh.add(0, "a", 2);
        assert_eq!(sh.drain(0), ["put a [2]"]);
    }
}
