//! Request extractors: the authenticated session, the client IP and JSON bodies.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use camwire_api::{LoginRequest, RegisterKeyRequest, Role};

use super::MAX_BODY_BYTES;
use crate::auth::{BearerError, hash_token, parse_bearer};
use crate::db::{UserRow, unix_now};
use crate::error::{Error, TokenProblem};
use crate::peers::SessionContext;
use crate::state::AppState;

/// The caller of a protected route, checked from `Authorization: Bearer <token>`.
///
/// Missing, malformed, unknown, revoked and expired tokens are all rejected with 401.
#[derive(Debug, Clone)]
pub struct AuthSession {
    pub session: SessionContext,
    pub user: UserRow,
}

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .map(|value| value.as_bytes());

        let token = parse_bearer(header).map_err(|error| match error {
            BearerError::Missing => Error::Unauthorized(TokenProblem::Missing),
            BearerError::Malformed => Error::Unauthorized(TokenProblem::Malformed),
        })?;

        let Some((session, user)) = state
            .db()
            .find_session_by_token_hash(&hash_token(token))
            .await?
        else {
            return Err(Error::Unauthorized(TokenProblem::Invalid));
        };

        if session.expires_at <= unix_now() {
            return Err(Error::Unauthorized(TokenProblem::Expired));
        }

        Ok(Self {
            session: SessionContext {
                session_id: session.id,
                user_id: user.id.clone(),
                expires_at: session.expires_at,
            },
            user,
        })
    }
}

/// An authenticated caller with the admin role. Other roles get 403 `forbidden`, and
/// requests without a valid token 401.
#[derive(Debug, Clone)]
pub struct AdminSession(pub AuthSession);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = AuthSession::from_request_parts(parts, state).await?;

        if caller.user.role != Role::Admin {
            tracing::info!(
                user_id = %caller.user.id,
                outcome = "forbidden",
                "admin route rejected"
            );
            return Err(Error::Forbidden {
                username: caller.user.username.clone(),
                role: caller.user.role,
            });
        }

        Ok(Self(caller))
    }
}

/// The client's IP address, from the TCP connection; `None` when the router runs without
/// connection info, as in tests that call it directly.
///
/// NOTE: behind a reverse proxy this is the proxy's address, so the per-IP sign-in limit
/// then counts all clients together.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());

        Ok(Self(ip))
    }
}

/// A request body type with an example for error messages.
pub trait RequestExample {
    /// A valid body, shown in the message of a 400 or 415.
    const EXAMPLE: &'static str;
}

impl RequestExample for LoginRequest {
    const EXAMPLE: &'static str = r#"{"username": "alice", "password": "..."}"#;
}

impl RequestExample for RegisterKeyRequest {
    const EXAMPLE: &'static str = r#"{"public_key": "<44 base64 characters from `wg pubkey`>"}"#;
}

/// A JSON body whose rejections are API errors that name the problem and a valid body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned + RequestExample,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection_error(&rejection, T::EXAMPLE)),
        }
    }
}

fn json_rejection_error(rejection: &JsonRejection, example: &str) -> Error {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType(format!(
            "missing or wrong Content-Type; send `Content-Type: application/json` with a body such as {example}"
        )),
        JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => {
            Error::MalformedRequest(format!(
                "{}; send a body such as {example}",
                rejection.body_text()
            ))
        }
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        },
        _ => Error::MalformedRequest(format!(
            "{}; send a body such as {example}",
            rejection.body_text()
        )),
    }
}
