//! Checkpoint persistence shared by both backends: the types, and the SQL both dialects
//! accept (sqlx binds `$N` by number on SQLite too), expanded once per backend by
//! [`checkpoint_queries!`]. Only loading the state at a checkpoint differs per dialect.

#[allow(unused_imports)] // used by the expansions of store_impl!
pub(super) use crate::engine::Ack;
use crate::engine::{IdempotencyEntry, OutputRecord, StateRow};
use std::sync::Arc;

/// Where a checkpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointStatus {
    Completed,
    Failed,
    InProgress,
}

impl CheckpointStatus {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointStatus::Completed => "completed",
            CheckpointStatus::Failed => "failed",
            CheckpointStatus::InProgress => "in_progress",
        }
    }

    fn parse(s: &str) -> CheckpointStatus {
        match s {
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
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Periodic => "periodic",
            Trigger::Manual => "manual",
            Trigger::Shutdown => "shutdown",
        }
    }

    fn parse(s: &str) -> Trigger {
        match s {
            "periodic" => Trigger::Periodic,
            "shutdown" => Trigger::Shutdown,
            _ => Trigger::Manual,
        }
    }
}

/// A stored checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub id: i64,
    pub status: CheckpointStatus,
    pub trigger: Trigger,
    /// Epoch ms.
    pub started_at: i64,
    pub completed_at: Option<i64>,
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
    pub keys_written: i64,
    pub keys_deleted: i64,
    pub bytes: i64,
    pub error: Option<String>,
}

/// The columns of a checkpoint row, in [`CheckpointMeta`] order.
pub(super) const CHECKPOINT_COLUMNS: &str = "id, status, trigger, started_at, completed_at, events, \
    late_events, watermark, next_offset, input_offset, output_offset, wal_lsn, keys_written, \
    keys_deleted, bytes, error";

#[derive(sqlx::FromRow)]
pub(super) struct CheckpointRow {
    id: i64,
    status: String,
    trigger: String,
    started_at: i64,
    completed_at: Option<i64>,
    events: i64,
    late_events: i64,
    watermark: Option<i64>,
    next_offset: i64,
    input_offset: Option<i64>,
    output_offset: i64,
    wal_lsn: i64,
    keys_written: i64,
    keys_deleted: i64,
    bytes: i64,
    error: Option<String>,
}

impl From<CheckpointRow> for CheckpointMeta {
    fn from(r: CheckpointRow) -> CheckpointMeta {
        CheckpointMeta {
            id: r.id,
            status: CheckpointStatus::parse(&r.status),
            trigger: Trigger::parse(&r.trigger),
            started_at: r.started_at,
            completed_at: r.completed_at,
            events: r.events,
            late_events: r.late_events,
            watermark: r.watermark,
            next_offset: r.next_offset,
            input_offset: r.input_offset,
            output_offset: r.output_offset,
            wal_lsn: r.wal_lsn,
            keys_written: r.keys_written,
            keys_deleted: r.keys_deleted,
            bytes: r.bytes,
            error: r.error,
        }
    }
}

/// Everything one checkpoint writes, in one transaction.
pub struct CheckpointWrite<'a> {
    pub pipeline: &'a str,
    pub id: i64,
    pub completed_at: i64,
    pub events: i64,
    pub late_events: i64,
    pub watermark: Option<i64>,
    pub next_offset: i64,
    pub input_offset: Option<i64>,
    pub output_offset: i64,
    pub wal_lsn: i64,
    pub rows: &'a [StateRow],
    pub outputs: &'a [Arc<OutputRecord>],
    pub idempotency: &'a [IdempotencyEntry],
}

/// A checkpoint's contents, to start a pipeline from.
#[derive(Debug, Default)]
pub struct LoadedCheckpoint {
    pub rows: Vec<StateRow>,
    /// The newest output records (JSON), oldest first.
    pub outputs: Vec<(i64, String)>,
    pub idempotency: Vec<IdempotencyEntry>,
}

/// Offsets, ids and the WAL position a pipeline must not go below or replay past.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Floors {
    /// The next event offset is at least this.
    pub offset: i64,
    /// The next output offset is at least this.
    pub output: i64,
    /// Checkpoint ids are above this.
    pub checkpoint: i64,
    /// WAL records after this LSN are discarded (a restore was not finished).
    pub discard_after_lsn: Option<i64>,
}

/// Rows per multi-row statement (7 parameters each: under SQLite's 32766 and PostgreSQL's
/// 65535 bind limits).
pub(super) const CHUNK: usize = 2_000;

/// The dialect-specific statements of a backend.
pub(super) struct Dialect {
    pub backend: &'static str,
    pub insert_pipeline: &'static str,
    pub list_pipelines: &'static str,
    /// (operator, key, key_group, last_time, value) of the newest row per key at or before a
    /// checkpoint ($1 pipeline, $2 checkpoint id).
    pub load_state: &'static str,
}

/// Expands the whole [`Store`](super::Store) implementation of `$store` (whose `pool` field is
/// the `$db` pool for reads and `writer` the one for writes, migrated by `$migrator`), with the
/// statements of `$dialect`. Every sqlx error goes through the expansion site's `db`, which
/// classifies it for its backend.
macro_rules! store_impl {
    ($store:ty, $db:ty, $migrator:expr, $dialect:expr) => {
        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $dialect.backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                $migrator.run(&self.writer).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("select 1").execute(&self.pool).await.map_err(db)?;
                Ok(())
            }

            async fn insert_pipeline(&self, name: &str, spec: &serde_json::Value) -> Result<(), StoreError> {
                sqlx::query($dialect.insert_pipeline)
                    .bind(name)
                    .bind(spec.to_string())
                    .execute(&self.writer)
                    .await
                    .map_err(|e| match super::is_unique_violation(&e) {
                        true => StoreError::Duplicate { name: name.to_owned() },
                        false => db(e),
                    })?;
                Ok(())
            }

            async fn pipelines(&self) -> Result<Vec<super::StoredPipeline>, StoreError> {
                let rows: Vec<(String, String)> = sqlx::query_as($dialect.list_pipelines).fetch_all(&self.pool).await.map_err(db)?;
                rows.into_iter().map(|(name, spec)| super::decode_spec(name, &spec)).collect()
            }

            async fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("delete from pipelines where name = $1").bind(name).execute(&self.writer).await.map_err(db)?;
                Ok(done.rows_affected() > 0)
            }

            async fn begin_checkpoint(&self, pipeline: &str, trigger: Trigger, started_at: i64) -> Result<i64, StoreError> {
                let mut tx = self.writer.begin().await.map_err(db)?;
                let (last,): (i64,) = sqlx::query_as("select coalesce(max(id), 0) from checkpoints where pipeline = $1")
                    .bind(pipeline).fetch_one(&mut *tx).await.map_err(db)?;
                let (floor,): (i64,) = sqlx::query_as("select checkpoint_floor from pipelines where name = $1")
                    .bind(pipeline).fetch_one(&mut *tx).await.map_err(db)?;
                let id = last.max(floor) + 1;
                sqlx::query("insert into checkpoints (pipeline, id, status, trigger, started_at) values ($1, $2, 'in_progress', $3, $4)")
                    .bind(pipeline).bind(id).bind(trigger.as_str()).bind(started_at).execute(&mut *tx).await.map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(id)
            }

            async fn record_failed_checkpoint(&self, pipeline: &str, trigger: Trigger, started_at: i64, completed_at: i64, error: &str) -> Result<i64, StoreError> {
                let mut tx = self.writer.begin().await.map_err(db)?;
                let (last,): (i64,) = sqlx::query_as("select coalesce(max(id), 0) from checkpoints where pipeline = $1")
                    .bind(pipeline).fetch_one(&mut *tx).await.map_err(db)?;
                let (floor,): (i64,) = sqlx::query_as("select checkpoint_floor from pipelines where name = $1")
                    .bind(pipeline).fetch_one(&mut *tx).await.map_err(db)?;
                let id = last.max(floor) + 1;
                sqlx::query("insert into checkpoints (pipeline, id, status, trigger, started_at, completed_at, error) \
                             values ($1, $2, 'failed', $3, $4, $5, $6)")
                    .bind(pipeline).bind(id).bind(trigger.as_str()).bind(started_at).bind(completed_at).bind(error)
                    .execute(&mut *tx).await.map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(id)
            }

            async fn commit_checkpoint(&self, w: &CheckpointWrite<'_>) -> Result<CheckpointMeta, StoreError> {
                let mut tx = self.writer.begin().await.map_err(db)?;
                let (mut written, mut deleted, mut bytes) = (0_i64, 0_i64, 0_i64);
                for chunk in w.rows.chunks(CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "insert into state_rows (pipeline, operator, key, checkpoint, key_group, last_time, value) ");
                    q.push_values(chunk, |mut b, row| {
                        b.push_bind(w.pipeline).push_bind(i32::from(row.operator)).push_bind(row.key.as_str())
                            .push_bind(w.id).push_bind(i32::from(row.key_group)).push_bind(row.last_time)
                            .push_bind(row.value.as_deref());
                    });
                    q.build().execute(&mut *tx).await.map_err(db)?;
                }
                for row in w.rows {
                    match &row.value {
                        Some(v) => { written += 1; bytes += v.len() as i64 + row.key.len() as i64; }
                        None => deleted += 1,
                    }
                }
                let records: Vec<(i64, String)> = w.outputs.iter()
                    .map(|r| (r.offset as i64, serde_json::to_string(&**r).expect("records serialise")))
                    .collect();
                for chunk in records.chunks(CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "insert into output_records (pipeline, output_offset, checkpoint, record) ");
                    q.push_values(chunk, |mut b, (offset, json)| {
                        b.push_bind(w.pipeline).push_bind(*offset).push_bind(w.id).push_bind(json.as_str());
                    });
                    q.build().execute(&mut *tx).await.map_err(db)?;
                    bytes += chunk.iter().map(|(_, j)| j.len() as i64).sum::<i64>();
                }
                for chunk in w.idempotency.chunks(CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "insert into idempotency_keys (pipeline, key, checkpoint, created, accepted, first_offset, last_offset) ");
                    q.push_values(chunk, |mut b, e| {
                        b.push_bind(w.pipeline).push_bind(e.key.as_str()).push_bind(w.id).push_bind(e.created)
                            .push_bind(e.ack.accepted as i64).push_bind(e.ack.first_offset as i64).push_bind(e.ack.last_offset as i64);
                    });
                    q.push(" on conflict (pipeline, key) do update set checkpoint = excluded.checkpoint, \
                              created = excluded.created, accepted = excluded.accepted, \
                              first_offset = excluded.first_offset, last_offset = excluded.last_offset");
                    q.build().execute(&mut *tx).await.map_err(db)?;
                }
                let row: CheckpointRow = sqlx::query_as(&format!(
                    "update checkpoints set status = 'completed', completed_at = $3, events = $4, late_events = $5, \
                     watermark = $6, next_offset = $7, input_offset = $8, output_offset = $9, wal_lsn = $10, \
                     keys_written = $11, keys_deleted = $12, bytes = $13 \
                     where pipeline = $1 and id = $2 returning {CHECKPOINT_COLUMNS}"))
                    .bind(w.pipeline).bind(w.id).bind(w.completed_at).bind(w.events).bind(w.late_events)
                    .bind(w.watermark).bind(w.next_offset).bind(w.input_offset).bind(w.output_offset).bind(w.wal_lsn)
                    .bind(written).bind(deleted).bind(bytes)
                    .fetch_one(&mut *tx).await.map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(row.into())
            }

            async fn fail_checkpoint(&self, pipeline: &str, id: i64, error: &str, completed_at: i64) -> Result<(), StoreError> {
                sqlx::query("update checkpoints set status = 'failed', error = $3, completed_at = $4 where pipeline = $1 and id = $2")
                    .bind(pipeline).bind(id).bind(error).bind(completed_at).execute(&self.writer).await.map_err(db)?;
                Ok(())
            }

            async fn checkpoints(&self, pipeline: &str) -> Result<Vec<CheckpointMeta>, StoreError> {
                let rows: Vec<CheckpointRow> = sqlx::query_as(&format!(
                    "select {CHECKPOINT_COLUMNS} from checkpoints where pipeline = $1 order by id desc"))
                    .bind(pipeline).fetch_all(&self.pool).await.map_err(db)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn checkpoint(&self, pipeline: &str, id: i64) -> Result<Option<CheckpointMeta>, StoreError> {
                let row: Option<CheckpointRow> = sqlx::query_as(&format!(
                    "select {CHECKPOINT_COLUMNS} from checkpoints where pipeline = $1 and id = $2"))
                    .bind(pipeline).bind(id).fetch_optional(&self.pool).await.map_err(db)?;
                Ok(row.map(Into::into))
            }

            async fn load_checkpoint(&self, pipeline: &str, id: i64, outputs: i64) -> Result<LoadedCheckpoint, StoreError> {
                let state: Vec<(i32, String, i32, i64, Option<Vec<u8>>)> = sqlx::query_as($dialect.load_state)
                    .bind(pipeline).bind(id).fetch_all(&self.pool).await.map_err(db)?;
                let rows = state.into_iter().filter(|r| r.4.is_some()).map(|(operator, key, key_group, last_time, value)| StateRow {
                    operator: operator as u16, key: key.into(), key_group: key_group as u16, last_time, value,
                }).collect();
                let mut outputs: Vec<(i64, String)> = sqlx::query_as(
                    "select output_offset, record from output_records where pipeline = $1 and checkpoint <= $2 \
                     order by output_offset desc limit $3")
                    .bind(pipeline).bind(id).bind(outputs).fetch_all(&self.pool).await.map_err(db)?;
                outputs.reverse();
                let keys: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
                    "select key, created, accepted, first_offset, last_offset from idempotency_keys \
                     where pipeline = $1 and checkpoint <= $2 order by created, key")
                    .bind(pipeline).bind(id).fetch_all(&self.pool).await.map_err(db)?;
                let idempotency = keys.into_iter().map(|(key, created, accepted, first, last)| IdempotencyEntry {
                    key, created, batch: None,
                    ack: Ack { accepted: accepted as u64, first_offset: first as u64, last_offset: last as u64 },
                }).collect();
                Ok(LoadedCheckpoint { rows, outputs, idempotency })
            }

            async fn floors(&self, pipeline: &str) -> Result<Floors, StoreError> {
                let (offset, output, checkpoint, discard_after_lsn): (i64, i64, i64, Option<i64>) = sqlx::query_as(
                    "select offset_floor, output_floor, checkpoint_floor, discard_after_lsn from pipelines where name = $1")
                    .bind(pipeline).fetch_one(&self.pool).await.map_err(db)?;
                Ok(Floors { offset, output, checkpoint, discard_after_lsn })
            }

            async fn restore_checkpoint(&self, pipeline: &str, id: i64, floors: Floors) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await.map_err(db)?;
                for table in ["checkpoints where pipeline = $1 and id > $2", "state_rows where pipeline = $1 and checkpoint > $2",
                              "output_records where pipeline = $1 and checkpoint > $2",
                              "idempotency_keys where pipeline = $1 and checkpoint > $2"] {
                    sqlx::query(&format!("delete from {table}")).bind(pipeline).bind(id).execute(&mut *tx).await.map_err(db)?;
                }
                sqlx::query("update pipelines set offset_floor = $2, output_floor = $3, checkpoint_floor = $4, \
                             discard_after_lsn = $5 where name = $1")
                    .bind(pipeline).bind(floors.offset).bind(floors.output).bind(floors.checkpoint)
                    .bind(floors.discard_after_lsn).execute(&mut *tx).await.map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(())
            }

            async fn raise_offset_floor(&self, pipeline: &str, offset: i64) -> Result<(), StoreError> {
                sqlx::query("update pipelines set offset_floor = case when offset_floor < $2 then $2 else offset_floor end \
                             where name = $1")
                    .bind(pipeline).bind(offset).execute(&self.pool).await?;
                Ok(())
            }

            async fn clear_discard(&self, pipeline: &str) -> Result<(), StoreError> {
                sqlx::query("update pipelines set discard_after_lsn = null where name = $1").bind(pipeline).execute(&self.writer).await.map_err(db)?;
                Ok(())
            }

            async fn prune(&self, pipeline: &str, retain: i64, keep_outputs: i64, keys_since: i64) -> Result<(), StoreError> {
                let oldest: Option<(i64,)> = sqlx::query_as(
                    "select id from checkpoints where pipeline = $1 and status = 'completed' order by id desc limit 1 offset $2")
                    .bind(pipeline).bind(retain - 1).fetch_optional(&self.pool).await.map_err(db)?;
                let Some((oldest,)) = oldest else { return Ok(()) };
                let mut tx = self.writer.begin().await.map_err(db)?;
                let (horizon,): (i64,) = sqlx::query_as("select gc_horizon from pipelines where name = $1")
                    .bind(pipeline).fetch_one(&mut *tx).await.map_err(db)?;
                // Rows superseded by a version in (horizon, oldest] are never read again.
                sqlx::query(
                    "delete from state_rows where (pipeline, operator, key, checkpoint) in (\
                     select s.pipeline, s.operator, s.key, s.checkpoint from state_rows t join state_rows s \
                     on s.pipeline = t.pipeline and s.operator = t.operator and s.key = t.key and s.checkpoint < t.checkpoint \
                     where t.pipeline = $1 and t.checkpoint > $2 and t.checkpoint <= $3)")
                    .bind(pipeline).bind(horizon).bind(oldest).execute(&mut *tx).await.map_err(db)?;
                sqlx::query("delete from state_rows where pipeline = $1 and checkpoint > $2 and checkpoint <= $3 and value is null")
                    .bind(pipeline).bind(horizon).bind(oldest).execute(&mut *tx).await.map_err(db)?;
                sqlx::query("delete from checkpoints where pipeline = $1 and id < $2").bind(pipeline).bind(oldest).execute(&mut *tx).await.map_err(db)?;
                sqlx::query("update pipelines set gc_horizon = $2 where name = $1").bind(pipeline).bind(oldest).execute(&mut *tx).await.map_err(db)?;
                sqlx::query("delete from output_records where pipeline = $1 and output_offset <= \
                             (select coalesce(max(output_offset), 0) from output_records where pipeline = $1) - $2")
                    .bind(pipeline).bind(keep_outputs).execute(&mut *tx).await.map_err(db)?;
                sqlx::query("delete from idempotency_keys where pipeline = $1 and created < $2")
                    .bind(pipeline).bind(keys_since).execute(&mut *tx).await.map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(())
            }

            async fn fail_interrupted(&self, pipeline: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query("update checkpoints set status = 'failed', error = 'interrupted by a restart', completed_at = $2 \
                             where pipeline = $1 and status = 'in_progress'")
                    .bind(pipeline).bind(at).execute(&self.writer).await.map_err(db)?;
                Ok(())
            }
        }
    };
}

pub(super) use store_impl;
