//! `openapi/openapi.json` is generated from the code; this fails when they differ.
//! Regenerate with: UPDATE_OPENAPI=1 cargo test --test openapi

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let fresh = eddy::api::openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(PATH, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        committed == fresh,
        "openapi/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test --test openapi"
    );
}

#[test]
fn every_contract_path_is_documented() {
    let doc = eddy::api::openapi();
    let paths: Vec<&String> = doc.paths.paths.keys().collect();
    for path in [
        "/v1/pipelines",
        "/v1/pipelines/{name}",
        "/v1/pipelines/{name}/events",
        "/v1/pipelines/{name}/watermark",
        "/v1/pipelines/{name}/operators/{op}/state",
        "/v1/pipelines/{name}/output",
        "/v1/pipelines/{name}/output/stream",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.iter().any(|p| *p == path),
            "{path} missing from {paths:?}"
        );
    }
}
