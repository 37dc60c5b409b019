//! The dashboard's files and the token endpoint over real HTTP: `/ui` served from the binary
//! with content types, ETag and 304, open even with a tokens file; `GET /v1/token` says what
//! the presented token may do, and refuses no token or an unknown one with 401.

mod common;

use common::{Backend, TestServer, body_json, expect_problem};
use eddy::auth::new_token;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_modules_are_served_with_types_and_etags() {
    let s = TestServer::start(Backend::Sqlite).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects.get(s.url("/ui")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()[LOCATION], "/ui/");

    let page = s.get("/ui/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
    assert!(page.text().await.unwrap().contains("app.js"));

    let script = s.get("/ui/app.js").await;
    assert_eq!(
        script.headers()[CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let etag = script.headers()[ETAG].clone();
    let body = script.bytes().await.unwrap();
    assert_eq!(&body[..], include_bytes!("../ui/app.js"));

    let again = s
        .client
        .get(s.url("/ui/app.js"))
        .header(IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], etag);
    assert!(again.bytes().await.unwrap().is_empty());

    let other = s
        .client
        .get(s.url("/ui/app.js"))
        .header(IF_NONE_MATCH, "\"not-this-one\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);

    let css = s.get("/ui/vendor/uPlot.min.css").await;
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
    expect_problem(
        s.get("/ui/missing.js").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;
    expect_problem(
        s.get("/ui/../Cargo.toml").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_says_what_a_token_may_do() {
    let open = TestServer::start(Backend::Sqlite).await;
    let info = body_json(open.get("/v1/token").await, StatusCode::OK).await;
    assert_eq!(info["access"], "open");
    assert_eq!(
        info["scopes"],
        serde_json::json!(["ingest", "read", "admin"])
    );

    let dir = tempfile::TempDir::new().unwrap();
    let (reader, reader_line) = new_token("reader", "read", None).unwrap();
    let (feeder, feeder_line) = new_token("feeder", "ingest", Some("clicks")).unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, format!("{reader_line}\n{feeder_line}\n")).unwrap();
    let s = TestServer::start_with(Backend::Sqlite, |c| c.tokens_file = Some(path)).await;

    // The page itself is open: it asks for the token and sends it with every API call.
    assert_eq!(s.get("/ui/").await.status(), StatusCode::OK);
    assert_eq!(
        s.get("/ui/views/pipeline.js").await.status(),
        StatusCode::OK
    );

    let none = s.get("/v1/token").await;
    assert!(none.headers().contains_key("www-authenticate"));
    expect_problem(none, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let unknown = s
        .client
        .get(s.url("/v1/token"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    expect_problem(unknown, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let ask = |t: String| s.client.get(s.url("/v1/token")).bearer_auth(t).send();
    let info = body_json(ask(reader).await.unwrap(), StatusCode::OK).await;
    assert_eq!(
        info,
        serde_json::json!({"access": "token", "name": "reader", "scopes": ["read"]})
    );
    // No scope is needed to ask: an ingest-only token learns that it cannot read.
    let info = body_json(ask(feeder).await.unwrap(), StatusCode::OK).await;
    assert_eq!(info["scopes"], serde_json::json!(["ingest"]));
}
