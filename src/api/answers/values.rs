//! Schemas of the JSON the engine builds itself: an operator's state for one key and the value
//! of an output record. They stay `serde_json::Value` inside the typed answers (`StateItem`,
//! `OutputRecordAnswer`), so these types describe only and are never built: each carries
//! `#[expect(dead_code)]` saying so. `scripts/schemathesis.sh` and the generated-client
//! walkthrough check the real answers against them. Each shape has a required member no other
//! shape has, so exactly one of a `oneOf` matches.

use serde_json::Value;
use utoipa::ToSchema;

/// The state of one key, by operator kind.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
#[serde(untagged)]
pub enum StateValue {
    Latest(LatestState),
    LastN(LastNState),
    Map(MapState),
    Sessions(SessionsState),
    Windows(WindowsState),
    Aggregate(AggregateState),
}

/// `latest`: the value of the event with the greatest event time.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct LatestState {
    /// The value as the event held it (any JSON).
    value: Value,
    /// Its event time, epoch ms.
    time: i64,
}

/// `last_n`: the `n` most recent values, newest first.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct LastNState {
    values: Vec<Value>,
}

/// `map`: the reduced value of each entry key.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct MapState {
    entries: std::collections::BTreeMap<String, f64>,
}

/// `session`: the open sessions of the key, by start.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct SessionsState {
    sessions: Vec<Session>,
}

/// `window`: the open windows and the newest closed ones, by start.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct WindowsState {
    windows: Vec<Window>,
}

/// `aggregate`: the requested functions over the current period.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct AggregateState {
    /// Start of the period (epoch ms) with `reset`; null without.
    #[schema(required = true)]
    period_start: Option<i64>,
    #[serde(flatten)]
    functions: Functions,
}

/// The requested functions of an `aggregate` or a `window` (only those requested are present).
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct Functions {
    count: Option<u64>,
    sum: Option<f64>,
    /// Null when no event carried a value.
    min: Option<f64>,
    /// Null when no event carried a value.
    max: Option<f64>,
    avg: Option<f64>,
}

/// A session: events of a key whose times are at most `gap` apart, chained.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct Session {
    /// Time of the first event, epoch ms.
    start: i64,
    /// Time of the last event, epoch ms.
    end: i64,
    /// `end − start`.
    duration_ms: i64,
    /// Events in the session.
    events: u64,
}

/// A window `[start, end)`.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
pub struct Window {
    start: i64,
    end: i64,
    /// Whether the watermark has reached `end`.
    closed: bool,
    #[serde(flatten)]
    functions: Functions,
}

/// The value of an output record: a closed session or a closed window.
#[derive(ToSchema)]
#[expect(dead_code, reason = "schema only: the engine builds this JSON")]
#[serde(untagged)]
pub enum OutputValue {
    Session(Session),
    Window(Window),
}
