//! Cluster mode with partitions spread over instances: per partition of a pipeline one owner
//! lease with a fencing epoch (`cluster_partitions`, taken, renewed and released as the
//! pipeline's leader lease is), and what each owner writes at a checkpoint's barrier: its
//! partition's changed state, as chunks of the checkpoint, and a `checkpoint_partitions` row,
//! in one transaction that checks the owner still holds the partition under its epoch (the
//! lease row is locked `for share`, last, so that a takeover waits for the commit).

use super::leases::db;
use super::{Leases, StoreError};
use crate::state::StateRow;

/// One partition's owner lease as the database has it now.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PartitionLease {
    pub pipeline: String,
    pub partition: i32,
    pub holder: Option<String>,
    pub epoch: i64,
    /// Held and not expired.
    pub live: bool,
    /// The owner's applied event offset at its last renewal.
    pub applied: Option<i64>,
}

/// What a partition's owner writes at checkpoint `checkpoint`'s barrier.
pub struct PartitionWrite<'a> {
    pub pipeline: &'a str,
    /// The owner (this instance's node id).
    pub node: &'a str,
    pub checkpoint: i64,
    pub partition: u16,
    /// The epoch the owner holds the partition under.
    pub epoch: i64,
    /// The stream sequence of the barrier record.
    pub lsn: u64,
    /// Output records of the partition up to the barrier.
    pub output_position: u64,
    /// The LSN of the newest restore record the owner had read (0: none).
    pub generation: u64,
    /// Every key of the partition changed since its previous barrier.
    pub rows: &'a [StateRow],
}

/// What came of a partition's write at a checkpoint's barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionWritten {
    Written,
    /// The partition had written at that checkpoint already (an owner before this one).
    Already,
    /// The checkpoint is not in progress (it failed, or a restore deleted it): nothing was
    /// written, and the changes belong to the next checkpoint.
    NotInProgress,
}

/// What the partitions wrote for one checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionsWritten {
    pub partitions: i64,
    pub keys_written: i64,
    pub keys_deleted: i64,
    pub bytes: i64,
}

const PARTITION_LEASES: &str = "select pipeline, partition, holder, epoch, \
     (holder is not null and expires_at > now()) as live, applied \
     from cluster_partitions order by pipeline, partition";

const ACQUIRE_PARTITION: &str = "insert into cluster_partitions \
     (pipeline, partition, holder, epoch, expires_at) \
     values ($1, $2, $3, 1, now() + $4 * interval '1 millisecond') \
     on conflict (pipeline, partition) do update set holder = excluded.holder, \
       epoch = cluster_partitions.epoch + 1, expires_at = excluded.expires_at \
     where cluster_partitions.holder is null or cluster_partitions.expires_at <= now() \
       or cluster_partitions.holder = excluded.holder \
     returning epoch";

const RENEW_PARTITION: &str = "update cluster_partitions \
     set expires_at = now() + $5 * interval '1 millisecond', applied = coalesce($6, applied) \
     where pipeline = $1 and partition = $2 and holder = $3 and epoch = $4";

const RELEASE_PARTITION: &str = "update cluster_partitions set holder = null, expires_at = now() \
     where pipeline = $1 and partition = $2 and holder = $3 and epoch = $4";

impl Leases {
    /// Every partition lease of every pipeline.
    pub async fn partition_leases(&self) -> Result<Vec<PartitionLease>, StoreError> {
        sqlx::query_as(PARTITION_LEASES)
            .fetch_all(self.pool())
            .await
            .map_err(db)
    }

    /// Takes partition `partition` of `pipeline` if it is free, expired or an earlier
    /// process's of this node: its new epoch, or `None` when another instance holds it.
    pub async fn acquire_partition(
        &self,
        pipeline: &str,
        partition: u16,
    ) -> Result<Option<i64>, StoreError> {
        let taken: Option<(i64,)> = sqlx::query_as(ACQUIRE_PARTITION)
            .bind(pipeline)
            .bind(i32::from(partition))
            .bind(self.node())
            .bind(self.timeout_ms() as f64)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        Ok(taken.map(|(epoch,)| epoch))
    }

    /// Extends the partition lease held under `epoch` (recording `applied`); false when it
    /// is no longer this instance's.
    pub async fn renew_partition(
        &self,
        pipeline: &str,
        partition: u16,
        epoch: i64,
        applied: Option<i64>,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(RENEW_PARTITION)
            .bind(pipeline)
            .bind(i32::from(partition))
            .bind(self.node())
            .bind(epoch)
            .bind(self.timeout_ms() as f64)
            .bind(applied)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Frees the partition lease held under `epoch` at once.
    pub async fn release_partition(
        &self,
        pipeline: &str,
        partition: u16,
        epoch: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(RELEASE_PARTITION)
            .bind(pipeline)
            .bind(i32::from(partition))
            .bind(self.node())
            .bind(epoch)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Removes the partition leases of a deleted pipeline.
    pub async fn forget_partitions(&self, pipeline: &str) -> Result<(), StoreError> {
        sqlx::query("delete from cluster_partitions where pipeline = $1")
            .bind(pipeline)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }
}
