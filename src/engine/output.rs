//! The output log of a pipeline: collects each batch's emissions from every shard it was sent
//! to, orders them canonically, numbers them, and keeps the newest records for readers.
//!
//! Invariant: batches are finalised in sequence order, and within a batch records are ordered
//! by (step, phase, operator, key), each key's own records in emission order. That order is a
//! function of the input alone, so offsets do not depend on the number of shards and recur
//! identically when the WAL is reapplied at recovery.

use super::operator::Emission;
use crate::state::Key;
use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// One output record.
#[derive(Clone, Debug)]
pub struct OutputRecord {
    pub offset: u64,
    pub operator: Arc<str>,
    pub key: Key,
    /// `session_closed`, `window_closed`, or a custom operator's kind.
    pub kind: &'static str,
    /// The record's value, as compact JSON text.
    pub value: Box<RawValue>,
}

impl PartialEq for OutputRecord {
    fn eq(&self, other: &OutputRecord) -> bool {
        (self.offset, &self.operator, &self.key, self.kind)
            == (other.offset, &other.operator, &other.key, other.kind)
            && self.value.get() == other.value.get()
    }
}

impl OutputRecord {
    /// A record from its JSON (as a checkpoint stores it); `None` if it is not one of ours.
    pub fn from_json(json: &str, operators: &[String]) -> Option<OutputRecord> {
        let v: Value = serde_json::from_str(json).ok()?;
        let name = v.get("operator")?.as_str()?;
        let operator: Arc<str> = operators
            .iter()
            .find(|o| *o == name)
            .map(|o| Arc::from(o.as_str()))?;
        let kind = match v.get("type")?.as_str()? {
            "session_closed" => "session_closed",
            "window_closed" => "window_closed",
            // Kinds of user operators are few and live as long as the process.
            other => Box::leak(other.to_owned().into_boxed_str()),
        };
        Some(OutputRecord {
            offset: v.get("offset")?.as_u64()?,
            operator,
            key: v.get("key")?.as_str()?.into(),
            kind,
            value: serde_json::value::to_raw_value(v.get("value")?).ok()?,
        })
    }
}

impl Serialize for OutputRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut r = s.serialize_struct("OutputRecord", 5)?;
        r.serialize_field("offset", &self.offset)?;
        r.serialize_field("operator", &*self.operator)?;
        r.serialize_field("key", self.key.as_str())?;
        r.serialize_field("type", self.kind)?;
        r.serialize_field("value", &self.value)?;
        r.end()
    }
}

struct Pending {
    seq: u64,
    remaining: usize,
    emitted: Vec<Emission>,
    /// Fires with the newest output offset once the batch is in the log.
    done: Option<oneshot::Sender<u64>>,
}

/// A batch whose records are in the log but not yet in the output sink (cluster mode).
struct Unpublished {
    /// The newest record when the batch was finalised: it waits until the sink has that.
    newest: u64,
    seq: u64,
    done: Option<oneshot::Sender<u64>>,
    /// What `done` answers (the newest output offset).
    offset: u64,
}

impl Unpublished {
    /// Answers the batch; the sequence number its flush reaches.
    fn answer(mut self) -> u64 {
        if let Some(done) = self.done.take() {
            let _ = done.send(self.offset);
        }
        self.seq + 1
    }
}

struct Log {
    pending: VecDeque<Pending>,
    /// Finalised batches waiting for the sink, in sequence order.
    unpublished: VecDeque<Unpublished>,
    records: VecDeque<Arc<OutputRecord>>,
    next_offset: u64,
    /// Offset of the newest record appended (0 before any).
    newest: u64,
    /// Records up to here are in the output sink; `u64::MAX` without a sink.
    published: u64,
    /// Records up to here are in a checkpoint; newer ones are never trimmed.
    persisted: u64,
    /// The log can no longer advance (its WAL failed).
    failed: bool,
}

/// A pipeline's output log.
pub struct Output {
    log: Mutex<Log>,
    last_offset: watch::Sender<u64>,
    /// Sequence number of the newest batch in the log (+1; 0 before any), and in the sink
    /// when there is one.
    flushed: watch::Sender<u64>,
    operators: Vec<Arc<str>>,
    retain: usize,
    /// Per operator: output records appended (empty: not counted).
    records_out: Vec<metrics::Counter>,
}

impl Output {
    /// An empty log for a pipeline with these operators, keeping the newest `retain` records.
    pub(crate) fn new(operators: Vec<Arc<str>>, retain: usize) -> Output {
        let log = Log {
            pending: VecDeque::new(),
            unpublished: VecDeque::new(),
            records: VecDeque::new(),
            next_offset: 1,
            newest: 0,
            published: u64::MAX,
            persisted: u64::MAX,
            failed: false,
        };
        Output {
            log: Mutex::new(log),
            last_offset: watch::channel(0).0,
            flushed: watch::channel(0).0,
            operators,
            retain: retain.max(1),
            records_out: Vec::new(),
        }
    }

    /// Counts each operator's appended records into `records_out` (in operator order).
    pub(crate) fn counting(self, records_out: Vec<metrics::Counter>) -> Output {
        Output {
            records_out,
            ..self
        }
    }

    /// Announces batch `seq`, sent to `parts` shards; the receiver fires once it is applied
    /// and its records are in the log. Called in sequence order (under the sequencer lock).
    pub(crate) fn register(&self, seq: u64, parts: usize) -> oneshot::Receiver<u64> {
        let (tx, rx) = oneshot::channel();
        let mut log = self.log.lock().expect("output lock");
        if log.failed {
            return rx;
        }
        log.pending.push_back(Pending {
            seq,
            remaining: parts,
            emitted: Vec::new(),
            done: Some(tx),
        });
        self.flush(&mut log);
        rx
    }

    /// A shard finished its part of batch `seq`.
    pub(crate) fn complete(&self, seq: u64, mut emitted: Vec<Emission>) {
        let mut log = self.log.lock().expect("output lock");
        if log.failed {
            return;
        }
        let front = log.pending.front().map_or(seq, |p| p.seq);
        let pending = &mut log.pending[(seq - front) as usize];
        debug_assert_eq!(pending.seq, seq);
        pending.remaining -= 1;
        pending.emitted.append(&mut emitted);
        self.flush(&mut log);
    }

    /// The WAL failed: every waiting batch fails, and so does every later one.
    pub(crate) fn fail(&self) {
        let mut log = self.log.lock().expect("output lock");
        log.failed = true;
        log.pending.clear();
        log.unpublished.clear();
    }

    fn flush(&self, log: &mut Log) {
        let mut appended = false;
        let mut flushed = None;
        while log.pending.front().is_some_and(|p| p.remaining == 0) {
            let mut batch = log.pending.pop_front().expect("checked");
            // Stable: a key lives in one shard, so its own records keep their order.
            batch.emitted.sort_by(|a, b| {
                (a.step, a.phase, a.operator, &a.key).cmp(&(b.step, b.phase, b.operator, &b.key))
            });
            for e in batch.emitted {
                if let Some(counter) = self.records_out.get(usize::from(e.operator)) {
                    counter.increment(1);
                }
                let record = OutputRecord {
                    offset: log.next_offset,
                    operator: self.operators[usize::from(e.operator)].clone(),
                    key: e.key,
                    kind: e.kind,
                    value: e.value,
                };
                log.newest = log.next_offset;
                log.next_offset += 1;
                log.records.push_back(Arc::new(record));
                appended = true;
            }
            while log.records.len() > self.retain
                && log
                    .records
                    .front()
                    .is_some_and(|r| r.offset <= log.persisted)
            {
                log.records.pop_front();
            }
            let waiting = Unpublished {
                newest: log.newest,
                seq: batch.seq,
                done: batch.done.take(),
                offset: log.next_offset - 1,
            };
            if log.unpublished.is_empty() && waiting.newest <= log.published {
                flushed = Some(waiting.answer());
            } else {
                log.unpublished.push_back(waiting);
            }
        }
        if appended {
            self.last_offset.send_replace(log.next_offset - 1);
        }
        if let Some(seq) = flushed {
            self.flushed.send_replace(seq);
        }
    }

    /// Cluster mode: from now on a batch is answered once its records are in the output
    /// sink, which holds every record up to `published` so far.
    pub fn attach_sink(&self, published: u64) {
        self.log.lock().expect("output lock").published = 0;
        self.set_published(published);
    }

    /// The output sink holds every record up to `offset`: the batches waiting for them are
    /// answered.
    pub fn set_published(&self, offset: u64) {
        let mut log = self.log.lock().expect("output lock");
        log.published = log.published.max(offset);
        let mut flushed = None;
        while log
            .unpublished
            .front()
            .is_some_and(|u| u.newest <= log.published)
        {
            let waiting = log.unpublished.pop_front().expect("checked");
            flushed = Some(waiting.answer());
        }
        drop(log);
        if let Some(seq) = flushed {
            self.flushed.send_replace(seq);
        }
    }

    /// Offset of the newest record the sink holds (`u64::MAX`: no sink is attached).
    pub fn published(&self) -> u64 {
        self.log.lock().expect("output lock").published
    }

    /// Offset of the newest record appended (0 before any): what a sink must hold.
    pub fn newest(&self) -> u64 {
        self.log.lock().expect("output lock").newest
    }

    /// Waits until batch `seq` is in the log.
    pub(crate) async fn wait_flushed(&self, seq: u64) {
        let mut flushed = self.flushed.subscribe();
        let _ = flushed.wait_for(|f| *f > seq).await;
    }

    /// Records with `from <= offset <= to` still in memory.
    pub fn range(&self, from: u64, to: u64) -> Vec<Arc<OutputRecord>> {
        let log = self.log.lock().expect("output lock");
        let start = log.records.partition_point(|r| r.offset < from);
        log.records
            .range(start..)
            .take_while(|r| r.offset <= to)
            .cloned()
            .collect()
    }

    /// Records up to `offset` are in a checkpoint: they may be trimmed.
    pub fn mark_persisted(&self, offset: u64) {
        self.log.lock().expect("output lock").persisted = offset;
    }

    /// Starts the log from a checkpoint: its newest records, the next offset, and what is
    /// persisted.
    pub(crate) fn restore(&self, records: Vec<OutputRecord>, next_offset: u64) {
        let mut log = self.log.lock().expect("output lock");
        log.records = records.into_iter().map(Arc::new).collect();
        log.newest = log.records.back().map_or(0, |r| r.offset);
        log.next_offset = next_offset;
        log.persisted = next_offset - 1;
        self.last_offset.send_replace(next_offset - 1);
    }

    /// Records up to this offset are in a checkpoint.
    pub fn persisted(&self) -> u64 {
        self.log.lock().expect("output lock").persisted
    }

    /// Raises the next output offset to at least `offset` (offsets are never reused).
    pub(crate) fn raise_next_offset(&self, offset: u64) {
        let mut log = self.log.lock().expect("output lock");
        log.next_offset = log.next_offset.max(offset);
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.log.lock().expect("output lock").next_offset
    }

    /// Up to `limit` records with offset > `after` (default: from the oldest kept), and the
    /// offset to read after next time.
    ///
    /// Offsets increase but may have gaps (a restore drops records and never reuses their
    /// offsets), so the first record is found by its offset, not by counting from the oldest.
    pub fn read(&self, after: Option<u64>, limit: usize) -> (Vec<Arc<OutputRecord>>, u64) {
        let log = self.log.lock().expect("output lock");
        let oldest = log.records.front().map_or(log.next_offset, |r| r.offset);
        let after = after.unwrap_or(oldest.saturating_sub(1));
        let start = log.records.partition_point(|r| r.offset <= after);
        let records: Vec<_> = log.records.range(start..).take(limit).cloned().collect();
        let next = records.last().map_or(after, |r| r.offset);
        (records, next)
    }

    /// Offset of the newest record (0 before any).
    pub fn last_offset(&self) -> u64 {
        *self.last_offset.borrow()
    }

    /// Changes of the newest offset, for long polls and streams.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_offset.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn emission(step: u32, operator: u16, key: &str) -> Emission {
        Emission {
            step,
            phase: 1,
            operator,
            key: key.into(),
            kind: "session_closed",
            value: serde_json::value::to_raw_value(&json!(step)).unwrap(),
        }
    }

    fn output(retain: usize) -> Output {
        Output::new(vec!["a".into(), "b".into()], retain)
    }

    #[test]
    fn batches_finalise_in_sequence_order_whatever_order_shards_finish() {
        let out = output(10);
        let mut first = out.register(0, 2);
        let mut second = out.register(1, 1);
        out.complete(1, vec![emission(0, 0, "z")]);
        out.complete(0, vec![emission(3, 0, "k")]);
        assert!(second.try_recv().is_err(), "batch 1 must wait for batch 0");
        out.complete(0, vec![emission(1, 1, "a"), emission(1, 0, "b")]);
        assert!(first.try_recv().is_ok() && second.try_recv().is_ok());
        let (records, next) = out.read(None, 10);
        let order: Vec<_> = records
            .iter()
            .map(|r| (r.offset, r.key.as_str(), &*r.operator))
            .collect();
        assert_eq!(
            order,
            [(1, "b", "a"), (2, "a", "b"), (3, "k", "a"), (4, "z", "a")]
        );
        assert_eq!(next, 4);
    }

    #[test]
    fn reads_page_after_an_offset_and_old_records_are_trimmed() {
        let out = output(3);
        out.register(0, 1);
        out.complete(0, (0..5).map(|i| emission(i, 0, "k")).collect());
        let (records, next) = out.read(None, 2);
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(next, 4);
        let (records, next) = out.read(Some(4), 10);
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [5]);
        assert_eq!(next, 5);
        let (records, next) = out.read(Some(9), 10);
        assert!(records.is_empty());
        assert_eq!(next, 9);
        assert_eq!(out.last_offset(), 5);
    }

    #[test]
    fn reads_find_records_by_offset_across_a_gap() {
        let out = output(10);
        out.register(0, 1);
        out.complete(0, vec![emission(0, 0, "k"), emission(1, 0, "k")]);
        // A restore kept offset 1 and dropped 2: the next records start above the gap.
        let kept = out.range(1, 1).iter().map(|r| (**r).clone()).collect();
        out.restore(kept, 2);
        out.raise_next_offset(5);
        out.register(1, 1);
        out.complete(1, (0..3).map(|i| emission(i, 0, "k")).collect());
        let read = |after, limit| {
            let (records, next) = out.read(after, limit);
            (records.iter().map(|r| r.offset).collect::<Vec<_>>(), next)
        };
        assert_eq!(read(None, 10), (vec![1, 5, 6, 7], 7));
        assert_eq!(read(Some(5), 3), (vec![6, 7], 7));
        assert_eq!(read(Some(2), 1), (vec![5], 5));
        assert_eq!(read(Some(1), 2), (vec![5, 6], 6));
        assert_eq!(read(Some(7), 3), (vec![], 7));
        let range: Vec<_> = out.range(2, 6).iter().map(|r| r.offset).collect();
        assert_eq!(range, [5, 6]);
    }

    #[test]
    fn with_a_sink_a_batch_is_answered_once_its_records_are_published_in_order() {
        let out = output(10);
        out.register(0, 1);
        out.complete(0, vec![emission(0, 0, "k")]);
        out.attach_sink(1);
        let mut first = out.register(1, 1);
        let mut empty = out.register(2, 1);
        let mut last = out.register(3, 1);
        out.complete(1, vec![emission(0, 0, "a"), emission(1, 0, "b")]);
        out.complete(2, vec![]);
        out.complete(3, vec![emission(2, 0, "c")]);
        // The records are in the log (a checkpoint barrier would wait), the answers are not.
        assert_eq!(out.last_offset(), 4);
        assert_eq!(out.newest(), 4);
        assert!(first.try_recv().is_err() && empty.try_recv().is_err());
        out.set_published(2);
        assert!(first.try_recv().is_err(), "offset 3 is not published yet");
        out.set_published(3);
        assert_eq!(first.try_recv().ok(), Some(3));
        // A batch without records waits for the records before it: answers keep their order.
        assert_eq!(empty.try_recv().ok(), Some(3));
        assert!(last.try_recv().is_err());
        out.set_published(1);
        assert!(last.try_recv().is_err(), "published never goes back");
        out.set_published(4);
        assert_eq!(last.try_recv().ok(), Some(4));
        // Published before it was flushed: answered at once.
        let mut later = out.register(4, 1);
        out.set_published(5);
        out.complete(4, vec![emission(3, 0, "d")]);
        assert_eq!(later.try_recv().ok(), Some(5));
    }

    #[test]
    fn a_batch_sent_to_no_shard_completes_at_once() {
        let out = output(3);
        let mut done = out.register(0, 0);
        assert!(done.try_recv().is_ok());
    }
}
