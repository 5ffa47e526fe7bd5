//! In-process benchmarks, each against a reference measured in the same run, A B A B
//! (these machines are shared and noisy: only same-run ratios mean anything). Each prints
//! one JSON object on stdout; `scripts/bench.sh` collects them with the nginx figures.
//!
//! - [`relay`]: a segment pull through Shoal's data plane (request, QUIC transfer, blake3
//!   check, cache) against quinn's plain bulk transfer with the same TLS and transport.
//! - [`propagation`]: time from the end of an ingest PUT until every node holds the
//!   segment, and origin uploads per segment, against the fan-out tree's lower bound.
//! - [`first_byte`]: a viewer's time to first byte on a node that must pull the segment
//!   against one that holds it.

pub mod first_byte;
pub mod propagation;
pub mod relay;

use std::time::Duration;

/// The ingest key of benchmark meshes.
pub const KEY: &str = "bench-key";

/// Percentile (0..=100) of `samples`, nearest rank.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (s.len() as f64 - 1.0)).round() as usize;
    s[rank.min(s.len() - 1)]
}

/// Milliseconds as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Deterministic, incompressible-enough test bytes, distinct per `seed`.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 100.0), 5.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_ne!(payload(8, 1), payload(8, 2));
    }
}
