//! The answer for one output record: built from the engine's record, borrowing its text, for
//! a page (`GET …/output`) and for each Server-Sent Event (`GET …/output/stream`) alike.

use crate::engine::OutputRecord;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// One output record.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OutputRecordDoc)]
pub struct OutputRecordAnswer<'r> {
    pub offset: u64,
    pub operator: &'r str,
    pub key: &'r str,
    /// `session_closed` or `window_closed`.
    #[serde(rename = "type")]
    #[schema(value_type = OutputKind)]
    pub kind: RecordKind,
    /// One session, or one window with `"closed": true`.
    #[schema(value_type = super::values::OutputValue)]
    pub value: &'r RawValue,
}

impl<'r> From<&'r OutputRecord> for OutputRecordAnswer<'r> {
    fn from(record: &'r OutputRecord) -> OutputRecordAnswer<'r> {
        OutputRecordAnswer {
            offset: record.offset,
            operator: &record.operator,
            key: record.key.as_str(),
            kind: RecordKind::from(record.kind),
            value: &record.value,
        }
    }
}

/// What closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    SessionClosed,
    WindowClosed,
}

/// The kind of a record: a built-in one, or the name an operator of the embedding program
/// emits (`Context::emit`), written as it is. The document names the built-in ones only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RecordKind {
    BuiltIn(OutputKind),
    Custom(&'static str),
}

impl From<&'static str> for RecordKind {
    fn from(kind: &'static str) -> RecordKind {
        match kind {
            "session_closed" => RecordKind::BuiltIn(OutputKind::SessionClosed),
            "window_closed" => RecordKind::BuiltIn(OutputKind::WindowClosed),
            other => RecordKind::Custom(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_written_as_the_engine_names_it() {
        for kind in ["session_closed", "window_closed", "threshold_crossed"] {
            let text = serde_json::to_string(&RecordKind::from(kind)).unwrap();
            assert_eq!(text, format!("{kind:?}"));
        }
    }
}
