//! A JSON value kept as its compact text, inline (no heap allocation) up to 24 bytes: what
//! `latest` and `last_n` keep per key, so that most values (numbers, times, short strings)
//! cost neither an allocation per event nor a pointer per value.

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;

/// One JSON value as compact text (no whitespace between tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(CompactString);

impl JsonText {
    /// The compact text of `text`, one valid JSON value.
    pub fn compact(text: &str) -> JsonText {
        if !text.starts_with(['[', '{']) {
            // A scalar holds no whitespace between tokens.
            return JsonText(CompactString::from(text));
        }
        let mut out = CompactString::with_capacity(text.len());
        let (mut in_string, mut escaped) = (false, false);
        for c in text.chars() {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
            } else if c == '"' {
                in_string = true;
            } else if c.is_ascii_whitespace() {
                continue;
            }
            out.push(c);
        }
        JsonText(out)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value, to embed in a document.
    pub fn as_raw(&self) -> &RawValue {
        serde_json::from_str(&self.0).expect("a JsonText holds valid JSON")
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serialises as the JSON value itself, not as a string.
impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_raw().serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonText, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(JsonText::compact(raw.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(text: &str) -> String {
        let _: &RawValue = serde_json::from_str(text).unwrap();
        JsonText::compact(text).as_str().to_owned()
    }

    #[test]
    fn whitespace_between_tokens_goes_and_strings_stay_as_written() {
        assert_eq!(
            compact(r#" { "a b" : [ 1 , "x\" y" ] } "#.trim()),
            r#"{"a b":[1,"x\" y"]}"#
        );
        assert_eq!(compact(r#""a  b""#), r#""a  b""#);
        assert_eq!(compact("-1.5e3"), "-1.5e3");
    }

    #[test]
    fn serialises_as_the_value_and_reads_back() {
        let text = JsonText::compact(r#"{"k": [true, null]}"#);
        let doc = serde_json::to_string(&(5, &text)).unwrap();
        assert_eq!(doc, r#"[5,{"k":[true,null]}]"#);
        let (n, back): (i32, JsonText) = serde_json::from_str(&doc).unwrap();
        assert_eq!((n, back), (5, text));
    }
}
