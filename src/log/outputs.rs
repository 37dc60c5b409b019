//! Cluster mode's output feed: one JetStream stream per pipeline (file storage,
//! `EDDY_NATS_REPLICAS` replicas), named `<cluster>_out_<pipeline>`, subject
//! `<cluster>.out.<pipeline>`. A message is one output record's JSON, and its stream sequence
//! IS the record's output offset; an offset with no record (a restore dropped it and offsets
//! are never reused) is an empty message, which readers skip.
//!
//! The leader publishes (`checkpoint::sink`); any instance reads (`GET …/output` and
//! `…/output/stream`), so the feed needs no leader to be read. Publishes are fenced as the
//! log's are: `Nats-Expected-Last-Sequence` (offset − 1) on every one and, after the first of
//! a leader's epoch, `Nats-Expected-Last-Msg-Id` of its own previous one, so a stale leader
//! cannot add anything once the new leader has published; `Nats-Msg-Id` is `epoch:offset`,
//! so a publish retried inside the duplicate window is stored once. Records published twice
//! across a failover cannot happen: the new leader starts after the stream's last sequence.

use super::stream::{StreamError, Streams, error, not_found};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{
    Config, LastRawMessageErrorKind, RawMessageErrorKind, StorageType, Stream,
};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

/// The header that carries the epoch of the leader that published a record.
const EPOCH_HEADER: &str = "Eddy-Epoch";
/// The header that carries a partition record's position among its partition's records.
const POSITION_HEADER: &str = "Eddy-Position";
/// The header that carries a partition record's generation (the LSN of the newest restore
/// record its owner had read).
const GENERATION_HEADER: &str = "Eddy-Generation";

/// One pipeline's output stream.
#[derive(Clone)]
pub struct OutputStream {
    streams: Streams,
    stream: Stream,
    name: String,
    subject: String,
}

/// Why a publish was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The stream's last message is not the one this publish follows: another leader
    /// published (this one may be stale).
    #[error("output stream {stream}: offset {offset} does not follow the stream's last record")]
    NotNext { stream: String, offset: u64 },
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl Streams {
    pub(super) fn output_names(&self, pipeline: &str) -> (String, String) {
        let cluster = self.cluster();
        (
            format!("{cluster}_out_{pipeline}"),
            format!("{cluster}.out.{pipeline}"),
        )
    }

    /// Creates the (empty) output stream of a new pipeline.
    pub(super) async fn create_outputs(&self, pipeline: &str) -> Result<(), StreamError> {
        let (name, subject) = self.output_names(pipeline);
        self.js()
            .create_stream(Config {
                name: name.clone(),
                // `<subject>.<partition>`: records of a partition's owner (pipelines whose
                // partitions are spread over instances).
                subjects: vec![subject.clone(), format!("{subject}.*")],
                storage: StorageType::File,
                num_replicas: self.replicas(),
                duplicate_window: Duration::from_secs(120),
                ..Config::default()
            })
            .await
            .map_err(|e| error(&name, "create", e))?;
        Ok(())
    }

    /// The output stream of `pipeline`; a pipeline without one has lost its feed (an error).
    pub async fn outputs(&self, pipeline: &str) -> Result<OutputStream, StreamError> {
        let (name, subject) = self.output_names(pipeline);
        let stream = match self.js().get_stream(&name).await {
            Ok(stream) => stream,
            Err(e) if not_found(&e) => {
                return Err(error(&name, "open", "the output stream is missing"));
            }
            Err(e) => return Err(error(&name, "open", e)),
        };
        Ok(OutputStream {
            streams: self.clone(),
            stream,
            name,
            subject,
        })
    }
}

impl OutputStream {
    /// The stream's name (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The (first, last) offset the stream holds; `first > last` when it holds nothing.
    pub async fn stored(&mut self) -> Result<(u64, u64), StreamError> {
        super::stream::stored(&mut self.stream, &self.name).await
    }

    /// The epoch that published offset `offset` (`None`: not stored).
    pub async fn epoch_of(&self, offset: u64) -> Result<Option<i64>, StreamError> {
        match self.stream.get_raw_message(offset).await {
            Ok(message) => Ok(message
                .headers
                .get(EPOCH_HEADER)
                .and_then(|v| v.as_str().parse().ok())),
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(error(&self.name, "read", e)),
        }
    }

    /// Queues record `offset` (its JSON; empty for an offset without a record) under
    /// `epoch`. `follows_own`: the stream's last message is this epoch's record `offset − 1`
    /// (false for a leader's first publish, which follows whatever is there).
    pub async fn publish(
        &self,
        offset: u64,
        payload: Bytes,
        epoch: i64,
        follows_own: bool,
    ) -> Result<PublishAckFuture, StreamError> {
        let mut message = PublishMessage::build()
            .payload(payload)
            .message_id(format!("{epoch}:{offset}"))
            .expected_last_sequence(offset - 1)
            .header(EPOCH_HEADER, epoch.to_string().as_str());
        if follows_own {
            message = message.expected_last_message_id(format!("{epoch}:{}", offset - 1));
        }
        self.streams
            .js()
            .send_publish(self.subject.clone(), message)
            .await
            .map_err(|e| error(&self.name, "publish", e))
    }

    /// Waits for the ack of record `offset`'s publish.
    pub async fn acked(&self, offset: u64, ack: PublishAckFuture) -> Result<(), PublishError> {
        match ack.await {
            Ok(ack) if ack.sequence == offset => Ok(()),
            Ok(ack) => Err(error(
                &self.name,
                "publish",
                format!("record {offset} stored at {}", ack.sequence),
            )
            .into()),
            Err(e)
                if matches!(
                    e.kind(),
                    PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId
                ) =>
            {
                Err(PublishError::NotNext {
                    stream: self.name.clone(),
                    offset,
                })
            }
            Err(e) => Err(error(&self.name, "publish", e).into()),
        }
    }

    /// Queues a record of partition `partition` (its JSON without the offset, which is the
    /// sequence the stream gives it): the partition's record number `position`, of the
    /// pipeline's restore `generation`. The message id names all three, so a record made
    /// again (by a new owner replaying the log) within the duplicate window is stored once.
    pub async fn publish_partition(
        &self,
        partition: u16,
        generation: u64,
        position: u64,
        payload: Bytes,
    ) -> Result<PublishAckFuture, StreamError> {
        let message = PublishMessage::build()
            .payload(payload)
            .message_id(format!("{generation}:{partition}:{position}"))
            .header(POSITION_HEADER, position.to_string().as_str())
            .header(GENERATION_HEADER, generation.to_string().as_str());
        self.streams
            .js()
            .send_publish(format!("{}.{partition}", self.subject), message)
            .await
            .map_err(|e| error(&self.name, "publish", e))
    }

    /// The newest record of partition `partition`: its sequence and position (`None`: it
    /// has none).
    pub async fn last_of_partition(
        &self,
        partition: u16,
    ) -> Result<Option<(u64, u64)>, StreamError> {
        let subject = format!("{}.{partition}", self.subject);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let position = message
                    .headers
                    .get(POSITION_HEADER)
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0);
                Ok(Some((message.sequence, position)))
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(error(&self.name, "read", e)),
        }
    }

    /// Deletes partition `partition`'s records after position `position` made before the
    /// restore of generation `generation` (the restore dropped them; records of that
    /// generation or a later one were made after it), reading the partition's records stored
    /// since `since` (epoch ms: when the restored checkpoint began, so that every record
    /// after its position is among them); answers how many went. (The last message of a
    /// subject is not looked up: nats-server 2.9 can lose track of it once it is deleted.)
    pub async fn delete_partition_after(
        &self,
        partition: u16,
        position: u64,
        generation: u64,
        since: i64,
    ) -> Result<u64, StreamError> {
        let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(since.saturating_sub(60_000)) * 1_000_000,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let subject = format!("{}.{partition}", self.subject);
        let by_time = DeliverPolicy::ByStartTime { start_time };
        let mut feed = self.feed_from(by_time, subject).await?;
        let mut doomed = Vec::new();
        while !feed.caught_up() {
            let Some(message) = feed.next_message().await? else {
                break;
            };
            let header = |name: &str| -> u64 {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0)
            };
            if header(POSITION_HEADER) > position && header(GENERATION_HEADER) < generation {
                let info = message.info().map_err(|e| error(&self.name, "read", e))?;
                doomed.push(info.stream_sequence);
            }
        }
        drop(feed);
        for sequence in &doomed {
            self.stream
                .delete_message(*sequence)
                .await
                .map_err(|e| error(&self.name, "delete", e))?;
        }
        Ok(doomed.len() as u64)
    }

    /// Deletes every record after `after` up to `upto` (a restore dropped them); empty
    /// messages are left. Answers how many went.
    pub async fn delete_after(&self, after: u64, upto: u64) -> Result<u64, StreamError> {
        let mut feed = self.feed(Some(after)).await?;
        let mut doomed = Vec::new();
        while !feed.caught_up() {
            let Some((offset, payload)) = feed.next().await? else {
                break;
            };
            if offset > upto {
                break;
            }
            if !payload.is_empty() {
                doomed.push(offset);
            }
        }
        let stream = &self.stream;
        let deleted = futures::stream::iter(doomed)
            .map(|offset| async move { stream.delete_message(offset).await.map(|_| ()) })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        let mut count = 0;
        for outcome in deleted {
            outcome.map_err(|e| error(&self.name, "delete", e))?;
            count += 1;
        }
        Ok(count)
    }

    /// Purges all but the newest `keep` records (what the feed no longer keeps).
    pub async fn purge_keep(&self, keep: u64) -> Result<(), StreamError> {
        self.stream
            .purge()
            .keep(keep)
            .await
            .map(|_| ())
            .map_err(|e| error(&self.name, "purge", e))
    }

    /// Purges everything before offset `first` (what the feed no longer keeps).
    pub async fn purge_before(&self, first: u64) -> Result<(), StreamError> {
        self.stream
            .purge()
            .sequence(first)
            .await
            .map(|_| ())
            .map_err(|e| error(&self.name, "purge", e))
    }

    /// The messages after offset `after` (default: from the first stored), as they are
    /// stored now and as they come.
    pub async fn feed(&self, after: Option<u64>) -> Result<OutputFeed, StreamError> {
        let deliver_policy = match after {
            Some(after) => DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            None => DeliverPolicy::All,
        };
        self.feed_from(deliver_policy, String::new()).await
    }
}

impl OutputStream {
    /// The messages from `deliver_policy` on, of `filter_subject` only (empty: every one),
    /// through an ephemeral consumer deleted when the feed is dropped.
    async fn feed_from(
        &self,
        deliver_policy: DeliverPolicy,
        filter_subject: String,
    ) -> Result<OutputFeed, StreamError> {
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                deliver_policy,
                filter_subject,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                num_replicas: 1,
                memory_storage: true,
                ..pull::Config::default()
            })
            .await
            .map_err(|e| error(&self.name, "read", e))?;
        let pending = consumer.cached_info().num_pending;
        let consumer_name = consumer.cached_info().name.clone();
        let messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .messages()
            .await
            .map_err(|e| error(&self.name, "read", e))?;
        Ok(OutputFeed {
            messages,
            pending,
            consumer: Some((self.stream.clone(), consumer_name)),
            name: self.name.clone(),
        })
    }
}

/// An output stream read from an offset on: an ephemeral consumer, deleted when dropped.
pub struct OutputFeed {
    messages: pull::Stream,
    /// Messages stored after the last one read when it was read.
    pending: u64,
    consumer: Option<(Stream, String)>,
    name: String,
}

impl OutputFeed {
    /// Whether every message stored when the last one was read has been read.
    pub fn caught_up(&self) -> bool {
        self.pending == 0
    }

    /// The next message: its offset and payload (empty: an offset without a record);
    /// waits for one when caught up. `None`: the feed ended.
    pub async fn next(&mut self) -> Result<Option<(u64, Bytes)>, StreamError> {
        let Some(message) = self.next_message().await? else {
            return Ok(None);
        };
        let info = message.info().map_err(|e| error(&self.name, "read", e))?;
        let offset = info.stream_sequence;
        Ok(Some((offset, message.payload.clone())))
    }

    /// The next message as stored (headers too); waits for one when caught up.
    async fn next_message(
        &mut self,
    ) -> Result<Option<async_nats::jetstream::Message>, StreamError> {
        let Some(message) = self.messages.next().await else {
            return Ok(None);
        };
        let message = message.map_err(|e| error(&self.name, "read", e))?;
        let info = message.info().map_err(|e| error(&self.name, "read", e))?;
        self.pending = info.pending;
        Ok(Some(message))
    }
}

impl Drop for OutputFeed {
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
