//! Validation of a spec document: walks the JSON once, records every problem with its field
//! path (`operators[2].gap`), and builds the typed spec only when there is none.
//!
//! Over 400 lines for a reason: one walk over the document, one function an operator kind, kept
//! together so that every field path is built the same way; about a fifth are unit tests.

use super::{
    Function, Functions, MAX_OPERATORS, OperatorKind, OperatorSpec, Period, PipelineSpec, Pointer,
    Reduce, Span, TimeFormat, TimeSpec,
};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// One problem of a spec: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field, e.g. `operators[2].gap`; empty for the document itself.
    pub field: String,
    pub detail: String,
}

/// Largest `n` of a `last_n` operator.
pub const MAX_LAST_N: u64 = 1_000;
/// Most closed windows a `window` operator may retain per key.
pub const MAX_RETAIN: u64 = 1_000;
/// Most partitions a pipeline may have: one key group each.
pub const MAX_PARTITIONS: u16 = crate::spec::KEY_GROUPS as u16;
/// Most windows one event may fall into (`size / slide`).
pub const MAX_WINDOWS_PER_EVENT: i64 = 1_000;

const PIPELINE_FIELDS: &[&str] = &[
    "name",
    "key",
    "time",
    "checkpoint_interval",
    "retain_checkpoints",
    "state_ttl",
    "operators",
    "partitions",
];
const TIME_FIELDS: &[&str] = &["field", "format", "max_out_of_orderness"];
const COMMON_OPERATOR_FIELDS: &[&str] = &["name", "kind", "key", "where"];

#[derive(Default)]
struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    fn fail(&mut self, field: &str, detail: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            detail: detail.into(),
        });
    }

    fn object<'v>(&mut self, value: &'v Value, field: &str) -> Option<&'v Map<String, Value>> {
        let obj = value.as_object();
        if obj.is_none() {
            self.fail(field, "must be an object");
        }
        obj
    }

    fn only_fields(&mut self, obj: &Map<String, Value>, allowed: &[&[&str]], field: &str) {
        for name in obj.keys() {
            if !allowed.iter().any(|set| set.contains(&name.as_str())) {
                self.fail(&join(field, name), "unknown field");
            }
        }
    }

    fn name(&mut self, value: Option<&Value>, field: &str) -> Option<String> {
        let value = self.required(value, field)?;
        match value.as_str() {
            Some(s) if valid_name(s) => Some(s.to_owned()),
            _ => {
                self.fail(field, "must be a string matching [a-z0-9_-]{1,64}");
                None
            }
        }
    }

    fn required<'v>(&mut self, value: Option<&'v Value>, field: &str) -> Option<&'v Value> {
        if value.is_none_or(Value::is_null) {
            self.fail(field, "is required");
            return None;
        }
        value
    }

    fn pointer(&mut self, value: Option<&Value>, field: &str) -> Option<Pointer> {
        let value = value.filter(|v| !v.is_null())?;
        let Some(text) = value.as_str() else {
            self.fail(field, "must be a JSON pointer string such as \"/user_id\"");
            return None;
        };
        Pointer::parse(text).map_err(|e| self.fail(field, e)).ok()
    }

    fn required_pointer(&mut self, value: Option<&Value>, field: &str) -> Option<Pointer> {
        self.required(value, field)?;
        self.pointer(value, field)
    }

    fn span(&mut self, value: Option<&Value>, field: &str, positive: bool) -> Option<Span> {
        let value = value.filter(|v| !v.is_null())?;
        let Some(text) = value.as_str() else {
            self.fail(field, "must be a duration string such as \"5s\"");
            return None;
        };
        match Span::parse(text) {
            Ok(span) if positive && span.millis() == 0 => {
                self.fail(field, "must be greater than zero");
                None
            }
            Ok(span) => Some(span),
            Err(e) => {
                self.fail(field, e);
                None
            }
        }
    }

    fn integer(&mut self, value: Option<&Value>, field: &str, min: u64, max: u64) -> Option<u64> {
        let value = value.filter(|v| !v.is_null())?;
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.fail(field, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        value: Option<&Value>,
        field: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let value = value.filter(|v| !v.is_null())?;
        let found = value
            .as_str()
            .and_then(|s| options.iter().find(|(name, _)| *name == s));
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            self.fail(field, format!("must be one of {}", names.join(", ")));
        }
        found.map(|(_, v)| *v)
    }

    fn functions(&mut self, value: Option<&Value>, field: &str) -> Option<Functions> {
        let value = self.required(value, field)?;
        let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
            self.fail(
                field,
                "must be a non-empty array of count, sum, min, max, avg",
            );
            return None;
        };
        let mut set = Functions::default();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.as_str().and_then(Function::from_name) {
                Some(f) => set = set.with(f),
                None => {
                    self.fail(
                        &format!("{field}[{i}]"),
                        "must be one of count, sum, min, max, avg",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(set)
    }

    fn filter(&mut self, value: Option<&Value>, field: &str) -> Vec<(Pointer, Value)> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Vec::new();
        };
        let Some(obj) = self.object(value, field) else {
            return Vec::new();
        };
        obj.iter()
            .filter_map(|(ptr, expected)| {
                let ptr = Pointer::parse(ptr)
                    .map_err(|e| self.fail(&join(field, ptr), e))
                    .ok()?;
                Some((ptr, expected.clone()))
            })
            .collect()
    }
}

fn join(field: &str, name: &str) -> String {
    if field.is_empty() {
        name.to_owned()
    } else {
        format!("{field}.{name}")
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(super) fn pipeline(doc: &Value) -> Result<PipelineSpec, Vec<FieldError>> {
    let mut c = Check::default();
    let Some(obj) = c.object(doc, "") else {
        return Err(c.errors);
    };
    c.only_fields(obj, &[PIPELINE_FIELDS], "");
    let name = c.name(obj.get("name"), "name");
    let key = c.required_pointer(obj.get("key"), "key");
    let time = obj
        .get("time")
        .filter(|v| !v.is_null())
        .and_then(|t| time(&mut c, t));
    let checkpoint_interval = c.span(obj.get("checkpoint_interval"), "checkpoint_interval", true);
    let retain = c.integer(
        obj.get("retain_checkpoints"),
        "retain_checkpoints",
        1,
        1_000,
    );
    let state_ttl = c.span(obj.get("state_ttl"), "state_ttl", true);
    let partitions = c.integer(
        obj.get("partitions"),
        "partitions",
        1,
        u64::from(MAX_PARTITIONS),
    );
    let operators = operators(&mut c, obj.get("operators"));
    match (name, key, c.errors.is_empty()) {
        (Some(name), Some(key), true) => Ok(PipelineSpec {
            name,
            key,
            document: with_defaults(doc),
            time,
            checkpoint_interval: checkpoint_interval.unwrap_or(Span::from_millis(10_000)),
            retain_checkpoints: retain.map_or(5, |n| n as u32),
            state_ttl,
            partitions: partitions.map_or(1, |n| n as u16),
            operators,
        }),
        _ => Err(c.errors),
    }
}

fn time(c: &mut Check, value: &Value) -> Option<TimeSpec> {
    let obj = c.object(value, "time")?;
    c.only_fields(obj, &[TIME_FIELDS], "time");
    let field = c.required_pointer(obj.get("field"), "time.field");
    let formats = [
        ("epoch_ms", TimeFormat::EpochMs),
        ("epoch_s", TimeFormat::EpochS),
        ("rfc3339", TimeFormat::Rfc3339),
    ];
    let format = match obj.get("format").filter(|v| !v.is_null()) {
        None => Some(TimeFormat::EpochMs),
        some => c.choice(some, "time.format", &formats),
    };
    let ooo = c.span(
        obj.get("max_out_of_orderness"),
        "time.max_out_of_orderness",
        false,
    );
    Some(TimeSpec {
        field: field?,
        format: format?,
        max_out_of_orderness: ooo.unwrap_or(Span::from_millis(0)),
    })
}

fn operators(c: &mut Check, value: Option<&Value>) -> Vec<OperatorSpec> {
    let Some(value) = c.required(value, "operators") else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        c.fail("operators", "must be an array of operators");
        return Vec::new();
    };
    if items.is_empty() || items.len() > MAX_OPERATORS {
        c.fail(
            "operators",
            format!("must hold 1 to {MAX_OPERATORS} operators"),
        );
    }
    let mut specs: Vec<OperatorSpec> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("operators[{i}]");
        if let Some(op) = operator(c, item, &field) {
            if specs.iter().any(|o| o.name == op.name) {
                c.fail(
                    &format!("{field}.name"),
                    format!("{:?} is used twice", op.name),
                );
            }
            specs.push(op);
        }
    }
    specs
}

fn operator(c: &mut Check, value: &Value, field: &str) -> Option<OperatorSpec> {
    let obj = c.object(value, field)?;
    let f = |name: &str| join(field, name);
    let name = c.name(obj.get("name"), &f("name"));
    let key = c.pointer(obj.get("key"), &f("key"));
    let filter = c.filter(obj.get("where"), &f("where"));
    let kind_names = [
        ("latest", 0),
        ("last_n", 1),
        ("map", 2),
        ("aggregate", 3),
        ("session", 4),
        ("window", 5),
    ];
    c.required(obj.get("kind"), &f("kind"))?;
    let kind = c.choice(obj.get("kind"), &f("kind"), &kind_names)?;
    let before = c.errors.len();
    let (kind, fields) = match kind {
        0 => latest(c, obj, field),
        1 => last_n(c, obj, field),
        2 => map(c, obj, field),
        3 => aggregate(c, obj, field),
        4 => session(c, obj, field),
        _ => window(c, obj, field),
    };
    c.only_fields(obj, &[COMMON_OPERATOR_FIELDS, fields], field);
    let kind = kind.filter(|_| c.errors.len() == before)?;
    Some(OperatorSpec {
        name: name?,
        key,
        filter,
        kind,
    })
}

type Parsed = (Option<OperatorKind>, &'static [&'static str]);
type Obj = Map<String, Value>;

fn latest(c: &mut Check, obj: &Obj, field: &str) -> Parsed {
    let value = c.required_pointer(obj.get("value"), &join(field, "value"));
    (
        value.map(|value| OperatorKind::Latest { value }),
        &["value"],
    )
}

fn last_n(c: &mut Check, obj: &Obj, field: &str) -> Parsed {
    let value = c.required_pointer(obj.get("value"), &join(field, "value"));
    let n = c
        .required(obj.get("n"), &join(field, "n"))
        .and_then(|_| c.integer(obj.get("n"), &join(field, "n"), 1, MAX_LAST_N));
    let kind = value.zip(n).map(|(value, n)| OperatorKind::LastN {
        value,
        n: n as usize,
    });
    (kind, &["value", "n"])
}

fn map(c: &mut Check, obj: &Obj, field: &str) -> Parsed {
    let entry_key = c.required_pointer(obj.get("entry_key"), &join(field, "entry_key"));
    let reduces = [
        ("sum", Reduce::Sum),
        ("count", Reduce::Count),
        ("min", Reduce::Min),
        ("max", Reduce::Max),
        ("last", Reduce::Last),
    ];
    let reduce_field = join(field, "reduce");
    let reduce = c
        .required(obj.get("reduce"), &reduce_field)
        .and_then(|_| c.choice(obj.get("reduce"), &reduce_field, &reduces));
    let value = if reduce == Some(Reduce::Count) {
        c.pointer(obj.get("value"), &join(field, "value"))
    } else {
        c.required_pointer(obj.get("value"), &join(field, "value"))
    };
    let kind = match (entry_key, reduce) {
        (Some(entry_key), Some(reduce)) => Some(OperatorKind::Map {
            entry_key,
            value,
            reduce,
        }),
        _ => None,
    };
    (kind, &["entry_key", "value", "reduce"])
}

/// `value` is required unless the functions are a lone `count`.
fn value_for(
    c: &mut Check,
    obj: &Obj,
    field: &str,
    functions: Option<Functions>,
) -> Option<Pointer> {
    let value_field = join(field, "value");
    match functions {
        Some(fs) if fs.need_value() => c.required_pointer(obj.get("value"), &value_field),
        _ => c.pointer(obj.get("value"), &value_field),
    }
}

fn aggregate(c: &mut Check, obj: &Obj, field: &str) -> Parsed {
    let functions = c.functions(obj.get("functions"), &join(field, "functions"));
    let value = value_for(c, obj, field, functions);
    let periods = [
        ("hour", Period::Hour),
        ("day", Period::Day),
        ("month", Period::Month),
    ];
    let reset = c.choice(obj.get("reset"), &join(field, "reset"), &periods);
    let kind = functions.map(|functions| OperatorKind::Aggregate {
        value,
        functions,
        reset,
    });
    (kind, &["value", "functions", "reset"])
}

fn session(c: &mut Check, obj: &Obj, field: &str) -> Parsed {
    let gap_field = join(field, "gap");
    let gap = c
        .required(obj.get("gap"), &gap_field)
        .and_then(|_| c.span(obj.get("gap"), &gap_field, true));
    (gap.map(|gap| OperatorKind::Session { gap }), &["gap"])
}

fn window(c: &mut Check, obj: &Obj, field: &str) -> Parsed {
    let functions = c.functions(obj.get("functions"), &join(field, "functions"));
    let value = value_for(c, obj, field, functions);
    let size_field = join(field, "size");
    let size = c
        .required(obj.get("size"), &size_field)
        .and_then(|_| c.span(obj.get("size"), &size_field, true));
    let slide = c.span(obj.get("slide"), &join(field, "slide"), true);
    if let (Some(size), Some(slide)) = (size, slide)
        && (size.millis() as u64).div_ceil(slide.millis() as u64) as i64 > MAX_WINDOWS_PER_EVENT
    {
        c.fail(
            &join(field, "slide"),
            format!("size / slide must be at most {MAX_WINDOWS_PER_EVENT}"),
        );
    }
    let retain = c
        .integer(obj.get("retain"), &join(field, "retain"), 0, MAX_RETAIN)
        .unwrap_or(10);
    let kind = match (functions, size) {
        (Some(functions), Some(size)) => Some(OperatorKind::Window {
            value,
            size,
            slide,
            functions,
            retain: retain as usize,
        }),
        _ => None,
    };
    (kind, &["value", "size", "slide", "functions", "retain"])
}

/// The submitted document with the contract's defaults made explicit.
fn with_defaults(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let obj = doc.as_object_mut().expect("validated as an object");
    let defaults = [
        ("checkpoint_interval", json!("10s")),
        ("retain_checkpoints", json!(5)),
        ("state_ttl", Value::Null),
        ("partitions", json!(1)),
    ];
    for (name, value) in defaults {
        obj.entry(name).or_insert(value);
    }
    if let Some(Value::Object(time)) = obj.get_mut("time") {
        time.entry("format").or_insert(json!("epoch_ms"));
        time.entry("max_out_of_orderness").or_insert(json!("0s"));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Value {
        crate::workload::seed_spec("clicks")
    }

    fn errors_of(doc: Value) -> Vec<FieldError> {
        PipelineSpec::from_json(&doc).expect_err("spec should be invalid")
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_contracts_seed_spec_is_valid() {
        let spec = PipelineSpec::from_json(&seed()).unwrap();
        assert_eq!(spec.operators.len(), 6);
        assert_eq!(spec.time.unwrap().max_out_of_orderness.millis(), 5_000);
        assert_eq!(spec.state_ttl.unwrap().millis(), 7 * 86_400_000);
        assert!(matches!(
            spec.operators[5].kind,
            OperatorKind::Window { retain: 10, .. }
        ));
    }

    #[test]
    fn defaults_are_filled_in_and_echoed() {
        let spec = PipelineSpec::from_json(&json!({
            "name": "p", "key": "/k", "time": {"field": "/t"},
            "operators": [{"name": "l", "kind": "latest", "value": "/v"}]
        }))
        .unwrap();
        assert_eq!(spec.checkpoint_interval.millis(), 10_000);
        assert_eq!(spec.retain_checkpoints, 5);
        assert_eq!(spec.document["checkpoint_interval"], "10s");
        assert_eq!(spec.document["time"]["max_out_of_orderness"], "0s");
        assert_eq!(spec.document["state_ttl"], Value::Null);
    }

    #[test]
    fn a_bad_gap_names_its_operator_field() {
        let mut doc = seed();
        doc["operators"][0]["gap"] = json!("30 minutes");
        assert_eq!(fields(&errors_of(doc)), ["operators[0].gap"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let doc = json!({
            "name": "Bad Name", "key": "user_id", "checkpoint_interval": "1.5s",
            "retain_checkpoints": 0, "extra": 1,
            "operators": [
                {"name": "a", "kind": "nope"},
                {"name": "b", "kind": "last_n", "value": "/v", "n": 0},
                {"name": "c", "kind": "window", "size": "1m", "functions": ["sum", "median"]},
                {"name": "d", "kind": "map", "entry_key": "/p", "reduce": "sum"},
                {"name": "e", "kind": "session", "gap": "0s", "size": "1m"}
            ]
        });
        let errors = errors_of(doc);
        let mut got = fields(&errors);
        got.sort();
        assert_eq!(
            got,
            [
                "checkpoint_interval",
                "extra",
                "key",
                "name",
                "operators[0].kind",
                "operators[1].n",
                "operators[2].functions[1]",
                "operators[3].value",
                "operators[4].gap",
                "operators[4].size",
                "retain_checkpoints",
            ]
        );
    }

    #[test]
    fn a_spec_that_is_not_an_object_is_one_error() {
        assert_eq!(fields(&errors_of(json!([1]))), [""]);
    }

    #[test]
    fn value_is_optional_only_for_a_lone_count() {
        let ok = json!({"name": "p", "key": "/k", "operators": [
            {"name": "w", "kind": "window", "size": "1m", "functions": ["count"]},
            {"name": "m", "kind": "map", "entry_key": "/e", "reduce": "count"}
        ]});
        assert!(PipelineSpec::from_json(&ok).is_ok());
        let bad = json!({"name": "p", "key": "/k", "operators": [
            {"name": "a", "kind": "aggregate", "functions": ["count", "avg"]}
        ]});
        assert_eq!(fields(&errors_of(bad)), ["operators[0].value"]);
    }

    #[test]
    fn duplicate_operator_names_and_empty_operator_lists_are_rejected() {
        let dup = json!({"name": "p", "key": "/k", "operators": [
            {"name": "a", "kind": "latest", "value": "/v"},
            {"name": "a", "kind": "latest", "value": "/v"}
        ]});
        assert_eq!(fields(&errors_of(dup)), ["operators[1].name"]);
        let empty = json!({"name": "p", "key": "/k", "operators": []});
        assert_eq!(fields(&errors_of(empty)), ["operators"]);
    }

    #[test]
    fn sliding_windows_are_bounded_per_event() {
        let doc = json!({"name": "p", "key": "/k", "operators": [
            {"name": "w", "kind": "window", "size": "1d", "slide": "1s", "functions": ["count"]}
        ]});
        assert_eq!(fields(&errors_of(doc)), ["operators[0].slide"]);
    }
}
