//! `window`: tumbling (or sliding, with `slide`) event-time windows aligned to the epoch. A
//! window `[start, end)` closes when the watermark reaches `end`, is emitted as
//! `window_closed`, and stays queryable among the key's `retain` newest closed windows.

use super::stats::Stats;
use super::{TimerSlot, is_due};
use crate::engine::operator::{Context, Field, Input, Operator, TimeDomain};
use crate::spec::Functions;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use smallvec::SmallVec;
use std::collections::VecDeque;

/// The `window` operator.
pub struct WindowOp {
    pub size: i64,
    /// Distance between window starts; equals `size` for tumbling windows.
    pub slide: i64,
    pub functions: Functions,
    pub retain: usize,
}

/// The windows of one key.
///
/// Invariant: `open` is sorted by start; every closed window starts before every open one
/// (all windows have one size, and closing follows the watermark).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WindowState {
    open: SmallVec<[(i64, Stats); 1]>,
    closed: VecDeque<(i64, Stats)>,
    #[serde(skip)]
    timer: TimerSlot,
}

impl WindowOp {
    fn end(&self, start: i64) -> i64 {
        start.saturating_add(self.size)
    }

    /// Starts of the windows that hold `t`, newest first.
    fn starts(&self, t: i64) -> impl Iterator<Item = i64> + '_ {
        let last = t.div_euclid(self.slide).saturating_mul(self.slide);
        std::iter::successors(Some(last), move |s| s.checked_sub(self.slide))
            .take_while(move |s| self.end(*s) > t)
    }

    fn arm(&self, state: &mut WindowState, cx: &mut Context<'_>) {
        if let Some((start, _)) = state.open.first() {
            state.timer.arm(self.end(*start), cx);
        }
    }

    fn answer(&self, start: i64, stats: &Stats, closed: bool) -> Value {
        let mut out = Map::new();
        out.insert("start".into(), start.into());
        out.insert("end".into(), self.end(start).into());
        out.insert("closed".into(), closed.into());
        stats.write(self.functions, &mut out);
        Value::Object(out)
    }
}

impl Operator for WindowOp {
    type State = WindowState;

    fn on_event(&self, state: &mut WindowState, input: &Input<'_>, cx: &mut Context<'_>) {
        if input.late {
            return;
        }
        let value = match input.value {
            Field::Number(n) => Some(*n),
            _ => None,
        };
        for start in self.starts(input.time) {
            let at = state.open.partition_point(|(s, _)| *s < start);
            if state.open.get(at).is_none_or(|(s, _)| *s != start) {
                state.open.insert(at, (start, Stats::default()));
            }
            state.open[at].1.add(value);
        }
        self.arm(state, cx);
    }

    fn on_timer(&self, state: &mut WindowState, _: i64, _: TimeDomain, cx: &mut Context<'_>) {
        let Some(watermark) = cx.watermark() else {
            return;
        };
        state.timer.fired(watermark);
        let closing = state
            .open
            .iter()
            .take_while(|(start, _)| is_due(self.end(*start), watermark))
            .count();
        for (start, stats) in state.open.drain(..closing) {
            cx.emit("window_closed", self.answer(start, &stats, true));
            state.closed.push_back((start, stats));
        }
        while state.closed.len() > self.retain {
            state.closed.pop_front();
        }
        self.arm(state, cx);
    }

    fn is_empty(&self, state: &WindowState) -> bool {
        state.open.is_empty() && state.closed.is_empty()
    }

    fn query(&self, state: &WindowState) -> Value {
        let closed = state.closed.iter().map(|(s, st)| self.answer(*s, st, true));
        let open = state.open.iter().map(|(s, st)| self.answer(*s, st, false));
        json!({ "windows": closed.chain(open).collect::<Vec<_>>() })
    }

    fn restore_timers(&self, state: &mut WindowState, cx: &mut Context<'_>) {
        self.arm(state, cx);
    }
}
