//! Extraction: reads, once per event, every field the pipeline's operators need (key, time,
//! `where` fields, `value`, `entry_key`), checking types as it goes. This IS event validation:
//! an event extracts cleanly or it is invalid, with a detail naming the field.
//!
//! The event is never built as a document: one scan captures the raw text at each pointer (see
//! [`super::scan`]), and only those few texts are read, borrowed wherever they need no
//! unescaping. Keys are read and hashed once per distinct pointer.
//!
//! Over 400 lines for a reason: about 350 are the extraction itself, kept in one file because
//! it is the per-event hot path read as one piece; the rest are its unit tests.

use super::scan::{Captures, Plan, ScanError};
use crate::engine::operator::Field;
use crate::spec::{KeyGroups, Pointer, TimeFormat, TimeSpec};
use crate::state::{JsonText, Key, Num, key_hash};
use serde_json::{Number, Value};
use smallvec::SmallVec;
use std::borrow::Cow;
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
    /// `key_group(key)`, computed once at extraction.
    pub key_group: u16,
    /// `state::key_hash(key)`, computed once at extraction.
    pub hash: u32,
    pub value: Field,
    pub entry_key: Option<Key>,
}

/// The extraction plan of a pipeline.
#[derive(Clone, Debug)]
pub struct Extractor {
    key: Pointer,
    time: Option<TimeSpec>,
    operators: Vec<(String, Inputs)>,
    plan: Plan,
    /// Slots of the pipeline's key and time.
    key_slot: usize,
    time_slot: Option<usize>,
    /// Per operator, the slots of what it reads.
    slots: Vec<OpSlots>,
    /// Shards a parsed batch is routed to (see [`super::batch::ParsedBatch`]).
    shards: usize,
    /// The key groups whose items a parsed batch keeps (cluster mode: what this instance
    /// owns of the pipeline); every event is still read and checked whole.
    owned: KeyGroups,
}

#[derive(Clone, Debug, Default)]
struct OpSlots {
    key: Option<usize>,
    filter: Vec<usize>,
    value: Option<usize>,
    entry_key: Option<usize>,
}

impl Extractor {
    /// A plan for a pipeline keyed by `key`, timed by `time`, with these operators.
    pub fn new(key: Pointer, time: Option<TimeSpec>, operators: Vec<(String, Inputs)>) -> Self {
        let mut pointers = vec![&key];
        pointers.extend(time.as_ref().map(|t| &t.field));
        for (_, inputs) in &operators {
            pointers.extend(&inputs.key);
            pointers.extend(inputs.filter.iter().map(|(p, _)| p));
            pointers.extend(inputs.value.as_ref().map(|(p, _)| p));
            pointers.extend(&inputs.entry_key);
        }
        let (plan, slots) = Plan::new(&pointers);
        let mut next = slots.into_iter();
        let mut take = || next.next().expect("a slot per pointer");
        let key_slot = take();
        let time_slot = time.as_ref().map(|_| take());
        let slots = operators
            .iter()
            .map(|(_, inputs)| OpSlots {
                key: inputs.key.as_ref().map(|_| take()),
                filter: inputs.filter.iter().map(|_| take()).collect(),
                value: inputs.value.as_ref().map(|_| take()),
                entry_key: inputs.entry_key.as_ref().map(|_| take()),
            })
            .collect();
        Extractor {
            key,
            time,
            operators,
            plan,
            key_slot,
            time_slot,
            slots,
            shards: 1,
            owned: KeyGroups::ALL,
        }
    }

    /// The same plan, routing parsed batches to `shards` shards.
    pub fn routed(self, shards: usize) -> Self {
        Extractor {
            shards: shards.max(1),
            ..self
        }
    }

    /// The same plan, keeping only the items of key groups in `owned`.
    pub fn owning(self, owned: KeyGroups) -> Self {
        Extractor { owned, ..self }
    }

    /// The key groups whose items a parsed batch keeps.
    pub fn owned(&self) -> KeyGroups {
        self.owned
    }

    /// Shards a parsed batch is routed to.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Number of operators.
    pub fn operators(&self) -> usize {
        self.operators.len()
    }

    /// Extracts one event from its JSON text; the error names the field and what is wrong.
    pub fn extract(&self, text: &[u8]) -> Result<Event, String> {
        let mut inputs: SmallVec<[Option<OpInput>; 6]> =
            smallvec::smallvec![None; self.operators.len()];
        let time = self.extract_each(text, |operator, _, input| inputs[operator] = Some(input))?;
        Ok(Event { time, inputs })
    }

    /// Extracts one event, handing each operator that sees it its input (with the event's
    /// time) as soon as it is read, so nothing is built per event; answers the event's time.
    /// On an error, `sink` may have been called for some operators: the caller discards those.
    pub fn extract_each(
        &self,
        text: &[u8],
        mut sink: impl FnMut(usize, Option<i64>, OpInput),
    ) -> Result<Option<i64>, String> {
        let text = std::str::from_utf8(text)
            .map_err(|e| format!("invalid JSON: invalid UTF-8 at byte {}", e.valid_up_to()))?;
        let captures = self.plan.scan(text).map_err(|e| match e {
            ScanError::Syntax(detail) => format!("invalid JSON: {detail}"),
            ScanError::NotAnObject => "event is not a JSON object".into(),
        })?;
        let key = key_at(&self.key, captures[self.key_slot])?;
        let time = match (&self.time, self.time_slot) {
            (Some(spec), Some(slot)) => Some(time_at(spec, captures[slot])?),
            _ => None,
        };
        let operators = self.operators.iter().zip(&self.slots).enumerate();
        for (operator, ((name, inputs), slots)) in operators {
            let input = op_input(inputs, slots, &captures, &key)
                .map_err(|e| format!("operator {name:?}: {e}"))?;
            if let Some(input) = input {
                sink(operator, time, input);
            }
        }
        Ok(time)
    }
}

fn op_input(
    inputs: &Inputs,
    slots: &OpSlots,
    captures: &Captures<'_>,
    pipeline_key: &(Key, u16, u32),
) -> Result<Option<OpInput>, String> {
    let selected = inputs
        .filter
        .iter()
        .zip(&slots.filter)
        .all(|((_, expected), slot)| captures[*slot].is_some_and(|raw| json_eq(raw, expected)));
    if !selected {
        return Ok(None);
    }
    let (key, key_group, hash) = match (&inputs.key, slots.key) {
        (Some(pointer), Some(slot)) => key_at(pointer, captures[slot])?,
        _ => pipeline_key.clone(),
    };
    let value = match (&inputs.value, slots.value) {
        (Some((pointer, kind)), Some(slot)) => value_at(pointer, *kind, captures[slot])?,
        _ => Field::Absent,
    };
    let entry_key = match (&inputs.entry_key, slots.entry_key) {
        (Some(pointer), Some(slot)) => Some(key_at(pointer, captures[slot])?.0),
        _ => None,
    };
    Ok(Some(OpInput {
        key,
        key_group,
        hash,
        value,
        entry_key,
    }))
}

/// A captured scalar, read without building a document.
enum Leaf<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    /// An array or an object.
    Container,
}

fn leaf(text: &str) -> Leaf<'_> {
    match text.as_bytes()[0] {
        b'n' => Leaf::Null,
        b't' => Leaf::Bool(true),
        b'f' => Leaf::Bool(false),
        b'"' if !text.contains('\\') => Leaf::Str(Cow::Borrowed(&text[1..text.len() - 1])),
        b'"' => Leaf::Str(Cow::Owned(
            serde_json::from_str(text).expect("a scanned string is a valid string"),
        )),
        b'[' | b'{' => Leaf::Container,
        _ => Leaf::Number(number(text)),
    }
}

/// A scanned number's value; plain integers skip serde_json (`-0` is a float there, and here).
fn number(text: &str) -> Number {
    match text.parse::<i64>() {
        Ok(i) if text != "-0" => Number::from(i),
        _ => serde_json::from_str(text).expect("a scanned number is a valid number"),
    }
}

/// The key at `pointer`, with its key group and hash.
fn key_at(pointer: &Pointer, raw: Option<&str>) -> Result<(Key, u16, u32), String> {
    let key = match raw.map(leaf) {
        None | Some(Leaf::Null) => return Err(format!("{pointer:?} is missing")),
        Some(Leaf::Str(s)) => Key::from(s.as_ref()),
        // An integer's text is its canonical decimal form (JSON allows no `+` or leading zero).
        Some(Leaf::Number(n)) if n.is_i64() || n.is_u64() => Key::from(raw.expect("matched")),
        Some(_) => return Err(format!("{pointer:?} must be a string or an integer")),
    };
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("{pointer:?} is longer than {MAX_KEY_BYTES} bytes"));
    }
    let group = crate::engine::key_group(&key) as u16;
    let hash = key_hash(&key);
    Ok((key, group, hash))
}

fn value_at(pointer: &Pointer, kind: FieldKind, raw: Option<&str>) -> Result<Field, String> {
    let Some(raw) = raw else {
        return Err(format!("{pointer:?} is missing"));
    };
    match kind {
        FieldKind::Number => match leaf(raw) {
            Leaf::Number(n) => Num::from_number(&n).map(Field::Number),
            _ => None,
        }
        .ok_or_else(|| format!("{pointer:?} must be a number")),
        FieldKind::Json => Ok(Field::Json(JsonText::compact(raw))),
    }
}

fn time_at(spec: &TimeSpec, raw: Option<&str>) -> Result<i64, String> {
    let pointer = &spec.field;
    let Some(raw) = raw.filter(|r| *r != "null") else {
        return Err(format!("time {pointer:?} is missing"));
    };
    let time = match (spec.format, leaf(raw)) {
        (TimeFormat::EpochMs, Leaf::Number(n)) => n.as_i64(),
        (TimeFormat::EpochS, Leaf::Number(n)) => seconds_to_millis(&n, raw),
        (TimeFormat::Rfc3339, Leaf::Str(s)) => rfc3339_millis(&s),
        _ => None,
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
/// as the client wrote it so that `1700000000.123` is exactly `1700000000123` (no float
/// rounding).
fn seconds_to_millis(n: &Number, text: &str) -> Option<i64> {
    if let Some(s) = n.as_i64() {
        return s.checked_mul(1_000);
    }
    if text.contains(['e', 'E']) {
        let ms = n.as_f64()? * 1_000.0;
        return (ms.is_finite() && ms.abs() < 9.2e18).then(|| ms.trunc() as i64);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
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
fn json_eq(raw: &str, expected: &Value) -> bool {
    match (leaf(raw), expected) {
        (Leaf::Null, Value::Null) => true,
        (Leaf::Bool(a), Value::Bool(b)) => a == *b,
        (Leaf::Str(a), Value::String(b)) => a == b.as_str(),
        (Leaf::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Leaf::Container, Value::Array(_) | Value::Object(_)) => {
            serde_json::from_str::<Value>(raw).is_ok_and(|a| a == *expected)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Span;
    use serde_json::json;

    impl Extractor {
        fn extract_doc(&self, doc: &Value) -> Result<Event, String> {
            self.extract(doc.to_string().as_bytes())
        }
    }

    fn extractor(format: TimeFormat, ops: Vec<(String, Inputs)>) -> Extractor {
        let time = TimeSpec {
            field: Pointer::parse("/ts").unwrap(),
            format,
            max_out_of_orderness: Span::from_millis(0),
        };
        Extractor::new(Pointer::parse("/user").unwrap(), Some(time), ops)
    }

    /// One operator `name` reading `value` as `kind`, filtered by `filter`.
    fn value_op(
        name: &str,
        value: &str,
        kind: FieldKind,
        filter: Vec<(Pointer, Value)>,
    ) -> Vec<(String, Inputs)> {
        let inputs = Inputs {
            filter,
            value: Some((Pointer::parse(value).unwrap(), kind)),
            ..Inputs::default()
        };
        vec![(name.into(), inputs)]
    }

    fn number_op(filter: Vec<(Pointer, Value)>) -> Vec<(String, Inputs)> {
        value_op("spend", "/amount", FieldKind::Number, filter)
    }

    #[test]
    fn integer_keys_become_their_decimal_string() {
        let e = extractor(TimeFormat::EpochMs, vec![]);
        let ev = e.extract_doc(&json!({"user": 42, "ts": 5})).unwrap();
        assert_eq!(ev.time, Some(5));
        let e = extractor(TimeFormat::EpochMs, vec![("l".into(), Inputs::default())]);
        let ev = e.extract_doc(&json!({"user": -7, "ts": 5})).unwrap();
        assert_eq!(ev.inputs[0].as_ref().unwrap().key, "-7");
    }

    #[test]
    fn bad_keys_and_times_are_named() {
        let e = extractor(TimeFormat::EpochMs, vec![]);
        assert_eq!(
            e.extract_doc(&json!({"ts": 1})).unwrap_err(),
            "\"/user\" is missing"
        );
        assert_eq!(
            e.extract_doc(&json!({"user": 1.5, "ts": 1})).unwrap_err(),
            "\"/user\" must be a string or an integer"
        );
        assert!(
            e.extract_doc(&json!({"user": "a", "ts": 1.5}))
                .unwrap_err()
                .contains("integer of epoch milliseconds")
        );
        assert!(e.extract_doc(&json!({"user": "a", "ts": "1"})).is_err());
        assert_eq!(
            e.extract_doc(&json!([1])).unwrap_err(),
            "event is not a JSON object"
        );
    }

    #[test]
    fn epoch_seconds_and_rfc3339_truncate_to_whole_milliseconds() {
        let e = extractor(TimeFormat::EpochS, vec![]);
        let t = |v: Value| {
            e.extract_doc(&json!({"user": "a", "ts": v}))
                .unwrap()
                .time
                .unwrap()
        };
        assert_eq!(t(json!(1_700_000_000.123_9)), 1_700_000_000_123);
        assert_eq!(t(json!(1_700_000_000)), 1_700_000_000_000);
        assert_eq!(t(json!(-1.5)), -1_500);
        let e = extractor(TimeFormat::Rfc3339, vec![]);
        let t = |v: &str| {
            e.extract_doc(&json!({"user": "a", "ts": v}))
                .unwrap()
                .time
                .unwrap()
        };
        assert_eq!(t("2024-02-29T13:45:10.1239Z"), 1_709_214_310_123);
        assert_eq!(t("2024-02-29T14:45:10.123+01:00"), 1_709_214_310_123);
        assert!(
            e.extract_doc(&json!({"user": "a", "ts": "yesterday"}))
                .is_err()
        );
    }

    #[test]
    fn where_filters_compare_numbers_by_value_and_skip_the_operator() {
        let filter = vec![(Pointer::parse("/type").unwrap(), json!(1))];
        let e = extractor(TimeFormat::EpochMs, number_op(filter));
        let seen = e
            .extract_doc(&json!({"user": "a", "ts": 1, "type": 1.0, "amount": 3}))
            .unwrap();
        assert_eq!(
            seen.inputs[0].as_ref().unwrap().value,
            Field::Number(Num::Int(3))
        );
        let skipped = e
            .extract_doc(&json!({"user": "a", "ts": 1, "type": 2}))
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
            .extract_doc(&json!({"user": "a", "ts": 1, "amount": "3"}))
            .unwrap_err();
        assert_eq!(err, "operator \"spend\": \"/amount\" must be a number");
    }

    fn json_op(filter: Vec<(Pointer, Value)>) -> Vec<(String, Inputs)> {
        value_op("last", "/v", FieldKind::Json, filter)
    }

    fn json_value(event: &Event) -> String {
        match &event.inputs[0].as_ref().unwrap().value {
            Field::Json(text) => text.as_str().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_are_unescaped_and_integers_keep_their_text() {
        let e = extractor(TimeFormat::EpochMs, vec![("l".into(), Inputs::default())]);
        let key = |text: &str| {
            e.extract(text.as_bytes())
                .map(|ev| ev.inputs[0].as_ref().unwrap().key.to_string())
        };
        assert_eq!(key(r#"{"ts": 1, "user": "a\"\u00e9"}"#).unwrap(), "a\"é");
        assert_eq!(
            key(r#"{"ts": 1, "user": 18446744073709551615}"#).unwrap(),
            "18446744073709551615"
        );
        assert!(key(r#"{"ts": 1, "user": -0}"#).is_err(), "-0 is a float");
        assert!(key(r#"{"ts": 1, "user": 1e3}"#).is_err());
        assert!(
            key(r#"{"ts": 1, "user": null}"#)
                .unwrap_err()
                .contains("missing")
        );
        let input = e.extract(br#"{"ts": 1, "user": "k"}"#).unwrap().inputs[0]
            .clone()
            .unwrap();
        assert_eq!(input.key_group, crate::engine::key_group("k") as u16);
    }

    #[test]
    fn json_values_are_kept_compact_and_filters_compare_unescaped_strings() {
        let filter = vec![(Pointer::parse("/type").unwrap(), json!("a/b"))];
        let e = extractor(TimeFormat::EpochMs, json_op(filter));
        let ev = e
            .extract(br#"{"user": 1, "ts": 1, "type": "a\/b", "v": { "x" : [1, "a b" ] } }"#)
            .unwrap();
        assert_eq!(json_value(&ev), r#"{"x":[1,"a b"]}"#);
        let skipped = e
            .extract(br#"{"user": 1, "ts": 1, "type": "a/c"}"#)
            .unwrap();
        assert!(skipped.inputs[0].is_none());
    }

    #[test]
    fn epoch_seconds_are_read_from_the_text_as_written() {
        let e = extractor(TimeFormat::EpochS, vec![]);
        let ev = e
            .extract(br#"{"user": "a", "ts": 1700000000.123999999999999999}"#)
            .unwrap();
        assert_eq!(ev.time, Some(1_700_000_000_123));
    }

    #[test]
    fn invalid_utf8_and_json_are_named() {
        let e = extractor(TimeFormat::EpochMs, vec![]);
        assert!(
            e.extract(b"{\"user\": \"\xff\", \"ts\": 1}")
                .unwrap_err()
                .starts_with("invalid JSON: invalid UTF-8")
        );
        assert!(
            e.extract(br#"{"user": "a", "ts": 1"#)
                .unwrap_err()
                .starts_with("invalid JSON: ")
        );
    }

    #[test]
    fn operators_keyed_by_their_own_pointers_get_their_keys() {
        let keyed = |p: &str| Inputs {
            key: Some(Pointer::parse(p).unwrap()),
            ..Inputs::default()
        };
        let ops = vec![
            ("a".into(), keyed("/page")),
            ("b".into(), keyed("/page")),
            ("c".into(), keyed("/user")),
        ];
        let e = extractor(TimeFormat::EpochMs, ops);
        let ev = e
            .extract(br#"{"user": "u", "ts": 1, "page": "/p"}"#)
            .unwrap();
        let keys: Vec<String> = ev
            .inputs
            .iter()
            .map(|i| i.as_ref().unwrap().key.to_string())
            .collect();
        assert_eq!(keys, ["/p", "/p", "u"]);
        let missing = e.extract(br#"{"user": "u", "ts": 1}"#).unwrap_err();
        assert_eq!(missing, "operator \"a\": \"/page\" is missing");
    }
}
