//! Rate limits per source address (sans-IO: the caller passes `now`): a token bucket per
//! address for enrollments, and one for failed authentications (admin tokens and device
//! certificates). An address over its limit is told when to come back. The table of
//! addresses is bounded: when full, addresses whose bucket has refilled are forgotten
//! first, then the table is cleared rather than grown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many events an address may cause: `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained events per second; 0 turns the limit off.
    pub per_second: f64,
    /// Events allowed at once.
    pub burst: f64,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Self = Self {
        per_second: 0.0,
        burst: 0.0,
    };
}

/// Most addresses remembered at once.
const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One limit over all addresses.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// A limiter with `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event from `addr` at `now`: `Ok` if allowed, else how long until the
    /// next one would be.
    pub fn take(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&addr) {
            let rate = self.rate;
            buckets.retain(|_, b| refilled(rate, *b, now) < rate.burst);
            if buckets.len() >= MAX_ADDRESSES {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(addr).or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        let tokens = refilled(self.rate, *bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64(
                (1.0 - tokens) / self.rate.per_second,
            ))
        }
    }

    /// Whether `addr` is over its limit now, without counting an event.
    pub fn exceeded(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        if self.rate.per_second <= 0.0 {
            return None;
        }
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let tokens = buckets
            .get(&addr)
            .map_or(self.rate.burst, |b| refilled(self.rate, *b, now));
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / self.rate.per_second))
    }
}

fn refilled(rate: Rate, bucket: Bucket, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate.per_second).min(rate.burst)
}

/// The limits the server applies.
#[derive(Debug)]
pub struct RateLimits {
    /// Enrollment requests per address.
    pub enrollment: RateLimiter,
    /// Failed admin or device authentications per address.
    pub failed_auth: RateLimiter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_then_a_wait() {
        let limiter = RateLimiter::new(Rate {
            per_second: 2.0,
            burst: 3.0,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take(a, t0).is_ok());
        }
        let wait = limiter.take(a, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(
            limiter.take(b, t0).is_ok(),
            "another address is not affected"
        );
        assert!(limiter.exceeded(a, t0).is_some());
        let later = t0 + Duration::from_millis(500);
        assert!(
            limiter.take(a, later).is_ok(),
            "one more after half a second"
        );
        assert!(limiter.take(a, later).is_err());
        assert!(limiter.take(a, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn unlimited_never_refuses() {
        let limiter = RateLimiter::new(Rate::UNLIMITED);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| limiter.take(a, t0).is_ok()));
    }
}
