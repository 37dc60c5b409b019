//! Operations: `/healthz` (alive), `/readyz` (store reachable, recovery done), `/metrics`
//! (Prometheus text: every family is described in `crate::metrics`).

use super::problem::ApiError;
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
    pub status: HealthStatus,
}

/// What a health answer says: alive (`/healthz`) or ready (`/readyz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Ready,
}

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// Readiness
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Store reachable and recovery done", body = Health),
        (status = 503, description = "Not ready: recovery is not finished, the store does not answer, or a pipeline failed to start (`pipeline_failed`, naming it)"),
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
        tracing::warn!(reason = %e, next = "readiness answers 503 until the store answers again", "store does not answer");
        ApiError::Unavailable {
            detail: "the store does not answer".into(),
        }
    })?;
    Ok(Json(Health {
        status: HealthStatus::Ready,
    }))
}

/// Prometheus metrics
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::app::scrape_metrics(&app).await,
    )
}
