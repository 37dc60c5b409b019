//! One pass over an event's JSON text that captures, without copying, the raw text at every
//! pointer a pipeline reads, and checks everything else without building it.
//!
//! An event is accepted exactly when `serde_json` would parse it into a document: RFC 8259
//! syntax, strings of valid Unicode (paired surrogates in `\u` escapes), numbers that are
//! finite as an `f64`, containers nested less than [`MAX_DEPTH`] deep, and of repeated members
//! the last one counts. The unit tests check this against a `serde_json::Value` parse.
//!
//! The pointers form a tree of member names (a [`Plan`]); the scan walks the event and the
//! tree together, so its cost is one pass over the bytes whatever the number of pointers.
//! It is written byte by byte rather than as a serde visitor so that what it accepts is
//! exactly what a document parse accepts, in read and skipped values alike (serde_json's
//! skipping accepts lone surrogates and infinite numbers that its parse then refuses); it
//! costs about what the visitor did (docs/architecture.md, "Memory and the hot path").
//!
//! Over 400 lines for a reason: the scanner is about 300 lines read best whole; the rest are
//! its unit tests.

use crate::spec::Pointer;
use std::borrow::Cow;

/// Containers may nest at most this deep minus one (serde_json's limit).
pub const MAX_DEPTH: usize = 128;

/// The raw JSON text found at each pointer of a plan, by slot (`None`: not in the event).
pub type Captures<'a> = smallvec::SmallVec<[Option<&'a str>; 8]>;

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
        let mut scanner = Scanner {
            text,
            bytes: text.as_bytes(),
            at: 0,
        };
        let is_object = scanner
            .document(&self.root, &mut captures)
            .map_err(|fault| ScanError::Syntax(fault.describe(text)))?;
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

/// What is wrong with a text, and at which byte.
struct Fault {
    what: &'static str,
    at: usize,
}

impl Fault {
    /// `what` at its line and column, as serde_json names a place.
    fn describe(&self, text: &str) -> String {
        let before = &text.as_bytes()[..self.at.min(text.len())];
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|b| **b == b'\n').count();
        let column = before.len() - line_start + 1;
        format!("{} at line {line} column {column}", self.what)
    }
}

type Scanned<T = ()> = Result<T, Fault>;

/// Bytes a string may hold as they are: not a quote, a backslash or a control character.
const PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x20;
    while b < 256 {
        plain[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    plain
};

/// A member name as written, with its quotes.
struct Name<'a> {
    quoted: &'a str,
    escaped: bool,
}

impl<'a> Name<'a> {
    /// The name, unescaped.
    fn text(&self) -> Cow<'a, str> {
        if !self.escaped {
            return Cow::Borrowed(&self.quoted[1..self.quoted.len() - 1]);
        }
        // Scanned, so it is a valid string: serde_json decodes it.
        Cow::Owned(serde_json::from_str(self.quoted).expect("a scanned string is valid"))
    }
}

/// The scan's cursor. Every method starts at the first byte of what it scans (whitespace
/// before it already skipped) and ends just past it.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    /// The whole text: one value, with whitespace around it; answers whether it is an object.
    fn document(&mut self, root: &Node, captures: &mut Captures<'a>) -> Scanned<bool> {
        self.whitespace();
        let is_object = self.peek() == Some(b'{');
        self.capture(root, captures, 0)?;
        self.whitespace();
        if self.at < self.bytes.len() {
            return Err(self.fault("trailing characters"));
        }
        Ok(is_object)
    }

    /// Scans the value at `node`: walks it for the nodes below, then captures it.
    fn capture(&mut self, node: &Node, captures: &mut Captures<'a>, depth: usize) -> Scanned {
        // A repeated member: the last occurrence is the value, as in a parsed document.
        captures[node.first..node.end].fill(None);
        let start = self.at;
        if node.children.is_empty() {
            self.value(depth)?;
        } else {
            self.walk(node, captures, depth)?;
        }
        if let Some(slot) = node.slot {
            captures[slot] = Some(&self.text[start..self.at]);
        }
        Ok(())
    }

    /// Scans a value, capturing at the nodes below `node`.
    fn walk(&mut self, node: &Node, captures: &mut Captures<'a>, depth: usize) -> Scanned {
        match self.peek() {
            Some(b'{') => self.object(depth, |s, name, inner| {
                let name = name.text();
                match node.children.iter().find(|c| c.token == *name) {
                    Some(child) => s.capture(child, captures, inner),
                    None => s.value(inner),
                }
            }),
            Some(b'[') => self.array(depth, |s, index, inner| {
                match node.children.iter().find(|c| c.index == Some(index)) {
                    Some(child) => s.capture(child, captures, inner),
                    None => s.value(inner),
                }
            }),
            _ => self.value(depth),
        }
    }

    /// Scans a value nobody reads: checked, nothing kept.
    fn value(&mut self, depth: usize) -> Scanned {
        match self.peek() {
            Some(b'{') => self.object(depth, |s, _, inner| s.value(inner)),
            Some(b'[') => self.array(depth, |s, _, inner| s.value(inner)),
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.fault("expected value")),
        }
    }

    /// Scans an object inside `depth` containers, handing each member's value to `member`
    /// with the depth of its own containers.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, Name<'a>, usize) -> Scanned,
    ) -> Scanned {
        let inner = self.enter(depth)?;
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.fault("key must be a string"));
            }
            let name = self.string()?;
            self.whitespace();
            if !self.eat(b':') {
                return Err(self.fault("expected `:`"));
            }
            self.whitespace();
            member(self, name, inner)?;
            self.whitespace();
            if !self.eat(b',') {
                return match self.eat(b'}') {
                    true => Ok(()),
                    false => Err(self.fault("expected `,` or `}`")),
                };
            }
            self.whitespace();
        }
    }

    /// Scans an array inside `depth` containers, handing each element's index to `element`
    /// with the depth of its own containers.
    fn array(
        &mut self,
        depth: usize,
        mut element: impl FnMut(&mut Self, usize, usize) -> Scanned,
    ) -> Scanned {
        let inner = self.enter(depth)?;
        if self.eat(b']') {
            return Ok(());
        }
        for index in 0.. {
            element(self, index, inner)?;
            self.whitespace();
            if !self.eat(b',') {
                break;
            }
            self.whitespace();
        }
        match self.eat(b']') {
            true => Ok(()),
            false => Err(self.fault("expected `,` or `]`")),
        }
    }

    /// Steps into the container here; answers the depth inside it.
    fn enter(&mut self, depth: usize) -> Scanned<usize> {
        if depth + 1 >= MAX_DEPTH {
            return Err(self.fault("recursion limit exceeded"));
        }
        self.at += 1;
        self.whitespace();
        Ok(depth + 1)
    }

    fn string(&mut self) -> Scanned<Name<'a>> {
        let start = self.at;
        self.at += 1;
        let mut escaped = false;
        loop {
            while self.bytes.get(self.at).is_some_and(|b| PLAIN[*b as usize]) {
                self.at += 1;
            }
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at += 1;
                    self.escape()?;
                }
                Some(_) => {
                    let what = "control character (\\u0000-\\u001F) found while parsing a string";
                    return Err(self.fault(what));
                }
                None => return Err(self.fault("EOF while parsing a string")),
            }
        }
        self.at += 1;
        let quoted = &self.text[start..self.at];
        Ok(Name { quoted, escaped })
    }

    /// The escape after a backslash; `\u` escapes must pair their surrogates.
    fn escape(&mut self) -> Scanned {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 1;
                Ok(())
            }
            Some(b'u') => {
                self.at += 1;
                let lone = "lone surrogate in hex escape";
                match self.hex4()? {
                    0xD800..=0xDBFF => {
                        if !(self.eat(b'\\') && self.eat(b'u')) {
                            return Err(self.fault(lone));
                        }
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(self.fault(lone)),
                        }
                    }
                    0xDC00..=0xDFFF => Err(self.fault(lone)),
                    _ => Ok(()),
                }
            }
            _ => Err(self.fault("invalid escape")),
        }
    }

    fn hex4(&mut self) -> Scanned<u32> {
        let Some(digits) = self.bytes.get(self.at..self.at + 4) else {
            return Err(self.fault("EOF while parsing a string"));
        };
        let mut unit = 0;
        for digit in digits {
            match char::from(*digit).to_digit(16) {
                Some(d) => unit = unit * 16 + d,
                None => return Err(self.fault("invalid escape")),
            }
        }
        self.at += 4;
        Ok(unit)
    }

    fn number(&mut self) -> Scanned {
        let start = self.at;
        self.eat(b'-');
        let integer_digits = match self.peek() {
            Some(b'0') => {
                self.at += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.fault("invalid number")),
        };
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            if self.digits() == 0 {
                return Err(self.fault("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            integer = false;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(self.fault("invalid number"));
            }
        }
        // A document holds a number as an i64, a u64 or a finite f64.
        if !integer || integer_digits > 18 {
            let text = &self.text[start..self.at];
            if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(Fault {
                    what: "number out of range",
                    at: start,
                });
            }
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let from = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - from
    }

    fn literal(&mut self, word: &[u8]) -> Scanned {
        if !self.bytes[self.at..].starts_with(word) {
            return Err(self.fault("expected ident"));
        }
        self.at += word.len();
        Ok(())
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Steps over `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let here = self.peek() == Some(byte);
        self.at += usize::from(here);
        here
    }

    fn fault(&self, what: &'static str) -> Fault {
        let what = match self.at < self.bytes.len() || what.starts_with("EOF") {
            true => what,
            false => "EOF while parsing a value",
        };
        Fault { what, at: self.at }
    }
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
            .map(|s| captures[*s].map(|r| r.to_owned()))
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

    #[test]
    fn strings_numbers_and_literals_are_checked_as_a_document_parse_checks_them() {
        let (p, _) = plan(&["/a"]);
        let refused = [
            r#"{"a": "\ud800"}"#,
            r#"{"z": "\udc00"}"#,
            r#"{"\ud800x": 1}"#,
            r#"{"z": 1e400}"#,
            r#"{"a": -1e400}"#,
            r#"{"z": "a	b"}"#,
            r#"{"z": "\x"}"#,
            r#"{"z": 01}"#,
            r#"{"z": 1.}"#,
            r#"{"z": nul}"#,
            r#"{"z": 1,}"#,
        ];
        for text in refused {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "{text}"
            );
            assert!(matches!(p.scan(text), Err(ScanError::Syntax(_))), "{text}");
        }
        let captured = |text: &str| p.scan(text).unwrap()[0].map(str::to_owned);
        assert_eq!(
            captured(r#"{"a": "\ud83d\ude00"}"#).unwrap(),
            r#""\ud83d\ude00""#
        );
        assert_eq!(captured(r#"{"a": 1e-400}"#).unwrap(), "1e-400");
    }

    #[test]
    fn a_fault_is_named_with_its_line_and_column() {
        let (p, _) = plan(&["/a"]);
        let Err(ScanError::Syntax(detail)) = p.scan("{\"a\":\n 1 2}") else {
            panic!("refused")
        };
        assert_eq!(detail, "expected `,` or `}` at line 2 column 4");
    }

    /// Pointers the property below captures: members, nested members, array elements, the
    /// whole event, and a member whose name is a number.
    const POINTERS: [&str; 7] = ["/a", "/b/c", "/d/1", "/a/b", "", "/1", "/c/0/a"];

    /// JSON-like text: mostly valid, with the edge cases a document parse refuses.
    fn json_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let scalars = vec![
            "0",
            "-0",
            "12",
            "1.5",
            "-2e3",
            "1E+2",
            "1e400",
            "-1e-400",
            "01",
            "1.",
            "-",
            "2e",
            "12345678901234567890123",
            "true",
            "false",
            "null",
            "nul",
            r#""x""#,
            r#""a b""#,
            r#""\u00e9""#,
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\q""#,
            "\"\t\"",
            r#""\"""#,
        ];
        let names = vec!["a", "b", "c", "d", "1", r"\u0061", r"a\/b", "e"];
        let scalar = prop::sample::select(scalars).prop_map(str::to_owned);
        let value = scalar.prop_recursive(4, 24, 4, move |inner| {
            let member = (prop::sample::select(names.clone()), inner.clone());
            prop_oneof![
                prop::collection::vec(member, 0..4).prop_map(|members| {
                    let members: Vec<String> = members
                        .iter()
                        .map(|(n, v)| format!("\"{n}\" : {v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
                prop::collection::vec(inner, 0..4)
                    .prop_map(|items| format!("[ {} ]", items.join(", "))),
            ]
        });
        let breakage = prop::sample::select(vec!['{', '}', '[', ']', ',', ':', '"', ' ', '\\']);
        let mutation = prop::option::of((any::<prop::sample::Index>(), breakage, any::<bool>()));
        (value, mutation).prop_map(|(mut text, mutation)| {
            if let Some((at, c, insert)) = mutation {
                let at = at.index(text.len() + 1);
                match insert || at == text.len() {
                    true => text.insert(at, c),
                    false => drop(text.remove(at)),
                }
            }
            text
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// The scan accepts exactly what serde_json parses into an object, and captures at
        /// every pointer exactly the value the parsed document holds there.
        #[test]
        fn the_scan_agrees_with_a_document_parse(text in json_like()) {
            let (p, slots) = plan(&POINTERS);
            match (serde_json::from_str::<serde_json::Value>(&text), p.scan(&text)) {
                (Err(_), Err(ScanError::Syntax(_))) => {}
                (Ok(doc), Err(ScanError::NotAnObject)) if !doc.is_object() => {}
                (Ok(doc), Ok(captures)) if doc.is_object() => {
                    for (pointer, slot) in POINTERS.iter().zip(&slots) {
                        let ours = captures[*slot]
                            .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap());
                        proptest::prop_assert_eq!(ours.as_ref(), doc.pointer(pointer), "{}", pointer);
                    }
                }
                (doc, scanned) => proptest::prop_assert!(false, "{text}: {doc:?} {scanned:?}"),
            }
        }
    }
}
