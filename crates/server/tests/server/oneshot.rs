//! The router called directly with `tower::ServiceExt::oneshot`, without a listener.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use camwire_api::{ErrorBody, LoginResponse, Password, Role};
use camwire_server::users::{NewUser, add_user};
use camwire_server::{App, ServerConfig, router};

#[tokio::test]
async fn router_serves_without_connection_info() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = ServerConfig::new(format!("sqlite://{}", dir.path().join("c.db").display()));
    config.wg_config_path = dir.path().join("wg0.conf");
    config.wg_listen = "127.0.0.1:0".parse().expect("socket address");
    let app = App::open(&config).await.expect("app opens");
    let user = NewUser {
        username: "alice".into(),
        password: Password::new("secret"),
        display_name: None,
        email: None,
        role: Role::User,
    };
    add_user(app.state.db(), user)
        .await
        .expect("user is created");

    let login = Request::post("/login")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"username": "alice", "password": "secret"}"#))
        .expect("request");
    let response = router(app.state.clone())
        .oneshot(login)
        .await
        .expect("infallible");

    assert_eq!(response.status(), StatusCode::OK);
    let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
    let login: LoginResponse = serde_json::from_slice(&body).expect("login response");
    assert_eq!(login.user.username, "alice");

    let unknown = Request::get("/nowhere")
        .body(Body::empty())
        .expect("request");
    let response = router(app.state.clone())
        .oneshot(unknown)
        .await
        .expect("infallible");

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
    let error: ErrorBody = serde_json::from_slice(&body).expect("error body");
    assert_eq!(error.error, "not_found");
}
