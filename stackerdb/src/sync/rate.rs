//! Token buckets: per-peer rate limits on pulls served and bytes pushed.

use std::time::Instant;

/// A token bucket refilled continuously.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilled at `per_second`.
    pub fn new(capacity: f64, per_second: f64) -> Self {
        TokenBucket {
            capacity,
            per_second,
            tokens: capacity,
            updated: None,
        }
    }

    /// Takes `cost` tokens if there are that many at `now`.
    pub fn try_take(&mut self, cost: f64, now: Instant) -> bool {
        if let Some(updated) = self.updated {
            let elapsed = now.saturating_duration_since(updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        }
        self.updated = Some(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_empties_and_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(10.0, 5.0);
        let now = Instant::now();
        assert!(bucket.try_take(10.0, now));
        assert!(!bucket.try_take(1.0, now));
        assert!(bucket.try_take(5.0, now + Duration::from_secs(1)));
        assert!(!bucket.try_take(1.0, now + Duration::from_secs(1)));
        // Never above capacity.
        assert!(!bucket.try_take(11.0, now + Duration::from_secs(100)));
    }
}
