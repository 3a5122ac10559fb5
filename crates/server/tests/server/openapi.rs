//! The OpenAPI document against the real router.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use camwire_server::{App, OPENAPI_JSON, ServerConfig, route_table, router};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> serde_json::Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Returns the (method, path) pairs of the document, methods in upper case.
fn documented_routes(document: &serde_json::Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths is an object");

    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item is an object");
            item.keys()
                .filter(|key| METHODS.contains(&key.as_str()))
                .map(|method| (method.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Replaces `{name}` path parameters with a sample value.
fn sample_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                "sample-id"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn document_and_router_list_the_same_routes() {
    let documented = documented_routes(&document());

    let served: BTreeSet<(String, String)> = route_table()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), path.to_owned()))
        .collect();

    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        not_served.is_empty(),
        "documented routes the router lacks: {not_served:?}"
    );
}

#[test]
fn every_reference_resolves() {
    let document = document();
    let text = OPENAPI_JSON;
    let prefix = "\"$ref\": \"#/components/schemas/";

    let mut references = 0;
    for (index, _) in text.match_indices(prefix) {
        let rest = &text[index + prefix.len()..];
        let name = rest.split('"').next().expect("quoted name");

        assert!(
            document["components"]["schemas"].get(name).is_some(),
            "unknown schema {name}"
        );
        references += 1;
    }
    assert!(references > 10, "found only {references} references");
    assert_eq!(document["openapi"], "3.0.3");
}

#[tokio::test]
async fn documented_routes_answer_and_others_get_405() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = ServerConfig::new(format!("sqlite://{}", dir.path().join("c.db").display()));
    config.wg_config_path = dir.path().join("wg0.conf");
    config.wg_listen = "127.0.0.1:0".parse().expect("socket address");
    let app = App::open(&config).await.expect("app opens");
    let document = document();
    let documented = documented_routes(&document);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();

    for path in paths {
        for method in METHODS {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let request = Request::builder()
                .method(method.clone())
                .uri(sample_path(path))
                .body(Body::empty())
                .expect("request");

            let response = router(app.state.clone())
                .oneshot(request)
                .await
                .expect("infallible");

            let status = response.status();
            if documented.contains(&(method.as_str().to_owned(), path.clone())) {
                assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}");
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            }
        }
    }
}

#[tokio::test]
async fn openapi_json_is_served() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = ServerConfig::new(format!("sqlite://{}", dir.path().join("c.db").display()));
    config.wg_config_path = dir.path().join("wg0.conf");
    config.wg_listen = "127.0.0.1:0".parse().expect("socket address");
    let app = App::open(&config).await.expect("app opens");

    let request = Request::get("/openapi.json")
        .body(Body::empty())
        .expect("request");
    let response = router(app.state.clone())
        .oneshot(request)
        .await
        .expect("infallible");

    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let served: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(served, document());
}
