//! Installation of the system packages and tools that the tests and the demo need.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::run;

/// Debian packages: WebKitGTK and its WebDriver for the app, Xvfb and a D-Bus session
/// for headless runs, PostgreSQL for the server's second database, and the build tools
/// of the native crates. Node.js (for the Tauri CLI that makes the bundles) is added
/// only when `npx` is missing, so a newer Node.js already installed is kept.
const SYSTEM_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "libssl-dev",
    "libwebkit2gtk-4.1-dev",
    "libayatana-appindicator3-dev",
    "librsvg2-dev",
    "webkit2gtk-driver",
    "xvfb",
    "xauth",
    "fonts-dejavu-core",
    "dbus",
    "postgresql",
];

/// The tauri-driver release the WebDriver suite was written against.
pub const TAURI_DRIVER_VERSION: &str = "2.1.0";

/// The onetun release that the tunnel's interoperability test and bench run against.
pub const ONETUN_VERSION: &str = "0.3.10";

/// Where the installed tools are, as environment variables for the test run.
pub struct Tools {
    cargo_bin: PathBuf,
    tauri_driver: PathBuf,
    onetun: PathBuf,
}

impl Tools {
    pub fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut path = vec![self.cargo_bin.clone()];
        path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        let path = env::join_paths(path).unwrap_or_default();

        vec![
            ("PATH".into(), path),
            ("CAMWIRE_TAURI_DRIVER".into(), self.tauri_driver.clone().into()),
            ("CAMWIRE_ONETUN".into(), self.onetun.clone().into()),
            // onetun is installed above, so its interoperability test must not skip.
            ("CAMWIRE_REQUIRE_ONETUN".into(), "1".into()),
        ]
    }
}

/// Installs whatever is missing and returns where the tools are.
pub fn install(root: &Path) -> Result<Tools> {
    install_system_packages()?;

    let cargo_bin = cargo_home().join("bin");
    let tauri_driver = install_tauri_driver(root, &cargo_bin)?;
    let onetun = install_onetun(root)?;

    Ok(Tools { cargo_bin, tauri_driver, onetun })
}

fn install_system_packages() -> Result<()> {
    if !Path::new("/usr/bin/dpkg-query").exists() {
        println!(
            "xtask: not a Debian or Ubuntu system, so system packages are not checked; \
             install WebKitGTK 4.1, its WebDriver and Xvfb by hand if the tests need them"
        );
        return Ok(());
    }

    let mut missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .copied()
        .filter(|package| !is_installed(package))
        .collect();
    if !on_path("npx") {
        missing.extend(["nodejs", "npm"]);
    }
    if missing.is_empty() {
        return Ok(());
    }

    println!("xtask: installing missing system packages: {}", missing.join(" "));
    let mut update = privileged("apt-get");
    update.args(["update", "--quiet"]);
    run(&mut update)?;

    let mut install = privileged("apt-get");
    install
        .args(["install", "--yes", "--quiet", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut install)
}

fn on_path(program: &str) -> bool {
    env::split_paths(&env::var_os("PATH").unwrap_or_default()).any(|dir| dir.join(program).is_file())
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${Status}", package])
        .output()
        .is_ok_and(|output| output.stdout.ends_with(b"install ok installed"))
}

/// Returns `program` run as root: directly when this process is root, else through sudo.
fn privileged(program: &str) -> Command {
    if is_root() {
        return Command::new(program);
    }
    println!("xtask: running {program} through sudo");
    let mut command = Command::new("sudo");
    command.arg("--preserve-env=DEBIAN_FRONTEND").arg(program);
    command
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn install_tauri_driver(root: &Path, cargo_bin: &Path) -> Result<PathBuf> {
    let installed = cargo_bin.join("tauri-driver");
    if installed.exists() && installed_version("tauri-driver").as_deref() == Some(TAURI_DRIVER_VERSION) {
        return Ok(installed);
    }

    println!("xtask: installing tauri-driver {TAURI_DRIVER_VERSION} with cargo install");
    let mut install = Command::new(cargo_program());
    install
        .args(["install", "tauri-driver", "--locked", "--version"])
        .arg(format!("={TAURI_DRIVER_VERSION}"))
        .current_dir(root);
    run(&mut install)?;
    Ok(installed)
}

/// Installs onetun, another userspace WireGuard client, into `target/tools/`.
fn install_onetun(root: &Path) -> Result<PathBuf> {
    let tools = root.join("target/tools");
    let installed = tools.join("bin/onetun");
    let marker = tools.join(format!("onetun-{ONETUN_VERSION}.installed"));
    if installed.exists() && marker.exists() {
        return Ok(installed);
    }

    println!("xtask: installing onetun {ONETUN_VERSION} into {}", tools.display());
    let mut install = Command::new(cargo_program());
    install
        .args(["install", "onetun", "--locked", "--force", "--version"])
        .arg(format!("={ONETUN_VERSION}"))
        .arg("--root")
        .arg(&tools)
        .current_dir(root);
    run(&mut install)?;
    std::fs::write(&marker, ONETUN_VERSION)?;
    Ok(installed)
}

/// Returns the version of a crate's binaries installed by `cargo install`, such as `2.1.0`.
///
/// tauri-driver has no `--version` flag, so this reads `cargo install --list`, whose
/// lines read `tauri-driver v2.1.0:`.
fn installed_version(crate_name: &str) -> Option<String> {
    let output = Command::new(cargo_program())
        .args(["install", "--list"])
        .output()
        .ok()?;
    let listing = String::from_utf8(output.stdout).ok()?;
    let prefix = format!("{crate_name} v");

    listing.lines().find_map(|line| {
        let version = line.strip_prefix(&prefix)?;
        Some(version.trim_end_matches(':').to_owned())
    })
}

fn cargo_program() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn cargo_home() -> PathBuf {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return PathBuf::from(home);
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cargo")
}
