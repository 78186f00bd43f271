//! The `orchard-testbed` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orchard_testbed::apple::{AppleStandIn, Seed};
use orchard_testbed::demo::{self, DemoOptions};
use orchard_testbed::load::{self, LoadOptions};

#[derive(Parser)]
#[command(
    name = "orchard-testbed",
    version,
    about = "Orchard's testbed: Apple stand-in, demo and scenarios"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Bench {
    /// The device channel (`PUT /mdm/connect` with an Idle report) against a minimal
    /// tokio-rustls server with the same TLS configuration, by the same client: a full
    /// mutual-TLS handshake per request, then kept-alive connections.
    Checkin {
        /// Seconds each measurement runs.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run schemathesis against a live server with data in it: every operation of
    /// `/v1/openapi.json` with generated requests; fails on a 5xx or an answer outside
    /// the document. `bash tests/api-fuzz` installs schemathesis and runs this.
    ApiFuzz {
        /// The schemathesis command.
        #[arg(long, default_value = "st")]
        schemathesis: PathBuf,
        /// Generated cases per operation and phase.
        #[arg(long, default_value_t = 20)]
        max_examples: u32,
        /// Hypothesis seed (the same seed sends the same requests).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Longest the schemathesis run may take, in seconds.
        #[arg(long, default_value_t = 900)]
        timeout_seconds: u64,
        /// Also write schemathesis's JUnit report here.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Run the Apple stand-in, a server on SQLite and a small fleet; assign an app and
    /// wait until every device has it installed.
    Demo {
        /// Devices to enroll.
        #[arg(long, default_value_t = 5)]
        devices: usize,
        /// Seconds to wait for the installs.
        #[arg(long, default_value_t = 60)]
        timeout_seconds: u64,
    },
    /// Measure: enroll a fleet, assign a Required app to all, and report enrollment
    /// rate, time to installed (p50/p99/max), check-ins per second and peak memory.
    Load {
        /// Devices.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Enrollments in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds to wait for every device to converge.
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
        /// Also write the figures to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run the server on PostgreSQL (a fresh database next to ORCHARD_TEST_POSTGRES_URL,
        /// default postgres://postgres@127.0.0.1:5432/postgres) instead of SQLite.
        #[arg(long)]
        postgres: bool,
        /// Server replicas sharing PostgreSQL (needs --postgres); the fleet is split between them.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Licenses the stand-in holds for the app (default: one per device); fewer
        /// tests oversubscription on purpose: the rest must end "no licenses available".
        #[arg(long)]
        licenses: Option<usize>,
        /// Draw the convergence over time (devices installed, requests per second) to
        /// this SVG file.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Where the Apple stand-in listens (default: a free port on 127.0.0.1).
        #[arg(long)]
        apple_listen: Option<std::net::SocketAddr>,
        /// Where the first server replica listens; the others take the next ports
        /// (default: free ports on 127.0.0.1).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Run orchard-server for `load` in a process of its own (prints a ready line).
    #[command(hide = true)]
    Server {
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on (a free port by default).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        apple_vpp_url: String,
        #[arg(long)]
        apple_lookup_url: String,
        #[arg(long)]
        apple_ca_file: PathBuf,
        #[arg(long, env = "ORCHARD_DATABASE_URL")]
        database: Option<String>,
    },
    /// Run only the Apple stand-in (Apps and Books API and iTunes lookup) until Ctrl-C.
    Apple {
        /// Seed file (TOML); the built-in demo seed by default.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: String,
        /// Directory to write the stand-in's CA and each location's token file into.
        #[arg(long, default_value = "apple-standin")]
        out_dir: PathBuf,
        /// The CA (PEM) of the MDM server that takes notifications; without it the
        /// stand-in sends none and the server relies on polling.
        #[arg(long)]
        notification_ca: Option<PathBuf>,
    },
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
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    // Colour codes only for a person at a terminal, never into files or logs.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::ApiFuzz {
            schemathesis,
            max_examples,
            seed,
            timeout_seconds,
            junit,
        } => {
            orchard_testbed::api_fuzz::run(orchard_testbed::api_fuzz::FuzzOptions {
                schemathesis,
                max_examples,
                seed,
                timeout: Duration::from_secs(timeout_seconds),
                junit,
            })
            .await
        }
        Command::Demo {
            devices,
            timeout_seconds,
        } => {
            demo::run(DemoOptions {
                devices,
                timeout: Duration::from_secs(timeout_seconds),
            })
            .await
        }
        Command::Bench {
            what:
                Bench::Checkin {
                    seconds,
                    concurrency,
                },
        } => {
            if !(seconds > 0.0 && seconds <= 600.0) {
                anyhow::bail!("--seconds must be above 0 and at most 600");
            }
            orchard_testbed::bench::checkin(orchard_testbed::bench::BenchOptions {
                duration: Duration::from_secs_f64(seconds),
                concurrency: concurrency.clamp(1, 1024),
            })
            .await
        }
        Command::Load {
            devices,
            concurrency,
            timeout_seconds,
            json,
            postgres,
            replicas,
            licenses,
            chart,
            apple_listen,
            listen,
        } => {
            let options = LoadOptions {
                devices,
                concurrency,
                timeout: Duration::from_secs(timeout_seconds),
                json,
                postgres,
                replicas,
                licenses,
                chart,
                apple_listen,
                server_listen: listen,
            };
            load::run(options).await.map(|_| ())
        }
        Command::Server {
            data_dir,
            listen,
            apple_vpp_url,
            apple_lookup_url,
            apple_ca_file,
            database,
        } => {
            let mut config = orchard_server::ServerConfig::new(data_dir);
            config.database = database;
            config.listen = listen;
            config.apple = orchard_server::apple::AppleConfig {
                vpp_base_url: apple_vpp_url,
                lookup_url: apple_lookup_url,
                extra_ca_file: Some(apple_ca_file),
                ..Default::default()
            };
            config.event_poll_interval = Duration::from_millis(200);
            config.install_poll_interval = Duration::from_millis(500);
            // The whole fleet comes from 127.0.0.1: per-address limits would throttle it.
            config.enrollment_rate = orchard_server::rate_limit::Rate::UNLIMITED;
            config.failed_auth_rate = orchard_server::rate_limit::Rate::UNLIMITED;
            config.connection.max_connections = 65_536;
            let mut server = orchard_server::start(config).await?;
            let ready = serde_json::json!({
                "url": server.url,
                "admin_token": server.first_admin_token,
                "ca_pem": server.ca_pem,
            });
            println!("ORCHARD_READY {ready}");
            tokio::signal::ctrl_c().await?;
            server.shutdown().await;
            Ok(())
        }
        Command::Apple {
            seed,
            listen,
            out_dir,
            notification_ca,
        } => {
            let seed = match seed {
                Some(path) => Seed::parse(
                    &std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                )
                .map_err(anyhow::Error::msg)?,
                None => Seed::demo(),
            };
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let standin = AppleStandIn::start(&seed, listener).await?;
            if let Some(path) = notification_ca {
                let pem = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                standin.with_world(|w| w.notification_ca = Some(pem));
            }
            std::fs::create_dir_all(&out_dir)?;
            standin.write_ca(&out_dir.join("ca.pem"))?;
            for location in &seed.locations {
                if let Some(file) = standin.token_file(&location.uid) {
                    std::fs::write(out_dir.join(format!("{}.vpptoken", location.uid)), file)?;
                }
            }
            println!(
                "Apple stand-in: VPP API {} , lookup {}",
                standin.vpp_url(),
                standin.lookup_url()
            );
            println!("CA and token files in {}", out_dir.display());
            tokio::signal::ctrl_c().await?;
            standin.shutdown().await;
            Ok(())
        }
    }
}
