//! The store: every SQL statement of eddy, behind one [`Store`] trait with two backends,
//! PostgreSQL (production) and an embedded SQLite file (the zero-setup default).
//!
//! Rooms: `pipelines` (definitions and floors), `checkpoints` (the checkpoint record),
//! `contents` (state chunks, output records, idempotency keys) hold the SQL and the stored
//! shapes, `chunks` the layout of a chunk of state rows; `sql` runs them on either backend;
//! `postgres` and `sqlite` only connect. The store imports no engine module: it stores plain
//! rows, and `checkpoint` converts.
//!
//! Invariant: both backends pass the same conformance suite (`tests/store_conformance.rs`);
//! a behaviour one of them cannot give is not part of the trait.

mod checkpoints;
mod chunks;
mod contents;
mod leases;
mod partitions;
mod pipelines;
mod postgres;
mod sql;
mod sqlite;

pub use checkpoints::{CheckpointRecord, CheckpointStatus, Progress, Trigger};
pub use contents::{CheckpointWrite, IdempotencyRow, LoadedCheckpoint, OutputRow, RowSink};
pub use leases::{Fence, Lease, Leases, MemberRow};
pub use partitions::{PartitionLease, PartitionWrite, PartitionWritten, PartitionsWritten};
pub use pipelines::Floors;
pub use postgres::PostgresStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::Migrator;
use std::sync::Arc;
use std::time::Duration;

/// Migrations of the PostgreSQL backend.
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");
/// Migrations of the SQLite backend.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// A stored pipeline definition.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPipeline {
    pub name: String,
    /// The validated spec document.
    pub spec: Value,
}

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A pipeline of that name is already stored.
    #[error("pipeline {name:?} already exists")]
    Duplicate { name: String },
    /// `DATABASE_URL` names no backend eddy has.
    #[error("unsupported database URL {url:?}: use postgres://… or sqlite://…")]
    UnsupportedUrl { url: String },
    /// The database answered with an error, or the request to it failed otherwise.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The database cannot be reached: connection refused or lost, no connection within the
    /// acquire timeout, I/O, the server shutting down, or (SQLite) the file busy or unreadable.
    #[error("the {store} store cannot be reached")]
    Unavailable {
        /// `postgres` or `sqlite`.
        store: &'static str,
        source: sqlx::Error,
    },
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The lease a write was fenced by is no longer held by its writer (another instance
    /// took the pipeline over): nothing was written.
    #[error("pipeline {pipeline:?} is led by another instance now (epoch {epoch} is stale)")]
    Fenced { pipeline: String, epoch: i64 },
    /// A stored chunk of state fails its checks (CRC, row count, layout): the checkpoint
    /// cannot be read, and nothing of it is used.
    #[error(
        "the stored state of pipeline {pipeline:?} at checkpoint {checkpoint}, key group \
         {key_group}, is damaged: {reason}"
    )]
    DamagedState {
        pipeline: String,
        checkpoint: i64,
        key_group: i32,
        reason: String,
    },
    #[error("stored spec of {name:?} is not valid JSON")]
    Corrupt {
        name: String,
        source: serde_json::Error,
    },
}

impl StoreError {
    /// `e` of the `store` backend, classified: [`StoreError::Unavailable`] when the store could
    /// not be reached (worth retrying later), else [`StoreError::Database`].
    pub fn from_sqlx(store: &'static str, e: sqlx::Error) -> StoreError {
        if is_unreachable(store, &e) {
            StoreError::Unavailable { store, source: e }
        } else {
            StoreError::Database(e)
        }
    }

    /// Whether the store could not be reached (as opposed to refusing what was asked).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Whether `e` means the database could not be reached rather than that it refused a statement.
fn is_unreachable(store: &str, e: &sqlx::Error) -> bool {
    use sqlx::Error;
    match e {
        Error::Io(_) | Error::Tls(_) | Error::PoolTimedOut | Error::PoolClosed => true,
        Error::WorkerCrashed => true,
        Error::Database(db) => db.code().is_some_and(|code| unreachable_code(store, &code)),
        _ => false,
    }
}

/// Whether a database error code says the server cannot serve now: a PostgreSQL SQLSTATE of
/// class 08 (connection exception), 57P01-57P03 (shutting down, cannot connect now) or 53300
/// (too many connections); an SQLite (extended) result code whose primary code is BUSY,
/// LOCKED, IOERR or CANTOPEN.
fn unreachable_code(store: &str, code: &str) -> bool {
    if store == "sqlite" {
        code.parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 14))
    } else {
        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
    }
}

/// Persistence of eddy's definitions and (later) checkpoints.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Stores a new pipeline definition; [`StoreError::Duplicate`] if the name is taken.
    async fn insert_pipeline(&self, name: &str, spec: &Value) -> Result<(), StoreError>;
    /// Every stored pipeline, by name.
    async fn pipelines(&self) -> Result<Vec<StoredPipeline>, StoreError>;
    /// Deletes a pipeline definition with its checkpoints; false when there was none.
    async fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError>;
    /// Records a checkpoint as `in_progress`; its id (above every id the pipeline ever had).
    /// With a `fence` (cluster mode), only while that lease is still held ([`StoreError::Fenced`]).
    async fn begin_checkpoint(
        &self,
        pipeline: &str,
        trigger: Trigger,
        started_at: i64,
        fence: Option<&Fence>,
    ) -> Result<i64, StoreError>;
    /// In ONE transaction: the state rows, output records and idempotency keys of a
    /// checkpoint, and its row marked completed; with the write's fence, only while that
    /// lease is still held ([`StoreError::Fenced`], nothing written).
    async fn commit_checkpoint(
        &self,
        write: &CheckpointWrite<'_>,
    ) -> Result<CheckpointRecord, StoreError>;
    /// Records a checkpoint that failed before its row was written (the store was down), as
    /// `failed` with its error; its id (as [`Store::begin_checkpoint`] assigns them).
    async fn record_failed_checkpoint(
        &self,
        pipeline: &str,
        trigger: Trigger,
        started_at: i64,
        completed_at: i64,
        error: &str,
    ) -> Result<i64, StoreError>;
    /// Marks a checkpoint failed with its error.
    async fn fail_checkpoint(
        &self,
        pipeline: &str,
        id: i64,
        error: &str,
        completed_at: i64,
    ) -> Result<(), StoreError>;
    /// Marks checkpoints a crash interrupted as failed.
    async fn fail_interrupted(&self, pipeline: &str, at: i64) -> Result<(), StoreError>;
    /// Every checkpoint of a pipeline, newest first.
    async fn checkpoints(&self, pipeline: &str) -> Result<Vec<CheckpointRecord>, StoreError>;
    /// One checkpoint.
    async fn checkpoint(
        &self,
        pipeline: &str,
        id: i64,
    ) -> Result<Option<CheckpointRecord>, StoreError>;
    /// The state of key groups `key_groups` at a checkpoint, to `rows` as it is read (so that
    /// it is restored meanwhile). Loads of disjoint key groups may run side by side.
    async fn load_state(
        &self,
        pipeline: &str,
        id: i64,
        key_groups: std::ops::RangeInclusive<i32>,
        rows: RowSink,
    ) -> Result<(), StoreError>;
    /// The newest `outputs` output records and the idempotency keys at a checkpoint.
    async fn load_checkpoint(
        &self,
        pipeline: &str,
        id: i64,
        outputs: i64,
    ) -> Result<LoadedCheckpoint, StoreError>;
    /// What offsets and ids a pipeline must stay above.
    async fn floors(&self, pipeline: &str) -> Result<Floors, StoreError>;
    /// Makes `id` the newest checkpoint (newer ones, their rows and outputs go) and sets floors.
    async fn restore_checkpoint(
        &self,
        pipeline: &str,
        id: i64,
        floors: Floors,
    ) -> Result<(), StoreError>;
    /// Raises the event-offset floor to at least `offset` (a WAL repair cut records that took
    /// offsets below it): the floor a restore sets, never lowered.
    async fn raise_offset_floor(&self, pipeline: &str, offset: i64) -> Result<(), StoreError>;
    /// The WAL was cut after a restore: forget the pending discard.
    async fn clear_discard(&self, pipeline: &str) -> Result<(), StoreError>;
    /// Cluster mode, partitions spread: writes a partition's state at a checkpoint's barrier,
    /// fenced by its owner lease ([`StoreError::Fenced`] when another instance holds it now),
    /// only while the checkpoint is in progress (its row is locked against a restore that
    /// would delete it meanwhile) and once per partition.
    async fn write_partition(&self, w: &PartitionWrite<'_>)
    -> Result<PartitionWritten, StoreError>;
    /// What the partitions wrote at a checkpoint so far.
    async fn partitions_written(
        &self,
        pipeline: &str,
        checkpoint: i64,
    ) -> Result<PartitionsWritten, StoreError>;
    /// The partitions that wrote at a checkpoint so far, in order.
    async fn partitions_done(
        &self,
        pipeline: &str,
        checkpoint: i64,
    ) -> Result<Vec<u16>, StoreError>;
    /// The output position and generation a partition recorded at its newest write at or
    /// before a checkpoint (zeros: none).
    async fn output_position(
        &self,
        pipeline: &str,
        checkpoint: i64,
        partition: u16,
    ) -> Result<(u64, u64), StoreError>;
    /// Keeps `retain` completed checkpoints, collects state rows no retained checkpoint reads,
    /// keeps the newest `keep_outputs` output records and idempotency keys created since
    /// `keys_since` (epoch ms).
    async fn prune(
        &self,
        pipeline: &str,
        retain: i64,
        keep_outputs: i64,
        keys_since: i64,
    ) -> Result<(), StoreError>;
}

/// How long a store request waits for a connection unless configured otherwise.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens the store a database URL names (`postgres://`, `postgresql://` or `sqlite://`).
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(url, ACQUIRE_TIMEOUT).await
}

/// Opens the store of `url`; a request waits at most `acquire_timeout` for a connection
/// before the store counts as unreachable.
pub async fn connect_with(
    url: &str,
    acquire_timeout: Duration,
) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, acquire_timeout).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, acquire_timeout).await?))
    } else {
        Err(StoreError::UnsupportedUrl { url: redact(url) })
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Whether `e` is a unique-constraint violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn decode_spec(name: String, text: &str) -> Result<StoredPipeline, StoreError> {
    let spec = serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        name: name.clone(),
        source,
    })?;
    Ok(StoredPipeline { name, spec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://data/eddy.db"), "sqlite://data/eddy.db");
    }

    #[test]
    fn connection_failures_are_unavailable_and_refusals_are_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(StoreError::from_sqlx("postgres", sqlx::Error::Io(refused)).is_unavailable());
        assert!(StoreError::from_sqlx("postgres", sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!StoreError::from_sqlx("sqlite", sqlx::Error::RowNotFound).is_unavailable());
    }

    #[test]
    fn error_codes_of_an_unreachable_server_are_told_apart_from_refusals() {
        // PostgreSQL: connection failure, admin shutdown, cannot connect now.
        for code in ["08006", "08001", "57P01", "57P03", "53300"] {
            assert!(unreachable_code("postgres", code), "{code}");
        }
        // Unique violation, undefined table, lock not available, serialization failure.
        for code in ["23505", "42P01", "55P03", "40001"] {
            assert!(!unreachable_code("postgres", code), "{code}");
        }
        // SQLite: BUSY, BUSY_SNAPSHOT (517), LOCKED, IOERR_WRITE (778), CANTOPEN.
        for code in ["5", "517", "6", "778", "14"] {
            assert!(unreachable_code("sqlite", code), "{code}");
        }
        // CONSTRAINT_PRIMARYKEY (1555), generic ERROR, READONLY.
        for code in ["1555", "1", "8"] {
            assert!(!unreachable_code("sqlite", code), "{code}");
        }
    }
}
