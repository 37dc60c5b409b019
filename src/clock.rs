//! The service's one wall clock: epoch milliseconds. A leaf: it imports nothing of the crate,
//! so that every layer (engine, checkpoint, replay, service, api) may read it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Epoch milliseconds now: the service's one wall clock (a vDSO read, cheap under a lock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
