//! `map`: per entry key, the event values folded by `reduce`; a `sum` entry reaching 0 goes.

use crate::engine::operator::{Context, Field, Input, Operator};
use crate::spec::Reduce;
use crate::state::{MapState, Num};
use serde_json::{Map, Value, json};

/// The `map` operator.
pub struct MapOp {
    pub reduce: Reduce,
    /// Entries one key may hold: a new entry beyond is ignored (existing ones still update).
    pub max_entries: usize,
}

impl Operator for MapOp {
    type State = MapState<Num>;

    fn on_event(&self, state: &mut Self::State, input: &Input<'_>, _cx: &mut Context<'_>) {
        let Some(entry) = input.entry_key else { return };
        let value = match input.value {
            Field::Number(n) => *n,
            _ => Num::Int(1),
        };
        let old = state.get(entry).copied();
        if old.is_none() && state.len() >= self.max_entries {
            metrics::counter!(crate::metrics::MAP_ENTRIES_IGNORED.name).increment(1);
            return;
        }
        let new = match (self.reduce, old) {
            (Reduce::Count, old) => old.unwrap_or(Num::ZERO) + Num::Int(1),
            (_, None) | (Reduce::Last, _) => value,
            (Reduce::Sum, Some(old)) => old + value,
            (Reduce::Min, Some(old)) => old.min(value),
            (Reduce::Max, Some(old)) => old.max(value),
        };
        if self.reduce == Reduce::Sum && new.is_zero() {
            state.remove(entry);
        } else {
            state.put(entry.clone(), new);
        }
    }

    fn is_empty(&self, state: &Self::State) -> bool {
        state.is_empty()
    }

    fn query(&self, state: &Self::State) -> Value {
        let mut entries: Vec<_> = state.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let entries: Map<String, Value> = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_json()))
            .collect();
        json!({ "entries": entries })
    }
}
