//! `last_n`: the `n` most recent values in arrival order.

use crate::engine::operator::{Context, Field, Input, Operator};
use crate::state::JsonText;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use smallvec::SmallVec;

/// The `last_n` operator.
pub struct LastN {
    pub n: usize,
}

/// The newest values of a key, at most `n`: a ring, inline up to five values, so that adding
/// one touches no memory but the key's entry (and never allocates once the ring is full).
///
/// Invariant: `values[oldest..]` then `values[..oldest]` is arrival order; `oldest` is 0 until
/// the ring is full.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recent {
    values: SmallVec<[JsonText; 5]>,
    oldest: usize,
}

impl Recent {
    fn add(&mut self, value: JsonText, n: usize) {
        if self.values.len() < n {
            self.values.push(value);
        } else {
            self.values[self.oldest] = value;
            self.oldest = (self.oldest + 1) % self.values.len();
        }
    }

    /// Values, oldest first.
    fn iter(&self) -> impl DoubleEndedIterator<Item = &JsonText> {
        let (newer, older) = self.values.split_at(self.oldest);
        older.iter().chain(newer)
    }
}

/// Checkpointed as the list of values, oldest first.
impl Serialize for Recent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Recent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Recent, D::Error> {
        let values = SmallVec::<[JsonText; 5]>::deserialize(d)?;
        Ok(Recent { values, oldest: 0 })
    }
}

impl Operator for LastN {
    type State = Recent;

    fn on_event(&self, state: &mut Recent, input: &Input<'_>, _cx: &mut Context<'_>) {
        if let Field::Json(value) = input.value {
            state.add(value.clone(), self.n);
        }
    }

    fn is_empty(&self, state: &Recent) -> bool {
        state.values.is_empty()
    }

    fn query(&self, state: &Recent) -> Value {
        let newest_first: Vec<&RawValue> = state.iter().rev().map(JsonText::as_raw).collect();
        json!({ "values": newest_first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: i32) -> JsonText {
        JsonText::compact(&n.to_string())
    }

    #[test]
    fn the_ring_keeps_the_newest_n_in_order_and_checkpoints_them_oldest_first() {
        for n in [1, 3, 5, 8] {
            let mut ring = Recent::default();
            for v in 0..20 {
                ring.add(text(v), n);
                let expected: Vec<String> = (0..=v)
                    .skip((v + 1 - n as i32).max(0) as usize)
                    .map(|v| v.to_string())
                    .collect();
                let got: Vec<String> = ring.iter().map(|t| t.as_str().to_owned()).collect();
                assert_eq!(got, expected, "n={n} after {v}");
            }
            let saved = serde_json::to_string(&ring).unwrap();
            let restored: Recent = serde_json::from_str(&saved).unwrap();
            assert!(restored.iter().eq(ring.iter()), "n={n}");
            let mut both = (ring, restored);
            both.0.add(text(99), n);
            both.1.add(text(99), n);
            assert!(
                both.0.iter().eq(both.1.iter()),
                "n={n}: a restored ring goes on alike"
            );
        }
    }
}
