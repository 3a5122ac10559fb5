//! The demo: the reference server with a demo database under `target/demo/`, and the
//! desktop app signed in as alice against it.
//!
//! - `--interactive` (a display is present): signs alice in through the real webview and
//!   leaves the window to the user. Closing the window ends the demo and the server.
//! - `--scripted` (headless, under Xvfb): walks through every view once in the light theme
//!   and once in the dark one, with a screenshot of each under `target/demo/`. Each round
//!   picks the theme in the settings view, signs alice in and logs her out, and fails
//!   unless the logout freed her address.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use camwire_e2e::{db, hub};
use camwire_e2e::driver::{AppSession, DEFAULT_WAIT};
use camwire_e2e::process::{port_is_open, target_dir};
use camwire_e2e::server::{ServerOptions, ServerProcess};

const DEMO_PORT: u16 = 8080;

#[tokio::main]
async fn main() -> ExitCode {
    let scripted = std::env::args().any(|argument| argument == "--scripted");

    match run(scripted).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(scripted: bool) -> Result<()> {
    let dir = target_dir().join("demo");
    // A fresh database each run, so alice always starts at the pool's first address.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;

    let port = if port_is_open(DEMO_PORT) { None } else { Some(DEMO_PORT) };
    let options = ServerOptions { port, ..ServerOptions::default() };
    let mut server = ServerProcess::start(&dir, options).await?;
    println!("server: {} (database {}, log {})", server.url(), server.database_path().display(), server.log_path().display());
    for (user, password) in &server.passwords {
        println!("demo user {user} password {password}");
    }

    let data_home = dir.join("app-data");
    std::fs::create_dir_all(&data_home)?;
    let app = AppSession::launch(&data_home, &dir.join("app.log")).await?;

    let outcome = if scripted {
        walk_through(&app, &server, &dir).await
    } else {
        stay_signed_in(&app, &server).await
    };

    let closed = app.close().await;
    server.stop().await;
    outcome?;
    closed
}

/// Signs alice in and waits until the user closes the window.
async fn stay_signed_in(app: &AppSession, server: &ServerProcess) -> Result<()> {
    app.sign_in(&server.url(), "alice", server.password("alice")).await?;
    println!("the app is signed in as alice; close its window to end the demo");

    while app.client().title().await.is_ok() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Walks through every view once per theme, with a screenshot of each.
async fn walk_through(app: &AppSession, server: &ServerProcess, dir: &Path) -> Result<()> {
    for theme in ["light", "dark"] {
        choose_theme(app, server, theme, dir).await?;
        log_in_and_out(app, server, &dir.join(theme)).await?;
    }
    println!("screenshots saved in {}", dir.display());
    Ok(())
}

/// Picks `theme` in the settings view, as a user would, and saves a screenshot of the
/// settings view in it as `THEME/0-settings.png`.
async fn choose_theme(app: &AppSession, server: &ServerProcess, theme: &str, dir: &Path) -> Result<()> {
    app.wait_visible("signin-view", DEFAULT_WAIT).await?;
    app.click("settings-button").await?;
    app.wait_visible("settings-view", DEFAULT_WAIT).await?;
    app.fill("settings-server-url", &server.url()).await?;
    app.find("settings-theme")
        .await?
        .select_by_value(theme)
        .await
        .with_context(|| format!("failed to pick the {theme} theme"))?;
    app.click("settings-save").await?;
    app.wait_hidden("settings-view", DEFAULT_WAIT).await?;

    let applied = app.execute("return document.documentElement.dataset.theme;", Vec::new()).await?;
    ensure!(applied == theme, "the page shows the {applied} theme after picking {theme}");

    let dir = dir.join(theme);
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    app.click("settings-button").await?;
    app.wait_visible("settings-view", DEFAULT_WAIT).await?;
    app.screenshot(&dir.join("0-settings.png")).await?;
    app.click("settings-cancel").await?;
    app.wait_hidden("settings-view", DEFAULT_WAIT).await
}

/// Signs alice in and out through the real webview, with a screenshot of each view under
/// `dir`, and checks that the logout freed her address.
async fn log_in_and_out(app: &AppSession, server: &ServerProcess, dir: &Path) -> Result<()> {
    app.wait_visible("signin-view", DEFAULT_WAIT).await?;
    app.screenshot(&dir.join("1-sign-in.png")).await?;

    app.sign_in(&server.url(), "alice", server.password("alice")).await?;
    app.wait_text("profile-address", DEFAULT_WAIT).await?;
    hub::ensure_tunnel_live(app).await?;
    // WebKit may hand out the frame painted before the last change; a screenshot is not
    // a check, so a short pause is enough here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.screenshot(&dir.join("2-profile.png")).await?;

    let before = db::addresses_of(&server.database_url(), "alice").await?;
    println!("alice's allocation before logout: {}", describe(&before));
    ensure!(before.len() == 1, "alice should hold one address after sign-in, holds {before:?}");

    app.click("logout-button").await?;
    app.wait_visible("logout-dialog", DEFAULT_WAIT).await?;
    app.screenshot(&dir.join("3-confirm-logout.png")).await?;

    app.click("logout-confirm").await?;
    app.wait_visible("signin-view", DEFAULT_WAIT).await?;
    app.screenshot(&dir.join("4-signed-out.png")).await?;

    let after = db::addresses_of(&server.database_url(), "alice").await?;
    println!("alice's allocation after logout: {}", describe(&after));
    if !after.is_empty() {
        bail!("logout did not free alice's address: she still holds {after:?}");
    }
    println!("demo passed: {} was freed by the logout", before[0]);
    Ok(())
}

fn describe(addresses: &[std::net::Ipv4Addr]) -> String {
    if addresses.is_empty() {
        return "none".into();
    }
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
