//! Operations: `/healthz` (alive), `/readyz` (store reachable, recovery done), `/metrics`
//! (Prometheus text; per-pipeline gauges are refreshed at each scrape).

use super::problem::{ApiError, Problem};
use crate::app::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use std::sync::atomic::Ordering;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
}

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Store reachable and recovery done", body = Health),
        (status = 503, description = "Not ready: recovery is not finished, the store does not answer, or a pipeline failed to start (`pipeline_failed`, naming it)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    if !app.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable {
            detail: "recovery is not finished".into(),
        });
    }
    let failed = app.engine.failed_list();
    if let Some(first) = failed.first() {
        let mut reason = first.reason.clone();
        if failed.len() > 1 {
            let others: Vec<&str> = failed[1..].iter().map(|f| f.spec.name.as_str()).collect();
            reason += &format!(" (failed too: {})", others.join(", "));
        }
        return Err(ApiError::PipelineFailed {
            name: first.spec.name.clone(),
            reason,
        });
    }
    app.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "store does not answer");
        ApiError::Unavailable {
            detail: "the store does not answer".into(),
        }
    })?;
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    for pipeline in app.engine.list() {
        let name = pipeline.name().to_owned();
        if let Ok(status) = pipeline.status().await {
            metrics::gauge!("eddy_pipeline_events", "pipeline" => name.clone())
                .set(status.events as f64);
            metrics::gauge!("eddy_pipeline_late_events", "pipeline" => name.clone())
                .set(status.late_events as f64);
            if let Some(wm) = status.watermark {
                metrics::gauge!("eddy_pipeline_watermark_ms", "pipeline" => name.clone())
                    .set(wm as f64);
            }
            for (op, keys) in status.keys {
                metrics::gauge!("eddy_operator_keys", "pipeline" => name.clone(), "operator" => op)
                    .set(keys as f64);
            }
        }
        for (shard, depth) in pipeline.queue_depths().into_iter().enumerate() {
            let shard = shard.to_string();
            metrics::gauge!("eddy_shard_queue_depth", "pipeline" => name.clone(), "shard" => shard)
                .set(depth as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
