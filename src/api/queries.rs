//! `GET …/operators/{op}/state`: one key's state, or every key's, paged in byte order.

use super::AppState;
use super::page_limit;
use super::problem::ApiError;
use crate::engine::Pipeline;
use crate::service::cluster::Cluster;
use crate::spec::PipelineSpec;
use crate::state::Key;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_state))
}

/// Query parameters of a state query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateParams {
    /// One key: answer its state (404 when it has none).
    key: Option<String>,
    /// Only keys starting with this.
    prefix: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The state of one key.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateItem {
    pub key: String,
    /// The operator's answer, e.g. `{"sessions": [...]}`.
    #[schema(value_type = super::answers::StateValue)]
    pub value: Value,
}

/// A page of keys and their state, in key byte order.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatePage {
    pub items: Vec<StateItem>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A state answer: one key (`?key=`) or a page.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StateAnswer {
    One(StateItem),
    Page(StatePage),
}

/// Query an operator's state
#[utoipa::path(
    get, path = "/v1/pipelines/{name}/operators/{op}/state", tag = "state",
    params(
        ("name" = String, Path, description = "Pipeline name"),
        ("op" = String, Path, description = "Operator name"),
        StateParams,
    ),
    responses(
        (status = 200, description = "One key's state, or a page of keys", body = StateAnswer),
        (status = 400, description = "Bad limit or cursor"),
        (status = 404, description = "No such pipeline, operator, or no state for the key"),
    )
)]
async fn get_state(
    State(app): State<AppState>,
    Path((name, op)): Path<(String, String)>,
    Query(params): Query<StateParams>,
) -> Result<Json<StateAnswer>, ApiError> {
    let source = match app.spread(&name).await? {
        Some((_, spec)) if spec.operator_index(&op).is_none() => {
            return Err(ApiError::OperatorNotFound {
                pipeline: spec.name.clone(),
                operator: op,
            });
        }
        Some((cluster, spec)) => Source::Owners(cluster, spec),
        None => Source::Here(app.pipeline(&name)?),
    };
    if let Some(key) = params.key {
        let value = source.get(&op, &key).await?;
        let value = value.ok_or_else(|| ApiError::KeyNotFound {
            operator: op,
            key: key.clone(),
        })?;
        return Ok(Json(StateAnswer::One(StateItem { key, value })));
    }
    let limit = page_limit(params.limit)?;
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let prefix = params.prefix.unwrap_or_default();
    let (items, more) = source.list(&op, after.as_deref(), &prefix, limit).await?;
    Ok(Json(page(items, more)))
}

/// Where an operator's state is read: the pipeline running here, or (cluster mode,
/// partitions spread) every partition's owner, a key at its own.
enum Source {
    Here(Arc<Pipeline>),
    Owners(Arc<Cluster>, Arc<PipelineSpec>),
}

impl Source {
    async fn get(&self, op: &str, key: &str) -> Result<Option<Value>, ApiError> {
        Ok(match self {
            Source::Here(pipeline) => pipeline.state(op, key).await?,
            Source::Owners(cluster, spec) => cluster.owned_state(spec, op, key).await?,
        })
    }

    async fn list(
        &self,
        op: &str,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<(Key, Value)>, bool), ApiError> {
        Ok(match self {
            Source::Here(pipeline) => pipeline.list_state(op, after, prefix, limit).await?,
            Source::Owners(cluster, spec) => {
                cluster.owned_list(spec, op, after, prefix, limit).await?
            }
        })
    }
}

/// A page of keys and their state; the cursor names its last key when more follow.
fn page(items: Vec<(Key, Value)>, more: bool) -> StateAnswer {
    let next_cursor = more
        .then(|| items.last().map(|(k, _)| hex::encode(k.as_bytes())))
        .flatten();
    let items = items
        .into_iter()
        .map(|(k, value)| StateItem {
            key: k.to_string(),
            value,
        })
        .collect();
    StateAnswer::Page(StatePage { items, next_cursor })
}

/// A cursor is the hex of the last key of the previous page.
fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!("cursor {cursor:?} is not one this server gave"))
        })
}
