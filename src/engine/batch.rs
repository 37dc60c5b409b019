//! Turning a request body into a batch of extracted events: JSON (one object or an array) or
//! NDJSON. A batch is atomic: every event extracts cleanly, or the batch is refused with every
//! bad event named (up to [`MAX_REPORTED_ERRORS`]).

use super::extract::{Event, Extractor};
use serde::Serialize;
use serde_json::Value;

/// Most bad events one refusal names.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// How the body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one event object, or an array of them.
    Json,
    /// `application/x-ndjson`: one event per line.
    NdJson,
}

/// One bad event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EventError {
    /// Position in the batch (NDJSON: line number from 0).
    pub index: usize,
    pub detail: String,
}

/// Why a body is not a batch.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The body does not parse as JSON at all.
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    /// The body holds no event.
    #[error("the batch holds no event")]
    Empty,
    /// Some events are invalid; nothing of the batch is applied.
    #[error("{} event(s) invalid", .0.len())]
    Invalid(Vec<EventError>),
}

/// Parses and extracts every event of `body`.
pub fn parse_batch(
    body: &[u8],
    format: BodyFormat,
    extractor: &Extractor,
) -> Result<Vec<Event>, BatchError> {
    let docs: Vec<(usize, Result<Value, String>)> = match format {
        BodyFormat::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items.into_iter().map(Ok).enumerate().collect(),
            Ok(single) => vec![(0, Ok(single))],
            Err(e) => return Err(BatchError::Syntax(e.to_string())),
        },
        BodyFormat::NdJson => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.trim_ascii().is_empty())
            .map(|(i, line)| {
                (
                    i,
                    serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}")),
                )
            })
            .collect(),
    };
    if docs.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut events = Vec::with_capacity(docs.len());
    let mut errors = Vec::new();
    for (index, doc) in docs {
        match doc.and_then(|doc| extractor.extract(&doc)) {
            Ok(event) => events.push(event),
            Err(detail) if errors.len() < MAX_REPORTED_ERRORS => {
                errors.push(EventError { index, detail })
            }
            Err(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(BatchError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Pointer;

    fn extractor() -> Extractor {
        Extractor::new(Pointer::parse("/k").unwrap(), None, vec![])
    }

    fn indices(result: Result<Vec<Event>, BatchError>) -> Vec<usize> {
        match result {
            Err(BatchError::Invalid(errors)) => errors.iter().map(|e| e.index).collect(),
            other => panic!("expected invalid events, got {other:?}"),
        }
    }

    #[test]
    fn a_json_object_is_one_event_and_an_array_is_many() {
        let e = extractor();
        assert_eq!(
            parse_batch(br#"{"k": "a"}"#, BodyFormat::Json, &e)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_batch(br#"[{"k": "a"}, {"k": 2}]"#, BodyFormat::Json, &e)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn every_bad_event_is_named_by_index() {
        let e = extractor();
        let body = br#"[{"k": "a"}, 5, {"x": 1}, {"k": "b"}]"#;
        assert_eq!(indices(parse_batch(body, BodyFormat::Json, &e)), [1, 2]);
    }

    #[test]
    fn ndjson_errors_carry_the_line_number_blank_lines_included() {
        let e = extractor();
        let body = b"{\"k\": 1}\n\n{oops\r\n{\"k\": 2}\n{}\n";
        assert_eq!(indices(parse_batch(body, BodyFormat::NdJson, &e)), [2, 4]);
    }

    #[test]
    fn unparseable_json_reports_the_position() {
        let e = extractor();
        match parse_batch(b"[{\"k\": 1},\n {\"k\" 2}]", BodyFormat::Json, &e) {
            Err(BatchError::Syntax(detail)) => {
                assert!(detail.contains("line 2 column"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_bodies_are_refused() {
        let e = extractor();
        assert_eq!(
            parse_batch(b"[]", BodyFormat::Json, &e).unwrap_err(),
            BatchError::Empty
        );
        assert_eq!(
            parse_batch(b"\n \n", BodyFormat::NdJson, &e).unwrap_err(),
            BatchError::Empty
        );
    }

    #[test]
    fn at_most_a_hundred_errors_are_reported() {
        let e = extractor();
        let body = format!("[{}]", vec!["1"; 150].join(","));
        assert_eq!(
            indices(parse_batch(body.as_bytes(), BodyFormat::Json, &e)).len(),
            MAX_REPORTED_ERRORS
        );
    }
}
