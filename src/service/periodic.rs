//! Serving a pipeline with its periodic checkpoint loop (backing off while checkpoints fail),
//! and the final checkpoints at shutdown. What a checkpoint is and how one is taken is the
//! checkpointer's (`crate::checkpoint`); when one is taken is decided here.

use super::Service;
use crate::checkpoint::CheckpointError;
use crate::engine::Pipeline;
use crate::store::Trigger;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Service {
    /// Serves `pipeline` (replacing one of its name) and checkpoints it periodically.
    pub fn launch(&self, pipeline: Pipeline) -> Arc<Pipeline> {
        let pipeline = Arc::new(pipeline);
        crate::metrics::pipeline_served(pipeline.name());
        self.engine.insert(pipeline.clone());
        let interval = pipeline.spec().map_or(Duration::from_secs(10), |s| {
            Duration::from_millis(s.checkpoint_interval.millis().max(1) as u64)
        });
        let (weak, closed) = (Arc::downgrade(&pipeline), pipeline.closed());
        tokio::spawn(self.clone().periodic(weak, closed, interval));
        let spread = pipeline.spec().is_some_and(|s| s.partitions > 1);
        if let (Some(cluster), true) = (&self.cluster, spread && pipeline.fence().is_some()) {
            self.serve_lead(cluster, pipeline.clone());
        }
        pipeline
    }

    /// Checkpoints the pipeline every `interval` until it closes, is dropped, or the service
    /// shuts down.
    async fn periodic(self, weak: Weak<Pipeline>, closed: CancellationToken, interval: Duration) {
        // Failed in a row: the next attempt waits longer, so that while the store is down
        // the slot is mostly free for a manual trigger (which then says why it fails).
        let mut failures = 0;
        loop {
            let pause = crate::checkpoint::periodic_delay(interval, failures);
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            match self.checkpoints.take(&pipeline, Trigger::Periodic).await {
                Ok(_) => failures = 0,
                Err(e @ (CheckpointError::Running { .. } | CheckpointError::Restoring { .. })) => {
                    tracing::debug!(pipeline = pipeline.name(), error = %e, "periodic checkpoint skipped");
                }
                // Counted, logged and listed where it failed.
                Err(_) => failures = failures.saturating_add(1),
            }
        }
    }

    /// Takes a final checkpoint of every pipeline (at shutdown).
    pub async fn checkpoint_all(&self, trigger: Trigger) {
        for pipeline in self.engine.list() {
            match self.checkpoints.take(&pipeline, trigger).await {
                Ok(meta) => tracing::info!(
                    pipeline = pipeline.name(),
                    checkpoint = meta.id,
                    "final checkpoint"
                ),
                // A failure was logged (once, as a warning) where it happened.
                Err(e) => tracing::info!(
                    pipeline = pipeline.name(),
                    error = %e,
                    "final checkpoint not taken; the next start replays the WAL"
                ),
            }
        }
    }
}
