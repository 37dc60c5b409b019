//! The scanner of the layer test: Rust source with its comments, literals and test items
//! blanked, and the `crate::<module>` references left in it (grouped paths included). A
//! text scan, not a parser: enough for the rule, and tested below with its edge cases.

/// One `crate::<module>` reference: where, and to which module.
#[derive(Debug, PartialEq)]
pub struct Reference {
    pub line: usize,
    pub module: String,
}

/// `text` with comments, string and char literals blanked (newlines kept, so that line
/// numbers stay), so that neither braces nor paths inside them count.
pub fn blank_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let rest = &chars[i..];
        let end = if rest.starts_with(&['/', '/']) {
            rest.iter().position(|&c| c == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            block_comment_len(rest)
        } else if rest[0] == '"' {
            string_len(rest)
        } else if rest[0] == 'r' && raw_string_hashes(rest).is_some() {
            let hashes = raw_string_hashes(rest).unwrap();
            raw_string_len(rest, hashes)
        } else if rest[0] == '\'' {
            char_literal_len(rest).unwrap_or(1)
        } else {
            out.push(rest[0]);
            i += 1;
            continue;
        };
        if rest[0] == '\'' && end == 1 {
            out.push('\''); // a lifetime
        } else {
            out.extend(rest[..end].iter().map(|&c| blank(c)));
        }
        i += end;
    }
    out
}

fn block_comment_len(rest: &[char]) -> usize {
    let (mut depth, mut i) = (0, 0);
    while i < rest.len() {
        if rest[i..].starts_with(&['/', '*']) {
            depth += 1;
            i += 2;
        } else if rest[i..].starts_with(&['*', '/']) {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    rest.len()
}

/// The length of a `"…"` literal starting at `rest[0]` (escapes skipped).
fn string_len(rest: &[char]) -> usize {
    let mut i = 1;
    while i < rest.len() {
        match rest[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    rest.len()
}

/// `Some(number of #)` when `rest` opens a raw string `r#…"`.
fn raw_string_hashes(rest: &[char]) -> Option<usize> {
    let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
    (rest.get(1 + hashes) == Some(&'"')).then_some(hashes)
}

fn raw_string_len(rest: &[char], hashes: usize) -> usize {
    let mut close = vec!['"'];
    close.extend(std::iter::repeat_n('#', hashes));
    let start = 2 + hashes;
    (start..rest.len())
        .find(|&i| rest[i..].starts_with(&close))
        .map_or(rest.len(), |i| i + close.len())
}

/// The length of a char literal (`'x'`, `'\n'`, `'\u{1F600}'`), or `None` for a lifetime.
fn char_literal_len(rest: &[char]) -> Option<usize> {
    if rest.get(1) == Some(&'\\') {
        return (2..rest.len().min(14))
            .find(|&i| rest[i] == '\'')
            .map(|i| i + 1);
    }
    (rest.get(2) == Some(&'\'')).then_some(3)
}

/// `text` (literals blanked) with every `#[cfg(test)]` item blanked: up to the end of its
/// first brace group, or its `;`.
pub fn drop_test_items(text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i..].starts_with(&marker) {
            i += 1;
            continue;
        }
        let (mut depth, mut j) = (0usize, i);
        while j < chars.len() {
            match chars[j] {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ';' if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        let end = (j + 1).min(chars.len());
        for c in &mut chars[i..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = j + 1;
    }
    chars.into_iter().collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `crate::<module>` reference of `code` (literals and test items already blanked):
/// `crate::a::b`, and each item of a group, `crate::{a, b::{c, d}}` → `a`, `b`.
pub fn references(code: &str) -> Vec<Reference> {
    let chars: Vec<char> = code.chars().collect();
    let needle: Vec<char> = "crate::".chars().collect();
    let line_at = |i: usize| chars[..i].iter().filter(|&&c| c == '\n').count() + 1;
    let mut found = Vec::new();
    let mut i = 0;
    while i + needle.len() <= chars.len() {
        let starts = chars[i..].starts_with(&needle) && (i == 0 || !is_ident(chars[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i + needle.len();
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if chars.get(j) == Some(&'{') {
            for (at, module) in group_heads(&chars, j) {
                found.push(Reference {
                    line: line_at(at),
                    module,
                });
            }
        } else {
            let module: String = chars[j..].iter().take_while(|&&c| is_ident(c)).collect();
            found.push(Reference {
                line: line_at(i),
                module,
            });
        }
        i = j;
    }
    found.retain(|r| !r.module.is_empty() && r.module != "self");
    found
}

/// The first name of each item of the brace group opening at `chars[open]`, with where.
fn group_heads(chars: &[char], open: usize) -> Vec<(usize, String)> {
    let (mut heads, mut depth, mut expect_head) = (Vec::new(), 0, true);
    for (k, &c) in chars.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_head = true,
            c if depth == 1 && expect_head && is_ident(c) => {
                let name: String = chars[k..].iter().take_while(|&&c| is_ident(c)).collect();
                heads.push((k, name));
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_paths_count_each_item_and_comments_strings_and_tests_do_not() {
        let text = r#"use crate::{
        clock::now_ms,
        store::{self, Store},
    };
    // crate::app is named in a comment
    const S: &str = "crate::api";
    #[cfg(test)]
    mod tests {
        use crate::app;
    }
    "#;
        let code = drop_test_items(&blank_literals(text));
        let found: Vec<(usize, String)> = references(&code)
            .into_iter()
            .map(|r| (r.line, r.module))
            .collect();
        assert_eq!(found, vec![(2, "clock".into()), (3, "store".into())]);
    }

    #[test]
    fn lifetimes_and_char_literals_do_not_confuse_the_scanner() {
        let text = "fn f<'a>(x: &'a str) -> char { let _ = crate::wal::X; '{' }\nuse crate::spec;";
        let code = drop_test_items(&blank_literals(text));
        let found: Vec<String> = references(&code).into_iter().map(|r| r.module).collect();
        assert_eq!(found, vec!["wal".to_owned(), "spec".to_owned()]);
    }
}
