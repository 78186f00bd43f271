//! Builders that start the whole system on loopback for tests and the demo: the Apple
//! stand-in, a server on SQLite in a temporary directory, an admin API client, and
//! fleets of enrolled agents. Everything is real: sockets, TLS, database files.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use orchard_agent::device::Timings;
use orchard_agent::fleet::{DeviceKind, Fleet, FleetOptions, FleetProfile};
use orchard_agent::store_lookup::StoreConfig;
use orchard_agent::tls::{Trust, tls_client};
use orchard_agent::{AgentConfig, DeviceFacts};
use orchard_certs::DeviceIdentityRequest;
use orchard_protocol::Udid;
use orchard_protocol::enroll::{EnrollRequest, EnrollResponse};
use orchard_server::apple::AppleConfig;
use orchard_server::http::ConnectionLimits;
use orchard_server::rate_limit::Rate;
use orchard_server::state::NotificationMode;
use orchard_server::{RunningServer, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::apple::{AppleStandIn, Seed};

/// The location every demo-seed token belongs to.
pub const DEMO_LOCATION: &str = "2049025000431439";

/// Builds a [`Testbed`].
pub struct TestbedBuilder {
    seed: Seed,
    postgres: Option<FreshDatabase>,
    sync: Option<(Duration, Duration)>,
    public_url: Option<String>,
    event_poll: Duration,
    event_resubmit: Option<Duration>,
    install_poll: Duration,
    apple_timeout: Duration,
    connection: ConnectionLimits,
    rates: (Rate, Rate),
    clock: Option<std::sync::Arc<dyn orchard_server::clock::Clock>>,
    notifications: NotificationMode,
    webhook_hosts: Vec<String>,
}

impl TestbedBuilder {
    /// Hosts webhooks may be registered to (any by default).
    pub fn webhook_hosts(mut self, hosts: &[&str]) -> Self {
        self.webhook_hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        self
    }

    /// Whether the server asks Apple for notifications.
    pub fn apple_notifications(mut self, mode: NotificationMode) -> Self {
        self.notifications = mode;
        self
    }

    /// The clock the server's time rules read (a `ManualClock` to move time by hand).
    pub fn clock(mut self, clock: std::sync::Arc<dyn orchard_server::clock::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Rate limits per source address of enrollments and failed authentications (none
    /// by default: a whole fleet enrolls from 127.0.0.1).
    pub fn rate_limits(mut self, enrollment: Rate, failed_auth: Rate) -> Self {
        self.rates = (enrollment, failed_auth);
        self
    }

    /// How long the server waits before asking a device again about an install in
    /// progress.
    pub fn install_poll(mut self, interval: Duration) -> Self {
        self.install_poll = interval;
        self
    }

    /// Timeouts and caps of the server's client connections.
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.connection = limits;
        self
    }

    /// How often the server polls Apple's pending events (notifications make it act
    /// sooner).
    pub fn event_poll(mut self, interval: Duration) -> Self {
        self.event_poll = interval;
        self
    }

    /// How long an association event may stay pending before the server asks again.
    pub fn event_resubmit(mut self, after: Duration) -> Self {
        self.event_resubmit = Some(after);
        self
    }

    /// How long the server waits for one answer from Apple (the stand-in's `timeout`
    /// faults answer later than this).
    pub fn apple_timeout(mut self, timeout: Duration) -> Self {
        self.apple_timeout = timeout;
        self
    }

    /// Runs the server on PostgreSQL, in a database created for this testbed. `None` (with
    /// the reason printed) when PostgreSQL is unreachable outside CI; in CI that panics.
    pub async fn postgres(mut self) -> Option<Self> {
        match FreshDatabase::create().await {
            Ok(db) => {
                self.postgres = Some(db);
                Some(self)
            }
            Err(reason) if std::env::var("CI").is_ok() => {
                panic!("PostgreSQL is required in CI: {reason}")
            }
            Err(reason) => {
                eprintln!("skipping the PostgreSQL run of this test: {reason}");
                None
            }
        }
    }

    /// Syncs every token every `interval`, the scheduler looking every `tick`.
    pub fn sync_every(mut self, interval: Duration, tick: Duration) -> Self {
        self.sync = Some((interval, tick));
        self
    }

    /// The URL devices are told to use (a load balancer in front of the replicas).
    pub fn public_url(mut self, url: String) -> Self {
        self.public_url = Some(url);
        self
    }

    /// Uses `seed` for the Apple stand-in.
    pub fn seed(mut self, seed: Seed) -> Self {
        self.seed = seed;
        self
    }

    /// Starts the stand-in and the server.
    pub async fn start(self) -> anyhow::Result<Testbed> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let apple =
            AppleStandIn::start(&self.seed, TcpListener::bind("127.0.0.1:0").await?).await?;
        let apple_ca = dir.path().join("apple-ca.pem");
        apple.write_ca(&apple_ca)?;
        let data_dir = dir.path().join("server");
        let mut config = ServerConfig::new(data_dir.clone());
        config.apple = AppleConfig {
            vpp_base_url: apple.vpp_url(),
            lookup_url: apple.lookup_url(),
            extra_ca_file: Some(apple_ca.clone()),
            timeout: self.apple_timeout,
            backoff: Duration::from_millis(100),
            ..AppleConfig::default()
        };
        config.event_poll_interval = self.event_poll;
        if let Some(after) = self.event_resubmit {
            config.event_resubmit_after = after;
        }
        // Apple's faults in tests are retried soon: the back-off is tested on its own.
        config.apple_retry = (Duration::from_millis(100), Duration::from_secs(1));
        config.webhook_retry = (Duration::from_millis(100), Duration::from_secs(1));
        config.database = self.postgres.as_ref().map(|db| db.url.clone());
        config.public_url = self.public_url;
        if let Some((interval, tick)) = self.sync {
            config.sync_interval = interval;
            config.scheduler_tick = tick;
        }
        config.install_poll_interval = self.install_poll;
        config.connection = self.connection;
        (config.enrollment_rate, config.failed_auth_rate) = self.rates;
        if let Some(clock) = self.clock {
            config.clock = clock;
        }
        config.apple_notifications = self.notifications;
        config.webhook_hosts = self.webhook_hosts;
        let server = start_on_free_port(&config).await?;
        let token = server
            .first_admin_token
            .clone()
            .context("a fresh server prints its admin token")?;
        let admin = AdminClient::new(&server.url, &server.ca_pem, &token)?;
        // Apple's notifications reach the server like any HTTPS client would.
        let ca = server.ca_pem.clone();
        apple.with_world(|w| w.notification_ca = Some(ca));
        Ok(Testbed {
            apple,
            server,
            admin,
            apple_ca,
            data_dir,
            server_config: config,
            postgres: self.postgres,
            _dir: dir,
        })
    }
}

/// A loopback address free for TCP and UDP both (a server listens on both: HTTPS and
/// the push channel). The system picks a free TCP port, but another socket (an agent's,
/// say) may hold the same UDP port; such a port is passed over.
pub fn free_port() -> std::io::Result<std::net::SocketAddr> {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = tcp.local_addr()?;
        if std::net::UdpSocket::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
}

/// A supervised corporate device of one platform, product and OS version, with the
/// default persona (accepts every prompt), for fleets of mixed kinds.
pub fn device_kind(platform: orchard_agent::Platform, product: &str, os: &str) -> DeviceKind {
    DeviceKind {
        weight: 1,
        platform,
        os_versions: vec![os.into()],
        product_name: Some(product.into()),
        ownership: orchard_agent::Ownership::Corporate,
        supervised: true,
        kiosk: false,
        app_store_allowed: true,
        apple_id: None,
        persona: orchard_agent::persona::Persona::default(),
        identity_key: orchard_certs::KeyAlgorithm::P256,
    }
}

/// Starts a server on a loopback port free for TCP and UDP.
async fn start_on_free_port(config: &ServerConfig) -> anyhow::Result<RunningServer> {
    let listener = loop {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        if std::net::UdpSocket::bind(listener.local_addr()?).is_ok() {
            break listener;
        }
    };
    Ok(orchard_server::start_with_listener(config.clone(), listener).await?)
}

/// The Apple stand-in and a server, running.
pub struct Testbed {
    /// The Apple stand-in.
    pub apple: AppleStandIn,
    /// The server.
    pub server: RunningServer,
    /// An admin API client with the bootstrap token.
    pub admin: AdminClient,
    /// The stand-in's CA file.
    pub apple_ca: PathBuf,
    /// The server's data directory.
    pub data_dir: PathBuf,
    server_config: ServerConfig,
    postgres: Option<FreshDatabase>,
    _dir: tempfile::TempDir,
}

impl Testbed {
    /// A builder with the demo seed and fast polling.
    pub fn builder() -> TestbedBuilder {
        TestbedBuilder {
            seed: Seed::demo(),
            postgres: None,
            sync: None,
            public_url: None,
            event_poll: Duration::from_millis(200),
            event_resubmit: None,
            install_poll: Duration::from_millis(300),
            apple_timeout: Duration::from_secs(10),
            connection: ConnectionLimits::default(),
            rates: (Rate::UNLIMITED, Rate::UNLIMITED),
            clock: None,
            notifications: NotificationMode::default(),
            webhook_hosts: Vec::new(),
        }
    }

    /// The configuration an agent needs to enroll with this testbed.
    pub async fn agent_config(
        &self,
        facts: DeviceFacts,
        poll_interval: Duration,
    ) -> anyhow::Result<AgentConfig> {
        let (status, enrollment) = self.admin.get("/v1/enrollment").await?;
        if status != StatusCode::OK {
            bail!("GET /v1/enrollment answered {status}: {enrollment}");
        }
        Ok(AgentConfig {
            server_url: self.server.url.clone(),
            server_ca_pem: self.server.ca_pem.clone(),
            enrollment_secret: enrollment["enrollment_secret"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            facts,
            poll_interval,
            store: StoreConfig {
                lookup_url: self.apple.lookup_url(),
                ca_pem: Some(self.apple.ca_pem.clone()),
                country: "US".into(),
            },
            timings: Timings {
                install: Duration::from_millis(400),
            },
            state_path: None,
            quic: None,
            metrics: Default::default(),
            shared_store: None,
        })
    }

    /// Enrolls `count` supervised corporate iPhones and runs them, checking in every
    /// `checkin` and whenever pushed.
    pub async fn enroll_fleet(&self, count: usize, checkin: Duration) -> anyhow::Result<Fleet> {
        self.fleet(count, checkin, None).await
    }

    /// Starts a fleet, with per-device state files in `state_dir` if given (devices
    /// resume from them).
    pub async fn fleet(
        &self,
        count: usize,
        checkin: Duration,
        state_dir: Option<PathBuf>,
    ) -> anyhow::Result<Fleet> {
        let profile = FleetProfile::supervised_iphones();
        let template = self.agent_config(profile.facts(0, "TEST"), checkin).await?;
        let options = FleetOptions {
            count,
            concurrency: 16,
            run: "TEST".into(),
            state_dir,
        };
        Ok(Fleet::start(template, &profile, &options, |_| {}).await?)
    }

    /// Enrolls `udid` by hand (no agent): its identity certificate and key, PEM.
    pub async fn enroll_identity(&self, udid: &str) -> anyhow::Result<(String, String)> {
        let (_, body) = self.admin.get("/v1/enrollment").await?;
        let secret = body["enrollment_secret"]
            .as_str()
            .context("the enrollment secret")?
            .to_owned();
        let request = DeviceIdentityRequest::generate(&Udid::from(udid))?;
        let enroll = EnrollRequest {
            enrollment_secret: secret,
            csr_pem: request.csr_pem,
            udid: udid.into(),
            serial_number: format!("SN-{udid}").into(),
            product_name: Some("iPhone15,2".into()),
            os_version: Some("17.5".into()),
            ownership: None,
            single_app_mode: None,
        };
        let response = self
            .device_client(None)?
            .post(format!("{}/mdm/enroll", self.server.url))
            .body(enroll.to_xml()?)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("enrollment of {udid} refused: {}", response.text().await?);
        }
        let answer = EnrollResponse::from_xml(&response.bytes().await?)?;
        Ok((answer.certificate_pem, request.key_pem))
    }

    /// An HTTPS client pinned to the server's CA, presenting `identity` (certificate and
    /// key PEM) when given.
    pub fn device_client(&self, identity: Option<(&str, &str)>) -> anyhow::Result<reqwest::Client> {
        Ok(tls_client(Trust::Only(&self.server.ca_pem), identity)?)
    }

    /// The bootstrap admin token.
    pub fn admin_token(&self) -> String {
        self.admin.token.clone()
    }

    /// Starts another replica of the server: same data directory (so the same CA) and
    /// same PostgreSQL database, its own port.
    pub async fn start_replica(&self) -> anyhow::Result<RunningServer> {
        if self.server_config.database.is_none() {
            bail!("replicas need PostgreSQL: build the testbed with .postgres()");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(orchard_server::start_with_listener(self.server_config.clone(), listener).await?)
    }

    /// Starts a fleet of supervised iPhones enrolled through the server at `server_url`;
    /// `run` prefixes their UDIDs and serials.
    pub async fn fleet_on(
        &self,
        server_url: &str,
        count: usize,
        checkin: Duration,
        run: &str,
    ) -> anyhow::Result<Fleet> {
        self.fleet_with(
            &FleetProfile::supervised_iphones(),
            server_url,
            count,
            checkin,
            run,
        )
        .await
    }

    /// Starts one device of each kind, in order, checking in every ten minutes and
    /// whenever pushed; `run` prefixes their UDIDs and serials.
    pub async fn fleet_of(&self, kinds: Vec<DeviceKind>, run: &str) -> anyhow::Result<Fleet> {
        let count = kinds.len();
        let profile = FleetProfile { devices: kinds };
        self.fleet_with(
            &profile,
            &self.server.url,
            count,
            Duration::from_secs(600),
            run,
        )
        .await
    }

    /// Starts a fleet of `profile`'s devices enrolled through the server at `server_url`.
    pub async fn fleet_with(
        &self,
        profile: &FleetProfile,
        server_url: &str,
        count: usize,
        checkin: Duration,
        run: &str,
    ) -> anyhow::Result<Fleet> {
        let mut template = self.agent_config(profile.facts(0, run), checkin).await?;
        template.server_url = server_url.to_owned();
        let options = FleetOptions {
            count,
            concurrency: 16,
            run: run.into(),
            state_dir: None,
        };
        Ok(Fleet::start(template, profile, &options, |_| {}).await?)
    }

    /// Stops the server and starts it again on the same address and data directory.
    pub async fn restart_server(&mut self) -> anyhow::Result<()> {
        let addr = self.server.addr;
        self.server.shutdown().await;
        self.server = orchard_server::start_with_listener(
            self.server_config.clone(),
            TcpListener::bind(addr).await?,
        )
        .await?;
        Ok(())
    }

    /// The PostgreSQL URL the server runs on, if it does.
    pub fn database_url(&self) -> Option<String> {
        self.postgres.as_ref().map(|db| db.url.clone())
    }

    /// Uploads the demo location's token and syncs it; returns the token id.
    pub async fn upload_and_sync_demo_token(&self) -> anyhow::Result<String> {
        self.upload_and_sync_token(DEMO_LOCATION, "Headquarters")
            .await
    }

    /// Uploads the token of a seeded location under `name` and syncs it; returns the
    /// token id.
    pub async fn upload_and_sync_token(
        &self,
        location: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let file = self
            .apple
            .token_file(location)
            .with_context(|| format!("the seed has no location {location}"))?;
        let (status, token) = self
            .admin
            .post(
                "/v1/tokens",
                json!({ "name": name, "token_file": file, "consent": true }),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("token upload answered {status}: {token}");
        }
        let id = token["id"].as_str().context("token id")?.to_owned();
        let (status, body) = self
            .admin
            .post(&format!("/v1/tokens/{id}/sync"), json!({}))
            .await?;
        if status != StatusCode::OK {
            bail!("sync answered {status}: {body}");
        }
        Ok(id)
    }

    /// The synced app with this adamId.
    pub async fn app_by_adam_id(&self, adam_id: u64) -> anyhow::Result<Value> {
        let (_, apps) = self.admin.get("/v1/apps").await?;
        apps["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|a| a["adam_id"].as_str() == Some(adam_id.to_string().as_str()))
            })
            .cloned()
            .with_context(|| format!("app {adam_id} not synced: {apps}"))
    }

    /// Puts `udids` in a new device group named `group` and assigns the app to it
    /// (Required, device licensing); returns the app's id.
    pub async fn assign_required(
        &self,
        adam_id: u64,
        udids: &[String],
        group: &str,
    ) -> anyhow::Result<String> {
        let app_id = self.app_by_adam_id(adam_id).await?["id"]
            .as_str()
            .context("app id")?
            .to_owned();
        let (status, body) = self
            .admin
            .post("/v1/groups", json!({ "name": group }))
            .await?;
        if status != StatusCode::CREATED {
            bail!("creating group {group} answered {status}: {body}");
        }
        let group_id = body["id"].as_str().context("group id")?.to_owned();
        for chunk in udids.chunks(1000) {
            let (status, body) = self
                .admin
                .post(
                    &format!("/v1/groups/{group_id}/devices"),
                    json!({ "udids": chunk }),
                )
                .await?;
            if status != StatusCode::OK {
                bail!("adding devices answered {status}: {body}");
            }
        }
        let assignment = json!({ "app_id": app_id, "group_id": group_id, "intent": "required", "license_type": "device" });
        let (status, body) = self.admin.post("/v1/assignments", assignment).await?;
        if status != StatusCode::CREATED {
            bail!("the assignment answered {status}: {body}");
        }
        Ok(app_id)
    }

    /// Adds a user to the directory; returns its id.
    pub async fn create_user(&self, email: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .admin
            .post("/v1/users", json!({ "email": email }))
            .await?;
        if status != StatusCode::CREATED {
            bail!("creating user {email} answered {status}: {body}");
        }
        Ok(body["id"].as_str().context("user id")?.to_owned())
    }

    /// Makes `user_id` the user of each device.
    pub async fn set_device_users(&self, udids: &[String], user_id: &str) -> anyhow::Result<()> {
        for udid in udids {
            let (status, body) = self
                .admin
                .put(
                    &format!("/v1/devices/{udid}/user"),
                    json!({ "user_id": user_id }),
                )
                .await?;
            if status != StatusCode::OK {
                bail!("setting the user of {udid} answered {status}: {body}");
            }
        }
        Ok(())
    }

    /// Creates a group of `kind` (`device` or `user`) with these members; returns its id.
    pub async fn group_of(
        &self,
        name: &str,
        kind: &str,
        members: &[String],
    ) -> anyhow::Result<String> {
        let (status, body) = self
            .admin
            .post("/v1/groups", json!({ "name": name, "kind": kind }))
            .await?;
        if status != StatusCode::CREATED {
            bail!("creating group {name} answered {status}: {body}");
        }
        let id = body["id"].as_str().context("group id")?.to_owned();
        let (path, body) = match kind {
            "user" => (
                format!("/v1/groups/{id}/users"),
                json!({ "user_ids": members }),
            ),
            _ => (
                format!("/v1/groups/{id}/devices"),
                json!({ "udids": members }),
            ),
        };
        let (status, answer) = self.admin.post(&path, body).await?;
        if status != StatusCode::OK {
            bail!("adding members to {name} answered {status}: {answer}");
        }
        Ok(id)
    }

    /// Assigns an app to a group as Required with `license_type`; returns the answer
    /// (the assignment and its warnings).
    pub async fn assign(
        &self,
        app_id: &str,
        group_id: &str,
        license_type: &str,
    ) -> anyhow::Result<Value> {
        let assignment = json!({ "app_id": app_id, "group_id": group_id, "intent": "required", "license_type": license_type });
        let (status, body) = self.admin.post("/v1/assignments", assignment).await?;
        if status != StatusCode::CREATED {
            bail!("the assignment answered {status}: {body}");
        }
        Ok(body)
    }

    /// Waits until the install row of `udid` for the app satisfies `done`; returns it.
    pub async fn wait_install_status_where(
        &self,
        app_id: &str,
        udid: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let done = &done;
        wait_for(
            timeout,
            &format!("{udid}'s install of {app_id}"),
            || async move {
                let row = self.install_row(app_id, udid).await?;
                Ok(if done(&row) {
                    Ok(row)
                } else {
                    Err(row.to_string())
                })
            },
        )
        .await
    }

    /// Waits until the install row of `udid` for the app has `status`; returns it.
    pub async fn wait_install_status(
        &self,
        app_id: &str,
        udid: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let path = format!("/v1/devices/{udid}/installs");
        wait_for(timeout, &format!("{udid} {status} for {app_id}"), || {
            let admin = self.admin.clone();
            let path = path.clone();
            async move {
                let (_, body) = admin.get(&path).await?;
                let row = body["items"]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|r| r["app_id"] == app_id).cloned());
                Ok(match row {
                    Some(r) if r["status"] == status => Ok(r),
                    other => Err(format!("{other:?}")),
                })
            }
        })
        .await
    }

    /// Syncs the token, then checks that the server's counts of the app equal the
    /// stand-in's; returns (total, assigned).
    pub async fn counts_agree(
        &self,
        token_id: &str,
        app_id: &str,
        adam_id: u64,
    ) -> anyhow::Result<(i64, i64)> {
        let (status, body) = self
            .admin
            .post(&format!("/v1/tokens/{token_id}/sync"), json!({}))
            .await?;
        if status != StatusCode::OK {
            bail!("sync answered {status}: {body}");
        }
        let (_, app) = self.admin.get(&format!("/v1/apps/{app_id}")).await?;
        let (total, assigned) = self
            .apple
            .with_world(|w| {
                w.assets
                    .get(&(DEMO_LOCATION.to_owned(), adam_id))
                    .map(|c| (c.total, c.assigned))
            })
            .context("the stand-in has the asset")?;
        let server = (
            app["licenses"]["total"].as_i64(),
            app["licenses"]["used"].as_i64(),
            app["licenses"]["available"].as_i64(),
        );
        if server != (Some(total), Some(assigned), Some(total - assigned)) {
            bail!(
                "server counts {server:?} differ from Apple's total {total}, assigned {assigned}"
            );
        }
        Ok((total, assigned))
    }

    /// The install row of one device for an app (null when there is none).
    pub async fn install_row(&self, app_id: &str, udid: &str) -> anyhow::Result<Value> {
        let (_, body) = self
            .admin
            .get(&format!("/v1/devices/{udid}/installs"))
            .await?;
        Ok(body["items"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["app_id"] == app_id).cloned())
            .unwrap_or(Value::Null))
    }

    /// Waits until `count` devices have the app verified installed; returns their install rows.
    pub async fn wait_installed(
        &self,
        app_id: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let path = format!("/v1/apps/{app_id}/installs");
        wait_for(
            timeout,
            &format!("{count} verified installs of app {app_id}"),
            || {
                let admin = self.admin.clone();
                let path = path.clone();
                async move {
                    let rows = admin.list_all(&path).await?;
                    let installed: Vec<Value> = Some(&rows)
                        .map(|a| {
                            a.iter()
                                .filter(|i| i["status"] == "installed")
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok(if installed.len() == count {
                        Ok(installed)
                    } else {
                        Err(format!("{}/{count} installed", installed.len()))
                    })
                }
            },
        )
        .await
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
        self.apple.shutdown().await;
        if let Some(db) = self.postgres.take() {
            db.drop_database().await;
        }
    }
}

/// A PostgreSQL database made for one testbed and dropped with it.
pub struct FreshDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

fn postgres_admin_url() -> String {
    std::env::var("ORCHARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl FreshDatabase {
    /// Creates `orchard_test_<random>` next to the database of `ORCHARD_TEST_POSTGRES_URL`
    /// (default `postgres://postgres@127.0.0.1:5432/postgres`).
    pub async fn create() -> Result<Self, String> {
        use sqlx::Connection;
        let admin_url = postgres_admin_url();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .map_err(|e| format!("cannot connect to {admin_url}: {e}"))?;
        let name = format!("orchard_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("cannot create a test database: {e}"))?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// Drops the database (closing whatever still uses it).
    pub async fn drop_database(mut self) {
        drop_named(&std::mem::take(&mut self.name)).await;
    }
}

/// A database dropped without [`FreshDatabase::drop_database`] (its testbed dropped
/// without `shutdown`: a failed assertion, a test that ends early) is dropped here, on
/// a thread of its own (this may run on the test's runtime, which cannot be blocked
/// on from inside).
impl Drop for FreshDatabase {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let name = std::mem::take(&mut self.name);
        let dropping =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(drop_named(&name)),
                    Err(e) => eprintln!("cannot drop test database {name}: {e}"),
                }
            });
        let _ = dropping.join();
    }
}

/// Drops the test database `name` (closing whatever still uses it).
async fn drop_named(name: &str) {
    use sqlx::Connection;
    if let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
        {
            eprintln!("cannot drop test database {name}: {e}");
        }
    }
}

/// Runs an end-to-end scenario `async fn(TestbedBuilder)` once on SQLite and once on
/// PostgreSQL, as two tests `sqlite` and `postgres` in a module named after it.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario($crate::harness::Testbed::builder()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(builder) = $crate::harness::Testbed::builder().postgres().await {
                        super::$scenario(builder).await;
                    }
                }
            }
        )+
    };
}

/// A client of the admin API.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// A client of the server at `base` (pinning `ca_pem`) with an admin token.
    pub fn new(base: &str, ca_pem: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: tls_client(Trust::Only(ca_pem), None)?,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// The same client with another bearer token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: token.to_owned(),
            ..self.clone()
        }
    }

    /// The same client and token against another replica at `base`.
    pub fn at(&self, base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    async fn read(response: reqwest::Response) -> anyhow::Result<(StatusCode, Value)> {
        let status = response.status();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        Self::read(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await?,
        )
        .await
    }

    /// Every item of a list, following `next_cursor` a thousand at a time (`path` may
    /// carry query parameters of its own).
    pub async fn list_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = match &cursor {
                Some(c) => format!("{path}{sep}limit=1000&cursor={c}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let (status, body) = self.get(&page).await?;
            if !status.is_success() {
                bail!("GET {page}: {status} {body}");
            }
            items.extend(body["items"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// Opens the event stream at `path` (`Accept: text/event-stream`), resuming after
    /// `last_event_id` when given.
    pub async fn event_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        Ok(request.send().await?)
    }

    /// POST JSON to a path.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        Self::read(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await?,
        )
        .await
    }

    /// DELETE a path.
    pub async fn delete(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        Self::read(
            self.http
                .delete(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await?,
        )
        .await
    }

    /// PATCH JSON to a path.
    pub async fn patch(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        Self::read(
            self.http
                .patch(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await?,
        )
        .await
    }

    /// PUT JSON to a path.
    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        Self::read(
            self.http
                .put(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await?,
        )
        .await
    }

    /// POST raw bytes with a content type, and optionally no Authorization header.
    pub async fn post_raw(
        &self,
        path: &str,
        body: &'static str,
        content_type: &str,
        auth: bool,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", content_type)
            .body(body);
        if auth {
            request = request.bearer_auth(&self.token);
        }
        Self::read(request.send().await?).await
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the last state.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await? {
            Ok(value) => return Ok(value),
            Err(state) if Instant::now() >= deadline => {
                bail!("timed out after {timeout:?} waiting for {what}; last state: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
