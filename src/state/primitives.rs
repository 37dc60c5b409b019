//! The keyed-state primitives, after Flink's: each instance is the state of ONE key; the
//! keyed backend ([`super::KeyedState`]) holds one per key and tracks changes.
//!
//! Functions (reduce, aggregate) are passed at call time rather than stored, so a key's state
//! is just its data: no per-key pointer to shared behaviour.

use super::Key;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::marker::PhantomData;

/// A single value, or nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValueState<T>(Option<T>);

impl<T> Default for ValueState<T> {
    fn default() -> Self {
        ValueState(None)
    }
}

impl<T> ValueState<T> {
    /// The value, if set.
    pub fn value(&self) -> Option<&T> {
        self.0.as_ref()
    }

    /// The value, mutably, if set.
    pub fn value_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()
    }

    /// Sets the value.
    pub fn update(&mut self, value: T) {
        self.0 = Some(value);
    }

    /// The value, inserting `make()` first when unset.
    pub fn get_or_insert_with(&mut self, make: impl FnOnce() -> T) -> &mut T {
        self.0.get_or_insert_with(make)
    }

    /// Removes the value.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// An ordered list, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListState<T>(VecDeque<T>);

impl<T> Default for ListState<T> {
    fn default() -> Self {
        ListState(VecDeque::new())
    }
}

impl<T> ListState<T> {
    /// Appends `value` as the newest element.
    pub fn add(&mut self, value: T) {
        self.0.push_back(value);
    }

    /// Removes and returns the oldest element.
    pub fn pop_oldest(&mut self) -> Option<T> {
        self.0.pop_front()
    }

    /// Elements, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.0.iter()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// A map from user keys to values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MapState<V>(FxHashMap<Key, V>);

impl<V> Default for MapState<V> {
    fn default() -> Self {
        MapState(FxHashMap::default())
    }
}

impl<V> MapState<V> {
    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.get(key)
    }

    /// The value at `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.0.get_mut(key)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Key, value: V) {
        self.0.insert(key, value);
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.0.remove(key)
    }

    /// Entries in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &V)> {
        self.0.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A value folded from every added value by a reduce function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReducingState<T>(Option<T>);

impl<T> Default for ReducingState<T> {
    fn default() -> Self {
        ReducingState(None)
    }
}

impl<T> ReducingState<T> {
    /// Folds `value` in with `reduce(current, value)`.
    pub fn add(&mut self, value: T, reduce: impl FnOnce(T, T) -> T) {
        self.0 = Some(match self.0.take() {
            Some(current) => reduce(current, value),
            None => value,
        });
    }

    /// The folded value, if anything was added.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }

    /// Forgets the folded value.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// How an [`AggregatingState`] folds inputs into an accumulator and reads a result from it.
pub trait AggregateFunction<In, Acc, Out> {
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Acc;
    /// Folds `input` into `acc`.
    fn add(&self, acc: &mut Acc, input: In);
    /// The result of the accumulator.
    fn result(&self, acc: &Acc) -> Out;
}

/// An accumulator of `In` values whose result is an `Out`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    transparent,
    bound(serialize = "Acc: Serialize", deserialize = "Acc: Deserialize<'de>")
)]
pub struct AggregatingState<In, Acc, Out> {
    acc: Option<Acc>,
    #[serde(skip)]
    _io: PhantomData<fn(In) -> Out>,
}

impl<In, Acc, Out> Default for AggregatingState<In, Acc, Out> {
    fn default() -> Self {
        AggregatingState {
            acc: None,
            _io: PhantomData,
        }
    }
}

impl<In, Acc, Out> AggregatingState<In, Acc, Out> {
    /// Folds `input` in with `f`.
    pub fn add(&mut self, f: &impl AggregateFunction<In, Acc, Out>, input: In) {
        let acc = self.acc.get_or_insert_with(|| f.create_accumulator());
        f.add(acc, input);
    }

    /// The result, if anything was added.
    pub fn get(&self, f: &impl AggregateFunction<In, Acc, Out>) -> Option<Out> {
        self.acc.as_ref().map(|acc| f.result(acc))
    }

    /// The accumulator, if anything was added.
    pub fn accumulator(&self) -> Option<&Acc> {
        self.acc.as_ref()
    }

    /// Forgets the accumulator.
    pub fn clear(&mut self) {
        self.acc = None;
    }

    /// Whether nothing was added since creation or the last clear.
    pub fn is_empty(&self) -> bool {
        self.acc.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mean;
    impl AggregateFunction<f64, (f64, u32), f64> for Mean {
        fn create_accumulator(&self) -> (f64, u32) {
            (0.0, 0)
        }
        fn add(&self, acc: &mut (f64, u32), input: f64) {
            acc.0 += input;
            acc.1 += 1;
        }
        fn result(&self, acc: &(f64, u32)) -> f64 {
            acc.0 / f64::from(acc.1)
        }
    }

    #[test]
    fn aggregating_state_folds_through_its_function() {
        let mut s = AggregatingState::default();
        assert_eq!(s.get(&Mean), None);
        s.add(&Mean, 1.0);
        s.add(&Mean, 2.0);
        assert_eq!(s.get(&Mean), Some(1.5));
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn reducing_state_starts_from_the_first_value() {
        let mut s = ReducingState::default();
        s.add(5, i32::max);
        s.add(3, i32::max);
        assert_eq!(s.get(), Some(&5));
    }

    #[test]
    fn list_state_keeps_arrival_order() {
        let mut s = ListState::default();
        s.add('a');
        s.add('b');
        assert_eq!(s.iter().rev().collect::<Vec<_>>(), [&'b', &'a']);
        assert_eq!(s.pop_oldest(), Some('a'));
    }

    #[test]
    fn states_serialise_as_their_plain_data() {
        let mut s: AggregatingState<f64, (f64, u32), f64> = AggregatingState::default();
        s.add(&Mean, 4.0);
        assert_eq!(serde_json::to_string(&s).unwrap(), "[4.0,1]");
        let mut v = ValueState::default();
        v.update(3);
        assert_eq!(serde_json::to_string(&v).unwrap(), "3");
    }
}
