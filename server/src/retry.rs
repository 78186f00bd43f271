//! Back-off for work Apple refused or could not take (sans-IO: the caller passes
//! `now`): after each failure of a key the next attempt waits twice as long, from
//! `first` up to `most`; a success forgets the key. Kept in memory: a restarted server
//! tries once more at once, then backs off again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Timestamp;

/// Most keys remembered; beyond it the oldest failures are forgotten (tried again).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    retry_at: Timestamp,
}

/// Back-off per key.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    most: Duration,
    keys: Mutex<HashMap<String, Failures>>,
}

impl Backoff {
    /// Waits `first` after the first failure, doubling up to `most`.
    pub fn new(first: Duration, most: Duration) -> Self {
        Self {
            first,
            most,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may be tried at `now`.
    pub fn due(&self, key: &str, now: Timestamp) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(key).is_none_or(|f| now >= f.retry_at)
    }

    /// Records a failure of `key` at `now`; returns when it may be tried again.
    pub fn failed(&self, key: &str, now: Timestamp) -> Timestamp {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            let oldest = keys
                .iter()
                .min_by_key(|(_, f)| f.retry_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                keys.remove(&k);
            }
        }
        let count = keys.get(key).map_or(0, |f| f.count).saturating_add(1);
        let wait = self
            .first
            .saturating_mul(2u32.saturating_pow(count.saturating_sub(1).min(20)))
            .min(self.most);
        let retry_at = now + wait;
        keys.insert(key.to_owned(), Failures { count, retry_at });
        retry_at
    }

    /// Forgets `key` after a success.
    pub fn succeeded(&self, key: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(key);
    }
}

/// The back-off key of a user's VPP invitation under a token (a device refused it).
pub fn invitation_key(token_id: &str, user_id: &str) -> String {
    format!("invitation:{token_id}:{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_most_and_a_success_forgets() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(30));
        let t0 = Timestamp::UNIX_EPOCH;
        assert!(b.due("k", t0));
        let secs = |s| t0 + Duration::from_secs(s);
        let retries: Vec<Timestamp> = (0..5).map(|_| b.failed("k", t0)).collect();
        assert_eq!(retries, [secs(5), secs(10), secs(20), secs(30), secs(30)]);
        assert!(!b.due("k", t0 + Duration::from_secs(29)));
        assert!(b.due("k", t0 + Duration::from_secs(30)));
        assert!(b.due("other", t0), "keys are apart");
        b.succeeded("k");
        assert!(b.due("k", t0));
        assert_eq!(b.failed("k", t0), secs(5));
    }
}
