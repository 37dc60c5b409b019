//! Queries of a running pipeline: a key's state, a page of keys, status and queue depths.
//! A query travels through the shard mailboxes like a batch, so it sees every batch
//! acknowledged before it.

use super::pipeline::Pipeline;
use super::shard::Command;
use super::{EngineError, key_group, shard_of};
use crate::state::Key;
use serde_json::Value;
use tokio::sync::oneshot;

/// Counters and keys of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub events: u64,
    pub late_events: u64,
    pub watermark: Option<i64>,
    /// Offset of the last accepted event.
    pub wal_offset: Option<u64>,
    /// Keys with state, per operator, in spec order.
    pub keys: Vec<(String, usize)>,
    /// Keys changed since the last checkpoint, over all operators (an upper bound).
    pub changed_keys: usize,
}

impl Pipeline {
    /// The state of `key` in `operator`, or `None` when the key has none.
    pub async fn state(&self, operator: &str, key: &str) -> Result<Option<Value>, EngineError> {
        let operator = self.operator_index(operator)?;
        let shard = shard_of(key_group(key), self.shards.len());
        let (reply, answer) = oneshot::channel();
        self.send(
            shard,
            Command::Get {
                operator,
                key: key.into(),
                reply,
            },
        )
        .await?;
        answer.await.map_err(|_| self.stopped())
    }

    /// Up to `limit` keys of `operator` after `after` starting with `prefix`, in byte order,
    /// and whether more follow.
    pub async fn list_state(
        &self,
        operator: &str,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<(Key, Value)>, bool), EngineError> {
        let operator = self.operator_index(operator)?;
        let mut answers = Vec::new();
        for shard in 0..self.shards.len() {
            let (reply, answer) = oneshot::channel();
            let command = Command::List {
                operator,
                after: after.map(str::to_owned),
                prefix: prefix.to_owned(),
                limit: limit + 1,
                reply,
            };
            self.send(shard, command).await?;
            answers.push(answer);
        }
        let mut items = Vec::new();
        for answer in answers {
            items.extend(answer.await.map_err(|_| self.stopped())?);
        }
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let more = items.len() > limit;
        items.truncate(limit);
        Ok((items, more))
    }

    /// Counters, watermark and keys per operator, reflecting every acknowledged batch.
    pub async fn status(&self) -> Result<Status, EngineError> {
        let seq = self.sequencer.lock().expect("sequencer lock").seq.counters;
        let mut keys = vec![0; self.operators.len()];
        let mut changed_keys = 0;
        for shard in 0..self.shards.len() {
            let (reply, answer) = oneshot::channel();
            self.send(shard, Command::KeyCounts { reply }).await?;
            for (total, (n, changed)) in keys
                .iter_mut()
                .zip(answer.await.map_err(|_| self.stopped())?)
            {
                *total += n;
                changed_keys += changed;
            }
        }
        Ok(Status {
            events: seq.events,
            late_events: seq.late_events,
            watermark: seq.watermark,
            wal_offset: seq.last_offset,
            keys: self.operators.iter().cloned().zip(keys).collect(),
            changed_keys,
        })
    }

    /// Messages waiting in each shard's mailbox.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|s| s.max_capacity() - s.capacity())
            .collect()
    }

    /// Whether `operator` exists.
    pub fn has_operator(&self, operator: &str) -> bool {
        self.operators.iter().any(|o| o == operator)
    }

    fn operator_index(&self, operator: &str) -> Result<usize, EngineError> {
        self.operators
            .iter()
            .position(|o| o == operator)
            .ok_or_else(|| EngineError::UnknownOperator {
                pipeline: self.name.clone(),
                operator: operator.to_owned(),
            })
    }
}
