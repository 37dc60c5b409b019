//! Partition assignment: decides which live member should own each partition
//! of a pipeline, as the list of moves away from the current leases.
//!
//! Every instance runs [`assign`] on the same view of leases and members and
//! carries out only the moves that concern itself, so the answer must be a
//! pure function of its input. Invariants of the result:
//!
//! - **complete**: every partition ends up with a live member;
//! - **balanced**: every member ends with `floor(P/n)` or `ceil(P/n)`;
//! - **sticky**: a partition leaves a live owner only if that owner holds more
//!   than its target, so the number of moves is the minimum possible and an
//!   assignment that is already complete and balanced produces no moves;
//! - **deterministic**: only sorted collections are iterated and every tie is
//!   broken by (load, name), so the order of `members` does not matter.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// A partition changing hands: `from` is its current owner (None: unowned, or
/// its owner is no longer a live member).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The partition id (its index in `current`).
    pub partition: u16,
    /// The live member giving the partition up, if any.
    pub from: Option<String>,
    /// The member that should own the partition.
    pub to: String,
}

/// Who should own each of a pipeline's partitions, as the moves from `current`.
///
/// `members`: the live members (any order, no duplicates; may be empty → no
/// moves). `current[i]`: the owner of partition i now (None or a node not in
/// `members` means it needs a new owner); at most 65 536 partitions, as ids
/// are `u16`. `load`: how many partitions of OTHER pipelines each member owns
/// (missing = 0); used only to break ties, so that pipelines with few
/// partitions do not all land on the same member.
///
/// Moves are sorted by partition id, at most one per partition, and never
/// from a member to itself.
pub fn assign(
    members: &[String],
    current: &[Option<String>],
    load: &BTreeMap<String, usize>,
) -> Vec<Move> {
    if members.is_empty() {
        return Vec::new();
    }
    let (mut held, orphans) = holdings(members, current);
    let load_of = |m: &str| load.get(m).copied().unwrap_or(0);
    let targets = targets(&held, current.len().min(PARTITION_IDS), load_of);
    let mut pool: Vec<(u16, Option<&str>)> = orphans.into_iter().map(|p| (p, None)).collect();
    pool.extend(trim(&mut held, &targets));
    pool.sort_unstable();
    hand_out(&pool, &held, &targets, load_of)
}

/// `current` with `moves` carried out. Moves naming a partition outside
/// `current` are ignored.
pub fn apply(current: &[Option<String>], moves: &[Move]) -> Vec<Option<String>> {
    let mut next = current.to_vec();
    for m in moves {
        if let Some(owner) = next.get_mut(usize::from(m.partition)) {
            *owner = Some(m.to.clone());
        }
    }
    next
}

/// How many partition ids a `u16` can name.
const PARTITION_IDS: usize = 1 << 16;

/// Partitions held per live member (every member present, lists ascending)
/// and the partitions without a live owner (ascending).
fn holdings<'a>(
    members: &'a [String],
    current: &[Option<String>],
) -> (BTreeMap<&'a str, Vec<u16>>, Vec<u16>) {
    let mut held: BTreeMap<&str, Vec<u16>> =
        members.iter().map(|m| (m.as_str(), Vec::new())).collect();
    let mut orphans = Vec::new();
    // The inclusive range stops at u16::MAX instead of overflowing.
    for (owner, id) in current.iter().zip(0..=u16::MAX) {
        match owner.as_deref().and_then(|o| held.get_mut(o)) {
            Some(list) => list.push(id),
            None => orphans.push(id),
        }
    }
    (held, orphans)
}

/// Each member's target count. The `total % n` ceil targets go to the members
/// holding the most already (this keeps the most partitions in place), then to
/// the least loaded, then by name.
fn targets<'a>(
    held: &BTreeMap<&'a str, Vec<u16>>,
    total: usize,
    load_of: impl Fn(&str) -> usize,
) -> BTreeMap<&'a str, usize> {
    let n = held.len().max(1);
    let (base, extra) = (total / n, total % n);
    let mut order: Vec<&str> = held.keys().copied().collect();
    order.sort_by_key(|m| (Reverse(held[m].len()), load_of(m), *m));
    order
        .into_iter()
        .enumerate()
        .map(|(rank, m)| (m, base + usize::from(rank < extra)))
        .collect()
}

/// Cuts every member down to its target, keeping its lowest-numbered
/// partitions; returns what was cut, with the member it came from.
fn trim<'a>(
    held: &mut BTreeMap<&'a str, Vec<u16>>,
    targets: &BTreeMap<&'a str, usize>,
) -> Vec<(u16, Option<&'a str>)> {
    let mut surplus = Vec::new();
    for (member, list) in held.iter_mut() {
        let keep = targets.get(member).copied().unwrap_or(0);
        if list.len() > keep {
            surplus.extend(list.drain(keep..).map(|p| (p, Some(*member))));
        }
    }
    surplus
}

/// Hands `pool` out in increasing partition id, each partition to the
/// under-target member with the fewest partitions of this pipeline so far,
/// then the least load, then the lowest name. The pool size equals the total
/// shortfall, so every partition finds a receiver.
fn hand_out(
    pool: &[(u16, Option<&str>)],
    held: &BTreeMap<&str, Vec<u16>>,
    targets: &BTreeMap<&str, usize>,
    load_of: impl Fn(&str) -> usize,
) -> Vec<Move> {
    let mut wanting: BTreeSet<(usize, usize, &str)> = held
        .iter()
        .filter(|(m, list)| list.len() < targets.get(*m).copied().unwrap_or(0))
        .map(|(m, list)| (list.len(), load_of(m), *m))
        .collect();
    let mut moves = Vec::with_capacity(pool.len());
    for &(partition, from) in pool {
        let Some((count, load, to)) = wanting.pop_first() else {
            break;
        };
        if count + 1 < targets.get(to).copied().unwrap_or(0) {
            wanting.insert((count + 1, load, to));
        }
        moves.push(Move {
            partition,
            from: from.map(str::to_owned),
            to: to.to_owned(),
        });
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn owners(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|o| o.map(str::to_owned)).collect()
    }

    fn loads(list: &[(&str, usize)]) -> BTreeMap<String, usize> {
        list.iter().map(|(m, l)| (m.to_string(), *l)).collect()
    }

    fn mv(partition: u16, from: Option<&str>, to: &str) -> Move {
        Move {
            partition,
            from: from.map(str::to_owned),
            to: to.to_owned(),
        }
    }

    /// Partitions per live member (members holding none included).
    fn counts(members: &[String], owners: &[Option<String>]) -> BTreeMap<String, usize> {
        let mut c: BTreeMap<String, usize> = members.iter().map(|m| (m.clone(), 0)).collect();
        for o in owners.iter().flatten() {
            if let Some(n) = c.get_mut(o) {
                *n += 1;
            }
        }
        c
    }

    /// A balanced assignment of `p` partitions over `members`, round robin.
    fn round_robin(members: &[&str], p: usize) -> Vec<Option<String>> {
        (0..p)
            .map(|i| Some(members[i % members.len()].to_string()))
            .collect()
    }

    #[test]
    fn nothing_moves_when_nothing_changed() {
        let members = names(&["a", "b", "c"]);
        let current = round_robin(&["a", "b", "c"], 8);
        assert!(assign(&members, &current, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn no_members_means_no_moves() {
        let current = owners(&[None, Some("a")]);
        assert!(assign(&[], &current, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn unowned_partitions_are_spread_evenly() {
        let members = names(&["b", "a"]);
        let moves = assign(&members, &[None, None, None, None], &BTreeMap::new());
        let expected = vec![
            mv(0, None, "a"),
            mv(1, None, "b"),
            mv(2, None, "a"),
            mv(3, None, "b"),
        ];
        assert_eq!(moves, expected);
    }

    #[test]
    fn a_new_member_takes_partitions_from_the_busiest() {
        let members = names(&["a", "b", "c"]);
        // a holds 3, b holds 3; c joins with a target of 2.
        let current = owners(&[
            Some("a"),
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("b"),
        ]);
        let moves = assign(&members, &current, &BTreeMap::new());
        assert_eq!(moves, vec![mv(2, Some("a"), "c"), mv(5, Some("b"), "c")]);
    }

    #[test]
    fn a_dead_owners_partitions_are_spread_over_the_rest() {
        let members = names(&["a", "b"]);
        let current = owners(&[Some("a"), Some("b"), Some("dead"), Some("dead")]);
        let moves = assign(&members, &current, &BTreeMap::new());
        assert_eq!(moves, vec![mv(2, None, "a"), mv(3, None, "b")]);
    }

    #[test]
    fn ties_go_to_the_member_with_less_load_elsewhere() {
        let members = names(&["a", "b", "c"]);
        let load = loads(&[("a", 5), ("b", 1), ("c", 3)]);
        let moves = assign(&members, &[None], &load);
        assert_eq!(moves, vec![mv(0, None, "b")]);
    }

    #[test]
    fn without_load_ties_go_by_name() {
        let members = names(&["c", "b", "a"]);
        let moves = assign(&members, &[None], &BTreeMap::new());
        assert_eq!(moves, vec![mv(0, None, "a")]);
    }

    #[test]
    fn the_extra_partition_stays_with_the_member_already_holding_it() {
        let members = names(&["a", "b"]);
        let load = loads(&[("b", 9)]);
        // b holds 2 of 3, so b keeps the ceil target despite its load.
        let current = owners(&[Some("b"), Some("b"), None]);
        let moves = assign(&members, &current, &load);
        assert_eq!(moves, vec![mv(2, None, "a")]);
    }

    #[test]
    fn an_overloaded_member_gives_away_its_highest_partitions() {
        let members = names(&["a", "b"]);
        let current = owners(&[
            Some("a"),
            Some("a"),
            Some("a"),
            Some("a"),
            Some("b"),
            Some("a"),
        ]);
        let moves = assign(&members, &current, &BTreeMap::new());
        assert_eq!(moves, vec![mv(3, Some("a"), "b"), mv(5, Some("a"), "b")]);
    }

    #[test]
    fn a_leaving_members_partitions_go_to_the_others() {
        let members = names(&["a", "b"]);
        let current = round_robin(&["a", "b", "c"], 6);
        let moves = assign(&members, &current, &BTreeMap::new());
        assert_eq!(moves, vec![mv(2, None, "a"), mv(5, None, "b")]);
    }

    #[test]
    fn apply_sets_the_new_owners_and_ignores_unknown_partitions() {
        let current = owners(&[Some("a"), None]);
        let moves = vec![mv(1, None, "b"), mv(7, None, "c")];
        assert_eq!(apply(&current, &moves), owners(&[Some("a"), Some("b")]));
    }

    const POOL: [&str; 10] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"];

    /// 1..=6 live members in random order.
    fn members_strategy() -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(POOL.to_vec(), 1..=6)
            .prop_shuffle()
            .prop_map(|v| v.into_iter().map(str::to_owned).collect())
    }

    /// 1..=64 partitions owned by anyone in the pool (live or dead) or no one.
    fn current_strategy() -> impl Strategy<Value = Vec<Option<String>>> {
        let owner = proptest::option::weighted(0.8, proptest::sample::select(POOL.to_vec()));
        proptest::collection::vec(owner.prop_map(|o| o.map(str::to_owned)), 1..=64)
    }

    fn load_strategy() -> impl Strategy<Value = BTreeMap<String, usize>> {
        proptest::collection::btree_map(
            proptest::sample::select(POOL.to_vec()).prop_map(str::to_owned),
            0usize..5,
            0..=10,
        )
    }

    fn case() -> impl Strategy<Value = (Vec<String>, Vec<Option<String>>, BTreeMap<String, usize>)>
    {
        (members_strategy(), current_strategy(), load_strategy())
    }

    fn load_of(load: &BTreeMap<String, usize>, m: &str) -> usize {
        load.get(m).copied().unwrap_or(0)
    }

    /// The fewest moves any balanced, complete assignment needs: every
    /// partition not kept moves, and at most `p % n` members may keep
    /// `floor(p/n) + 1`.
    fn minimal_moves(before: &BTreeMap<String, usize>, p: usize) -> usize {
        let n = before.len();
        let (base, extra) = (p / n, p % n);
        let above = before.values().filter(|&&h| h > base).count();
        let kept: usize = before.values().map(|&h| h.min(base)).sum::<usize>() + above.min(extra);
        p - kept
    }

    proptest! {
        #[test]
        fn every_partition_ends_with_a_live_member((members, current, load) in case()) {
            let after = apply(&current, &assign(&members, &current, &load));
            for owner in &after {
                prop_assert!(owner.as_ref().is_some_and(|o| members.contains(o)));
            }
        }

        #[test]
        fn every_member_ends_with_floor_or_ceil((members, current, load) in case()) {
            let after = apply(&current, &assign(&members, &current, &load));
            let (p, n) = (current.len(), members.len());
            for (m, c) in counts(&members, &after) {
                prop_assert!(c == p / n || c == p.div_ceil(n), "{m} has {c} of {p}");
            }
        }

        #[test]
        fn assigning_twice_moves_nothing((members, current, load) in case()) {
            let after = apply(&current, &assign(&members, &current, &load));
            prop_assert!(assign(&members, &after, &load).is_empty());
        }

        #[test]
        fn the_number_of_moves_is_minimal((members, current, load) in case()) {
            let moves = assign(&members, &current, &load);
            let orphans = current
                .iter()
                .filter(|o| !o.as_ref().is_some_and(|o| members.contains(o)))
                .count();
            let before = counts(&members, &current);
            let after = counts(&members, &apply(&current, &moves));
            let surplus: usize = before.iter().map(|(m, &h)| h.saturating_sub(after[m])).sum();
            prop_assert_eq!(moves.len(), orphans + surplus);
            prop_assert_eq!(moves.len(), minimal_moves(&before, current.len()));
        }

        #[test]
        fn only_members_over_target_give_partitions((members, current, load) in case()) {
            let moves = assign(&members, &current, &load);
            let before = counts(&members, &current);
            let after = counts(&members, &apply(&current, &moves));
            for m in &moves {
                if let Some(from) = &m.from {
                    prop_assert!(before[from] > after[from]);
                    prop_assert!(moves.iter().all(|o| &o.to != from), "{from} gives and takes");
                }
            }
        }

        #[test]
        fn ceil_targets_go_to_the_biggest_then_least_loaded_then_by_name(
            (members, current, load) in case()
        ) {
            let before = counts(&members, &current);
            let after = counts(&members, &apply(&current, &assign(&members, &current, &load)));
            let (p, n) = (current.len(), members.len());
            let key = |m: &String| (Reverse(before[m]), load_of(&load, m), m.clone());
            let (ceil, floor): (Vec<&String>, Vec<&String>) =
                members.iter().partition(|m| after[*m] > p / n);
            prop_assert_eq!(ceil.len(), p % n);
            for c in &ceil {
                for f in &floor {
                    prop_assert!(key(c) < key(f), "{c} got the ceil target before {f}");
                }
            }
        }

        #[test]
        fn givers_keep_their_lowest_partitions((members, current, load) in case()) {
            let moves = assign(&members, &current, &load);
            let after = apply(&current, &moves);
            for m in &moves {
                if let Some(from) = &m.from {
                    let kept_higher = (usize::from(m.partition)..after.len())
                        .any(|i| after[i].as_ref() == Some(from));
                    prop_assert!(!kept_higher, "{from} gave {} but kept a higher one", m.partition);
                }
            }
        }

        #[test]
        fn receivers_are_filled_fewest_first_then_least_loaded_then_by_name(
            (members, current, load) in case()
        ) {
            let moves = assign(&members, &current, &load);
            let before = counts(&members, &current);
            let target = counts(&members, &apply(&current, &moves));
            let given = |m: &String| moves.iter().filter(|o| o.from.as_ref() == Some(m)).count();
            let mut so_far: BTreeMap<&String, usize> =
                members.iter().map(|m| (m, before[m] - given(m))).collect();
            for m in &moves {
                let best = members
                    .iter()
                    .filter(|c| so_far[c] < target[*c])
                    .min_by_key(|c| (so_far[c], load_of(&load, c), (*c).clone()));
                prop_assert_eq!(best, Some(&m.to));
                *so_far.entry(&m.to).or_default() += 1;
            }
        }

        #[test]
        fn a_joining_member_takes_only_from_the_busiest(
            (members, current, load) in case(), joiner in proptest::sample::select(POOL.to_vec())
        ) {
            prop_assume!(!members.iter().any(|m| m == joiner));
            let balanced = apply(&current, &assign(&members, &current, &load));
            let mut grown = members.clone();
            grown.push(joiner.to_owned());
            let moves = assign(&grown, &balanced, &load);
            let before = counts(&grown, &balanced);
            let after = counts(&grown, &apply(&balanced, &moves));
            for m in &moves {
                let from = m.from.as_ref();
                prop_assert!(from.is_some_and(|f| before[f] > after[f]), "{:?}", m);
                prop_assert_eq!(&m.to, joiner);
            }
        }

        #[test]
        fn a_leaving_member_moves_only_its_own_partitions(
            (members, current, load) in case(), leaver in any::<proptest::sample::Index>()
        ) {
            prop_assume!(members.len() >= 2);
            let balanced = apply(&current, &assign(&members, &current, &load));
            let gone = members[leaver.index(members.len())].clone();
            let rest: Vec<String> = members.iter().filter(|m| **m != gone).cloned().collect();
            let moves = assign(&rest, &balanced, &load);
            for m in &moves {
                prop_assert_eq!(m.from.as_ref(), None);
                prop_assert_eq!(balanced[usize::from(m.partition)].as_ref(), Some(&gone));
            }
            let held = balanced.iter().filter(|o| o.as_ref() == Some(&gone)).count();
            prop_assert_eq!(moves.len(), held);
        }

        #[test]
        fn member_order_does_not_matter(
            (members, shuffled, current, load) in case().prop_flat_map(|(m, c, l)| {
                (Just(m.clone()), Just(m).prop_shuffle(), Just(c), Just(l))
            })
        ) {
            prop_assert_eq!(assign(&members, &current, &load), assign(&shuffled, &current, &load));
        }

        #[test]
        fn moves_are_sorted_distinct_and_real((members, current, load) in case()) {
            let moves = assign(&members, &current, &load);
            prop_assert!(moves.windows(2).all(|w| w[0].partition < w[1].partition));
            for m in &moves {
                prop_assert!(m.from.as_ref() != Some(&m.to));
                prop_assert!(usize::from(m.partition) < current.len());
                prop_assert!(members.contains(&m.to));
            }
        }
    }
}
