//! `latest`: the value of the event with the greatest event time; a tie goes to the later arrival.

use crate::engine::operator::{Context, Field, Input, Operator};
use crate::state::{JsonText, ValueState};
use serde_json::{Value, json};

/// The `latest` operator.
pub struct Latest;

/// (event time, value) of the newest event.
pub type LatestState = ValueState<(i64, JsonText)>;

impl Operator for Latest {
    type State = LatestState;

    fn on_event(&self, state: &mut LatestState, input: &Input<'_>, _cx: &mut Context<'_>) {
        let Field::Json(value) = input.value else {
            return;
        };
        if state.value().is_none_or(|(time, _)| input.time >= *time) {
            state.update((input.time, value.clone()));
        }
    }

    fn is_empty(&self, state: &LatestState) -> bool {
        state.is_empty()
    }

    fn query(&self, state: &LatestState) -> Value {
        let (time, value) = state.value().expect("non-empty state");
        json!({"value": value.as_raw(), "time": time})
    }
}
