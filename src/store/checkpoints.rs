//! The `checkpoints` table: one row per checkpoint, as ONE record type ([`CheckpointRecord`])
//! that sqlx reads straight from a row and the API answers from. The statements take `$N`
//! placeholders, which both backends bind by number.

/// Where a checkpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointStatus {
    Completed,
    Failed,
    InProgress,
}

impl CheckpointStatus {
    /// The contract's name (and the column's value).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointStatus::Completed => "completed",
            CheckpointStatus::Failed => "failed",
            CheckpointStatus::InProgress => "in_progress",
        }
    }
}

impl From<String> for CheckpointStatus {
    fn from(s: String) -> CheckpointStatus {
        match s.as_str() {
            "completed" => CheckpointStatus::Completed,
            "failed" => CheckpointStatus::Failed,
            _ => CheckpointStatus::InProgress,
        }
    }
}

/// What started a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Periodic,
    Manual,
    Shutdown,
}

impl Trigger {
    /// The contract's name (and the column's value).
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Periodic => "periodic",
            Trigger::Manual => "manual",
            Trigger::Shutdown => "shutdown",
        }
    }
}

impl From<String> for Trigger {
    fn from(s: String) -> Trigger {
        match s.as_str() {
            "periodic" => Trigger::Periodic,
            "shutdown" => Trigger::Shutdown,
            _ => Trigger::Manual,
        }
    }
}

/// A stored checkpoint: the row of the `checkpoints` table, column for column.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct CheckpointRecord {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub status: CheckpointStatus,
    #[sqlx(try_from = "String")]
    pub trigger: Trigger,
    /// Epoch ms.
    pub started_at: i64,
    pub completed_at: Option<i64>,
    /// Where the pipeline stood at the barrier (defaults until it completed).
    #[sqlx(flatten)]
    pub progress: Progress,
    pub keys_written: i64,
    pub keys_deleted: i64,
    pub bytes: i64,
    pub error: Option<String>,
}

/// Where a pipeline stood at a checkpoint's barrier: what a completed checkpoint records and
/// a restore starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Progress {
    pub events: i64,
    pub late_events: i64,
    pub watermark: Option<i64>,
    pub next_offset: i64,
    /// Offset of the last event included.
    pub input_offset: Option<i64>,
    /// Offset of the last output record included.
    pub output_offset: i64,
    /// LSN of the last WAL record included.
    pub wal_lsn: i64,
}

/// A checkpoint row as first written: `in_progress` when it begins, or `failed` at once when
/// its row could not be written before it failed.
pub(super) struct NewCheckpoint<'a> {
    pub status: CheckpointStatus,
    pub trigger: Trigger,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub error: Option<&'a str>,
    /// Cluster mode: the lease the writer must hold.
    pub fence: Option<&'a super::Fence>,
}

/// The id a new checkpoint gets: above every id the pipeline had (`last`, or the `floor` a
/// restore left), so ids are never reused.
pub(super) fn next_id(last: i64, floor: i64) -> i64 {
    last.max(floor) + 1
}

/// The columns of a [`CheckpointRecord`].
macro_rules! columns {
    () => {
        "id, status, trigger, started_at, completed_at, events, late_events, watermark, \
         next_offset, input_offset, output_offset, wal_lsn, keys_written, keys_deleted, bytes, \
         error"
    };
}

/// $1 pipeline: the highest id it has.
pub(super) const LAST_ID: &str = "select coalesce(max(id), 0) from checkpoints where pipeline = $1";

/// $1 pipeline, $2 id, then the fields of a [`NewCheckpoint`] in order.
pub(super) const INSERT: &str = "insert into checkpoints \
     (pipeline, id, status, trigger, started_at, completed_at, error) \
     values ($1, $2, $3, $4, $5, $6, $7)";

/// $1 pipeline, $2 id, $3 completed_at, $4..$10 the [`Progress`], $11..$13 the sizes.
pub(super) const COMPLETE: &str = concat!(
    "update checkpoints set status = 'completed', completed_at = $3, events = $4, \
     late_events = $5, watermark = $6, next_offset = $7, input_offset = $8, \
     output_offset = $9, wal_lsn = $10, keys_written = $11, keys_deleted = $12, bytes = $13 \
     where pipeline = $1 and id = $2 returning ",
    columns!()
);

/// $1 pipeline, $2 id, $3 error, $4 completed_at.
pub(super) const FAIL: &str = "update checkpoints set status = 'failed', error = $3, \
     completed_at = $4 where pipeline = $1 and id = $2";

/// $1 pipeline, $2 completed_at.
pub(super) const FAIL_INTERRUPTED: &str = "update checkpoints set status = 'failed', \
     error = 'interrupted by a restart', completed_at = $2 \
     where pipeline = $1 and status = 'in_progress'";

/// $1 pipeline: its checkpoints, newest first.
pub(super) const LIST: &str = concat!(
    "select ",
    columns!(),
    " from checkpoints where pipeline = $1 order by id desc"
);

/// $1 pipeline, $2 id.
pub(super) const GET: &str = concat!(
    "select ",
    columns!(),
    " from checkpoints where pipeline = $1 and id = $2"
);

/// $1 pipeline, $2 how many newer completed ones to skip: the oldest checkpoint to retain.
pub(super) const OLDEST_RETAINED: &str = "select id from checkpoints \
     where pipeline = $1 and status = 'completed' order by id desc limit 1 offset $2";

/// $1 pipeline, $2 id: the checkpoints before it (pruned).
pub(super) const DELETE_BEFORE: &str = "delete from checkpoints where pipeline = $1 and id < $2";

/// $1 pipeline, $2 id: the checkpoints after it (a restore).
pub(super) const DELETE_AFTER: &str = "delete from checkpoints where pipeline = $1 and id > $2";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_is_above_the_last_id_and_the_floor() {
        assert_eq!(next_id(0, 0), 1);
        assert_eq!(next_id(7, 3), 8);
        assert_eq!(next_id(2, 9), 10);
    }

    #[test]
    fn unknown_column_values_read_as_before() {
        assert_eq!(
            CheckpointStatus::from("x".to_owned()),
            CheckpointStatus::InProgress
        );
        assert_eq!(Trigger::from("x".to_owned()), Trigger::Manual);
        for s in [CheckpointStatus::Completed, CheckpointStatus::Failed] {
            assert_eq!(CheckpointStatus::from(s.as_str().to_owned()), s);
        }
        for t in [Trigger::Periodic, Trigger::Manual, Trigger::Shutdown] {
            assert_eq!(Trigger::from(t.as_str().to_owned()), t);
        }
    }
}
