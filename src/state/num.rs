//! Numbers of events and aggregates: integers stay exact integers until a float or an overflow
//! forces a float, so `2 + 3` answers `5`, not `5.0`.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use std::cmp::Ordering;

/// An exact integer or a float.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Num {
    Int(i64),
    Float(f64),
}

/// Exact integer addition, or float when either side is a float or the sum overflows.
impl std::ops::Add for Num {
    type Output = Num;

    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            (a, b) => Num::Float(a.as_f64() + b.as_f64()),
        }
    }
}

impl Num {
    /// Zero, as an integer.
    pub const ZERO: Num = Num::Int(0);

    /// Reads a JSON number; anything else is `None`.
    pub fn from_json(value: &Value) -> Option<Num> {
        value.as_number().and_then(Num::from_number)
    }

    /// Reads a JSON number: an integer when it fits an `i64`, else a float.
    pub fn from_number(n: &Number) -> Option<Num> {
        Some(match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64()?),
        })
    }

    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Whether the number is zero.
    pub fn is_zero(self) -> bool {
        match self {
            Num::Int(i) => i == 0,
            Num::Float(f) => f == 0.0,
        }
    }

    /// The smaller of the two.
    pub fn min(self, other: Num) -> Num {
        if other.total_cmp(self) == Ordering::Less {
            other
        } else {
            self
        }
    }

    /// The larger of the two.
    pub fn max(self, other: Num) -> Num {
        if other.total_cmp(self) == Ordering::Greater {
            other
        } else {
            self
        }
    }

    fn total_cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (a, b) => a.as_f64().total_cmp(&b.as_f64()),
        }
    }

    /// As a JSON number (a non-finite float, reachable only by overflow, becomes `null`).
    pub fn to_json(self) -> Value {
        match self {
            Num::Int(i) => Value::Number(i.into()),
            Num::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integer_sums_stay_integers() {
        assert_eq!((Num::Int(2) + Num::Int(3)).to_json(), json!(5));
        assert_eq!((Num::Int(2) + Num::Float(0.5)).to_json(), json!(2.5));
    }

    #[test]
    fn overflow_falls_back_to_float() {
        assert_eq!(
            Num::Int(i64::MAX) + Num::Int(1),
            Num::Float(i64::MAX as f64 + 1.0)
        );
    }

    #[test]
    fn min_and_max_compare_across_int_and_float() {
        assert_eq!(Num::Int(3).min(Num::Float(2.5)), Num::Float(2.5));
        assert_eq!(Num::Int(3).max(Num::Float(2.5)), Num::Int(3));
    }

    #[test]
    fn json_numbers_are_read_exactly() {
        assert_eq!(Num::from_json(&json!(7)), Some(Num::Int(7)));
        assert_eq!(Num::from_json(&json!(1.25)), Some(Num::Float(1.25)));
        assert_eq!(Num::from_json(&json!("7")), None);
    }
}

#[cfg(test)]
mod roundtrip {
    use super::Num;
    use proptest::prelude::*;

    proptest! {
        /// Checkpointed state must come back bit for bit (serde_json's float_roundtrip).
        #[test]
        fn floats_survive_a_json_round_trip_exactly(bits in any::<u64>()) {
            let f = f64::from_bits(bits);
            prop_assume!(f.is_finite());
            let text = serde_json::to_string(&Num::Float(f)).unwrap();
            let back: Num = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back.as_f64().to_bits(), f.to_bits(), "{}", text);
        }
    }
}
