//! The REST API of the contract. Each module registers its own routes with their OpenAPI
//! annotations, so the route table and the published document cannot drift apart.

pub mod access;
mod answers;
mod checkpoints;
pub mod cluster;
pub mod conventions;
mod events;
mod health;
pub mod middleware;
mod output;
pub mod pages;
mod pipelines;
pub mod problem;
mod queries;
mod state;
mod token;

pub use checkpoints::{CheckpointDto, CheckpointList, Restored};
pub use events::{EventsAccepted, WatermarkRequest, WatermarkResponse};
pub use output::OutputPage;
pub use pipelines::{PipelineList, PipelineSpecDoc, PipelineStatus};
pub use queries::{StateItem, StatePage};
pub use state::AppState;
pub use token::TokenInfo;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eddy",
        version = "0.1.0",
        description = "A stateful stream-processing service: keyed state, event time, checkpoints."
    ),
    tags(
        (name = "pipelines", description = "Pipeline definitions and their live status"),
        (name = "events", description = "Ingest and watermarks"),
        (name = "state", description = "Live keyed state of operators"),
        (name = "output", description = "Closed sessions and windows as a feed"),
        (name = "checkpoints", description = "Transactional checkpoints: trigger, list, restore"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

/// Every route of the API with its OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(pipelines::routes())
        .merge(events::routes())
        .merge(queries::routes())
        .merge(output::routes())
        .merge(checkpoints::routes())
        .merge(health::routes())
        .merge(token::routes())
        .merge(cluster::routes())
}

/// The OpenAPI document of the API, as generated from the code.
pub fn openapi() -> utoipa::openapi::OpenApi {
    secured(routes().split_for_parts().1)
}

/// Declares bearer tokens, and their 401 and 403 answers on every `/v1` operation (access is
/// enforced by a middleware, not per handler). The token is optional, for the whole document
/// (an empty requirement beside it): without a tokens file access is open. Said once at the
/// top rather than per operation, because generators (openapi-python-client) read an
/// operation's own requirement as "a token is required", whatever its alternatives.
pub fn secured(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
    let components = doc.components.get_or_insert_with(Default::default);
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some("An API token (`eddy token new`)"))
        .build();
    components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    doc.security = Some(vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::default(),
    ]);
    let problem = |description: &str| {
        let content = ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "Problem",
            ))))
            .build();
        ResponseBuilder::new()
            .description(description)
            .content(problem::PROBLEM_JSON, content)
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            responses.insert(
                "401".into(),
                RefOr::T(problem("No or an unknown bearer token")),
            );
            responses.insert(
                "403".into(),
                RefOr::T(problem("The token lacks the scope or the pipeline")),
            );
        }
    }
    doc
}

/// Checks `?limit=`: default 100, from 1 to 1000.
fn page_limit(limit: Option<u32>) -> Result<usize, problem::ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n as usize),
        Some(n) => Err(problem::ApiError::bad_request(format!(
            "limit must be from 1 to 1000, not {n}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(super::openapi()).expect("the document serialises")
    }

    #[test]
    fn the_token_is_optional_once_for_the_whole_document() {
        let doc = document();
        assert_eq!(doc["security"], serde_json::json!([{"bearer": []}, {}]));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(
                    op.get("security").is_none(),
                    "{method} {path} overrides the document's optional token"
                );
            }
        }
    }

    #[test]
    fn the_events_body_is_one_event_or_an_array_in_json_or_ndjson_text() {
        let doc = document();
        let content =
            &doc["paths"]["/v1/pipelines/{name}/events"]["post"]["requestBody"]["content"];
        assert_eq!(
            content["application/json"]["schema"]["$ref"],
            "#/components/schemas/EventsBody"
        );
        let body = &doc["components"]["schemas"]["EventsBody"]["oneOf"];
        assert_eq!(body[0]["$ref"], "#/components/schemas/Event");
        assert_eq!(body[1]["type"], "array");
        let ndjson = &doc["components"]["schemas"]["NdjsonEvents"];
        assert_eq!(
            (&ndjson["type"], &ndjson["format"]),
            (&"string".into(), &"binary".into())
        );
    }

    #[test]
    fn headers_are_strings_and_sse_is_an_event_stream() {
        let doc = document();
        let stream = &doc["paths"]["/v1/pipelines/{name}/output/stream"]["get"];
        let last_event_id = stream["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Last-Event-ID")
            .expect("Last-Event-ID is documented");
        assert_eq!(last_event_id["schema"]["type"], "string");
        assert!(stream["responses"]["200"]["content"]["text/event-stream"].is_object());
    }
}
