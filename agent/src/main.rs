//! The `orchard-agent` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use orchard_agent::device::Timings;
use orchard_agent::store_lookup::StoreConfig;
use orchard_agent::{Agent, AgentConfig, DeviceFacts, Ownership, Platform};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "orchard-agent",
    version,
    about = "A simulated Apple device speaking Apple's MDM protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll one device and keep checking in.
    Run(RunArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum PlatformArg {
    Ios,
    Ipados,
    Macos,
}

#[derive(Clone, Copy, ValueEnum)]
enum OwnershipArg {
    Corporate,
    Personal,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The server's base URL.
    #[arg(long, env = "ORCHARD_SERVER_URL")]
    server: String,
    /// The server's CA certificate (PEM), e.g. <data-dir>/ca.pem.
    #[arg(long, env = "ORCHARD_SERVER_CA")]
    server_ca: PathBuf,
    /// The enrollment secret (admin API: GET /v1/enrollment).
    #[arg(long, env = "ORCHARD_ENROLLMENT_SECRET")]
    enrollment_secret: String,
    /// Device UDID (default: a new random one).
    #[arg(long, env = "ORCHARD_AGENT_UDID")]
    udid: Option<String>,
    /// Serial number (default: derived from the UDID).
    #[arg(long, env = "ORCHARD_AGENT_SERIAL")]
    serial: Option<String>,
    /// Platform.
    #[arg(long, value_enum, default_value_t = PlatformArg::Ios)]
    platform: PlatformArg,
    /// OS version.
    #[arg(long, default_value = "17.5")]
    os_version: String,
    /// Product name.
    #[arg(long, default_value = "iPhone15,2")]
    product_name: String,
    /// Ownership.
    #[arg(long, value_enum, default_value_t = OwnershipArg::Corporate)]
    ownership: OwnershipArg,
    /// The device is not supervised.
    #[arg(long)]
    unsupervised: bool,
    /// Seconds between command-channel polls.
    #[arg(long, env = "ORCHARD_AGENT_POLL_SECONDS", default_value_t = 5.0)]
    poll_seconds: f64,
    /// iTunes lookup URL the device installs from.
    #[arg(
        long,
        env = "ORCHARD_APP_STORE_URL",
        default_value = "https://itunes.apple.com/lookup"
    )]
    app_store_url: String,
    /// Extra CA (PEM) for the App Store URL (a testbed's stand-in).
    #[arg(long, env = "ORCHARD_APP_STORE_CA")]
    app_store_ca: Option<PathBuf>,
    /// Store country.
    #[arg(long, default_value = "US")]
    country: String,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let Command::Run(args) = Cli::parse().command;
    let udid = args
        .udid
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().to_uppercase());
    let serial = args
        .serial
        .unwrap_or_else(|| udid.replace('-', "").chars().take(12).collect());
    let mut facts = DeviceFacts::supervised_iphone(&udid, &serial);
    facts.platform = match args.platform {
        PlatformArg::Ios => Platform::Ios,
        PlatformArg::Ipados => Platform::IpadOs,
        PlatformArg::Macos => Platform::MacOs,
    };
    facts.os_version = args.os_version;
    facts.product_name = args.product_name;
    facts.ownership = match args.ownership {
        OwnershipArg::Corporate => Ownership::Corporate,
        OwnershipArg::Personal => Ownership::Personal,
    };
    facts.supervised = !args.unsupervised;
    let poll_interval = Duration::try_from_secs_f64(args.poll_seconds)
        .context("--poll-seconds must be a non-negative number")?;
    let config = AgentConfig {
        server_url: args.server,
        server_ca_pem: read(&args.server_ca)?,
        enrollment_secret: args.enrollment_secret,
        facts,
        poll_interval,
        store: StoreConfig {
            lookup_url: args.app_store_url,
            ca_pem: args.app_store_ca.as_ref().map(read).transpose()?,
            country: args.country,
        },
        timings: Timings::default(),
    };
    let agent = Agent::enroll(config).await.context("enrollment failed")?;
    println!("enrolled device {udid} (serial {serial}); checking in every {poll_interval:?}");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    agent.run(shutdown).await;
    Ok(())
}
