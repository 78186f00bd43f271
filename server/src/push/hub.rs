//! The push hub: the devices connected to this replica's push endpoint, and waking
//! them. Whenever a command is queued for a device, the server wakes it and the device
//! checks in at once.
//!
//! Wake-ups are coalesced: each device has a one-slot channel, so any number of wakes
//! while one is pending is one wake. A device that is not connected gets one wake when
//! it (re)registers, which covers everything queued meanwhile.
//!
//! Wake-ups are paced: at most [`MAX_WOKEN`] devices are woken and not yet done with
//! their session at once; the others wait their turn in order and are woken as sessions
//! end. Ten thousand devices woken at once would each wait out the whole queue of the
//! others' requests (and open ten thousand connections); paced, the first are served
//! at once and the rest follow at the rate the server serves them. A device woken for
//! a follow-up that fell due (an install to verify) goes ahead of devices not yet
//! started: it is one session from done, so the first devices finish at once instead
//! of after the whole fleet's first sessions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchard_protocol::Udid;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::store::{NewCommand, Timestamp};

/// Most devices woken and not yet done with their session at once. Enough to keep the
/// server busy; more only lengthens each request's wait, and with it the wait of the
/// devices one session from done (at 10,000 devices, 256 put the first device at
/// 1.1-1.2 s, 128 at 0.8-0.9 s, with the same rate over the fleet).
const MAX_WOKEN: usize = 128;
/// A woken device that has not ended its session within this long gives up its turn
/// (its wake was lost, or it went offline).
const WOKEN_TURN: Duration = Duration::from_secs(30);

/// Devices connected to this server's push endpoint.
#[derive(Debug, Default)]
pub struct PushHub {
    connections: Mutex<HashMap<Udid, (u64, mpsc::Sender<()>)>>,
    /// Other replicas, when several share PostgreSQL: UDIDs to wake elsewhere.
    remote: std::sync::OnceLock<mpsc::UnboundedSender<Udid>>,
    next_id: AtomicU64,
    wakes_sent: AtomicU64,
    turns: Mutex<Turns>,
}

/// Who is woken, and who waits to be.
#[derive(Debug, Default)]
struct Turns {
    /// Woken devices and when.
    woken: HashMap<Udid, Instant>,
    /// Waiting to be woken, in order.
    waiting: VecDeque<Udid>,
    /// Waiting with a follow-up due: woken before `waiting`.
    ahead: VecDeque<Udid>,
    /// Everyone waiting (a device in both queues is woken once).
    queued: HashSet<Udid>,
    /// Whether a task gives back expired turns while devices wait.
    sweeping: bool,
}

impl Turns {
    /// Gives back the turns of devices woken longer than [`WOKEN_TURN`] ago.
    fn expire(&mut self, now: Instant) {
        self.woken
            .retain(|_, at| now.duration_since(*at) < WOKEN_TURN);
    }

    /// The waiting devices that may be woken now, their turns taken.
    fn next(&mut self, now: Instant) -> Vec<Udid> {
        let mut out = Vec::new();
        while self.woken.len() < MAX_WOKEN {
            let Some(udid) = self.ahead.pop_front().or_else(|| self.waiting.pop_front()) else {
                break;
            };
            if !self.queued.remove(&udid) {
                // Woken already from the other queue.
                continue;
            }
            self.woken.insert(udid.clone(), now);
            out.push(udid);
        }
        out
    }
}

impl PushHub {
    /// Wakes a device: here if it is connected here, else through the other replicas.
    pub fn wake(self: &Arc<Self>, udid: &Udid) {
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

    /// Wakes a device connected to this replica, now or when its turn comes; false when
    /// it is not connected here (it gets a wake-up when it reconnects).
    pub fn wake_local(self: &Arc<Self>, udid: &Udid) -> bool {
        self.wake_paced(udid, false)
    }

    /// [`Self::wake_local`]; `ahead`: the device goes before those waiting for a first
    /// session.
    fn wake_paced(self: &Arc<Self>, udid: &Udid, ahead: bool) -> bool {
        if !self.is_connected(udid) {
            return false;
        }
        let now = Instant::now();
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        // A device in its session already is woken again, so it sees the new command.
        let in_session = turns.woken.contains_key(udid);
        if !in_session && turns.woken.len() >= MAX_WOKEN {
            turns.expire(now);
        }
        if in_session || turns.woken.len() < MAX_WOKEN {
            turns.woken.entry(udid.clone()).or_insert(now);
            drop(turns);
            return self.send_wake(udid);
        }
        let new = turns.queued.insert(udid.clone());
        if ahead {
            turns.ahead.push_back(udid.clone());
        } else if new {
            turns.waiting.push_back(udid.clone());
        }
        if !turns.sweeping {
            turns.sweeping = true;
            let hub = self.clone();
            tokio::spawn(async move { hub.sweep().await });
        }
        true
    }

    /// Sends the wake frame; false when the device's connection is gone.
    fn send_wake(&self, udid: &Udid) -> bool {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        match connections.get(udid) {
            // A full slot means a wake is already pending: coalesced.
            Some((_, tx)) => !matches!(tx.try_send(()), Err(mpsc::error::TrySendError::Closed(_))),
            None => false,
        }
    }

    /// A device ended its session (nothing more to hand out) or left: its turn goes to
    /// the next device waiting.
    pub fn session_ended(&self, udid: &Udid) {
        let next = {
            let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            if turns.woken.remove(udid).is_none() {
                return;
            }
            turns.next(Instant::now())
        };
        for udid in next {
            self.send_wake(&udid);
        }
    }

    /// While devices wait, gives back expired turns every second, so lost wakes cannot
    /// keep the others waiting.
    async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (next, done) = {
                let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                turns.expire(now);
                let next = turns.next(now);
                let done = turns.queued.is_empty();
                if done {
                    turns.sweeping = false;
                }
                (next, done)
            };
            for udid in next {
                self.send_wake(&udid);
            }
            if done {
                return;
            }
        }
    }

    /// Whether the device was woken and has not ended its session yet (it was woken
    /// because something was queued for it).
    pub fn is_woken(&self, udid: &Udid) -> bool {
        self.turns
            .lock()
            .map(|t| t.woken.contains_key(udid))
            .unwrap_or(false)
    }

    /// Devices waiting for their turn to be woken.
    pub fn waiting(&self) -> usize {
        self.turns.lock().map(|t| t.queued.len()).unwrap_or(0)
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

    /// Wakes a device after `delay`, for a follow-up then due: ahead of devices
    /// waiting for a first session.
    pub fn wake_later(self: &Arc<Self>, udid: &Udid, delay: std::time::Duration) {
        let hub = self.clone();
        let udid = udid.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if !hub.wake_paced(&udid, true)
                && let Some(remote) = hub.remote.get()
            {
                let _ = remote.send(udid);
            }
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
            drop(connections);
            self.session_ended(udid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registers `n` devices; returns their UDIDs and wake receivers.
    fn fleet(hub: &PushHub, n: usize) -> Vec<(Udid, mpsc::Receiver<()>)> {
        (0..n)
            .map(|i| {
                let udid = Udid(format!("D{i:05}"));
                let (_, rx) = hub.register(&udid);
                (udid, rx)
            })
            .collect()
    }

    fn woken(devices: &mut [(Udid, mpsc::Receiver<()>)]) -> Vec<usize> {
        devices
            .iter_mut()
            .enumerate()
            .filter_map(|(i, (_, rx))| rx.try_recv().is_ok().then_some(i))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_are_paced_and_each_ended_session_wakes_the_next_in_order() {
        let hub = Arc::new(PushHub::default());
        let mut devices = fleet(&hub, MAX_WOKEN + 3);
        for (udid, _) in &devices {
            assert!(hub.wake_local(udid), "connected here");
        }
        assert_eq!(woken(&mut devices), (0..MAX_WOKEN).collect::<Vec<_>>());
        assert_eq!(hub.waiting(), 3);
        // A device in its session is woken again at once: it must see a new command.
        hub.wake_local(&devices[0].0.clone());
        assert_eq!(woken(&mut devices), [0]);
        // Each session that ends lets the next device in, in order.
        hub.session_ended(&devices[5].0.clone());
        assert_eq!(woken(&mut devices), [MAX_WOKEN]);
        // A device leaving the push channel gives its turn back too.
        let (udid, _) = &devices[7];
        let id = hub.connections.lock().unwrap().get(udid).unwrap().0;
        hub.unregister(&udid.clone(), id);
        assert_eq!(woken(&mut devices), [MAX_WOKEN + 1]);
        // A device that never ends its session gives its turn back after WOKEN_TURN.
        tokio::time::sleep(WOKEN_TURN + Duration::from_secs(2)).await;
        assert_eq!(woken(&mut devices), [MAX_WOKEN + 2]);
        assert_eq!(hub.waiting(), 0);
        // Not connected here: not this hub's to wake.
        assert!(!hub.wake_local(&Udid("ELSEWHERE".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_with_a_follow_up_due_goes_ahead_of_first_sessions() {
        let hub = Arc::new(PushHub::default());
        let mut devices = fleet(&hub, MAX_WOKEN + 3);
        for (udid, _) in &devices {
            hub.wake_local(udid);
        }
        assert_eq!(woken(&mut devices).len(), MAX_WOKEN);
        // The last device waiting has a follow-up falling due: it goes first, and is
        // woken once though it waits in both queues.
        let due = devices[MAX_WOKEN + 2].0.clone();
        hub.wake_later(&due, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(hub.waiting(), 3);
        hub.session_ended(&devices[0].0.clone());
        assert_eq!(woken(&mut devices), [MAX_WOKEN + 2]);
        hub.session_ended(&devices[1].0.clone());
        hub.session_ended(&devices[2].0.clone());
        assert_eq!(woken(&mut devices), [MAX_WOKEN, MAX_WOKEN + 1]);
        assert_eq!(hub.waiting(), 0);
        hub.session_ended(&devices[3].0.clone());
        assert_eq!(woken(&mut devices), Vec::<usize>::new());
    }
}
