//! `GET /v1/cluster`: the members, and per pipeline its leader and its partitions' owners.
//! A single instance (no cluster mode) is the one member: alive, leader and owner of
//! everything; a partition's applied offset is the pipeline's last event offset.

use super::AppState;
use super::access::may_touch;
use super::problem::ApiError;
use crate::auth::Principal;
use crate::service::Served;
use crate::store::PartitionLease;
use axum::Json;
use axum::extract::{Extension, State};
use serde::Serialize;
use std::net::SocketAddr;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_cluster))
}

/// The address the server is bound to (set by `app::serve`), from which the node's default
/// id and URL are derived.
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub SocketAddr);

/// The cluster as this instance sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// This instance's id.
    pub node: String,
    pub members: Vec<Member>,
    /// Pipelines by name.
    pub pipelines: Vec<PipelineOwners>,
}

/// An instance of the service.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub node: String,
    /// Where other instances and clients reach it, `http://host:port`.
    pub url: String,
    pub alive: bool,
    /// RFC 3339: when it was last heard from.
    pub last_seen: String,
}

/// Who leads a pipeline and who owns each of its partitions.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineOwners {
    pub name: String,
    /// The node whose sequencer orders the pipeline's events.
    pub leader: String,
    pub partitions: Vec<PartitionOwner>,
}

/// One partition: a contiguous range of key groups.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionOwner {
    /// From 0.
    pub id: u16,
    /// `[first, last]`, inclusive.
    pub key_groups: [u32; 2],
    /// The node applying the partition.
    pub owner: String,
    /// Highest event offset the partition has applied through; null before any event.
    pub applied_offset: Option<u64>,
}

/// The cluster: members, leaders and partition owners
///
/// Without cluster mode the instance is the only member, leader and owner of everything.
#[utoipa::path(get, path = "/v1/cluster", tag = "operations",
    responses((status = 200, description = "Members, leaders and partition owners", body = ClusterView)))]
async fn get_cluster(
    State(app): State<AppState>,
    principal: Option<Extension<Principal>>,
    local: Option<Extension<LocalAddr>>,
) -> Result<Json<ClusterView>, ApiError> {
    if app.cluster.is_some() {
        return Ok(Json(cluster_view(&app, principal.as_deref()).await?));
    }
    let addr = local.map_or(app.config.listen, |l| l.0.0);
    let (node, url) = (app.config.node_at(addr), app.config.url_at(addr));
    let mut pipelines = Vec::new();
    for served in app.served_list().into_values() {
        let spec = match &served {
            Served::Running(pipeline) => match pipeline.spec() {
                Some(spec) => spec.clone(),
                None => continue,
            },
            Served::Failed(failed) => failed.spec.clone(),
        };
        if !may_touch(principal.as_deref(), &spec.name) {
            continue;
        }
        let applied_offset = match &served {
            Served::Running(pipeline) => pipeline.status().await?.wal_offset,
            // Nothing after its latest checkpoint was applied.
            Served::Failed(_) => None,
        };
        let partitions = partitions(&spec, &node, applied_offset);
        pipelines.push(PipelineOwners {
            name: spec.name.clone(),
            leader: node.clone(),
            partitions,
        });
    }
    let member = Member {
        node: node.clone(),
        url,
        alive: true,
        last_seen: super::checkpoints::rfc3339(crate::clock::now_ms()),
    };
    Ok(Json(ClusterView {
        node,
        members: vec![member],
        pipelines,
    }))
}

/// Cluster mode: the members and leases as this instance last read them (every fifth of the
/// lease timeout); a pipeline led here reports its applied offset now, one led elsewhere the
/// one its leader recorded at its last renewal; a pipeline whose partitions are spread, each
/// partition's owner and the offset it recorded at its last renewal.
async fn cluster_view(
    app: &AppState,
    principal: Option<&Principal>,
) -> Result<ClusterView, ApiError> {
    let cluster = app.cluster.clone().expect("cluster mode");
    let node = cluster.node().to_owned();
    let members = cluster
        .members()
        .into_iter()
        .map(|m| Member {
            node: m.node,
            url: m.url,
            alive: m.alive,
            last_seen: super::checkpoints::rfc3339(m.last_seen),
        })
        .collect();
    let leaders: std::collections::HashMap<String, _> = cluster
        .leaders()
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
    let owners = cluster.partition_leases();
    let mut pipelines = Vec::new();
    for stored in app.store.pipelines().await? {
        if !may_touch(principal, &stored.name) {
            continue;
        }
        let Ok(spec) = crate::spec::PipelineSpec::from_json(&stored.spec) else {
            continue;
        };
        let led_here = app.engine.get(&spec.name);
        let (leader, applied_offset) = match &led_here {
            Some(pipeline) if cluster.leads(&spec.name).is_some() => {
                (node.clone(), pipeline.status().await?.wal_offset)
            }
            _ => {
                let seen = leaders.get(&spec.name);
                let leader = seen.and_then(|l| l.leader.clone()).unwrap_or_default();
                (leader, seen.and_then(|l| l.applied).map(|a| a as u64))
            }
        };
        let partitions = match spec.partitions {
            1 => partitions(&spec, &leader, applied_offset),
            _ => spread(&spec, &owners),
        };
        pipelines.push(PipelineOwners {
            name: spec.name.clone(),
            leader,
            partitions,
        });
    }
    Ok(ClusterView {
        node,
        members,
        pipelines,
    })
}

/// The partitions of `spec`, all owned by `owner` (the leader), applied through `applied`.
fn partitions(
    spec: &crate::spec::PipelineSpec,
    owner: &str,
    applied: Option<u64>,
) -> Vec<PartitionOwner> {
    (0..spec.partitions)
        .map(|id| PartitionOwner {
            id,
            key_groups: spec.key_groups(id),
            owner: owner.to_owned(),
            applied_offset: applied,
        })
        .collect()
}

/// The partitions of `spec`, spread over instances: each one's live owner (`""` while it has
/// none) and the applied offset its owner recorded at its last renewal.
fn spread(spec: &crate::spec::PipelineSpec, leases: &[PartitionLease]) -> Vec<PartitionOwner> {
    (0..spec.partitions)
        .map(|id| {
            let lease = leases
                .iter()
                .find(|l| l.pipeline == spec.name && l.partition == i32::from(id));
            PartitionOwner {
                id,
                key_groups: spec.key_groups(id),
                owner: lease
                    .filter(|l| l.live)
                    .and_then(|l| l.holder.clone())
                    .unwrap_or_default(),
                applied_offset: lease.and_then(|l| l.applied).map(|a| a as u64),
            }
        })
        .collect()
}
