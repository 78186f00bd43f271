//! When devices were last heard from, held in memory until written in a batch (the
//! device channel notes, a task writes): one write for many Idle check-ins.

use std::collections::HashMap;
use std::sync::Mutex;

use orchard_protocol::Udid;

use crate::clock::Timestamp;

/// Devices seen since the last write, with the latest time each.
#[derive(Debug, Default)]
pub struct LastSeen(Mutex<HashMap<Udid, Timestamp>>);

impl LastSeen {
    /// Notes that `udid` was heard from at `at`.
    pub fn note(&self, udid: &Udid, at: Timestamp) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = seen.entry(udid.clone()).or_insert(at);
        if *entry < at {
            *entry = at;
        }
    }

    /// Takes every noted time, for one write.
    pub fn take(&self) -> Vec<(Udid, Timestamp)> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_latest_time_per_device_is_kept_until_taken() {
        let seen = LastSeen::default();
        let t = |s| Timestamp::UNIX_EPOCH + Duration::from_secs(s);
        seen.note(&"A".into(), t(2));
        seen.note(&"A".into(), t(1));
        seen.note(&"B".into(), t(3));
        let mut taken = seen.take();
        taken.sort();
        assert_eq!(taken, vec![("A".into(), t(2)), ("B".into(), t(3))]);
        assert!(seen.take().is_empty());
    }
}
