//! Per-peer token buckets on received messages.

use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// A token bucket: `per_second` tokens flow in, at most `burst` are held.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    /// Takes one token; `false` when the bucket is empty.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts events in fixed windows: `record` returns the count in the current window.
#[derive(Clone, Debug)]
pub(crate) struct WindowCounter {
    window: Duration,
    start: Instant,
    count: u32,
}

impl WindowCounter {
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        WindowCounter {
            window,
            start: now,
            count: 0,
        }
    }

    pub(crate) fn record(&mut self, now: Instant) -> u32 {
        if now.saturating_duration_since(self.start) > self.window {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateLimit {
                per_second: 10.0,
                burst: 5,
            },
            t0,
        );
        assert!((0..5).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        // 100 ms bring one token back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_take(t1));
        assert!(!b.try_take(t1));
        // A long pause refills at most the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(t2)).count(), 5);
    }

    #[test]
    fn a_window_counter_restarts_after_its_window() {
        let t0 = Instant::now();
        let mut w = WindowCounter::new(Duration::from_secs(1), t0);
        assert_eq!(w.record(t0), 1);
        assert_eq!(w.record(t0 + Duration::from_millis(500)), 2);
        assert_eq!(w.record(t0 + Duration::from_millis(1_600)), 1);
    }
}
