//! Cluster mode with partitions spread: a partition's owner follows the pipeline's log
//! stream from a sequence on, record by record, for as long as it owns the partition (an
//! ephemeral ordered pull consumer, deleted when the follower is dropped). Records of a stale
//! leader after a newer epoch record are skipped, as the leader's own read skips them.

use super::stream::{StreamError, Streams, error, not_found};
use crate::wal::Record;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use std::time::Duration;

/// The pipeline's log read from a sequence on, as it grows.
pub struct Follower {
    messages: pull::Stream,
    consumer: Option<(Stream, String)>,
    name: String,
    epoch: i64,
    /// Messages the stream held beyond the newest one read, when it was read.
    pending: u64,
}

impl Streams {
    /// Follows the log of `pipeline` from sequence `from` (or the first one stored, when a
    /// trim or a restore purged it). A missing stream is an error.
    pub async fn follow(&self, pipeline: &str, from: u64) -> Result<Follower, StreamError> {
        let (name, _) = self.names(pipeline);
        let stream = match self.js().get_stream(&name).await {
            Ok(stream) => stream,
            Err(e) if not_found(&e) => return Err(error(&name, "follow", "the stream is missing")),
            Err(e) => return Err(error(&name, "follow", e)),
        };
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                num_replicas: 1,
                memory_storage: true,
                ..pull::Config::default()
            })
            .await
            .map_err(|e| error(&name, "follow", e))?;
        let consumer_name = consumer.cached_info().name.clone();
        let pending = consumer.cached_info().num_pending;
        let messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| error(&name, "follow", e))?;
        Ok(Follower {
            messages,
            consumer: Some((stream, consumer_name)),
            name,
            epoch: 0,
            pending,
        })
    }
}

impl Streams {
    /// The sequence of the newest record in `pipeline`'s log (0: none yet).
    pub async fn log_tip(&self, pipeline: &str) -> Result<u64, StreamError> {
        let (name, _) = self.names(pipeline);
        let mut stream = self
            .js()
            .get_stream(&name)
            .await
            .map_err(|e| error(&name, "info", e))?;
        Ok(super::stream::stored(&mut stream, &name).await?.1)
    }
}

impl Follower {
    /// Messages the stream held beyond the newest one read, when it was read.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// The next record and its LSN; waits for one. `None`: the consumer ended.
    pub async fn next(&mut self) -> Result<Option<(u64, Record)>, StreamError> {
        loop {
            let Some(message) = self.messages.next().await else {
                return Ok(None);
            };
            let message = message.map_err(|e| error(&self.name, "follow", e))?;
            let info = message.info().map_err(|e| error(&self.name, "follow", e))?;
            let seq = info.stream_sequence;
            self.pending = info.pending;
            if let Some(record) = super::stream::logged(&self.name, &message, seq, &mut self.epoch)?
            {
                return Ok(Some(record));
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let (Some((stream, consumer)), Ok(runtime)) =
            (self.consumer.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let _ = stream.delete_consumer(&consumer).await;
            });
        }
    }
}
