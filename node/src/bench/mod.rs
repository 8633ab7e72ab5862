//! `tenure bench …`: benchmark programs that print figures (JSON keys carry their unit).
//! They measure; they never assert a target.

pub mod federation;
pub mod gossip;
pub mod produce;
pub mod produce_simulated;
pub mod stackerdb;
pub mod validate;

use std::time::Duration;

/// Nearest-rank percentile `p` (0–100) of `samples`, which need not be sorted.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Milliseconds with microsecond precision, for reports.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = millis(&[5, 1, 4, 2, 3]);
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(3)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn p99_of_a_hundred_is_the_99th() {
        let samples = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
    }
}
