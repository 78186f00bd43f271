//! The push hub: the devices connected to this replica's push endpoint, and waking
//! them. Whenever a command is queued for a device, the server wakes it and the device
//! checks in at once.
//!
//! Wake-ups are coalesced: each device has a one-slot channel, so any number of wakes
//! while one is pending is one wake. A device that is not connected gets one wake when
//! it (re)registers, which covers everything queued meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use orchard_protocol::Udid;
use tokio::sync::mpsc;

use crate::store::{NewCommand, Timestamp};

/// Devices connected to this server's push endpoint.
#[derive(Debug, Default)]
pub struct PushHub {
    connections: Mutex<HashMap<Udid, (u64, mpsc::Sender<()>)>>,
    /// Other replicas, when several share PostgreSQL: UDIDs to wake elsewhere.
    remote: std::sync::OnceLock<mpsc::UnboundedSender<Udid>>,
    next_id: AtomicU64,
    wakes_sent: AtomicU64,
}

impl PushHub {
    /// Wakes a device now: here if it is connected here, else through the other replicas.
    pub fn wake(&self, udid: &Udid) {
        if !self.wake_local(udid)
            && let Some(remote) = self.remote.get()
        {
            let _ = remote.send(udid.clone());
        }
    }

    /// Connects the hub to the other replicas: wake-ups for devices not connected here
    /// go to `remote`.
    pub fn set_remote(&self, remote: mpsc::UnboundedSender<Udid>) {
        let _ = self.remote.set(remote);
    }

    /// Wakes a device connected to this replica; false when it is not connected here
    /// (it gets a wake-up when it reconnects).
    pub fn wake_local(&self, udid: &Udid) -> bool {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        match connections.get(udid) {
            // A full slot means a wake is already pending: coalesced.
            Some((_, tx)) => !matches!(tx.try_send(()), Err(mpsc::error::TrySendError::Closed(_))),
            None => false,
        }
    }

    /// Wakes the devices of newly queued commands: at once, or when a deferred command
    /// falls due (`now` is the server clock's time).
    pub fn wake_for(self: &Arc<Self>, commands: &[NewCommand], now: Timestamp) {
        for command in commands {
            if command.not_before <= now {
                self.wake(&command.udid);
            } else {
                self.wake_later(&command.udid, command.not_before.since(now));
            }
        }
    }

    /// Wakes a device after `delay`.
    pub fn wake_later(self: &Arc<Self>, udid: &Udid, delay: std::time::Duration) {
        let hub = self.clone();
        let udid = udid.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            hub.wake(&udid);
        });
    }

    /// Devices connected now.
    pub fn connected(&self) -> usize {
        self.connections.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Whether a device is connected now.
    pub fn is_connected(&self, udid: &Udid) -> bool {
        self.connections
            .lock()
            .map(|c| c.contains_key(udid))
            .unwrap_or(false)
    }

    /// Wake frames sent so far.
    pub fn wakes_sent(&self) -> u64 {
        self.wakes_sent.load(Ordering::Relaxed)
    }

    /// Drops a device's push connection (as a network cut would).
    pub fn disconnect(&self, udid: &Udid) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(udid);
    }

    /// Counts a wake frame written to a device.
    pub(super) fn count_wake(&self) {
        self.wakes_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn register(&self, udid: &Udid) -> (u64, mpsc::Receiver<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(1);
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(udid.clone(), (id, tx));
        (id, rx)
    }

    pub(super) fn unregister(&self, udid: &Udid, id: u64) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if connections
            .get(udid)
            .is_some_and(|(current, _)| *current == id)
        {
            connections.remove(udid);
        }
    }
}
