//! The key index of a keyed backend: an open-addressing table with linear probing whose slots
//! are one `u64` each, the key's 32-bit hash and its entry number. Written here rather than
//! taken from hashbrown for one reason: a shard knows the keys of a whole batch before it
//! applies them, and this table can say where a key's slot is (to prefetch it) and, once that
//! slot is in cache, which entry it names (to prefetch that too), so the cache misses of many
//! lookups overlap instead of following one another.
//!
//! Invariants: the table is empty or its length is a power of two, at most 3/4 full; a slot
//! is 0 when free, else `hash << 32 | (entry + 1)`; every key sits at or after its home slot
//! with no free slot in between (deletion shifts later keys back to keep it so).

/// Key index: 32-bit hash to entry number.
#[derive(Debug, Default)]
pub(crate) struct Index {
    slots: Vec<u64>,
    len: usize,
}

fn pack(hash: u32, entry: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(entry + 1)
}

fn hash_of(slot: u64) -> u32 {
    (slot >> 32) as u32
}

fn entry_of(slot: u64) -> u32 {
    (slot as u32) - 1
}

impl Index {
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask()
    }

    /// The entry whose key has `hash` and satisfies `is_key`.
    pub fn find(&self, hash: u32, is_key: impl Fn(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut at = self.home(hash);
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if hash_of(slot) == hash && is_key(entry_of(slot)) {
                return Some(entry_of(slot));
            }
            at = (at + 1) & self.mask();
        }
    }

    /// Adds `entry` under `hash` (the key must not be present).
    pub fn insert(&mut self, hash: u32, entry: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(pack(hash, entry));
        self.len += 1;
    }

    fn place(&mut self, slot: u64) {
        let mut at = self.home(hash_of(slot));
        while self.slots[at] != 0 {
            at = (at + 1) & self.mask();
        }
        self.slots[at] = slot;
    }

    // Deliberately not `vec![0; size]`: see below.
    #[allow(clippy::slow_vector_initialization)]
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        // Zeros written, not calloc'ed: a calloc'ed page is first mapped to the shared zero
        // page by `place`'s read, then copied on its first write, and every such copy flushes
        // the TLB of each core running the process (an interrupt to each: a fifth of a
        // restore's time went there).
        let mut slots = Vec::with_capacity(size);
        slots.resize(size, 0);
        let old = std::mem::replace(&mut self.slots, slots);
        for slot in old.into_iter().filter(|s| *s != 0) {
            self.place(slot);
        }
    }

    /// Removes `entry`, filed under `hash`.
    pub fn remove(&mut self, hash: u32, entry: u32) {
        let target = pack(hash, entry);
        let mut hole = self.home(hash);
        while self.slots[hole] != target {
            assert!(
                self.slots[hole] != 0,
                "removing an entry that is not indexed"
            );
            hole = (hole + 1) & self.mask();
        }
        // Shift back every later key of the run that may sit in the hole.
        let mut at = hole;
        loop {
            at = (at + 1) & self.mask();
            let slot = self.slots[at];
            if slot == 0 {
                break;
            }
            let home = self.home(hash_of(slot));
            if (at.wrapping_sub(home) & self.mask()) >= (at.wrapping_sub(hole) & self.mask()) {
                self.slots[hole] = slot;
                hole = at;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
    }

    /// Asks the CPU to fetch the home slot of `hash`.
    pub fn prefetch_slot(&self, hash: u32) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.home(hash)]);
        }
    }

    /// The entry in the home slot of `hash`, if its hash matches: most likely the key's entry,
    /// worth a prefetch (unverified: the caller only prefetches it).
    pub fn likely_entry(&self, hash: u32) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = self.slots[self.home(hash)];
        (slot != 0 && hash_of(slot) == hash).then(|| entry_of(slot))
    }
}

/// A hint to bring the cache line of `value` in; no effect on what the program computes.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults nor changes memory; the pointer is a valid reference.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Key `k`'s hash: few distinct values, so keys share home slots (some at the end of the
    /// table, so runs wrap around) and even whole hashes.
    fn hash(k: u32) -> u32 {
        (k % 7).wrapping_sub(3) ^ ((k % 3) << 28)
    }

    proptest! {
        /// Against a HashMap: runs collide, wrap around the end of the table and shift back
        /// on removal, and equal hashes are told apart by the key.
        #[test]
        fn answers_as_a_map_would(ops in proptest::collection::vec((any::<bool>(), 0u32..40), 0..400)) {
            let mut index = Index::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            let mut key_of_entry: Vec<u32> = Vec::new();
            for (insert, key) in ops {
                let found = index.find(hash(key), |e| key_of_entry[e as usize] == key);
                prop_assert_eq!(found, model.get(&key).copied());
                match (insert, found) {
                    (true, None) => {
                        let entry = key_of_entry.len() as u32;
                        key_of_entry.push(key);
                        index.insert(hash(key), entry);
                        model.insert(key, entry);
                    }
                    (false, Some(entry)) => {
                        index.remove(hash(key), entry);
                        model.remove(&key);
                    }
                    _ => {}
                }
                prop_assert_eq!(index.len, model.len());
                for (k, e) in &model {
                    prop_assert_eq!(index.find(hash(*k), |x| key_of_entry[x as usize] == *k), Some(*e));
                }
            }
        }
    }
}
