//! The accumulator behind `aggregate` and `window`: count, exact sum, min and max, from
//! which every contract function (`count`, `sum`, `min`, `max`, `avg`) is answered.

use crate::spec::{Function, Functions};
use crate::state::{AggregateFunction, Num};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;
use std::num::NonZeroU8;

/// Count, sum, min and max of the values seen, packed: the three numbers as their 64 bits and
/// one byte saying which of them are floats and whether any value was seen, so that a stats
/// is 40 bytes (an `Option<Stats>` too) rather than 56 with a tag per number. An `aggregate`
/// keeps one per key, a `window` one per window.
#[derive(Clone, Copy)]
pub struct Stats {
    pub count: u64,
    sum: u64,
    min: u64,
    max: u64,
    flags: Flags,
}

/// Which numbers of a [`Stats`] are floats, and whether min and max hold a value. The top bit
/// is always set, leaving zero free as the niche of `Option<Stats>`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Flags(NonZeroU8);

impl Flags {
    const SUM_FLOAT: u8 = 1;
    const MIN_FLOAT: u8 = 2;
    const MAX_FLOAT: u8 = 4;
    const SEEN: u8 = 8;
    const ALWAYS: u8 = 0x80;

    fn new(bits: u8) -> Flags {
        Flags(NonZeroU8::new(bits | Flags::ALWAYS).expect("the top bit is set"))
    }

    fn has(self, flag: u8) -> bool {
        self.0.get() & flag != 0
    }
}

/// A number as its bits and whether it is a float.
fn pack(n: Num) -> (u64, bool) {
    match n {
        Num::Int(i) => (i as u64, false),
        Num::Float(f) => (f.to_bits(), true),
    }
}

fn unpack(bits: u64, float: bool) -> Num {
    if float {
        Num::Float(f64::from_bits(bits))
    } else {
        Num::Int(bits as i64)
    }
}

/// How a stats is checkpointed (and was, before it was packed).
#[derive(Serialize, Deserialize)]
struct StatsRow {
    count: u64,
    sum: Num,
    min: Option<Num>,
    max: Option<Num>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(0, Num::ZERO, None)
    }
}

impl Stats {
    fn new(count: u64, sum: Num, min_max: Option<(Num, Num)>) -> Stats {
        let (sum, sum_float) = pack(sum);
        let mut flags = if sum_float { Flags::SUM_FLOAT } else { 0 };
        let (mut min, mut max) = (0, 0);
        if let Some((lo, hi)) = min_max {
            let (lo, lo_float) = pack(lo);
            let (hi, hi_float) = pack(hi);
            (min, max) = (lo, hi);
            flags |= Flags::SEEN;
            flags |= if lo_float { Flags::MIN_FLOAT } else { 0 };
            flags |= if hi_float { Flags::MAX_FLOAT } else { 0 };
        }
        Stats {
            count,
            sum,
            min,
            max,
            flags: Flags::new(flags),
        }
    }

    /// The sum of the values.
    pub fn sum(&self) -> Num {
        unpack(self.sum, self.flags.has(Flags::SUM_FLOAT))
    }

    /// The smallest and the largest value, once one was seen.
    pub fn min_max(&self) -> Option<(Num, Num)> {
        self.flags.has(Flags::SEEN).then(|| {
            (
                unpack(self.min, self.flags.has(Flags::MIN_FLOAT)),
                unpack(self.max, self.flags.has(Flags::MAX_FLOAT)),
            )
        })
    }

    /// Counts one event and folds in its value, if the operator reads one.
    pub fn add(&mut self, value: Option<Num>) {
        let count = self.count + 1;
        *self = match value {
            None => Stats { count, ..*self },
            Some(v) => {
                let (min, max) = self
                    .min_max()
                    .map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)));
                Stats::new(count, self.sum() + v, Some((min, max)))
            }
        };
    }

    /// Writes the requested functions, and only those, into `out`.
    pub fn write(&self, functions: Functions, out: &mut Map<String, Value>) {
        for f in functions.iter() {
            let value = match f {
                Function::Count => Value::from(self.count),
                Function::Sum => self.sum().to_json(),
                Function::Min => self.min_max().map_or(Value::Null, |(lo, _)| lo.to_json()),
                Function::Max => self.min_max().map_or(Value::Null, |(_, hi)| hi.to_json()),
                Function::Avg if self.count == 0 => Value::Null,
                Function::Avg => Num::Float(self.sum().as_f64() / self.count as f64).to_json(),
            };
            out.insert(f.name().to_owned(), value);
        }
    }
}

impl PartialEq for Stats {
    fn eq(&self, other: &Stats) -> bool {
        (self.count, self.sum(), self.min_max()) == (other.count, other.sum(), other.min_max())
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("count", &self.count)
            .field("sum", &self.sum())
            .field("min_max", &self.min_max())
            .finish()
    }
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let min_max = self.min_max();
        StatsRow {
            count: self.count,
            sum: self.sum(),
            min: min_max.map(|(lo, _)| lo),
            max: min_max.map(|(_, hi)| hi),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stats, D::Error> {
        let row = StatsRow::deserialize(d)?;
        let min_max = match (row.min, row.max) {
            (Some(lo), Some(hi)) => Some((lo, hi)),
            (None, None) => None,
            _ => {
                return Err(serde::de::Error::custom(
                    "min and max are both set or both null",
                ));
            }
        };
        Ok(Stats::new(row.count, row.sum, min_max))
    }
}

/// The contract's aggregate functions as an [`AggregateFunction`] over optional numbers.
#[derive(Clone, Copy, Debug)]
pub struct StatsFunction(pub Functions);

impl AggregateFunction<Option<Num>, Stats, Map<String, Value>> for StatsFunction {
    fn create_accumulator(&self) -> Stats {
        Stats::default()
    }

    fn add(&self, acc: &mut Stats, input: Option<Num>) {
        acc.add(input);
    }

    fn result(&self, acc: &Stats) -> Map<String, Value> {
        let mut out = Map::new();
        acc.write(self.0, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn answers_carry_exactly_the_requested_functions() {
        let mut s = Stats::default();
        s.add(Some(Num::Int(4)));
        s.add(Some(Num::Int(2)));
        let fs = Functions::default().with(Function::Sum).with(Function::Avg);
        let out = StatsFunction(fs).result(&s);
        assert_eq!(Value::Object(out), json!({"sum": 6, "avg": 3.0}));
    }

    #[test]
    fn min_and_max_of_nothing_are_null() {
        let mut s = Stats::default();
        s.add(None);
        let fs = Functions::default()
            .with(Function::Count)
            .with(Function::Min);
        assert_eq!(
            Value::Object(StatsFunction(fs).result(&s)),
            json!({"count": 1, "min": null})
        );
    }

    #[test]
    fn a_checkpoint_row_with_only_one_of_min_and_max_is_refused() {
        for row in [
            json!({"count": 1, "sum": 1, "min": 1, "max": null}),
            json!({"count": 1, "sum": 1, "min": null, "max": 1}),
        ] {
            let err = serde_json::from_value::<Stats>(row.clone()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("min and max are both set or both null"),
                "{row}: {err}"
            );
        }
        let row = json!({"count": 1, "sum": 1, "min": null, "max": null});
        assert_eq!(
            serde_json::from_value::<Stats>(row).unwrap().min_max(),
            None
        );
    }

    fn num() -> impl Strategy<Value = Num> {
        prop_oneof![
            any::<i64>().prop_map(Num::Int),
            (-1e300f64..1e300).prop_map(Num::Float),
            Just(Num::Float(-0.0)),
            Just(Num::Int(i64::MAX)),
        ]
    }

    proptest! {
        /// The packed stats answers what unpacked numbers folded one by one answer, and comes
        /// back from its checkpoint row as it was, in the row's old shape.
        #[test]
        fn packed_stats_fold_like_plain_numbers(values in proptest::collection::vec(proptest::option::of(num()), 0..20)) {
            let mut stats = Stats::default();
            let (mut count, mut sum, mut min, mut max) = (0u64, Num::ZERO, None::<Num>, None::<Num>);
            for v in &values {
                stats.add(*v);
                count += 1;
                if let Some(v) = *v {
                    sum = sum + v;
                    min = Some(min.map_or(v, |m| m.min(v)));
                    max = Some(max.map_or(v, |m| m.max(v)));
                }
            }
            let row = serde_json::to_value(stats).unwrap();
            prop_assert_eq!(&row, &json!({"count": count, "sum": sum, "min": min, "max": max}));
            let back: Stats = serde_json::from_value(row).unwrap();
            prop_assert_eq!(back, stats);
            prop_assert_eq!(back.sum().as_f64().to_bits(), sum.as_f64().to_bits());
        }
    }

    #[test]
    fn a_stats_is_packed_into_forty_bytes_even_as_an_option() {
        assert_eq!(std::mem::size_of::<Stats>(), 40);
        assert_eq!(std::mem::size_of::<Option<Stats>>(), 40);
        let half: Result<Stats, _> =
            serde_json::from_value(json!({"count": 1, "sum": 1, "min": 1, "max": null}));
        assert!(half.is_err(), "min without max is not a stats");
    }
}
