//! `GET /v1/cluster` and the `partitions` field on a single instance (no cluster mode): the
//! instance is the one member, leader and owner of everything, over real HTTP on both stores.

mod common;

use common::{Backend, TestServer, body_json, expect_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn spec(name: &str, partitions: Option<Value>) -> Value {
    let mut spec = json!({"name": name, "key": "/u",
        "operators": [{"name": "l", "kind": "latest", "value": "/v"}]});
    if let Some(p) = partitions {
        spec["partitions"] = p;
    }
    spec
}

async fn partitions_default_to_one_and_are_echoed(backend: Backend) {
    let s = TestServer::start(backend).await;
    let body = body_json(
        s.post_json("/v1/pipelines", &spec("one", None)).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["partitions"], 1);
    let body = body_json(
        s.post_json("/v1/pipelines", &spec("three", Some(json!(3))))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["partitions"], 3);
    let listed = body_json(s.get("/v1/pipelines").await, StatusCode::OK).await;
    let partitions: Vec<_> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["partitions"].clone()))
        .collect();
    assert_eq!(
        partitions,
        [(json!("one"), json!(1)), (json!("three"), json!(3))]
    );
}

async fn partitions_outside_1_to_256_are_422_and_create_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    for bad in [json!(0), json!(257), json!(1.5), json!("2"), json!(-1)] {
        let doc = expect_problem(
            s.post_json("/v1/pipelines", &spec("p", Some(bad.clone())))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_spec",
        )
        .await;
        assert_eq!(doc["errors"][0]["field"], "partitions", "{bad}");
    }
    let listed = body_json(s.get("/v1/pipelines").await, StatusCode::OK).await;
    assert_eq!(listed["items"], json!([]));
}

async fn the_single_instance_is_member_leader_and_owner_of_every_partition(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.node_id = Some("solo".into())).await;
    for (name, p) in [("a", 3), ("b", 1)] {
        body_json(
            s.post_json("/v1/pipelines", &spec(name, Some(json!(p))))
                .await,
            StatusCode::CREATED,
        )
        .await;
    }
    s.post_events("a", &json!([{"u": "x", "v": 1}, {"u": "y", "v": 2}]))
        .await;
    let view = body_json(s.get("/v1/cluster").await, StatusCode::OK).await;
    assert_eq!(view["node"], "solo");
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["node"], "solo");
    assert_eq!(members[0]["url"], s.base);
    assert_eq!(members[0]["alive"], true);
    let seen = members[0]["last_seen"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(seen, &time::format_description::well_known::Rfc3339).is_ok(),
        "{seen}"
    );
    let part = |id: u16, first: u32, last: u32, applied: Value| json!({"id": id, "key_groups": [first, last], "owner": "solo", "applied_offset": applied});
    assert_eq!(
        view["pipelines"],
        json!([
            {"name": "a", "leader": "solo", "partitions": [
                part(0, 0, 85, json!(2)), part(1, 86, 170, json!(2)), part(2, 171, 255, json!(2))]},
            {"name": "b", "leader": "solo", "partitions": [part(0, 0, 255, Value::Null)]},
        ])
    );
}

async fn without_a_node_id_the_node_is_named_after_its_host_and_port(backend: Backend) {
    let s = TestServer::start(backend).await;
    let view = body_json(s.get("/v1/cluster").await, StatusCode::OK).await;
    let port = s.base.rsplit(':').next().unwrap();
    let node = view["node"].as_str().unwrap();
    assert!(node.ends_with(&format!(":{port}")), "{node} vs port {port}");
    assert_eq!(view["members"][0]["node"], node);
    assert_eq!(view["pipelines"], json!([]));
}

backend_tests!(
    partitions_default_to_one_and_are_echoed,
    partitions_outside_1_to_256_are_422_and_create_nothing,
    the_single_instance_is_member_leader_and_owner_of_every_partition,
    without_a_node_id_the_node_is_named_after_its_host_and_port,
);
