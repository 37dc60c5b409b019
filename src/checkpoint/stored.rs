//! The one place engine shapes become the store's and back: a barrier's counters and
//! positions as a checkpoint's [`Progress`] (and a restored pipeline's counters from it),
//! output records as JSON rows, idempotency answers as rows. Stored numbers are `i64` (SQL
//! `bigint`); the engine counts in `u64`: the casts of counters are here and nowhere else.

use crate::engine::{Ack, Barrier, Counters, IdempotencyEntry, OutputRecord};
use crate::store::{IdempotencyRow, OutputRow, Progress};
use std::sync::Arc;

/// Where the pipeline stood at `barrier`, as its checkpoint records it.
pub fn progress(barrier: &Barrier) -> Progress {
    let c = &barrier.counters;
    Progress {
        events: c.events as i64,
        late_events: c.late_events as i64,
        watermark: c.watermark,
        next_offset: c.next_offset as i64,
        input_offset: c.last_offset.map(|o| o as i64),
        output_offset: barrier.output_offset as i64,
        wal_lsn: barrier.wal_lsn as i64,
    }
}

/// The counters a pipeline restored from a checkpoint with `progress` starts with.
pub fn counters(progress: &Progress) -> Counters {
    Counters {
        next_offset: progress.next_offset as u64,
        events: progress.events as u64,
        late_events: progress.late_events as u64,
        watermark: progress.watermark,
        last_offset: progress.input_offset.map(|o| o as u64),
    }
}

/// Output records as stored: their offset and JSON.
pub(super) fn output_rows(records: &[Arc<OutputRecord>]) -> Vec<OutputRow> {
    let row = |r: &Arc<OutputRecord>| OutputRow {
        offset: r.offset as i64,
        record: serde_json::to_string(&**r).expect("records serialise"),
    };
    records.iter().map(row).collect()
}

/// Idempotency answers as stored.
pub(super) fn idempotency_rows(entries: &[IdempotencyEntry]) -> Vec<IdempotencyRow> {
    let row = |e: &IdempotencyEntry| IdempotencyRow {
        key: e.key.clone(),
        created: e.created,
        accepted: e.ack.accepted as i64,
        first_offset: e.ack.first_offset as i64,
        last_offset: e.ack.last_offset as i64,
    };
    entries.iter().map(row).collect()
}

/// A stored idempotency answer, as a restored pipeline remembers it (applied before this
/// process started: no batch to wait for).
pub(super) fn idempotency_entry(row: IdempotencyRow) -> IdempotencyEntry {
    IdempotencyEntry {
        key: row.key,
        created: row.created,
        batch: None,
        ack: Ack {
            accepted: row.accepted as u64,
            first_offset: row.first_offset as u64,
            last_offset: row.last_offset as u64,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_come_back_from_the_progress_they_were_recorded_as() {
        let barrier = Barrier {
            counters: Counters {
                next_offset: 8,
                events: 7,
                late_events: 2,
                watermark: Some(-5),
                last_offset: Some(7),
            },
            wal_lsn: 3,
            output_offset: 4,
            rows: Vec::new(),
            idempotency: Vec::new(),
        };
        let p = progress(&barrier);
        assert_eq!(
            (p.output_offset, p.wal_lsn, p.input_offset),
            (4, 3, Some(7))
        );
        assert_eq!(counters(&p), barrier.counters);
    }

    #[test]
    fn an_idempotency_answer_survives_its_row() {
        let entry = IdempotencyEntry {
            key: "k".into(),
            created: 11,
            batch: Some(3),
            ack: Ack {
                accepted: 2,
                first_offset: 5,
                last_offset: 6,
            },
        };
        let back = idempotency_entry(idempotency_rows(std::slice::from_ref(&entry)).remove(0));
        assert_eq!(
            (back.key, back.created, back.ack),
            ("k".into(), 11, entry.ack)
        );
        assert_eq!(back.batch, None);
    }
}
