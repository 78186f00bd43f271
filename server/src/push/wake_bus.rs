//! Wake-ups across replicas on PostgreSQL. A device holds its push connection to one
//! replica, but any replica may queue a command for it. A replica that cannot wake a
//! device itself publishes the UDID on a PostgreSQL channel; every replica listens and
//! wakes the devices connected to it.
//!
//! NOTIFY takes a global lock at commit, so it is used only as a batched signal: UDIDs
//! are gathered from a channel and sent many per notification, never one per check-in.
//! A notification is never the only copy of anything: the command is in the queue
//! table, and a device that misses a wake-up gets one when it reconnects, or checks in
//! on its periodic timer.

use std::sync::Arc;

use orchard_protocol::Udid;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hub::PushHub;

/// The PostgreSQL channel wake-ups travel on.
pub const CHANNEL: &str = "orchard_wake";
/// Payload bytes per notification (PostgreSQL allows just under 8,000).
const MAX_PAYLOAD: usize = 7900;

/// Connects `hub` to the other replicas: wake-ups for devices not connected here are
/// published, and wake-ups published elsewhere reach the devices connected here.
/// Returns the publishing and listening tasks.
pub fn connect(
    pool: PgPool,
    hub: Arc<PushHub>,
    replica: String,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let (tx, rx) = mpsc::unbounded_channel();
    hub.set_remote(tx);
    let publisher = tokio::spawn(publish(pool.clone(), rx, replica.clone(), shutdown.clone()));
    let listener = tokio::spawn(listen(pool, hub, replica, shutdown));
    vec![publisher, listener]
}

/// Encodes one batch as notification payloads: the sending replica's id on the first
/// line, then one UDID per line.
pub fn payloads(replica: &str, udids: &[Udid]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = replica.to_owned();
    for udid in udids {
        if current.len() + 1 + udid.as_str().len() > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut current, replica.to_owned()));
        }
        current.push('\n');
        current.push_str(udid.as_str());
    }
    if current.len() > replica.len() {
        out.push(current);
    }
    out
}

async fn publish(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Udid>,
    replica: String,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            udid = rx.recv() => match udid { Some(u) => u, None => return },
        };
        let mut batch = vec![first];
        while let Ok(udid) = rx.try_recv() {
            batch.push(udid);
        }
        batch.sort();
        batch.dedup();
        for payload in payloads(&replica, &batch) {
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "cannot publish wake-ups to other replicas");
            }
        }
    }
}

async fn listen(pool: PgPool, hub: Arc<PushHub>, replica: String, shutdown: CancellationToken) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for wake-ups; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for wake-ups; retrying");
            continue;
        }
        loop {
            let notification = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => n,
            };
            match notification {
                Ok(n) => {
                    let mut lines = n.payload().lines();
                    if lines.next() == Some(replica.as_str()) {
                        continue;
                    }
                    for udid in lines {
                        hub.wake_local(&Udid::from(udid));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "wake-up listener lost its connection");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_batched_under_the_size_limit() {
        let udids: Vec<Udid> = (0..1000)
            .map(|i| Udid(format!("00008110-{i:016X}")))
            .collect();
        let batch = payloads("replica-a", &udids);
        assert!(batch.len() > 1 && batch.len() < 10, "{}", batch.len());
        assert!(
            batch
                .iter()
                .all(|p| p.len() <= MAX_PAYLOAD && p.starts_with("replica-a\n"))
        );
        let back: Vec<&str> = batch.iter().flat_map(|p| p.lines().skip(1)).collect();
        assert_eq!(back.len(), 1000);
        assert!(payloads("r", &[]).is_empty());
    }
}
