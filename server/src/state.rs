//! What every request handler and background task shares.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchard_certs::CertificateAuthority;
use tokio::sync::Notify;

use crate::apple::AppleClient;
use crate::clock::Clock;
use crate::push::PushHub;
use crate::store::{NewCommand, Store};

/// The server's MDM identity: what goes into every enrollment's MDM payload.
#[derive(Debug, Clone)]
pub struct MdmIdentity {
    /// Push topic, `com.apple.mgmt.External.<uuid>`.
    pub topic: String,
    /// Base URL devices reach the server at, e.g. `https://127.0.0.1:8443`.
    pub public_url: String,
    /// Where devices connect the push channel, e.g. `quic://127.0.0.1:8443`.
    pub push_url: String,
}

/// Whether the server asks Apple for notifications when it claims a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotificationMode {
    /// Ask with the notification URL; if Apple cannot reach it (9728: a server behind a
    /// firewall, a laptop), claim without one and poll.
    #[default]
    Auto,
    /// Ask with the notification URL; fail if Apple cannot reach it.
    On,
    /// Never ask: poll.
    Off,
}

/// Tunables of the services.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Delay before asking a device again about an install in progress.
    pub install_poll_interval: Duration,
    /// How long an install may stay `Installing` before it fails (apps may set their own).
    pub install_timeout: Duration,
    /// How long events stay in the stream before they are forgotten.
    pub event_retention: Duration,
    /// How often pending Apple events are polled (at least this long between two polls
    /// of one event).
    pub event_poll_interval: Duration,
    /// How long an association event may stay pending before it is submitted again.
    pub event_resubmit_after: Duration,
    /// Most VPP tokens the server holds.
    pub max_tokens: i64,
    /// How often every token is synced with Apple.
    pub sync_interval: Duration,
    /// How often the sync scheduler looks for tokens due.
    pub scheduler_tick: Duration,
    /// Largest enrollment request body.
    pub enrollment_body_limit: usize,
    /// Whether Apple is asked for notifications.
    pub notifications: NotificationMode,
    /// Hosts webhooks may be registered to (empty: any host).
    pub webhook_hosts: Vec<String>,
}

/// How many client connections are open now (counted from acceptance to close), for
/// `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<std::sync::atomic::AtomicUsize>);

impl OpenConnections {
    /// Connections open now.
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one connection until the guard drops.
    pub fn opened(&self) -> OpenGuard {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenGuard(self.0.clone())
    }
}

/// One open connection, counted until dropped.
pub struct OpenGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Shared state of one server process.
#[derive(Clone)]
pub struct ServerState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Where every time rule reads the time.
    pub clock: Arc<dyn Clock>,
    /// The CA that signs device identities.
    pub ca: Arc<CertificateAuthority>,
    /// Apple's service.
    pub apple: AppleClient,
    /// Wakes the reconciler.
    pub reconcile: Arc<Notify>,
    /// MDM identity.
    pub mdm: Arc<MdmIdentity>,
    /// Tunables.
    pub options: Arc<ServiceOptions>,
    /// Tokens being synced right now (one sync per token at a time).
    pub syncing: Arc<Mutex<HashSet<String>>>,
    /// Devices connected to the push channel.
    pub push: Arc<PushHub>,
    /// HTTPS connections open now (devices and admins).
    pub http_connections: OpenConnections,
    /// This process's id among replicas (holder of leases).
    pub replica: Arc<str>,
    /// Rate limits per source address.
    pub rate: Arc<crate::rate_limit::RateLimits>,
    /// Syncs this process ran to completion.
    pub syncs_run: Arc<std::sync::atomic::AtomicU64>,
    /// Back-off of license requests Apple refused or could not take, per app.
    pub apple_backoff: Arc<crate::retry::Backoff>,
    /// The users list's `versionId` last read from Apple, per token (incremental sync).
    pub apple_user_versions: Arc<VersionIds>,
    /// Devices heard from since their last-seen times were last written.
    pub last_seen: Arc<crate::store::LastSeen>,
    /// When each pending Apple event was last polled.
    pub event_polls: Arc<crate::apple::polling::EventPolls>,
    /// Turns of device requests at the storage (see `ServerConfig::device_concurrency`).
    pub device_turns: Arc<tokio::sync::Semaphore>,
    /// Fires when the server begins to stop: open event streams end, so shutdown does
    /// not wait out its grace period for them.
    pub stopping: tokio_util::sync::CancellationToken,
    /// When the reconciler was first asked for a pass since its last one began (for the
    /// lag it reports).
    pub poked_at: Arc<Mutex<Option<std::time::Instant>>>,
}

/// Apple's `versionId` of a list, per token: the next read asks only for what changed
/// since. Kept in memory: after a restart the first read is a full one.
#[derive(Debug, Default)]
pub struct VersionIds(Mutex<HashMap<String, String>>);

impl VersionIds {
    /// The version to read from, if any.
    pub fn get(&self, token_id: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token_id)
            .cloned()
    }

    /// Records the version a read returned.
    pub fn set(&self, token_id: &str, version: String) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token_id.to_owned(), version);
    }
}

impl ServerState {
    /// Asks the reconciler to run soon.
    pub fn poke_reconciler(&self) {
        if let Ok(mut first) = self.poked_at.lock() {
            first.get_or_insert_with(std::time::Instant::now);
        }
        self.reconcile.notify_one();
    }

    /// Wakes the devices of commands that were just stored.
    pub fn wake_for(&self, commands: &[NewCommand]) {
        self.push.wake_for(commands, self.clock.now());
    }
}
