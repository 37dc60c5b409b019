//! Cluster mode (`EDDY_NATS_URL`): this instance as one member of several. Every pipeline
//! has one leader, the holder of its lease in PostgreSQL (`store::Leases`); the leader runs
//! the pipeline exactly as a single instance does, with its JetStream stream as the log
//! (`log::stream`). Every other instance forwards the pipeline's requests to it (`api::forward`).
//!
//! One loop per instance, every fifth of the lease timeout (sooner when a lease another
//! instance holds expires before then, just after it expires): heartbeat; renew every lease it
//! holds (a lease it can no longer renew is given up at once: the pipeline stops being served
//! here); take over every pipeline whose lease is free or expired (recover it from its latest
//! checkpoint and its stream, on its own task, renewing the lease meanwhile); give up a
//! pipeline whose log failed (another round recovers it from the stream).
//!
//! A lease is acted on only until `renewed at + timeout − timeout/5` by this process's
//! monotonic clock, measured from when the renewal was SENT: a paused process (SIGSTOP) wakes
//! up past it and serves nothing before its next successful renewal; whatever it still
//! tries is refused by the stream (its records are fenced) or by the checkpoint transaction.

use super::Service;
use crate::config::ClusterConfig;
use crate::engine::{EngineConfig, Extractor};
use crate::log::stream::Streams;
use crate::spec::PipelineSpec;
use crate::store::{Fence, Lease, Leases, MemberRow, StoreError, StoredPipeline};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long after another instance's lease expires the round that may take it over runs
/// (the database's clock decides; this covers the time the expiry was read in).
const EXPIRY_MARGIN: Duration = Duration::from_millis(25);

/// This instance's part in the cluster.
pub struct Cluster {
    pub leases: Leases,
    pub streams: Streams,
    /// Where other instances reach this one.
    pub url: String,
    pub timeout: Duration,
    /// The client requests are forwarded to leaders with.
    pub http: reqwest::Client,
    /// Pipelines led here: their epoch and until when the lease may be acted on.
    leading: Mutex<HashMap<String, Leading>>,
    /// Pipelines being recovered here under a lease just taken (its epoch).
    recovering: Mutex<HashMap<String, i64>>,
    /// The leases and members as last read.
    view: RwLock<View>,
    /// Per stored pipeline (by its spec document), what validates its events here before
    /// they are forwarded to its leader, and its spec.
    edges: RwLock<HashMap<String, Edge>>,
    /// Partitions owned here (pipelines whose partitions are spread over instances).
    pub(super) owned: Mutex<super::owners::OwnedMap>,
    /// The partition leases as last read.
    pub(super) partitions: RwLock<Vec<crate::store::PartitionLease>>,
}

/// A stored pipeline as this instance knows it: its spec document, what validates its
/// events, and its spec.
struct Edge {
    document: serde_json::Value,
    extractor: Arc<Extractor>,
    spec: Arc<PipelineSpec>,
}

#[derive(Clone, Copy, Debug)]
struct Leading {
    epoch: i64,
    valid_until: Instant,
}

#[derive(Default)]
struct View {
    leases: HashMap<String, Lease>,
    members: Vec<MemberRow>,
}

/// Where a pipeline's requests are answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Here (this instance leads it, or no instance knows it: the answer is this one's 404).
    Here,
    /// At its leader's URL.
    There(String),
    /// Nobody can answer right now (its leader is gone and the lease not yet taken over, or
    /// it is being recovered): 503 with Retry-After.
    Unavailable,
}

/// What a round of the loop saw of one pipeline.
pub struct LeaderView {
    pub name: String,
    pub leader: Option<String>,
    pub applied: Option<i64>,
}

impl Cluster {
    /// Connects to NATS and PostgreSQL as member `node`, reachable at `url`.
    pub async fn connect(
        config: &ClusterConfig,
        database_url: &str,
        node: &str,
        url: &str,
    ) -> Result<Cluster, ClusterError> {
        let leases = Leases::connect(database_url, node, config.lease_timeout).await?;
        let streams = Streams::connect(&config.nats_url, &config.name, config.replicas)
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        leases.heartbeat(url).await?;
        Ok(Cluster {
            leases,
            streams,
            url: url.to_owned(),
            timeout: config.lease_timeout,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| ClusterError::Http(format!("HTTP client: {e}")))?,
            leading: Mutex::default(),
            recovering: Mutex::default(),
            view: RwLock::default(),
            edges: RwLock::default(),
            owned: Mutex::default(),
            partitions: RwLock::default(),
        })
    }

    /// This instance's id.
    pub fn node(&self) -> &str {
        self.leases.node()
    }

    /// How long a renewed lease may be acted on.
    pub(super) fn validity(&self) -> Duration {
        self.timeout - self.timeout / 5
    }

    /// The fence of a pipeline led here under a lease still valid.
    pub fn leads(&self, name: &str) -> Option<Fence> {
        let leading = self.leading.lock().expect("cluster lock");
        let lead = leading.get(name)?;
        (Instant::now() < lead.valid_until).then(|| Fence {
            node: self.node().to_owned(),
            epoch: lead.epoch,
        })
    }

    /// Starts leading `name` under `epoch` (a lease just taken at `taken`).
    pub fn lead(&self, name: &str, epoch: i64, taken: Instant) {
        let valid_until = taken + self.validity();
        let lead = Leading { epoch, valid_until };
        self.leading
            .lock()
            .expect("cluster lock")
            .insert(name.to_owned(), lead);
    }

    /// Stops leading `name` (deleted, or the lease lost): the epoch it was led under.
    pub fn unlead(&self, name: &str) -> Option<i64> {
        let lead = self.leading.lock().expect("cluster lock").remove(name);
        lead.map(|l| l.epoch)
    }

    /// Where the requests of pipeline `name` go; reads the leases again when the last view
    /// does not name a live leader elsewhere.
    pub async fn route(&self, name: &str) -> Route {
        if self.leads(name).is_some() {
            return Route::Here;
        }
        if let Some(route) = self.remote(name) {
            return route;
        }
        if let Err(e) = self.refresh().await {
            tracing::debug!(pipeline = name, reason = %e, "cannot read the leases");
            return Route::Unavailable;
        }
        if self.leads(name).is_some() {
            return Route::Here;
        }
        // The read lock is let go before `remote` takes it again: a writer waiting between
        // two read locks of one thread would block both for good.
        let known = self
            .view
            .read()
            .expect("cluster lock")
            .leases
            .contains_key(name);
        match known {
            false => Route::Here,
            true => self.remote(name).unwrap_or(Route::Unavailable),
        }
    }

    /// `There(url)` when the last view names a live leader other than this instance.
    fn remote(&self, name: &str) -> Option<Route> {
        let view = self.view.read().expect("cluster lock");
        let lease = view.leases.get(name)?;
        match (&lease.holder, &lease.url) {
            (Some(holder), Some(url)) if lease.live && holder != self.node() => {
                Some(Route::There(url.clone()))
            }
            _ => None,
        }
    }

    /// Reads the leases and members again.
    async fn refresh(&self) -> Result<(), StoreError> {
        let leases = self.leases.leases().await?;
        let members = self.leases.members().await?;
        let mut view = self.view.write().expect("cluster lock");
        view.leases = leases
            .into_iter()
            .map(|l| (l.pipeline.clone(), l))
            .collect();
        view.members = members;
        Ok(())
    }

    /// What validates the events of pipeline `name` here (known once a round has read its
    /// definition).
    pub fn edge(&self, name: &str) -> Option<Arc<Extractor>> {
        let edges = self.edges.read().expect("cluster lock");
        edges.get(name).map(|e| e.extractor.clone())
    }

    /// The spec of pipeline `name` (known once a round has read its definition).
    pub fn spec(&self, name: &str) -> Option<Arc<PipelineSpec>> {
        let edges = self.edges.read().expect("cluster lock");
        edges.get(name).map(|e| e.spec.clone())
    }

    /// Keeps an extractor and the spec per stored pipeline.
    fn learn(&self, stored: &[StoredPipeline], config: &EngineConfig) {
        let mut edges = self.edges.write().expect("cluster lock");
        edges.retain(|name, e| {
            stored
                .iter()
                .any(|p| &p.name == name && p.spec == e.document)
        });
        for p in stored {
            if edges.contains_key(&p.name) {
                continue;
            }
            if let Ok(spec) = PipelineSpec::from_json(&p.spec) {
                let extractor = Arc::new(crate::engine::spec_extractor(&spec, config));
                let edge = Edge {
                    document: p.spec.clone(),
                    extractor,
                    spec: Arc::new(spec),
                };
                edges.insert(p.name.clone(), edge);
            }
        }
    }

    /// The members as last read.
    pub fn members(&self) -> Vec<MemberRow> {
        self.view.read().expect("cluster lock").members.clone()
    }

    /// Every pipeline's leader (live holder) and applied offset, as last read.
    pub fn leaders(&self) -> Vec<LeaderView> {
        let view = self.view.read().expect("cluster lock");
        let mut leaders: Vec<LeaderView> = view
            .leases
            .values()
            .map(|l| LeaderView {
                name: l.pipeline.clone(),
                leader: l.holder.clone().filter(|_| l.live),
                applied: l.applied,
            })
            .collect();
        leaders.sort_by(|a, b| a.name.cmp(&b.name));
        leaders
    }

    /// How soon the first lease another instance holds expires, as last read.
    fn next_expiry(&self) -> Option<Duration> {
        let view = self.view.read().expect("cluster lock");
        first_expiry(view.leases.values(), self.node())
    }

    /// The URL of member `node`, as last read.
    pub fn url_of(&self, node: &str) -> Option<String> {
        let view = self.view.read().expect("cluster lock");
        view.members
            .iter()
            .find(|m| m.node == node)
            .map(|m| m.url.clone())
    }
}

/// How soon the first live lease that `node` does not hold expires.
fn first_expiry<'a>(leases: impl Iterator<Item = &'a Lease>, node: &str) -> Option<Duration> {
    leases
        .filter(|l| l.live && l.holder.as_deref() != Some(node))
        .filter_map(|l| l.expires_in_ms)
        .min()
        .map(|ms| Duration::from_millis(ms.max(0) as u64))
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Http(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Service {
    /// The loop of cluster mode (see the module's doc), until shutdown; then every lease is
    /// released (after the final checkpoints, by [`Service::leave_cluster`]).
    pub async fn run_cluster(self, cluster: Arc<Cluster>) {
        let round = (cluster.timeout / 5).max(Duration::from_millis(50));
        loop {
            if let Err(e) = self.cluster_round(&cluster).await {
                tracing::warn!(reason = %e, next = "the next round tries again; leases not renewed lapse", "cluster round failed");
            }
            self.ready.store(true, std::sync::atomic::Ordering::Release);
            // The next round comes early when another instance's lease expires before it, so
            // that a dead leader's pipelines are taken over at once, not up to a round late.
            let pause = cluster
                .next_expiry()
                .map_or(round, |e| round.min(e + EXPIRY_MARGIN));
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn cluster_round(&self, cluster: &Arc<Cluster>) -> Result<(), StoreError> {
        cluster.leases.heartbeat(&cluster.url).await?;
        self.renew_leases(cluster).await?;
        cluster.refresh().await?;
        let stored = self.take_over(cluster).await?;
        self.own_partitions(cluster, &stored).await
    }

    /// Renews every lease held here; gives up those it cannot renew and those whose
    /// pipeline's log failed.
    async fn renew_leases(&self, cluster: &Arc<Cluster>) -> Result<(), StoreError> {
        let leading: Vec<(String, i64)> = {
            let leading = cluster.leading.lock().expect("cluster lock");
            leading.iter().map(|(n, l)| (n.clone(), l.epoch)).collect()
        };
        for (name, epoch) in leading {
            let pipeline = self.engine.get(&name);
            if let Some(reason) = pipeline.as_ref().and_then(|p| p.failure()) {
                tracing::warn!(pipeline = %name, reason = %reason, next = "it is recovered from its checkpoint and stream", "pipeline failed: giving up its lease");
                self.give_up(cluster, &name, "released").await;
                cluster.leases.release(&name, epoch).await?;
                continue;
            }
            let applied = match &pipeline {
                Some(p) => p.status().await.ok().and_then(|s| s.wal_offset),
                None => None,
            };
            let sent = Instant::now();
            if cluster
                .leases
                .renew(&name, epoch, applied.map(|a| a as i64))
                .await?
            {
                cluster.lead(&name, epoch, sent);
            } else {
                tracing::warn!(pipeline = %name, epoch, "lease lost: another instance leads the pipeline");
                self.give_up(cluster, &name, "lost").await;
            }
        }
        let recovering: Vec<(String, i64)> = {
            let recovering = cluster.recovering.lock().expect("cluster lock");
            recovering.iter().map(|(n, e)| (n.clone(), *e)).collect()
        };
        for (name, epoch) in recovering {
            cluster.leases.renew(&name, epoch, None).await?;
        }
        Ok(())
    }

    /// Stops serving `name` here (its lease `kind`: lost or released).
    async fn give_up(&self, cluster: &Cluster, name: &str, kind: &'static str) {
        cluster.unlead(name);
        if let Some(pipeline) = self.engine.remove(name) {
            pipeline.close();
            let partitions = pipeline.spec().map_or(1, |s| s.partitions);
            crate::metrics::lease_changed(name, partitions, kind);
        }
    }

    /// Takes the lease of every pipeline no live instance leads, and recovers it; answers
    /// the stored pipelines.
    async fn take_over(&self, cluster: &Arc<Cluster>) -> Result<Vec<StoredPipeline>, StoreError> {
        let stored = self.store.pipelines().await?;
        cluster.learn(&stored, &self.config.engine);
        let defined: HashSet<&str> = stored.iter().map(|p| p.name.as_str()).collect();
        let orphans: Vec<String> = {
            let view = cluster.view.read().expect("cluster lock");
            view.leases
                .values()
                .filter(|l| !l.live && !defined.contains(l.pipeline.as_str()))
                .map(|l| l.pipeline.clone())
                .collect()
        };
        for name in orphans {
            // A creation that stopped between its lease and its definition.
            cluster.leases.forget(&name).await?;
        }
        for stored in &stored {
            let name = stored.name.clone();
            // Led here (valid or not: its renewal decides) or being recovered here.
            let busy = cluster
                .leading
                .lock()
                .expect("cluster lock")
                .contains_key(&name)
                || cluster
                    .recovering
                    .lock()
                    .expect("cluster lock")
                    .contains_key(&name);
            let free = {
                let view = cluster.view.read().expect("cluster lock");
                view.leases.get(&name).is_none_or(|l| !l.live)
            };
            if busy || !free {
                continue;
            }
            let taken = Instant::now();
            let Some(epoch) = cluster.leases.acquire(&name).await? else {
                continue;
            };
            let spec = match PipelineSpec::from_json(&stored.spec) {
                Ok(spec) => spec,
                Err(errors) => {
                    tracing::error!(pipeline = %name, detail = ?errors, "stored pipeline is no longer valid; not taken over");
                    cluster.leases.release(&name, epoch).await?;
                    continue;
                }
            };
            cluster
                .recovering
                .lock()
                .expect("cluster lock")
                .insert(name.clone(), epoch);
            tracing::info!(pipeline = %name, epoch, "lease taken: recovering the pipeline");
            crate::metrics::lease_changed(&name, spec.partitions, "acquired");
            let (service, cluster) = (self.clone(), cluster.clone());
            tokio::spawn(async move {
                service.recover_led(&cluster, spec, epoch, taken).await;
            });
        }
        Ok(stored)
    }

    /// Recovers a pipeline whose lease was just taken and serves it; on failure the lease
    /// is released (a later round, here or elsewhere, tries again).
    async fn recover_led(
        &self,
        cluster: &Arc<Cluster>,
        spec: PipelineSpec,
        epoch: i64,
        taken: Instant,
    ) {
        let name = spec.name.clone();
        let fence = Fence {
            node: cluster.node().to_owned(),
            epoch,
        };
        let started = Instant::now();
        let recovered = self.checkpoints.recover(spec, Some(fence)).await;
        cluster
            .recovering
            .lock()
            .expect("cluster lock")
            .remove(&name);
        match recovered {
            Ok(pipeline) => {
                self.launch(pipeline);
                // Valid from when the lease was taken or last renewed, whichever is later.
                cluster.lead(&name, epoch, taken.max(started));
                if cluster.leases.renew(&name, epoch, None).await.is_ok() {
                    cluster.lead(&name, epoch, Instant::now());
                }
                tracing::info!(pipeline = %name, epoch, took_ms = started.elapsed().as_millis() as u64, "pipeline taken over");
            }
            Err(e) => {
                tracing::error!(pipeline = %name, epoch, reason = %e, next = "the lease is released; a later round tries again", "pipeline not recovered");
                let _ = cluster.leases.release(&name, epoch).await;
            }
        }
    }

    /// What validates the events of pipeline `name` at this instance (cluster mode): the
    /// definitions are read again when a round has not seen it yet.
    pub async fn edge(
        &self,
        cluster: &Cluster,
        name: &str,
    ) -> Result<Option<Arc<Extractor>>, StoreError> {
        if let Some(edge) = cluster.edge(name) {
            return Ok(Some(edge));
        }
        cluster.learn(&self.store.pipelines().await?, &self.config.engine);
        Ok(cluster.edge(name))
    }

    /// Cluster mode: the spec of pipeline `name` when its partitions are spread over
    /// instances (more than one partition), so that its state is read at the owners.
    pub async fn spread(
        &self,
        name: &str,
    ) -> Result<Option<(Arc<Cluster>, Arc<PipelineSpec>)>, StoreError> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        if self.edge(cluster, name).await?.is_none() {
            return Ok(None);
        }
        let spec = cluster.spec(name).filter(|s| s.partitions > 1);
        Ok(spec.map(|spec| (cluster.clone(), spec)))
    }

    /// At shutdown, after the final checkpoints: every lease released at once and this
    /// member listed as gone.
    pub async fn leave_cluster(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        self.checkpoint_owned(cluster).await;
        self.stop_partitions(cluster);
        match cluster.leases.leave().await {
            Ok(()) => {
                for pipeline in self.engine.list() {
                    let partitions = pipeline.spec().map_or(1, |s| s.partitions);
                    crate::metrics::lease_changed(pipeline.name(), partitions, "released");
                }
                tracing::info!("leases released")
            }
            Err(e) => {
                tracing::warn!(reason = %e, next = "they expire after the lease timeout", "leases not released")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, live: bool, expires_in_ms: Option<i64>) -> Lease {
        Lease {
            pipeline: "p".into(),
            holder: holder.map(str::to_owned),
            epoch: 1,
            live,
            url: None,
            applied: None,
            expires_in_ms,
        }
    }

    #[test]
    fn the_first_expiry_is_of_a_live_lease_held_elsewhere() {
        let leases = [
            lease(Some("me"), true, Some(100)),
            lease(Some("other"), true, Some(800)),
            lease(Some("third"), true, Some(300)),
            lease(Some("dead"), false, Some(-50)),
            lease(None, false, None),
        ];
        assert_eq!(
            first_expiry(leases.iter(), "me"),
            Some(Duration::from_millis(300))
        );
        assert_eq!(first_expiry(leases[..1].iter(), "me"), None);
        // Read just as it expired: at once.
        let expiring = [lease(Some("other"), true, Some(-1))];
        assert_eq!(first_expiry(expiring.iter(), "me"), Some(Duration::ZERO));
    }
}
