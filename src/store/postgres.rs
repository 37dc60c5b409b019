//! The PostgreSQL backend.

use super::{
    POSTGRES_MIGRATOR, Store, StoreError, StoredPipeline, decode_spec, is_unique_violation,
};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// A pool of connections to PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (lazily checked: the first statement reports an unreachable server).
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(PostgresStore { pool })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        POSTGRES_MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_pipeline(&self, name: &str, spec: &Value) -> Result<(), StoreError> {
        sqlx::query("insert into pipelines (name, spec) values ($1, $2)")
            .bind(name)
            .bind(sqlx::types::Json(spec))
            .execute(&self.pool)
            .await
            .map_err(|e| match is_unique_violation(&e) {
                true => StoreError::Duplicate {
                    name: name.to_owned(),
                },
                false => e.into(),
            })?;
        Ok(())
    }

    async fn pipelines(&self) -> Result<Vec<StoredPipeline>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("select name, spec::text from pipelines order by name")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(name, spec)| decode_spec(name, &spec))
            .collect()
    }

    async fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("delete from pipelines where name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
