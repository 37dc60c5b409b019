//! What a checkpoint holds besides its row: the `state_rows`, `output_records` and
//! `idempotency_keys` tables, their shapes as stored, and the sizes a checkpoint reports.
//! Rows are versioned by checkpoint id: the state at checkpoint N is the newest row per key
//! at or before N, so a checkpoint writes only the keys that changed.

use super::checkpoints::Progress;
use crate::state::StateRow;

/// One output record as stored: its offset and its JSON.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OutputRow {
    #[sqlx(rename = "output_offset")]
    pub offset: i64,
    pub record: String,
}

/// One remembered answer to an idempotent batch, as stored.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct IdempotencyRow {
    pub key: String,
    /// Arrival time of the batch, epoch ms.
    pub created: i64,
    pub accepted: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// Everything one checkpoint writes, in one transaction: its contents, and its row marked
/// completed with the progress of its barrier.
pub struct CheckpointWrite<'a> {
    pub pipeline: &'a str,
    pub id: i64,
    pub completed_at: i64,
    pub progress: Progress,
    /// Every key changed since the previous checkpoint.
    pub rows: &'a [StateRow],
    pub outputs: &'a [OutputRow],
    pub idempotency: &'a [IdempotencyRow],
    /// Cluster mode: the lease the writer must still hold, checked in the transaction.
    pub fence: Option<&'a super::Fence>,
}

/// A checkpoint's contents, to start a pipeline from.
#[derive(Debug, Default)]
pub struct LoadedCheckpoint {
    pub rows: Vec<StateRow>,
    /// The newest output records, oldest first.
    pub outputs: Vec<OutputRow>,
    pub idempotency: Vec<IdempotencyRow>,
}

/// What a checkpoint reports it wrote: keys written, keys deleted, and bytes (keys and values
/// of the state rows, and the output records' JSON).
pub(super) fn sizes(w: &CheckpointWrite<'_>) -> (i64, i64, i64) {
    let (mut written, mut deleted, mut bytes) = (0_i64, 0_i64, 0_i64);
    for row in w.rows {
        match &row.value {
            Some(v) => {
                written += 1;
                bytes += v.len() as i64 + row.key.len() as i64;
            }
            None => deleted += 1,
        }
    }
    bytes += w.outputs.iter().map(|o| o.record.len() as i64).sum::<i64>();
    (written, deleted, bytes)
}

/// Rows per multi-row statement (7 parameters each: under SQLite's 32766 and PostgreSQL's
/// 65535 bind limits).
pub(super) const CHUNK: usize = 2_000;

/// `insert` followed by `values` for `rows` rows of `columns` placeholders each (`$1`, `$2`,
/// … in order), then `tail`.
pub(super) fn values(insert: &str, rows: usize, columns: usize, tail: &str) -> String {
    let mut sql = format!("{insert}values ");
    for row in 0..rows {
        let first = row * columns + 1;
        let marks: Vec<String> = (first..first + columns).map(|n| format!("${n}")).collect();
        let comma = if row == 0 { "" } else { ", " };
        sql.push_str(&format!("{comma}({})", marks.join(", ")));
    }
    sql.push_str(tail);
    sql
}

/// Followed by `values` of (pipeline, operator, key, checkpoint, key_group, last_time, value).
pub(super) const INSERT_STATE: &str =
    "insert into state_rows (pipeline, operator, key, checkpoint, key_group, last_time, value) ";

/// Followed by `values` of (pipeline, output_offset, checkpoint, record).
pub(super) const INSERT_OUTPUTS: &str =
    "insert into output_records (pipeline, output_offset, checkpoint, record) ";

/// Followed by `values` of its columns, then [`UPSERT_KEYS`].
pub(super) const INSERT_KEYS: &str = "insert into idempotency_keys \
     (pipeline, key, checkpoint, created, accepted, first_offset, last_offset) ";

/// A key answered again since an older checkpoint keeps its newest answer.
pub(super) const UPSERT_KEYS: &str = " on conflict (pipeline, key) do update set \
     checkpoint = excluded.checkpoint, created = excluded.created, \
     accepted = excluded.accepted, first_offset = excluded.first_offset, \
     last_offset = excluded.last_offset";

/// $1 pipeline, $2 checkpoint, $3 how many: the newest output records, newest first.
pub(super) const LOAD_OUTPUTS: &str = "select output_offset, record from output_records \
     where pipeline = $1 and checkpoint <= $2 order by output_offset desc limit $3";

/// $1 pipeline, $2 checkpoint: the idempotency keys, oldest first.
pub(super) const LOAD_KEYS: &str = "select key, created, accepted, first_offset, last_offset \
     from idempotency_keys where pipeline = $1 and checkpoint <= $2 order by created, key";

/// $1 pipeline, $2 id: what checkpoints after it wrote (a restore).
pub(super) const DELETE_AFTER: [&str; 3] = [
    "delete from state_rows where pipeline = $1 and checkpoint > $2",
    "delete from output_records where pipeline = $1 and checkpoint > $2",
    "delete from idempotency_keys where pipeline = $1 and checkpoint > $2",
];

/// $1 pipeline, $2 the collection horizon, $3 the oldest retained checkpoint: rows superseded
/// by a version in (horizon, oldest] are never read again.
pub(super) const DELETE_SUPERSEDED: &str = "delete from state_rows \
     where (pipeline, operator, key, checkpoint) in (\
     select s.pipeline, s.operator, s.key, s.checkpoint from state_rows t join state_rows s \
     on s.pipeline = t.pipeline and s.operator = t.operator and s.key = t.key \
     and s.checkpoint < t.checkpoint \
     where t.pipeline = $1 and t.checkpoint > $2 and t.checkpoint <= $3)";

/// As [`DELETE_SUPERSEDED`]: deletions in (horizon, oldest] have nothing left to delete.
pub(super) const DELETE_TOMBSTONES: &str = "delete from state_rows \
     where pipeline = $1 and checkpoint > $2 and checkpoint <= $3 and value is null";

/// $1 pipeline, $2 how many to keep: the older output records.
pub(super) const DELETE_OLD_OUTPUTS: &str = "delete from output_records \
     where pipeline = $1 and output_offset <= \
     (select coalesce(max(output_offset), 0) from output_records where pipeline = $1) - $2";

/// $1 pipeline, $2 epoch ms: the keys created before it.
pub(super) const DELETE_OLD_KEYS: &str =
    "delete from idempotency_keys where pipeline = $1 and created < $2";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_number_the_placeholders_row_by_row() {
        assert_eq!(
            values("insert into t (a, b) ", 2, 2, " on conflict do nothing"),
            "insert into t (a, b) values ($1, $2), ($3, $4) on conflict do nothing"
        );
    }

    #[test]
    fn sizes_count_written_and_deleted_keys_and_their_bytes() {
        let row = |key: &str, value: Option<&[u8]>| StateRow {
            operator: 0,
            key: key.into(),
            key_group: 0,
            last_time: 0,
            value: value.map(<[u8]>::to_vec),
        };
        let rows = [row("ab", Some(b"xyz")), row("c", None)];
        let outputs = [OutputRow {
            offset: 1,
            record: "{}".into(),
        }];
        let write = CheckpointWrite {
            pipeline: "p",
            id: 1,
            completed_at: 0,
            progress: Progress::default(),
            rows: &rows,
            outputs: &outputs,
            idempotency: &[],
            fence: None,
        };
        assert_eq!(sizes(&write), (1, 1, 5 + 2));
    }
}
