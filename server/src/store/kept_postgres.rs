//! How PostgreSQL replicas hear of each other's writes of what they keep in memory
//! (see `kept`). A trigger on `apps` and on a device's standing columns notifies the
//! channel [`CHANNEL`] from the writing transaction, naming the cache (migration
//! 0017), so a notification goes out exactly when a change commits, whichever replica
//! or tool wrote it. Each replica listens on a connection of its own and empties the
//! named cache when one arrives.
//!
//! A notification missed is a stale answer kept, so the caches start paused, resume
//! (empty) only once the replica listens, and pause again the moment the listening
//! connection is lost, until it listens again. Between a commit elsewhere and its
//! notification arriving here (a round trip on the database's host) a replica may
//! still answer with what it kept, as it could have read it just before the commit.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::kept::Kept;
use super::records::{AppRecord, Standing};

/// The PostgreSQL channel changes of kept values are told on.
pub(super) const CHANNEL: &str = "orchard_kept";

/// Pause before listening again after the connection was lost or refused.
const RETRY: Duration = Duration::from_secs(1);

/// The caches one replica keeps.
#[derive(Debug, Clone)]
pub(super) struct Caches {
    pub apps: Arc<Kept<AppRecord>>,
    pub standings: Arc<Kept<Standing>>,
}

impl Caches {
    /// Paused caches, to be resumed by [`listen`].
    pub(super) fn paused() -> Self {
        Self {
            apps: Arc::new(Kept::paused()),
            standings: Arc::new(Kept::paused()),
        }
    }

    /// Whether the caches keep values: the replica hears of every change.
    pub(super) fn running(&self) -> bool {
        self.apps.running() && self.standings.running()
    }

    fn pause(&self) {
        self.apps.pause();
        self.standings.pause();
    }

    fn resume(&self) {
        self.apps.resume();
        self.standings.resume();
    }

    /// Empties the cache a notification names (both, for a name not known here).
    fn changed(&self, name: &str) {
        match name {
            "apps" => self.apps.written(),
            "standings" => self.standings.written(),
            other => {
                tracing::warn!(
                    channel = CHANNEL,
                    name = other,
                    "notification names no cache; emptying all"
                );
                self.apps.written();
                self.standings.written();
            }
        }
    }
}

/// Starts listening for changes on a connection of its own to `pool`'s database
/// (outside the pool: it is held for as long as the listener runs). The listener
/// stops, pausing the caches, when the returned guard is dropped.
pub(super) fn listen(pool: &PgPool, caches: Caches) -> DropGuard {
    let stop = CancellationToken::new();
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with((*pool.connect_options()).clone());
    tokio::spawn(run(own, caches, stop.clone()));
    stop.drop_guard()
}

async fn run(pool: PgPool, caches: Caches, stop: CancellationToken) {
    loop {
        match listener(&pool).await {
            Ok(mut listener) => {
                caches.resume();
                tracing::debug!(channel = CHANNEL, "listening for changes of kept values");
                loop {
                    let received = tokio::select! {
                        _ = stop.cancelled() => break,
                        r = listener.try_recv() => r,
                    };
                    match received {
                        Ok(Some(n)) => caches.changed(n.payload()),
                        Ok(None) => {
                            tracing::warn!(
                                channel = CHANNEL,
                                "lost the connection that hears of changes; keeping nothing until it listens again"
                            );
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(channel = CHANNEL, error = %e, "cannot hear of changes; keeping nothing until it listens again");
                            break;
                        }
                    }
                }
                caches.pause();
            }
            Err(e) => {
                tracing::warn!(channel = CHANNEL, error = %e, "cannot listen for changes; retrying")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {
                caches.pause();
                pool.close().await;
                return;
            }
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is listened on again here, where the caches are resumed.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
