//! HTTP conventions, on a real server over real HTTP: compression (and what must not be
//! compressed), validators on the docs assets, CORS for configured origins only, the `/` page,
//! and problem `type` URIs that name their code and resolve to its documentation.
//!
//! Over 400 lines for a reason: one binary for every HTTP convention, one test each, so that the
//! conventions are read in one place.

mod common;

use common::{Backend, TestServer, expect_problem};
use eddy::config::CorsOrigins;
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, ORIGIN,
};
use serde_json::{Value, json};
use std::io::Read;

async fn server() -> TestServer {
    TestServer::start(Backend::Sqlite).await
}

async fn server_with_cors(origins: CorsOrigins) -> TestServer {
    TestServer::start_with(Backend::Sqlite, |c| c.cors = Some(origins)).await
}

/// Body bytes and content encoding of a GET with `Accept-Encoding: encoding`.
async fn get_encoded(server: &TestServer, path: &str, encoding: &str) -> (Option<String>, Vec<u8>) {
    let resp = server
        .client
        .get(server.url(path))
        .header(ACCEPT_ENCODING, encoding)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    let coding = resp
        .headers()
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap().to_owned());
    (coding, resp.bytes().await.unwrap().to_vec())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[tokio::test]
async fn the_swagger_bundle_is_compressed_in_each_coding_the_client_accepts() {
    let server = server().await;
    let path = "/docs/swagger-ui-bundle.js";
    let (coding, plain) = get_encoded(&server, path, "identity").await;
    assert_eq!(coding, None);
    assert!(
        plain.len() > 1_000_000,
        "the bundle is {} bytes",
        plain.len()
    );
    let (coding, gzip) = get_encoded(&server, path, "gzip").await;
    assert_eq!(coding.as_deref(), Some("gzip"));
    assert_eq!(gunzip(&gzip), plain, "gzip decodes to the bundle");
    for encoding in ["br", "zstd"] {
        let (coding, body) = get_encoded(&server, path, encoding).await;
        assert_eq!(coding.as_deref(), Some(encoding));
        assert!(
            body.len() < plain.len() / 2,
            "{encoding}: {} bytes",
            body.len()
        );
    }
}

#[tokio::test]
async fn json_answers_are_compressed_above_the_floor_and_not_below() {
    let server = server().await;
    server.create_seed().await;
    let events: Vec<Value> = (0..300)
        .map(|i| json!({"user_id": format!("user-{i:04}"), "ts": 1_700_000_000_000i64 + i, "page": "/home"}))
        .collect();
    // The events answer (~50 bytes) stays below the floor.
    let resp = server
        .client
        .post(server.url("/v1/pipelines/clicks/events"))
        .header(ACCEPT_ENCODING, "gzip")
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get(CONTENT_ENCODING), None);
    let path = "/v1/pipelines/clicks/operators/sessions/state?limit=1000";
    let (coding, body) = get_encoded(&server, path, "gzip").await;
    assert_eq!(coding.as_deref(), Some("gzip"));
    let page: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 300);
    let (coding, _) = get_encoded(&server, "/openapi.json", "br").await;
    assert_eq!(coding.as_deref(), Some("br"));
}

#[tokio::test]
async fn server_sent_events_are_not_compressed_and_arrive_one_by_one() {
    let server = server().await;
    server.create_seed().await;
    server
        .post_events(
            "clicks",
            &json!({"user_id": "ann", "ts": 1_700_000_000_000i64, "page": "/home"}),
        )
        .await;
    let resp = server
        .post_json("/v1/pipelines/clicks/watermark", &json!({"time": "max"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // No `limit`: the stream stays open, so its first chunk must come before any end.
    let mut resp = server
        .client
        .get(server.url("/v1/pipelines/clicks/output/stream?after=0"))
        .header(ACCEPT_ENCODING, "gzip, br, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/event-stream");
    assert_eq!(resp.headers().get(CONTENT_ENCODING), None);
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = resp.chunk().await.unwrap().expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("id: 1\n"), "{text}");
}

#[tokio::test]
async fn the_sse_limit_ends_the_stream_and_zero_is_refused() {
    let server = server().await;
    server.create_seed().await;
    let events = json!([
        {"user_id": "ann", "ts": 1_700_000_000_000i64, "page": "/home"},
        {"user_id": "bob", "ts": 1_700_000_000_000i64, "page": "/cart"},
    ]);
    server.post_events("clicks", &events).await;
    server
        .post_json("/v1/pipelines/clicks/watermark", &json!({"time": "max"}))
        .await;
    let resp = server
        .get("/v1/pipelines/clicks/output/stream?after=0&limit=2")
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let ids: Vec<&str> = text.lines().filter(|l| l.starts_with("id: ")).collect();
    assert_eq!(ids, ["id: 1", "id: 2"], "{text}");
    let resp = server
        .get("/v1/pipelines/clicks/output/stream?limit=0")
        .await;
    expect_problem(resp, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn docs_assets_carry_validators_and_revalidate_with_304() {
    let server = server().await;
    for (path, policy) in [
        ("/docs/swagger-ui-bundle.js", "public, max-age=3600"),
        ("/docs/", "no-cache"),
        ("/openapi.json", "no-cache"),
    ] {
        let resp = server.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()[CACHE_CONTROL], policy, "{path}");
        let etag = resp.headers()[ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with("W/\""), "{path}: {etag}");
        let again = server
            .client
            .get(server.url(path))
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()[ETAG], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = server
            .client
            .get(server.url(path))
            .header(IF_NONE_MATCH, "W/\"00000000-0\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), StatusCode::OK, "{path}");
    }
    // API answers are live: no validator, no cache lifetime.
    let resp = server.get("/v1/pipelines").await;
    assert_eq!(resp.headers().get(ETAG), None);
    assert_eq!(resp.headers().get(CACHE_CONTROL), None);
}

/// A CORS preflight for a POST of JSON with a token, from `origin`.
async fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    server
        .client
        .request(reqwest::Method::OPTIONS, server.url(path))
        .header(ORIGIN, origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

fn cors_headers(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn an_allowed_origin_gets_preflights_and_readable_answers() {
    let app = "http://app.example:5173";
    let server = server_with_cors(CorsOrigins::Exact(vec![app.into()])).await;
    let resp = preflight(&server, "/v1/pipelines/clicks/events", app).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], app);
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    for header in [
        "authorization",
        "content-type",
        "idempotency-key",
        "last-event-id",
    ] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
    server.create_seed().await;
    let resp = server
        .client
        .post(server.url("/v1/pipelines/clicks/events"))
        .header(ORIGIN, app)
        .header("idempotency-key", "k1")
        .json(&json!({"user_id": "ann", "ts": 1, "page": "/home"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["access-control-allow-origin"], app);
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for header in ["idempotent-replayed", "retry-after", "etag", "location"] {
        assert!(exposed.contains(header), "{header} not in {exposed}");
    }
    // Refusals are readable by the page too.
    let resp = server
        .client
        .get(server.url("/v1/pipelines/nope"))
        .header(ORIGIN, app)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], app);
    expect_problem(resp, StatusCode::NOT_FOUND, "pipeline_not_found").await;
}

#[tokio::test]
async fn a_refused_origin_gets_no_cors_header_at_all() {
    let server = server_with_cors(CorsOrigins::Exact(vec!["https://app.example".into()])).await;
    for origin in [
        "https://evil.example",
        "http://app.example",
        "https://app.example.evil",
    ] {
        let resp = preflight(&server, "/v1/pipelines", origin).await;
        assert!(
            cors_headers(&resp).is_empty(),
            "{origin}: {:?}",
            resp.headers()
        );
        expect_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
        let resp = server
            .client
            .get(server.url("/v1/pipelines"))
            .header(ORIGIN, origin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            cors_headers(&resp).is_empty(),
            "{origin}: {:?}",
            resp.headers()
        );
        let vary: Vec<_> = resp.headers().get_all("vary").iter().collect();
        assert!(vary.iter().any(|v| *v == "origin"), "{vary:?}");
    }
}

#[tokio::test]
async fn cors_is_off_by_default_and_star_allows_any_origin() {
    let server = server().await;
    let resp = preflight(&server, "/v1/pipelines", "https://app.example").await;
    assert!(cors_headers(&resp).is_empty(), "{:?}", resp.headers());
    expect_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    drop(server);
    let server = server_with_cors(CorsOrigins::Any).await;
    let resp = preflight(&server, "/v1/pipelines", "https://anyone.example").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn the_root_is_a_page_that_links_the_docs_the_document_the_dashboard_and_metrics() {
    let server = server().await;
    let resp = server.get("/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let page = resp.text().await.unwrap();
    assert!(page.contains("<title>eddy</title>"), "{page}");
    for link in ["/docs", "/openapi.json", "/ui", "/metrics"] {
        assert!(
            page.contains(&format!("href=\"{link}\"")),
            "{link} not linked: {page}"
        );
    }
}

#[tokio::test]
async fn problem_types_name_their_code_and_resolve_to_its_documentation() {
    let server = server().await;
    let resp = server.get("/v1/pipelines/nope").await;
    let problem = expect_problem(resp, StatusCode::NOT_FOUND, "pipeline_not_found").await;
    assert_eq!(problem["type"], "/problems/pipeline_not_found");
    // A rejection axum makes itself goes through the same place.
    let resp = server
        .client
        .put(server.url("/v1/pipelines"))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    assert_eq!(problem["type"], "/problems/method_not_allowed");
    let page = server.get("/problems/pipeline_not_found").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let text = page.text().await.unwrap();
    assert!(
        text.contains("<strong>404.</strong> No pipeline of that name exists"),
        "{text}"
    );
    let resp = server.get("/problems/no_such_code").await;
    expect_problem(resp, StatusCode::NOT_FOUND, "route_not_found").await;
}

/// The string literals after `pattern` in the body of the function `signature` opens in
/// `source` (up to its closing brace at the function's indentation).
fn code_literals(source: &str, signature: &str, pattern: &str) -> Vec<String> {
    let start = source
        .find(signature)
        .unwrap_or_else(|| panic!("{signature} not found"));
    let indent = source[..start].rsplit('\n').next().unwrap().len();
    let close = format!("\n{}}}\n", " ".repeat(indent));
    let body = &source[start..start + source[start..].find(&close).unwrap()];
    let mut codes = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find(pattern) {
        rest = &rest[at + pattern.len()..];
        let end = rest.find('"').unwrap();
        let code = &rest[..end];
        if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            codes.push(code.to_owned());
        }
    }
    codes
}

#[test]
fn every_code_the_server_can_answer_is_documented_in_docs_problems_md() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
    // Every ApiError variant's code, and the codes given to axum's own rejections: the two
    // places a problem's code comes from. A code added to either fails here until documented.
    let mut codes = code_literals(&read("src/api/problem.rs"), "pub fn code(&self)", "=> \"");
    assert!(codes.len() >= 20, "parsed only {codes:?}");
    let bare = code_literals(&read("src/api/middleware.rs"), "fn bare_code(", "=> \"");
    assert!(bare.contains(&"timeout".to_owned()), "parsed only {bare:?}");
    codes.extend(bare);
    let doc = eddy::api::pages::PROBLEMS_MD;
    let undocumented: Vec<&String> = codes
        .iter()
        .filter(|code| eddy::api::pages::problem_section(doc, code).is_none())
        .collect();
    assert!(
        undocumented.is_empty(),
        "add a `## `code`` section to docs/problems.md for {undocumented:?}"
    );
    for code in &codes {
        let section = eddy::api::pages::problem_section(doc, code).unwrap();
        assert!(
            section.trim_start().starts_with("**"),
            "{code}: a section opens with its status in bold"
        );
    }
}

/// One HTTP/1.1 exchange on a kept-alive connection: its status line and headers
/// (lower-cased), with the body read by its `content-length`.
async fn exchange(conn: &mut tokio::net::TcpStream, request: &[u8]) -> Option<Vec<String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(request).await.ok()?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&chunk[..n]);
    };
    let head: Vec<String> = String::from_utf8_lossy(&got[..end])
        .lines()
        .map(str::to_ascii_lowercase)
        .collect();
    let length: usize = head
        .iter()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.parse().unwrap());
    let mut body = got.len() - end - 4;
    while body < length {
        body += conn.read(&mut chunk).await.ok()?;
    }
    Some(head)
}

fn says_close(head: &[String]) -> bool {
    head.iter().any(|l| l == "connection: close")
}

fn post_head(path: &str, extra: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: eddy\r\ncontent-type: application/json\r\n{extra}content-length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_says_the_connection_closes_and_others_keep_it() {
    let s = server().await;
    s.create_seed().await;
    let addr = s.url("").trim_start_matches("http://").to_owned();
    let events = "/v1/pipelines/clicks/events";
    let body = click_body();

    // Read to its end: the connection stays open for the next request.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let keyed = "idempotency-key: k-1\r\n";
    let request = post_head(events, keyed, body.len()) + &body;
    let head = exchange(&mut conn, request.as_bytes()).await.unwrap();
    assert!(head[0].contains(" 200 "), "{head:?}");
    assert!(!says_close(&head), "{head:?}");
    let head = exchange(&mut conn, b"GET /healthz HTTP/1.1\r\nhost: eddy\r\n\r\n").await;
    assert!(
        head.unwrap()[0].contains(" 200 "),
        "the connection was kept"
    );

    // Answered before its body: a retry by its key, an unknown pipeline, a body over the
    // limit. Each says so, and the server closes the connection after the answer.
    let over = s.config.max_body_bytes + 1;
    let cases = [
        (events, keyed, body.len(), " 200 "),
        ("/v1/pipelines/nope/events", "", body.len(), " 404 "),
        (events, "", over, " 413 "),
    ];
    for (path, extra, length, status) in cases {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = post_head(path, extra, length);
        let head = exchange(&mut conn, head.as_bytes()).await.unwrap();
        assert!(head[0].contains(status), "{path}: {head:?}");
        assert!(says_close(&head), "{path}: {head:?}");
    }
}

fn click_body() -> String {
    json!({"user_id": "ann", "ts": 1_000, "page": "/home"}).to_string()
}
