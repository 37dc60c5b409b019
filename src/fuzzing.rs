//! Entry points of the fuzz targets (`fuzz/`), also run over the committed corpus by
//! `tests/fuzz_corpus.rs`: they must never panic, whatever the bytes.

use crate::engine::{BatchLimits, BodyFormat, Extractor, Pipeline, parse_batch_limited};
use crate::spec::PipelineSpec;
use crate::wal::Record;
use serde_json::{Value, json};
use std::sync::LazyLock;

/// A spec document: validation answers a spec or field errors, never panics; a valid spec's
/// document validates again to the same.
pub fn spec(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(spec) = PipelineSpec::from_json(&doc) {
        let again =
            PipelineSpec::from_json(&spec.document).expect("a valid spec's document is valid");
        assert_eq!(again.name, spec.name);
    }
}

static EXTRACTORS: LazyLock<Vec<Extractor>> = LazyLock::new(|| {
    ["epoch_ms", "epoch_s", "rfc3339"]
        .into_iter()
        .map(|format| {
            let mut doc = crate::workload::seed_spec("fuzz");
            doc["time"]["format"] = json!(format);
            let spec = PipelineSpec::from_json(&doc).expect("seed spec");
            let config = crate::engine::EngineConfig {
                shards: 1,
                ..Default::default()
            };
            Pipeline::from_spec(spec, &config).extractor().clone()
        })
        .collect()
});

/// A request body: parsing, validation and key/time/field extraction, as JSON and as NDJSON,
/// for each time format.
pub fn events(data: &[u8]) {
    let limits = BatchLimits {
        max_events: 10_000,
        max_event_bytes: 1 << 20,
    };
    for extractor in EXTRACTORS.iter() {
        for format in [BodyFormat::Json, BodyFormat::NdJson] {
            let _ = parse_batch_limited(data, format, extractor, limits);
        }
    }
}

/// WAL bytes: decoding never panics, and every record it accepts encodes back to its bytes.
pub fn wal(data: &[u8]) {
    let mut pos = 0;
    while let Ok((lsn, record, used)) = Record::decode(&data[pos..]) {
        assert_eq!(
            record.encode(lsn),
            &data[pos..pos + used],
            "decode then encode is the identity"
        );
        pos += used;
    }
}
