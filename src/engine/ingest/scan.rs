//! One pass over an event's JSON text that captures, without copying, the raw text at every
//! pointer a pipeline reads, and skips everything else without building it (but still checks
//! that it is JSON, nested less than [`MAX_DEPTH`] deep, as serde_json's own parser would).
//!
//! The pointers form a tree of member names (a [`Plan`]); the scan walks the event and the
//! tree together, so its cost is one pass over the bytes whatever the number of pointers.
//!
//! Over 400 lines for a reason: the scanner is about 350 lines, one serde visitor stack that
//! reads best whole; the rest are its unit tests.

use crate::spec::Pointer;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Containers may nest at most this deep minus one (serde_json's limit).
pub const MAX_DEPTH: usize = 128;

/// The raw JSON text found at each pointer of a plan, by slot (`None`: not in the event).
pub type Captures<'a> = smallvec::SmallVec<[Option<&'a RawValue>; 8]>;

/// The pointers to capture, as a tree of reference tokens.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    root: Node,
    slots: usize,
}

#[derive(Clone, Debug, Default)]
struct Node {
    token: String,
    /// The token as an array index, when it is one.
    index: Option<usize>,
    /// Where the value at this node is captured.
    slot: Option<usize>,
    children: Vec<Node>,
    /// The slots of this node and every node below it: `first..end`.
    first: usize,
    end: usize,
}

/// Why an event's text is not a capturable event.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanError {
    /// Not JSON (or nested too deep): serde_json's message.
    Syntax(String),
    /// JSON, but not an object.
    NotAnObject,
}

impl Plan {
    /// A plan for `pointers`; answers each pointer's slot (equal pointers share one).
    pub fn new(pointers: &[&Pointer]) -> (Plan, Vec<usize>) {
        let mut root = Node::default();
        for pointer in pointers {
            let mut node = &mut root;
            for token in pointer.tokens() {
                let at = match node.children.iter().position(|c| c.token == *token) {
                    Some(at) => at,
                    None => {
                        node.children.push(Node {
                            token: token.clone(),
                            index: crate::spec::pointer::array_index(token),
                            ..Node::default()
                        });
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at];
            }
            // Numbered below, once the tree is whole.
            node.slot = Some(0);
        }
        let slots = number(&mut root, 0);
        let slots_of = pointers
            .iter()
            .map(|p| {
                let mut node = &root;
                for token in p.tokens() {
                    node = node
                        .children
                        .iter()
                        .find(|c| c.token == *token)
                        .expect("every pointer is in the tree");
                }
                node.slot.expect("every pointer has a slot")
            })
            .collect();
        (Plan { root, slots }, slots_of)
    }

    /// Scans `text`, one JSON object; answers the raw text at every slot.
    pub fn scan<'a>(&self, text: &'a str) -> Result<Captures<'a>, ScanError> {
        let mut captures: Captures<'a> = smallvec::smallvec![None; self.slots];
        let mut de = serde_json::Deserializer::from_str(text);
        let syntax = |e: serde_json::Error| ScanError::Syntax(e.to_string());
        if let Some(slot) = self.root.slot {
            let whole: &'a RawValue = serde_json::from_str(text).map_err(syntax)?;
            check_depth(whole, 0).map_err(syntax)?;
            captures[slot] = Some(whole);
        }
        let object = Walk {
            node: &self.root,
            captures: &mut captures,
            depth: 0,
        };
        let is_object = de.deserialize_any(object).map_err(syntax)?;
        de.end().map_err(syntax)?;
        if is_object {
            Ok(captures)
        } else {
            Err(ScanError::NotAnObject)
        }
    }
}

/// Gives every node with a slot its number in depth-first order, and every node its range.
fn number(node: &mut Node, next: usize) -> usize {
    node.first = next;
    let mut next = next;
    if node.slot.is_some() {
        node.slot = Some(next);
        next += 1;
    }
    for child in &mut node.children {
        next = number(child, next);
    }
    node.end = next;
    next
}

/// Nesting of a raw value: 0 for a scalar, 1 for `[]`, ...
fn depth_of(raw: &RawValue) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in raw.get().bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    deepest
}

/// Refuses a captured container that, inside `enclosing` containers, nests too deep.
fn check_depth<E: de::Error>(raw: &RawValue, enclosing: usize) -> Result<(), E> {
    let structured = matches!(raw.get().as_bytes().first(), Some(b'[' | b'{'));
    if structured && enclosing + depth_of(raw) >= MAX_DEPTH {
        return Err(E::custom("recursion limit exceeded"));
    }
    Ok(())
}

/// The `visit_*` methods of every JSON scalar, each answering `$answer`: a scalar holds no
/// member to walk into nor anything to skip.
macro_rules! scalars_are {
    ($answer:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($answer)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($answer)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($answer)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($answer)
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($answer)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($answer)
        }
    };
}

/// Captures the value at `node`, then walks into it for the nodes below.
struct Capture<'p, 'c, 'a> {
    node: &'p Node,
    captures: &'c mut Captures<'a>,
    /// Containers enclosing the value.
    depth: usize,
}

impl<'a> DeserializeSeed<'a> for Capture<'_, '_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        let Capture {
            node,
            captures,
            depth,
        } = self;
        // A repeated member: the last occurrence is the value, as in a parsed document.
        captures[node.first..node.end].fill(None);
        let walk = |captures: &mut Captures<'a>, d: D| {
            d.deserialize_any(Walk {
                node,
                captures,
                depth,
            })
            .map(|_| ())
        };
        let Some(slot) = node.slot else {
            return walk(captures, d);
        };
        let raw = <&'a RawValue>::deserialize(d)?;
        check_depth(raw, depth)?;
        captures[slot] = Some(raw);
        if !node.children.is_empty() {
            let mut inner = serde_json::Deserializer::from_str(raw.get());
            inner
                .deserialize_any(Walk {
                    node,
                    captures,
                    depth,
                })
                .map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// Walks a value for the nodes below `node`; answers whether the value is an object.
struct Walk<'p, 'c, 'a> {
    node: &'p Node,
    captures: &'c mut Captures<'a>,
    depth: usize,
}

impl<'a> Visitor<'a> for Walk<'_, '_, 'a> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<bool, M::Error> {
        while let Some(name) = map.next_key::<Member<'a>>()? {
            match self.node.children.iter().find(|c| c.token == *name.0) {
                Some(child) => map.next_value_seed(Capture {
                    node: child,
                    captures: self.captures,
                    depth: self.depth + 1,
                })?,
                None => map.next_value::<Skip>().map(|_| ())?,
            }
        }
        Ok(true)
    }

    fn visit_seq<S: SeqAccess<'a>>(self, mut seq: S) -> Result<bool, S::Error> {
        let mut index = 0;
        loop {
            let child = self.node.children.iter().find(|c| c.index == Some(index));
            let more = match child {
                Some(child) => seq
                    .next_element_seed(Capture {
                        node: child,
                        captures: self.captures,
                        depth: self.depth + 1,
                    })?
                    .is_some(),
                None => seq.next_element::<Skip>()?.is_some(),
            };
            if !more {
                return Ok(false);
            }
            index += 1;
        }
    }

    scalars_are!(false);
}

/// A member name, borrowed from the text unless it holds escapes.
struct Member<'a>(Cow<'a, str>);

impl<'a> Deserialize<'a> for Member<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'a> Visitor<'a> for Name {
            type Value = Member<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E>(self, s: &'a str) -> Result<Member<'a>, E> {
                Ok(Member(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Member<'a>, E> {
                Ok(Member(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Name)
    }
}

/// A value nobody reads: parsed through serde_json's depth-checked path, nothing kept.
struct Skip;

impl<'a> Deserialize<'a> for Skip {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'a> Visitor<'a> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<Skip, M::Error> {
        while map.next_entry::<IgnoredAny, Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_seq<S: SeqAccess<'a>>(self, mut seq: S) -> Result<Skip, S::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    scalars_are!(Skip);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pointers: &[&str]) -> (Plan, Vec<usize>) {
        let parsed: Vec<Pointer> = pointers
            .iter()
            .map(|p| Pointer::parse(p).unwrap())
            .collect();
        Plan::new(&parsed.iter().collect::<Vec<_>>())
    }

    fn texts(plan: &Plan, slots: &[usize], event: &str) -> Vec<Option<String>> {
        let captures = plan.scan(event).unwrap();
        slots
            .iter()
            .map(|s| captures[*s].map(|r| r.get().to_owned()))
            .collect()
    }

    #[test]
    fn captures_members_nested_members_and_array_elements() {
        let (p, s) = plan(&["/a", "/b/c", "/d/1", "/e~1f"]);
        let event = r#"{"x": [1, {"a": 0}], "a": "A", "b": {"c": [true]}, "d": [0, {"y": 2}], "e/f": null}"#;
        assert_eq!(
            texts(&p, &s, event),
            [
                Some(r#""A""#.into()),
                Some("[true]".into()),
                Some(r#"{"y": 2}"#.into()),
                Some("null".into())
            ]
        );
        assert_eq!(texts(&p, &s, r#"{"b": 5}"#), [None, None, None, None]);
    }

    #[test]
    fn equal_pointers_share_a_slot_and_a_pointer_may_sit_under_another() {
        let (p, s) = plan(&["/a", "/a/b", "/a", ""]);
        assert_eq!(s[0], s[2]);
        let event = r#"{"a": {"b": 7}}"#;
        assert_eq!(
            texts(&p, &s, event),
            [
                Some(r#"{"b": 7}"#.into()),
                Some("7".into()),
                Some(r#"{"b": 7}"#.into()),
                Some(event.into())
            ]
        );
    }

    #[test]
    fn the_last_of_repeated_members_wins_below_it_too() {
        let (p, s) = plan(&["/a/b", "/k"]);
        let event = r#"{"k": 1, "a": {"b": 1}, "a": 5, "k": "\u0041"}"#;
        assert_eq!(texts(&p, &s, event), [None, Some(r#""\u0041""#.into())]);
    }

    #[test]
    fn escaped_member_names_match_their_unescaped_token() {
        let (p, s) = plan(&["/ab"]);
        assert_eq!(texts(&p, &s, r#"{"a\u0062": 3}"#), [Some("3".into())]);
    }

    #[test]
    fn non_objects_and_bad_json_are_refused() {
        let (p, _) = plan(&["/a"]);
        assert_eq!(p.scan("[1, 2]").unwrap_err(), ScanError::NotAnObject);
        assert_eq!(p.scan("\"a\"").unwrap_err(), ScanError::NotAnObject);
        assert!(matches!(p.scan("[1, "), Err(ScanError::Syntax(_))));
        assert!(matches!(p.scan(r#"{"a": 1} x"#), Err(ScanError::Syntax(_))));
        assert!(matches!(p.scan(r#"{"a": tru}"#), Err(ScanError::Syntax(_))));
    }

    #[test]
    fn nesting_is_limited_in_skipped_and_in_captured_values() {
        let (p, _) = plan(&["/a"]);
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for member in ["a", "z"] {
            let ok = format!("{{\"{member}\": {}}}", nested(126));
            assert!(p.scan(&ok).is_ok(), "{member}: 127 levels are allowed");
            let deep = format!("{{\"{member}\": {}}}", nested(127));
            assert!(
                matches!(p.scan(&deep), Err(ScanError::Syntax(_))),
                "{member}: 128 levels are not"
            );
        }
        let tricky = format!("{{\"a\": [\"]]]\\\"[[\", {}]}}", nested(125));
        assert!(p.scan(&tricky).is_ok(), "brackets in strings do not count");
    }
}
