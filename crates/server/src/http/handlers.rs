//! Route handlers: extract, call the service, map the result.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::IntoResponse;

use camwire_api::{
    HealthResponse, LoginRequest, LoginResponse, LogoutResponse, RegisterKeyRequest, TokenType,
    User, WireguardCleanup, WireguardConfig,
};
use camwire_tunnel::PublicKey;

use super::extract::{ApiJson, AuthSession, ClientIp};
use crate::auth::{generate_token, hash_token, verify_password};
use crate::db::{insert_session, unix_now};
use crate::error::Error;
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, PoolGauges};
use crate::peers::{self, unix_to_datetime, wireguard_config};
use crate::state::AppState;
use crate::users::MAX_USERNAME_LEN;

/// Maximum length of a path quoted in a 404 or 405 message, in characters.
const MAX_QUOTED_PATH: usize = 200;

/// `POST /login`: checks the password and opens a session with a new access token.
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, Error> {
    // No stored user name is longer than MAX_USERNAME_LEN, so cutting longer ones
    // changes no outcome and bounds the limiter's memory per key.
    let limiter_key: String = request
        .username
        .chars()
        .take(MAX_USERNAME_LEN + 1)
        .collect();

    if let Some(retry_after) = state.limiter().check_at(&limiter_key, ip, Instant::now()) {
        tracing::info!(outcome = "rate_limited", "sign-in rejected");
        return Err(Error::RateLimited { retry_after });
    }

    let user = state.db().find_user_by_username(&request.username).await?;

    // An unknown user name costs the same Argon2 work as a wrong password, so response
    // times do not tell which user names exist.
    let stored_hash = match &user {
        Some(user) => user.password_hash.clone(),
        None => state.dummy_password_hash().to_owned(),
    };
    let password = request.password.clone();
    let verified =
        tokio::task::spawn_blocking(move || verify_password(&password, &stored_hash)).await??;

    let user = match user {
        Some(user) if verified => user,
        unverified => {
            state
                .limiter()
                .record_failure_at(&limiter_key, ip, Instant::now());
            state.metrics().record_failed_sign_in();

            // The typed user name is not logged, because people sometimes type a password
            // into it. A known user's id is logged instead.
            let user_id = unverified.map(|user| user.id);
            tracing::info!(user_id, outcome = "invalid_credentials", "sign-in failed");
            return Err(Error::InvalidCredentials);
        }
    };

    state.limiter().record_success(&limiter_key, ip);

    let token = generate_token();
    let ttl_seconds = i64::try_from(state.session_ttl().as_secs()).unwrap_or(i64::MAX);
    let expires_at = unix_now().saturating_add(ttl_seconds);

    let turn = state.db().lock_writes().await;
    let mut connection = state.db().pool().acquire().await?;
    let session = insert_session(
        &mut connection,
        &user.id,
        &hash_token(token.expose()),
        expires_at,
    )
    .await?;
    drop(connection);
    drop(turn);
    state.metrics().record_sign_in();

    tracing::info!(
        user_id = %user.id,
        session_id = %session.id,
        outcome = "signed_in",
        "signed in"
    );

    Ok(Json(LoginResponse {
        access_token: token,
        token_type: TokenType::Bearer,
        expires_at: unix_to_datetime(expires_at),
        user: user.to_api(),
    }))
}

/// `GET /me`: the caller's user.
pub async fn me(caller: AuthSession) -> Json<User> {
    Json(caller.user.to_api())
}

/// `POST /wireguard/config`: registers the device's public key and allocates an address.
pub async fn register_key(
    State(state): State<AppState>,
    caller: AuthSession,
    ApiJson(request): ApiJson<RegisterKeyRequest>,
) -> Result<(StatusCode, Json<WireguardConfig>), Error> {
    let public_key = PublicKey::from_base64(&request.public_key)
        .map_err(|error| Error::InvalidPublicKey(format!("invalid public_key: {error}")))?;

    if public_key.0 == [0u8; camwire_api::KEY_LEN] {
        return Err(Error::InvalidPublicKey(
            "invalid public_key: all 32 bytes are zero, which no real key pair produces; generate a key pair with `wg genkey | wg pubkey`".into(),
        ));
    }

    if public_key == state.server_public_key() {
        return Err(Error::InvalidPublicKey(
            "invalid public_key: it is the server's own public key; send the device's public key"
                .into(),
        ));
    }

    let peer = peers::allocate(&state, &caller.session, public_key).await?;
    let config = wireguard_config(&state, peer.address, caller.session.expires_at);

    Ok((StatusCode::CREATED, Json(config)))
}

/// `GET /wireguard/config`: the caller's current WireGuard settings.
pub async fn get_config(
    State(state): State<AppState>,
    caller: AuthSession,
) -> Result<Json<WireguardConfig>, Error> {
    let Some(peer) = state
        .db()
        .find_peer_by_session(&caller.session.session_id)
        .await?
    else {
        return Err(Error::NotConfigured);
    };

    Ok(Json(wireguard_config(
        &state,
        peer.address,
        caller.session.expires_at,
    )))
}

/// `DELETE /wireguard/config`: frees the caller's peer and keeps the session.
pub async fn delete_config(
    State(state): State<AppState>,
    caller: AuthSession,
) -> Result<Json<WireguardCleanup>, Error> {
    let cleanup = peers::release(&state, &caller.session).await?;

    Ok(Json(cleanup))
}

/// `POST /logout`: frees the caller's peer and ends the session.
pub async fn logout(
    State(state): State<AppState>,
    caller: AuthSession,
) -> Result<Json<LogoutResponse>, Error> {
    let cleanup = peers::logout(&state, &caller.session).await?;

    Ok(Json(LogoutResponse {
        message: "Signed out.".into(),
        session_invalidated: Some(true),
        wireguard: Some(cleanup),
    }))
}

/// `GET /healthz`.
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// `GET /metrics`: Prometheus text; the pool gauges come from the database, the hub's
/// figures from this process's hub.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, Error> {
    let figures = state.db().pool_figures(state.pool()).await?;
    let gauges = PoolGauges {
        size: state.pool().client_count(),
        allocated: figures.allocated,
    };

    let hub = state.hub().map(camwire_tunnel::Hub::stats);
    let text = state.metrics().render(gauges, hub.as_ref());

    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text))
}

/// `GET /openapi.json`: the OpenAPI 3 document of the API.
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::OPENAPI_JSON,
    )
}

/// Returns the 404 error for a path that no route has.
pub async fn route_not_found(method: Method, uri: Uri) -> Error {
    Error::RouteNotFound {
        method: method.to_string(),
        path: quoted_path(&uri),
    }
}

/// Returns the 405 error for a method that the path's route does not have.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        path: quoted_path(&uri),
    }
}

fn quoted_path(uri: &Uri) -> String {
    uri.path().chars().take(MAX_QUOTED_PATH).collect()
}
