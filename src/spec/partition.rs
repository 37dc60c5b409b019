//! Partitions: a pipeline's 256 key groups split into `partitions` contiguous, even ranges
//! (the remainder spread over the first ones), and sets of key groups, which is what an
//! instance owns of a pipeline in cluster mode. No I/O.

use super::KEY_GROUPS;

/// The key groups `[first, last]` of partition `i` of `partitions` (see
/// [`super::PipelineSpec::key_groups`]). `partitions` is 1 to 256 and `i` below it.
pub fn partition_key_groups(partitions: u16, i: u16) -> [u32; 2] {
    let (p, i) = (u32::from(partitions.max(1)), u32::from(i));
    let (size, extra) = (KEY_GROUPS / p, KEY_GROUPS % p);
    let first = i * size + i.min(extra);
    let len = size + u32::from(i < extra);
    [first, first + len - 1]
}

/// The partition of `partitions` that holds `key_group`.
pub fn partition_of(partitions: u16, key_group: u32) -> u16 {
    let p = u32::from(partitions.max(1));
    let (size, extra) = (KEY_GROUPS / p, KEY_GROUPS % p);
    // The first `extra` partitions hold `size + 1` key groups each.
    let big = extra * (size + 1);
    let i = if key_group < big {
        key_group / (size + 1)
    } else {
        extra + (key_group - big) / size
    };
    i as u16
}

/// A set of key groups: what one instance applies of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyGroups([u64; 4]);

impl KeyGroups {
    /// Every key group (a single instance, or the only owner).
    pub const ALL: KeyGroups = KeyGroups([u64::MAX; 4]);
    /// No key group.
    pub const NONE: KeyGroups = KeyGroups([0; 4]);

    /// The key groups of partitions `ids` of `partitions`.
    pub fn of_partitions(partitions: u16, ids: impl IntoIterator<Item = u16>) -> KeyGroups {
        let mut set = KeyGroups::NONE;
        for id in ids {
            let [first, last] = partition_key_groups(partitions, id);
            (first..=last).for_each(|g| set.insert(g));
        }
        set
    }

    /// Adds `key_group` (below 256).
    pub fn insert(&mut self, key_group: u32) {
        self.0[(key_group / 64) as usize] |= 1 << (key_group % 64);
    }

    /// Whether `key_group` is in the set (one outside 0..256 never is).
    #[inline]
    pub fn contains(&self, key_group: u32) -> bool {
        key_group < KEY_GROUPS && self.0[(key_group / 64) as usize] & (1 << (key_group % 64)) != 0
    }

    /// Whether every key group is in the set.
    pub fn is_all(&self) -> bool {
        *self == KeyGroups::ALL
    }

    /// Whether no key group is in the set.
    pub fn is_empty(&self) -> bool {
        *self == KeyGroups::NONE
    }

    /// The set as maximal contiguous ranges `[first, last]`, in order.
    pub fn ranges(&self) -> Vec<[u32; 2]> {
        let mut ranges: Vec<[u32; 2]> = Vec::new();
        for g in (0..KEY_GROUPS).filter(|&g| self.contains(g)) {
            match ranges.last_mut() {
                Some(last) if last[1] + 1 == g => last[1] = g,
                _ => ranges.push([g, g]),
            }
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_holds_every_key_group() {
        assert_eq!(partition_key_groups(1, 0), [0, 255]);
        assert!((0..256).all(|g| partition_of(1, g) == 0));
    }

    #[test]
    fn the_remainder_goes_to_the_first_partitions() {
        let ranges: Vec<_> = (0..3).map(|i| partition_key_groups(3, i)).collect();
        assert_eq!(ranges, [[0, 85], [86, 170], [171, 255]]);
        assert_eq!(partition_key_groups(256, 255), [255, 255]);
    }

    #[test]
    fn partitions_cover_every_key_group_once_in_order() {
        for p in 1..=256u16 {
            let mut next = 0;
            for i in 0..p {
                let [first, last] = partition_key_groups(p, i);
                assert_eq!(first, next, "partitions={p} i={i}");
                assert!(last >= first);
                let len = last - first + 1;
                assert!(len == KEY_GROUPS / u32::from(p) || len == KEY_GROUPS / u32::from(p) + 1);
                next = last + 1;
            }
            assert_eq!(next, KEY_GROUPS);
        }
    }

    #[test]
    fn partition_of_names_the_partition_whose_range_holds_the_key_group() {
        for p in 1..=256u16 {
            for i in 0..p {
                let [first, last] = partition_key_groups(p, i);
                for g in first..=last {
                    assert_eq!(partition_of(p, g), i, "partitions={p} key group {g}");
                }
            }
        }
    }

    #[test]
    fn a_set_of_partitions_holds_exactly_their_key_groups() {
        let set = KeyGroups::of_partitions(3, [0, 2]);
        assert_eq!(set.ranges(), [[0, 85], [171, 255]]);
        assert!(set.contains(85) && !set.contains(86) && set.contains(255));
        assert!(!set.contains(256) && !KeyGroups::ALL.contains(1000));
        assert!(KeyGroups::of_partitions(3, 0..3).is_all());
        assert!(KeyGroups::of_partitions(3, []).is_empty());
        assert_eq!(KeyGroups::ALL.ranges(), [[0, 255]]);
    }
}
