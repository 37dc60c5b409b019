//! Operations: `/healthz` (alive), `/readyz` (store reachable, recovery done), `/metrics`
//! (Prometheus text: every family is described in `crate::metrics`).

use super::AppState;
use super::problem::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
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
    app.readiness().await?;
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
        app.scrape_metrics().await,
    )
}
