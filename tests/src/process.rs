//! Child processes that run in their own process group, so that a test can end a
//! program together with everything it started (tauri-driver starts WebKitWebDriver,
//! which starts the app and its WebKit processes).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A child process leading its own process group; the whole group is ended on drop.
pub struct GroupChild {
    name: String,
    child: Child,
    group: Pid,
}

impl GroupChild {
    /// Starts `command` as the leader of a new process group, with stderr (and stdout
    /// unless the caller piped it) appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("failed to open log file {}", log.display()))?;
        let stderr = log_file.try_clone()?;

        command
            .process_group(0)
            .stdin(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        let pid = child.id().context("child exited before its pid was read")?;

        Ok(Self {
            name: name.to_owned(),
            child,
            group: Pid::from_raw(pid as i32),
        })
    }

    /// Like [`GroupChild::spawn`], with stdout also appended to `log`.
    pub fn spawn_logged(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("failed to open log file {}", log.display()))?;
        command.stdout(log_file);
        Self::spawn(name, command, log)
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn group_id(&self) -> i32 {
        self.group.as_raw()
    }

    /// Sends SIGTERM to the whole group, waits up to `grace` for every member to exit,
    /// then sends SIGKILL to whatever is left.
    pub async fn terminate(&mut self, grace: Duration) {
        let _ = killpg(self.group, Signal::SIGTERM);

        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !group_members(self.group.as_raw()).is_empty() {
            let _ = self.child.try_wait();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        if !group_members(self.group.as_raw()).is_empty() {
            eprintln!("{}: still running after SIGTERM, sending SIGKILL", self.name);
            let _ = killpg(self.group, Signal::SIGKILL);
        }
        let _ = self.child.wait().await;
    }

    /// Sends SIGKILL to the group leader only, as `kill -9 PID` would.
    pub fn kill_leader(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        let _ = killpg(self.group, Signal::SIGKILL);
    }
}

/// Returns the pids of the live processes in process group `group`, read from `/proc`.
///
/// A process that has exited counts as gone (see [`process_is_alive`]).
pub fn group_members(group: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };

    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat_fields(&format!("/proc/{pid}/stat")).is_some_and(|fields| fields.get(2) == Some(&group.to_string())))
        .filter(|pid| process_is_alive(*pid))
        .collect()
}

/// Returns whether process `pid` still runs: it exists and one of its threads has not
/// exited.
///
/// A zombie has exited and only waits for its parent to reap it. But the main thread of a
/// multi-threaded process can be a zombie while its other threads still exit, and those
/// still hold the process's files, listening sockets included, so every thread counts.
pub fn process_is_alive(pid: i32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };

    tasks.filter_map(Result::ok).any(|task| {
        let state = stat_fields(&task.path().join("stat").to_string_lossy()).and_then(|fields| fields.first().cloned());
        // Z is a zombie, X a task being removed.
        state.is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Returns the fields of a `/proc` stat file after the command name: the state first, the
/// process group third.
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name in brackets may contain spaces, so fields are counted after the
    // closing bracket.
    let (_, after_name) = stat.rsplit_once(')')?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// Returns the pids of live processes whose executable is `binary`.
pub fn processes_of(binary: &Path) -> Vec<i32> {
    let Ok(target) = binary.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };

    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == target) && process_is_alive(*pid))
        .collect()
}

/// Returns the local ports of the UDP sockets (IPv4 and IPv6) that process `pid` has open,
/// read from `/proc`.
pub fn udp_ports_of(pid: i32) -> Result<Vec<u16>> {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut inodes = std::collections::HashSet::new();
    for entry in fs::read_dir(&fd_dir).with_context(|| format!("failed to list {fd_dir}"))? {
        let Ok(target) = fs::read_link(entry?.path()) else {
            continue;
        };
        // A socket's link reads `socket:[INODE]`.
        let target = target.to_string_lossy();
        let inode = target.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']'));
        if let Some(inode) = inode {
            inodes.insert(inode.to_owned());
        }
    }

    let mut ports = Vec::new();
    for table in ["udp", "udp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        // Columns: sl, local_address (HEX_ADDRESS:HEX_PORT), rem_address, st, queues,
        // tr, retrnsmt, uid, timeout, inode, ...
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            let port = local.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
            ports.extend(port);
        }
    }
    Ok(ports)
}

/// Returns the path of a binary of this workspace in `target/debug/` (or
/// `$CARGO_TARGET_DIR/debug/`), with an error saying how to build it when it is missing.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let variable = format!("CAMWIRE_{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&variable) {
        return Ok(PathBuf::from(path));
    }

    let path = target_dir().join("debug").join(name);
    anyhow::ensure!(
        path.exists(),
        "binary {} not found: build it first with `cargo build --workspace` \
         (or point {variable} at another build)",
        path.display()
    );
    Ok(path)
}

/// Returns the workspace's `target/` directory.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    workspace_root().join("target")
}

pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or(manifest_dir)
}

/// Returns a loopback TCP port that was free a moment ago.
///
/// NOTE: another process can take the port between this call and its use; tests run
/// one after another, so this has not been seen to happen.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("failed to bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Returns `N` distinct loopback TCP ports that were free a moment ago.
///
/// Every listener stays open until all ports are chosen, because two [`free_port`] calls in
/// a row may return the same port: the kernel hands a just-released port out again.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("failed to bind a loopback port")?;
        *port = listener.local_addr()?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// Returns a loopback UDP port that was free a moment ago; the same race as [`free_port`].
pub fn free_udp_port() -> Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("failed to bind a loopback UDP port")?;
    Ok(socket.local_addr()?.port())
}

/// Describes the processes that listen on TCP `port`, such as `WebKitWebDriver (pid 42)`,
/// for error messages; empty when `/proc` shows no listener.
pub fn describe_listeners(port: u16) -> String {
    // In /proc/net/tcp, local_address is HEX_ADDRESS:HEX_PORT, state 0A is LISTEN and the
    // inode is the tenth column.
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let listening = fields.get(3) == Some(&"0A");
                    let matches = u16::from_str_radix(local_port, 16).ok() == Some(port);
                    (listening && matches).then(|| fields.get(9).map(|inode| (*inode).to_owned()))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return String::new();
    }

    let Ok(entries) = fs::read_dir("/proc") else {
        return String::new();
    };
    let mut owners = Vec::new();
    for pid in entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let owns = fds.filter_map(Result::ok).any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                inodes.iter().any(|inode| target == format!("socket:[{inode}]"))
            })
        });
        if owns {
            let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            owners.push(format!("{} (pid {pid})", name.trim()));
        }
    }
    owners.join(", ")
}

/// Returns whether something accepts TCP connections on `127.0.0.1:port`.
pub fn port_is_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}
