//! The desktop app's Linux bundles, made with the Tauri CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

/// The Tauri CLI release that makes the bundles; its 2.x line matches the `tauri` crate.
const TAURI_CLI_VERSION: &str = "2.12.6";

/// Builds the `.deb` and `.rpm` bundles (a release build) and returns the `.deb`'s path.
///
/// NOTE: the AppImage is left out because the CLI downloads linuxdeploy for it, and
/// machines without that download fail.
pub fn build_deb(root: &Path) -> Result<PathBuf> {
    println!("xtask: building the deb and rpm bundles (release build, Tauri CLI {TAURI_CLI_VERSION})");
    run(Command::new("npx")
        .arg("--yes")
        .arg(format!("@tauri-apps/cli@{TAURI_CLI_VERSION}"))
        .args(["build", "--bundles", "deb,rpm", "--ci"])
        .current_dir(root))?;

    let version = workspace_version(root)?;
    let folder = root.join("target/release/bundle/deb");
    let prefix = format!("Camwire_{version}_");
    let deb = std::fs::read_dir(&folder)
        .with_context(|| format!("the Tauri CLI wrote no {}", folder.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(".deb")
        });
    deb.with_context(|| format!("no {prefix}<arch>.deb in {}", folder.display()))
}

/// Returns `version` of `[workspace.package]` in the root `Cargo.toml`.
fn workspace_version(root: &Path) -> Result<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).context("failed to read Cargo.toml")?;
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
            continue;
        }
        if in_package && let Some(value) = line.strip_prefix("version") {
            let value = value.trim_start().trim_start_matches('=').trim().trim_matches('"');
            return Ok(value.to_owned());
        }
    }
    anyhow::bail!("no version in [workspace.package] of Cargo.toml")
}
