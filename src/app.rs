//! The wiring on top: start-up of the service, the full router (the API, `/docs`, the pages
//! and the dashboard, with every layer in its order) and serving with graceful shutdown.
//! It may import every module; none imports it.

use crate::api::{self, AppState, conventions, middleware as mw};
use crate::config::Config;
use crate::service::{Service, StartError};
use axum::Router;
use axum::http::{HeaderName, StatusCode};
use axum::middleware;
use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

/// Opens the store, applies migrations and recovers every stored pipeline.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<AppState, StartError> {
    let service = Service::open(config, shutdown).await?;
    service.recover().await?;
    Ok(AppState::new(service))
}

/// The full router: the API, `/docs`, the pages, problem+json for every error, and the layers.
pub fn router(state: AppState) -> Router {
    let (api_router, openapi) = api::routes().split_for_parts();
    let openapi = api::document(openapi);
    let shed = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(mw::shed_error))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.config.max_concurrent_requests,
        ));
    let router = api_router
        // Inside the access check (a forwarded request is checked here and at the leader).
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            api::forward::to_leader,
        ))
        .layer(shed)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .merge(crate::ui::routes())
        .merge(api::pages::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            api::access::require_access,
        ))
        .fallback(mw::route_not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            mw::require_ready,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout,
        ))
        // Outside the timeout, so that its 408 is a problem document too.
        .layer(middleware::map_response(mw::problem_for_bare_errors))
        .layer(middleware::from_fn(conventions::docs_validators))
        // Outside everything that builds a body, so that it compresses the final one.
        .layer(conventions::compression());
    with_outer_layers(router, &state).with_state(state)
}

/// CORS, request ids, the HTTP metrics and the request span, around everything else.
fn with_outer_layers(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let request_id = HeaderName::from_static("x-request-id");
    // CORS outside the readiness and access checks: a preflight is answered by itself, and
    // their refusals carry CORS headers, so that a page can read why it was refused.
    let router = match state.config.cors.clone() {
        Some(origins) => router.layer(middleware::from_fn_with_state(
            conventions::Cors::new(origins),
            conventions::cors,
        )),
        None => router,
    };
    router
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        // Outside the timeout and the problem rewriting: it sees every answer as sent.
        .layer(middleware::from_fn(mw::record_http))
        .layer(middleware::from_fn(conventions::close_when_body_unread))
        .layer(TraceLayer::new_for_http().make_span_with(mw::request_span))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Serves until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = crate::api::cluster::LocalAddr(listener.local_addr()?);
    axum::serve(listener, router(state).layer(axum::Extension(local)))
        .with_graceful_shutdown(shutdown)
        .await
}
