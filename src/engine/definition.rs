//! An operator ready to run: its name, what it reads from events, and how to make one instance
//! of it per shard. Built-ins come from a spec; a crate user's own operators from
//! [`OperatorDef::new`].

use super::ingest::Inputs;
use super::operator::Operator;
use super::runner::{OperatorRunner, Runner};
use std::sync::Arc;

type MakeRunner = dyn Fn(u16, Option<i64>) -> Box<dyn Runner> + Send + Sync;

/// A named operator with its inputs and a factory of instances.
#[derive(Clone)]
pub struct OperatorDef {
    /// The operator's name in the pipeline (state queries and output records use it).
    pub name: String,
    /// What the operator reads from each event.
    pub inputs: Inputs,
    make: Arc<MakeRunner>,
}

impl OperatorDef {
    /// Defines an operator; `make` builds one instance per shard.
    pub fn new<O: Operator>(
        name: impl Into<String>,
        inputs: Inputs,
        make: impl Fn() -> O + Send + Sync + 'static,
    ) -> OperatorDef {
        OperatorDef {
            name: name.into(),
            inputs,
            make: Arc::new(move |index, ttl| Box::new(OperatorRunner::new(make(), index, ttl))),
        }
    }

    /// One instance for a shard, as operator `index` of its pipeline, with the pipeline's TTL.
    pub(crate) fn instance(&self, index: u16, ttl: Option<i64>) -> Box<dyn Runner> {
        (self.make)(index, ttl)
    }
}

impl std::fmt::Debug for OperatorDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorDef")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
