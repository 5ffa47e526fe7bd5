//! Viewer activity per stream: who asked for it recently. A stream with viewers is
//! prefetched as its segments are announced.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most distinct viewers tracked per stream; past this the stream simply counts as
/// watched (bounds memory against a flood of clients).
pub const MAX_TRACKED: usize = 100_000;

/// Recent viewers of one stream, keyed by an opaque viewer key (e.g. the client address).
#[derive(Debug, Default)]
pub struct Viewers {
    seen: HashMap<u128, Instant>,
}

impl Viewers {
    /// Records a request from `viewer`; true if it is a new viewer.
    pub fn touch(&mut self, viewer: u128, now: Instant) -> bool {
        if self.seen.len() < MAX_TRACKED || self.seen.contains_key(&viewer) {
            return self.seen.insert(viewer, now).is_none();
        }
        false
    }

    /// Forgets viewers idle for longer than `idle`.
    pub fn expire(&mut self, idle: Duration, now: Instant) {
        self.seen
            .retain(|_, t| now.saturating_duration_since(*t) <= idle);
    }

    /// True if `viewer` is a current viewer.
    pub fn contains(&self, viewer: u128) -> bool {
        self.seen.contains_key(&viewer)
    }

    /// Current viewer count.
    pub fn count(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_expires() {
        let mut v = Viewers::default();
        let t0 = Instant::now();
        v.touch(1, t0);
        v.touch(2, t0);
        v.touch(1, t0 + Duration::from_secs(5));
        assert_eq!(v.count(), 2);
        v.expire(Duration::from_secs(3), t0 + Duration::from_secs(6));
        assert_eq!(v.count(), 1);
    }
}
