//! Jittered exponential back-off, as a device waits before it tries its server again:
//! a fleet that failed together does not come back together.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `start` up to `max`, each jittered by ±50 %.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off starting at `start`, doubling up to `max`.
    pub fn new(start: Duration, max: Duration) -> Self {
        Self {
            start,
            max,
            next: start,
        }
    }

    /// After a failure: how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let delay = self.next.mul_f64(rand::rng().random_range(0.5..1.5));
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// After a success: the next failure waits the shortest delay again.
    pub fn succeeded(&mut self) {
        self.next = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_the_jitter_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        for expected in [1.0, 2.0, 4.0, 4.0] {
            let d = b.failed().as_secs_f64();
            assert!(
                (expected * 0.5..=expected * 1.5).contains(&d),
                "{d} s for {expected} s"
            );
        }
        b.succeeded();
        assert!(b.failed() <= Duration::from_millis(1500));
    }
}
