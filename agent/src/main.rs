//! The `orchard-agent` command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use orchard_agent::device::Timings;
use orchard_agent::fleet::{self, Fleet, FleetOptions, FleetProfile};
use orchard_agent::store_lookup::StoreConfig;
use orchard_agent::{Agent, AgentConfig, AgentMetrics, DeviceFacts, Ownership, Persona, Platform};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "orchard-agent",
    version,
    about = "Simulated Apple devices speaking Apple's MDM protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one device: enroll (or resume from --state) and keep checking in.
    Run(RunArgs),
    /// Run many simulated devices in one process.
    Fleet(FleetArgs),
}

#[derive(clap::Args)]
struct Connection {
    /// The server's base URL.
    #[arg(long, env = "ORCHARD_SERVER_URL")]
    server: String,
    /// The server's CA certificate (PEM), e.g. <data-dir>/ca.pem.
    #[arg(long, env = "ORCHARD_SERVER_CA")]
    server_ca: PathBuf,
    /// The enrollment secret (admin API: GET /v1/enrollment).
    #[arg(long, env = "ORCHARD_ENROLLMENT_SECRET")]
    enrollment_secret: String,
    /// Seconds between periodic check-ins (pushes wake the device at once regardless).
    #[arg(long, env = "ORCHARD_AGENT_CHECKIN_SECONDS", default_value_t = 600.0)]
    checkin_seconds: f64,
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
    #[command(flatten)]
    connection: Connection,
    /// State file: identity, enrollment and apps survive restarts.
    #[arg(long, env = "ORCHARD_AGENT_STATE")]
    state: Option<PathBuf>,
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
    /// Identity key type (real devices' SCEP payloads ask for RSA).
    #[arg(long, value_enum, default_value_t = KeyArg::P256)]
    key_type: KeyArg,
    /// The device runs in single-app (kiosk) mode and shows no prompts.
    #[arg(long)]
    kiosk: bool,
    /// A restrictions profile disables the App Store.
    #[arg(long)]
    app_store_disabled: bool,
    /// The Apple ID signed in to the App Store (none when absent).
    #[arg(long)]
    apple_id: Option<String>,
    /// How the user answers prompts, as TOML keys, e.g.
    /// `invitation = "decline", install = "accept", apple_id = "never", answer_after_ms = 2000`
    /// (answers: accept, decline, dismiss, never).
    #[arg(long, value_parser = parse_persona)]
    persona: Option<Persona>,
    /// Ask for an app an Available assignment offers (App Store id), as the user would
    /// from a company portal; repeat for several.
    #[arg(long = "request-app", value_name = "ADAM_ID")]
    request_apps: Vec<u64>,
}

fn parse_persona(text: &str) -> Result<Persona, String> {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        persona: Persona,
    }
    toml::from_str::<Wrapper>(&format!("persona = {{ {text} }}"))
        .map(|w| w.persona)
        .map_err(|e| format!("invalid persona: {e}"))
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyArg {
    P256,
    Rsa2048,
}

#[derive(clap::Args)]
struct FleetArgs {
    #[command(flatten)]
    connection: Connection,
    /// Devices to run.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Fleet profile (TOML); supervised corporate iPhones when absent.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Directory for per-device state files (devices resume from them on the next run).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Prefix of this fleet's UDIDs and serial numbers.
    #[arg(long, default_value = "FLEET")]
    run_id: String,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn template(c: &Connection, facts: DeviceFacts) -> anyhow::Result<AgentConfig> {
    Ok(AgentConfig {
        server_url: c.server.clone(),
        server_ca_pem: read(&c.server_ca)?,
        enrollment_secret: c.enrollment_secret.clone(),
        facts,
        poll_interval: Duration::try_from_secs_f64(c.checkin_seconds)
            .context("--checkin-seconds must be a non-negative number")?,
        store: StoreConfig {
            lookup_url: c.app_store_url.clone(),
            ca_pem: c.app_store_ca.as_ref().map(read).transpose()?,
            country: c.country.clone(),
        },
        timings: Timings::default(),
        state_path: None,
        quic: None,
        metrics: Arc::new(AgentMetrics::default()),
        shared_store: None,
    })
}

/// How often a running agent or fleet says how it is doing.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// One line of what the devices did so far: apps on them, and the traffic.
fn progress(
    devices: &[Arc<std::sync::Mutex<orchard_agent::device::Device>>],
    m: &AgentMetrics,
) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let apps: usize = devices
        .iter()
        .map(|d| d.lock().map_or(0, |d| d.apps().len()))
        .sum();
    format!(
        "{} device(s), {} on the push channel, {apps} managed app(s) installed; {} requests, {} command sessions, {} wakes, {} enrollments, {} renewals",
        devices.len(),
        m.push_connected.load(Relaxed),
        m.requests.load(Relaxed),
        m.sessions.load(Relaxed),
        m.wakes.load(Relaxed),
        m.enrollments.load(Relaxed),
        m.renewals.load(Relaxed),
    )
}

/// Prints [`progress`] every [`PROGRESS_EVERY`] until `stop`.
fn report_progress(
    devices: Vec<Arc<std::sync::Mutex<orchard_agent::device::Device>>>,
    metrics: Arc<AgentMetrics>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => eprintln!("{}", progress(&devices, &metrics)),
            }
        }
    });
}

fn ctrl_c() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    shutdown
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
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour codes only for a person at a terminal, never into files or logs.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Fleet(args) => run_fleet(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
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
    facts.kiosk = args.kiosk;
    facts.app_store_allowed = !args.app_store_disabled;
    facts.apple_id = args.apple_id;
    if let Some(persona) = args.persona {
        facts.persona = persona;
    }
    facts.identity_key = match args.key_type {
        KeyArg::P256 => orchard_certs::KeyAlgorithm::P256,
        KeyArg::Rsa2048 => orchard_certs::KeyAlgorithm::Rsa2048,
    };
    let mut config = template(&args.connection, facts)?;
    config.state_path = args.state;
    let template_metrics = config.metrics.clone();
    let agent = Agent::start(config).await.context("enrollment failed")?;
    let f = agent
        .device()
        .lock()
        .map(|d| d.facts.clone())
        .unwrap_or_else(|p| p.into_inner().facts.clone());
    let how = if agent.resumed() {
        "resumed from its state file"
    } else {
        "enrolled"
    };
    println!(
        "device {} (serial {}) {how}; push channel on, periodic check-in every {}s",
        f.udid, f.serial_number, args.connection.checkin_seconds
    );
    for adam_id in args.request_apps {
        agent
            .request_app(orchard_protocol::AdamId(adam_id))
            .await
            .with_context(|| format!("the server refused the request for app {adam_id}"))?;
        println!("asked for app {adam_id}");
    }
    let stop = ctrl_c();
    let device = agent.device();
    let metrics = template_metrics;
    report_progress(vec![device.clone()], metrics.clone(), stop.clone());
    let started = std::time::Instant::now();
    agent.run(stop).await;
    println!(
        "stopped after {:.0}s: {}",
        started.elapsed().as_secs_f64(),
        progress(&[device], &metrics)
    );
    Ok(())
}

async fn run_fleet(args: FleetArgs) -> anyhow::Result<()> {
    let profile = match &args.profile {
        Some(path) => FleetProfile::parse(&read(path)?).map_err(anyhow::Error::msg)?,
        None => FleetProfile::supervised_iphones(),
    };
    let config = template(&args.connection, profile.facts(0, &args.run_id))?;
    let before = fleet::memory().map_or(0, |(rss, _)| rss);
    let count = args.count;
    let started = std::time::Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = done.clone();
    let options = FleetOptions {
        count,
        concurrency: args.concurrency,
        run: args.run_id,
        state_dir: args.state_dir,
    };
    if let Some(dir) = &options.state_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let fleet = Fleet::start(config, &profile, &options, move |_| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n.is_multiple_of(100) || n == count {
            eprintln!("started {n}/{count} devices");
        }
    })
    .await
    .context("starting the fleet failed")?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = fleet::memory().map_or(0, |(rss, _)| rss);
    println!(
        "{} devices running ({} enrolled, the rest resumed) in {elapsed:.1}s; about {} KiB of memory per device",
        fleet.agents.len(),
        fleet
            .metrics
            .enrollments
            .load(std::sync::atomic::Ordering::Relaxed),
        after.saturating_sub(before) / 1024 / fleet.agents.len().max(1) as u64
    );
    let stop = ctrl_c();
    let devices: Vec<_> = fleet.agents.iter().map(Agent::device).collect();
    report_progress(devices.clone(), fleet.metrics.clone(), stop.clone());
    stop.cancelled().await;
    let metrics = fleet.metrics.clone();
    fleet.stop().await;
    println!(
        "stopped after {:.0}s: {}",
        started.elapsed().as_secs_f64(),
        progress(&devices, &metrics)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn the_progress_line_counts_devices_and_traffic() {
        let device = |udid: &str| {
            Arc::new(std::sync::Mutex::new(orchard_agent::device::Device::new(
                DeviceFacts::supervised_iphone(udid, "SERIAL"),
                Timings::default(),
            )))
        };
        let metrics = AgentMetrics::default();
        metrics.push_connected.store(2, Relaxed);
        metrics.requests.store(41, Relaxed);
        metrics.sessions.store(7, Relaxed);
        metrics.wakes.store(3, Relaxed);
        metrics.enrollments.store(2, Relaxed);
        let line = progress(&[device("A"), device("B")], &metrics);
        assert_eq!(
            line,
            "2 device(s), 2 on the push channel, 0 managed app(s) installed; 41 requests, 7 command sessions, 3 wakes, 2 enrollments, 0 renewals"
        );
    }
}
