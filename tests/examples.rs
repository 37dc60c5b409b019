//! The examples run and check their own results, so they cannot rot unnoticed.

#[path = "../examples/custom_operator.rs"]
mod custom_operator;

#[test]
fn the_custom_operator_example_runs_and_its_assertions_hold() {
    custom_operator::main();
}
