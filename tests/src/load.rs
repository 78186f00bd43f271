//! `orchard-testbed load`: the Apple stand-in, the server in its own process (so its
//! memory is measured apart) and a fleet in this one. It enrolls the fleet, assigns a
//! Required app to every device and measures how fast the fleet converges.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use orchard_agent::device::Timings;
use orchard_agent::fleet::{self, Fleet, FleetOptions, FleetProfile};
use orchard_agent::store_lookup::StoreConfig;
use orchard_agent::{AgentConfig, AgentMetrics};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::apple::{AppleStandIn, Seed};
use crate::harness::{AdminClient, DEMO_LOCATION, FreshDatabase};
use crate::server_process::ServerProcess;

/// The app every device gets (5,000 licenses in the demo seed).
pub const LOAD_APP: u64 = 1091189122;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Devices.
    pub devices: usize,
    /// Enrollments in flight at once.
    pub concurrency: usize,
    /// How long to wait for convergence.
    pub timeout: Duration,
    /// Where to write the figures as JSON.
    pub json: Option<PathBuf>,
    /// Run the server on PostgreSQL (a fresh database) instead of SQLite.
    pub postgres: bool,
    /// Server replicas sharing the PostgreSQL database; the fleet is split between them.
    pub replicas: usize,
    /// Licenses the stand-in holds for the app (none: as many as devices, so every
    /// device is served; fewer tests oversubscription on purpose).
    pub licenses: Option<usize>,
    /// Where to draw the convergence chart (SVG).
    pub chart: Option<PathBuf>,
    /// Where the Apple stand-in listens (none: a free port on 127.0.0.1).
    pub apple_listen: Option<std::net::SocketAddr>,
    /// Where the first server replica listens (the others on the next ports; none:
    /// free ports).
    pub server_listen: Option<std::net::SocketAddr>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Devices.
    pub devices: usize,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// Server replicas.
    pub replicas: usize,
    /// Enrollments per second (enroll + Authenticate + TokenUpdate each).
    pub enrollments_per_second: f64,
    /// Seconds to enroll the fleet.
    pub enrollment_seconds: f64,
    /// Seconds from the assignment until the first device was verified installed.
    pub install_min_seconds: f64,
    /// Seconds from the assignment until a device was verified installed: median.
    pub install_p50_seconds: f64,
    /// 99th percentile.
    pub install_p99_seconds: f64,
    /// Slowest device.
    pub install_max_seconds: f64,
    /// Device requests (check-ins and command-channel PUTs) per second while converging.
    pub checkins_per_second: f64,
    /// Push wake-ups the devices received.
    pub wakes: u64,
    /// Command-channel sessions the devices opened while converging.
    pub sessions: u64,
    /// HTTPS connections the devices opened while converging.
    pub connections: u64,
    /// Device requests while converging.
    pub requests: u64,
    /// Devices holding a push connection when the app was assigned.
    pub push_connected: u64,
    /// Licenses the stand-in held for the app.
    pub licenses: usize,
    /// Devices refused a license (the oversubscribed part).
    pub license_failed: usize,
    /// Peak resident memory of the server processes together, MiB.
    pub server_peak_rss_mib: f64,
    /// Peak resident memory of the agent process (fleet and Apple stand-in), MiB.
    pub agent_peak_rss_mib: f64,
    /// Agent memory per device, KiB (resident growth while starting the fleet).
    pub agent_kib_per_device: f64,
    /// CPU time the servers used while converging, seconds.
    pub server_cpu_seconds: f64,
    /// CPU time this process (fleet and Apple stand-in) used while converging, seconds.
    pub agent_cpu_seconds: f64,
    /// CPU time the PostgreSQL server's processes on this machine used while
    /// converging, seconds (none on SQLite, which runs inside the server).
    pub database_cpu_seconds: Option<f64>,
    /// Command results the servers received while converging, by `type status`.
    pub commands: BTreeMap<String, u64>,
    /// Per 100 ms since the assignment: devices installed and requests per second.
    pub series: Vec<crate::convergence::Sample>,
}

fn bar(len: usize, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn parse_time(v: &Value) -> Option<OffsetDateTime> {
    v.as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// Runs the load test and prints (and optionally writes) the figures.
pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    if let Some(chart) = &options.chart
        && !chart
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        bail!(
            "--chart draws SVG: name the file *.svg (not {})",
            chart.display()
        );
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir()?;
    // The stand-in holds as many licenses as devices unless told otherwise.
    let mut seed = Seed::demo();
    let licenses = options.licenses.unwrap_or(options.devices);
    seed.apps
        .iter_mut()
        .find(|a| a.adam_id == LOAD_APP)
        .context("the demo seed has the load app")?
        .licenses
        .insert(DEMO_LOCATION.to_owned(), i64::try_from(licenses)?);
    let apple_addr = options
        .apple_listen
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let apple = AppleStandIn::start(
        &seed,
        tokio::net::TcpListener::bind(apple_addr)
            .await
            .with_context(|| format!("cannot listen on {apple_addr} for the Apple stand-in"))?,
    )
    .await?;
    let apple_ca = dir.path().join("apple-ca.pem");
    apple.write_ca(&apple_ca)?;
    let database = match options.postgres {
        true => Some(FreshDatabase::create().await.map_err(anyhow::Error::msg)?),
        false => None,
    };
    if options.replicas > 1 && !options.postgres {
        bail!("several replicas need --postgres");
    }
    let mut servers = Vec::new();
    for i in 0..options.replicas.max(1) {
        let url = database.as_ref().map(|d| d.url.as_str());
        let listen = options.server_listen.map(|a| {
            let port = a
                .port()
                .saturating_add(u16::try_from(i).unwrap_or(u16::MAX));
            std::net::SocketAddr::new(a.ip(), port)
        });
        servers.push(ServerProcess::start(
            &std::env::current_exe().context("cannot find this program to start the server")?,
            &apple,
            &apple_ca,
            &dir.path().join("server"),
            url,
            listen,
        )?);
    }
    let server = &servers[0];
    // Apple's notifications reach the server as they would in production.
    apple.with_world(|w| w.notification_ca = Some(server.ca_pem.clone()));
    let admin_token = server
        .admin_token
        .clone()
        .context("the first replica reports the admin token")?;
    let admin = AdminClient::new(&server.url, &server.ca_pem, &admin_token)?;
    let (_, enrollment) = admin.get("/v1/enrollment").await?;
    let metrics = Arc::new(AgentMetrics::default());
    let profile = FleetProfile::supervised_iphones();
    let template = AgentConfig {
        server_url: server.url.clone(),
        server_ca_pem: server.ca_pem.clone(),
        enrollment_secret: enrollment["enrollment_secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        facts: profile.facts(0, "LOAD"),
        poll_interval: Duration::from_secs(600),
        store: StoreConfig {
            lookup_url: apple.lookup_url(),
            ca_pem: Some(apple.ca_pem.clone()),
            country: "US".into(),
        },
        timings: Timings {
            install: Duration::from_millis(500),
        },
        state_path: None,
        quic: None,
        metrics: metrics.clone(),
        shared_store: None,
    };
    let rss_before = fleet::memory().map_or(0, |(rss, _)| rss);
    let progress = bar(options.devices, "enrolling");
    let p = progress.clone();
    let started = Instant::now();
    // The fleet is split between the replicas, each part enrolled through its own.
    let mut fleets = Vec::new();
    let share = options.devices.div_ceil(servers.len());
    for (i, replica) in servers.iter().enumerate() {
        let count = share.min(options.devices - i * share);
        let fleet_options = FleetOptions {
            count,
            concurrency: options.concurrency,
            run: format!("LOAD{i}"),
            state_dir: None,
        };
        let mut part = template.clone();
        part.server_url = replica.url.clone();
        let p = p.clone();
        fleets.push(Fleet::start(part, &profile, &fleet_options, move |_| p.inc(1)).await?);
    }
    let udids: Vec<String> = fleets.iter().flat_map(Fleet::udids).collect();
    let enrollment_seconds = started.elapsed().as_secs_f64();
    progress.finish();
    let rss_after = fleet::memory().map_or(0, |(rss, _)| rss);

    let (status, token) = admin
        .post("/v1/tokens", json!({ "name": "Load", "token_file": apple.token_file(DEMO_LOCATION), "consent": true }))
        .await?;
    if !status.is_success() {
        bail!("token upload failed: {token}");
    }
    let token_id = token["id"].as_str().context("token id")?;
    let (status, body) = admin
        .post(&format!("/v1/tokens/{token_id}/sync"), json!({}))
        .await?;
    if !status.is_success() {
        bail!("sync failed: {body}");
    }
    let (_, apps) = admin.get("/v1/apps").await?;
    let app = apps["items"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["adam_id"].as_str() == Some(LOAD_APP.to_string().as_str()))
        })
        .context("the load app was not synced")?;
    let app_id = app["id"].as_str().context("app id")?.to_owned();
    let (_, group) = admin
        .post("/v1/groups", json!({ "name": "Load fleet" }))
        .await?;
    let group_id = group["id"].as_str().context("group id")?.to_owned();
    for chunk in udids.chunks(1000) {
        let (status, body) = admin
            .post(
                &format!("/v1/groups/{group_id}/devices"),
                json!({ "udids": chunk }),
            )
            .await?;
        if !status.is_success() {
            bail!("adding devices failed: {body}");
        }
    }
    // Wait until every device holds its push connection, so the figures measure delivery.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.push_connected.load(Ordering::Relaxed) < options.devices as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And until the sessions that follow enrollment (device information, inventory)
    // are over: the fleet sends nothing for a second. The figures then measure the
    // assignment alone, as for a fleet enrolled long before.
    let settle_deadline = Instant::now() + Duration::from_secs(120);
    let mut last = metrics.requests.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = metrics.requests.load(Ordering::Relaxed);
        if now == last || Instant::now() >= settle_deadline {
            break;
        }
        last = now;
    }
    let push_connected = metrics.push_connected.load(Ordering::Relaxed);
    let commands_before = command_results(&admin, &servers).await?;
    let requests_before = metrics.requests.load(Ordering::Relaxed);
    let wakes_before = metrics.wakes.load(Ordering::Relaxed);
    let sessions_before = metrics.sessions.load(Ordering::Relaxed);
    let connections_before = metrics.connections.load(Ordering::Relaxed);
    let server_cpu = || {
        servers
            .iter()
            .filter_map(ServerProcess::cpu_seconds)
            .sum::<f64>()
    };
    let server_cpu_before = server_cpu();
    let agent_cpu_before = fleet::cpu_seconds().unwrap_or(0.0);
    let database_cpu = || options.postgres.then(postgres_cpu_seconds);
    let database_cpu_before = database_cpu();
    let converge_started = Instant::now();
    let (status, assignment) = admin
        .post("/v1/assignments", json!({ "app_id": app_id, "group_id": group_id, "intent": "required", "license_type": "device" }))
        .await?;
    if !status.is_success() {
        bail!("assignment failed: {assignment}");
    }
    let assigned_at = parse_time(&assignment["created_at"]).context("assignment time")?;
    // The fleet's requests, read every 100 ms from the assignment on.
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let metrics = metrics.clone();
        let stop = stop_sampling.clone();
        tokio::spawn(async move {
            let mut samples = vec![metrics.requests.load(Ordering::Relaxed)];
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(crate::convergence::STEP_SECONDS));
            tick.tick().await;
            // Bounded: an hour of samples at most.
            while samples.len() < 36_000 {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => samples.push(metrics.requests.load(Ordering::Relaxed)),
                }
            }
            samples
        })
    };
    let served = licenses.min(options.devices);
    let refused_expected = options.devices - served;
    let progress = bar(options.devices, "converged");
    // Counts while converging (the summary costs the server a grouped count, not every
    // device's row); the devices themselves once it is over or stuck.
    let installs_of = |status: &'static str| {
        let admin = &admin;
        let app_id = &app_id;
        async move {
            let installs = admin
                .list_all(&format!("/v1/apps/{app_id}/installs"))
                .await?;
            anyhow::Ok(
                installs
                    .into_iter()
                    .filter(|i| status.is_empty() || i["status"] == status)
                    .collect::<Vec<Value>>(),
            )
        }
    };
    let outcome = loop {
        let (_, summary) = admin.get(&format!("/v1/apps/{app_id}/summary")).await?;
        let count = |status: &str| summary["installs"][status].as_u64().unwrap_or(0) as usize;
        let (done, refused, failed) =
            (count("installed"), count("license_failed"), count("failed"));
        progress.set_position((done + refused) as u64);
        // Fail fast, with the reason, on what cannot converge.
        if failed > 0 {
            sampler.abort();
            let failed = installs_of("failed").await?;
            let f = failed.first().cloned().unwrap_or_default();
            bail!(
                "{} device(s) failed; the first, {}: {}",
                failed.len(),
                f["udid"],
                f["reason"]
            );
        }
        if refused > refused_expected {
            sampler.abort();
            let first = installs_of("license_failed")
                .await?
                .first()
                .cloned()
                .unwrap_or_default();
            bail!(
                "{refused} device(s) got no license ({refused_expected} expected with {licenses} licenses); the first reason: {}",
                first["reason"]
            );
        }
        if done >= served && refused == refused_expected {
            break (installs_of("installed").await?, refused);
        }
        if converge_started.elapsed() > options.timeout {
            sampler.abort();
            let installs = installs_of("").await?;
            // Say where the rest stand, so a stuck device can be looked at.
            let mut waiting: std::collections::BTreeMap<String, usize> = Default::default();
            let mut examples = Vec::new();
            for i in installs
                .iter()
                .filter(|i| i["status"] != "installed" && i["status"] != "license_failed")
            {
                *waiting.entry(i["status"].to_string()).or_default() += 1;
                if examples.len() < 3 {
                    examples.push(format!("{} {} {}", i["udid"], i["status"], i["reason"]));
                }
            }
            bail!(
                "only {}/{} devices installed ({} refused) within {:?}; the rest by status: {:?}; {} without a status; for example: {}",
                done,
                served,
                refused,
                options.timeout,
                waiting,
                options.devices.saturating_sub(installs.len()),
                examples.join("; ")
            );
        }
        // The latencies come from each install's own time, not from this poll: once a
        // second keeps the summary's grouped count (40 ms of the database at 10,000
        // devices) from weighing on what is measured.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (installs, license_failed) = outcome;
    let at_apple = apple.with_world(|w| {
        w.assets
            .get(&(DEMO_LOCATION.to_owned(), LOAD_APP))
            .map_or(0, |c| c.assigned)
    });
    if usize::try_from(at_apple).ok() != Some(served) {
        bail!("Apple holds {at_apple} licenses of the app; {served} devices were served");
    }
    let converge_seconds = converge_started.elapsed().as_secs_f64();
    let server_cpu_seconds = server_cpu() - server_cpu_before;
    let agent_cpu_seconds = fleet::cpu_seconds().unwrap_or(0.0) - agent_cpu_before;
    let database_cpu_seconds = database_cpu()
        .zip(database_cpu_before)
        .map(|(after, before)| after - before);
    progress.finish();
    let requests = metrics.requests.load(Ordering::Relaxed) - requests_before;
    let mut commands = command_results(&admin, &servers).await?;
    for (key, count) in &mut commands {
        *count = count.saturating_sub(commands_before.get(key).copied().unwrap_or(0));
    }
    commands.retain(|_, count| *count > 0);
    stop_sampling.cancel();
    let request_samples = sampler.await.unwrap_or_default();
    let mut latencies: Vec<f64> = installs
        .iter()
        .filter_map(|i| parse_time(&i["updated_at"]))
        .map(|t| (t - assigned_at).as_seconds_f64())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let series = crate::convergence::series(&latencies, &request_samples);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let report = LoadReport {
        devices: options.devices,
        replicas: options.replicas.max(1),
        database: if options.postgres {
            "postgres"
        } else {
            "sqlite"
        },
        enrollments_per_second: options.devices as f64 / enrollment_seconds,
        enrollment_seconds,
        install_min_seconds: latencies.first().copied().unwrap_or(0.0),
        install_p50_seconds: percentile(&latencies, 50.0),
        install_p99_seconds: percentile(&latencies, 99.0),
        install_max_seconds: latencies.last().copied().unwrap_or(0.0),
        checkins_per_second: requests as f64 / converge_seconds,
        wakes: metrics.wakes.load(Ordering::Relaxed) - wakes_before,
        sessions: metrics.sessions.load(Ordering::Relaxed) - sessions_before,
        connections: metrics.connections.load(Ordering::Relaxed) - connections_before,
        requests,
        push_connected,
        server_peak_rss_mib: mib(servers.iter().filter_map(ServerProcess::peak_rss).sum()),
        agent_peak_rss_mib: fleet::memory().map_or(0.0, |(_, peak)| mib(peak)),
        agent_kib_per_device: rss_after.saturating_sub(rss_before) as f64
            / 1024.0
            / options.devices.max(1) as f64,
        licenses,
        license_failed,
        server_cpu_seconds,
        agent_cpu_seconds,
        database_cpu_seconds,
        commands,
        series,
    };
    print_report(&report);
    if let Some(path) = &options.chart {
        let title = format!(
            "{} devices ({}, {} replica(s)): assignment to verified installed",
            report.devices, report.database, report.replicas
        );
        crate::convergence::draw(path, &title, served, &report.series)?;
        println!("chart written to {}", path.display());
    }
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    for fleet in fleets {
        fleet.stop().await;
    }
    drop(servers);
    apple.shutdown().await;
    if let Some(db) = database {
        db.drop_database().await;
    }
    Ok(report)
}

/// The command results each server counted (its `/metrics`), summed, by
/// `RequestType Status`.
async fn command_results(
    admin: &AdminClient,
    servers: &[ServerProcess],
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for server in servers {
        let (status, text) = admin.at(&server.url).get("/metrics").await?;
        if !status.is_success() {
            bail!("GET /metrics: {status} {text}");
        }
        let text = text.as_str().unwrap_or_default();
        for line in text.lines() {
            let Some(labels) = line.strip_prefix("orchard_command_results_total{") else {
                continue;
            };
            let Some((labels, value)) = labels.rsplit_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix("=\""))
                    .map(|v| v.trim_end_matches('"').to_owned())
            };
            let (Some(kind), Some(result), Ok(value)) = (
                label("request_type"),
                label("status"),
                value.trim().parse::<f64>(),
            ) else {
                continue;
            };
            *counts.entry(format!("{kind} {result}")).or_insert(0) += value as u64;
        }
    }
    Ok(counts)
}

/// CPU time of every `postgres` process on this machine, seconds: the database the
/// load runs on is local (loopback), and its backends live as long as the servers'
/// connection pools, so the difference over the convergence is the database's work.
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .filter_map(|stat| fleet::cpu_seconds_of_stat(&stat))
        .sum()
}

fn print_report(r: &LoadReport) {
    println!();
    println!(
        "  devices                          {} (server on {}, {} replica(s))",
        r.devices, r.database, r.replicas
    );
    println!(
        "  licenses                         {} ({} devices refused a license)",
        r.licenses, r.license_failed
    );
    println!(
        "  enrollment                       {:.1} devices/s ({:.1} s)",
        r.enrollments_per_second, r.enrollment_seconds
    );
    println!(
        "  assignment -> installed          min {:.2} s, p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        r.install_min_seconds, r.install_p50_seconds, r.install_p99_seconds, r.install_max_seconds
    );
    let per_device = |n: u64| n as f64 / r.devices.max(1) as f64;
    println!(
        "  device requests while converging {:.0}/s ({:.1} per device in {:.1} sessions over {:.1} connections)",
        r.checkins_per_second,
        per_device(r.requests),
        per_device(r.sessions),
        per_device(r.connections)
    );
    println!(
        "  push wake-ups                    {} ({} of {} devices on the push channel at assignment)",
        r.wakes, r.push_connected, r.devices
    );
    let commands: Vec<String> = r
        .commands
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    println!(
        "  command results                  {:.1} per device: {}",
        r.commands.values().sum::<u64>() as f64 / r.devices.max(1) as f64,
        commands.join(", ")
    );
    let ms_per_device = |seconds: f64| seconds * 1000.0 / r.devices.max(1) as f64;
    println!(
        "  CPU while converging             server {:.1} s ({:.2} ms per device), fleet and Apple stand-in {:.1} s ({:.2} ms per device)",
        r.server_cpu_seconds,
        ms_per_device(r.server_cpu_seconds),
        r.agent_cpu_seconds,
        ms_per_device(r.agent_cpu_seconds)
    );
    if let Some(seconds) = r.database_cpu_seconds {
        println!(
            "  PostgreSQL CPU while converging  {:.1} s ({:.2} ms per device)",
            seconds,
            ms_per_device(seconds)
        );
    }
    println!(
        "  server peak RSS                  {:.1} MiB",
        r.server_peak_rss_mib
    );
    println!(
        "  agent peak RSS                   {:.1} MiB ({:.0} KiB per device)",
        r.agent_peak_rss_mib, r.agent_kib_per_device
    );
}
