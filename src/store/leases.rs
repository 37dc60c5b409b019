//! Cluster mode's rows in PostgreSQL: the members with their heartbeats, and per pipeline one
//! leader lease with a fencing epoch. Every time is the database's (`now()`), so the
//! instances' clocks need not agree; only the holder's own monotonic clock decides how long
//! it may act on a lease it renewed (see `service::cluster`).
//!
//! A lease is taken when it is free (released on SIGTERM), expired (its holder stopped
//! renewing), or held under this instance's own id by an earlier process of it; taking it
//! raises the epoch, which only ever grows. The checkpoint transaction checks the epoch
//! (`SqlStore::check_fence`), and the log fences on the stream itself (`log::stream`).

use super::StoreError;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// The lease a writer acts under: its node and the epoch it took the lease with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub node: String,
    pub epoch: i64,
}

/// One pipeline's lease as the database has it now.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Lease {
    pub pipeline: String,
    pub holder: Option<String>,
    pub epoch: i64,
    /// Held and not expired.
    pub live: bool,
    /// The holder's advertised URL (from its member row).
    pub url: Option<String>,
    /// The holder's applied offset at its last renewal.
    pub applied: Option<i64>,
    /// Milliseconds until it expires, by the database's clock (held leases only).
    pub expires_in_ms: Option<i64>,
}

/// One instance as the database has it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MemberRow {
    pub node: String,
    pub url: String,
    /// Heard from within the lease timeout and not stopped.
    pub alive: bool,
    /// Epoch ms.
    pub last_seen: i64,
}

/// The members and leases of one cluster, as seen by one instance (`node`).
#[derive(Clone, Debug)]
pub struct Leases {
    pool: PgPool,
    node: String,
    timeout_ms: i64,
}

const HEARTBEAT: &str = "insert into cluster_members (node, url, last_seen, left_at) \
     values ($1, $2, now(), null) \
     on conflict (node) do update set url = excluded.url, last_seen = now(), left_at = null";

const MEMBERS: &str = "select node, url, \
     (left_at is null and last_seen > now() - $1 * interval '1 millisecond') as alive, \
     (extract(epoch from last_seen) * 1000)::bigint as last_seen \
     from cluster_members where last_seen > now() - $2 * interval '1 millisecond' order by node";

const LEASES: &str = "select l.pipeline, l.holder, l.epoch, \
     (l.holder is not null and l.expires_at > now()) as live, m.url, l.applied, \
     case when l.holder is not null \
     then (extract(epoch from (l.expires_at - now())) * 1000)::bigint end as expires_in_ms \
     from cluster_leases l left join cluster_members m on m.node = l.holder order by l.pipeline";

const ACQUIRE: &str = "insert into cluster_leases (pipeline, holder, epoch, expires_at) \
     values ($1, $2, 1, now() + $3 * interval '1 millisecond') \
     on conflict (pipeline) do update set holder = excluded.holder, \
       epoch = cluster_leases.epoch + 1, expires_at = excluded.expires_at \
     where cluster_leases.holder is null or cluster_leases.expires_at <= now() \
       or cluster_leases.holder = excluded.holder \
     returning epoch";

const RENEW: &str = "update cluster_leases \
     set expires_at = now() + $4 * interval '1 millisecond', applied = coalesce($5, applied) \
     where pipeline = $1 and holder = $2 and epoch = $3";

const RELEASE: &str = "update cluster_leases set holder = null, expires_at = now() \
     where pipeline = $1 and holder = $2 and epoch = $3";

impl Leases {
    /// Connects to the PostgreSQL at `url` as member `node`; leases last `timeout`.
    pub async fn connect(url: &str, node: &str, timeout: Duration) -> Result<Leases, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(db)?;
        Ok(Leases {
            pool,
            node: node.to_owned(),
            timeout_ms: timeout.as_millis() as i64,
        })
    }

    /// This instance's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) fn timeout_ms(&self) -> i64 {
        self.timeout_ms
    }

    /// Says this instance is alive and reachable at `url`.
    pub async fn heartbeat(&self, url: &str) -> Result<(), StoreError> {
        sqlx::query(HEARTBEAT)
            .bind(&self.node)
            .bind(url)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// This instance stops: it is listed as not alive from now on, and every lease it holds
    /// is free at once.
    pub async fn leave(&self) -> Result<(), StoreError> {
        for release in [
            "update cluster_leases set holder = null, expires_at = now() where holder = $1",
            "update cluster_partitions set holder = null, expires_at = now() where holder = $1",
        ] {
            sqlx::query(release)
                .bind(&self.node)
                .execute(&self.pool)
                .await
                .map_err(db)?;
        }
        sqlx::query("update cluster_members set left_at = now() where node = $1")
            .bind(&self.node)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The members heard from lately (a dead one stays listed, not alive, for ten lease
    /// timeouts and at least a minute).
    pub async fn members(&self) -> Result<Vec<MemberRow>, StoreError> {
        let listed = (self.timeout_ms * 10).max(60_000);
        sqlx::query_as(MEMBERS)
            .bind(self.timeout_ms as f64)
            .bind(listed as f64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    /// Every pipeline's lease.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        sqlx::query_as(LEASES)
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    /// Takes the lease of `pipeline` if it is free, expired, or an earlier process's of this
    /// node: its new epoch, or `None` when another instance holds it.
    pub async fn acquire(&self, pipeline: &str) -> Result<Option<i64>, StoreError> {
        let taken: Option<(i64,)> = sqlx::query_as(ACQUIRE)
            .bind(pipeline)
            .bind(&self.node)
            .bind(self.timeout_ms as f64)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(taken.map(|(epoch,)| epoch))
    }

    /// Extends the lease held under `epoch` by the timeout (recording `applied`); false when
    /// it is no longer this instance's.
    pub async fn renew(
        &self,
        pipeline: &str,
        epoch: i64,
        applied: Option<i64>,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(RENEW)
            .bind(pipeline)
            .bind(&self.node)
            .bind(epoch)
            .bind(self.timeout_ms as f64)
            .bind(applied)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Frees the lease held under `epoch` at once (another instance may take it).
    pub async fn release(&self, pipeline: &str, epoch: i64) -> Result<(), StoreError> {
        sqlx::query(RELEASE)
            .bind(pipeline)
            .bind(&self.node)
            .bind(epoch)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Removes the lease of a deleted pipeline.
    pub async fn forget(&self, pipeline: &str) -> Result<(), StoreError> {
        sqlx::query("delete from cluster_leases where pipeline = $1")
            .bind(pipeline)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

pub(super) fn db(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx("postgres", e)
}
