//! Processing time: every pipeline is ticked once a second (its processing-time watermark
//! and timers advance) until the service shuts down.

use super::Service;
use std::time::Duration;

/// Ticks every pipeline once a second until shutdown.
pub fn spawn_ticker(service: &Service) -> tokio::task::JoinHandle<()> {
    let (engine, shutdown) = (service.engine.clone(), service.shutdown.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            for pipeline in engine.list() {
                // A full queue skips this tick; the next one catches up (the clock only grows).
                // The clock is read as the tick is sequenced, in order with the batches.
                if let Err(e) = pipeline.tick_now().await {
                    tracing::debug!(pipeline = pipeline.name(), error = %e, "tick skipped");
                }
            }
        }
    })
}
