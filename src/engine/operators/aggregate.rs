//! `aggregate`: count/sum/min/max/avg of a key's values, optionally per UTC calendar period:
//! the newest period seen wins, a newer one starts afresh, an older one is ignored.

use super::calendar::period_start;
use super::stats::{Stats, StatsFunction};
use crate::engine::operator::{Context, Field, Input, Operator};
use crate::spec::{Functions, Period};
use crate::state::{AggregatingState, Num};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `aggregate` operator.
pub struct Aggregate {
    pub functions: Functions,
    pub reset: Option<Period>,
}

/// The aggregate of one key, and the period it covers when the operator resets.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AggregateState {
    period_start: Option<i64>,
    stats: AggregatingState<Option<Num>, Stats, Map<String, Value>>,
}

impl Operator for Aggregate {
    type State = AggregateState;

    fn on_event(&self, state: &mut AggregateState, input: &Input<'_>, _cx: &mut Context<'_>) {
        if let Some(period) = self.reset {
            let start = period_start(period, input.time);
            match state.period_start {
                Some(current) if start < current => return,
                Some(current) if start > current => state.stats.clear(),
                _ => {}
            }
            state.period_start = Some(start);
        }
        let value = match input.value {
            Field::Number(n) => Some(*n),
            _ => None,
        };
        state.stats.add(&StatsFunction(self.functions), value);
    }

    fn is_empty(&self, state: &AggregateState) -> bool {
        state.stats.is_empty()
    }

    fn query(&self, state: &AggregateState) -> Value {
        let mut out = Map::new();
        out.insert("period_start".into(), state.period_start.into());
        out.extend(
            state
                .stats
                .get(&StatsFunction(self.functions))
                .unwrap_or_default(),
        );
        Value::Object(out)
    }
}
