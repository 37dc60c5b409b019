//! Writes a seeded click stream as NDJSON to stdout, for `eddy replay` and other tools: every
//! event has a user, a time, a page and an amount (so the three-operator pipeline of
//! `examples/clicks3.json` reads them all).
//!
//! Run: cargo run --release --example clickstream -- 5000000 1000000 > events.ndjson

use std::io::Write;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let (events, users) = (
        args.first().copied().unwrap_or(1_000_000),
        args.get(1).copied().unwrap_or(100_000),
    );
    let stream = eddy::workload::ClickStream {
        users,
        amount_always: true,
        ..Default::default()
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out.lock());
    let chunk = 100_000;
    for start in (0..events).step_by(chunk) {
        let n = chunk.min((events - start) as usize);
        let seeded = eddy::workload::ClickStream {
            seed: stream.seed + start,
            start_ms: stream.start_ms + start as i64,
            ..stream.clone()
        };
        for event in seeded.events(n) {
            serde_json::to_writer(&mut out, &event).unwrap();
            out.write_all(b"\n").unwrap();
        }
    }
    out.flush().unwrap();
}
