//! A custom operator written against the same `Operator` trait as the built-ins: it keeps a
//! running spend per user in a `ReducingState`, emits `threshold_crossed` when the spend first
//! reaches a limit, and uses an event-time timer to emit `spend_idle` once the watermark passes
//! an hour after the user's last purchase (then drops the key).
//!
//! Run: cargo run --example custom_operator

use eddy::engine::{
    Context, EngineConfig, Field, FieldKind, Input, Inputs, Operator, OperatorDef, Pipeline,
    TimeDomain, parse_batch,
};
use eddy::spec::{PipelineSpec, Pointer};
use eddy::state::{Num, ReducingState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;

/// Alerts once per user when the spend reaches `limit`.
struct SpendAlert {
    limit: f64,
}

#[derive(Default, Serialize, Deserialize)]
struct AlertState {
    spend: ReducingState<f64>,
    alerted: bool,
    last: i64,
}

impl Operator for SpendAlert {
    type State = AlertState;

    fn on_event(&self, state: &mut AlertState, input: &Input<'_>, cx: &mut Context<'_>) {
        let Field::Number(amount) = input.value else {
            return;
        };
        state.spend.add(Num::as_f64(*amount), |a, b| a + b);
        state.last = state.last.max(input.time);
        cx.register_event_time_timer(state.last + HOUR);
        let spend = *state.spend.get().expect("just added");
        if spend >= self.limit && !state.alerted {
            state.alerted = true;
            cx.emit(
                "threshold_crossed",
                json!({"spend": spend, "at": input.time}),
            );
        }
    }

    fn on_timer(&self, state: &mut AlertState, time: i64, _: TimeDomain, cx: &mut Context<'_>) {
        // A later purchase re-armed the timer; this one is stale.
        if time < state.last + HOUR {
            return;
        }
        cx.emit(
            "spend_idle",
            json!({"spend": state.spend.get(), "last": state.last}),
        );
        state.spend.clear();
    }

    fn is_empty(&self, state: &AlertState) -> bool {
        state.spend.get().is_none()
    }

    fn query(&self, state: &AlertState) -> Value {
        json!({"spend": state.spend.get(), "alerted": state.alerted})
    }

    fn restore_timers(&self, state: &mut AlertState, cx: &mut Context<'_>) {
        cx.register_event_time_timer(state.last + HOUR);
    }
}

#[tokio::main]
pub async fn main() {
    // The spec gives the key and event time; the operator list comes from code.
    let spec = PipelineSpec::from_json(&json!({
        "name": "alerts", "key": "/user_id", "time": {"field": "/ts"},
        "operators": [{"name": "unused", "kind": "latest", "value": "/ts"}]
    }))
    .expect("valid spec");
    let inputs = Inputs {
        value: Some((Pointer::parse("/amount").unwrap(), FieldKind::Number)),
        ..Inputs::default()
    };
    let alert = OperatorDef::new("big_spenders", inputs, || SpendAlert { limit: 100.0 });
    let pipeline = Pipeline::start(&spec, vec![alert], &EngineConfig::default());

    let body = br#"[{"user_id": "ann", "ts": 0, "amount": 60},
                    {"user_id": "bob", "ts": 1000, "amount": 10},
                    {"user_id": "ann", "ts": 2000, "amount": 50}]"#;
    let batch = parse_batch(body, eddy::engine::BodyFormat::Json, pipeline.extractor())
        .expect("valid events");
    pipeline.ingest(batch, 0).await.expect("ingest");
    let ann = pipeline.state("big_spenders", "ann").await.unwrap();
    println!("ann: {}", ann.clone().unwrap());
    assert_eq!(ann, Some(json!({"spend": 110.0, "alerted": true})));

    pipeline.advance_watermark(2 * HOUR).await.unwrap();
    let (records, _) = pipeline.output().read(None, 100);
    for record in &records {
        println!("{}", serde_json::to_string(&**record).unwrap());
    }
    let kinds: Vec<_> = records.iter().map(|r| (r.kind, r.key.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("threshold_crossed", "ann"),
            ("spend_idle", "ann"),
            ("spend_idle", "bob")
        ]
    );
    assert_eq!(pipeline.state("big_spenders", "ann").await.unwrap(), None);
}
