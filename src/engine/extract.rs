//! Extraction: reads, once per event, every field the pipeline's operators need (key, time,
//! `where` fields, `value`, `entry_key`), checking types as it goes. This IS event validation:
//! an event extracts cleanly or it is invalid, with a detail naming the field.

use super::operator::Field;
use crate::spec::{Pointer, TimeFormat, TimeSpec};
use crate::state::{Key, Num};
use compact_str::ToCompactString;
use serde_json::Value;
use serde_json::value::RawValue;
use smallvec::SmallVec;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Most bytes of a key.
pub const MAX_KEY_BYTES: usize = 1_024;

/// What an operator's `value` must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Any JSON value.
    Json,
    /// A JSON number.
    Number,
}

/// What one operator reads from an event.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// The operator's own key; `None` uses the pipeline's.
    pub key: Option<Pointer>,
    /// Every pointer must equal its value for the operator to see the event.
    pub filter: Vec<(Pointer, Value)>,
    pub value: Option<(Pointer, FieldKind)>,
    pub entry_key: Option<Pointer>,
}

/// One event as the operators need it.
#[derive(Clone, Debug)]
pub struct Event {
    /// Event time; `None` in processing time (the sequencer stamps arrival time).
    pub time: Option<i64>,
    /// Per operator, its input, or `None` when its `where` filtered the event out.
    pub inputs: SmallVec<[Option<OpInput>; 6]>,
}

/// One event as one operator needs it.
#[derive(Clone, Debug)]
pub struct OpInput {
    pub key: Key,
    pub value: Field,
    pub entry_key: Option<Key>,
}

/// The extraction plan of a pipeline.
#[derive(Clone, Debug)]
pub struct Extractor {
    key: Pointer,
    time: Option<TimeSpec>,
    operators: Vec<(String, Inputs)>,
}

impl Extractor {
    /// A plan for a pipeline keyed by `key`, timed by `time`, with these operators.
    pub fn new(key: Pointer, time: Option<TimeSpec>, operators: Vec<(String, Inputs)>) -> Self {
        Extractor {
            key,
            time,
            operators,
        }
    }

    /// Extracts one event; the error names the field and what is wrong with it.
    pub fn extract(&self, doc: &Value) -> Result<Event, String> {
        if !doc.is_object() {
            return Err("event is not a JSON object".into());
        }
        let key = key_at(&self.key, doc)?;
        let time = match &self.time {
            Some(spec) => Some(time_at(spec, doc)?),
            None => None,
        };
        let inputs = self
            .operators
            .iter()
            .map(|(name, inputs)| {
                op_input(inputs, doc, &key).map_err(|e| format!("operator {name:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Event { time, inputs })
    }
}

fn op_input(inputs: &Inputs, doc: &Value, pipeline_key: &Key) -> Result<Option<OpInput>, String> {
    if !inputs
        .filter
        .iter()
        .all(|(p, expected)| p.resolve(doc).is_some_and(|v| json_eq(v, expected)))
    {
        return Ok(None);
    }
    let key = match &inputs.key {
        Some(p) => key_at(p, doc)?,
        None => pipeline_key.clone(),
    };
    let value = match &inputs.value {
        None => Field::Absent,
        Some((p, kind)) => value_at(p, *kind, doc)?,
    };
    let entry_key = inputs
        .entry_key
        .as_ref()
        .map(|p| key_at(p, doc))
        .transpose()?;
    Ok(Some(OpInput {
        key,
        value,
        entry_key,
    }))
}

fn key_at(pointer: &Pointer, doc: &Value) -> Result<Key, String> {
    let key = match pointer.resolve(doc) {
        None | Some(Value::Null) => return Err(format!("{pointer:?} is missing")),
        Some(Value::String(s)) => s.to_compact_string(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_compact_string(),
        Some(_) => return Err(format!("{pointer:?} must be a string or an integer")),
    };
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("{pointer:?} is longer than {MAX_KEY_BYTES} bytes"));
    }
    Ok(key)
}

fn value_at(pointer: &Pointer, kind: FieldKind, doc: &Value) -> Result<Field, String> {
    let Some(value) = pointer.resolve(doc) else {
        return Err(format!("{pointer:?} is missing"));
    };
    match kind {
        FieldKind::Number => Num::from_json(value)
            .map(Field::Number)
            .ok_or_else(|| format!("{pointer:?} must be a number")),
        FieldKind::Json => {
            let text = serde_json::to_string(value).expect("a Value serialises");
            Ok(Field::Json(
                RawValue::from_string(text).expect("serialised JSON is valid"),
            ))
        }
    }
}

fn time_at(spec: &TimeSpec, doc: &Value) -> Result<i64, String> {
    let pointer = &spec.field;
    let Some(value) = pointer.resolve(doc).filter(|v| !v.is_null()) else {
        return Err(format!("time {pointer:?} is missing"));
    };
    let time = match spec.format {
        TimeFormat::EpochMs => value.as_i64(),
        TimeFormat::EpochS => value.as_number().and_then(seconds_to_millis),
        TimeFormat::Rfc3339 => value.as_str().and_then(rfc3339_millis),
    };
    time.ok_or_else(|| {
        let expected = match spec.format {
            TimeFormat::EpochMs => "an integer of epoch milliseconds",
            TimeFormat::EpochS => "a number of epoch seconds",
            TimeFormat::Rfc3339 => "an RFC 3339 timestamp string",
        };
        format!("time {pointer:?} must be {expected}")
    })
}

/// Epoch seconds to milliseconds, truncated toward zero, read from the number's decimal text
/// so that `1700000000.123` is exactly `1700000000123` (no float rounding).
fn seconds_to_millis(n: &serde_json::Number) -> Option<i64> {
    if let Some(s) = n.as_i64() {
        return s.checked_mul(1_000);
    }
    let text = n.to_string();
    if text.contains(['e', 'E']) {
        let ms = n.as_f64()? * 1_000.0;
        return (ms.is_finite() && ms.abs() < 9.2e18).then(|| ms.trunc() as i64);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac_ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let ms = int
        .parse::<i64>()
        .ok()?
        .checked_mul(1_000)?
        .checked_add(frac_ms)?;
    Some(if negative { -ms } else { ms })
}

fn rfc3339_millis(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// JSON equality for `where`, with numbers equal by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Span;
    use serde_json::json;

    fn extractor(format: TimeFormat, ops: Vec<(String, Inputs)>) -> Extractor {
        let time = TimeSpec {
            field: Pointer::parse("/ts").unwrap(),
            format,
            max_out_of_orderness: Span::from_millis(0),
        };
        Extractor::new(Pointer::parse("/user").unwrap(), Some(time), ops)
    }

    fn number_op(filter: Vec<(Pointer, Value)>) -> Vec<(String, Inputs)> {
        let inputs = Inputs {
            filter,
            value: Some((Pointer::parse("/amount").unwrap(), FieldKind::Number)),
            ..Inputs::default()
        };
        vec![("spend".into(), inputs)]
    }

    #[test]
    fn integer_keys_become_their_decimal_string() {
        let e = extractor(TimeFormat::EpochMs, vec![]);
        let ev = e.extract(&json!({"user": 42, "ts": 5})).unwrap();
        assert_eq!(ev.time, Some(5));
        let e = extractor(TimeFormat::EpochMs, vec![("l".into(), Inputs::default())]);
        let ev = e.extract(&json!({"user": -7, "ts": 5})).unwrap();
        assert_eq!(ev.inputs[0].as_ref().unwrap().key, "-7");
    }

    #[test]
    fn bad_keys_and_times_are_named() {
        let e = extractor(TimeFormat::EpochMs, vec![]);
        assert_eq!(
            e.extract(&json!({"ts": 1})).unwrap_err(),
            "\"/user\" is missing"
        );
        assert_eq!(
            e.extract(&json!({"user": 1.5, "ts": 1})).unwrap_err(),
            "\"/user\" must be a string or an integer"
        );
        assert!(
            e.extract(&json!({"user": "a", "ts": 1.5}))
                .unwrap_err()
                .contains("integer of epoch milliseconds")
        );
        assert!(e.extract(&json!({"user": "a", "ts": "1"})).is_err());
        assert_eq!(
            e.extract(&json!([1])).unwrap_err(),
            "event is not a JSON object"
        );
    }

    #[test]
    fn epoch_seconds_and_rfc3339_truncate_to_whole_milliseconds() {
        let e = extractor(TimeFormat::EpochS, vec![]);
        let t = |v: Value| {
            e.extract(&json!({"user": "a", "ts": v}))
                .unwrap()
                .time
                .unwrap()
        };
        assert_eq!(t(json!(1_700_000_000.123_9)), 1_700_000_000_123);
        assert_eq!(t(json!(1_700_000_000)), 1_700_000_000_000);
        assert_eq!(t(json!(-1.5)), -1_500);
        let e = extractor(TimeFormat::Rfc3339, vec![]);
        let t = |v: &str| {
            e.extract(&json!({"user": "a", "ts": v}))
                .unwrap()
                .time
                .unwrap()
        };
        assert_eq!(t("2024-02-29T13:45:10.1239Z"), 1_709_214_310_123);
        assert_eq!(t("2024-02-29T14:45:10.123+01:00"), 1_709_214_310_123);
        assert!(e.extract(&json!({"user": "a", "ts": "yesterday"})).is_err());
    }

    #[test]
    fn where_filters_compare_numbers_by_value_and_skip_the_operator() {
        let filter = vec![(Pointer::parse("/type").unwrap(), json!(1))];
        let e = extractor(TimeFormat::EpochMs, number_op(filter));
        let seen = e
            .extract(&json!({"user": "a", "ts": 1, "type": 1.0, "amount": 3}))
            .unwrap();
        assert_eq!(
            seen.inputs[0].as_ref().unwrap().value,
            Field::Number(Num::Int(3))
        );
        let skipped = e
            .extract(&json!({"user": "a", "ts": 1, "type": 2}))
            .unwrap();
        assert!(
            skipped.inputs[0].is_none(),
            "filtered out events need no amount"
        );
    }

    #[test]
    fn an_operator_field_of_the_wrong_type_names_the_operator() {
        let e = extractor(TimeFormat::EpochMs, number_op(vec![]));
        let err = e
            .extract(&json!({"user": "a", "ts": 1, "amount": "3"}))
            .unwrap_err();
        assert_eq!(err, "operator \"spend\": \"/amount\" must be a number");
    }
}
