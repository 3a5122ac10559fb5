//! Camwire's developer commands.
//!
//! - `cargo xtask test [CARGO TEST ARGS]`: installs what the tests need, builds the
//!   workspace and runs every test, under Xvfb when there is no display.
//! - `cargo xtask demo`: runs the reference server with a demo database under
//!   `target/demo/` and the desktop app signed in against it.
//! - `cargo xtask setup`: only the installation step.

mod bundle;
mod postgres;
mod setup;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [ARGS]   install what the tests need, build everything, run every test;
                ARGS go to `cargo test` (for example `-p camwire-server`)
  demo          start the reference server and the desktop app signed in as alice;
                without a display, walk through sign-in and logout under Xvfb and
                save screenshots under target/demo/
  setup         install the system packages and tools only";

fn main() -> ExitCode {
    let arguments: Vec<String> = env::args().skip(1).collect();
    let Some(command) = arguments.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };

    let result = match command.as_str() {
        "test" => test(&arguments[1..]),
        "demo" => demo(&arguments[1..]),
        "setup" => setup::install(&workspace_root()).map(|_| ()),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs what the tests need, builds every crate and binary, then runs every test.
fn test(cargo_test_arguments: &[String]) -> Result<()> {
    let root = workspace_root();
    let tools = setup::install(&root)?;

    println!("xtask: building the workspace");
    run(cargo(&root).args(["build", "--workspace", "--all-targets", "--locked"]))?;

    let deb = bundle::build_deb(&root)?;
    let postgres = postgres::Postgres::start(&root)?;

    println!("xtask: running the tests");
    let cargo_program = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = with_display(&root, &cargo_program)?;
    command
        .args(["test", "--workspace", "--locked"])
        .args(cargo_test_arguments)
        .envs(tools.environment())
        .env(postgres::URL_VARIABLE, &postgres.url)
        .env("CAMWIRE_DEB", &deb)
        .env("CAMWIRE_REQUIRE_BUNDLE", "1");
    run(&mut command)?;

    // The timer tests move boringtun's clock through its mock-instant feature, which
    // freezes the clock for everything else, so they build and run on their own.
    println!("xtask: running the tunnel's timer tests (feature mock-clock)");
    run(cargo(&root).args([
        "test",
        "--locked",
        "--package",
        "camwire-tunnel",
        "--features",
        "mock-clock",
        "--lib",
    ]))
}

/// Starts the reference server and the desktop app signed in as alice.
fn demo(arguments: &[String]) -> Result<()> {
    let root = workspace_root();
    let tools = setup::install(&root)?;

    println!("xtask: building the server, the app and the demo driver");
    run(cargo(&root).args([
        "build",
        "--locked",
        "--package",
        "camwire-server",
        "--package",
        "camwire",
        "--package",
        "camwire-e2e",
        "--bin",
        "camwire-server",
        "--bin",
        "camwire",
        "--bin",
        "demo-walkthrough",
    ]))?;

    let walkthrough = root.join("target/debug/demo-walkthrough");
    let mode = if has_display() { "--interactive" } else { "--scripted" };
    let mut command = with_display(&root, &walkthrough.to_string_lossy())?;
    command
        .arg(mode)
        .args(arguments)
        .envs(tools.environment())
        .current_dir(&root);
    run(&mut command)
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

fn has_display() -> bool {
    env::var_os("DISPLAY").is_some_and(|value| !value.is_empty())
        || env::var_os("WAYLAND_DISPLAY").is_some_and(|value| !value.is_empty())
}

/// Returns a command for `program`, wrapped in `xvfb-run` and `dbus-run-session` when
/// there is no display, so that the webview tests and the demo run on a headless
/// machine with a session bus (the app's single-instance check and tray use D-Bus).
fn with_display(root: &Path, program: &str) -> Result<Command> {
    if has_display() {
        let mut command = Command::new(program);
        command.current_dir(root);
        return Ok(command);
    }

    println!("xtask: no DISPLAY set, running under Xvfb (xvfb-run) with a D-Bus session");
    let mut command = Command::new("xvfb-run");
    command
        .args([
            "--auto-servernum",
            "--server-args=-screen 0 1280x800x24",
            "dbus-run-session",
            "--",
            program,
        ])
        .current_dir(root);
    Ok(command)
}

pub(crate) fn run(command: &mut Command) -> Result<()> {
    let description = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("failed to start {description}"))?;
    if !status.success() {
        bail!("{description} failed with {status}");
    }
    Ok(())
}
