//! Turning a request body into a batch of extracted events: JSON (one object or an array) or
//! NDJSON. A batch is atomic: every event extracts cleanly, or the batch is refused with every
//! bad event named (up to [`MAX_REPORTED_ERRORS`]).

use super::extract::Extractor;
use crate::engine::shard::Item;
use serde::Serialize;
use serde_json::value::RawValue;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    /// More events than a batch may hold.
    #[error("the batch holds {found} events; at most {limit} are allowed")]
    TooManyEvents { found: usize, limit: usize },
    /// Some events are invalid; nothing of the batch is applied.
    #[error("{} event(s) invalid", .0.len())]
    Invalid(Vec<EventError>),
}

/// What a batch may hold.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most events in one batch.
    pub max_events: usize,
    /// Most bytes of one event's JSON.
    pub max_event_bytes: usize,
}

impl BatchLimits {
    /// No limits (WAL records reapplied at recovery, tools that trust their input).
    pub const NONE: BatchLimits = BatchLimits {
        max_events: usize::MAX,
        max_event_bytes: usize::MAX,
    };
}

/// A parsed batch, already routed: per event its time, and per shard the (event, operator)
/// inputs its key groups own, in event order. Built by the parsing thread, outside the
/// sequencer's lock, so sequencing touches only the times.
#[derive(Debug)]
pub struct ParsedBatch {
    /// Per event, its time (`None` in processing time).
    pub(crate) times: Vec<Option<i64>>,
    /// Per shard, its items.
    pub(crate) items: Vec<Vec<Item>>,
}

impl ParsedBatch {
    fn new(extractor: &Extractor, events: usize) -> ParsedBatch {
        let shards = extractor.shards();
        let per_shard = events * extractor.operators() / shards + 16;
        ParsedBatch {
            times: Vec::with_capacity(events),
            items: (0..shards).map(|_| Vec::with_capacity(per_shard)).collect(),
        }
    }

    /// Extracts the event `text` into the batch. On an error the batch is refused whole, so
    /// whatever the event added before failing is dropped with it.
    fn extract(&mut self, extractor: &Extractor, text: &[u8]) -> Result<(), String> {
        let step = self.times.len() as u32;
        let shards = self.items.len();
        let items = &mut self.items;
        let owned = extractor.owned();
        let time = extractor.extract_each(text, |operator, time, input| {
            if !owned.contains(u32::from(input.key_group)) {
                return;
            }
            let shard = crate::engine::shard_of(u32::from(input.key_group), shards);
            items[shard].push(Item {
                step,
                operator: operator as u16,
                time: time.unwrap_or(0),
                input,
            });
        })?;
        self.times.push(time);
        Ok(())
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

/// Parses and extracts every event of `body`.
pub fn parse_batch(
    body: &[u8],
    format: BodyFormat,
    extractor: &Extractor,
) -> Result<ParsedBatch, BatchError> {
    parse_batch_limited(body, format, extractor, BatchLimits::NONE)
}

/// Parses and extracts every event of `body`, within `limits`.
pub fn parse_batch_limited(
    body: &[u8],
    format: BodyFormat,
    extractor: &Extractor,
    limits: BatchLimits,
) -> Result<ParsedBatch, BatchError> {
    let raw = split(body, format)?;
    if raw.is_empty() {
        return Err(BatchError::Empty);
    }
    if raw.len() > limits.max_events {
        return Err(BatchError::TooManyEvents {
            found: raw.len(),
            limit: limits.max_events,
        });
    }
    let mut events = ParsedBatch::new(extractor, raw.len());
    let mut errors = Vec::new();
    for (index, bytes) in raw {
        let extracted = if bytes.len() > limits.max_event_bytes {
            Err(format!(
                "event is larger than {} bytes",
                limits.max_event_bytes
            ))
        } else if errors.is_empty() {
            events.extract(extractor, bytes)
        } else {
            // The batch is refused: only find the other bad events.
            extractor.extract_each(bytes, |_, _, _| {}).map(|_| ())
        };
        match extracted {
            Ok(()) => {}
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

/// The events' JSON texts with their indices: a JSON array's elements (borrowed, not copied),
/// a single JSON value, or NDJSON's non-blank lines (numbered by line).
fn split(body: &[u8], format: BodyFormat) -> Result<Vec<(usize, &[u8])>, BatchError> {
    let syntax = |e: serde_json::Error| BatchError::Syntax(e.to_string());
    match format {
        BodyFormat::Json if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(syntax)?;
            Ok(items
                .into_iter()
                .map(|r| r.get().as_bytes())
                .enumerate()
                .collect())
        }
        BodyFormat::Json => {
            let _: &RawValue = serde_json::from_slice(body).map_err(syntax)?;
            Ok(vec![(0, body)])
        }
        BodyFormat::NdJson => {
            let mut lines = Vec::with_capacity(body.len() / 64);
            let mut start = 0;
            let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
            for (index, end) in ends.enumerate() {
                let line = &body[start..end];
                if !line.trim_ascii().is_empty() {
                    lines.push((index, line));
                }
                start = end + 1;
            }
            Ok(lines)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Pointer;

    fn extractor() -> Extractor {
        Extractor::new(Pointer::parse("/k").unwrap(), None, vec![])
    }

    fn indices(result: Result<ParsedBatch, BatchError>) -> Vec<usize> {
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
    fn limits_bound_the_events_and_their_size() {
        let e = extractor();
        let limits = BatchLimits {
            max_events: 2,
            max_event_bytes: 20,
        };
        let three = br#"[{"k": 1}, {"k": 2}, {"k": 3}]"#;
        assert_eq!(
            parse_batch_limited(three, BodyFormat::Json, &e, limits).unwrap_err(),
            BatchError::TooManyEvents { found: 3, limit: 2 }
        );
        let big = br#"[{"k": 1}, {"k": "a long key of many bytes"}]"#;
        assert_eq!(
            indices(parse_batch_limited(big, BodyFormat::Json, &e, limits)),
            [1]
        );
        let ndjson = b"{\"k\": 1}\n{\"k\": \"a long key of many bytes\"}\n";
        assert_eq!(
            indices(parse_batch_limited(ndjson, BodyFormat::NdJson, &e, limits)),
            [1]
        );
    }

    #[test]
    fn deep_nesting_is_a_syntax_error_not_a_crash() {
        let e = extractor();
        let deep = ["{\"a\":".repeat(10_000), "1".into(), "}".repeat(10_000)].concat();
        assert_eq!(
            indices(parse_batch(deep.as_bytes(), BodyFormat::Json, &e)),
            [0]
        );
        let deep_element = format!("[{}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            indices(parse_batch(deep_element.as_bytes(), BodyFormat::Json, &e)),
            [0]
        );
        let deep_event = format!(
            "{{\"k\": 1, \"x\": {}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(parse_batch(deep_event.as_bytes(), BodyFormat::NdJson, &e).is_err());
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
