//! JSON pointers (RFC 6901), compiled once from the spec and evaluated per event.

use serde_json::Value;
use std::fmt;

/// A compiled JSON pointer: its text and its unescaped reference tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses `text`; the error says why it is not a pointer.
    pub fn parse(text: &str) -> Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer: it must start with \"/\""
            ));
        };
        let tokens = rest
            .split('/')
            .map(|raw| {
                unescape(raw).ok_or_else(|| format!("{text:?} has a \"~\" not followed by 0 or 1"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The value the pointer designates in `doc`, if any.
    pub fn resolve<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        self.tokens.iter().try_fold(doc, |node, token| match node {
            Value::Object(map) => map.get(token.as_str()),
            Value::Array(items) => array_index(token).and_then(|i| items.get(i)),
            _ => None,
        })
    }
}

/// Debug-prints as the quoted pointer text, which is how error details name a field.
impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('~') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// RFC 6901 array indices: `0` or digits without a leading zero.
pub(crate) fn array_index(token: &str) -> Option<usize> {
    let leading_zero = token.len() > 1 && token.starts_with('0');
    if leading_zero || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_nested_fields_escapes_and_indices() {
        let doc = json!({"a": {"b/c": [10, {"~k": 7}]}, "": 1});
        assert_eq!(
            Pointer::parse("/a/b~1c/1/~0k").unwrap().resolve(&doc),
            Some(&json!(7))
        );
        assert_eq!(
            Pointer::parse("/a/b~1c/0").unwrap().resolve(&doc),
            Some(&json!(10))
        );
        assert_eq!(Pointer::parse("/").unwrap().resolve(&doc), Some(&json!(1)));
        assert_eq!(Pointer::parse("").unwrap().resolve(&doc), Some(&doc));
    }

    #[test]
    fn missing_paths_and_bad_indices_resolve_to_nothing() {
        let doc = json!({"a": [1, 2]});
        for p in ["/b", "/a/2", "/a/01", "/a/-", "/a/x", "/a/0/z"] {
            assert_eq!(Pointer::parse(p).unwrap().resolve(&doc), None, "{p}");
        }
    }

    #[test]
    fn malformed_pointers_are_rejected() {
        assert!(Pointer::parse("user_id").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        assert!(Pointer::parse("/a~").is_err());
    }
}
