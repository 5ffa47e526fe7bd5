//! The bitrate cap on one encoder connection (`--ingest-max-bitrate`), whatever the
//! protocol: bytes counted over windows of [`WINDOW`], judged when a window ends, and cut
//! early when a window's bytes pass twice what the whole window allows (a flood does
//! not get four seconds).

use std::time::{Duration, Instant};

/// The span a connection's bitrate is judged over: long enough for a keyframe burst,
/// short enough to stop a flood quickly.
pub const WINDOW: Duration = Duration::from_secs(4);

/// One connection's byte count in its current window.
#[derive(Debug)]
pub struct RateWindow {
    max_bps: u64,
    since: Instant,
    bytes: u64,
}

impl RateWindow {
    /// A window starting `now`, for a cap of `max_bps` bits per second.
    pub fn new(max_bps: u64, now: Instant) -> Self {
        Self {
            max_bps,
            since: now,
            bytes: 0,
        }
    }

    /// Counts `n` bytes received at `now`. `Err(bps)`: the connection is over its cap.
    pub fn add(&mut self, n: u64, now: Instant) -> Result<(), u64> {
        self.bytes = self.bytes.saturating_add(n);
        let span = now.saturating_duration_since(self.since);
        let bps = || self.bytes.saturating_mul(8000) / span.as_millis().max(1) as u64;
        if span >= WINDOW {
            let rate = bps();
            if rate > self.max_bps {
                return Err(rate);
            }
            (self.since, self.bytes) = (now, 0);
        } else if self.bytes.saturating_mul(8) > self.max_bps.saturating_mul(WINDOW.as_secs() * 2) {
            return Err(bps());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judged_per_window_and_cut_early_on_a_flood() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(8_000, t0); // 1,000 bytes a second, 64,000 bits a flood
        // A burst within what a window allows, then a quiet rest: fine.
        assert_eq!(w.add(3_000, t0), Ok(()));
        assert_eq!(w.add(0, t0 + WINDOW), Ok(()));
        // A steady 1.5x the cap is judged at the window's end.
        for s in 1..4 {
            assert_eq!(w.add(1_500, t0 + WINDOW + Duration::from_secs(s)), Ok(()));
        }
        assert_eq!(w.add(1_500, t0 + 2 * WINDOW), Err(12_000));
        // A flood is cut before its window ends.
        let mut w = RateWindow::new(8_000, t0);
        assert!(w.add(8_001, t0 + Duration::from_millis(100)).is_err());
    }
}
