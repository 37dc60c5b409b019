//! The accumulator behind `aggregate` and `window`: count, exact sum, min and max, from
//! which every contract function (`count`, `sum`, `min`, `max`, `avg`) is answered.

use crate::spec::{Function, Functions};
use crate::state::{AggregateFunction, Num};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Count, sum, min and max of the values seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub sum: Num,
    pub min: Option<Num>,
    pub max: Option<Num>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            count: 0,
            sum: Num::ZERO,
            min: None,
            max: None,
        }
    }
}

impl Stats {
    /// Counts one event and folds in its value, if the operator reads one.
    pub fn add(&mut self, value: Option<Num>) {
        self.count += 1;
        if let Some(v) = value {
            self.sum = self.sum + v;
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
        }
    }

    /// Writes the requested functions, and only those, into `out`.
    pub fn write(&self, functions: Functions, out: &mut Map<String, Value>) {
        for f in functions.iter() {
            let value = match f {
                Function::Count => Value::from(self.count),
                Function::Sum => self.sum.to_json(),
                Function::Min => self.min.map_or(Value::Null, Num::to_json),
                Function::Max => self.max.map_or(Value::Null, Num::to_json),
                Function::Avg if self.count == 0 => Value::Null,
                Function::Avg => Num::Float(self.sum.as_f64() / self.count as f64).to_json(),
            };
            out.insert(f.name().to_owned(), value);
        }
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
}
