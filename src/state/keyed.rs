//! The keyed backend of one operator instance: the state of every key it owns, the newest
//! event time per key (for TTL), and the set of keys changed since the last checkpoint.
//!
//! Invariant: a key present in the map holds non-empty state; an update that leaves a key
//! empty removes it. A key is in `changed` at most once while its slot is marked, so draining
//! the changes costs O(changed keys), not O(all keys).

use super::Key;
use rustc_hash::{FxHashMap, FxHashSet};

#[derive(Debug)]
struct Slot<S> {
    state: S,
    /// Newest event time applied to this key.
    last_time: i64,
    /// Whether the key is listed in `changed` as a put.
    changed: bool,
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
    slots: FxHashMap<Key, Slot<S>>,
    changed: Vec<Key>,
}

impl<S> Default for KeyedState<S> {
    fn default() -> Self {
        KeyedState {
            slots: FxHashMap::default(),
            changed: Vec::new(),
        }
    }
}

impl<S: Default> KeyedState<S> {
    /// The state of `key`.
    pub fn get(&self, key: &str) -> Option<&S> {
        self.slots.get(key).map(|slot| &slot.state)
    }

    /// The newest event time applied to `key`.
    pub fn last_time(&self, key: &str) -> Option<i64> {
        self.slots.get(key).map(|slot| slot.last_time)
    }

    /// Runs `f` on the state of `key`, creating it (empty) when `create` is set. Records `time`
    /// as the key's newest event time, marks the key changed, and drops it when left empty.
    /// Returns `None` when the key had no state and `create` is false.
    pub fn update<R>(
        &mut self,
        key: &Key,
        time: Option<i64>,
        create: bool,
        is_empty: impl Fn(&S) -> bool,
        f: impl FnOnce(&mut S) -> R,
    ) -> Option<R> {
        if let Some(slot) = self.slots.get_mut(key) {
            let result = f(&mut slot.state);
            if let Some(t) = time {
                slot.last_time = slot.last_time.max(t);
            }
            if !slot.changed {
                slot.changed = true;
                self.changed.push(key.clone());
            }
            if is_empty(&slot.state) {
                self.slots.remove(key);
            }
            return Some(result);
        }
        if !create {
            return None;
        }
        let mut state = S::default();
        let result = f(&mut state);
        if !is_empty(&state) {
            let slot = Slot {
                state,
                last_time: time.unwrap_or(i64::MIN),
                changed: true,
            };
            self.slots.insert(key.clone(), slot);
            self.changed.push(key.clone());
        }
        Some(result)
    }

    /// Drops `key` (TTL expiry); true when it had state.
    pub fn remove(&mut self, key: &Key) -> bool {
        match self.slots.remove(key) {
            Some(slot) => {
                if !slot.changed {
                    self.changed.push(key.clone());
                }
                true
            }
            None => false,
        }
    }

    /// Lists `key` as changed again (its checkpoint failed): its current state, or its absence,
    /// goes into the next checkpoint.
    pub fn mark_changed(&mut self, key: &Key) {
        match self.slots.get_mut(key) {
            Some(slot) if slot.changed => {}
            Some(slot) => {
                slot.changed = true;
                self.changed.push(key.clone());
            }
            None => self.changed.push(key.clone()),
        }
    }

    /// Puts restored state without marking it changed (it is what the checkpoint holds).
    pub fn restore(&mut self, key: Key, state: S, last_time: i64) {
        let slot = Slot {
            state,
            last_time,
            changed: false,
        };
        self.slots.insert(key, slot);
    }

    /// Number of keys with state.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every key and its state, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &S)> {
        self.slots.iter().map(|(k, slot)| (k, &slot.state))
    }

    /// Number of keys changed since the last drain (an upper bound: a key deleted and
    /// recreated may be listed twice).
    pub fn changed_len(&self) -> usize {
        self.changed.len()
    }

    /// Hands every change since the last drain to `sink`, once per key, and forgets them.
    pub fn drain_changes(&mut self, mut sink: impl FnMut(Change<'_, S>)) {
        let mut deleted = FxHashSet::default();
        for key in std::mem::take(&mut self.changed) {
            match self.slots.get_mut(&key) {
                Some(slot) if slot.changed => slot.changed = false,
                Some(_) => continue,
                None => {
                    if deleted.insert(key.clone()) {
                        sink(Change::Delete(key));
                    }
                    continue;
                }
            }
            let (key, slot) = self.slots.get_key_value(&key).expect("present above");
            sink(Change::Put(key, &slot.state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(ks: &mut KeyedState<Vec<i32>>, key: &str, v: i32) {
        ks.update(&key.into(), Some(i64::from(v)), true, Vec::is_empty, |s| {
            s.push(v)
        });
    }

    fn drain(ks: &mut KeyedState<Vec<i32>>) -> Vec<String> {
        let mut out = Vec::new();
        ks.drain_changes(|c| {
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
        ks.update(&"a".into(), None, false, Vec::is_empty, Vec::clear);
        assert_eq!(ks.get("a"), None);
        assert_eq!(drain(&mut ks), ["del a"]);
    }

    #[test]
    fn creating_nothing_leaves_no_trace() {
        let mut ks: KeyedState<Vec<i32>> = KeyedState::default();
        ks.update(&"a".into(), Some(1), true, Vec::is_empty, |_| ());
        assert!(ks.is_empty());
        assert_eq!(drain(&mut ks), Vec::<String>::new());
    }

    #[test]
    fn deleted_then_recreated_is_one_put() {
        let mut ks = KeyedState::default();
        add(&mut ks, "a", 1);
        drain(&mut ks);
        assert!(ks.remove(&"a".into()));
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
