//! The six built-in operators and how a spec becomes running instances of them.

mod aggregate;
mod calendar;
mod last_n;
mod latest;
mod map;
mod session;
mod stats;
mod window;

pub use aggregate::{Aggregate, AggregateState};
pub use calendar::period_start;
pub use last_n::LastN;
pub use latest::{Latest, LatestState};
pub use map::MapOp;
pub use session::{Session, SessionOp, SessionState};
pub use stats::{Stats, StatsFunction};
pub use window::{WindowOp, WindowState};

use super::definition::OperatorDef;
use super::ingest::{FieldKind, Inputs};
use super::operator::Context;
use crate::spec::{OperatorKind, OperatorSpec};

/// At most one pending event-time timer per key: the earliest one its state needs. A later
/// need is met when that timer fires and re-arms; an earlier one registers anew.
///
/// Held as a bare time, `i64::MIN` meaning none (8 bytes a key rather than an `Option`'s 16).
/// A timer due at `i64::MIN` itself is registered and then looks like none: the next need
/// registers again, a spare timer, which is harmless (operators check their state when a timer
/// fires).
#[derive(Clone, Copy, Debug)]
pub struct TimerSlot(i64);

impl Default for TimerSlot {
    fn default() -> Self {
        TimerSlot(TimerSlot::NONE)
    }
}

impl TimerSlot {
    const NONE: i64 = i64::MIN;

    fn pending(self) -> Option<i64> {
        (self.0 != TimerSlot::NONE).then_some(self.0)
    }

    /// Makes sure a timer at or before `due` is pending.
    pub fn arm(&mut self, due: i64, cx: &mut Context<'_>) {
        if self.pending().is_none_or(|pending| due < pending) {
            cx.register_event_time_timer(due);
            self.0 = due;
        }
    }

    /// Forgets the pending timer once the watermark reached it.
    pub fn fired(&mut self, watermark: i64) {
        if self
            .pending()
            .is_some_and(|pending| is_due(pending, watermark))
        {
            self.0 = TimerSlot::NONE;
        }
    }
}

/// A timer at `time` is due once the watermark is at least `time`.
pub fn is_due(time: i64, watermark: i64) -> bool {
    time <= watermark
}

/// The definition of a built-in operator from its spec (`max_map_entries` bounds a `map`).
pub(crate) fn definition(spec: &OperatorSpec, max_map_entries: usize) -> OperatorDef {
    let mut inputs = Inputs {
        key: spec.key.clone(),
        filter: spec.filter.clone(),
        value: None,
        entry_key: None,
    };
    let name = spec.name.clone();
    match &spec.kind {
        OperatorKind::Latest { value } => {
            inputs.value = Some((value.clone(), FieldKind::Json));
            OperatorDef::new(name, inputs, || Latest)
        }
        OperatorKind::LastN { value, n } => {
            inputs.value = Some((value.clone(), FieldKind::Json));
            let n = *n;
            OperatorDef::new(name, inputs, move || LastN { n })
        }
        OperatorKind::Map {
            entry_key,
            value,
            reduce,
        } => {
            inputs.value = value.clone().map(|v| (v, FieldKind::Number));
            inputs.entry_key = Some(entry_key.clone());
            let reduce = *reduce;
            OperatorDef::new(name, inputs, move || MapOp {
                reduce,
                max_entries: max_map_entries,
            })
        }
        OperatorKind::Aggregate {
            value,
            functions,
            reset,
        } => {
            inputs.value = value.clone().map(|v| (v, FieldKind::Number));
            let (functions, reset) = (*functions, *reset);
            OperatorDef::new(name, inputs, move || Aggregate { functions, reset })
        }
        OperatorKind::Session { gap } => {
            let gap = gap.millis();
            OperatorDef::new(name, inputs, move || SessionOp { gap })
        }
        OperatorKind::Window {
            value,
            size,
            slide,
            functions,
            retain,
        } => {
            inputs.value = value.clone().map(|v| (v, FieldKind::Number));
            let (size, functions, retain) = (size.millis(), *functions, *retain);
            let slide = slide.map_or(size, |s| s.millis());
            OperatorDef::new(name, inputs, move || WindowOp {
                size,
                slide,
                functions,
                retain,
            })
        }
    }
}
