//! The `pipelines` table: the stored definitions, and per pipeline the floors it must stay
//! above (offsets and ids a restore or a WAL repair gave away). (Its `gc_horizon` column is
//! no longer used: compaction of state chunks needs no horizon.)

/// Offsets, ids and the WAL position a pipeline must not go below or replay past.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Floors {
    /// The next event offset is at least this.
    #[sqlx(rename = "offset_floor")]
    pub offset: i64,
    /// The next output offset is at least this.
    #[sqlx(rename = "output_floor")]
    pub output: i64,
    /// Checkpoint ids are above this.
    #[sqlx(rename = "checkpoint_floor")]
    pub checkpoint: i64,
    /// WAL records after this LSN are discarded (a restore was not finished).
    pub discard_after_lsn: Option<i64>,
}

/// $1 name.
pub(super) const DELETE: &str = "delete from pipelines where name = $1";

/// $1 name: the pipeline's state chunks (no foreign key takes them with it). Run after
/// [`DELETE`] in its transaction, so that it sees the chunks of a checkpoint that committed
/// while [`DELETE`] waited for it.
pub(super) const DELETE_STATE: [&str; 2] = [
    "delete from state_chunks where pipeline = $1",
    "delete from checkpoint_partitions where pipeline = $1",
];

/// $1 name.
pub(super) const FLOORS: &str = "select offset_floor, output_floor, checkpoint_floor, \
     discard_after_lsn from pipelines where name = $1";

/// $1 name.
pub(super) const CHECKPOINT_FLOOR: &str = "select checkpoint_floor from pipelines where name = $1";

/// $1 name, then the fields of [`Floors`] in order.
pub(super) const SET_FLOORS: &str = "update pipelines set offset_floor = $2, output_floor = $3, \
     checkpoint_floor = $4, discard_after_lsn = $5 where name = $1";

/// $1 name, $2 offset: the offset floor raised to at least it, never lowered.
pub(super) const RAISE_OFFSET_FLOOR: &str = "update pipelines set offset_floor = \
     case when offset_floor < $2 then $2 else offset_floor end where name = $1";

/// $1 name.
pub(super) const CLEAR_DISCARD: &str =
    "update pipelines set discard_after_lsn = null where name = $1";
