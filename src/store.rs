//! The store: every SQL statement of eddy, behind one [`Store`] trait with two backends,
//! PostgreSQL (production) and an embedded SQLite file (the zero-setup default).
//!
//! Invariant: both backends pass the same conformance suite (`tests/store_conformance.rs`);
//! a behaviour one of them cannot give is not part of the trait.

mod checkpoints;
mod postgres;
mod sqlite;

pub use checkpoints::{
    CheckpointMeta, CheckpointStatus, CheckpointWrite, Floors, LoadedCheckpoint, Trigger,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::Migrator;
use std::sync::Arc;

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
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored spec of {name:?} is not valid JSON")]
    Corrupt {
        name: String,
        source: serde_json::Error,
    },
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
    async fn begin_checkpoint(
        &self,
        pipeline: &str,
        trigger: Trigger,
        started_at: i64,
    ) -> Result<i64, StoreError>;
    /// In ONE transaction: the state rows, output records and idempotency keys of a
    /// checkpoint, and its row marked completed.
    async fn commit_checkpoint(
        &self,
        write: &CheckpointWrite<'_>,
    ) -> Result<CheckpointMeta, StoreError>;
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
    async fn checkpoints(&self, pipeline: &str) -> Result<Vec<CheckpointMeta>, StoreError>;
    /// One checkpoint.
    async fn checkpoint(
        &self,
        pipeline: &str,
        id: i64,
    ) -> Result<Option<CheckpointMeta>, StoreError>;
    /// The state, the newest `outputs` output records and the idempotency keys at a checkpoint.
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

/// Opens the store a database URL names (`postgres://`, `postgresql://` or `sqlite://`).
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
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
}
