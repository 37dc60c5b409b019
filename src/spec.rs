//! Pipeline specifications: the contract's JSON document, validated into typed form.
//!
//! Invariant: a [`PipelineSpec`] exists only after [`PipelineSpec::from_json`] checked every field;
//! the engine never re-validates. `document` keeps the submitted JSON (with the contract's
//! defaults filled in) so that the API can echo it.

mod duration;
mod partition;
pub(crate) mod pointer;
mod validate;

pub use duration::Span;
pub use partition::{KeyGroups, partition_key_groups, partition_of};
pub use pointer::Pointer;
pub use validate::FieldError;

use serde_json::Value;

/// Number of key groups (`crc32c(key) % 256`): the unit in which state is split into
/// partitions and moves between instances.
pub const KEY_GROUPS: u32 = 256;

/// Most operators one pipeline may have.
pub const MAX_OPERATORS: usize = 64;

/// A validated pipeline definition.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    /// `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// Pointer to the routing key of every event.
    pub key: Pointer,
    /// Event time; `None` means processing time (arrival time, clock watermark).
    pub time: Option<TimeSpec>,
    pub checkpoint_interval: Span,
    pub retain_checkpoints: u32,
    pub state_ttl: Option<Span>,
    /// Key-group ranges the pipeline's state is split into (1 to 256; fixed at creation).
    pub partitions: u16,
    pub operators: Vec<OperatorSpec>,
    /// The document as submitted, with the contract's top-level defaults filled in.
    pub document: Value,
}

/// Where event time comes from.
#[derive(Clone, Debug)]
pub struct TimeSpec {
    pub field: Pointer,
    pub format: TimeFormat,
    pub max_out_of_orderness: Span,
}

/// How the time field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// An integer of epoch milliseconds.
    EpochMs,
    /// A number of epoch seconds, truncated to whole milliseconds.
    EpochS,
    /// An RFC 3339 string, truncated to whole milliseconds.
    Rfc3339,
}

/// One operator of a pipeline.
#[derive(Clone, Debug)]
pub struct OperatorSpec {
    pub name: String,
    /// The operator's own key; `None` uses the pipeline's.
    pub key: Option<Pointer>,
    /// Every pointer must equal its value for the operator to see the event.
    pub filter: Vec<(Pointer, Value)>,
    pub kind: OperatorKind,
}

/// The built-in operators and their parameters.
#[derive(Clone, Debug)]
pub enum OperatorKind {
    Latest {
        value: Pointer,
    },
    LastN {
        value: Pointer,
        n: usize,
    },
    Map {
        entry_key: Pointer,
        value: Option<Pointer>,
        reduce: Reduce,
    },
    Aggregate {
        value: Option<Pointer>,
        functions: Functions,
        reset: Option<Period>,
    },
    Session {
        gap: Span,
    },
    Window {
        value: Option<Pointer>,
        size: Span,
        slide: Option<Span>,
        functions: Functions,
        retain: usize,
    },
}

impl OperatorKind {
    /// The contract's name of the kind.
    pub fn name(&self) -> &'static str {
        match self {
            OperatorKind::Latest { .. } => "latest",
            OperatorKind::LastN { .. } => "last_n",
            OperatorKind::Map { .. } => "map",
            OperatorKind::Aggregate { .. } => "aggregate",
            OperatorKind::Session { .. } => "session",
            OperatorKind::Window { .. } => "window",
        }
    }
}

/// How a `map` operator folds the values of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Count,
    Min,
    Max,
    Last,
}

/// A calendar period (UTC) after which an `aggregate` starts afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Month,
}

/// A set of aggregate functions, in the contract's fixed vocabulary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Functions(u8);

/// One aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Count = 1,
    Sum = 2,
    Min = 4,
    Max = 8,
    Avg = 16,
}

impl Function {
    /// Every function, in the order answers list them.
    pub const ALL: [Function; 5] = [
        Function::Count,
        Function::Sum,
        Function::Min,
        Function::Max,
        Function::Avg,
    ];

    /// The contract's name of the function.
    pub fn name(self) -> &'static str {
        match self {
            Function::Count => "count",
            Function::Sum => "sum",
            Function::Min => "min",
            Function::Max => "max",
            Function::Avg => "avg",
        }
    }

    fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl Functions {
    /// The set holding `f` too.
    pub fn with(self, f: Function) -> Functions {
        Functions(self.0 | f as u8)
    }

    /// Whether `f` is in the set.
    pub fn has(self, f: Function) -> bool {
        self.0 & f as u8 != 0
    }

    /// Whether the functions need a numeric `value` (all but a lone `count`).
    pub fn need_value(self) -> bool {
        self.0 & !(Function::Count as u8) != 0
    }

    /// The functions of the set, in answer order.
    pub fn iter(self) -> impl Iterator<Item = Function> {
        Function::ALL.into_iter().filter(move |f| self.has(*f))
    }
}

impl PipelineSpec {
    /// Validates a spec document; on failure, every problem found, each naming its field.
    pub fn from_json(doc: &Value) -> Result<PipelineSpec, Vec<FieldError>> {
        validate::pipeline(doc)
    }

    /// The operator's index by name.
    pub fn operator_index(&self, name: &str) -> Option<usize> {
        self.operators.iter().position(|op| op.name == name)
    }

    /// The key groups `[first, last]` of partition `i` (from 0): contiguous, even ranges of
    /// `256 / partitions` each, the remainder spread over the first ones.
    pub fn key_groups(&self, i: u16) -> [u32; 2] {
        partition_key_groups(self.partitions, i)
    }

    /// Event time is processing time (arrival) when the spec has no `time`.
    pub fn processing_time(&self) -> bool {
        self.time.is_none()
    }
}
