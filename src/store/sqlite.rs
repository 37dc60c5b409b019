//! The embedded SQLite backend: one file under the data dir, WAL journal, full sync.
//!
//! Invariant: every write goes through ONE connection (`writer`), so writers never contend.
//! SQLite allows one writer at a time, and a deferred transaction that read before it writes
//! (taking the next checkpoint id does) fails at once with `SQLITE_BUSY` ("database is
//! locked") when another connection holds the write lock, or `SQLITE_BUSY_SNAPSHOT` when one
//! committed since its read: the busy timeout is not consulted for that upgrade, as waiting
//! could deadlock. With several writing connections, the periodic checkpoints of pipelines
//! falling on the same tick failed that way. Readers have their own connections;
//! in WAL mode they neither block the writer nor are blocked by it.

use super::sql::{Dialect, SqlStore};
use super::{SQLITE_MIGRATOR, StoreError};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// A pool of connections to one SQLite file: readers, and the one connection that writes
/// (waiting for it is queueing, not an outage).
pub type SqliteStore = SqlStore<Sqlite>;

static DIALECT: Dialect = Dialect {
    backend: "sqlite",
    insert_pipeline: "insert into pipelines (name, spec) values ($1, $2)",
    list_pipelines: "select name, spec from pipelines order by name",
    // SQLite takes the bare columns of a max() aggregate from the row holding the maximum.
    lease_epoch: "select epoch from cluster_leases where pipeline = $1 and holder = $2",
    partition_epoch: "select epoch from cluster_partitions \
         where pipeline = $1 and partition = $2 and holder = $3",
    checkpoint_status: "select status from checkpoints where pipeline = $1 and id = $2",
};

impl SqlStore<Sqlite> {
    /// Opens (creating if missing) the database file of `url`. Readers wait at most
    /// `acquire_timeout` for a connection; a write waits for the writer as long as the writes
    /// queued before it take (up to [`WRITER_WAIT`]).
    pub async fn connect(url: &str, acquire_timeout: Duration) -> Result<SqliteStore, StoreError> {
        let db = |e| StoreError::from_sqlx(DIALECT.backend, e);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Only another process (an operator's sqlite3 shell) can hold the file now.
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // The writer first: it creates the file and switches it to WAL before readers open it.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(WRITER_WAIT)
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(SqlStore {
            pool,
            writer,
            migrator: &SQLITE_MIGRATOR,
            dialect: &DIALECT,
        })
    }
}

/// How long a write waits for the writer connection: long enough for the largest checkpoint
/// queued before it, so that a checkpoint never fails for waiting its turn.
pub const WRITER_WAIT: Duration = Duration::from_secs(600);
