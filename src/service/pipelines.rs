//! The lifecycle of one pipeline as the API asks for it: create (with its compensation),
//! delete (its WAL removed off the async threads), restore a checkpoint (also of a pipeline
//! that failed to start), take a checkpoint now, and read its checkpoints.

use super::cluster::Cluster;
use super::{Served, Service, ServiceError};
use crate::checkpoint::CheckpointError;
use crate::engine::Pipeline;
use crate::spec::PipelineSpec;
use crate::store::{CheckpointRecord, Fence, StoreError, Trigger};
use std::sync::Arc;
use std::time::Instant;

impl Service {
    /// Whether one more pipeline may exist (`TooManyPipelines` when not).
    pub fn ensure_room(&self) -> Result<(), ServiceError> {
        let limit = self.config.max_pipelines;
        if self.engine.list().len() + self.engine.failed_list().len() >= limit {
            return Err(ServiceError::TooManyPipelines { limit });
        }
        Ok(())
    }

    /// Stores `spec`, opens its WAL and serves it; if it cannot be opened, the stored
    /// definition is taken back and the pipeline never existed.
    pub async fn create(&self, spec: PipelineSpec) -> Result<Arc<Pipeline>, ServiceError> {
        self.ensure_room()?;
        if let Some(cluster) = &self.cluster {
            return self.create_led(cluster, spec).await;
        }
        self.store
            .insert_pipeline(&spec.name, &spec.document)
            .await?;
        let name = spec.name.clone();
        // A new pipeline recovers nothing, but takes the same path: it opens its WAL.
        let pipeline = match self.checkpoints.recover(spec, None).await {
            Ok(pipeline) => self.launch(pipeline),
            Err(source) => {
                let _ = self.store.delete_pipeline(&name).await;
                return Err(ServiceError::Open { name, source });
            }
        };
        tracing::info!(pipeline = pipeline.name(), "pipeline created");
        Ok(pipeline)
    }

    /// Cluster mode: the lease first (so that no other instance takes the new pipeline
    /// over while it is created), then the definition, the stream, and the pipeline led here.
    async fn create_led(
        &self,
        cluster: &Cluster,
        spec: PipelineSpec,
    ) -> Result<Arc<Pipeline>, ServiceError> {
        let name = spec.name.clone();
        let duplicate = || StoreError::Duplicate { name: name.clone() };
        let taken = Instant::now();
        let Some(epoch) = cluster.leases.acquire(&name).await? else {
            // Led elsewhere: it exists (or is being created there).
            return Err(duplicate().into());
        };
        let exists = self.store.pipelines().await?.iter().any(|p| p.name == name);
        if exists {
            // Another instance's pipeline whose lease had lapsed: its next taker recovers it.
            let _ = cluster.leases.release(&name, epoch).await;
            return Err(duplicate().into());
        }
        // The stream before the definition: a stored pipeline always has its stream (one
        // left by an earlier pipeline of the name is replaced: the lease keeps others out).
        let stream = |e: crate::log::stream::StreamError| ServiceError::Stream {
            name: name.clone(),
            detail: e.to_string(),
        };
        if let Err(e) = cluster.streams.create(&name).await {
            let _ = cluster.leases.forget(&name).await;
            return Err(stream(e));
        }
        if let Err(e) = self.store.insert_pipeline(&name, &spec.document).await {
            let _ = cluster.streams.delete(&name).await;
            let _ = cluster.leases.forget(&name).await;
            return Err(e.into());
        }
        let fence = Fence {
            node: cluster.node().to_owned(),
            epoch,
        };
        let created = self
            .checkpoints
            .recover(spec, Some(fence))
            .await
            .map_err(|source| ServiceError::Open {
                name: name.clone(),
                source,
            });
        let pipeline = match created {
            Ok(pipeline) => self.launch(pipeline),
            Err(e) => {
                let _ = self.store.delete_pipeline(&name).await;
                let _ = cluster.streams.delete(&name).await;
                let _ = cluster.leases.forget(&name).await;
                return Err(e);
            }
        };
        cluster.lead(&name, epoch, taken);
        crate::metrics::lease_changed(
            &name,
            pipeline.spec().map_or(1, |s| s.partitions),
            "acquired",
        );
        tracing::info!(
            pipeline = pipeline.name(),
            epoch,
            "pipeline created and led here"
        );
        Ok(pipeline)
    }

    /// Deletes the pipeline `name` with its state, checkpoints, output and WAL (in cluster
    /// mode: its stream and lease).
    pub async fn delete(&self, name: &str) -> Result<(), ServiceError> {
        self.served(name)?;
        if !self.store.delete_pipeline(name).await? {
            let name = name.to_owned();
            return Err(ServiceError::PipelineNotFound { name });
        }
        if let Some(pipeline) = self.engine.remove(name) {
            pipeline.quiesce().await;
        }
        self.engine.remove_failed(name);
        match &self.cluster {
            Some(cluster) => {
                cluster.unlead(name);
                self.checkpoints.forget_sink(name).await;
                if let Err(e) = cluster.streams.delete(name).await {
                    tracing::warn!(pipeline = %name, reason = %e, next = "a pipeline created under its name deletes it first", "cannot delete the log stream");
                }
                if let Err(e) = cluster.leases.forget(name).await {
                    tracing::warn!(pipeline = %name, reason = %e, next = "the cluster loop removes it", "cannot delete the lease");
                }
                if let Err(e) = cluster.leases.forget_partitions(name).await {
                    tracing::warn!(pipeline = %name, reason = %e, next = "a pipeline created under its name takes them over", "cannot delete the partition leases");
                }
            }
            None => self.remove_wal(name).await,
        }
        crate::metrics::forget_pipeline(name);
        tracing::info!(pipeline = %name, "pipeline deleted");
        Ok(())
    }

    /// Removes the WAL directory of a deleted pipeline on a blocking thread; a failure is
    /// logged (the files stay), the deletion stands.
    async fn remove_wal(&self, name: &str) {
        let wal = self.checkpoints.wal_dir(name);
        let dir = wal.clone();
        let removed = tokio::task::spawn_blocking(move || crate::wal::remove_log(&dir)).await;
        let reason = match removed {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(pipeline = %name, reason = %reason, next = "its files stay on disk; delete the directory by hand", wal = %wal.display(), "cannot delete the WAL directory");
    }

    /// Restores checkpoint `id` of the pipeline `name` and serves the result; a failed
    /// pipeline is restored too (the operator's way out of the failed state). Answers how
    /// many events applied after the checkpoint were discarded.
    pub async fn restore(&self, name: &str, id: i64) -> Result<u64, ServiceError> {
        let (pipeline, discarded_events) = match self.served(name)? {
            Served::Running(old) => self.checkpoints.restore(&old, id).await?,
            Served::Failed(failed) => {
                self.checkpoints
                    .restore_failed(failed.spec.clone(), id)
                    .await?
            }
        };
        self.launch(pipeline);
        tracing::info!(pipeline = %name, checkpoint = id, discarded_events, "checkpoint restored");
        Ok(discarded_events)
    }

    /// Takes a checkpoint of the running pipeline `name` now and waits for it.
    pub async fn checkpoint_now(&self, name: &str) -> Result<CheckpointRecord, ServiceError> {
        let pipeline = self.pipeline(name)?;
        // On its own task: a request that times out or is dropped must not cut a checkpoint
        // short (its row would stay in_progress and the barrier's changes would not go back).
        let checkpoints = self.checkpoints.clone();
        let taken = tokio::spawn(async move { checkpoints.take(&pipeline, Trigger::Manual).await });
        Ok(taken.await??)
    }

    /// Every kept checkpoint of the pipeline `name` (running or failed), newest first; once
    /// the latest completed one has pruned what it made old.
    pub async fn checkpoint_list(&self, name: &str) -> Result<Vec<CheckpointRecord>, ServiceError> {
        self.served(name)?;
        self.checkpoints.settled(name).await;
        Ok(self.store.checkpoints(name).await?)
    }

    /// Checkpoint `id` of the pipeline `name` (running or failed).
    pub async fn checkpoint_meta(
        &self,
        name: &str,
        id: i64,
    ) -> Result<CheckpointRecord, ServiceError> {
        self.served(name)?;
        self.checkpoints.settled(name).await;
        let meta = self.store.checkpoint(name, id).await?;
        Ok(meta.ok_or(CheckpointError::NotFound { id })?)
    }
}
