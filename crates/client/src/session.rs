//! A signed-in session: sign-in steps, confirmation with the server, and sign-out steps.

use std::sync::Arc;

use camwire_api::{InvalidField, Password, User, error_code};
use camwire_tunnel::PrivateKey;

use crate::report::{ServerOutcome, SignOutReport, StoreOutcome, TunnelOutcome};
use crate::supervisor::{ChangeNotifier, TunnelSupervisor, TunnelWatch};
use crate::{
    ApiClient, ApiError, CredentialStore, Credentials, Profile, Route, TunnelSettings, TunnelStatus,
};

/// A session on one server: the API client, the access token, the device key, the profile and
/// the WireGuard tunnel.
///
/// Created by [`Session::sign_in`] or, from stored credentials, [`Session::resume`], both
/// without a tunnel; [`Session::ensure_tunnel`] starts it. Ended by [`Session::sign_out`],
/// which consumes the session. The token and key are wiped from memory when the session is
/// dropped, and dropping it aborts the tunnel without waiting.
#[derive(Debug)]
pub struct Session {
    api: ApiClient,
    credentials: Credentials,
    tunnel: Option<TunnelSupervisor>,
}

/// A sign-in step, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInStep {
    /// `POST /login`.
    Login,
    /// `POST /wireguard/config` with the new public key.
    RegisterKey,
    /// `GET /me`.
    FetchProfile,
}

impl std::fmt::Display for SignInStep {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            SignInStep::Login => "signing in",
            SignInStep::RegisterKey => "requesting a VPN address",
            SignInStep::FetchProfile => "loading the profile",
        })
    }
}

/// Failure of a sign-in. After a failure past `POST /login` the half-made session has been
/// logged out again, so nothing is left allocated on the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("wrong user name or password")]
    InvalidCredentials,

    /// The server's message usually says how long to wait.
    #[error("too many sign-in attempts; wait and try again (the server replied: {message})")]
    RateLimited { message: String },

    #[error(
        "the server has no free VPN address left (address pool exhausted); try again later or \
         ask an administrator to free one"
    )]
    AddressPoolExhausted,

    #[error("{step} failed: {source}")]
    Step {
        step: SignInStep,
        #[source]
        source: ApiError,
    },

    /// A reply parsed, but a value in it cannot be used or is out of bounds, such as an
    /// endpoint without a port or a 900 KB display name. Nothing of it was stored.
    #[error(
        "the server sent an invalid reply while {step}: {error}; contact the server's operator"
    )]
    InvalidReply {
        step: SignInStep,
        #[source]
        error: InvalidField,
    },
}

impl SignInError {
    fn from_step(step: SignInStep, source: ApiError) -> Self {
        match (step, source.code()) {
            (SignInStep::Login, Some(error_code::INVALID_CREDENTIALS)) => {
                SignInError::InvalidCredentials
            }
            (SignInStep::Login, Some(error_code::RATE_LIMITED)) => {
                let message = match &source {
                    ApiError::Rejected { message, .. } => message.clone(),
                    _ => String::new(),
                };
                SignInError::RateLimited { message }
            }
            (SignInStep::RegisterKey, Some(error_code::ADDRESS_POOL_EXHAUSTED)) => {
                SignInError::AddressPoolExhausted
            }
            _ => SignInError::Step { step, source },
        }
    }
}

/// Result of [`Session::confirm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The server accepted the token; the profile is up to date.
    Confirmed {
        /// Whether the profile or the device key differ from the stored ones, so the caller
        /// should save the credentials again.
        changed: bool,
    },
    /// The server rejected the token (HTTP 401): the session is over.
    Expired,
}

impl Session {
    /// Signs in: `POST /login`, a new device key pair, `POST /wireguard/config` with its public
    /// key, then `GET /me`.
    ///
    /// Every call requests a new allocation with a new key. When a step after `POST /login`
    /// fails, the new session is logged out again (bounded by the logout timeout) before the
    /// error returns.
    pub async fn sign_in(
        api: ApiClient,
        username: &str,
        password: &Password,
    ) -> Result<Self, SignInError> {
        let login = api
            .login(username, password)
            .await
            .map_err(|error| SignInError::from_step(SignInStep::Login, error))?;
        let token = login.access_token;
        if let Err(error) = login.user.validate() {
            log_out_half_made(&api, &token, SignInStep::Login).await;
            return Err(SignInError::InvalidReply {
                step: SignInStep::Login,
                error,
            });
        }
        tracing::info!(user_id = ?login.user.id, server = %api.server(), "signed in; requesting a VPN address");

        let private_key = PrivateKey::generate();
        let public_key = private_key.public_key();

        let wireguard = match api.register_key(&token, &public_key).await {
            Ok(wireguard) => wireguard,
            Err(error) => {
                log_out_half_made(&api, &token, SignInStep::RegisterKey).await;
                return Err(SignInError::from_step(SignInStep::RegisterKey, error));
            }
        };
        if let Err(error) = wireguard.validate() {
            log_out_half_made(&api, &token, SignInStep::RegisterKey).await;
            return Err(SignInError::InvalidReply {
                step: SignInStep::RegisterKey,
                error,
            });
        }
        tracing::info!(
            user_id = ?login.user.id,
            key = %public_key.fingerprint(),
            address = %wireguard.address,
            "received a VPN address"
        );

        let user = match api.me(&token).await {
            Ok(user) => user,
            Err(error) => {
                log_out_half_made(&api, &token, SignInStep::FetchProfile).await;
                return Err(SignInError::from_step(SignInStep::FetchProfile, error));
            }
        };
        if let Err(error) = validate_profile(&user, &login.user.id) {
            log_out_half_made(&api, &token, SignInStep::FetchProfile).await;
            return Err(SignInError::InvalidReply {
                step: SignInStep::FetchProfile,
                error,
            });
        }

        let credentials = Credentials {
            server_url: api.server().clone(),
            access_token: token,
            token_expires_at: login.expires_at,
            private_key,
            profile: Profile { user, wireguard },
        };
        Ok(Self {
            api,
            credentials,
            tunnel: None,
        })
    }

    /// Restores a session from stored credentials without contacting the server; call
    /// [`Session::confirm`] to check it.
    pub fn resume(api: ApiClient, credentials: Credentials) -> Self {
        Self {
            api,
            credentials,
            tunnel: None,
        }
    }

    /// Starts the tunnel with the session's WireGuard config and device key, unless it runs
    /// with them already. A tunnel started with an older config or key is stopped first, so
    /// a session never has two.
    ///
    /// A failed start does not fail this call: the status shows the error and the tunnel is
    /// started again later, because the server has accepted the device already.
    pub async fn ensure_tunnel(&mut self, settings: &TunnelSettings) {
        self.ensure_tunnel_with(settings, Arc::new(|| {})).await;
    }

    /// [`Session::ensure_tunnel`], calling `notify` after every status change.
    pub(crate) async fn ensure_tunnel_with(
        &mut self,
        settings: &TunnelSettings,
        notify: ChangeNotifier,
    ) {
        let config = &self.credentials.profile.wireguard;
        let public_key = self.credentials.private_key.public_key();
        if let Some(tunnel) = &self.tunnel
            && tunnel.runs_with(config, &public_key)
        {
            return;
        }

        if let Some(old) = self.tunnel.take() {
            let outcome = old.stop().await;
            tracing::info!(
                outcome = outcome.kind(),
                "stopped the tunnel of the previous WireGuard config"
            );
        }
        self.tunnel = Some(
            TunnelSupervisor::start(
                config.clone(),
                self.credentials.private_key.clone(),
                *settings,
                notify,
            )
            .await,
        );
    }

    /// Stops the tunnel within its stop bound and keeps the session, for app exit.
    pub async fn stop_tunnel(&mut self) -> TunnelOutcome {
        match self.tunnel.take() {
            Some(tunnel) => tunnel.stop().await,
            None => TunnelOutcome::NotRunning,
        }
    }

    /// Returns the tunnel's status: state, counters and the last health probe.
    pub fn tunnel_status(&self) -> TunnelStatus {
        self.tunnel
            .as_ref()
            .map(TunnelSupervisor::status)
            .unwrap_or_default()
    }

    /// Probes the server through the tunnel now, or tries again to start a tunnel that failed
    /// to start (with the same config and key), without waiting for the result.
    pub fn check_tunnel(&self) {
        if let Some(tunnel) = &self.tunnel {
            tunnel.check_now();
        }
    }

    pub(crate) fn tunnel_watch(&self) -> Option<TunnelWatch> {
        self.tunnel.as_ref().map(TunnelSupervisor::watch)
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn profile(&self) -> &Profile {
        &self.credentials.profile
    }

    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// Checks the session with the server (`GET /me`, `GET /wireguard/config`) and updates
    /// the profile.
    ///
    /// When the server still accepts the token but no longer has an allocation for it (the
    /// lease lapsed while the device was offline), this requests a new one with a new key.
    /// Network and server failures, and replies that fail the checks of sign-in, return `Err`
    /// and leave the session as it was.
    pub async fn confirm(&mut self) -> Result<Confirmation, ApiError> {
        let token = &self.credentials.access_token;

        let user = match self.api.me(token).await {
            Ok(user) => user,
            Err(error) if error.is_unauthorized() => return Ok(Confirmation::Expired),
            Err(error) => return Err(error),
        };

        let (wireguard, new_key) = match self.api.wireguard_config(token).await {
            Ok(wireguard) => (wireguard, None),
            Err(error) if error.is_unauthorized() => return Ok(Confirmation::Expired),
            Err(error) if error.code() == Some(error_code::NOT_CONFIGURED) => {
                tracing::info!(user_id = ?user.id, "the server has no VPN address for this session any more; requesting a new one");
                let private_key = PrivateKey::generate();
                match self
                    .api
                    .register_key(token, &private_key.public_key())
                    .await
                {
                    Ok(wireguard) => (wireguard, Some(private_key)),
                    Err(error) if error.is_unauthorized() => return Ok(Confirmation::Expired),
                    Err(error) => return Err(error),
                }
            }
            Err(error) => return Err(error),
        };

        validate_profile(&user, &self.credentials.profile.user.id).map_err(|error| {
            ApiError::InvalidReply {
                route: Route::ME,
                error,
            }
        })?;
        let route = match new_key {
            Some(_) => Route::REGISTER_KEY,
            None => Route::WIREGUARD_CONFIG,
        };
        wireguard
            .validate()
            .map_err(|error| ApiError::InvalidReply { route, error })?;

        let profile = Profile { user, wireguard };
        let changed = new_key.is_some() || profile != self.credentials.profile;
        self.credentials.profile = profile;
        if let Some(private_key) = new_key {
            self.credentials.private_key = private_key;
        }
        Ok(Confirmation::Confirmed { changed })
    }

    /// Signs out: sends `POST /logout` (bounded by the logout timeout), then stops the tunnel
    /// (bounded by its stop bound) and clears the stored credentials whatever the server
    /// replied, and reports all three.
    ///
    /// The step numbers follow the product's sign-out sequence; steps 1, 2 and 6 belong to
    /// the user interface.
    pub async fn sign_out(mut self, store: &dyn CredentialStore) -> SignOutReport {
        let server_url = self.api.server().to_string();
        let user_id = self.credentials.profile.user.id.clone();

        // Step 3: POST /logout with the token.
        let result = self.api.logout(&self.credentials.access_token).await;
        let server = ServerOutcome::from_logout_result(result);
        match &server {
            ServerOutcome::Confirmed { .. } => {
                tracing::info!(?user_id, server = %server_url, "the server confirmed the sign-out")
            }
            other => {
                tracing::warn!(?user_id, server = %server_url, outcome = other.kind(), ?other, "the server did not confirm the sign-out; signing out locally")
            }
        }

        // Step 4: stop the tunnel: its tasks end, its sockets close, its key is wiped.
        let tunnel = self.stop_tunnel().await;
        tracing::info!(
            ?user_id,
            outcome = tunnel.kind(),
            ?tunnel,
            "stopped the tunnel"
        );

        // Step 5: clear the stored credentials and persist that.
        let store = match store.clear() {
            Ok(()) => StoreOutcome::Cleared,
            Err(error) => {
                tracing::error!(%error, "could not clear the stored credentials");
                StoreOutcome::Failed {
                    error: error.to_string(),
                }
            }
        };

        // Dropping the session wipes the token and key from memory.
        drop(self);

        SignOutReport {
            server_url,
            server,
            tunnel,
            store,
        }
    }

    /// Logs out a session that will not be used, such as one whose credentials could not be
    /// saved, and reports the server's reply in the log only.
    pub async fn abandon(self, reason: &str) {
        tracing::warn!(user_id = ?self.credentials.profile.user.id, reason, "abandoning the new session");
        let result = self.api.logout(&self.credentials.access_token).await;
        log_abandon_result(&result);
    }
}

/// Checks the profile from `GET /me`: its texts, and that it names the signed-in user, whose id
/// `POST /login` returned.
fn validate_profile(user: &User, signed_in_user_id: &str) -> Result<(), InvalidField> {
    user.validate()?;

    if user.id != signed_in_user_id {
        return Err(InvalidField::new(
            "id",
            &user.id,
            format!("differs from the id {signed_in_user_id:?} of the signed-in user"),
        ));
    }
    Ok(())
}

/// Logs out the half-made session of a failed sign-in, bounded by the logout timeout.
async fn log_out_half_made(
    api: &ApiClient,
    token: &camwire_api::AccessToken,
    failed_step: SignInStep,
) {
    tracing::warn!(step = %failed_step, "sign-in failed after POST /login; logging the new session out again");
    let result = api.logout(token).await;
    log_abandon_result(&result);
}

fn log_abandon_result(result: &Result<camwire_api::LogoutResponse, ApiError>) {
    match result {
        Ok(_) => tracing::info!("the server ended the abandoned session"),
        Err(error) => {
            tracing::warn!(%error, "could not end the abandoned session; the server reclaims it when it expires")
        }
    }
}

#[cfg(test)]
mod tests {
    use camwire_api::Role;

    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.to_owned(),
            username: "alice".to_owned(),
            display_name: "Alice".to_owned(),
            email: "alice@example.com".to_owned(),
            role: Role::User,
        }
    }

    #[test]
    fn profile_of_signed_in_user_passes() {
        assert_eq!(validate_profile(&user("id-alice"), "id-alice"), Ok(()));
    }

    #[test]
    fn profile_of_another_user_is_rejected() {
        let error = validate_profile(&user("id-mallory"), "id-alice").expect_err("other user");

        assert_eq!(error.field, "id");
        assert_eq!(error.value, "id-mallory");
        assert!(error.reason.contains("\"id-alice\""), "{error}");
    }

    #[test]
    fn invalid_profile_text_is_rejected_first() {
        let mut profile = user("id-alice");
        profile.display_name = "x".repeat(900_000);

        let error = validate_profile(&profile, "id-alice").expect_err("too long");

        assert_eq!(error.field, "display_name");
    }

    #[test]
    fn invalid_reply_error_names_step_field_and_operator() {
        let error = SignInError::InvalidReply {
            step: SignInStep::RegisterKey,
            error: InvalidField::new("endpoint", "vpn.example.com", "expected host:port"),
        };

        assert_eq!(
            error.to_string(),
            "the server sent an invalid reply while requesting a VPN address: invalid endpoint \
             \"vpn.example.com\": expected host:port; contact the server's operator"
        );
    }
}
