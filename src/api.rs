//! The REST API of the contract. Each module registers its own routes with their OpenAPI
//! annotations, so the route table and the published document cannot drift apart.

pub mod access;
mod answers;
mod checkpoints;
pub mod cluster;
pub mod conventions;
mod events;
pub mod forward;
mod health;
pub mod middleware;
mod output;
pub mod pages;
mod pipelines;
pub mod problem;
mod queries;
mod state;
mod token;

pub use answers::{PipelineAnswer, PipelineList, PipelineStatus};
pub use checkpoints::{CheckpointDto, CheckpointList, Restored};
pub use events::{EventsAccepted, WatermarkRequest, WatermarkResponse};
pub use output::OutputPage;
pub use pipelines::PipelineSpecDoc;
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
    ),
    // Every error answer's body (see `problems`), whichever operation it comes from.
    components(schemas(problem::Problem))
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
    document(routes().split_for_parts().1)
}

/// The document of the routes completed with what holds for every operation: the bearer
/// token ([`secured`]) and the problem documents of the error answers ([`problems`]).
pub fn document(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    problems(secured(doc))
}

/// Declares bearer tokens, and their 401 and 403 answers on every `/v1` operation (access is
/// enforced by a middleware, not per handler). The token is optional, for the whole document
/// (an empty requirement beside it): without a tokens file access is open. Said once at the
/// top rather than per operation, because generators (openapi-python-client) read an
/// operation's own requirement as "a token is required", whatever its alternatives.
fn secured(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{RefOr, ResponseBuilder};
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
        let response = ResponseBuilder::new().description(description);
        RefOr::T(
            response
                .content(problem::PROBLEM_JSON, problem_content())
                .build(),
        )
    };
    for operation in operations(&mut doc, "/v1/") {
        let responses = &mut operation.responses.responses;
        responses.insert("401".into(), problem("No or an unknown bearer token"));
        responses.insert(
            "403".into(),
            problem("The token lacks the scope or the pipeline"),
        );
    }
    doc
}

/// Every error answer is a problem document (an `ApiError` is the only way a handler fails):
/// an annotation gives a 4xx or 5xx status its description only, and its body is said here,
/// once for the whole document.
fn problems(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::RefOr;
    for operation in operations(&mut doc, "/") {
        for (status, response) in operation.responses.responses.iter_mut() {
            let error = status.starts_with('4') || status.starts_with('5');
            if let RefOr::T(response) = response
                && error
                && response.content.is_empty()
            {
                let content = problem_content();
                response
                    .content
                    .insert(problem::PROBLEM_JSON.into(), content);
            }
        }
    }
    doc
}

/// A `Problem` body.
fn problem_content() -> utoipa::openapi::Content {
    use utoipa::openapi::{Ref, RefOr, content::ContentBuilder};
    let schema = RefOr::Ref(Ref::from_schema_name("Problem"));
    ContentBuilder::new().schema(Some(schema)).build()
}

/// The operations of the paths starting with `prefix`.
fn operations<'d>(
    doc: &'d mut utoipa::openapi::OpenApi,
    prefix: &'d str,
) -> impl Iterator<Item = &'d mut utoipa::openapi::path::Operation> {
    doc.paths
        .paths
        .iter_mut()
        .filter(move |(path, _)| path.starts_with(prefix))
        .flat_map(|(_, item)| {
            [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
        })
        .flatten()
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
    fn every_error_answer_is_a_problem_document() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &response["content"]["application/problem+json"]["schema"];
                        assert_eq!(
                            schema["$ref"], "#/components/schemas/Problem",
                            "{method} {path} {status}"
                        );
                    }
                }
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
