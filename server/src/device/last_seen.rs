//! Writing when devices were last heard from: an Idle check-in with nothing to hand out
//! costs no write transaction (the device channel notes the time in the state's
//! `LastSeen`); the times are written for many devices at once, every second and at
//! shutdown.

use std::time::Duration;

use crate::error::ServerResult;
use crate::state::ServerState;

/// How often the times are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Writes the noted times (one statement per batch); times that could not be written
/// are noted again for the next write.
pub async fn flush(state: &ServerState) -> ServerResult<()> {
    let seen = state.last_seen.take();
    if seen.is_empty() {
        return Ok(());
    }
    let written = state.store.touch_devices(&seen).await;
    if written.is_err() {
        for (udid, at) in &seen {
            state.last_seen.note(udid, *at);
        }
    }
    Ok(written?)
}

/// Writes the noted times every [`FLUSH_EVERY`] until `shutdown`, then once more.
pub async fn run(state: ServerState, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(FLUSH_EVERY) => {}
        }
        if let Err(e) = flush(&state).await {
            tracing::warn!(error = %e, "cannot write when devices were last seen; will retry");
        }
    }
    if let Err(e) = flush(&state).await {
        tracing::warn!(error = %e, "cannot write when devices were last seen at shutdown");
    }
}
