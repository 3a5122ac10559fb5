//! HTTP client for the Camwire API routes, with bounded time and reply size.

mod error;

use std::sync::Arc;
use std::time::Duration;

use camwire_api::{
    AccessToken, ErrorBody, HealthResponse, LoginRequest, LoginResponse, LogoutResponse, Password,
    RegisterKeyRequest, User, WireguardCleanup, WireguardConfig,
};
use camwire_tunnel::PublicKey;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use error::sanitize_server_text;
pub use error::{ApiError, UnreachableReason};

use crate::ServerUrl;

/// Time and size bounds of API calls.
#[derive(Clone)]
pub struct ApiOptions {
    /// Bound on opening the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Bound on a whole call (connect, send, reply, body) other than `POST /logout`.
    pub request_timeout: Duration,
    /// Bound on a whole `POST /logout` call; sign-out waits at most this long for the server.
    pub logout_timeout: Duration,
    /// Largest reply body accepted, in bytes; larger replies fail with [`ApiError::BodyTooLarge`].
    pub max_body_bytes: usize,
    /// DNS resolver to use in place of the system's; tests use it to produce lookup failures.
    pub dns_resolver: Option<Arc<dyn reqwest::dns::Resolve>>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            logout_timeout: Duration::from_secs(5),
            max_body_bytes: 1024 * 1024,
            dns_resolver: None,
        }
    }
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("logout_timeout", &self.logout_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field(
                "dns_resolver",
                &self.dns_resolver.as_ref().map(|_| "custom"),
            )
            .finish()
    }
}

/// An API route: method and path, such as `POST /logout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

impl Route {
    pub const LOGIN: Route = Route::new("POST", "/login");
    pub const ME: Route = Route::new("GET", "/me");
    pub const REGISTER_KEY: Route = Route::new("POST", "/wireguard/config");
    pub const WIREGUARD_CONFIG: Route = Route::new("GET", "/wireguard/config");
    pub const DELETE_WIREGUARD_CONFIG: Route = Route::new("DELETE", "/wireguard/config");
    pub const LOGOUT: Route = Route::new("POST", "/logout");
    pub const HEALTH: Route = Route::new("GET", "/healthz");

    const fn new(method: &'static str, path: &'static str) -> Self {
        Self { method, path }
    }

    fn http_method(self) -> Method {
        match self.method {
            "POST" => Method::POST,
            "DELETE" => Method::DELETE,
            _ => Method::GET,
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.method, self.path)
    }
}

/// Client of one Camwire server's HTTP API.
///
/// Every call is bounded in time ([`ApiOptions`]) and reply size, follows no redirects and
/// uses no proxy, and returns the camwire-api type of the route or a typed [`ApiError`].
/// Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    server: ServerUrl,
    options: ApiOptions,
}

impl ApiClient {
    /// Creates a client for `server`. Fails when reqwest cannot build its client, such as when
    /// the TLS backend cannot start.
    pub fn new(server: ServerUrl, options: ApiOptions) -> Result<Self, ApiError> {
        // Redirects are not followed because a redirected `POST /logout` would carry the
        // token to another URL; proxies are skipped so the client talks to the server it is given.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("camwire/", env!("CARGO_PKG_VERSION")));
        if let Some(resolver) = &options.dns_resolver {
            builder = builder.dns_resolver2(Arc::clone(resolver));
        }

        let http = builder.build().map_err(|error| ApiError::Request {
            route: Route::HEALTH,
            detail: format!(
                "the HTTP client could not start: {}",
                error::error_chain(&error)
            ),
        })?;

        Ok(Self {
            http,
            server,
            options,
        })
    }

    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    pub fn options(&self) -> &ApiOptions {
        &self.options
    }

    /// Signs in with a user name and password (`POST /login`).
    pub async fn login(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<LoginResponse, ApiError> {
        let body = LoginRequest {
            username: username.to_owned(),
            password: password.clone(),
        };
        self.call(
            Route::LOGIN,
            None,
            Some(&body),
            self.options.request_timeout,
        )
        .await
    }

    /// Returns the signed-in user (`GET /me`).
    pub async fn me(&self, token: &AccessToken) -> Result<User, ApiError> {
        self.call(
            Route::ME,
            Some(token),
            None::<&()>,
            self.options.request_timeout,
        )
        .await
    }

    /// Registers the device's public key and returns its new allocation (`POST /wireguard/config`).
    pub async fn register_key(
        &self,
        token: &AccessToken,
        public_key: &PublicKey,
    ) -> Result<WireguardConfig, ApiError> {
        let body = RegisterKeyRequest {
            public_key: public_key.to_base64(),
        };
        self.call(
            Route::REGISTER_KEY,
            Some(token),
            Some(&body),
            self.options.request_timeout,
        )
        .await
    }

    /// Returns the session's current allocation (`GET /wireguard/config`).
    pub async fn wireguard_config(&self, token: &AccessToken) -> Result<WireguardConfig, ApiError> {
        self.call(
            Route::WIREGUARD_CONFIG,
            Some(token),
            None::<&()>,
            self.options.request_timeout,
        )
        .await
    }

    /// Removes the session's peer and frees its address (`DELETE /wireguard/config`).
    pub async fn delete_wireguard_config(
        &self,
        token: &AccessToken,
    ) -> Result<WireguardCleanup, ApiError> {
        self.call(
            Route::DELETE_WIREGUARD_CONFIG,
            Some(token),
            None::<&()>,
            self.options.request_timeout,
        )
        .await
    }

    /// Ends the session on the server (`POST /logout`), bounded by `logout_timeout`.
    pub async fn logout(&self, token: &AccessToken) -> Result<LogoutResponse, ApiError> {
        self.call(
            Route::LOGOUT,
            Some(token),
            None::<&()>,
            self.options.logout_timeout,
        )
        .await
    }

    /// Checks that the server runs (`GET /healthz`).
    pub async fn health(&self) -> Result<HealthResponse, ApiError> {
        self.call(
            Route::HEALTH,
            None,
            None::<&()>,
            self.options.request_timeout,
        )
        .await
    }

    /// Sends one request and parses the reply, all within `timeout`.
    async fn call<T: DeserializeOwned>(
        &self,
        route: Route,
        token: Option<&AccessToken>,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let exchange = self.exchange(route, token, body);

        let Ok(result) = tokio::time::timeout(timeout, exchange).await else {
            return Err(ApiError::Unreachable {
                server: self.server.to_string(),
                route,
                reason: UnreachableReason::TimedOut { after: timeout },
            });
        };
        let (status, bytes) = result?;

        tracing::debug!(%route, status, bytes = bytes.len(), "server replied");
        parse_reply(route, status, &bytes)
    }

    /// Sends the request and reads the reply body under the size limit.
    async fn exchange(
        &self,
        route: Route,
        token: Option<&AccessToken>,
        body: Option<&impl Serialize>,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let mut request = self
            .http
            .request(route.http_method(), self.server.endpoint(route.path));
        if let Some(token) = token {
            // `bearer_auth` marks the header as sensitive, so it is left out of debug output.
            request = request.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }

        let response = request
            .send()
            .await
            .map_err(|error| self.transport_error(route, &error))?;
        let status = response.status().as_u16();

        let body = read_limited(response, route, self.options.max_body_bytes).await?;
        Ok((status, body))
    }

    fn transport_error(&self, route: Route, error: &reqwest::Error) -> ApiError {
        if error.is_builder() {
            return ApiError::Request {
                route,
                detail: error::error_chain(error),
            };
        }

        let failure = error::classify_transport_error(
            error,
            self.server.host(),
            self.options.connect_timeout,
        );
        match failure {
            error::TransportFailure::Unreachable(reason) => ApiError::Unreachable {
                server: self.server.to_string(),
                route,
                reason,
            },
            error::TransportFailure::Malformed(detail) => {
                ApiError::MalformedReply { route, detail }
            }
        }
    }
}

/// Reads a reply body, stopping with [`ApiError::BodyTooLarge`] as soon as it exceeds `limit`.
async fn read_limited(
    mut response: reqwest::Response,
    route: Route,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let status = response.status().as_u16();
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(ApiError::BodyTooLarge { route, limit });
    }

    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|error| ApiError::InvalidBody {
                route,
                status,
                reason: format!("the reply was cut off: {}", error::error_chain(&error)),
            })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };

        if body.len() + chunk.len() > limit {
            return Err(ApiError::BodyTooLarge { route, limit });
        }
        body.extend_from_slice(&chunk);
    }
}

/// Parses a reply: a 2xx body as `T`, any other status as a Camwire error body if it is one.
fn parse_reply<T: DeserializeOwned>(route: Route, status: u16, body: &[u8]) -> Result<T, ApiError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(body).map_err(|error| ApiError::InvalidBody {
            route,
            status,
            reason: error::sanitize_server_text(&error.to_string()),
        });
    }

    let Ok(error_body) = serde_json::from_slice::<ErrorBody>(body) else {
        return Err(ApiError::UnexpectedStatus { route, status });
    };
    Err(ApiError::Rejected {
        route,
        status,
        code: error::sanitize_server_text(&error_body.error),
        message: error::sanitize_server_text(&error_body.message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reply_reads_success_body() {
        let body = br#"{"status":"ok"}"#;

        let health: HealthResponse = parse_reply(Route::HEALTH, 200, body).expect("parses");

        assert_eq!(health.status, "ok");
    }

    #[test]
    fn parse_reply_reads_error_body() {
        let body = br#"{"error":"address_pool_exhausted","message":"No free address."}"#;

        let error =
            parse_reply::<WireguardConfig>(Route::REGISTER_KEY, 503, body).expect_err("503");

        assert_eq!(error.status(), Some(503));
        assert_eq!(error.code(), Some("address_pool_exhausted"));
        assert!(error.to_string().contains("No free address."), "{error}");
    }

    #[test]
    fn parse_reply_flags_wrong_shapes() {
        let cases: [(u16, &[u8]); 5] = [
            (200, b""),
            (200, b"\0\0\0\0"),
            (200, br#"{"message":"Logged out""#),
            (200, br#"{"status":"ok"}"#),
            (200, b"<html>Welcome</html>"),
        ];

        for (status, body) in cases {
            let error =
                parse_reply::<LogoutResponse>(Route::LOGOUT, status, body).expect_err("bad body");
            assert!(
                matches!(error, ApiError::InvalidBody { .. }),
                "{body:?}: {error}"
            );
        }
    }

    #[test]
    fn parse_reply_without_error_body_is_unexpected_status() {
        let error =
            parse_reply::<User>(Route::ME, 502, b"<html>Bad Gateway</html>").expect_err("502");

        assert_eq!(
            error,
            ApiError::UnexpectedStatus {
                route: Route::ME,
                status: 502
            }
        );
    }

    #[test]
    fn unauthorized_is_recognized_with_or_without_body() {
        let with_body =
            parse_reply::<User>(Route::ME, 401, br#"{"error":"unauthorized","message":"x"}"#)
                .expect_err("401");
        let without_body = parse_reply::<User>(Route::ME, 401, b"").expect_err("401");

        assert!(with_body.is_unauthorized());
        assert!(without_body.is_unauthorized());
    }
}
