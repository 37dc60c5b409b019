//! The PostgreSQL backend (production).

use super::sql::{Dialect, SqlStore};
use super::{POSTGRES_MIGRATOR, StoreError};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use std::time::Duration;

/// A pool of connections to PostgreSQL; its writer is the same pool: PostgreSQL orders
/// concurrent writers itself (row locks, MVCC).
pub type PostgresStore = SqlStore<Postgres>;

static DIALECT: Dialect = Dialect {
    backend: "postgres",
    insert_pipeline: "insert into pipelines (name, spec) values ($1, $2::jsonb)",
    list_pipelines: "select name, spec::text from pipelines order by name",
    lease_epoch: "select epoch from cluster_leases where pipeline = $1 and holder = $2 for share",
    partition_epoch: "select epoch from cluster_partitions \
         where pipeline = $1 and partition = $2 and holder = $3 for share",
    checkpoint_status: "select status from checkpoints where pipeline = $1 and id = $2 for share",
};

impl SqlStore<Postgres> {
    /// Connects to `url`; a request waits at most `acquire_timeout` for a connection (while
    /// the server is down, that is how long a request takes to say so).
    pub async fn connect(
        url: &str,
        acquire_timeout: Duration,
    ) -> Result<PostgresStore, StoreError> {
        let db = |e| StoreError::from_sqlx(DIALECT.backend, e);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await
            .map_err(db)?;
        Ok(SqlStore {
            writer: pool.clone(),
            pool,
            migrator: &POSTGRES_MIGRATOR,
            dialect: &DIALECT,
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
