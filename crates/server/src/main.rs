//! `camwire-server`: runs the Camwire API, or manages its users.

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;
use tracing_subscriber::EnvFilter;

use camwire_api::{AdminPeer, Password, Role};
use camwire_server::config::{
    BackendChoice, DEFAULT_DATABASE_URL, DEFAULT_LISTEN, DEFAULT_POOL, DEFAULT_WG_LISTEN,
    DEFAULT_WG_PROGRAM, default_wg_config_path, parse_forward,
};
use camwire_server::db::Db;
use camwire_server::metrics::Metrics;
use camwire_server::peers::PeerContext;
use camwire_server::pool::AddressPool;
use camwire_server::replica::ReplicaSync;
use camwire_server::users::{MAX_PASSWORD_LEN, NewUser, add_user};
use camwire_server::{ServerConfig, admin, start};
use camwire_tunnel::Forward;

/// The Camwire reference server: sign-in, WireGuard address pool and peer management.
#[derive(Debug, Parser)]
#[command(name = "camwire-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// List and revoke WireGuard peers.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Show the size and use of the address pool.
    Pool(DatabaseArgs),
}

#[derive(Debug, Args)]
struct DatabaseArgs {
    /// URL of the server's database, as for `serve`; a missing SQLite file is not created.
    #[arg(long, value_name = "URL", env = "CAMWIRE_DATABASE_URL")]
    database: String,
}

#[derive(Debug, Subcommand)]
enum PeersCommand {
    /// List every peer, lowest address first.
    List(PeersListArgs),
    /// Revoke a peer: free its address and delete its session, so that its access token
    /// gets 401. Running servers remove it from their WireGuard back ends within about
    /// a second.
    Revoke(PeersRevokeArgs),
}

#[derive(Debug, Args)]
struct PeersListArgs {
    #[command(flatten)]
    database: DatabaseArgs,

    /// Print the list as JSON, in the form of `GET /admin/peers`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PeersRevokeArgs {
    /// Id of the peer, from `peers list`.
    id: String,

    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address and port of the HTTP API; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,

    /// Database URL: sqlite://PATH (the file is created when missing) or postgres://USER@HOST/NAME.
    #[arg(long, value_name = "URL", env = "CAMWIRE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database: String,

    /// IPv4 network of the WireGuard addresses, /16 to /30, normally a private range such as
    /// 10.0.0.0/8; its first host is the server.
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_POOL)]
    pool: Ipv4Net,

    /// Peer back end: `embedded` runs a userspace WireGuard hub in this process on
    /// --wg-listen, without privileges; `wg-config` only keeps the config file, applied
    /// to --wg-interface when one is given.
    #[arg(long, value_enum, value_name = "NAME", default_value_t = PeerBackendArg::Embedded)]
    peer_backend: PeerBackendArg,

    /// UDP address of the embedded WireGuard hub; port 0 picks a free port [default: 127.0.0.1:51820]
    #[arg(long, value_name = "ADDR")]
    wg_listen: Option<SocketAddr>,

    /// wg-quick config file that the server keeps; it contains the server's private key [default: wg0.conf beside the SQLite file]
    #[arg(long, value_name = "PATH")]
    wg_config: Option<PathBuf>,

    /// WireGuard endpoint that clients connect to, as HOST:PORT [default: the hub's bound
    /// address with the embedded back end, 127.0.0.1:51820 with wg-config]. With
    /// wg-config its port is also ListenPort.
    #[arg(long, value_name = "HOST:PORT")]
    wg_endpoint: Option<String>,

    /// Forward TCP port PORT of the server's VPN address (the pool's first host) to the
    /// local service HOST:PORT, such as 554=127.0.0.1:8554; HOST is an IP address.
    /// Repeatable. Port 80 goes to this server's HTTP API unless a --forward takes it.
    /// Embedded back end only.
    #[arg(long, value_name = "PORT=HOST:PORT", value_parser = parse_forward_arg)]
    forward: Vec<Forward>,

    /// Lifetime of an access token, in seconds; at most 31536000 (365 days).
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    session_ttl: u64,

    /// Idle time without a WireGuard handshake after which a peer's address is reclaimed,
    /// in seconds. A peer that never completed a handshake counts from its allocation. A
    /// client that sends data through the tunnel completes a new handshake about every 2
    /// minutes (WireGuard's REKEY_AFTER_TIME), so keep the lease well above that.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    lease_time: u64,

    /// Interval of the sweeper that reclaims expired and idle peers, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    sweep_interval: u64,

    /// Interval of the full resynchronization of the WireGuard back end with the
    /// database, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    resync_interval: u64,

    /// Time limit of one HTTP request, in seconds; slower requests get 503.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout: u64,

    /// Kernel WireGuard interface to apply the config file to with `wg`, such as wg0;
    /// needs --peer-backend wg-config. Without it, only the file changes.
    #[arg(long, value_name = "NAME")]
    wg_interface: Option<String>,

    /// The `wg` program of wireguard-tools, for --wg-interface.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_WG_PROGRAM)]
    wg_tool: PathBuf,

    /// Create the users alice, bob and admin when missing, with new random passwords
    /// printed on stdout; existing users keep their passwords. Only allowed with a
    /// loopback --listen address.
    #[arg(long)]
    demo: bool,
}

/// Values of `--peer-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PeerBackendArg {
    Embedded,
    WgConfig,
}

fn parse_forward_arg(text: &str) -> Result<Forward, String> {
    parse_forward(text).map_err(|error| error.to_string())
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from the first line of standard input.
    Add(UserAddArgs),
}

#[derive(Debug, Args)]
struct UserAddArgs {
    /// User name: 1 to 64 characters without whitespace.
    name: String,

    /// Database URL, as for `serve`.
    #[arg(long, value_name = "URL", env = "CAMWIRE_DATABASE_URL")]
    database: String,

    /// Read the password from the first line of standard input (required, so that it
    /// never appears in the process list or shell history).
    #[arg(long, required = true)]
    password_stdin: bool,

    /// Name shown in the app [default: the user name]
    #[arg(long, value_name = "S")]
    display_name: Option<String>,

    /// E-mail address shown in the app [default: empty]
    #[arg(long, value_name = "S")]
    email: Option<String>,

    /// Role: `user`, or `admin` for the admin routes.
    #[arg(long, value_name = "ROLE", default_value = "user", value_parser = parse_role)]
    role: Role,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing();

    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::User(UserCommand::Add(args)) => user_add(args).await,
        Command::Peers(PeersCommand::List(args)) => peers_list(args).await,
        Command::Peers(PeersCommand::Revoke(args)) => peers_revoke(args).await,
        Command::Pool(args) => pool(args).await,
    }
}

/// Logs go to stderr, so that stdout carries only the lines scripts parse.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));

    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn serve(args: ServeArgs) -> Result<()> {
    if args.peer_backend == PeerBackendArg::WgConfig && args.wg_listen.is_some() {
        bail!(
            "--wg-listen sets the embedded hub's address and has no effect with --peer-backend wg-config; leave it out, or set the port with --wg-endpoint"
        );
    }

    let wg_config_path = args
        .wg_config
        .unwrap_or_else(|| default_wg_config_path(&args.database));

    let mut config = ServerConfig::new(args.database);
    config.listen = args.listen;
    config.pool = args.pool;
    config.wg_config_path = wg_config_path;
    config.backend = match args.peer_backend {
        PeerBackendArg::Embedded => BackendChoice::Embedded,
        PeerBackendArg::WgConfig => BackendChoice::WgConfig,
    };
    config.wg_listen = args.wg_listen.unwrap_or(DEFAULT_WG_LISTEN);
    config.wg_endpoint = args.wg_endpoint;
    config.forwards = args.forward;
    config.session_ttl = Duration::from_secs(args.session_ttl);
    config.lease_time = Duration::from_secs(args.lease_time);
    config.sweep_interval = Duration::from_secs(args.sweep_interval);
    config.resync_interval = Duration::from_secs(args.resync_interval);
    config.request_timeout = Duration::from_secs(args.request_timeout);
    config.wg_interface = args.wg_interface;
    config.wg_program = args.wg_tool;
    config.demo = args.demo;

    let server = start(config)
        .await
        .context("failed to start camwire-server")?;

    for user in server.demo_users() {
        match &user.password {
            Some(password) => {
                println!("demo user {} password {}", user.username, password.expose())
            }
            None => println!(
                "demo user {} exists; its password was left unchanged",
                user.username
            ),
        }
    }
    if let Some(hub_addr) = server.hub_addr() {
        println!("wireguard hub listening on udp://{hub_addr}");
    }
    println!("listening on {}", server.url());

    server
        .run_until(shutdown_signal())
        .await
        .context("camwire-server failed")?;
    Ok(())
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };

    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

async fn user_add(args: UserAddArgs) -> Result<()> {
    let password =
        read_password_line().context("failed to read the password from standard input")?;

    let db = Db::connect(&args.database)
        .await
        .context("failed to open the database")?;
    let user = NewUser {
        username: args.name,
        password,
        display_name: args.display_name,
        email: args.email,
        role: args.role,
    };

    let result = add_user(&db, user).await;
    db.close().await;
    let created = result?;

    println!(
        "created user {} ({}) with id {}",
        created.username, created.role, created.id
    );
    Ok(())
}

/// Opens the existing database and the pool that the servers stored in it.
async fn open_with_pool(database: &str) -> Result<(Db, AddressPool)> {
    let db = Db::connect_existing(database)
        .await
        .context("failed to open the database")?;

    let Some(network) = db
        .stored_pool()
        .await
        .context("failed to read the address pool")?
    else {
        db.close().await;
        bail!("the database has no address pool yet; start `camwire-server serve` on it once");
    };

    let pool = AddressPool::new(network).context("the stored address pool is invalid")?;
    Ok((db, pool))
}

async fn peers_list(args: PeersListArgs) -> Result<()> {
    let db = Db::connect_existing(&args.database.database)
        .await
        .context("failed to open the database")?;

    let result = admin::list_peers(&db, None, None).await;
    db.close().await;
    let list = result
        .map_err(command_error)
        .context("failed to list the peers")?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }

    print_peer_table(&list.peers);
    Ok(())
}

fn print_peer_table(peers: &[AdminPeer]) {
    println!(
        "{:<36}  {:<15}  {:<16}  {:<36}  {:<8}  {:<20}  {:<20}  {:<20}",
        "ID", "ADDRESS", "USER", "SESSION", "KEY", "CREATED", "LAST HANDSHAKE", "EXPIRES"
    );

    let time = |time: chrono::DateTime<chrono::Utc>| time.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for peer in peers {
        let key: String = peer.public_key.chars().take(8).collect();
        let handshake = peer.last_handshake.map_or_else(|| "never".to_owned(), time);

        println!(
            "{:<36}  {:<15}  {:<16}  {:<36}  {:<8}  {:<20}  {:<20}  {:<20}",
            peer.id,
            peer.address,
            peer.username,
            peer.session_id,
            key,
            time(peer.created_at),
            handshake,
            time(peer.expires_at)
        );
    }

    println!("{} peers", peers.len());
}

async fn peers_revoke(args: PeersRevokeArgs) -> Result<()> {
    let (db, pool) = open_with_pool(&args.database.database).await?;
    let replica = ReplicaSync::new();
    let metrics = Metrics::default();
    let context = PeerContext {
        db: &db,
        pool: &pool,
        backend: None,
        replica: &replica,
        metrics: &metrics,
    };

    let result = admin::revoke_peer(&context, &args.id).await;
    db.close().await;
    let revoked = result
        .map_err(command_error)
        .with_context(|| format!("failed to revoke the peer {}", args.id))?;

    let address = revoked
        .wireguard
        .released_address
        .map_or_else(|| "none".to_owned(), |address| address.to_string());
    println!(
        "revoked peer {} of user {}: address {address} freed, session {} deleted",
        revoked.peer_id, revoked.user_id, revoked.session_id
    );
    Ok(())
}

async fn pool(args: DatabaseArgs) -> Result<()> {
    let (db, pool) = open_with_pool(&args.database).await?;

    let result = admin::pool_status(&db, &pool).await;
    db.close().await;
    let status = result
        .map_err(command_error)
        .context("failed to read the pool")?;

    let lowest = status
        .lowest_free
        .map_or_else(|| "none".to_owned(), |address| address.to_string());
    println!("pool {}", status.cidr);
    println!("size {}", status.size);
    println!("allocated {}", status.allocated);
    println!("free {}", status.free);
    println!("lowest_free {lowest}");
    Ok(())
}

/// Converts an error of the API's logic into one for the command line: the cause of an
/// internal error instead of the text for HTTP clients, and commands in place of routes.
fn command_error(error: camwire_server::Error) -> anyhow::Error {
    match error {
        camwire_server::Error::PeerNotFound { id } => {
            anyhow::anyhow!(
                "no peer with the id {id:?}; `camwire-server peers list` lists the peers"
            )
        }
        other => anyhow::anyhow!(other.log_text()),
    }
}

/// Reads the first line of stdin without its line ending.
fn read_password_line() -> Result<Password> {
    let mut input = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(MAX_PASSWORD_LEN as u64 + 3)
        .read_to_end(&mut input)?;

    let text = std::str::from_utf8(&input).context("the password is not valid UTF-8")?;
    let line = text.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);

    if line.is_empty() {
        bail!(
            "standard input is empty; pipe the password in, for example: echo \"$PASSWORD\" | camwire-server user add NAME --database URL --password-stdin"
        );
    }

    Ok(Password::new(line))
}
