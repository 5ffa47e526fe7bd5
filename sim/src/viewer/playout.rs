//! A player's playout buffer in virtual time: media arrives in segments, plays out at
//! real speed, and the player stalls when the buffer runs dry. Pure: no clock, no I/O,
//! so the same model serves a real HTTP viewer and, later, a virtual-time simulation.

use std::time::{Duration, Instant};

/// Buffer needed before playback starts (hls.js starts with about one segment; we ask
/// for 2 s of media, one of Shoal's usual segments).
pub const START_BUFFER: Duration = Duration::from_secs(2);
/// Buffer needed to resume after a stall.
pub const RESUME_BUFFER: Duration = Duration::from_secs(2);

/// Where playback is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the first media.
    Starting,
    /// Playing.
    Playing,
    /// Out of media, waiting to resume.
    Stalled,
}

/// One viewer's playout.
#[derive(Debug, Clone)]
pub struct Playout {
    joined: Instant,
    last: Instant,
    state: State,
    buffer: Duration,
    started_after: Option<Duration>,
    stalls: u32,
    stalled_for: Duration,
    stall_began: Option<Instant>,
    segments: u32,
    late_segments: u32,
}

impl Playout {
    /// A viewer who pressed play at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            joined: now,
            last: now,
            state: State::Starting,
            buffer: Duration::ZERO,
            started_after: None,
            stalls: 0,
            stalled_for: Duration::ZERO,
            stall_began: None,
            segments: 0,
            late_segments: 0,
        }
    }

    /// Time passes: the buffer drains while playing; an empty buffer is a stall.
    pub fn tick(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        if self.state != State::Playing {
            return;
        }
        if elapsed < self.buffer {
            self.buffer -= elapsed;
        } else {
            let dry_at = now - (elapsed - self.buffer);
            self.buffer = Duration::ZERO;
            self.state = State::Stalled;
            self.stalls += 1;
            self.stall_began = Some(dry_at);
        }
    }

    /// A segment of `duration` finished downloading at `now`.
    pub fn segment(&mut self, duration: Duration, now: Instant) {
        self.tick(now);
        self.segments += 1;
        if self.state == State::Stalled {
            self.late_segments += 1;
        }
        self.buffer += duration;
        match self.state {
            State::Starting if self.buffer >= START_BUFFER => {
                self.state = State::Playing;
                self.started_after = Some(now.saturating_duration_since(self.joined));
            }
            State::Stalled if self.buffer >= RESUME_BUFFER => {
                self.state = State::Playing;
                if let Some(began) = self.stall_began.take() {
                    self.stalled_for += now.saturating_duration_since(began);
                }
            }
            _ => {}
        }
    }

    /// The figures so far (a stall still running counts up to `now`).
    pub fn figures(&self, now: Instant) -> Figures {
        let running = self
            .stall_began
            .map_or(Duration::ZERO, |b| now.saturating_duration_since(b));
        Figures {
            startup: self.started_after,
            stalls: self.stalls,
            stalled_for: self.stalled_for + running,
            segments: self.segments,
            on_time: self.segments - self.late_segments,
            state: self.state,
        }
    }
}

/// What one viewer experienced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Time from pressing play to the first frame (None: never started).
    pub startup: Option<Duration>,
    /// Times playback ran dry.
    pub stalls: u32,
    /// Total time stalled.
    pub stalled_for: Duration,
    /// Segments downloaded.
    pub segments: u32,
    /// Segments that arrived while playback was not stalled.
    pub on_time: u32,
    /// Where playback is now.
    pub state: State,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(2);

    #[test]
    fn starts_after_one_segment_and_plays_smoothly_when_fed_in_time() {
        let t0 = Instant::now();
        let mut p = Playout::new(t0);
        p.segment(S, t0 + Duration::from_millis(300));
        assert_eq!(p.figures(t0).startup, Some(Duration::from_millis(300)));
        for i in 1..10u64 {
            p.segment(
                S,
                t0 + Duration::from_millis(300) + S * i as u32 - Duration::from_millis(100),
            );
        }
        let f = p.figures(t0 + Duration::from_secs(19));
        assert_eq!((f.stalls, f.segments, f.on_time), (0, 10, 10));
        assert_eq!(f.state, State::Playing);
    }

    #[test]
    fn a_late_segment_is_a_stall_of_measured_length() {
        let t0 = Instant::now();
        let mut p = Playout::new(t0);
        p.segment(S, t0);
        // Buffer runs dry at t0+2s; the next segment lands at t0+3.5s.
        p.segment(S, t0 + Duration::from_millis(3500));
        let f = p.figures(t0 + Duration::from_millis(3500));
        assert_eq!(f.stalls, 1);
        assert_eq!(f.stalled_for, Duration::from_millis(1500));
        assert_eq!(f.on_time, 1);
        assert_eq!(f.state, State::Playing);
    }

    #[test]
    fn never_fed_never_starts() {
        let t0 = Instant::now();
        let p = Playout::new(t0);
        let f = p.figures(t0 + Duration::from_secs(10));
        assert_eq!((f.startup, f.stalls, f.state), (None, 0, State::Starting));
    }
}
