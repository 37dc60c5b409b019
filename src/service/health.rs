//! How the service is doing: readiness (recovery done, every pipeline started, the store
//! answering) and the `/metrics` scrape (the registry's series, the live pipelines' gauges,
//! a deleted pipeline's vanishing with it, and the process's figures).

use super::{Service, ServiceError};
use crate::clock::now_ms;
use crate::metrics::{PARTITION_KEYS, PARTITION_LAG, PipelineView, ProcessStats, Scrape};
use std::sync::atomic::Ordering;

impl Service {
    /// The `/metrics` text.
    pub async fn scrape_metrics(&self) -> String {
        let mut scrape = Scrape::new(&ProcessStats::read());
        for pipeline in self.engine.list() {
            // A pipeline that cannot answer (stopped, failed) has no live gauges this time.
            let Ok(status) = pipeline.status().await else {
                continue;
            };
            let view = PipelineView {
                name: pipeline.name().to_owned(),
                watermark: status.watermark,
                // A leader of spread partitions applies none: their owners publish the keys
                // (`eddy_partition_keys`).
                keys: match pipeline.owned().is_empty() {
                    true => Vec::new(),
                    false => status.keys,
                },
                changed_keys: status.changed_keys,
                queue_depths: pipeline.queue_depths(),
                checkpoint_interval_ms: pipeline.spec().map(|s| s.checkpoint_interval.millis()),
            };
            scrape.pipeline(&view, now_ms());
        }
        if let Some(cluster) = &self.cluster {
            for (name, partition, owning) in cluster.owned_partitions() {
                let labels = || {
                    vec![
                        ("pipeline", name.clone()),
                        ("partition", partition.to_string()),
                    ]
                };
                if let Some(lag) = owning.lag() {
                    scrape.add(&PARTITION_LAG, labels(), lag as f64);
                }
                let Some(status) = owning.status().await else {
                    continue;
                };
                for (operator, keys) in status.keys {
                    let mut labels = labels();
                    labels.push(("operator", operator));
                    scrape.add(&PARTITION_KEYS, labels, keys as f64);
                }
            }
        }
        crate::metrics::render(&scrape)
    }

    /// Whether the service is ready: recovery done, every pipeline started, the store
    /// answering (the first failed pipeline is named, the others listed in its reason).
    pub async fn readiness(&self) -> Result<(), ServiceError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(ServiceError::Recovering);
        }
        let failed = self.engine.failed_list();
        if let Some(first) = failed.first() {
            let mut reason = first.reason.clone();
            if failed.len() > 1 {
                let others: Vec<&str> = failed[1..].iter().map(|f| f.spec.name.as_str()).collect();
                reason += &format!(" (failed too: {})", others.join(", "));
            }
            let name = first.spec.name.clone();
            return Err(ServiceError::PipelineFailed { name, reason });
        }
        self.store.ping().await.map_err(|source| {
            tracing::warn!(reason = %source, next = "readiness answers 503 until the store answers again", "store does not answer");
            ServiceError::StoreSilent { source }
        })
    }
}
