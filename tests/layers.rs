//! The layer rule, checked: every top-level module of `src` has ONE rank in [`RANKS`], and
//! may import (by `use crate::…` or an inline `crate::…` path, grouped ones included) only
//! modules of strictly lower rank; its own module is free. A new module must be ranked.
//!
//! Unit-test modules (`#[cfg(test)]` items) are left out: they build fixtures from anywhere.
//! `lib.rs` (the module list) and `main.rs` (the binary, a crate of its own that imports
//! `eddy::…`) are the roots, not modules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module and its rank: lower layers first.
const RANKS: &[(&str, u8)] = &[
    // Leaves: they import nothing of the crate.
    ("clock", 0),
    ("state", 0),
    ("spec", 0),
    ("metrics", 0),
    ("auth", 0),
    ("workload", 0),
    ("telemetry", 0),
    // The write-ahead log (counts into metrics); the load generator (over workload).
    ("wal", 1),
    ("load", 1),
    // SQL, below the engine: it stores rows, not engine types.
    ("store", 2),
    ("engine", 3),
    // Settings read by many (they name engine, load, spec and wal settings); fuzz entries.
    ("config", 4),
    ("fuzzing", 4),
    // Checkpoints over the engine and the store; the `eddy replay` tool over the engine.
    ("checkpoint", 5),
    ("replay", 5),
    ("service", 6),
    ("api", 7),
    // The dashboard, served beside the API with its state and its problem answers.
    ("ui", 8),
    ("app", 9),
];

/// Edges that break the rule today, each with the brief that removes it. TEMPORARY: brief C
/// (store rows free of engine types) removes `store → engine`; whoever merges second deletes
/// this entry. An entry no longer used fails the test, so that it cannot linger.
const EXCEPTIONS: &[(&str, &str)] = &[("store", "engine")];

fn rank(module: &str) -> Option<u8> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// One `crate::<module>` reference: where, and to which module.
#[derive(Debug, PartialEq)]
struct Reference {
    line: usize,
    module: String,
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module of a file under `src` (`src/foo.rs`, `src/foo/**` → `foo`); `None`
/// for the crate roots.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// `text` with comments, string and char literals blanked (newlines kept, so that line
/// numbers stay), so that neither braces nor paths inside them count.
fn blank_literals(text: &str) -> String {
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
fn drop_test_items(text: &str) -> String {
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
fn references(code: &str) -> Vec<Reference> {
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

/// The forbidden edges of one file of module `module`, as messages.
fn violations(file: &str, module: &str, text: &str) -> Vec<String> {
    let code = drop_test_items(&blank_literals(text));
    let Some(own) = rank(module) else {
        return vec![format!("{file}: module `{module}` has no rank in RANKS")];
    };
    let mut out = Vec::new();
    for r in references(&code) {
        if r.module == module || EXCEPTIONS.contains(&(module, r.module.as_str())) {
            continue;
        }
        match rank(&r.module) {
            Some(theirs) if theirs < own => {}
            Some(theirs) => out.push(format!(
                "{file}:{}: `{module}` (rank {own}) imports `{}` (rank {theirs}): a module may \
                 import only lower ranks",
                r.line, r.module
            )),
            None => out.push(format!(
                "{file}:{}: `{module}` imports `{}`, which has no rank in RANKS",
                r.line, r.module
            )),
        }
    }
    out
}

/// Every file of `src` with its module and text.
fn sources() -> Vec<(String, String, String)> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&root).expect("under src").to_owned();
            let module = module_of(&relative)?;
            let text = std::fs::read_to_string(&path).expect("read source");
            Some((format!("src/{}", relative.display()), module, text))
        })
        .collect()
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let found: Vec<String> = sources()
        .iter()
        .flat_map(|(file, module, text)| violations(file, module, text))
        .collect();
    assert!(
        found.is_empty(),
        "imports against the layer rule:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_exception_is_still_needed() {
    for (from, to) in EXCEPTIONS {
        let used = sources().iter().any(|(_, module, text)| {
            module == from
                && references(&drop_test_items(&blank_literals(text)))
                    .iter()
                    .any(|r| r.module == *to)
        });
        assert!(
            used,
            "`{from}` no longer imports `{to}`: delete the exception"
        );
    }
}

#[test]
fn the_table_ranks_every_module_of_src_and_no_other() {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src()).expect("read src") {
        let path = entry.expect("dir entry").path();
        let relative = path.strip_prefix(src()).expect("under src").to_owned();
        if let Some(module) = module_of(&relative) {
            modules.insert(module);
        }
    }
    let unranked: Vec<&String> = modules.iter().filter(|m| rank(m).is_none()).collect();
    assert!(
        unranked.is_empty(),
        "rank these modules in RANKS: {unranked:?}"
    );
    let stale: Vec<&str> = RANKS
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !modules.contains(*m))
        .collect();
    assert!(stale.is_empty(), "RANKS names modules src lacks: {stale:?}");
}

#[test]
fn a_forbidden_import_is_named_with_its_file_and_line() {
    let text = "use crate::clock::now_ms;\n\nfn f() { crate::api::openapi(); }\n";
    assert_eq!(
        violations("src/engine/x.rs", "engine", text),
        vec![
            "src/engine/x.rs:3: `engine` (rank 3) imports `api` (rank 7): a module may import \
             only lower ranks"
                .to_owned()
        ]
    );
}

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
