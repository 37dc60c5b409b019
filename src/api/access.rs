//! Access control at the edge: which scope each route needs, checked after routing (the matched
//! route template says which), with the pipeline taken from the path.

use super::AppState;
use super::problem::ApiError;
use crate::auth::{Principal, Scope};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What a route needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Open,
    /// Any known token, whatever its scopes (`/v1/token` tells a token what it may do).
    Token,
    Scope(Scope),
}

fn need(method: &Method, route: &str, metrics_auth: bool) -> Need {
    let write = |scope| {
        if method == Method::GET {
            Need::Scope(Scope::Read)
        } else {
            Need::Scope(scope)
        }
    };
    match route {
        "/healthz" | "/readyz" | "/openapi.json" | "/" | "/problems/{code}" => Need::Open,
        r if r.starts_with("/docs") => Need::Open,
        // The dashboard's static files: the page itself asks for a token and sends it.
        "/ui" | "/ui/" | "/ui/{*file}" => Need::Open,
        "/v1/token" => Need::Token,
        "/metrics" if !metrics_auth => Need::Open,
        "/metrics" => Need::Scope(Scope::Read),
        "/v1/pipelines/{name}/events" | "/v1/pipelines/{name}/watermark" => {
            Need::Scope(Scope::Ingest)
        }
        "/v1/pipelines" | "/v1/pipelines/{name}" | "/v1/pipelines/{name}/checkpoints" => {
            write(Scope::Admin)
        }
        r if r.ends_with("/restore") => Need::Scope(Scope::Admin),
        _ => write(Scope::Admin),
    }
}

/// The pipeline a `/v1/pipelines/{name}/…` path names.
fn pipeline_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/pipelines/")?
        .split('/')
        .next()
        .filter(|n| !n.is_empty())
}

/// Refuses requests without the token, scope or pipeline their route needs; hands the
/// principal to handlers (which filter pipeline lists and check new pipeline names).
pub async fn require_access(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(tokens) = app.tokens() else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let scope = match need(
        req.method(),
        route.as_deref().unwrap_or(""),
        app.config.metrics_auth,
    ) {
        Need::Open => return next.run(req).await,
        Need::Token => None,
        Need::Scope(scope) => Some(scope),
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(principal) = presented.and_then(|t| tokens.authenticate(t)).cloned() else {
        let detail = match presented {
            None => "a bearer token is required (Authorization: Bearer <token>)",
            Some(_) => "the bearer token is not known",
        };
        return ApiError::Unauthorized {
            detail: detail.into(),
        }
        .into_response();
    };
    if let Some(scope) = scope
        && !principal.has(scope)
    {
        let detail = format!(
            "token {:?} lacks the {} scope",
            principal.name,
            scope.as_str()
        );
        return ApiError::Forbidden { detail }.into_response();
    }
    if let Some(pipeline) = pipeline_of(req.uri().path())
        && !principal.may_touch(pipeline)
    {
        let detail = format!(
            "token {:?} may not touch pipeline {pipeline:?}",
            principal.name
        );
        return ApiError::Forbidden { detail }.into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// For handlers: may the request's principal (if access is controlled) touch `pipeline`?
pub fn may_touch(principal: Option<&Principal>, pipeline: &str) -> bool {
    principal.is_none_or(|p| p.may_touch(pipeline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_contracts_scope() {
        let get = Method::GET;
        let post = Method::POST;
        let del = Method::DELETE;
        assert_eq!(need(&get, "/healthz", true), Need::Open);
        assert_eq!(need(&get, "/ui", true), Need::Open);
        assert_eq!(need(&get, "/ui/{*file}", true), Need::Open);
        assert_eq!(need(&get, "/v1/token", false), Need::Token);
        assert_eq!(need(&get, "/", true), Need::Open);
        assert_eq!(need(&get, "/problems/{code}", true), Need::Open);
        assert_eq!(need(&get, "/metrics", false), Need::Open);
        assert_eq!(need(&get, "/metrics", true), Need::Scope(Scope::Read));
        assert_eq!(
            need(&post, "/v1/pipelines/{name}/events", false),
            Need::Scope(Scope::Ingest)
        );
        assert_eq!(
            need(&post, "/v1/pipelines/{name}/watermark", false),
            Need::Scope(Scope::Ingest)
        );
        assert_eq!(need(&get, "/v1/pipelines", false), Need::Scope(Scope::Read));
        assert_eq!(
            need(&post, "/v1/pipelines", false),
            Need::Scope(Scope::Admin)
        );
        assert_eq!(
            need(&del, "/v1/pipelines/{name}", false),
            Need::Scope(Scope::Admin)
        );
        assert_eq!(
            need(&get, "/v1/pipelines/{name}/output/stream", false),
            Need::Scope(Scope::Read)
        );
        assert_eq!(
            need(&post, "/v1/pipelines/{name}/checkpoints", false),
            Need::Scope(Scope::Admin)
        );
        assert_eq!(
            need(
                &post,
                "/v1/pipelines/{name}/checkpoints/{id}/restore",
                false
            ),
            Need::Scope(Scope::Admin)
        );
    }

    #[test]
    fn the_pipeline_comes_from_the_path() {
        assert_eq!(pipeline_of("/v1/pipelines/clicks/events"), Some("clicks"));
        assert_eq!(pipeline_of("/v1/pipelines/clicks"), Some("clicks"));
        assert_eq!(pipeline_of("/v1/pipelines"), None);
    }
}
