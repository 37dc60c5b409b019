//! The PostgreSQL backend (production).

use super::checkpoints::{
    CHECKPOINT_COLUMNS, CHUNK, CheckpointMeta, CheckpointRow, CheckpointWrite, Dialect, Floors,
    LoadedCheckpoint, Trigger, store_impl,
};
use super::{POSTGRES_MIGRATOR, Store, StoreError};
use crate::engine::{Ack, IdempotencyEntry, StateRow};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// A pool of connections to PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// The same pool: PostgreSQL orders concurrent writers itself (row locks, MVCC).
    writer: PgPool,
}

const DIALECT: Dialect = Dialect {
    backend: "postgres",
    insert_pipeline: "insert into pipelines (name, spec) values ($1, $2::jsonb)",
    list_pipelines: "select name, spec::text from pipelines order by name",
    load_state: "select distinct on (operator, key) operator, key, key_group, last_time, value \
                 from state_rows where pipeline = $1 and checkpoint <= $2 \
                 order by operator, key, checkpoint desc",
};

impl PostgresStore {
    /// Connects to `url`; a request waits at most `acquire_timeout` for a connection (while
    /// the server is down, that is how long a request takes to say so).
    pub async fn connect(
        url: &str,
        acquire_timeout: Duration,
    ) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await
            .map_err(db)?;
        Ok(PostgresStore {
            writer: pool.clone(),
            pool,
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A sqlx error of this backend, classified.
fn db(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(DIALECT.backend, e)
}

store_impl!(PostgresStore, sqlx::Postgres, POSTGRES_MIGRATOR, DIALECT);
