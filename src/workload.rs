//! A seeded, realistic click stream for benchmarks, examples and the load generator: users,
//! pages, products and event types as in the contract's example, with bounded out-of-orderness.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// How the stream is shaped.
#[derive(Clone, Debug)]
pub struct ClickStream {
    pub users: u64,
    pub pages: u64,
    pub products: u64,
    /// Event time of the first event, epoch ms.
    pub start_ms: i64,
    /// Mean event-time step between consecutive events, ms.
    pub step_ms: i64,
    /// Consecutive events sharing one step of time (a denser stream: many events per ms).
    pub events_per_step: i64,
    /// Events arrive up to this much earlier than their position suggests, ms.
    pub disorder_ms: i64,
    pub seed: u64,
    /// Every event carries an `amount` (purchases a price, the others 1), as the
    /// three-operator pipeline of [`three_operator_spec`] reads one from each.
    pub amount_always: bool,
}

impl Default for ClickStream {
    fn default() -> Self {
        ClickStream {
            users: 100_000,
            pages: 50,
            products: 1_000,
            start_ms: 1_700_000_000_000,
            step_ms: 1,
            events_per_step: 1,
            disorder_ms: 3_000,
            seed: 42,
            amount_always: false,
        }
    }
}

impl ClickStream {
    /// `n` events, deterministic for the seed.
    pub fn events(&self, n: usize) -> Vec<Value> {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        (0..n).map(|i| self.event(&mut rng, i as i64)).collect()
    }

    fn event(&self, rng: &mut SmallRng, i: i64) -> Value {
        let mut event = self.click(rng, i);
        if self.amount_always && event.get("amount").is_none() {
            event["amount"] = json!(1);
        }
        event
    }

    fn click(&self, rng: &mut SmallRng, i: i64) -> Value {
        let user = rng.random_range(0..self.users);
        let step = i / self.events_per_step.max(1);
        let ts = self.start_ms + step * self.step_ms - rng.random_range(0..=self.disorder_ms);
        let page = format!("/p/{}", rng.random_range(0..self.pages));
        match rng.random_range(0..100) {
            0..70 => json!({"user_id": format!("u{user}"), "ts": ts, "type": "view", "page": page}),
            70..85 => json!({"user_id": format!("u{user}"), "ts": ts, "type": "cart", "page": page,
                             "product_id": format!("prod{}", rng.random_range(0..self.products)),
                             "qty": rng.random_range(-1..=3)}),
            85..90 => {
                json!({"user_id": format!("u{user}"), "ts": ts, "type": "purchase", "page": page,
                             "amount": f64::from(rng.random_range(100..20_000)) / 100.0})
            }
            _ => json!({"user_id": format!("u{user}"), "ts": ts, "type": "login", "page": page}),
        }
    }

    /// The events as NDJSON batches of `batch` events each.
    pub fn ndjson_batches(&self, n: usize, batch: usize) -> Vec<Vec<u8>> {
        self.events(n)
            .chunks(batch.max(1))
            .map(|chunk| {
                let mut body = Vec::new();
                for event in chunk {
                    serde_json::to_writer(&mut body, event).expect("serialise");
                    body.push(b'\n');
                }
                body
            })
            .collect()
    }
}

/// The three-operator click pipeline (`examples/clicks3.json`): sessions per user, page views
/// per page and minute, spend per user.
pub fn three_operator_spec(name: &str) -> Value {
    let mut spec: Value =
        serde_json::from_str(include_str!("../examples/clicks3.json")).expect("valid JSON");
    spec["name"] = json!(name);
    spec
}

/// The contract's six-operator example pipeline.
pub fn seed_spec(name: &str) -> Value {
    json!({
      "name": name,
      "key": "/user_id",
      "time": { "field": "/ts", "format": "epoch_ms", "max_out_of_orderness": "5s" },
      "checkpoint_interval": "10s",
      "retain_checkpoints": 5,
      "state_ttl": "7d",
      "operators": [
        { "name": "sessions",   "kind": "session",   "gap": "30m" },
        { "name": "last_pages", "kind": "last_n",    "value": "/page", "n": 5 },
        { "name": "cart",       "kind": "map",       "where": {"/type": "cart"},
          "entry_key": "/product_id", "value": "/qty", "reduce": "sum" },
        { "name": "spend",      "kind": "aggregate", "where": {"/type": "purchase"},
          "value": "/amount", "functions": ["sum", "count"], "reset": "month" },
        { "name": "last_login", "kind": "latest",    "where": {"/type": "login"}, "value": "/ts" },
        { "name": "page_views", "kind": "window",    "key": "/page", "size": "1m",
          "functions": ["count"], "retain": 10 }
      ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PipelineSpec;

    #[test]
    fn the_stream_is_deterministic_for_a_seed() {
        let s = ClickStream::default();
        assert_eq!(s.events(100), s.events(100));
        assert_ne!(
            s.events(100),
            ClickStream {
                seed: 7,
                ..s.clone()
            }
            .events(100)
        );
    }

    #[test]
    fn every_generated_event_is_valid_for_the_seed_pipeline() {
        let spec = PipelineSpec::from_json(&seed_spec("clicks")).unwrap();
        let pipeline =
            crate::engine::Pipeline::from_spec(spec, &crate::engine::EngineConfig::default());
        for body in ClickStream::default().ndjson_batches(2_000, 500) {
            crate::engine::parse_batch(
                &body,
                crate::engine::BodyFormat::NdJson,
                pipeline.extractor(),
            )
            .unwrap();
        }
        let spec = PipelineSpec::from_json(&three_operator_spec("clicks3")).unwrap();
        let pipeline =
            crate::engine::Pipeline::from_spec(spec, &crate::engine::EngineConfig::default());
        let stream = ClickStream {
            amount_always: true,
            ..ClickStream::default()
        };
        for body in stream.ndjson_batches(2_000, 500) {
            crate::engine::parse_batch(
                &body,
                crate::engine::BodyFormat::NdJson,
                pipeline.extractor(),
            )
            .unwrap();
        }
    }
}
