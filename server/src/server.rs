//! Starting and stopping one server process: storage, PKI, first-start bootstrap
//! (admin token, enrollment secret, push topic), the HTTPS front end and the reconciler.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchard_certs::ServerPki;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apple::{AppleClient, AppleConfig};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::http::ConnectionLimits;
use crate::push::PushLimits;
use crate::rate_limit::{Rate, RateLimiter, RateLimits};
use crate::state::{MdmIdentity, ServerState, ServiceOptions};
use crate::store::{AdminStore, AdminTokenRecord, Backend, Page, Role, Seal, Store};

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data directory: database and PEM files.
    pub data_dir: PathBuf,
    /// `postgres://…` for PostgreSQL, or a SQLite file path; SQLite in the data directory when absent.
    pub database: Option<String>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// URL devices use to reach this server; defaults to `https://<listen address>`.
    pub public_url: Option<String>,
    /// Extra DNS names or IPs for the server certificate.
    pub server_names: Vec<String>,
    /// Apple's services.
    pub apple: AppleConfig,
    /// Delay before asking a device again about an install in progress.
    pub install_poll_interval: Duration,
    /// How long an install may stay `Installing` before it fails (apps may set their own).
    pub install_timeout: Duration,
    /// How long events stay in the stream (`/v1/events`) before they are forgotten.
    pub event_retention: Duration,
    /// How often pending Apple events are polled.
    pub event_poll_interval: Duration,
    /// How long an association event may stay pending before it is submitted again
    /// (Apple: ten minutes).
    pub event_resubmit_after: Duration,
    /// Back-off of license requests Apple refused or could not take: the first wait,
    /// doubled after each failure up to the second.
    pub apple_retry: (Duration, Duration),
    /// The first wait before a failed webhook delivery is tried again (doubled after
    /// each failure), and the longest.
    pub webhook_retry: (Duration, Duration),
    /// Hosts webhooks may be registered to: names, addresses, or `*.example.com`
    /// suffixes (empty: any host).
    pub webhook_hosts: Vec<String>,
    /// Most VPP tokens.
    pub max_tokens: i64,
    /// How often every token is synced with Apple (twice a day by default).
    pub sync_interval: Duration,
    /// How often the sync scheduler looks for tokens due.
    pub scheduler_tick: Duration,
    /// Where every time rule reads the time (the system clock; tests set their own).
    pub clock: Arc<dyn Clock>,
    /// Timeouts and caps of client connections.
    pub connection: ConnectionLimits,
    /// The key sealing secrets at rest (base64 of 32 bytes); the data directory's key
    /// file when absent.
    pub secret_key: Option<String>,
    /// What the push endpoint admits.
    pub push: PushLimits,
    /// Whether Apple is asked for notifications when a location is claimed.
    pub apple_notifications: crate::state::NotificationMode,
    /// Enrollments per source address.
    pub enrollment_rate: Rate,
    /// Failed admin or device authentications per source address.
    pub failed_auth_rate: Rate,
    /// How many device requests do their storage work at once; the others wait their
    /// turn in order, so the engine's and the admin API's writes never queue behind a
    /// whole fleet checking in at once.
    pub device_concurrency: usize,
}

/// Device requests doing storage work at once, by default: enough to keep the
/// database busy, few enough that a write of the engine or an admin waits for at most
/// this many device exchanges.
pub const DEVICE_CONCURRENCY: usize = 32;

impl ServerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            database: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: None,
            server_names: Vec::new(),
            apple: AppleConfig::default(),
            install_poll_interval: Duration::from_secs(5),
            install_timeout: Duration::from_secs(30 * 60),
            event_retention: Duration::from_secs(7 * 24 * 3600),
            event_poll_interval: Duration::from_secs(30),
            event_resubmit_after: crate::apple::polling::RESUBMIT_AFTER,
            apple_retry: (Duration::from_secs(5), Duration::from_secs(600)),
            webhook_retry: (Duration::from_secs(5), Duration::from_secs(600)),
            webhook_hosts: Vec::new(),
            max_tokens: 256,
            sync_interval: Duration::from_secs(12 * 3600),
            scheduler_tick: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            connection: ConnectionLimits::default(),
            secret_key: None,
            push: PushLimits::default(),
            apple_notifications: Default::default(),
            enrollment_rate: Rate {
                per_second: 5.0,
                burst: 50.0,
            },
            failed_auth_rate: Rate {
                per_second: 2.0,
                burst: 20.0,
            },
            device_concurrency: DEVICE_CONCURRENCY,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or listener failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The key sealing secrets at rest is unusable.
    #[error(transparent)]
    SecretKey(#[from] crate::data_dir::SecretKeyError),
    /// The PKI failed.
    #[error(transparent)]
    Cert(#[from] orchard_certs::CertError),
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The Apple client could not be built.
    #[error(transparent)]
    Apple(#[from] crate::apple::VppError),
    /// No admin token could be minted.
    #[error("cannot mint an admin token: {0}")]
    Recover(crate::error::ServerError),
}

/// A running server.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The URL devices and admins use.
    pub url: String,
    /// The admin token created at first start (shown once, stored only as a hash).
    pub first_admin_token: Option<String>,
    /// The CA certificate clients pin, in PEM.
    pub ca_pem: String,
    /// Shared state (for in-process tests and tools).
    pub state: ServerState,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    backend: Backend,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (within the shutdown grace period),
    /// stops the reconciler and the sync schedule, releases this replica's leases, closes
    /// the database.
    pub async fn shutdown(&mut self) {
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        // A sync or reconcile pass cut short leaves no lease for another replica (or
        // this server's next start) to wait out.
        match self
            .state
            .store
            .release_leases_of(&self.state.replica)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(leases = n, "leases released"),
            Err(e) => tracing::warn!(error = %e, "cannot release leases at shutdown"),
        }
        self.backend.close().await;
    }
}

/// Creates the admin token, enrollment secret and topic on first start; seals secrets
/// stored before sealing.
async fn bootstrap(
    store: &dyn Store,
    now: Timestamp,
) -> Result<(Option<String>, String), StartError> {
    let topic = store
        .setting_or_insert(
            "topic",
            &format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4()),
        )
        .await?;
    store
        .secret_setting_or_insert(
            crate::device::enroll::ENROLLMENT_SECRET,
            &crate::secret::random(),
        )
        .await?;
    let filled = store.fill_device_keys().await?;
    if filled > 0 {
        tracing::info!(
            devices = filled,
            "device platforms and OS version keys filled in"
        );
    }
    let resealed = store.reseal_secrets().await?;
    if resealed > 0 {
        tracing::info!(tokens = resealed, "token secrets sealed at rest");
    }
    let token = crate::secret::random();
    let record = AdminTokenRecord {
        id: "bootstrap".into(),
        name: "bootstrap-admin".into(),
        token_hash: crate::access::token_hash(&token),
        role: Role::Admin,
        expires_at: None,
        created_by: None,
        created_at: now,
        rotated_at: None,
    };
    // Only on first start: once any admin token exists (this one, or others after it
    // was revoked), none is made here.
    let created = store
        .admin_tokens(&Page {
            limit: 1,
            cursor: None,
        })
        .await?
        .is_empty()
        && AdminStore::insert_admin_token(store, &record).await?;
    Ok((created.then_some(token), topic))
}

/// Mints a new `admin` token on the server's host, against its data directory (and
/// database, when not the data directory's SQLite), for when every admin token is
/// lost. Runs beside a running server or instead of it; never over the network.
pub async fn recover_admin_token(
    data_dir: &std::path::Path,
    database: Option<&str>,
    secret_key: Option<&str>,
    now: Timestamp,
) -> Result<crate::access::IssuedToken, StartError> {
    let key = crate::data_dir::secret_key(data_dir, secret_key)?;
    let seal = Arc::new(Seal::new(&key).map_err(crate::store::StoreError::from)?);
    let backend = Backend::open(database, data_dir, seal).await?;
    let store = backend.store();
    let result = crate::access::recover(store.as_ref(), now).await;
    let entry = crate::store::AuditEntry {
        id: 0,
        at: now,
        actor: "server host (recover-admin-token)".into(),
        actor_token: None,
        action: "admin_token.recover".into(),
        target: result
            .as_ref()
            .map(|t| t.record.id.clone())
            .unwrap_or_default(),
        result: match &result {
            Ok(_) => "ok".into(),
            Err(e) => format!("error: {e}"),
        },
    };
    let audited = store.audit(&entry).await;
    backend.close().await;
    audited?;
    result.map_err(StartError::Recover)
}

/// Binds `config.listen` and starts.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Io {
            what: format!("cannot listen on {}", config.listen),
            source,
        })?;
    start_with_listener(config, listener).await
}

/// Starts on an already-bound listener (tests bind port 0).
pub async fn start_with_listener(
    config: ServerConfig,
    listener: TcpListener,
) -> Result<RunningServer, StartError> {
    let mut config = config;
    crate::telemetry::install();
    if let Some(files) = crate::http::raise_open_file_limit() {
        let fitted = config.connection.fit_to_open_files(files);
        if fitted.max_connections < config.connection.max_connections {
            tracing::warn!(
                files,
                asked = config.connection.max_connections,
                max_connections = fitted.max_connections,
                "the open-file limit allows fewer connections than asked for; the cap is lowered (raise the limit, e.g. LimitNOFILE, to serve more)"
            );
        }
        config.connection = fitted;
    }
    crate::data_dir::prepare(&config.data_dir).map_err(|source| StartError::Io {
        what: format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        ),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Io {
        what: "cannot read the listening address".into(),
        source,
    })?;
    let key = crate::data_dir::secret_key(&config.data_dir, config.secret_key.as_deref())?;
    let seal = Arc::new(Seal::new(&key).map_err(crate::store::StoreError::from)?);
    let backend = Backend::open(config.database.as_deref(), &config.data_dir, seal).await?;
    let store: Arc<dyn Store> = backend.store();
    let pki = ServerPki::load_or_create(&config.data_dir, &config.server_names)?;
    let tls = crate::tls::server_config(&pki)?;
    let (first_admin_token, topic) = bootstrap(store.as_ref(), config.clock.now()).await?;
    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| match addr.ip() {
            ip if ip.is_unspecified() => format!("https://localhost:{}", addr.port()),
            std::net::IpAddr::V6(ip) => format!("https://[{ip}]:{}", addr.port()),
            ip => format!("https://{ip}:{}", addr.port()),
        });
    let push_io = |source| StartError::Io {
        what: format!("cannot listen for push on udp {addr}"),
        source,
    };
    let push_socket = std::net::UdpSocket::bind(addr).map_err(push_io)?;
    let push_endpoint = crate::push::endpoint(push_socket, crate::push::server_config(&pki)?, &key)
        .map_err(push_io)?;
    let push_url = match url.strip_prefix("https://") {
        Some(rest) => format!("quic://{rest}"),
        None => format!("quic://{addr}"),
    };
    let shutdown = CancellationToken::new();
    let state = ServerState {
        store,
        clock: config.clock.clone(),
        ca: Arc::new(pki.ca),
        apple: AppleClient::new(config.apple.clone())?,
        reconcile: Arc::new(Notify::new()),
        mdm: Arc::new(MdmIdentity {
            topic,
            public_url: url.clone(),
            push_url,
        }),
        options: Arc::new(ServiceOptions {
            install_poll_interval: config.install_poll_interval,
            install_timeout: config.install_timeout,
            event_retention: config.event_retention,
            event_poll_interval: config.event_poll_interval,
            event_resubmit_after: config.event_resubmit_after,
            max_tokens: config.max_tokens,
            sync_interval: config.sync_interval,
            scheduler_tick: config.scheduler_tick,
            enrollment_body_limit: config.connection.enrollment_body,
            notifications: config.apple_notifications,
            webhook_hosts: config.webhook_hosts.clone(),
        }),
        syncing: Arc::new(Mutex::new(Default::default())),
        push: Arc::new(crate::push::PushHub::default()),
        replica: uuid::Uuid::new_v4().to_string().into(),
        syncs_run: Default::default(),
        apple_backoff: Arc::new(crate::retry::Backoff::new(
            config.apple_retry.0,
            config.apple_retry.1,
        )),
        apple_user_versions: Default::default(),
        event_polls: Default::default(),
        last_seen: Default::default(),
        device_turns: Arc::new(tokio::sync::Semaphore::new(
            config.device_concurrency.max(1),
        )),
        poked_at: Arc::default(),
        http_connections: crate::state::OpenConnections::default(),
        rate: Arc::new(RateLimits {
            enrollment: RateLimiter::new(config.enrollment_rate),
            failed_auth: RateLimiter::new(config.failed_auth_rate),
        }),
        stopping: shutdown.clone(),
    };
    let router = crate::http::router(state.clone());
    let mut tasks = Vec::new();
    if let Backend::Postgres(pg) = &backend {
        let replica = state.replica.to_string();
        tasks.extend(crate::push::wake_bus::connect(
            pg.pool().clone(),
            state.push.clone(),
            replica,
            shutdown.clone(),
        ));
    }
    tasks.extend([
        tokio::spawn(crate::http::serve(
            listener,
            tls,
            router,
            config.connection,
            state.http_connections.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::engine::reconcile::run(
            state.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::device::last_seen::run(
            state.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::apple::sync::run_scheduler(
            state.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::webhook::run(
            state.clone(),
            config.webhook_retry,
            shutdown.clone(),
        )),
        tokio::spawn(crate::push::serve(
            push_endpoint,
            state.store.clone(),
            state.push.clone(),
            state.clock.clone(),
            config.push,
            shutdown.clone(),
        )),
    ]);
    tracing::info!(%addr, %url, "orchard-server listening");
    Ok(RunningServer {
        addr,
        url,
        first_admin_token,
        ca_pem: state.ca.cert_pem().to_owned(),
        state,
        shutdown,
        tasks,
        backend,
    })
}
