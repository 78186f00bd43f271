//! The `orchard-server` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use orchard_server::ServerConfig;
use orchard_server::apple::AppleConfig;
use orchard_server::http::ConnectionLimits;
use orchard_server::push::PushLimits;
use orchard_server::rate_limit::Rate;
use orchard_server::state::NotificationMode;

#[derive(Parser)]
#[command(
    name = "orchard-server",
    version,
    about = "Orchard management server for Apple VPP apps"
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "ORCHARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Notifications {
    Auto,
    On,
    Off,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (device endpoints and admin API on one HTTPS port).
    Serve(Box<ServeArgs>),
    /// Mint a new admin token when every one is lost or expired. Runs on the server's
    /// host against its data directory (and database), never over the network; the
    /// server may keep running.
    RecoverAdminToken(RecoverArgs),
    /// Print the admin API's OpenAPI 3.1 document (the one served at
    /// `/v1/openapi.json`), for client generators and reviews.
    Openapi,
}

#[derive(clap::Args)]
struct RecoverArgs {
    /// The server's data directory.
    #[arg(long, env = "ORCHARD_DATA_DIR", default_value = "orchard-data")]
    data_dir: PathBuf,
    /// The server's database, when not the data directory's SQLite file.
    #[arg(long, env = "ORCHARD_DATABASE_URL")]
    database: Option<String>,
    /// The server's secret key, when not the data directory's `secret.key`.
    #[arg(long, env = "ORCHARD_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file of settings: the long flag names as keys (`listen = "0.0.0.0:8443"`,
    /// `event-retention-hours = 72`, `server-name = ["mdm.example.com"]`). Flags win
    /// over `ORCHARD_*` variables, which win over the file.
    #[arg(long, env = "ORCHARD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: SQLite database, CA and server certificate (created on first start).
    #[arg(long, env = "ORCHARD_DATA_DIR", default_value = "orchard-data")]
    data_dir: PathBuf,
    /// Database: a `postgres://` URL for PostgreSQL (several replicas may share it), or a
    /// SQLite file path; SQLite in the data directory by default.
    #[arg(long, env = "ORCHARD_DATABASE_URL")]
    database: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "ORCHARD_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// URL devices use to reach this server (default: https://<listen address>).
    #[arg(long, env = "ORCHARD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Extra DNS name or IP for the server certificate (repeatable).
    #[arg(
        long = "server-name",
        env = "ORCHARD_SERVER_NAMES",
        value_delimiter = ','
    )]
    server_names: Vec<String>,
    /// Base URL of Apple's Apps and Books for Organizations API.
    #[arg(
        long,
        env = "ORCHARD_APPLE_VPP_URL",
        default_value = "https://vpp.itunes.apple.com/mdm/v2"
    )]
    apple_vpp_url: String,
    /// URL of the iTunes lookup API (app metadata).
    #[arg(
        long,
        env = "ORCHARD_APPLE_LOOKUP_URL",
        default_value = "https://itunes.apple.com/lookup"
    )]
    apple_lookup_url: String,
    /// Extra CA (PEM) to trust for Apple's URLs, e.g. a testbed's stand-in.
    #[arg(long, env = "ORCHARD_APPLE_CA_FILE")]
    apple_ca_file: Option<PathBuf>,
    /// Whether Apple is asked to notify this server (at `<public URL>/apple/notifications`):
    /// `auto` asks, and polls when Apple cannot reach the URL (a firewall, a laptop);
    /// `on` fails the sync then; `off` never asks and polls.
    #[arg(long, env = "ORCHARD_APPLE_NOTIFICATIONS", value_enum, default_value_t = Notifications::Auto)]
    apple_notifications: Notifications,
    /// Seconds between polls of Apple's pending license events.
    #[arg(long, env = "ORCHARD_EVENT_POLL_SECONDS", default_value_t = 30.0)]
    event_poll_seconds: f64,
    /// Seconds before asking Apple again for licenses it refused or could not take;
    /// doubled after each failure up to --apple-retry-max-seconds.
    #[arg(long, env = "ORCHARD_APPLE_RETRY_SECONDS", default_value_t = 5.0)]
    apple_retry_seconds: f64,
    /// The longest wait between such attempts.
    #[arg(long, env = "ORCHARD_APPLE_RETRY_MAX_SECONDS", default_value_t = 600.0)]
    apple_retry_max_seconds: f64,
    /// Seconds before a failed webhook delivery is tried again; doubled after each
    /// failure up to --webhook-retry-max-seconds.
    #[arg(long, env = "ORCHARD_WEBHOOK_RETRY_SECONDS", default_value_t = 5.0)]
    webhook_retry_seconds: f64,
    /// The longest wait between webhook delivery attempts.
    #[arg(
        long,
        env = "ORCHARD_WEBHOOK_RETRY_MAX_SECONDS",
        default_value_t = 600.0
    )]
    webhook_retry_max_seconds: f64,
    /// Hosts webhooks may be registered to (repeatable): a host name, an IP address,
    /// or `*.example.com` for every name under it. None: any host.
    #[arg(
        long = "webhook-host",
        env = "ORCHARD_WEBHOOK_HOSTS",
        value_delimiter = ','
    )]
    webhook_hosts: Vec<String>,
    /// Seconds before asking a device again about an install in progress.
    #[arg(long, env = "ORCHARD_INSTALL_POLL_SECONDS", default_value_t = 5.0)]
    install_poll_seconds: f64,
    /// Seconds an install may stay Installing before it fails with a reason (an app
    /// may set its own through the admin API).
    #[arg(
        long,
        env = "ORCHARD_INSTALL_TIMEOUT_SECONDS",
        default_value_t = 1800.0
    )]
    install_timeout_seconds: f64,
    /// Hours events stay in the event stream (`/v1/events`, webhooks) before they are
    /// forgotten.
    #[arg(long, env = "ORCHARD_EVENT_RETENTION_HOURS", default_value_t = 168.0)]
    event_retention_hours: f64,
    /// Seconds between syncs of each token with Apple (twice a day by default).
    #[arg(long, env = "ORCHARD_SYNC_INTERVAL_SECONDS", default_value_t = 43200.0)]
    sync_interval_seconds: f64,
    /// Most VPP tokens the server holds.
    #[arg(long, env = "ORCHARD_MAX_TOKENS", default_value_t = 256)]
    max_tokens: i64,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(
        long,
        env = "ORCHARD_HANDSHAKE_TIMEOUT_SECONDS",
        default_value_t = 10.0
    )]
    handshake_timeout_seconds: f64,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "ORCHARD_HEADER_TIMEOUT_SECONDS", default_value_t = 20.0)]
    header_timeout_seconds: f64,
    /// Seconds a kept-alive connection may stay without a request before it is closed.
    #[arg(long, env = "ORCHARD_KEEP_ALIVE_SECONDS", default_value_t = 15.0)]
    keep_alive_seconds: f64,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "ORCHARD_BODY_TIMEOUT_SECONDS", default_value_t = 30.0)]
    body_timeout_seconds: f64,
    /// Most client connections open at once (the open-file limit is raised to allow it
    /// where the system permits).
    #[arg(long, env = "ORCHARD_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Connections kept for the admin API when all others are taken.
    #[arg(long, env = "ORCHARD_ADMIN_RESERVED_CONNECTIONS", default_value_t = 64)]
    admin_reserved_connections: usize,
    /// The key that seals VPP tokens and other secrets in the database: base64 of 32
    /// bytes. By default the data directory's `secret.key`, created on first start;
    /// replicas sharing a database need the same key.
    #[arg(long, env = "ORCHARD_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Enrollments per second from one source address (0: no limit), after a burst of
    /// `--enrollment-burst`.
    #[arg(long, env = "ORCHARD_ENROLLMENT_RATE", default_value_t = 5.0)]
    enrollment_rate: f64,
    /// Enrollments one source address may make at once.
    #[arg(long, env = "ORCHARD_ENROLLMENT_BURST", default_value_t = 50.0)]
    enrollment_burst: f64,
    /// Failed admin or device authentications per second from one source address (0: no
    /// limit), after a burst of `--failed-auth-burst`; over it, answers are 429.
    #[arg(long, env = "ORCHARD_FAILED_AUTH_RATE", default_value_t = 2.0)]
    failed_auth_rate: f64,
    /// Failed authentications one source address may make at once.
    #[arg(long, env = "ORCHARD_FAILED_AUTH_BURST", default_value_t = 20.0)]
    failed_auth_burst: f64,
    /// Most devices connected to the push channel at once.
    #[arg(long, env = "ORCHARD_MAX_PUSH_CONNECTIONS", default_value_t = 100_000)]
    max_push_connections: usize,
    /// Most push handshakes in progress at once (over 64, clients must first prove
    /// their address with a QUIC Retry).
    #[arg(long, env = "ORCHARD_MAX_PUSH_HANDSHAKES", default_value_t = 1024)]
    max_push_handshakes: usize,
    /// At shutdown (SIGTERM or Ctrl-C), seconds that requests under way may take to
    /// finish.
    #[arg(long, env = "ORCHARD_SHUTDOWN_GRACE_SECONDS", default_value_t = 10.0)]
    shutdown_grace_seconds: f64,
    /// Largest enrollment request body, in bytes (anyone on the network may enroll).
    #[arg(long, env = "ORCHARD_ENROLLMENT_BODY_LIMIT", default_value_t = 65536)]
    enrollment_body_limit: usize,
    /// Device requests doing storage work at once; the others wait their turn, so the
    /// engine's and the admin API's writes never queue behind a whole fleet.
    #[arg(long, env = "ORCHARD_DEVICE_CONCURRENCY", default_value_t = orchard_server::DEVICE_CONCURRENCY)]
    device_concurrency: usize,
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .with_context(|| format!("--{name} must be a non-negative number of seconds"))
}

/// jemalloc: the device paths allocate and free small buffers on many threads at once;
/// with glibc's allocator that took about an eighth of the server's CPU under load, and
/// jemalloc cut the CPU per installed device by about 14% at the same memory. It also
/// stands in for `malloc` itself (the crate's `unprefixed_malloc_on_supported_platforms`),
/// so SQLite's own allocations, on its connection threads, skip glibc's allocator too
/// (about 8% less CPU per installed device again).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(with_config_file(std::env::args_os().collect())?);
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour codes only for a person at a terminal, never into files or collectors.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(terminal)
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_ansi(false)
            .with_env_filter(filter)
            .init(),
    }
    let out = Announce(cli.log_format);
    let args = match cli.command {
        Command::Serve(args) => *args,
        Command::RecoverAdminToken(args) => return recover(args).await,
        Command::Openapi => {
            let doc = orchard_server::http::openapi_document();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(());
        }
    };
    if let Some(path) = &args.config {
        tracing::info!(path = %path.display(), "settings read from the config file");
    }
    let mut config = ServerConfig::new(args.data_dir);
    config.listen = args.listen;
    config.database = args.database;
    config.public_url = args.public_url;
    config.server_names = args.server_names;
    config.webhook_hosts = args.webhook_hosts;
    config.apple = AppleConfig {
        vpp_base_url: args.apple_vpp_url,
        lookup_url: args.apple_lookup_url,
        extra_ca_file: args.apple_ca_file,
        ..AppleConfig::default()
    };
    config.event_poll_interval = seconds("event-poll-seconds", args.event_poll_seconds)?;
    config.apple_retry = (
        seconds("apple-retry-seconds", args.apple_retry_seconds)?,
        seconds("apple-retry-max-seconds", args.apple_retry_max_seconds)?,
    );
    config.install_poll_interval = seconds("install-poll-seconds", args.install_poll_seconds)?;
    config.webhook_retry = (
        seconds("webhook-retry-seconds", args.webhook_retry_seconds)?,
        seconds("webhook-retry-max-seconds", args.webhook_retry_max_seconds)?,
    );
    config.install_timeout = seconds("install-timeout-seconds", args.install_timeout_seconds)?;
    config.event_retention = seconds("event-retention-hours", args.event_retention_hours * 3600.0)?;
    config.max_tokens = args.max_tokens;
    config.sync_interval = seconds("sync-interval-seconds", args.sync_interval_seconds)?;
    config.secret_key = args.secret_key;
    config.apple_notifications = match args.apple_notifications {
        Notifications::Auto => NotificationMode::Auto,
        Notifications::On => NotificationMode::On,
        Notifications::Off => NotificationMode::Off,
    };
    config.push = PushLimits {
        max_connections: args.max_push_connections,
        max_handshakes: args.max_push_handshakes.max(1),
        ..PushLimits::default()
    };
    config.enrollment_rate = Rate {
        per_second: args.enrollment_rate,
        burst: args.enrollment_burst,
    };
    config.failed_auth_rate = Rate {
        per_second: args.failed_auth_rate,
        burst: args.failed_auth_burst,
    };
    config.device_concurrency = args.device_concurrency;
    config.connection = ConnectionLimits {
        handshake_timeout: seconds("handshake-timeout-seconds", args.handshake_timeout_seconds)?,
        header_timeout: seconds("header-timeout-seconds", args.header_timeout_seconds)?,
        keep_alive_idle: seconds("keep-alive-seconds", args.keep_alive_seconds)?,
        body_timeout: seconds("body-timeout-seconds", args.body_timeout_seconds)?,
        max_connections: args.max_connections,
        admin_reserve: args.admin_reserved_connections,
        enrollment_body: args.enrollment_body_limit,
        shutdown_grace: seconds("shutdown-grace-seconds", args.shutdown_grace_seconds)?,
    };
    let data_dir = config.data_dir.clone();
    let mut server = orchard_server::start(config)
        .await
        .context("cannot start orchard-server")?;
    if let Some(token) = &server.first_admin_token {
        out.say(
            &format!("Admin API token (shown once, stored only as a hash): {token}"),
            "admin API token (shown once, stored only as a hash)",
            &[("admin_token", token)],
        );
    }
    out.say(
        &format!("orchard-server listening on {}", server.url),
        "listening",
        &[("url", &server.url)],
    );
    let ca = data_dir.join("ca.pem").display().to_string();
    out.say(
        &format!("CA certificate for clients: {ca}"),
        "CA certificate for clients",
        &[("ca_file", &ca)],
    );
    stop_signal().await?;
    let stopping = "shutting down: finishing requests under way";
    out.say(stopping, stopping, &[]);
    server.shutdown().await;
    out.say("stopped", "stopped", &[]);
    Ok(())
}

/// The command line with the settings of `serve`'s config file (`--config`, or
/// `ORCHARD_CONFIG`) put before the given flags, each only when neither a flag nor its
/// `ORCHARD_*` variable sets it. A key that is no flag of `serve` is an error.
fn with_config_file(args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    use clap::CommandFactory;
    let texts: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(serve_at) = texts.iter().position(|a| a == "serve") else {
        return Ok(args);
    };
    let after = &texts[serve_at + 1..];
    let from_flag = after.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_owned).or_else(|| {
            (a == "--config")
                .then(|| after.get(i + 1).cloned())
                .flatten()
        })
    });
    let Some(path) = from_flag.or_else(|| std::env::var("ORCHARD_CONFIG").ok()) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {path}"))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{path} is not valid TOML"))?;
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .context("no serve command")?;
    let mut injected = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && flag != "config")
            .with_context(|| {
                format!("{path}: unknown setting `{key}`; the settings are serve's flags (see orchard-server serve --help)")
            })?;
        let on_command_line = after
            .iter()
            .any(|a| a == &format!("--{flag}") || a.starts_with(&format!("--{flag}=")));
        let in_environment = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        if on_command_line || in_environment {
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => anyhow::bail!("{path}: `{key}` must list strings, not {other}"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .join(","),
            other => anyhow::bail!("{path}: `{key}` must be a string, number or list, not {other}"),
        };
        injected.push(std::ffi::OsString::from(format!("--{flag}={text}")));
    }
    let mut out = args;
    let at = serve_at + 1;
    out.splice(at..at, injected);
    Ok(out)
}

/// Mints an admin token on the server's host and prints it.
async fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    if !args.data_dir.exists() {
        anyhow::bail!(
            "no data directory at {}: give the server's --data-dir",
            args.data_dir.display()
        );
    }
    let now = orchard_server::clock::Clock::now(&orchard_server::clock::SystemClock);
    let issued = orchard_server::recover_admin_token(
        &args.data_dir,
        args.database.as_deref(),
        args.secret_key.as_deref(),
        now,
    )
    .await
    .context("cannot mint an admin token")?;
    println!(
        "Admin token {:?} (role admin, id {}), shown once:",
        issued.record.name, issued.record.id
    );
    println!("{}", issued.secret);
    Ok(())
}

/// What the server tells its operator on standard output (the admin token at first
/// start, where it listens): plain lines, or one JSON object per line with
/// `--log-format json` so every line of the output parses.
struct Announce(LogFormat);

impl Announce {
    /// `line` for people; `message` with `fields` as one JSON object.
    fn say(&self, line: &str, message: &str, fields: &[(&str, &str)]) {
        match self.0 {
            LogFormat::Text => println!("{line}"),
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("message".into(), message.into());
                for (k, v) in fields {
                    object.insert((*k).into(), (*v).into());
                }
                println!("{}", serde_json::Value::Object(object));
            }
        }
    }
}

/// Waits for SIGTERM (a service manager stopping the server) or Ctrl-C.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => {}
            result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C")?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    Ok(())
}
