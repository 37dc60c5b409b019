//! A shard: one OS thread that owns the operator instances of its key groups and applies
//! batches in sequence order. Single writer: nothing here is shared or locked; queries arrive
//! as messages in the same mailbox, so they see every batch sent before them.

use super::ingest::OpInput;
use super::operator::{Emission, Input};
use super::output::Output;
use super::runner::{PREFETCH_STAGES, Prefetch, Runner, StateRow, Step};
use super::sequencer::{Mark, is_late};
use crate::state::{Key, KeyTable, key_hash};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};

/// One (event, operator) pair routed to this shard.
#[derive(Debug)]
pub(crate) struct Item {
    pub step: u32,
    pub operator: u16,
    pub time: i64,
    pub input: OpInput,
}

/// This shard's part of one sequenced batch.
#[derive(Debug)]
pub(crate) struct ShardBatch {
    pub seq: u64,
    pub items: Vec<Item>,
    /// Every watermark change of the batch (each shard needs all of them: timers of its keys
    /// fire on watermarks moved by events of other shards).
    pub marks: Arc<[Mark]>,
    /// A processing-time tick at the end of the batch.
    pub clock: Option<i64>,
    /// A checkpoint barrier: after the batch, hand over every change since the last one.
    pub checkpoint: Option<oneshot::Sender<Vec<StateRow>>>,
}

/// A message to a shard.
pub(crate) enum Command {
    Batch(ShardBatch),
    Get {
        operator: usize,
        key: Key,
        reply: oneshot::Sender<Option<Value>>,
    },
    List {
        operator: usize,
        after: Option<String>,
        prefix: String,
        limit: usize,
        reply: oneshot::Sender<Vec<(Key, Value)>>,
    },
    /// Puts checkpointed state (before any batch) and the watermark it was taken at.
    Restore {
        rows: Vec<StateRow>,
        watermark: Option<i64>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Lists keys as changed again (their checkpoint failed).
    Remark {
        keys: Vec<(u16, Key)>,
    },
    /// Per operator: (keys with state, keys changed since the last checkpoint).
    KeyCounts {
        reply: oneshot::Sender<Vec<(usize, usize)>>,
    },
}

pub(crate) struct Shard {
    runners: Vec<Box<dyn Runner>>,
    /// The keys of this shard's state, shared by its runners.
    table: KeyTable,
    watermark: Option<i64>,
    output: Arc<Output>,
    /// Keys with state per shard, this one's at `index` (the sequencer reads their sum).
    keys: Arc<[AtomicUsize]>,
    index: usize,
    /// Per operator: events applied, counted as plain integers in the batch loop and
    /// published to `records_in` once per batch.
    applied: Vec<u64>,
    records_in: Vec<metrics::Counter>,
}

impl Shard {
    pub fn new(
        runners: Vec<Box<dyn Runner>>,
        output: Arc<Output>,
        keys: Arc<[AtomicUsize]>,
        index: usize,
        records_in: Vec<metrics::Counter>,
    ) -> Shard {
        Shard {
            applied: vec![0; runners.len()],
            table: KeyTable::new(runners.len()),
            runners,
            watermark: None,
            output,
            keys,
            index,
            records_in,
        }
    }

    fn publish_applied(&mut self) {
        for (count, counter) in self.applied.iter_mut().zip(&self.records_in) {
            if *count > 0 {
                counter.increment(std::mem::take(count));
            }
        }
    }

    fn publish_key_count(&self) {
        let count = self.runners.iter().map(|r| r.key_count()).sum();
        self.keys[self.index].store(count, Ordering::Relaxed);
    }

    /// Serves the mailbox until every sender is gone.
    pub fn run(mut self, mut mailbox: mpsc::Receiver<Command>) {
        while let Some(command) = mailbox.blocking_recv() {
            self.handle(command);
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Batch(mut batch) => {
                let seq = batch.seq;
                let checkpoint = batch.checkpoint.take();
                let emitted = self.process(batch);
                if let Some(reply) = checkpoint {
                    let mut rows = Vec::new();
                    for runner in &mut self.runners {
                        runner.drain_changes(&self.table, &mut rows);
                    }
                    let _ = reply.send(rows);
                }
                self.publish_key_count();
                self.publish_applied();
                self.output.complete(seq, emitted);
            }
            Command::Restore {
                rows,
                watermark,
                reply,
            } => {
                self.watermark = watermark;
                let restored = self.restore(&rows, watermark);
                self.publish_key_count();
                let _ = reply.send(restored);
            }
            Command::Remark { keys } => {
                for (operator, key) in keys {
                    self.runners[usize::from(operator)].remark(&self.table, &key);
                }
            }
            Command::Get {
                operator,
                key,
                reply,
            } => {
                let _ = reply.send(self.runners[operator].query(&self.table, &key));
            }
            Command::List {
                operator,
                after,
                prefix,
                limit,
                reply,
            } => {
                let listed =
                    self.runners[operator].list(&self.table, after.as_deref(), &prefix, limit);
                let _ = reply.send(listed);
            }
            Command::KeyCounts { reply } => {
                let counts = self
                    .runners
                    .iter()
                    .map(|r| (r.key_count(), r.changed_keys()));
                let _ = reply.send(counts.collect());
            }
        }
    }

    /// Brings what applying to the key with `hash` in `operator` reads into the cache, one
    /// step of it (see [`Prefetch`]). The key table's steps are taken here, not through the
    /// runner: a dynamic call per step and item cost 6% of a six-operator replay.
    fn prefetch(&self, operator: u16, hash: u32, stage: Prefetch) {
        let runner = &self.runners[usize::from(operator)];
        stage.take(&self.table, hash, |keys, hash| runner.prefetch(keys, hash));
    }

    /// Puts checkpointed rows in, what rows to come read fetched ahead (the keys are in no
    /// order, so nearly every lookup misses the cache).
    fn restore(&mut self, rows: &[StateRow], watermark: Option<i64>) -> Result<(), String> {
        let hashes: Vec<u32> = rows.iter().map(|row| key_hash(&row.key)).collect();
        for (i, (row, &hash)) in rows.iter().zip(&hashes).enumerate() {
            for (ahead, stage) in PREFETCH_STAGES {
                if let (Some(next), Some(&next_hash)) = (rows.get(i + ahead), hashes.get(i + ahead))
                {
                    self.prefetch(next.operator, next_hash, stage);
                }
            }
            self.runners[usize::from(row.operator)].restore(
                &mut self.table,
                row,
                hash,
                watermark,
            )?;
        }
        Ok(())
    }

    fn process(&mut self, batch: ShardBatch) -> Vec<Emission> {
        let mut out = Vec::new();
        let mut marks = batch.marks.iter().peekable();
        for (i, item) in batch.items.iter().enumerate() {
            // Overlap the cache misses of lookups to come, a step of each further ahead.
            for (ahead, stage) in PREFETCH_STAGES {
                if let Some(next) = batch.items.get(i + ahead) {
                    self.prefetch(next.operator, next.input.hash, stage);
                }
            }
            while let Some(mark) = marks.next_if(|m| m.step < item.step) {
                self.advance(mark, &mut out);
            }
            let input = Input {
                time: item.time,
                late: is_late(item.time, self.watermark),
                value: &item.input.value,
                entry_key: item.input.entry_key.as_ref(),
            };
            let at = Step {
                watermark: self.watermark,
                step: item.step,
                out: &mut out,
            };
            self.applied[usize::from(item.operator)] += 1;
            let runner = &mut self.runners[usize::from(item.operator)];
            runner.apply(
                &mut self.table,
                &item.input.key,
                item.input.hash,
                &input,
                at,
            );
        }
        for mark in marks {
            self.advance(mark, &mut out);
        }
        if let Some(now) = batch.clock {
            for runner in &mut self.runners {
                let at = Step {
                    watermark: self.watermark,
                    step: u32::MAX,
                    out: &mut out,
                };
                runner.advance_clock(&mut self.table, now, at);
            }
        }
        out
    }

    fn advance(&mut self, mark: &Mark, out: &mut Vec<Emission>) {
        self.watermark = Some(mark.watermark);
        for runner in &mut self.runners {
            let at = Step {
                watermark: self.watermark,
                step: mark.step,
                out,
            };
            runner.advance_watermark(&mut self.table, at);
        }
    }
}
