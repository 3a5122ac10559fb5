//! Benchmark of the app's logout latency, in the real webview through tauri-driver.
//!
//! Measures, in one run and `--runs N` times each (50 by default):
//! - logout against a reachable server: from the click on the dialog's *Log out* to the
//!   sign-in view, both timed in the page (`performance.now()` in a click listener and in a
//!   `MutationObserver` on the view's `hidden` attribute);
//! - the same with `POST /logout` black-holed by the fault proxy;
//! - quitting the app (closing its window) and starting it again until the sign-in view
//!   shows, which is what a client that restarts itself to log out would cost. This is timed
//!   from the benchmark: the total includes starting tauri-driver and the WebDriver session,
//!   and a second figure starts when the app's process appears (polled every 2 ms).
//!
//! Prints the machine and a Markdown table of the figures. Run it under a display:
//! `xvfb-run -a target/debug/logout-latency`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use camwire_e2e::driver::{AppSession, DEFAULT_WAIT};
use camwire_e2e::process::{processes_of, target_dir, workspace_binary};
use camwire_e2e::proxy::{FaultProxy, LogoutFault};
use camwire_e2e::server::{ServerOptions, ServerProcess};

const DEFAULT_RUNS: usize = 50;

/// Installed in the page before each confirm click: records when the click happened and when
/// the sign-in view stopped being hidden, in `performance.now()` milliseconds.
const INSTALL_TIMERS: &str = "
    const confirm = document.getElementById('logout-confirm');
    const view = document.getElementById('signin-view');
    window.logoutTiming = { clicked: null, shown: null };
    document.addEventListener('click', (event) => {
        if (event.target === confirm && window.logoutTiming.clicked === null) {
            window.logoutTiming.clicked = performance.now();
        }
    }, { capture: true });
    const observer = new MutationObserver(() => {
        if (!view.hidden && window.logoutTiming.shown === null) {
            window.logoutTiming.shown = performance.now();
            observer.disconnect();
        }
    });
    observer.observe(view, { attributes: true, attributeFilter: ['hidden'] });
";

#[tokio::main]
async fn main() -> ExitCode {
    let runs = match parse_runs() {
        Ok(runs) => runs,
        Err(error) => {
            eprintln!("{error:#}");
            return ExitCode::from(2);
        }
    };

    match run(runs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("benchmark failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_runs() -> Result<usize> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.as_slice() {
        [] => Ok(DEFAULT_RUNS),
        [flag, value] if flag == "--runs" => {
            let runs: usize = value.parse().with_context(|| format!("invalid --runs {value:?}: expected a positive number"))?;
            ensure!(runs > 0, "invalid --runs 0: expected a positive number");
            Ok(runs)
        }
        _ => bail!("usage: logout-latency [--runs N]  (N runs of each measurement, {DEFAULT_RUNS} by default)"),
    }
}

async fn run(runs: usize) -> Result<()> {
    let dir = target_dir().join("bench").join("logout-latency");
    // A fresh database each run, so that the pool starts empty.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;

    let mut server = ServerProcess::start(&dir, ServerOptions::default()).await?;
    let outcome = measure_all(&server, &dir, runs).await;
    server.stop().await;
    let results = outcome?;

    print_machine();
    println!("runs: {runs} of each; p99 is the nearest-rank 99th percentile, so the maximum for fewer than 100 runs");
    println!();
    println!("| measurement | median | p99 | min | max |");
    println!("|---|---|---|---|---|");
    for (name, samples) in &results {
        let summary = Summary::of(samples);
        println!(
            "| {name} | {} | {} | {} | {} |",
            millis(summary.median),
            millis(summary.p99),
            millis(summary.min),
            millis(summary.max)
        );
    }
    Ok(())
}

async fn measure_all(server: &ServerProcess, dir: &Path, runs: usize) -> Result<Vec<(&'static str, Vec<Duration>)>> {
    let proxy = FaultProxy::start(&server.url()).await?;
    let data_home = dir.join("app-data");
    let log = dir.join("app.log");
    std::fs::create_dir_all(&data_home)?;
    let mut app = AppSession::launch(&data_home, &log).await?;

    let mut reachable = Vec::with_capacity(runs);
    for run in 0..runs {
        let latency = sign_in_and_log_out(&app, server, &proxy, "confirmed").await.with_context(|| format!("reachable run {run}"))?;
        reachable.push(latency);
    }

    proxy.set_logout_fault(LogoutFault::BlackHole);
    let mut black_holed = Vec::with_capacity(runs);
    for run in 0..runs {
        let latency = sign_in_and_log_out(&app, server, &proxy, "unreachable").await.with_context(|| format!("black-holed run {run}"))?;
        black_holed.push(latency);
    }
    proxy.set_logout_fault(LogoutFault::None);

    let mut exits = Vec::with_capacity(runs);
    let mut starts = Vec::with_capacity(runs);
    let mut restarts = Vec::with_capacity(runs);
    let application = workspace_binary("camwire")?;
    for run in 0..runs {
        let started = Instant::now();
        let exited = app.quit().await.with_context(|| format!("restart run {run}: quit"))?;
        let appeared = tokio::spawn(wait_for_process(application.clone()));
        app = AppSession::launch(&data_home, &log).await.with_context(|| format!("restart run {run}: start"))?;
        wait_for_sign_in_view(&app).await.with_context(|| format!("restart run {run}"))?;
        let shown = Instant::now();
        let appeared = appeared.await.context("the process watch failed")?;

        exits.push(exited);
        starts.push(shown.saturating_duration_since(appeared));
        restarts.push(shown - started);
    }
    app.close().await?;

    Ok(vec![
        ("logout, server reachable (confirm click to sign-in view)", reachable),
        ("logout, POST /logout black-holed", black_holed),
        ("quit: window close request to process exit", exits),
        ("start: app process start to sign-in view", starts),
        ("quit and start again through tauri-driver, total", restarts),
    ])
}

/// Signs alice in through the proxy, logs out, checks the notice's kind, and returns the
/// latency that the page measured.
async fn sign_in_and_log_out(app: &AppSession, server: &ServerProcess, proxy: &FaultProxy, notice_kind: &str) -> Result<Duration> {
    app.sign_in(&proxy.url(), "alice", server.password("alice")).await?;

    app.click("logout-button").await?;
    app.wait_visible("logout-dialog", DEFAULT_WAIT).await?;
    app.execute(INSTALL_TIMERS, vec![]).await?;
    app.click("logout-confirm").await?;
    app.wait_visible("signin-view", DEFAULT_WAIT).await?;

    let kind = app.data_kind("signout-notice").await?;
    ensure!(kind == notice_kind, "the sign-out notice's kind is {kind:?}, expected {notice_kind:?}");

    let timing = app.execute("return window.logoutTiming;", vec![]).await?;
    let clicked = timing.get("clicked").and_then(serde_json::Value::as_f64);
    let shown = timing.get("shown").and_then(serde_json::Value::as_f64);
    let (Some(clicked), Some(shown)) = (clicked, shown) else {
        bail!("the page recorded no complete timing: {timing}");
    };
    ensure!(shown >= clicked, "the sign-in view showed before the click: {timing}");
    Ok(Duration::from_secs_f64((shown - clicked) / 1000.0))
}

/// Returns the time at which a process of `binary` first runs, polling every 2 ms.
async fn wait_for_process(binary: PathBuf) -> Instant {
    while processes_of(&binary).is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

/// Polls every 5 ms until the sign-in view shows.
async fn wait_for_sign_in_view(app: &AppSession) -> Result<()> {
    let deadline = Instant::now() + DEFAULT_WAIT;
    while !app.is_visible("signin-view").await? {
        if Instant::now() >= deadline {
            bail!("the sign-in view did not show within {DEFAULT_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

struct Summary {
    min: Duration,
    median: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    /// Summarizes at least one sample; the median of an even count is the mean of the middle two.
    fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let count = sorted.len();

        let median = if count.is_multiple_of(2) {
            (sorted[count / 2 - 1] + sorted[count / 2]) / 2
        } else {
            sorted[count / 2]
        };
        // Nearest rank: the smallest sample with at least 99 % of the samples at or below it.
        let p99_rank = (count * 99).div_ceil(100).max(1);

        Self {
            min: sorted[0],
            median,
            p99: sorted[p99_rank - 1],
            max: sorted[count - 1],
        }
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, name)| name.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();

    println!("machine: {model}, {cores} cores available, Linux {}", kernel.trim());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis_list(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn summary_of_fifty_samples() {
        let summary = Summary::of(&millis_list((1..=50).rev()));

        assert_eq!(summary.min, Duration::from_millis(1));
        assert_eq!(summary.median, Duration::from_micros(25_500));
        assert_eq!(summary.p99, Duration::from_millis(50));
        assert_eq!(summary.max, Duration::from_millis(50));
    }

    #[test]
    fn summary_p99_of_two_hundred_samples() {
        let summary = Summary::of(&millis_list(1..=200));

        assert_eq!(summary.p99, Duration::from_millis(198));
        assert_eq!(summary.median, Duration::from_micros(100_500));
    }

    #[test]
    fn summary_of_one_sample() {
        let summary = Summary::of(&millis_list([7]));

        assert_eq!(summary.min, Duration::from_millis(7));
        assert_eq!(summary.median, Duration::from_millis(7));
        assert_eq!(summary.p99, Duration::from_millis(7));
    }
}
