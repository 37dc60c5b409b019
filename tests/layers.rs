//! The layer rule, checked: every top-level module of `src` has ONE rank in [`RANKS`], and
//! may import (by `use crate::…` or an inline `crate::…` path, grouped ones included) only
//! modules of strictly lower rank; its own module is free. A new module must be ranked.
//!
//! Unit-test modules (`#[cfg(test)]` items) are left out: they build fixtures from anywhere.
//! `lib.rs` (the module list) and `main.rs` (the binary, a crate of its own that imports
//! `eddy::…`) are the roots, not modules.

#[path = "layers/scan.rs"]
mod scan;

use scan::{blank_literals, drop_test_items, references};
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
    // The log a sequencer appends to: the WAL, or a JetStream stream fenced by a lease.
    ("log", 3),
    ("engine", 4),
    // Settings read by many (they name engine, load, spec and wal settings); fuzz entries.
    ("config", 5),
    ("fuzzing", 5),
    // Checkpoints over the engine and the store; the `eddy replay` tool over the engine.
    ("checkpoint", 6),
    ("replay", 6),
    ("service", 7),
    ("api", 8),
    // The dashboard, served beside the API with its state and its problem answers.
    ("ui", 9),
    ("app", 10),
];

/// Edges that break the rule, each with the reason it must, until it is removed; none today.
/// An entry no longer used fails the test, so that it cannot linger.
const EXCEPTIONS: &[(&str, &str)] = &[];

fn rank(module: &str) -> Option<u8> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
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
            "src/engine/x.rs:3: `engine` (rank 4) imports `api` (rank 8): a module may import \
             only lower ranks"
                .to_owned()
        ]
    );
}
