//! Cluster mode, partitions spread over instances (a pipeline with `"partitions"` above 1):
//! who owns each partition, and how the others reach it.
//!
//! - **Ownership**: one lease per partition in PostgreSQL (`cluster_partitions`, with a
//!   fencing epoch). Every round, each instance computes the same sticky, balanced
//!   assignment from the live members and the leases ([`super::assignment::assign`]), takes
//!   the free partitions assigned to it, gives up (releases) the ones assigned elsewhere, and
//!   renews the rest; a dead owner's leases expire after the lease timeout and the round after
//!   that moves them. An owner applies its partition with `checkpoint::Owning` (the latest
//!   checkpoint, then the log stream after it).
//! - **Asking an owner**: NATS request/reply on `<cluster>.own.<pipeline>.<partition>`, which
//!   only the owner subscribes to. Every request names the log's tip when the client's request
//!   arrived; the owner answers once it has applied through it (read-your-writes), or says it
//!   is still catching up (503 with Retry-After, as while a partition moves). An owner that
//!   lost its lease stops answering at once.

use super::cluster::Cluster;
use super::{Service, ServiceError};
use crate::checkpoint::Owning;
use crate::engine::{Pipeline, Status};
use crate::spec::PipelineSpec;
use crate::state::Key;
use crate::store::{Fence, PartitionLease, StoreError, StoredPipeline, Trigger};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long an owner waits to catch up with the log before it says it cannot answer yet.
const CATCH_UP: Duration = Duration::from_secs(1);
/// How long one ask waits for its answer: a paused owner never answers, and its successor
/// (subscribed once it takes the partition over) gets only the asks sent after.
const ATTEMPT: Duration = Duration::from_millis(1_500);
/// How long an owner stopping waits for the leader's shutdown checkpoint (longer than a
/// checkpoint waits for its partitions).
const SHUTDOWN_CHECKPOINT: Duration = Duration::from_secs(40);
/// How long asking an owner may take, over every attempt.
const ASK_TIMEOUT: Duration = Duration::from_secs(6);

/// A partition owned here.
pub(super) struct Owned {
    epoch: i64,
    /// Until when the lease may be acted on (this process's clock).
    valid_until: Instant,
    owning: Arc<Owning>,
    stop: CancellationToken,
}

/// What one partition's owner is asked.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Ask {
    /// A key's state in an operator.
    Get { operator: String, key: String },
    /// A page of an operator's keys after `after` with `prefix`.
    List {
        operator: String,
        after: Option<String>,
        prefix: String,
        limit: usize,
    },
    /// Keys per operator.
    Keys,
    /// Nothing: only catch up (its output records are then in the output stream).
    Sync,
}

/// A request to a partition's owner: catch up to `lsn` first.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    lsn: u64,
    ask: Ask,
}

/// An owner's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Value(Option<Value>),
    Page {
        items: Vec<(String, Value)>,
        more: bool,
    },
    /// Keys with state per operator, in spec order.
    Keys(Vec<usize>),
    Synced,
    /// It cannot answer now (catching up, moving, stopped): retry shortly.
    Unavailable(String),
}

impl Cluster {
    fn owner_subject(&self, pipeline: &str, partition: u16) -> String {
        format!("{}.own.{pipeline}.{partition}", self.streams.cluster_name())
    }

    /// The partition leases as last read.
    pub fn partition_leases(&self) -> Vec<PartitionLease> {
        self.partitions.read().expect("cluster lock").clone()
    }

    /// The LSN of the newest record of `pipeline`'s log: what a read must reflect.
    pub async fn log_tip(&self, pipeline: &str) -> Result<u64, ServiceError> {
        self.streams
            .log_tip(pipeline)
            .await
            .map_err(|e| ServiceError::Stream {
                name: pipeline.to_owned(),
                detail: e.to_string(),
            })
    }

    async fn ask(
        &self,
        pipeline: &str,
        partition: u16,
        lsn: u64,
        ask: Ask,
    ) -> Result<Reply, ServiceError> {
        let unavailable = |detail: String| ServiceError::PartitionUnavailable {
            name: pipeline.to_owned(),
            partition,
            detail,
        };
        let request = Request { lsn, ask };
        // Owned here: answered in this process, without the round trip.
        if let Some(owning) = self.owning(pipeline, partition) {
            return match answer(&owning, request).await {
                Reply::Unavailable(detail) => Err(unavailable(detail)),
                reply => Ok(reply),
            };
        }
        let payload = serde_json::to_vec(&request).expect("requests serialise");
        let subject = self.owner_subject(pipeline, partition);
        let payload = bytes::Bytes::from(payload);
        let deadline = Instant::now() + ASK_TIMEOUT;
        let message = loop {
            let asked = self
                .streams
                .client()
                .request(subject.clone(), payload.clone());
            match tokio::time::timeout(ATTEMPT, asked).await {
                Ok(Ok(message)) => break message,
                Ok(Err(e)) => return Err(unavailable(format!("its owner does not answer: {e}"))),
                // A paused owner: ask again (a successor answers the asks sent after it
                // took the partition over).
                Err(_) if Instant::now() + ATTEMPT <= deadline => continue,
                Err(_) => return Err(unavailable("its owner did not answer in time".into())),
            }
        };
        match serde_json::from_slice(&message.payload) {
            Ok(Reply::Unavailable(detail)) => Err(unavailable(detail)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(unavailable(format!(
                "its owner's answer is unreadable: {e}"
            ))),
        }
    }

    /// A key's state (`operator` exists), from its partition's owner.
    pub async fn owned_state(
        &self,
        spec: &PipelineSpec,
        operator: &str,
        key: &str,
    ) -> Result<Option<Value>, ServiceError> {
        let lsn = self.log_tip(&spec.name).await?;
        let group = crate::engine::key_group(key);
        let partition = crate::spec::partition_of(spec.partitions, group);
        let ask = Ask::Get {
            operator: operator.to_owned(),
            key: key.to_owned(),
        };
        match self.ask(&spec.name, partition, lsn, ask).await? {
            Reply::Value(value) => Ok(value),
            other => Err(unexpected(&spec.name, partition, &other)),
        }
    }

    /// A page of `operator`'s keys merged from every partition's owner, in key byte order,
    /// and whether more follow.
    pub async fn owned_list(
        &self,
        spec: &PipelineSpec,
        operator: &str,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<(Key, Value)>, bool), ServiceError> {
        let lsn = self.log_tip(&spec.name).await?;
        let asks = (0..spec.partitions).map(|partition| {
            let ask = Ask::List {
                operator: operator.to_owned(),
                after: after.map(str::to_owned),
                prefix: prefix.to_owned(),
                limit,
            };
            self.ask(&spec.name, partition, lsn, ask)
        });
        let mut pages = Vec::with_capacity(usize::from(spec.partitions));
        for (partition, reply) in futures::future::join_all(asks)
            .await
            .into_iter()
            .enumerate()
        {
            match reply? {
                Reply::Page { items, more } => pages.push((items, more)),
                other => return Err(unexpected(&spec.name, partition as u16, &other)),
            }
        }
        Ok(merge_pages(pages, limit))
    }

    /// Every partition's keys per operator, once each has applied
    /// through `lsn`.
    pub async fn owned_keys(
        &self,
        spec: &PipelineSpec,
        lsn: u64,
    ) -> Result<Vec<Vec<usize>>, ServiceError> {
        let asks = (0..spec.partitions).map(|p| self.ask(&spec.name, p, lsn, Ask::Keys));
        let mut all = Vec::new();
        for (partition, reply) in futures::future::join_all(asks)
            .await
            .into_iter()
            .enumerate()
        {
            match reply? {
                Reply::Keys(keys) => all.push(keys),
                other => return Err(unexpected(&spec.name, partition as u16, &other)),
            }
        }
        Ok(all)
    }

    /// Waits until every partition has applied the log up to its tip now (so that their
    /// output records are in the output stream).
    pub async fn sync_partitions(&self, spec: &PipelineSpec) -> Result<(), ServiceError> {
        let lsn = self.log_tip(&spec.name).await?;
        let asks = (0..spec.partitions).map(|p| self.ask(&spec.name, p, lsn, Ask::Sync));
        for reply in futures::future::join_all(asks).await {
            reply?;
        }
        Ok(())
    }

    /// Every partition owned here: its pipeline, number and state.
    pub fn owned_partitions(&self) -> Vec<(String, u16, Arc<Owning>)> {
        let owned = self.owned.lock().expect("cluster lock");
        let mut all: Vec<_> = owned
            .iter()
            .map(|((name, p), o)| (name.clone(), *p, o.owning.clone()))
            .collect();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// The partition `partition` of `pipeline` owned here under a lease still valid.
    fn owning(&self, pipeline: &str, partition: u16) -> Option<Arc<Owning>> {
        let owned = self.owned.lock().expect("cluster lock");
        let o = owned.get(&(pipeline.to_owned(), partition))?;
        (Instant::now() < o.valid_until).then(|| o.owning.clone())
    }
}

/// One page of up to `limit` items from pages of up to `limit` items each, all after the
/// same cursor, each in key byte order: the first `limit` keys of their union, and whether
/// any page had more beyond them.
pub fn merge_pages(
    pages: Vec<(Vec<(String, Value)>, bool)>,
    limit: usize,
) -> (Vec<(Key, Value)>, bool) {
    let mut more = pages.iter().any(|(_, more)| *more);
    let mut items: Vec<(String, Value)> = pages.into_iter().flat_map(|(items, _)| items).collect();
    items.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    more |= items.len() > limit;
    items.truncate(limit);
    let items = items
        .into_iter()
        .map(|(k, v)| (Key::from(k.as_str()), v))
        .collect();
    (items, more)
}

fn unexpected(pipeline: &str, partition: u16, reply: &Reply) -> ServiceError {
    ServiceError::PartitionUnavailable {
        name: pipeline.to_owned(),
        partition,
        detail: format!("its owner answered out of turn: {reply:?}"),
    }
}

/// Answers one request to a partition owned here.
async fn answer(owning: &Owning, request: Request) -> Reply {
    let Some(pipeline) = owning.caught_up(request.lsn, CATCH_UP).await else {
        return Reply::Unavailable(format!(
            "it is catching up with the log (applied through {}, asked for {})",
            owning.applied(),
            request.lsn
        ));
    };
    let failed = |e: crate::engine::EngineError| Reply::Unavailable(e.to_string());
    match request.ask {
        Ask::Get { operator, key } => match pipeline.state(&operator, &key).await {
            Ok(value) => Reply::Value(value),
            Err(e) => failed(e),
        },
        Ask::List {
            operator,
            after,
            prefix,
            limit,
        } => match pipeline
            .list_state(&operator, after.as_deref(), &prefix, limit)
            .await
        {
            Ok((items, more)) => Reply::Page {
                items: items.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                more,
            },
            Err(e) => failed(e),
        },
        Ask::Keys => match pipeline.status().await {
            Ok(status) => Reply::Keys(status.keys.into_iter().map(|(_, n)| n).collect()),
            Err(e) => failed(e),
        },
        Ask::Sync => Reply::Synced,
    }
}

impl Service {
    /// A pipeline's counters and keys; for a pipeline led here whose partitions are spread,
    /// the keys are summed over the partitions' owners, each caught up with the log first.
    pub async fn status_of(&self, pipeline: &Pipeline) -> Result<Status, ServiceError> {
        let mut status = pipeline.status().await?;
        let (Some(cluster), Some(spec)) = (&self.cluster, pipeline.spec()) else {
            return Ok(status);
        };
        // Before any event (a pipeline just created) no key has state: nobody is asked.
        if spec.partitions <= 1 || pipeline.fence().is_none() || status.wal_offset.is_none() {
            return Ok(status);
        }
        let lsn = pipeline.log().map_or(0, |log| log.last_lsn());
        let partitions = cluster.owned_keys(spec, lsn).await?;
        for (operator, (_, keys)) in status.keys.iter_mut().enumerate() {
            *keys = partitions
                .iter()
                .map(|p| p.get(operator).copied().unwrap_or(0))
                .sum();
        }
        Ok(status)
    }

    /// One round of partition ownership (see the module's doc): renew what is owned here,
    /// give up what is assigned elsewhere, take what is assigned here and free.
    pub(super) async fn own_partitions(
        &self,
        cluster: &Arc<Cluster>,
        stored: &[StoredPipeline],
    ) -> Result<(), StoreError> {
        self.renew_partitions(cluster).await?;
        let leases = cluster.leases.partition_leases().await?;
        *cluster.partitions.write().expect("cluster lock") = leases.clone();
        let members: Vec<String> = cluster
            .members()
            .into_iter()
            .filter(|m| m.alive)
            .map(|m| m.node)
            .collect();
        let specs: Vec<PipelineSpec> = stored
            .iter()
            .filter_map(|p| PipelineSpec::from_json(&p.spec).ok())
            .filter(|s| s.partitions > 1)
            .collect();
        self.stop_deleted(cluster, &specs).await;
        for spec in &specs {
            let current = owners(&leases, &spec.name, spec.partitions);
            let load = load_elsewhere(&leases, &spec.name);
            let moves = super::assignment::assign(&members, &current, &load);
            let wanted = super::assignment::apply(&current, &moves);
            for (partition, owner) in wanted.iter().enumerate() {
                let partition = partition as u16;
                let mine = owner.as_deref() == Some(cluster.node());
                let held_here = cluster.owning_any(&spec.name, partition);
                if mine && !held_here && current[usize::from(partition)].is_none() {
                    self.take_partition(cluster, spec, partition).await?;
                } else if !mine && held_here {
                    self.give_partition_up(cluster, &spec.name, partition, "released")
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Renews every partition lease held here; stops the partitions it cannot renew.
    async fn renew_partitions(&self, cluster: &Arc<Cluster>) -> Result<(), StoreError> {
        let held: Vec<((String, u16), i64, Arc<Owning>)> = {
            let owned = cluster.owned.lock().expect("cluster lock");
            owned
                .iter()
                .map(|(k, o)| (k.clone(), o.epoch, o.owning.clone()))
                .collect()
        };
        for ((name, partition), epoch, owning) in held {
            let applied = owning
                .pipeline()
                .and_then(|p| p.counters().last_offset)
                .map(|o| o as i64);
            let sent = Instant::now();
            let renewed = cluster
                .leases
                .renew_partition(&name, partition, epoch, applied)
                .await?;
            if renewed {
                let mut owned = cluster.owned.lock().expect("cluster lock");
                if let Some(o) = owned.get_mut(&(name.clone(), partition)) {
                    o.valid_until = sent + cluster.validity();
                }
            } else {
                tracing::warn!(pipeline = %name, partition, epoch, "partition lease lost: another instance owns it");
                self.give_partition_up(cluster, &name, partition, "lost")
                    .await;
            }
        }
        Ok(())
    }

    /// Stops the partitions of pipelines no longer stored.
    async fn stop_deleted(&self, cluster: &Arc<Cluster>, specs: &[PipelineSpec]) {
        let gone: Vec<(String, u16)> = {
            let owned = cluster.owned.lock().expect("cluster lock");
            owned
                .keys()
                .filter(|(name, _)| !specs.iter().any(|s| &s.name == name))
                .cloned()
                .collect()
        };
        for (name, partition) in gone {
            self.give_partition_up(cluster, &name, partition, "released")
                .await;
        }
    }

    /// Takes partition `partition` of `spec` when its lease is free, and starts applying it.
    async fn take_partition(
        &self,
        cluster: &Arc<Cluster>,
        spec: &PipelineSpec,
        partition: u16,
    ) -> Result<(), StoreError> {
        let taken = Instant::now();
        let Some(epoch) = cluster
            .leases
            .acquire_partition(&spec.name, partition)
            .await?
        else {
            return Ok(());
        };
        let owning = Arc::new(Owning::default());
        let stop = CancellationToken::new();
        let owned = Owned {
            epoch,
            valid_until: taken + cluster.validity(),
            owning: owning.clone(),
            stop: stop.clone(),
        };
        cluster
            .owned
            .lock()
            .expect("cluster lock")
            .insert((spec.name.clone(), partition), owned);
        crate::metrics::partition_lease_changed(&spec.name, partition, "acquired");
        tracing::info!(pipeline = %spec.name, partition, epoch, "partition lease taken");
        let fence = Fence {
            node: cluster.node().to_owned(),
            epoch,
        };
        let subject = cluster.owner_subject(&spec.name, partition);
        let (service, cluster, spec) = (self.clone(), cluster.clone(), spec.clone());
        tokio::spawn(async move {
            let serving = serve_owner(&cluster, subject, partition, &spec.name, stop.clone());
            let owning_run = service.checkpoints.own_partition(
                spec.clone(),
                partition,
                fence,
                owning,
                stop.clone(),
            );
            let ended = tokio::select! {
                ended = owning_run => ended,
                () = serving => Ok(()),
            };
            if let Err(e) = ended {
                tracing::error!(pipeline = %spec.name, partition, epoch, reason = %e, next = "the lease is released; a later round takes it again", "partition stopped");
                service
                    .give_partition_up(&cluster, &spec.name, partition, "released")
                    .await;
            }
        });
        Ok(())
    }

    /// Stops applying a partition here and releases its lease (`kind`: lost or released).
    pub(super) async fn give_partition_up(
        &self,
        cluster: &Cluster,
        name: &str,
        partition: u16,
        kind: &'static str,
    ) {
        let owned = cluster
            .owned
            .lock()
            .expect("cluster lock")
            .remove(&(name.to_owned(), partition));
        let Some(owned) = owned else {
            return;
        };
        owned.stop.cancel();
        crate::metrics::partition_lease_changed(name, partition, kind);
        if kind == "released"
            && let Err(e) = cluster
                .leases
                .release_partition(name, partition, owned.epoch)
                .await
        {
            tracing::warn!(pipeline = %name, partition, reason = %e, next = "it expires after the lease timeout", "partition lease not released");
        }
    }

    /// Answers the shutdown-checkpoint asks of owners of `pipeline`'s partitions (on
    /// `<cluster>.lead.<pipeline>`) while it is led here: an owner stopping with SIGTERM
    /// has the leader take a `shutdown` checkpoint, which its partitions write before it
    /// lets them go.
    pub(super) fn serve_lead(&self, cluster: &Arc<Cluster>, pipeline: Arc<Pipeline>) {
        let subject = format!(
            "{}.lead.{}",
            cluster.streams.cluster_name(),
            pipeline.name()
        );
        let (service, cluster) = (self.clone(), cluster.clone());
        tokio::spawn(async move {
            let Ok(mut asks) = cluster.streams.client().subscribe(subject).await else {
                return;
            };
            let closed = pipeline.closed();
            loop {
                let ask = tokio::select! {
                    _ = closed.cancelled() => return,
                    ask = asks.next() => match ask {
                        Some(ask) => ask,
                        None => return,
                    },
                };
                let Some(reply) = ask.reply else {
                    continue;
                };
                let taken = service.checkpoints.take(&pipeline, Trigger::Shutdown).await;
                let answer = match taken {
                    Ok(cp) => format!("checkpoint {} completed", cp.id),
                    Err(e) => format!("checkpoint failed: {e}"),
                };
                let _ = cluster.streams.client().publish(reply, answer.into()).await;
            }
        });
    }

    /// At shutdown, before this instance's partitions stop: for each pipeline led elsewhere
    /// whose partitions it owns, its leader takes a `shutdown` checkpoint (which they write).
    pub(super) async fn checkpoint_owned(&self, cluster: &Cluster) {
        let mut pipelines: Vec<String> = cluster
            .owned_partitions()
            .into_iter()
            .map(|(name, _, _)| name)
            .filter(|name| cluster.leads(name).is_none())
            .collect();
        pipelines.dedup();
        for name in pipelines {
            let subject = format!("{}.lead.{name}", cluster.streams.cluster_name());
            let asked = cluster.streams.client().request(subject, "shutdown".into());
            match tokio::time::timeout(SHUTDOWN_CHECKPOINT, asked).await {
                Ok(Ok(answer)) => {
                    let answer = String::from_utf8_lossy(&answer.payload).into_owned();
                    tracing::info!(pipeline = %name, answer = %answer, "shutdown checkpoint of the partitions owned here");
                }
                Ok(Err(e)) => {
                    tracing::warn!(pipeline = %name, reason = %e, next = "the next owners replay the log from the latest checkpoint", "no shutdown checkpoint of the partitions owned here")
                }
                Err(_) => {
                    tracing::warn!(pipeline = %name, next = "the next owners replay the log from the latest checkpoint", "the leader did not take a shutdown checkpoint in time")
                }
            }
        }
    }

    /// At shutdown: every partition owned here stopped (their leases are released with the
    /// member's).
    pub(super) fn stop_partitions(&self, cluster: &Cluster) {
        let owned: Vec<Owned> = {
            let mut owned = cluster.owned.lock().expect("cluster lock");
            owned.drain().map(|(_, o)| o).collect()
        };
        for o in owned {
            o.stop.cancel();
        }
    }
}

/// Answers the requests to one partition owned here until `stop`.
async fn serve_owner(
    cluster: &Arc<Cluster>,
    subject: String,
    partition: u16,
    pipeline: &str,
    stop: CancellationToken,
) {
    let mut requests = match cluster.streams.client().subscribe(subject).await {
        Ok(requests) => requests,
        Err(e) => {
            tracing::warn!(pipeline, partition, reason = %e, "cannot answer for the partition");
            stop.cancelled().await;
            return;
        }
    };
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            message = requests.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let (cluster, pipeline) = (cluster.clone(), pipeline.to_owned());
        tokio::spawn(async move {
            let reply = match (
                serde_json::from_slice::<Request>(&message.payload),
                cluster.owning(&pipeline, partition),
            ) {
                (Ok(request), Some(owning)) => answer(&owning, request).await,
                (Err(e), _) => Reply::Unavailable(format!("unreadable request: {e}")),
                (_, None) => Reply::Unavailable("it is not owned here any more".into()),
            };
            let payload = serde_json::to_vec(&reply).expect("replies serialise");
            let _ = cluster
                .streams
                .client()
                .publish(reply_to, payload.into())
                .await;
        });
    }
}

/// Each partition's live owner, from the leases.
fn owners(leases: &[PartitionLease], pipeline: &str, partitions: u16) -> Vec<Option<String>> {
    let mut owners = vec![None; usize::from(partitions)];
    for lease in leases.iter().filter(|l| l.pipeline == pipeline && l.live) {
        if let Some(owner) = owners.get_mut(lease.partition as usize) {
            *owner = lease.holder.clone();
        }
    }
    owners
}

/// Partitions of other pipelines each member owns.
fn load_elsewhere(leases: &[PartitionLease], pipeline: &str) -> BTreeMap<String, usize> {
    let mut load = BTreeMap::new();
    for lease in leases.iter().filter(|l| l.pipeline != pipeline && l.live) {
        if let Some(holder) = &lease.holder {
            *load.entry(holder.clone()).or_default() += 1;
        }
    }
    load
}

impl Cluster {
    /// Whether partition `partition` of `pipeline` is owned here (valid or not).
    fn owning_any(&self, pipeline: &str, partition: u16) -> bool {
        let owned = self.owned.lock().expect("cluster lock");
        owned.contains_key(&(pipeline.to_owned(), partition))
    }
}

/// Owned partitions by (pipeline, partition).
pub(super) type OwnedMap = HashMap<(String, u16), Owned>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(keys: &[&str], more: bool) -> (Vec<(String, Value)>, bool) {
        (
            keys.iter().map(|k| (k.to_string(), json!(k))).collect(),
            more,
        )
    }

    #[test]
    fn pages_of_every_owner_merge_in_key_byte_order() {
        let pages = vec![
            page(&["a", "d", "e"], true),
            page(&["b", "c"], false),
            page(&[], false),
        ];
        let (items, more) = merge_pages(pages, 3);
        let keys: Vec<String> = items.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(more);
    }

    #[test]
    fn the_last_merged_page_says_no_more() {
        let (items, more) = merge_pages(vec![page(&["x"], false), page(&["y"], false)], 3);
        assert_eq!(items.len(), 2);
        assert!(!more);
        let (_, more) = merge_pages(vec![page(&["x", "y"], false), page(&["z"], false)], 2);
        assert!(more, "a key beyond the limit is more");
    }

    #[test]
    fn owners_come_from_live_leases_only() {
        let lease = |partition, holder: &str, live| PartitionLease {
            pipeline: "p".into(),
            partition,
            holder: Some(holder.into()),
            epoch: 1,
            live,
            applied: None,
        };
        let leases = [
            lease(0, "a", true),
            lease(1, "b", false),
            lease(5, "c", true),
        ];
        assert_eq!(owners(&leases, "p", 3), [Some("a".into()), None, None]);
        let other = PartitionLease {
            pipeline: "q".into(),
            ..lease(0, "a", true)
        };
        assert_eq!(load_elsewhere(&[other, lease(0, "b", true)], "p")["a"], 1);
    }
}
