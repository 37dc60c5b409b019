//! Runs the statements of `pipelines.rs`, `checkpoints.rs` and `contents.rs` on either
//! backend: ONE generic [`Store`] implementation over `sqlx::Database`, so both backends run
//! the same code. The backends differ only in their [`Dialect`] and how they connect.
//!
//! The bounds sqlx needs of a database (executing on a connection, binding and reading
//! eddy's column types) are named once, on the impl below: Rust does not carry bounds on
//! types other than `Self` from a trait to its users, so a trait could not bundle them.
//!
//! Over 400 lines for that reason: the `Store` methods and the steps they share are in this
//! file (one bind a line) because each further file would repeat the bounds block.

use super::checkpoints::{self, CheckpointRecord, CheckpointStatus, NewCheckpoint, Trigger};
use super::chunks;
use super::contents::{self, CheckpointWrite, IdempotencyRow, LoadedCheckpoint, OutputRow};
use super::pipelines::{self, Floors};
use super::{
    Fence, PartitionWrite, PartitionWritten, PartitionsWritten, RowSink, Store, StoreError,
    StoredPipeline,
};
use crate::state::StateRow;
use futures::TryStreamExt;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use std::ops::RangeInclusive;

/// A store on one backend: readers, and the writer every write goes through.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    /// The pool of writes (the same pool for PostgreSQL; one connection for SQLite).
    pub(super) writer: Pool<DB>,
    pub(super) migrator: &'static Migrator,
    pub(super) dialect: &'static Dialect,
}

/// The statements that differ per backend.
#[derive(Debug)]
pub(super) struct Dialect {
    /// `postgres` or `sqlite`.
    pub backend: &'static str,
    /// $1 name, $2 spec (JSON text).
    pub insert_pipeline: &'static str,
    /// (name, spec as text), by name.
    pub list_pipelines: &'static str,
    /// (epoch) of the lease ($1 pipeline) while $2 holds it, locked against a takeover.
    pub lease_epoch: &'static str,
    /// (epoch) of the partition lease ($1 pipeline, $2 partition) while $3 holds it, locked
    /// against a takeover.
    pub partition_epoch: &'static str,
    /// (status) of checkpoint $2 of pipeline $1, locked against a restore deleting it.
    pub checkpoint_status: &'static str,
}

/// How many rows a statement changed: each backend's result type says it its own way.
pub(super) trait RowsAffected {
    fn rows(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl<DB: Database> SqlStore<DB> {
    /// A sqlx error of this backend, classified.
    fn db(&self, e: sqlx::Error) -> StoreError {
        StoreError::from_sqlx(self.dialect.backend, e)
    }
}

#[async_trait::async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB>,
    DB::QueryResult: RowsAffected,
    usize: ColumnIndex<DB::Row>,
    for<'r> CheckpointRecord: sqlx::FromRow<'r, DB::Row>,
    for<'r> OutputRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> IdempotencyRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> Floors: sqlx::FromRow<'r, DB::Row>,
{
    fn backend(&self) -> &'static str {
        self.dialect.backend
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator.run(&self.writer).await?;
        self.chunk_legacy_rows().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn insert_pipeline(
        &self,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let spec = spec.to_string();
        let done = sqlx::query(self.dialect.insert_pipeline)
            .bind(name)
            .bind(spec.as_str())
            .execute(&self.writer)
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if super::is_unique_violation(&e) => Err(StoreError::Duplicate {
                name: name.to_owned(),
            }),
            Err(e) => Err(self.db(e)),
        }
    }

    async fn pipelines(&self) -> Result<Vec<StoredPipeline>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(self.dialect.list_pipelines)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        rows.into_iter()
            .map(|(name, spec)| super::decode_spec(name, &spec))
            .collect()
    }

    async fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await.map_err(|e| self.db(e))?;
        let done = sqlx::query(pipelines::DELETE)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        for delete in pipelines::DELETE_STATE {
            sqlx::query(delete)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(done.rows() > 0)
    }

    async fn begin_checkpoint(
        &self,
        pipeline: &str,
        trigger: Trigger,
        started_at: i64,
        fence: Option<&Fence>,
    ) -> Result<i64, StoreError> {
        let new = NewCheckpoint {
            fence,
            status: CheckpointStatus::InProgress,
            trigger,
            started_at,
            completed_at: None,
            error: None,
        };
        self.insert_checkpoint(pipeline, new).await
    }

    async fn commit_checkpoint(
        &self,
        w: &CheckpointWrite<'_>,
    ) -> Result<CheckpointRecord, StoreError> {
        let mut tx = self.writer.begin().await.map_err(|e| self.db(e))?;
        self.write_contents(&mut *tx, w)
            .await
            .map_err(|e| self.db(e))?;
        let (written, deleted, bytes) = contents::sizes(w);
        let p = &w.progress;
        let record: CheckpointRecord = sqlx::query_as(checkpoints::COMPLETE)
            .bind(w.pipeline)
            .bind(w.id)
            .bind(crate::clock::now_ms())
            .bind(p.events)
            .bind(p.late_events)
            .bind(p.watermark)
            .bind(p.next_offset)
            .bind(p.input_offset)
            .bind(p.output_offset)
            .bind(p.wal_lsn)
            .bind(written)
            .bind(deleted)
            .bind(bytes)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        // Last, so that the lease row is locked only while the transaction commits (a lock
        // held through a long state write held back the leader's own renewals until its
        // lease expired); a takeover waits for the commit and then recovers from it.
        self.check_fence(&mut *tx, w.pipeline, w.fence).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(record)
    }

    async fn record_failed_checkpoint(
        &self,
        pipeline: &str,
        trigger: Trigger,
        started_at: i64,
        completed_at: i64,
        error: &str,
    ) -> Result<i64, StoreError> {
        let new = NewCheckpoint {
            status: CheckpointStatus::Failed,
            trigger,
            started_at,
            completed_at: Some(completed_at),
            error: Some(error),
            fence: None,
        };
        self.insert_checkpoint(pipeline, new).await
    }

    async fn fail_checkpoint(
        &self,
        pipeline: &str,
        id: i64,
        error: &str,
        completed_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(checkpoints::FAIL)
            .bind(pipeline)
            .bind(id)
            .bind(error)
            .bind(completed_at)
            .execute(&self.writer)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn fail_interrupted(&self, pipeline: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query(checkpoints::FAIL_INTERRUPTED)
            .bind(pipeline)
            .bind(at)
            .execute(&self.writer)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn checkpoints(&self, pipeline: &str) -> Result<Vec<CheckpointRecord>, StoreError> {
        sqlx::query_as(checkpoints::LIST)
            .bind(pipeline)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e))
    }

    async fn checkpoint(
        &self,
        pipeline: &str,
        id: i64,
    ) -> Result<Option<CheckpointRecord>, StoreError> {
        sqlx::query_as(checkpoints::GET)
            .bind(pipeline)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db(e))
    }

    async fn load_state(
        &self,
        pipeline: &str,
        id: i64,
        key_groups: RangeInclusive<i32>,
        rows: RowSink,
    ) -> Result<(), StoreError> {
        let (first, last) = key_groups.into_inner();
        let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        let oldest: Option<i64> = sqlx::query_scalar(contents::OLDEST_STATE)
            .bind(pipeline)
            .bind(id)
            .bind(first)
            .bind(last)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let Some(oldest) = oldest else {
            return Ok(());
        };
        let mut latest = contents::Latest::new(rows, oldest);
        let mut chunks = sqlx::query_as::<_, contents::LoadedChunk>(contents::LOAD_STATE)
            .bind(pipeline)
            .bind(id)
            .bind(first)
            .bind(last)
            .fetch(&mut *conn);
        while let Some(chunk) = chunks.try_next().await.map_err(|e| self.db(e))? {
            latest.chunk(pipeline, &chunk)?;
        }
        latest.finish();
        Ok(())
    }

    async fn load_checkpoint(
        &self,
        pipeline: &str,
        id: i64,
        outputs: i64,
    ) -> Result<LoadedCheckpoint, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.db(e))?;
        let mut outputs: Vec<OutputRow> = sqlx::query_as(contents::LOAD_OUTPUTS)
            .bind(pipeline)
            .bind(id)
            .bind(outputs)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        outputs.reverse();
        let idempotency = sqlx::query_as(contents::LOAD_KEYS)
            .bind(pipeline)
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(LoadedCheckpoint {
            outputs,
            idempotency,
        })
    }

    async fn floors(&self, pipeline: &str) -> Result<Floors, StoreError> {
        sqlx::query_as(pipelines::FLOORS)
            .bind(pipeline)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.db(e))
    }

    async fn restore_checkpoint(
        &self,
        pipeline: &str,
        id: i64,
        floors: Floors,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await.map_err(|e| self.db(e))?;
        for delete in std::iter::once(checkpoints::DELETE_AFTER).chain(contents::DELETE_AFTER) {
            sqlx::query(delete)
                .bind(pipeline)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
        }
        sqlx::query(pipelines::SET_FLOORS)
            .bind(pipeline)
            .bind(floors.offset)
            .bind(floors.output)
            .bind(floors.checkpoint)
            .bind(floors.discard_after_lsn)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn raise_offset_floor(&self, pipeline: &str, offset: i64) -> Result<(), StoreError> {
        sqlx::query(pipelines::RAISE_OFFSET_FLOOR)
            .bind(pipeline)
            .bind(offset)
            .execute(&self.writer)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn clear_discard(&self, pipeline: &str) -> Result<(), StoreError> {
        sqlx::query(pipelines::CLEAR_DISCARD)
            .bind(pipeline)
            .execute(&self.writer)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn write_partition(
        &self,
        w: &PartitionWrite<'_>,
    ) -> Result<PartitionWritten, StoreError> {
        let mut tx = self.writer.begin().await.map_err(|e| self.db(e))?;
        let status: Option<(String,)> = sqlx::query_as(self.dialect.checkpoint_status)
            .bind(w.pipeline)
            .bind(w.checkpoint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        if status.is_none_or(|(s,)| s != CheckpointStatus::InProgress.as_str()) {
            return Ok(PartitionWritten::NotInProgress);
        }
        let (written, deleted, bytes) = contents::row_sizes(w.rows);
        let inserted = sqlx::query(contents::INSERT_PARTITION_WRITE)
            .bind(w.pipeline)
            .bind(w.checkpoint)
            .bind(i32::from(w.partition))
            .bind(w.lsn as i64)
            .bind(w.output_position as i64)
            .bind(w.generation as i64)
            .bind(written)
            .bind(deleted)
            .bind(bytes)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        if inserted.rows() == 0 {
            return Ok(PartitionWritten::Already);
        }
        self.insert_chunks(&mut *tx, w.pipeline, w.checkpoint, w.rows)
            .await
            .map_err(|e| self.db(e))?;
        // Last, as in `commit_checkpoint`: the lease row is locked only while this commits.
        let held: Option<(i64,)> = sqlx::query_as(self.dialect.partition_epoch)
            .bind(w.pipeline)
            .bind(i32::from(w.partition))
            .bind(w.node)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        if held.map(|(epoch,)| epoch) != Some(w.epoch) {
            return Err(StoreError::Fenced {
                pipeline: format!("{} (partition {})", w.pipeline, w.partition),
                epoch: w.epoch,
            });
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(PartitionWritten::Written)
    }

    async fn partitions_written(
        &self,
        pipeline: &str,
        checkpoint: i64,
    ) -> Result<PartitionsWritten, StoreError> {
        let (partitions, keys_written, keys_deleted, bytes): (i64, i64, i64, i64) =
            sqlx::query_as(contents::PARTITIONS_WRITTEN)
                .bind(pipeline)
                .bind(checkpoint)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.db(e))?;
        Ok(PartitionsWritten {
            partitions,
            keys_written,
            keys_deleted,
            bytes,
        })
    }

    async fn partitions_done(
        &self,
        pipeline: &str,
        checkpoint: i64,
    ) -> Result<Vec<u16>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as(contents::PARTITIONS_DONE)
            .bind(pipeline)
            .bind(checkpoint)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(rows.into_iter().map(|(p,)| p as u16).collect())
    }

    async fn output_position(
        &self,
        pipeline: &str,
        checkpoint: i64,
        partition: u16,
    ) -> Result<(u64, u64), StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(contents::OUTPUT_POSITION)
            .bind(pipeline)
            .bind(checkpoint)
            .bind(i32::from(partition))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        Ok(row.map_or((0, 0), |(p, g)| (p.max(0) as u64, g.max(0) as u64)))
    }

    async fn prune(
        &self,
        pipeline: &str,
        retain: i64,
        keep_outputs: i64,
        keys_since: i64,
    ) -> Result<(), StoreError> {
        let oldest: Option<(i64,)> = sqlx::query_as(checkpoints::OLDEST_RETAINED)
            .bind(pipeline)
            .bind(retain - 1)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db(e))?;
        let Some((oldest,)) = oldest else {
            return Ok(());
        };
        let mut tx = self.writer.begin().await.map_err(|e| self.db(e))?;
        self.prune_through(&mut *tx, pipeline, oldest, keep_outputs, keys_since)
            .await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(())
    }
}

/// The steps several [`Store`] methods share. The bounds are those of the [`Store`] impl
/// that these steps need (an inherent impl cannot borrow another impl's bounds).
impl<DB> SqlStore<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Writes a checkpoint's first row with the next id (the ONE place ids are taken); its id.
    async fn insert_checkpoint(
        &self,
        pipeline: &str,
        new: NewCheckpoint<'_>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.writer.begin().await.map_err(|e| self.db(e))?;
        self.check_fence(&mut *tx, pipeline, new.fence).await?;
        let id = self
            .next_id(&mut *tx, pipeline)
            .await
            .map_err(|e| self.db(e))?;
        sqlx::query(checkpoints::INSERT)
            .bind(pipeline)
            .bind(id)
            .bind(new.status.as_str())
            .bind(new.trigger.as_str())
            .bind(new.started_at)
            .bind(new.completed_at)
            .bind(new.error)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(id)
    }

    /// Fails with [`StoreError::Fenced`] unless `fence` (when given) is the pipeline's lease
    /// now: read in `tx` and locked (PostgreSQL: `for share`) so that no takeover commits
    /// before `tx` does.
    async fn check_fence(
        &self,
        tx: &mut DB::Connection,
        pipeline: &str,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let Some(fence) = fence else {
            return Ok(());
        };
        let held: Option<(i64,)> = sqlx::query_as(self.dialect.lease_epoch)
            .bind(pipeline)
            .bind(fence.node.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        match held {
            Some((epoch,)) if epoch == fence.epoch => Ok(()),
            _ => Err(StoreError::Fenced {
                pipeline: pipeline.to_owned(),
                epoch: fence.epoch,
            }),
        }
    }

    /// The id the pipeline's next checkpoint gets, read in `tx`.
    async fn next_id(&self, tx: &mut DB::Connection, pipeline: &str) -> Result<i64, sqlx::Error> {
        let (last,): (i64,) = sqlx::query_as(checkpoints::LAST_ID)
            .bind(pipeline)
            .fetch_one(&mut *tx)
            .await?;
        let (floor,): (i64,) = sqlx::query_as(pipelines::CHECKPOINT_FLOOR)
            .bind(pipeline)
            .fetch_one(&mut *tx)
            .await?;
        Ok(checkpoints::next_id(last, floor))
    }

    /// Inserts `rows` as the chunks of checkpoint `id` (see `chunks`), many chunks per
    /// statement (an incremental checkpoint's few rows per key group are hundreds of small
    /// chunks: one round trip each cost more than writing them).
    async fn insert_chunks(
        &self,
        tx: &mut DB::Connection,
        pipeline: &str,
        id: i64,
        rows: &[StateRow],
    ) -> Result<(), sqlx::Error> {
        let encoded = chunks::encode(rows);
        for statement in chunks::statements(&encoded) {
            let sql = contents::values(contents::INSERT_CHUNKS, statement.len(), 6, "");
            let mut q = sqlx::query(&sql);
            for chunk in statement {
                q = q
                    .bind(pipeline)
                    .bind(id)
                    .bind(i32::from(chunk.key_group))
                    .bind(chunk.part)
                    .bind(chunk.rows)
                    .bind(chunk.data.as_slice());
            }
            q.execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Writes a checkpoint's state (as chunks), output records and idempotency keys (in
    /// multi-row inserts).
    async fn write_contents(
        &self,
        tx: &mut DB::Connection,
        w: &CheckpointWrite<'_>,
    ) -> Result<(), sqlx::Error> {
        self.insert_chunks(&mut *tx, w.pipeline, w.id, w.rows)
            .await?;
        for chunk in w.outputs.chunks(contents::CHUNK) {
            let sql = contents::values(contents::INSERT_OUTPUTS, chunk.len(), 4, "");
            let mut q = sqlx::query(&sql);
            for output in chunk {
                q = q
                    .bind(w.pipeline)
                    .bind(output.offset)
                    .bind(w.id)
                    .bind(output.record.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in w.idempotency.chunks(contents::CHUNK) {
            let sql =
                contents::values(contents::INSERT_KEYS, chunk.len(), 7, contents::UPSERT_KEYS);
            let mut q = sqlx::query(&sql);
            for key in chunk {
                q = q
                    .bind(w.pipeline)
                    .bind(key.key.as_str())
                    .bind(w.id)
                    .bind(key.created)
                    .bind(key.accepted)
                    .bind(key.first_offset)
                    .bind(key.last_offset);
            }
            q.execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Prunes up to the `oldest` retained checkpoint: compacts the state chunks no retained
    /// checkpoint tells apart, deletes the checkpoints before it, and outputs and keys beyond
    /// what is kept.
    async fn prune_through(
        &self,
        tx: &mut DB::Connection,
        pipeline: &str,
        oldest: i64,
        keep_outputs: i64,
        keys_since: i64,
    ) -> Result<(), StoreError> {
        self.compact(&mut *tx, pipeline, oldest).await?;
        let by_pipeline = [
            (checkpoints::DELETE_BEFORE, oldest),
            (contents::DELETE_OLD_PARTITION_WRITES, oldest),
            (contents::DELETE_OLD_OUTPUTS, keep_outputs),
            (contents::DELETE_OLD_KEYS, keys_since),
        ];
        for (statement, value) in by_pipeline {
            sqlx::query(statement)
                .bind(pipeline)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
        }
        Ok(())
    }

    /// Merges, per key group worth it ([`chunks::to_compact`]), the chunks at or before the
    /// `oldest` retained checkpoint into chunks of the newest of them: no load reads state
    /// older than `oldest`, so only the newest version of each key there is ever read again,
    /// and deletions there have nothing left to delete.
    async fn compact(
        &self,
        tx: &mut DB::Connection,
        pipeline: &str,
        oldest: i64,
    ) -> Result<(), StoreError> {
        let versions: Vec<(i32, i64, i64)> = sqlx::query_as(contents::CHUNK_VERSIONS)
            .bind(pipeline)
            .bind(oldest)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        for key_group in chunks::to_compact(&versions) {
            let loaded: Vec<contents::LoadedChunk> = sqlx::query_as(contents::LOAD_GROUP)
                .bind(pipeline)
                .bind(oldest)
                .bind(key_group)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            let rows = contents::merged(pipeline, &loaded)?;
            let newest = loaded.first().map_or(oldest, |c| c.0);
            sqlx::query(contents::DELETE_GROUP)
                .bind(pipeline)
                .bind(oldest)
                .bind(key_group)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            self.insert_chunks(&mut *tx, pipeline, newest, &rows)
                .await
                .map_err(|e| self.db(e))?;
        }
        Ok(())
    }

    /// Moves the state rows of an older eddy (table `state_rows`) into chunks of the same
    /// checkpoints, one pipeline per transaction, reading one checkpoint's rows at a time.
    async fn chunk_legacy_rows(&self) -> Result<(), StoreError> {
        let pipelines: Vec<(String,)> = sqlx::query_as(contents::LEGACY_PIPELINES)
            .fetch_all(&self.writer)
            .await
            .map_err(|e| self.db(e))?;
        for (pipeline,) in pipelines {
            let mut tx = self.writer.begin().await.map_err(|e| self.db(e))?;
            let ids: Vec<(i64,)> = sqlx::query_as(contents::LEGACY_CHECKPOINTS)
                .bind(pipeline.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            for (id,) in ids {
                let legacy: Vec<contents::LegacyRow> = sqlx::query_as(contents::LEGACY_ROWS)
                    .bind(pipeline.as_str())
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let rows: Vec<StateRow> = legacy
                    .into_iter()
                    .map(|(operator, key, key_group, last_time, value)| StateRow {
                        operator: operator as u16,
                        key: key.into(),
                        key_group: key_group as u16,
                        last_time,
                        value,
                    })
                    .collect();
                self.insert_chunks(&mut *tx, &pipeline, id, &rows)
                    .await
                    .map_err(|e| self.db(e))?;
            }
            sqlx::query(contents::LEGACY_DELETE)
                .bind(pipeline.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            tx.commit().await.map_err(|e| self.db(e))?;
            tracing::info!(pipeline, "state rows moved into chunks");
        }
        Ok(())
    }
}
