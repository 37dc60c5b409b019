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

/// The newest values of a key, at most `n`, packed into one buffer: each value's compact text
/// followed by a newline (which compact JSON text never holds), oldest first, after `dead`
/// bytes of values already dropped. A key's values sit inline in the entry up to 40 bytes
/// (five short ones: a heap buffer would cost a cache miss per event, which prefetching does
/// not cover); adding one appends its text and drops the oldest by moving `dead` past it, so
/// neither costs more than the value's own bytes (the dropped prefix is cut off when a value
/// would not fit otherwise and the prefix is as long as what is kept).
///
/// Invariant: `text[dead..]` is `len` values, each ended by `\n`; `dead <= text.len()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recent {
    text: SmallVec<[u8; 40]>,
    dead: u32,
    len: u32,
}

impl Recent {
    fn add(&mut self, value: &str, n: usize) {
        debug_assert!(!value.is_empty() && !value.contains('\n'));
        let dead = self.dead as usize;
        if self.len as usize >= n {
            // Values are short: a plain loop beats a call to memchr.
            let kept = &self.text[dead..];
            let oldest = kept.iter().position(|&b| b == b'\n');
            self.dead += oldest.expect("every value ends with a newline") as u32 + 1;
            self.len -= 1;
        }
        // Cut the dropped prefix off when the value would not fit otherwise: inline always (a
        // few bytes to move, and the buffer stays off the heap), on the heap only once the
        // prefix is at least as long as what is kept, so that moving the kept values costs no
        // more than the bytes added since the last cut.
        let dead = self.dead as usize;
        let full = self.text.len() + value.len() + 1 > self.text.capacity();
        if full && dead > 0 && (!self.text.spilled() || dead * 2 >= self.text.len()) {
            self.text.drain(..dead);
            self.dead = 0;
        }
        self.text.extend_from_slice(value.as_bytes());
        self.text.push(b'\n');
        self.len += 1;
    }

    /// Values, oldest first.
    fn iter(&self) -> impl DoubleEndedIterator<Item = &str> {
        let kept = std::str::from_utf8(&self.text[self.dead as usize..]);
        kept.expect("JSON text is UTF-8").split_terminator('\n')
    }
}

fn raw(text: &str) -> &RawValue {
    serde_json::from_str(text).expect("last_n keeps valid JSON")
}

/// Checkpointed as the list of values, oldest first.
impl Serialize for Recent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(raw))
    }
}

impl<'de> Deserialize<'de> for Recent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Recent, D::Error> {
        let values = Vec::<JsonText>::deserialize(d)?;
        let mut recent = Recent::default();
        for value in &values {
            recent.add(value.as_str(), usize::MAX);
        }
        Ok(recent)
    }
}

impl Operator for LastN {
    type State = Recent;

    fn on_event(&self, state: &mut Recent, input: &Input<'_>, _cx: &mut Context<'_>) {
        if let Field::Json(value) = input.value {
            state.add(value.as_str(), self.n);
        }
    }

    fn is_empty(&self, state: &Recent) -> bool {
        state.len == 0
    }

    fn query(&self, state: &Recent) -> Value {
        let newest_first: Vec<&RawValue> = state.iter().rev().map(raw).collect();
        json!({ "values": newest_first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: i32) -> String {
        format!("\"{}{n}\"", "x".repeat(n as usize % 29))
    }

    #[test]
    fn five_short_values_sit_inline_in_56_bytes() {
        assert_eq!(std::mem::size_of::<Recent>(), 56);
        let mut ring = Recent::default();
        for v in 0..20 {
            ring.add(&format!("\"/p/{v}\""), 5);
        }
        assert!(!ring.text.spilled(), "five page paths fit inline");
    }

    #[test]
    fn the_ring_keeps_the_newest_n_in_order_and_checkpoints_them_oldest_first() {
        for n in [1, 3, 5, 8, 40] {
            let mut ring = Recent::default();
            let mut most_kept = 0;
            for v in 0..200 {
                ring.add(&text(v), n);
                let expected: Vec<String> = (0..=v)
                    .skip((v + 1 - n as i32).max(0) as usize)
                    .map(text)
                    .collect();
                let got: Vec<String> = ring.iter().map(str::to_owned).collect();
                assert_eq!(got, expected, "n={n} after {v}");
                let kept = ring.text.len() - ring.dead as usize;
                most_kept = most_kept.max(kept);
                assert!(
                    ring.text.capacity() <= 6 * most_kept.max(40),
                    "n={n} after {v}: the string grew to {} for at most {most_kept} kept bytes",
                    ring.text.capacity()
                );
            }
            let saved = serde_json::to_string(&ring).unwrap();
            let restored: Recent = serde_json::from_str(&saved).unwrap();
            assert!(restored.iter().eq(ring.iter()), "n={n}");
            let mut both = (ring, restored);
            both.0.add(&text(99), n);
            both.1.add(&text(99), n);
            assert!(
                both.0.iter().eq(both.1.iter()),
                "n={n}: a restored ring goes on alike"
            );
        }
    }
}
