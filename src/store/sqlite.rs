//! The embedded SQLite backend: one file under the data dir, WAL journal, full sync.

use super::{SQLITE_MIGRATOR, Store, StoreError, StoredPipeline, decode_spec, is_unique_violation};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// A pool of connections to one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file of `url`.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        SQLITE_MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_pipeline(&self, name: &str, spec: &Value) -> Result<(), StoreError> {
        sqlx::query("insert into pipelines (name, spec) values (?, ?)")
            .bind(name)
            .bind(spec.to_string())
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
            sqlx::query_as("select name, spec from pipelines order by name")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(name, spec)| decode_spec(name, &spec))
            .collect()
    }

    async fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("delete from pipelines where name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
