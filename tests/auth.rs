//! Access over real HTTP: every endpoint without a token, with a token lacking the scope or the
//! pipeline, and with the right one; pipeline lists filtered; open health endpoints.

mod common;

use common::{Backend, TestServer, body_json, expect_problem, seed_spec};
use eddy::auth::new_token;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Tokens {
    read: String,
    ingest: String,
    admin: String,
    other_pipeline: String,
}

async fn server(metrics_auth: bool) -> (TestServer, Tokens, tempfile::TempDir) {
    let dir = tempfile::TempDir::new().unwrap();
    let mut lines = Vec::new();
    let mut token = |name: &str, scopes: &str, pipelines: Option<&str>| {
        let (token, line) = new_token(name, scopes, pipelines).unwrap();
        lines.push(line);
        token
    };
    let tokens = Tokens {
        read: token("reader", "read", None),
        ingest: token("ingester", "ingest", Some("clicks")),
        admin: token("boss", "admin", None),
        other_pipeline: token("elsewhere", "read,ingest,admin", Some("other")),
    };
    let path = dir.path().join("tokens");
    std::fs::write(&path, format!("# eddy tokens\n{}\n", lines.join("\n"))).unwrap();
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.tokens_file = Some(path);
        c.metrics_auth = metrics_auth;
    })
    .await;
    (s, tokens, dir)
}

async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = s.client.request(method, s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

/// The status of a `call`.
async fn status(
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> reqwest::StatusCode {
    call(s, method, path, token, body).await.status()
}

/// The status of posting one event to `clicks` with `token`.
async fn post_event(s: &TestServer, token: &str) -> reqwest::StatusCode {
    let event = json!({"user_id": "u", "ts": 1, "page": "/p"});
    let path = "/v1/pipelines/clicks/events";
    status(s, Method::POST, path, Some(token), Some(&event)).await
}

/// The status of creating the seed pipeline under `name` with `token`.
async fn create(s: &TestServer, token: &str, name: &str) -> reqwest::StatusCode {
    let mut spec = seed_spec();
    spec["name"] = json!(name);
    status(s, Method::POST, "/v1/pipelines", Some(token), Some(&spec)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_token_with_its_scope_and_pipeline() {
    let (s, t, _dir) = server(false).await;
    let spec = seed_spec();
    assert_eq!(
        status(
            &s,
            Method::POST,
            "/v1/pipelines",
            Some(&t.admin),
            Some(&spec)
        )
        .await,
        201
    );
    assert_eq!(create(&s, &t.admin, "gone").await, 201);
    assert_eq!(post_event(&s, &t.ingest).await, 200);
    let event = json!({"user_id": "u", "ts": 1, "page": "/p"});
    assert_eq!(
        status(
            &s,
            Method::POST,
            "/v1/pipelines/clicks/checkpoints",
            Some(&t.admin),
            None
        )
        .await,
        201
    );

    let mut another = seed_spec();
    another["name"] = json!("another");
    // (method, path, body, a token with the scope, a token without it)
    let endpoints: Vec<(Method, &str, Option<Value>, &str, &str)> = vec![
        (Method::GET, "/v1/pipelines", None, &t.read, &t.ingest),
        (
            Method::GET,
            "/v1/pipelines/clicks",
            None,
            &t.read,
            &t.ingest,
        ),
        (
            Method::POST,
            "/v1/pipelines/clicks/events",
            Some(event.clone()),
            &t.ingest,
            &t.read,
        ),
        (
            Method::POST,
            "/v1/pipelines/clicks/watermark",
            Some(json!({"time": 5})),
            &t.ingest,
            &t.read,
        ),
        (
            Method::GET,
            "/v1/pipelines/clicks/operators/sessions/state",
            None,
            &t.read,
            &t.ingest,
        ),
        (
            Method::GET,
            "/v1/pipelines/clicks/operators/sessions/state?key=u",
            None,
            &t.read,
            &t.ingest,
        ),
        (
            Method::GET,
            "/v1/pipelines/clicks/output",
            None,
            &t.read,
            &t.ingest,
        ),
        (
            Method::GET,
            "/v1/pipelines/clicks/checkpoints",
            None,
            &t.read,
            &t.ingest,
        ),
        (
            Method::GET,
            "/v1/pipelines/clicks/checkpoints/1",
            None,
            &t.read,
            &t.ingest,
        ),
        (
            Method::POST,
            "/v1/pipelines/clicks/checkpoints",
            None,
            &t.admin,
            &t.read,
        ),
        (
            Method::POST,
            "/v1/pipelines/clicks/checkpoints/1/restore",
            None,
            &t.admin,
            &t.read,
        ),
        (
            Method::POST,
            "/v1/pipelines",
            Some(another),
            &t.admin,
            &t.read,
        ),
        (
            Method::DELETE,
            "/v1/pipelines/gone",
            None,
            &t.admin,
            &t.read,
        ),
    ];
    for (method, path, body, allowed, lacking) in &endpoints {
        let no_token = call(&s, method.clone(), path, None, body.as_ref()).await;
        assert_eq!(
            no_token.headers()["www-authenticate"],
            "Bearer realm=\"eddy\"",
            "{method} {path}"
        );
        expect_problem(no_token, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let unknown = call(
            &s,
            method.clone(),
            path,
            Some("eddy_not_a_token"),
            body.as_ref(),
        )
        .await;
        expect_problem(unknown, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let wrong_scope = call(&s, method.clone(), path, Some(lacking), body.as_ref()).await;
        expect_problem(wrong_scope, StatusCode::FORBIDDEN, "forbidden").await;
        if path.contains("/clicks") {
            let wrong_pipeline = call(
                &s,
                method.clone(),
                path,
                Some(&t.other_pipeline),
                body.as_ref(),
            )
            .await;
            expect_problem(wrong_pipeline, StatusCode::FORBIDDEN, "forbidden").await;
        }
        let right = call(&s, method.clone(), path, Some(allowed), body.as_ref()).await;
        let status = right.status();
        assert!(
            status.is_success(),
            "{method} {path} with the right token: {status} {}",
            right.text().await.unwrap()
        );
    }
    // The stream needs read, like the rest of the output.
    let stream = call(
        &s,
        Method::GET,
        "/v1/pipelines/clicks/output/stream",
        None,
        None,
    )
    .await;
    expect_problem(stream, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let stream = call(
        &s,
        Method::GET,
        "/v1/pipelines/clicks/output/stream",
        Some(&t.read),
        None,
    )
    .await;
    assert_eq!(stream.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_may_do_everything_and_pipeline_lists_show_only_what_a_token_may_touch() {
    let (s, t, _dir) = server(false).await;
    let resp = call(
        &s,
        Method::POST,
        "/v1/pipelines",
        Some(&t.admin),
        Some(&seed_spec()),
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(post_event(&s, &t.admin).await, 200);
    let all = body_json(
        call(&s, Method::GET, "/v1/pipelines", Some(&t.read), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let none = body_json(
        call(
            &s,
            Method::GET,
            "/v1/pipelines",
            Some(&t.other_pipeline),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(none["items"], json!([]));
    let mut clicks2 = seed_spec();
    clicks2["name"] = json!("clicks2");
    let resp = call(
        &s,
        Method::POST,
        "/v1/pipelines",
        Some(&t.other_pipeline),
        Some(&clicks2),
    )
    .await;
    expect_problem(resp, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(create(&s, &t.other_pipeline, "other").await, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_and_metrics_follow_the_setting() {
    let (s, t, _dir) = server(false).await;
    assert_eq!(status(&s, Method::GET, "/healthz", None, None).await, 200);
    assert_eq!(status(&s, Method::GET, "/readyz", None, None).await, 200);
    assert_eq!(status(&s, Method::GET, "/metrics", None, None).await, 200);
    drop(s);
    let (s, t2, _dir2) = server(true).await;
    expect_problem(
        call(&s, Method::GET, "/metrics", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_eq!(
        status(&s, Method::GET, "/metrics", Some(&t2.read), None).await,
        200
    );
    assert_eq!(
        status(&s, Method::GET, "/metrics", Some(&t.read), None).await,
        401,
        "tokens of another file are unknown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_tokens_file_takes_effect_and_a_bad_one_keeps_the_old() {
    let (s, t, dir) = server(false).await;
    let path = dir.path().join("tokens");
    assert_eq!(
        status(&s, Method::GET, "/v1/pipelines", Some(&t.read), None).await,
        200
    );
    let (fresh, line) = new_token("fresh", "read", None).unwrap();
    std::fs::write(&path, &line).unwrap();
    assert_eq!(s.state.reload_tokens().unwrap(), 1);
    assert_eq!(
        status(&s, Method::GET, "/v1/pipelines", Some(&t.read), None).await,
        401
    );
    assert_eq!(
        status(&s, Method::GET, "/v1/pipelines", Some(&fresh), None).await,
        200
    );
    std::fs::write(&path, "broken line").unwrap();
    assert!(s.state.reload_tokens().is_err());
    assert_eq!(
        status(&s, Method::GET, "/v1/pipelines", Some(&fresh), None).await,
        200
    );
}
