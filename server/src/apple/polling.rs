//! How often Apple's asynchronous events are asked about (sans-IO: the caller passes
//! `now`). Apple asks for at least 30 seconds between polls of a pending event: an
//! event is polled again only after the spacing (the server's event poll interval),
//! or at once after a notification arrived, which says some event finished. An event
//! pending for too long is submitted again (Apple's requests are idempotent).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Timestamp;

/// Most events remembered; beyond it the oldest polls are forgotten (polled again).
const MAX_EVENTS: usize = 100_000;

#[derive(Debug, Default)]
struct Polls {
    last: HashMap<String, Timestamp>,
    notified_at: Option<Timestamp>,
}

/// The last poll of each pending event.
#[derive(Debug, Default)]
pub struct EventPolls(Mutex<Polls>);

impl EventPolls {
    /// Whether `event_id` may be polled at `now`, `spacing` after its last poll.
    pub fn due(&self, event_id: &str, now: Timestamp, spacing: Duration) -> bool {
        let polls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match polls.last.get(event_id) {
            None => true,
            Some(last) => now >= *last + spacing || polls.notified_at.is_some_and(|n| n > *last),
        }
    }

    /// Records a poll of `event_id` at `now`.
    pub fn polled(&self, event_id: &str, now: Timestamp) {
        let mut polls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if polls.last.len() >= MAX_EVENTS && !polls.last.contains_key(event_id) {
            let oldest = polls
                .last
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                polls.last.remove(&k);
            }
        }
        polls.last.insert(event_id.to_owned(), now);
    }

    /// Forgets a finished event.
    pub fn finished(&self, event_id: &str) {
        let mut polls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        polls.last.remove(event_id);
    }

    /// Apple notified at `now` that events finished: every pending event may be polled.
    pub fn notified(&self, now: Timestamp) {
        let mut polls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        polls.notified_at = Some(now);
    }
}

/// How long an event may stay pending before its request is submitted again.
pub const RESUBMIT_AFTER: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn a_pending_event_is_polled_once_per_spacing_unless_apple_notifies() {
        let clock = ManualClock::new(Timestamp::UNIX_EPOCH);
        let polls = EventPolls::default();
        let spacing = Duration::from_secs(30);
        assert!(polls.due("e", clock.now(), spacing), "never polled");
        polls.polled("e", clock.now());
        clock.advance(Duration::from_secs(29));
        assert!(!polls.due("e", clock.now(), spacing));
        assert!(polls.due("other", clock.now(), spacing), "events are apart");
        clock.advance(Duration::from_secs(1));
        assert!(polls.due("e", clock.now(), spacing));
        polls.polled("e", clock.now());
        clock.advance(Duration::from_secs(5));
        polls.notified(clock.now());
        assert!(
            polls.due("e", clock.now(), spacing),
            "a notification says: look now"
        );
        polls.polled("e", clock.now());
        clock.advance(Duration::from_secs(1));
        assert!(!polls.due("e", clock.now(), spacing), "once");
        polls.finished("e");
        assert!(polls.due("e", clock.now(), spacing));
    }
}
