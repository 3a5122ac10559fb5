//! Runs the `wg` tool of wireguard-tools against a live kernel interface.
//!
//! Argument lists and output parsing are pure functions; [`WgTool::run`] is the only
//! part that starts a process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use camwire_tunnel::PublicKey;

use super::Handshakes;

/// Time that one `wg` call may take before it is killed and reported as failed.
const WG_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum length of `wg`'s standard error quoted in an error, in characters.
const MAX_QUOTED_STDERR: usize = 500;

/// Errors of running `wg`.
#[derive(Debug, thiserror::Error)]
pub enum WgToolError {
    #[error("failed to start {program}: {source}; install wireguard-tools or pass --wg-tool PATH")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` timed out after {} s", WG_TIMEOUT.as_secs())]
    TimedOut { command: String },
    #[error("`{command}` failed with {status}: {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("invalid output of `{command}` on line {line}: {reason}")]
    InvalidOutput {
        command: String,
        line: usize,
        reason: String,
    },
    #[error("failed to write the stripped WireGuard config for `wg syncconf`: {0}")]
    TemporaryFile(#[source] std::io::Error),
}

/// The `wg` program and the interface it manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgTool {
    /// Path or name of the `wg` program; a bare name is looked up on `PATH`.
    pub program: PathBuf,
    /// Name of the kernel WireGuard interface, such as `wg0`.
    pub interface: String,
}

impl WgTool {
    /// Returns the arguments of `wg syncconf INTERFACE FILE`, which makes the interface's
    /// peers match `file` and leaves peers whose settings did not change untouched.
    pub fn syncconf_args(&self, file: &Path) -> Vec<OsString> {
        vec![
            "syncconf".into(),
            self.interface.clone().into(),
            file.as_os_str().to_owned(),
        ]
    }

    /// Returns the arguments of `wg set INTERFACE peer KEY remove`, which removes one
    /// peer and leaves the others alone.
    pub fn remove_peer_args(&self, public_key: &PublicKey) -> Vec<OsString> {
        vec![
            "set".into(),
            self.interface.clone().into(),
            "peer".into(),
            public_key.to_base64().into(),
            "remove".into(),
        ]
    }

    /// Returns the arguments of `wg show INTERFACE latest-handshakes`.
    pub fn latest_handshakes_args(&self) -> Vec<OsString> {
        vec![
            "show".into(),
            self.interface.clone().into(),
            "latest-handshakes".into(),
        ]
    }

    /// Runs `wg` with `args` and returns its standard output.
    pub async fn run(&self, args: &[OsString]) -> Result<String, WgToolError> {
        let command = self.describe(args);

        let child = tokio::process::Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| WgToolError::Spawn {
                program: self.program.clone(),
                source,
            })?;

        let output = match tokio::time::timeout(WG_TIMEOUT, child.wait_with_output()).await {
            Ok(result) => result.map_err(|source| WgToolError::Spawn {
                program: self.program.clone(),
                source,
            })?,
            Err(_elapsed) => return Err(WgToolError::TimedOut { command }),
        };

        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(WgToolError::Failed {
                command,
                status: output.status,
                stderr: stderr.trim().chars().take(MAX_QUOTED_STDERR).collect(),
            });
        }

        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Reads the last handshake of each peer of the interface.
    pub async fn latest_handshakes(&self) -> Result<Handshakes, WgToolError> {
        let args = self.latest_handshakes_args();
        let output = self.run(&args).await?;

        parse_latest_handshakes(&output).map_err(|(line, reason)| WgToolError::InvalidOutput {
            command: self.describe(&args),
            line,
            reason,
        })
    }

    /// Formats a command line for errors and logs; the arguments hold no secrets, since
    /// a private key only ever travels in a file.
    fn describe(&self, args: &[OsString]) -> String {
        let mut text = self.program.display().to_string();
        for arg in args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    }
}

/// Parses the output of `wg show INTERFACE latest-handshakes`: one `KEY<TAB>SECONDS` line
/// per peer, where SECONDS is a Unix time and 0 means no handshake yet.
///
/// Peers without a handshake get no entry. Errors carry the line number and the reason.
pub fn parse_latest_handshakes(output: &str) -> Result<Handshakes, (usize, String)> {
    let mut handshakes = Handshakes::new();

    for (index, line) in output.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }

        let mut fields = line.split_whitespace();
        let (Some(key), Some(seconds), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err((number, "expected a public key and a Unix time".into()));
        };

        let public_key =
            PublicKey::from_base64(key).map_err(|error| (number, error.to_string()))?;
        let seconds: u64 = seconds
            .parse()
            .map_err(|_| (number, format!("invalid Unix time {seconds:?}")))?;

        if seconds == 0 {
            continue;
        }

        handshakes.insert(
            public_key,
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
        );
    }

    Ok(handshakes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use camwire_tunnel::PrivateKey;

    fn tool() -> WgTool {
        WgTool {
            program: "wg".into(),
            interface: "wg0".into(),
        }
    }

    #[test]
    fn remove_touches_one_peer() {
        let key = PrivateKey::generate().public_key();

        let args = tool().remove_peer_args(&key);

        let expected: Vec<OsString> = ["set", "wg0", "peer", &key.to_base64(), "remove"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(args, expected);
    }

    #[test]
    fn syncconf_names_interface_and_file() {
        let args = tool().syncconf_args(Path::new("/run/camwire/.wg0.strip"));

        assert_eq!(
            args,
            ["syncconf", "wg0", "/run/camwire/.wg0.strip"].map(OsString::from)
        );
    }

    #[test]
    fn latest_handshakes_args_match_wg_show() {
        assert_eq!(
            tool().latest_handshakes_args(),
            ["show", "wg0", "latest-handshakes"].map(OsString::from)
        );
    }

    #[test]
    fn handshake_output_parses_and_skips_zero() {
        let active = PrivateKey::generate().public_key();
        let idle = PrivateKey::generate().public_key();
        let output = format!(
            "{active}\t1767225600\n{idle}\t0\n\n",
            active = active.to_base64(),
            idle = idle.to_base64()
        );

        let handshakes = parse_latest_handshakes(&output).expect("parses");

        assert_eq!(handshakes.len(), 1);
        assert_eq!(
            handshakes[&active],
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
        );
    }

    #[test]
    fn bad_handshake_lines_name_the_line() {
        let key = PrivateKey::generate().public_key().to_base64();
        let cases = [
            (format!("{key}\n"), 1, "expected a public key"),
            (format!("\n{key}\tsoon\n"), 2, "invalid Unix time"),
            ("notakey\t5\n".to_owned(), 1, "invalid WireGuard key"),
            (format!("{key}\t5\textra\n"), 1, "expected a public key"),
        ];

        for (output, line, reason) in cases {
            let error = parse_latest_handshakes(&output).expect_err("invalid");

            assert_eq!(error.0, line, "{output:?}");
            assert!(error.1.contains(reason), "{output:?}: {}", error.1);
        }
    }
}
