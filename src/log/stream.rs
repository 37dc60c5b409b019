//! Cluster mode's log: one JetStream stream per pipeline (file storage, `EDDY_NATS_REPLICAS`
//! replicas), named `<cluster>_log_<pipeline>`, subject `<cluster>.log.<pipeline>`. A record is
//! the WAL's own frame (length, CRC-32C, LSN, fields), one message per record, so the stream
//! sequence IS the LSN.
//!
//! Fencing without anything home-made: every publish carries `Nats-Expected-Last-Sequence`
//! (its LSN − 1) and `Nats-Expected-Last-Msg-Id` (its own epoch's record LSN − 1), so the
//! stream is one chain that only the leader at its tip can extend. A leader that takes over
//! reads the chain to its end and appends an [`Record::Epoch`] record there; from then on a
//! stale leader's publishes are refused by JetStream itself (the last message is not its
//! own, whatever its sequence: pipelined publishes cannot slip in behind the mark), and it
//! fails its pipeline instead of acknowledging. Each message also carries
//! its epoch (`Eddy-Epoch`) and the reader skips a record older than an epoch record before it
//! (the chain makes that impossible; the check costs nothing). `Nats-Msg-Id` is `epoch:LSN`,
//! so a publish retried inside the duplicate window is stored once. It must name the epoch:
//! JetStream answers a duplicate id with the first message's ack BEFORE it checks the
//! expected sequence, so a stale leader publishing LSN n under a bare `n` would be told its
//! record was stored when the new leader's record n was.
//!
//! Pipelining: records queue under a mutex (called under the sequencer lock, like the WAL);
//! one task publishes everything queued without waiting, a second awaits the acks in order
//! and runs each record's `after` action. Ingest never waits one round trip per batch; the
//! client coalesces the publishes into few socket writes.

use super::Log;
use crate::store::Fence;
use crate::wal::{After, Record, WalFailed};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{Context, ContextBuilder, PublishAckFuture};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, StorageType, Stream};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// The header that carries a record's epoch.
const EPOCH_HEADER: &str = "Eddy-Epoch";
/// Acks awaited at once (the publisher waits when this many are outstanding).
const IN_FLIGHT: usize = 4096;
/// JetStream's error code for a failed `Nats-Expected-Last-Sequence`.
const WRONG_LAST_SEQUENCE: &str = "10071";

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error)]
#[error("NATS stream {stream}: {action}: {detail}")]
pub struct StreamError {
    pub stream: String,
    pub action: &'static str,
    pub detail: String,
}

/// The streams of one cluster on one NATS connection.
#[derive(Clone)]
pub struct Streams {
    js: Context,
    client: async_nats::Client,
    cluster: String,
    replicas: usize,
}

/// What an opened stream log holds.
pub struct Opened {
    pub log: StreamLog,
    /// Every record after the requested LSN, in order (epoch records included).
    pub records: Vec<(u64, Record)>,
}

impl Streams {
    /// Connects to the NATS servers `urls` (comma-separated).
    pub async fn connect(
        urls: &str,
        cluster: &str,
        replicas: usize,
    ) -> Result<Streams, StreamError> {
        let addrs: Vec<async_nats::ServerAddr> = urls
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<_, _>>()
            .map_err(|e| error("*", "parse EDDY_NATS_URL", e))?;
        let client = async_nats::ConnectOptions::new()
            .name("eddy")
            .connection_timeout(Duration::from_secs(5))
            .connect(addrs)
            .await
            .map_err(|e| error("*", "connect", e))?;
        let js = ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .max_ack_inflight(IN_FLIGHT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Streams {
            js,
            client,
            cluster: cluster.to_owned(),
            replicas,
        })
    }

    /// The largest message the server connected to takes (`None` before it said).
    pub fn max_payload(&self) -> Option<usize> {
        Some(self.client.server_info().max_payload).filter(|&m| m > 0)
    }

    pub(super) fn js(&self) -> &Context {
        &self.js
    }

    pub(super) fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The cluster's name (the prefix of its streams and subjects).
    pub fn cluster_name(&self) -> &str {
        &self.cluster
    }

    /// The NATS connection (for requests between instances).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub(super) fn replicas(&self) -> usize {
        self.replicas
    }

    pub(super) fn names(&self, pipeline: &str) -> (String, String) {
        let cluster = &self.cluster;
        (
            format!("{cluster}_log_{pipeline}"),
            format!("{cluster}.log.{pipeline}"),
        )
    }

    /// Creates the (empty) log and output streams of a new pipeline; streams left by an
    /// earlier pipeline of the same name are deleted first.
    pub async fn create(&self, pipeline: &str) -> Result<(), StreamError> {
        self.delete(pipeline).await?;
        self.create_outputs(pipeline).await?;
        let (name, subject) = self.names(pipeline);
        self.js
            .create_stream(Config {
                name: name.clone(),
                subjects: vec![subject],
                storage: StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Config::default()
            })
            .await
            .map_err(|e| error(&name, "create", e))?;
        Ok(())
    }

    /// Deletes the log and output streams of a deleted pipeline (none is fine).
    pub async fn delete(&self, pipeline: &str) -> Result<(), StreamError> {
        for (name, _) in [self.names(pipeline), self.output_names(pipeline)] {
            match self.js.delete_stream(&name).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(error(&name, "delete", e)),
            }
        }
        Ok(())
    }

    /// Opens the log of `pipeline` as the leader holding `fence`: reads every record from
    /// LSN `from` to the stream's end, appends the epoch record there (reading on if a stale
    /// leader got a record in first), and starts publishing after it. `discard`: a restore
    /// is unfinished; every record in the stream goes (the checkpoint restored covers what
    /// is kept). A stream that is missing or ends before `from` fails the open.
    pub async fn open(
        &self,
        pipeline: &str,
        from: u64,
        fence: &Fence,
        discard: bool,
    ) -> Result<Opened, StreamError> {
        let (name, subject) = self.names(pipeline);
        // A pipeline's stream is created before its definition is stored, so a stored
        // pipeline without its stream has lost its log: that fails the recovery (the pipeline
        // is not served, nothing is made up), as a damaged WAL does.
        let mut stream = match self.js.get_stream(&name).await {
            Ok(stream) => stream,
            Err(e) if not_found(&e) => {
                let detail =
                    "the stream is missing: the records after the latest checkpoint are lost";
                return Err(error(&name, "open", detail));
            }
            Err(e) => return Err(error(&name, "open", e)),
        };
        let last = last_sequence(&mut stream, &name).await?;
        if last + 1 < from {
            let detail = format!(
                "the stream ends at {last}, before the latest checkpoint's LSN {}",
                from - 1
            );
            return Err(error(&name, "open", detail));
        }
        if discard && last > 0 {
            stream
                .purge()
                .sequence(last + 1)
                .await
                .map_err(|e| error(&name, "purge (restore)", e))?;
        }
        let mut records = Vec::new();
        let mut next = from;
        let mut epoch = 0;
        loop {
            let (first, last) = stored(&mut stream, &name).await?;
            let last = last.max(from - 1);
            // What a trim or a restore's discard purged is not waited for.
            read(
                &stream,
                &name,
                next.max(first),
                last,
                &mut epoch,
                &mut records,
            )
            .await?;
            next = last + 1;
            let marker = Record::Epoch { epoch: fence.epoch }.encode(next);
            let publish = message(marker, next, fence.epoch, true);
            let acked = match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(ack) if ack.sequence == next => break,
                Ok(ack) => {
                    let detail = format!("epoch record stored at {} not {next}", ack.sequence);
                    return Err(error(&name, "fence", detail));
                }
                // A record went in after our read (a stale leader's, never yet fenced): read
                // on and append after it.
                Err(e) if e.contains(WRONG_LAST_SEQUENCE) || e.contains("wrong last") => {}
                Err(e) => return Err(error(&name, "fence", e)),
            }
        }
        let log = StreamLog::start(self.js.clone(), name, subject, next + 1, fence.epoch);
        Ok(Opened { log, records })
    }
}

/// Whether JetStream said the stream does not exist.
pub(super) fn not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    matches!(e.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

async fn last_sequence(stream: &mut Stream, name: &str) -> Result<u64, StreamError> {
    Ok(stored(stream, name).await?.1)
}

/// The (first, last) sequence the stream holds; `first > last` when it holds nothing (a
/// purge keeps the last sequence).
pub(super) async fn stored(stream: &mut Stream, name: &str) -> Result<(u64, u64), StreamError> {
    let info = stream.info().await.map_err(|e| error(name, "info", e))?;
    let state = &info.state;
    if state.messages == 0 {
        return Ok((state.last_sequence + 1, state.last_sequence));
    }
    Ok((state.first_sequence, state.last_sequence))
}

/// Reads records `from..=last` (those still stored) into `records`, skipping any older than
/// an epoch record before it.
async fn read(
    stream: &Stream,
    name: &str,
    from: u64,
    last: u64,
    epoch: &mut i64,
    records: &mut Vec<(u64, Record)>,
) -> Result<(), StreamError> {
    if from > last {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..pull::Config::default()
        })
        .await
        .map_err(|e| error(name, "read", e))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .map_err(|e| error(name, "read", e))?;
    // Every sequence in from..=last is stored (only prefixes are ever purged): a silence this
    // long is a server that stopped answering, not a gap.
    let silence = Duration::from_secs(30);
    while let Some(message) = tokio::time::timeout(silence, messages.next())
        .await
        .map_err(|_| error(name, "read", "no message for 30 s"))?
    {
        let message = message.map_err(|e| error(name, "read", e))?;
        let seq = message
            .info()
            .map_err(|e| error(name, "read", e))?
            .stream_sequence;
        if seq > last {
            break;
        }
        match logged(name, &message, seq, epoch)? {
            Some(record) => records.push(record),
            None => {
                tracing::warn!(stream = %name, seq, epoch = *epoch, "record of a stale leader skipped")
            }
        }
        if seq == last {
            break;
        }
    }
    Ok(())
}

/// The record of the log message at stream sequence `seq` and its LSN (which must be `seq`),
/// or `None` for a record of a leader older than an epoch record before it; `epoch` is the
/// newest epoch record read so far, raised by this one if it is one.
pub(super) fn logged(
    name: &str,
    message: &async_nats::Message,
    seq: u64,
    epoch: &mut i64,
) -> Result<Option<(u64, Record)>, StreamError> {
    let (lsn, record, _) =
        Record::decode(&message.payload).map_err(|e| error(name, "decode", e))?;
    if lsn != seq {
        let detail = format!("record at sequence {seq} says LSN {lsn}");
        return Err(error(name, "decode", detail));
    }
    let of = message
        .headers
        .as_ref()
        .and_then(|h| h.get(EPOCH_HEADER))
        .and_then(|v| v.as_str().parse::<i64>().ok())
        .unwrap_or(0);
    if let Record::Epoch { epoch: new } = record {
        *epoch = (*epoch).max(new);
        return Ok(Some((lsn, record)));
    }
    Ok((of >= *epoch).then_some((lsn, record)))
}

/// The message of record `lsn` under `epoch`: it must follow record `lsn - 1` and, unless it
/// is the epoch mark (which follows whatever it read), that record must be this epoch's own.
fn message(bytes: Vec<u8>, lsn: u64, epoch: i64, mark: bool) -> PublishMessage {
    let message = PublishMessage::build()
        .payload(Bytes::from(bytes))
        .message_id(format!("{epoch}:{lsn}"))
        .expected_last_sequence(lsn - 1)
        .header(EPOCH_HEADER, epoch.to_string().as_str());
    if mark {
        return message;
    }
    message.expected_last_message_id(format!("{epoch}:{}", lsn - 1))
}

pub(crate) fn error(stream: &str, action: &'static str, e: impl std::fmt::Display) -> StreamError {
    StreamError {
        stream: stream.to_owned(),
        action,
        detail: e.to_string(),
    }
}

struct Entry {
    lsn: u64,
    /// Empty: an after-action with no record.
    bytes: Vec<u8>,
    after: After,
}

struct Queue {
    entries: Vec<Entry>,
    next_lsn: u64,
    closing: bool,
    failed: Option<WalFailed>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Shared {
    fn fail(&self, reason: String) -> WalFailed {
        let mut queue = self.queue.lock().expect("log lock");
        queue.failed.get_or_insert(WalFailed(reason)).clone()
    }
}

/// An open stream log (the leader's).
pub struct StreamLog {
    shared: Arc<Shared>,
    trim: mpsc::UnboundedSender<u64>,
}

/// A record published, its ack still to come.
enum Pending {
    Ack(u64, PublishAckFuture, After),
    /// An after-action with no record, or one whose publish failed.
    Done(Result<(), WalFailed>, After),
}

impl StreamLog {
    fn start(js: Context, name: String, subject: String, next_lsn: u64, epoch: i64) -> StreamLog {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                entries: Vec::new(),
                next_lsn,
                closing: false,
                failed: None,
            }),
            wake: Notify::new(),
        });
        let (acks, pending) = mpsc::channel(IN_FLIGHT);
        tokio::spawn(publish(js.clone(), subject, epoch, shared.clone(), acks));
        tokio::spawn(await_acks(name.clone(), shared.clone(), pending));
        let (trim, trims) = mpsc::unbounded_channel();
        tokio::spawn(trimmer(js, name, trims));
        StreamLog { shared, trim }
    }

    fn queue(&self, lsn: Option<u64>, bytes: Vec<u8>, after: After) {
        let mut queue = self.shared.queue.lock().expect("log lock");
        if let Some(failed) = queue.failed.clone() {
            drop(queue);
            after(Err(failed));
            return;
        }
        let lsn = lsn.unwrap_or(0);
        queue.entries.push(Entry { lsn, bytes, after });
        drop(queue);
        self.shared.wake.notify_one();
    }
}

impl Log for StreamLog {
    fn append(&self, record: &Record, after: After) -> u64 {
        let lsn = {
            let mut queue = self.shared.queue.lock().expect("log lock");
            let lsn = queue.next_lsn;
            if queue.failed.is_none() {
                queue.next_lsn += 1;
            }
            lsn
        };
        self.queue(Some(lsn), record.encode(lsn), after);
        lsn
    }

    fn after_queued(&self, after: After) {
        self.queue(None, Vec::new(), after);
    }

    fn last_lsn(&self) -> u64 {
        self.shared.queue.lock().expect("log lock").next_lsn - 1
    }

    /// Messages before the oldest retained checkpoint go (a purge up to it, on its own task).
    fn trim(&self, _latest: u64, oldest: u64) {
        let _ = self.trim.send(oldest);
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        self.shared.queue.lock().expect("log lock").closing = true;
        self.shared.wake.notify_one();
    }
}

/// Publishes everything queued, in LSN order, without waiting for acks.
async fn publish(
    js: Context,
    subject: String,
    epoch: i64,
    shared: Arc<Shared>,
    acks: mpsc::Sender<Pending>,
) {
    loop {
        let entries = {
            let mut queue = shared.queue.lock().expect("log lock");
            if queue.entries.is_empty() && queue.closing {
                return;
            }
            std::mem::take(&mut queue.entries)
        };
        if entries.is_empty() {
            shared.wake.notified().await;
            continue;
        }
        for Entry { lsn, bytes, after } in entries {
            let failed = shared.queue.lock().expect("log lock").failed.clone();
            let pending = match failed {
                Some(failed) => Pending::Done(Err(failed), after),
                None if bytes.is_empty() => Pending::Done(Ok(()), after),
                None => match js
                    .send_publish(subject.clone(), message(bytes, lsn, epoch, false))
                    .await
                {
                    Ok(ack) => Pending::Ack(lsn, ack, after),
                    Err(e) => Pending::Done(Err(shared.fail(format!("publish: {e}"))), after),
                },
            };
            if let Err(mpsc::error::SendError(pending)) = acks.send(pending).await {
                let failed = shared.fail("log closed".into());
                match pending {
                    Pending::Ack(_, _, after) | Pending::Done(_, after) => after(Err(failed)),
                }
            }
        }
    }
}

/// Awaits each ack in order and runs its record's after-action; the first failure fails the
/// log (every later record is answered as failed: it may be stored, and a retry with its
/// idempotency key finds it once the pipeline is recovered).
async fn await_acks(name: String, shared: Arc<Shared>, mut pending: mpsc::Receiver<Pending>) {
    while let Some(next) = pending.recv().await {
        let (outcome, after) = match next {
            // An action after a record that failed fails too.
            Pending::Done(Ok(()), after) => {
                let failed = shared.queue.lock().expect("log lock").failed.clone();
                (failed.map_or(Ok(()), Err), after)
            }
            Pending::Done(outcome, after) => (outcome, after),
            Pending::Ack(lsn, ack, after) => {
                let failed = shared.queue.lock().expect("log lock").failed.clone();
                let outcome =
                    match (failed, ack.await) {
                        (Some(failed), _) => Err(failed),
                        (None, Ok(ack)) if ack.sequence == lsn => Ok(()),
                        (None, Ok(ack)) => Err(shared
                            .fail(format!("record {lsn} stored at sequence {}", ack.sequence))),
                        (None, Err(e)) => Err(shared.fail(format!("ack of record {lsn}: {e}"))),
                    };
                if let Err(e) = &outcome {
                    tracing::error!(stream = %name, lsn, reason = %e, next = "the pipeline fails here and is recovered from its checkpoint and stream", "log append failed");
                }
                (outcome, after)
            }
        };
        after(outcome);
    }
}

/// Purges the stream up to each LSN sent (the newest one waiting wins).
async fn trimmer(js: Context, name: String, mut trims: mpsc::UnboundedReceiver<u64>) {
    while let Some(mut upto) = trims.recv().await {
        while let Ok(newer) = trims.try_recv() {
            upto = upto.max(newer);
        }
        if upto == 0 {
            continue;
        }
        let purged = match js.get_stream(&name).await {
            Ok(stream) => stream.purge().sequence(upto + 1).await.map(|_| ()),
            Err(e) => {
                tracing::warn!(stream = %name, reason = %e, "cannot trim the log stream");
                continue;
            }
        };
        if let Err(e) = purged {
            tracing::warn!(stream = %name, upto, reason = %e, next = "the next completed checkpoint trims it", "cannot trim the log stream");
        }
    }
}
