//! Penalties for peers that send gossip failing verification: a forged or tampered
//! signature, a message that does not decode on its versioned topic (a new wire format
//! gets a new topic, so version skew never looks like this), a status out of bounds. An honest node never sends one (it verifies before it forwards), so a few in
//! a short time get the peer banned: disconnected and refused for a while. Sans-io: the
//! control plane feeds it strikes and the time, and acts on what it returns.

use libp2p::PeerId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Strikes within [`WINDOW`] that get a peer banned.
pub const LIMIT: usize = 5;
/// The window strikes are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a ban lasts.
pub const BAN: Duration = Duration::from_secs(600);
/// Most peers tracked at once (memory bound); the least recently struck are forgotten.
pub const MAX_TRACKED: usize = 4096;

/// What a strike led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the peer stays.
    Noted,
    /// The peer is banned from now until `until`.
    Ban {
        /// End of the ban.
        until: Instant,
    },
}

/// One peer's record.
#[derive(Debug, Clone, Default)]
struct Record {
    recent: VecDeque<Instant>,
    total: u64,
    banned_until: Option<Instant>,
    last: Option<Instant>,
}

/// A peer's record as reported in status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The peer.
    pub peer: PeerId,
    /// Messages of it rejected so far.
    pub rejected: u64,
    /// Banned until then, if banned now.
    pub banned_until: Option<Instant>,
}

/// Every peer's strikes.
#[derive(Debug, Default)]
pub struct Strikes {
    records: HashMap<PeerId, Record>,
    rejected_total: u64,
    bans_total: u64,
}

impl Strikes {
    /// Counts a rejected message from `peer` at `now`.
    pub fn strike(&mut self, peer: PeerId, now: Instant) -> Verdict {
        self.rejected_total += 1;
        if !self.records.contains_key(&peer) && self.records.len() >= MAX_TRACKED {
            self.forget_one();
        }
        let r = self.records.entry(peer).or_default();
        r.total += 1;
        r.last = Some(now);
        if let Some(until) = r.banned_until.filter(|u| now < *u) {
            return Verdict::Ban { until };
        }
        while r
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > WINDOW)
        {
            r.recent.pop_front();
        }
        r.recent.push_back(now);
        if r.recent.len() >= LIMIT {
            r.recent.clear();
            let until = now + BAN;
            r.banned_until = Some(until);
            self.bans_total += 1;
            return Verdict::Ban { until };
        }
        Verdict::Noted
    }

    /// Bans that ended by `now`: the peers to let back in. Records with nothing recent
    /// are dropped.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let mut ended = vec![];
        self.records.retain(|peer, r| {
            if r.banned_until.is_some_and(|u| u <= now) {
                r.banned_until = None;
                ended.push(*peer);
            }
            let quiet = r
                .last
                .is_none_or(|t| now.saturating_duration_since(t) > WINDOW);
            r.banned_until.is_some() || !quiet
        });
        ended
    }

    /// True if `peer` is banned at `now`.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.records
            .get(peer)
            .and_then(|r| r.banned_until)
            .is_some_and(|u| now < u)
    }

    /// Messages rejected so far, and bans imposed.
    pub fn totals(&self) -> (u64, u64) {
        (self.rejected_total, self.bans_total)
    }

    /// The peers struck recently or banned, most rejected first.
    pub fn report(&self, now: Instant) -> Vec<Report> {
        let mut all: Vec<Report> = self
            .records
            .iter()
            .map(|(peer, r)| Report {
                peer: *peer,
                rejected: r.total,
                banned_until: r.banned_until.filter(|u| now < *u),
            })
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.rejected));
        all
    }

    fn forget_one(&mut self) {
        let oldest = self
            .records
            .iter()
            .filter(|(_, r)| r.banned_until.is_none())
            .min_by_key(|(_, r)| r.last)
            .map(|(p, _)| *p);
        if let Some(p) = oldest {
            self.records.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_rejections_in_a_window_ban_for_a_while() {
        let (mut s, t0) = (Strikes::default(), Instant::now());
        let p = PeerId::random();
        for i in 0..LIMIT - 1 {
            assert_eq!(
                s.strike(p, t0 + Duration::from_secs(i as u64)),
                Verdict::Noted
            );
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(s.strike(p, at), Verdict::Ban { until: at + BAN });
        assert!(s.is_banned(&p, at + BAN - Duration::from_secs(1)));
        assert_eq!(s.totals(), (LIMIT as u64, 1));
        assert!(s.expire(at + BAN - Duration::from_secs(1)).is_empty());
        assert_eq!(s.expire(at + BAN), vec![p]);
        assert!(!s.is_banned(&p, at + BAN));
    }

    #[test]
    fn strikes_spread_beyond_the_window_do_not_ban() {
        let (mut s, t0) = (Strikes::default(), Instant::now());
        let p = PeerId::random();
        for i in 0..3 * LIMIT {
            // Just over a window's share apart: never LIMIT within one window.
            let gap = WINDOW / (LIMIT as u32 - 1) + Duration::from_secs(1);
            let at = t0 + gap * i as u32;
            assert_eq!(s.strike(p, at), Verdict::Noted, "strike {i}");
        }
        assert_eq!(s.report(t0)[0].rejected, 3 * LIMIT as u64);
    }

    #[test]
    fn tracking_is_bounded() {
        let (mut s, t0) = (Strikes::default(), Instant::now());
        for i in 0..MAX_TRACKED + 10 {
            s.strike(PeerId::random(), t0 + Duration::from_millis(i as u64));
        }
        assert!(s.records.len() <= MAX_TRACKED);
        assert_eq!(s.expire(t0 + WINDOW * 2), vec![]);
        assert!(s.records.is_empty());
    }
}
