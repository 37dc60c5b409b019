//! What a checkpoint holds besides its row: the `state_chunks` (see `chunks`),
//! `output_records` and `idempotency_keys` tables, their shapes as stored, and the sizes a
//! checkpoint reports. State is versioned by checkpoint id: the state at checkpoint N is the
//! newest version per key at or before N, so a checkpoint writes only the keys that changed.

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
/// completed (at the time its contents are written) with the progress of its barrier.
pub struct CheckpointWrite<'a> {
    pub pipeline: &'a str,
    pub id: i64,
    pub progress: Progress,
    /// Every key changed since the previous checkpoint.
    pub rows: &'a [StateRow],
    pub outputs: &'a [OutputRow],
    pub idempotency: &'a [IdempotencyRow],
    /// Cluster mode: the lease the writer must still hold, checked in the transaction.
    pub fence: Option<&'a super::Fence>,
    /// Cluster mode, partitions spread: what the partitions' owners wrote of the state (the
    /// checkpoint reports it with its own).
    pub partitions: Option<super::PartitionsWritten>,
}

/// A checkpoint's contents besides its state (which goes to a [`RowSink`] as it is read), to
/// start a pipeline from.
#[derive(Debug, Default)]
pub struct LoadedCheckpoint {
    /// The newest output records, oldest first.
    pub outputs: Vec<OutputRow>,
    pub idempotency: Vec<IdempotencyRow>,
}

/// What a checkpoint reports it wrote: keys written, keys deleted, and bytes (keys and values
/// of the state rows, and the output records' JSON).
pub(super) fn sizes(w: &CheckpointWrite<'_>) -> (i64, i64, i64) {
    let (written, deleted, bytes) = row_sizes(w.rows);
    let outputs = w.outputs.iter().map(|o| o.record.len() as i64).sum::<i64>();
    let p = w.partitions.unwrap_or_default();
    (
        written + p.keys_written,
        deleted + p.keys_deleted,
        bytes + outputs + p.bytes,
    )
}

/// Keys written, keys deleted, and bytes of keys and values, of `rows`.
pub(super) fn row_sizes(rows: &[StateRow]) -> (i64, i64, i64) {
    let (mut written, mut deleted, mut bytes) = (0_i64, 0_i64, 0_i64);
    for row in rows {
        match &row.value {
            Some(v) => {
                written += 1;
                bytes += v.len() as i64 + row.key.len() as i64;
            }
            None => deleted += 1,
        }
    }
    (written, deleted, bytes)
}

/// $1..$9: what a partition wrote at a checkpoint (once: a second write is no row).
pub(super) const INSERT_PARTITION_WRITE: &str = "insert into checkpoint_partitions \
     (pipeline, checkpoint, partition, lsn, output_position, generation, keys_written, \
     keys_deleted, bytes) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict do nothing";

/// $1 pipeline, $2 checkpoint: what its partitions wrote, summed.
pub(super) const PARTITIONS_WRITTEN: &str = "select count(*) as partitions, \
     cast(coalesce(sum(keys_written), 0) as bigint) as keys_written, \
     cast(coalesce(sum(keys_deleted), 0) as bigint) as keys_deleted, \
     cast(coalesce(sum(bytes), 0) as bigint) as bytes \
     from checkpoint_partitions where pipeline = $1 and checkpoint = $2";

/// $1 pipeline, $2 the oldest retained checkpoint: what partitions wrote before it.
pub(super) const DELETE_OLD_PARTITION_WRITES: &str =
    "delete from checkpoint_partitions where pipeline = $1 and checkpoint < $2";

/// $1 pipeline, $2 checkpoint: the partitions that wrote at it.
pub(super) const PARTITIONS_DONE: &str = "select cast(partition as bigint) \
     from checkpoint_partitions where pipeline = $1 and checkpoint = $2 order by partition";

/// $1 pipeline, $2 checkpoint, $3 partition: its output position and generation at its
/// newest write at or before the checkpoint.
pub(super) const OUTPUT_POSITION: &str = "select output_position, generation \
     from checkpoint_partitions \
     where pipeline = $1 and checkpoint <= $2 and partition = $3 \
     order by checkpoint desc limit 1";

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

/// Followed by `values` of (pipeline, checkpoint, key_group, part, rows, data).
pub(super) const INSERT_CHUNKS: &str =
    "insert into state_chunks (pipeline, checkpoint, key_group, part, rows, data) ";

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

/// $1 pipeline, $2 checkpoint, $3..=$4 key groups: every chunk of those key groups at or
/// before it, newest checkpoint first ([`Latest`] keeps the first version of each key).
pub(super) const LOAD_STATE: &str = "select checkpoint, key_group, rows, data from state_chunks \
     where pipeline = $1 and checkpoint <= $2 and key_group between $3 and $4 \
     order by checkpoint desc";

/// A chunk as loaded: (checkpoint, key_group, rows, data).
pub(super) type LoadedChunk = (i64, i32, i32, Vec<u8>);

/// $1 pipeline, $2 checkpoint, $3..=$4 key groups: the oldest checkpoint with state of those
/// key groups at or before it (null: none).
pub(super) const OLDEST_STATE: &str = "select min(checkpoint) from state_chunks \
     where pipeline = $1 and checkpoint <= $2 and key_group between $3 and $4";

/// $1 pipeline, $2 the oldest retained checkpoint: (key group, checkpoint, rows) of the
/// chunks at or before it, as [`super::chunks::to_compact`] takes them.
pub(super) const CHUNK_VERSIONS: &str = "select key_group, checkpoint, sum(rows) \
     from state_chunks where pipeline = $1 and checkpoint <= $2 \
     group by key_group, checkpoint order by key_group, checkpoint";

/// $1 pipeline, $2 the oldest retained checkpoint, $3 key group: its chunks at or before it,
/// newest checkpoint first.
pub(super) const LOAD_GROUP: &str = "select checkpoint, key_group, rows, data from state_chunks \
     where pipeline = $1 and checkpoint <= $2 and key_group = $3 order by checkpoint desc";

/// As [`LOAD_GROUP`]: the chunks a compaction merged.
pub(super) const DELETE_GROUP: &str = "delete from state_chunks \
     where pipeline = $1 and checkpoint <= $2 and key_group = $3";

/// Where a checkpoint's state goes as it is read: in chunks of rows, each the newest version
/// of its key at the checkpoint, deletions left out. A receiver that is gone is no error of
/// the load (whoever dropped it failed, and says why).
pub type RowSink = tokio::sync::mpsc::UnboundedSender<Vec<StateRow>>;

/// Rows per chunk sent to a [`RowSink`].
const ROWS_PER_CHUNK: usize = 8_192;

/// The state at a checkpoint, from its rows read newest checkpoint first: per (operator, key)
/// the first version read wins, a deletion (no value) included. Every row accepted is final
/// when it is read, so it goes to the sink at once. One checkpoint writes a key once, so only
/// the keys of checkpoints newer than the oldest one are remembered: a state written by one
/// checkpoint costs no set at all.
pub(super) struct Latest {
    sink: RowSink,
    chunk: Vec<StateRow>,
    /// The oldest checkpoint with rows: nothing older follows its rows.
    oldest: i64,
    /// The checkpoint of the rows being read.
    current: Option<i64>,
    newer: rustc_hash::FxHashSet<(u16, crate::state::Key)>,
}

impl Latest {
    pub(super) fn new(sink: RowSink, oldest: i64) -> Latest {
        Latest {
            sink,
            chunk: Vec::with_capacity(ROWS_PER_CHUNK),
            oldest,
            current: None,
            newer: Default::default(),
        }
    }

    /// Takes the next row read, of checkpoint `checkpoint`.
    pub(super) fn push(&mut self, row: StateRow, checkpoint: i64) {
        if let Some(current) = self.current {
            assert!(
                checkpoint <= current,
                "state rows must come newest checkpoint first ({current} before {checkpoint})"
            );
        }
        self.current = Some(checkpoint);
        // A key already in `newer` has a newer version (one checkpoint writes a key once).
        let newer = if checkpoint > self.oldest {
            !self.newer.insert((row.operator, row.key.clone()))
        } else {
            !self.newer.is_empty() && self.newer.contains(&(row.operator, row.key.clone()))
        };
        if newer {
            return;
        }
        if row.value.is_some() {
            self.chunk.push(row);
            if self.chunk.len() == ROWS_PER_CHUNK {
                self.flush();
            }
        }
    }

    /// Takes the rows of the next chunk read (checked whole before any is taken).
    pub(super) fn chunk(
        &mut self,
        pipeline: &str,
        (checkpoint, key_group, rows, data): &LoadedChunk,
    ) -> Result<(), super::StoreError> {
        let damaged = |reason: String| super::StoreError::DamagedState {
            pipeline: pipeline.to_owned(),
            checkpoint: *checkpoint,
            key_group: *key_group,
            reason,
        };
        let group = u16::try_from(*key_group)
            .map_err(|_| damaged(format!("key group {key_group} is out of range")))?;
        super::chunks::decode(group, *rows, data, |row| self.push(row, *checkpoint))
            .map_err(damaged)
    }

    fn flush(&mut self) {
        let rows = std::mem::replace(&mut self.chunk, Vec::with_capacity(ROWS_PER_CHUNK));
        let _ = self.sink.send(rows);
    }

    /// Sends what is left.
    pub(super) fn finish(mut self) {
        if !self.chunk.is_empty() {
            self.flush();
        }
    }
}

/// The rows of `chunks` (newest checkpoint first) merged: the newest version of each key,
/// deletions left out.
pub(super) fn merged(
    pipeline: &str,
    chunks: &[LoadedChunk],
) -> Result<Vec<StateRow>, super::StoreError> {
    let Some(oldest) = chunks.last().map(|c| c.0) else {
        return Ok(Vec::new());
    };
    let (sink, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let mut latest = Latest::new(sink, oldest);
    for chunk in chunks {
        latest.chunk(pipeline, chunk)?;
    }
    latest.finish();
    let mut rows = Vec::new();
    while let Ok(more) = sent.try_recv() {
        rows.extend(more);
    }
    Ok(rows)
}

/// State rows as eddy stored them before chunks (table `state_rows`, no longer written):
/// the pipelines with any, then per pipeline its checkpoints with any, then one checkpoint's
/// rows as (operator, key, key_group, last_time, value), then the pipeline's rows deleted.
pub(super) const LEGACY_PIPELINES: &str = "select distinct pipeline from state_rows";
pub(super) const LEGACY_CHECKPOINTS: &str =
    "select distinct checkpoint from state_rows where pipeline = $1 order by checkpoint";
pub(super) const LEGACY_ROWS: &str = "select operator, key, key_group, last_time, value \
     from state_rows where pipeline = $1 and checkpoint = $2";
pub(super) const LEGACY_DELETE: &str = "delete from state_rows where pipeline = $1";

/// A legacy state row as read: (operator, key, key_group, last_time, value).
pub(super) type LegacyRow = (i32, String, i32, i64, Option<Vec<u8>>);

/// $1 pipeline, $2 checkpoint, $3 how many: the newest output records, newest first.
pub(super) const LOAD_OUTPUTS: &str = "select output_offset, record from output_records \
     where pipeline = $1 and checkpoint <= $2 order by output_offset desc limit $3";

/// $1 pipeline, $2 checkpoint: the idempotency keys, oldest first.
pub(super) const LOAD_KEYS: &str = "select key, created, accepted, first_offset, last_offset \
     from idempotency_keys where pipeline = $1 and checkpoint <= $2 order by created, key";

/// $1 pipeline, $2 id: what checkpoints after it wrote (a restore).
pub(super) const DELETE_AFTER: [&str; 4] = [
    "delete from state_chunks where pipeline = $1 and checkpoint > $2",
    "delete from checkpoint_partitions where pipeline = $1 and checkpoint > $2",
    "delete from output_records where pipeline = $1 and checkpoint > $2",
    "delete from idempotency_keys where pipeline = $1 and checkpoint > $2",
];

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

    fn state_row(operator: u16, key: &str, last_time: i64, value: Option<Vec<u8>>) -> StateRow {
        StateRow {
            operator,
            key: key.into(),
            key_group: 7,
            last_time,
            value,
        }
    }

    /// Every row `latest` sent, in order.
    fn sent(mut rows: tokio::sync::mpsc::UnboundedReceiver<Vec<StateRow>>) -> Vec<StateRow> {
        let mut all = Vec::new();
        while let Ok(chunk) = rows.try_recv() {
            assert!(!chunk.is_empty(), "no empty chunk is sent");
            all.extend(chunk);
        }
        all
    }

    #[test]
    fn the_newest_version_of_each_key_wins_a_deletion_included() {
        let row = |operator, key: &str, value: Option<&str>, checkpoint| {
            let value = value.map(|v| v.as_bytes().to_vec());
            (state_row(operator, key, checkpoint, value), checkpoint)
        };
        let (sink, rows) = tokio::sync::mpsc::unbounded_channel();
        let mut latest = Latest::new(sink, 1);
        for r in [
            row(0, "a", Some("a3"), 3),
            row(0, "gone", None, 3),
            row(1, "a", Some("1a3"), 3),
            row(0, "b", Some("b2"), 2),
            row(0, "a", Some("a2"), 2),
            row(0, "a", Some("a1"), 1),
            row(0, "gone", Some("g1"), 1),
            row(1, "b", Some("1b1"), 1),
            row(0, "b", Some("b1"), 1),
        ] {
            latest.push(r.0, r.1);
        }
        latest.finish();
        let mut state: Vec<_> = sent(rows)
            .into_iter()
            .map(|r| {
                (
                    r.operator,
                    r.key.to_string(),
                    String::from_utf8(r.value.unwrap()).unwrap(),
                    r.last_time,
                )
            })
            .collect();
        state.sort();
        let expected = [
            (0, "a", "a3", 3),
            (0, "b", "b2", 2),
            (1, "a", "1a3", 3),
            (1, "b", "1b1", 1),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|&(o, k, v, t)| (o, k.to_owned(), v.to_owned(), t))
            .collect();
        assert_eq!(state, expected);
    }

    #[test]
    fn one_checkpoints_rows_are_all_sent_in_chunks_without_a_set() {
        let (sink, mut rows) = tokio::sync::mpsc::unbounded_channel();
        let mut latest = Latest::new(sink, 5);
        let n = ROWS_PER_CHUNK + 100;
        for i in 0..n {
            latest.push(state_row(0, &format!("k{i}"), 0, Some(vec![1])), 5);
        }
        assert!(latest.newer.is_empty());
        assert_eq!(
            rows.try_recv().unwrap().len(),
            ROWS_PER_CHUNK,
            "a full chunk goes at once"
        );
        latest.finish();
        assert_eq!(sent(rows).len(), 100);
    }

    #[test]
    #[should_panic(expected = "newest checkpoint first")]
    fn rows_out_of_order_are_a_bug() {
        let (sink, _rows) = tokio::sync::mpsc::unbounded_channel();
        let mut latest = Latest::new(sink, 1);
        latest.push(state_row(0, "a", 0, None), 1);
        latest.push(state_row(0, "a", 0, None), 2);
    }

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
            progress: Progress::default(),
            rows: &rows,
            outputs: &outputs,
            idempotency: &[],
            fence: None,
            partitions: None,
        };
        assert_eq!(sizes(&write), (1, 1, 5 + 2));
    }
}
