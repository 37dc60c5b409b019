//! Every fuzz target over its committed corpus (`fuzz/corpus/<target>/`), as a plain test: what
//! the fuzzer found once stays covered without the fuzzer.

fn run(target: &str, entry: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = file.unwrap().path();
        entry(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "the {target} corpus is empty");
}

#[test]
fn the_spec_corpus_runs_clean() {
    run("spec", eddy::fuzzing::spec);
}

#[test]
fn the_events_corpus_runs_clean() {
    run("events", eddy::fuzzing::events);
}

#[test]
fn the_wal_corpus_runs_clean() {
    run("wal", eddy::fuzzing::wal);
}
