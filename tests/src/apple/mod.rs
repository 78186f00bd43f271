//! A stand-in for Apple's Apps and Books for Organizations service and the iTunes
//! lookup API, over HTTPS on loopback, seeded from TOML.

mod api;
pub mod notify;
pub mod paging;
pub mod seed;
pub mod state;
pub mod testbed_admin;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchard_certs::CertificateAuthority;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use seed::Seed;
pub use state::{Counts, World};

/// A running stand-in.
pub struct AppleStandIn {
    /// Bound address.
    pub addr: SocketAddr,
    /// CA of its TLS certificate, in PEM.
    pub ca_pem: String,
    world: api::SharedWorld,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl AppleStandIn {
    /// Starts on `listener` with `seed`.
    pub async fn start(seed: &Seed, listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let ca = CertificateAuthority::generate("Orchard testbed Apple stand-in CA")?;
        let cert = ca.issue_server(&["localhost".into(), "127.0.0.1".into(), "::1".into()])?;
        let pki = orchard_certs::ServerPki {
            server_cert_pem: cert.cert_pem,
            server_key_pem: cert.key_pem.unwrap_or_default(),
            ca,
            created: true,
        };
        let tls = orchard_server::tls::server_config(&pki)?;
        let world = Arc::new(Mutex::new(World::from_seed(seed)));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(orchard_server::http::serve(
            listener,
            tls,
            api::router(world.clone()),
            orchard_server::http::ConnectionLimits::default(),
            orchard_server::http::OpenConnections::default(),
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            ca_pem: pki.ca.cert_pem().to_owned(),
            world,
            shutdown,
            task,
        })
    }

    /// Base URL of the stand-in (its testbed side is under `/testbed`).
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Base URL of the v2 API.
    pub fn vpp_url(&self) -> String {
        format!("https://127.0.0.1:{}/mdm/v2", self.addr.port())
    }

    /// URL of the iTunes lookup API.
    pub fn lookup_url(&self) -> String {
        format!("https://127.0.0.1:{}/lookup", self.addr.port())
    }

    /// Writes the CA to `path` (for clients that take a file).
    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    /// The token file of a location.
    pub fn token_file(&self, uid: &str) -> Option<String> {
        self.with_world(|w| w.locations.get(uid).map(|l| l.token_file.clone()))
    }

    /// Reads or changes the world (tests only; never across an await).
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let mut world = self.world.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut world)
    }

    /// Makes events stay PENDING for `delay`.
    pub fn set_event_delay(&self, delay: Duration) {
        self.with_world(|w| w.event_delay = delay);
    }

    /// Makes the App Store's next `lookups` lookups answer 503 (the store is down).
    pub fn fail_store_lookups(&self, lookups: u32) {
        self.with_world(|w| w.store_outage = lookups);
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
