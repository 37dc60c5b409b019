//! `session`: Flink's merging session windows. Two events of a key share a session when their
//! times differ by at most `gap`, chained; a session closes when the watermark passes
//! `end + gap` (no on-time event can join it any more) and is emitted as `session_closed`.

use super::is_due;
use crate::engine::operator::{Context, Input, Operator, TimeDomain};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use smallvec::SmallVec;

/// The `session` operator.
pub struct SessionOp {
    /// Gap in milliseconds.
    pub gap: i64,
}

/// One open session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// First event time.
    pub start: i64,
    /// Last event time.
    pub end: i64,
    pub events: u64,
}

/// A session as answered and emitted.
#[derive(Serialize)]
struct SessionAnswer {
    start: i64,
    end: i64,
    duration_ms: i64,
    events: u64,
}

impl From<&Session> for SessionAnswer {
    fn from(s: &Session) -> SessionAnswer {
        SessionAnswer {
            start: s.start,
            end: s.end,
            duration_ms: s.end - s.start,
            events: s.events,
        }
    }
}

/// The open sessions of one key.
///
/// Invariant: sorted by start, and any two are more than `gap` apart, so ends are sorted too
/// and the first session is the first to close. While a session is open, a timer is pending
/// at or before the first one's closing time: one is registered when the first closing time
/// moves earlier (or appears), and again each time one fires. No pending time is kept (8
/// bytes a key): a timer registered where one was pending already is a spare, which the
/// engine drops once the two fall due together (one timer per key and time, as in Flink).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SessionState {
    sessions: SmallVec<[Session; 1]>,
}

impl SessionOp {
    fn closes_at(&self, session: &Session) -> i64 {
        session.end.saturating_add(self.gap).saturating_add(1)
    }

    /// When the first open session closes.
    fn first_close(&self, state: &SessionState) -> Option<i64> {
        state.sessions.first().map(|s| self.closes_at(s))
    }

    /// Registers a timer at the first open session's closing time, if any.
    fn register_first_close(&self, state: &SessionState, cx: &mut Context<'_>) {
        if let Some(due) = self.first_close(state) {
            cx.register_event_time_timer(due);
        }
    }

    fn answer(session: &Session) -> Value {
        serde_json::to_value(SessionAnswer::from(session)).expect("a session serialises")
    }
}

impl Operator for SessionOp {
    type State = SessionState;

    fn on_event(&self, state: &mut SessionState, input: &Input<'_>, cx: &mut Context<'_>) {
        if input.late {
            return;
        }
        let closed_at = self.first_close(state);
        let t = input.time;
        let mut merged = Session {
            start: t,
            end: t,
            events: 1,
        };
        state.sessions.retain(|s| {
            let joins =
                s.start.saturating_sub(self.gap) <= t && t <= s.end.saturating_add(self.gap);
            if joins {
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
                merged.events += s.events;
            }
            !joins
        });
        let at = state.sessions.partition_point(|s| s.start < merged.start);
        state.sessions.insert(at, merged);
        if let Some(due) = self.first_close(state) {
            if closed_at.is_none_or(|before| due < before) {
                cx.register_event_time_timer(due);
            }
        }
    }

    fn on_timer(&self, state: &mut SessionState, _: i64, _: TimeDomain, cx: &mut Context<'_>) {
        let Some(watermark) = cx.watermark() else {
            return;
        };
        let closing = state
            .sessions
            .iter()
            .take_while(|s| is_due(self.closes_at(s), watermark))
            .count();
        for session in state.sessions.drain(..closing) {
            let record = serde_json::value::to_raw_value(&SessionAnswer::from(&session))
                .expect("a session serialises");
            cx.emit_json("session_closed", record);
        }
        self.register_first_close(state, cx);
    }

    fn is_empty(&self, state: &SessionState) -> bool {
        state.sessions.is_empty()
    }

    fn query(&self, state: &SessionState) -> Value {
        let sessions: Vec<Value> = state.sessions.iter().map(Self::answer).collect();
        json!({ "sessions": sessions })
    }

    fn restore_timers(&self, state: &mut SessionState, cx: &mut Context<'_>) {
        self.register_first_close(state, cx);
    }
}
