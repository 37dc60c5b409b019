//! `last_n`: the `n` most recent values in arrival order.

use crate::engine::operator::{Context, Field, Input, Operator};
use crate::state::{JsonText, ListState};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The `last_n` operator.
pub struct LastN {
    pub n: usize,
}

impl Operator for LastN {
    type State = ListState<JsonText>;

    fn on_event(&self, state: &mut Self::State, input: &Input<'_>, _cx: &mut Context<'_>) {
        let Field::Json(value) = input.value else {
            return;
        };
        // Make room first, so the list never holds more than `n` (nor reallocates for one).
        while state.len() >= self.n {
            state.pop_oldest();
        }
        state.add(value.clone());
    }

    fn is_empty(&self, state: &Self::State) -> bool {
        state.is_empty()
    }

    fn query(&self, state: &Self::State) -> Value {
        let newest_first: Vec<&RawValue> = state.iter().rev().map(JsonText::as_raw).collect();
        json!({ "values": newest_first })
    }
}
