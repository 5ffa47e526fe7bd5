//! Viewer sessions: who watches what here, and what they cost.
//!
//! A viewer is a session, not an address: many players share one NAT address, so the
//! edge gives each player a session id it carries in its URLs, and counts, admits and
//! hands off sessions. A player that sends no session id (or drops query strings) is
//! known by its address alone.
//!
//! A session is **pending** from its admission (a playlist request) until it fetches
//! media; then it is **watching** until it goes quiet for the idle time. Only watching
//! sessions count as viewers. A pending session costs its stream's bitrate twice (the
//! player is about to fetch its first segments at once) for at most [`PENDING_TTL`]:
//! a session that never fetches media stops costing within seconds. Per address, at most
//! [`PENDING_PER_ADDR`] pending sessions cost anything and at most [`SESSIONS_PER_ADDR`]
//! sessions exist, so one client inventing session ids cannot fill a node's budget.

use shoal_protocol::stream;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most sessions tracked at once (memory bound: about 100 bytes each).
pub const MAX_SESSIONS: usize = 200_000;
/// Most sessions one address may hold at once; past this its requests count under the
/// address itself. Large enough for a campus or carrier-grade NAT in front of one edge.
pub const SESSIONS_PER_ADDR: u32 = 1_024;
/// Most pending sessions of one address that cost anything at once. A burst of real
/// players from one NAT turns pending into watching within an RTT; an invented session
/// id that never fetches media costs nothing past these few.
pub const PENDING_PER_ADDR: u32 = 4;
/// A session that fetched no media this long after admission is forgotten. Players fetch
/// their first segment right after the playlist; a few seconds cover a slow start.
pub const PENDING_TTL: Duration = Duration::from_secs(3);

/// Who is asking: the session (a key derived from its id, or the address key when it
/// has none) and the client address key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Viewer {
    /// The session key.
    pub session: u128,
    /// The client address key.
    pub addr: u128,
}

impl From<u128> for Viewer {
    /// A viewer known by its address alone.
    fn from(addr: u128) -> Self {
        Viewer {
            session: addr,
            addr,
        }
    }
}

/// One session.
#[derive(Debug, Clone)]
struct Session {
    addr: u128,
    admitted: Instant,
    last: Instant,
    /// Fetched media: a viewer.
    watching: bool,
    /// Pending and costing (within its address's [`PENDING_PER_ADDR`]).
    counted: bool,
    /// Marked to be moved to another node at its next playlist request.
    shed: bool,
}

/// Per-stream counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Sessions that fetched media.
    pub watching: usize,
    /// Pending sessions that cost.
    pub pending: usize,
}

/// Per-address counts.
#[derive(Debug, Default, Clone, Copy)]
struct AddrCounts {
    sessions: u32,
    pending: u32,
}

/// What [`Sessions::media`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// The session was watching already.
    Watching,
    /// The session just started watching; it was admitted at this time.
    Started(Instant),
    /// Not tracked (table full).
    Untracked,
}

/// Every session of this node.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: HashMap<(stream::Name, u128), Session>,
    streams: HashMap<stream::Name, Counts>,
    addrs: HashMap<u128, AddrCounts>,
}

impl Sessions {
    /// The key `viewer` is tracked under for `stream`: its session, or its address when
    /// the address holds too many sessions already.
    pub fn key(&self, stream: &stream::Name, viewer: Viewer) -> u128 {
        if viewer.session == viewer.addr
            || self
                .sessions
                .contains_key(&(stream.clone(), viewer.session))
        {
            return viewer.session;
        }
        let held = self.addrs.get(&viewer.addr).map_or(0, |a| a.sessions);
        if held >= SESSIONS_PER_ADDR {
            viewer.addr
        } else {
            viewer.session
        }
    }

    /// True if `viewer` (under [`Sessions::key`]) has a session for `stream`.
    pub fn contains(&self, stream: &stream::Name, viewer: Viewer) -> bool {
        let key = self.key(stream, viewer);
        self.sessions.contains_key(&(stream.clone(), key))
    }

    /// Admits a new session (pending); a known one is only touched.
    pub fn admit(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) {
        let key = self.key(stream, viewer);
        if let Some(s) = self.sessions.get_mut(&(stream.clone(), key)) {
            s.last = now;
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return;
        }
        let addr = self.addrs.entry(viewer.addr).or_default();
        let counted = addr.pending < PENDING_PER_ADDR;
        addr.sessions += 1;
        addr.pending += u32::from(counted);
        self.streams.entry(stream.clone()).or_default().pending += usize::from(counted);
        self.sessions.insert(
            (stream.clone(), key),
            Session {
                addr: viewer.addr,
                admitted: now,
                last: now,
                watching: false,
                counted,
                shed: false,
            },
        );
    }

    /// A playlist request of an admitted session: true if it was marked to be shed.
    pub fn playlist(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) -> bool {
        let key = self.key(stream, viewer);
        match self.sessions.get_mut(&(stream.clone(), key)) {
            Some(s) => {
                s.last = now;
                s.shed
            }
            None => false,
        }
    }

    /// A media request (segment or init) of `viewer`: it watches from now on.
    pub fn media(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) -> Media {
        let key = self.key(stream, viewer);
        if !self.sessions.contains_key(&(stream.clone(), key)) {
            // Media without a playlist here (a player moved by a redirect chain, or one
            // that fetches segments directly): admitted by its first media request.
            self.admit(stream, viewer, now);
        }
        let Some(s) = self.sessions.get_mut(&(stream.clone(), key)) else {
            return Media::Untracked;
        };
        s.last = now;
        if s.watching {
            return Media::Watching;
        }
        s.watching = true;
        let counts = self.streams.entry(stream.clone()).or_default();
        counts.watching += 1;
        if std::mem::take(&mut s.counted) {
            counts.pending -= 1;
            if let Some(a) = self.addrs.get_mut(&s.addr) {
                a.pending -= 1;
            }
        }
        Media::Started(s.admitted)
    }

    /// Forgets a session (it was redirected away).
    pub fn remove(&mut self, stream: &stream::Name, viewer: Viewer) {
        let key = self.key(stream, viewer);
        if let Some(s) = self.sessions.remove(&(stream.clone(), key)) {
            Self::release(&mut self.streams, &mut self.addrs, stream, &s);
        }
    }

    fn release(
        streams: &mut HashMap<stream::Name, Counts>,
        addrs: &mut HashMap<u128, AddrCounts>,
        stream: &stream::Name,
        s: &Session,
    ) {
        if let Some(c) = streams.get_mut(stream) {
            c.watching -= usize::from(s.watching);
            c.pending -= usize::from(s.counted);
            if *c == Counts::default() {
                streams.remove(stream);
            }
        }
        if let Some(a) = addrs.get_mut(&s.addr) {
            a.sessions -= 1;
            a.pending -= u32::from(s.counted);
            if a.sessions == 0 {
                addrs.remove(&s.addr);
            }
        }
    }

    /// Forgets watching sessions quiet for longer than `idle` and pending ones older than
    /// [`PENDING_TTL`]. True if any viewer count changed.
    pub fn expire(&mut self, idle: Duration, now: Instant) -> bool {
        let (streams, addrs) = (&mut self.streams, &mut self.addrs);
        let mut changed = false;
        self.sessions.retain(|(stream, _), s| {
            let keep = if s.watching {
                now.saturating_duration_since(s.last) <= idle
            } else {
                now.saturating_duration_since(s.admitted) <= PENDING_TTL
            };
            if !keep {
                changed |= s.watching;
                Self::release(streams, addrs, stream, s);
            }
            keep
        });
        changed
    }

    /// Marks the newest watching sessions to be moved elsewhere until their cost
    /// (`cost_of` each stream's per-viewer cost) adds up to `excess`; returns what was
    /// marked, in bits per second.
    pub fn shed_newest(&mut self, excess: u64, cost_of: impl Fn(&stream::Name) -> u64) -> u64 {
        let mut newest: Vec<(Instant, &stream::Name, &mut Session)> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| s.watching && !s.shed)
            .map(|((name, _), s)| (s.admitted, name, s))
            .collect();
        newest.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut marked = 0;
        for (_, name, s) in newest {
            if marked >= excess {
                break;
            }
            s.shed = true;
            marked += cost_of(name).max(1);
        }
        marked
    }

    /// Counts for `stream`.
    pub fn counts(&self, stream: &stream::Name) -> Counts {
        self.streams.get(stream).copied().unwrap_or_default()
    }

    /// Counts of every stream with sessions.
    pub fn all(&self) -> impl Iterator<Item = (&stream::Name, Counts)> {
        self.streams.iter().map(|(n, c)| (n, *c))
    }

    /// Sessions tracked, pending or watching.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True if no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> stream::Name {
        stream::Name::new(s).unwrap()
    }

    fn viewer(session: u128, addr: u128) -> Viewer {
        Viewer { session, addr }
    }

    #[test]
    fn pending_until_media_then_watching_until_idle() {
        let (mut t, s, t0) = (Sessions::default(), name("s"), Instant::now());
        t.admit(&s, viewer(1, 9), t0);
        assert_eq!(
            t.counts(&s),
            Counts {
                watching: 0,
                pending: 1
            }
        );
        assert_eq!(t.media(&s, viewer(1, 9), t0), Media::Started(t0));
        assert_eq!(t.media(&s, viewer(1, 9), t0), Media::Watching);
        assert_eq!(
            t.counts(&s),
            Counts {
                watching: 1,
                pending: 0
            }
        );
        let idle = Duration::from_secs(20);
        assert!(!t.expire(idle, t0 + Duration::from_secs(10)));
        assert!(t.expire(idle, t0 + Duration::from_secs(21)));
        assert!(t.is_empty());
        assert!(t.addrs.is_empty() && t.streams.is_empty());
    }

    #[test]
    fn a_session_that_fetches_nothing_costs_nothing_within_seconds() {
        let (mut t, s, t0) = (Sessions::default(), name("s"), Instant::now());
        t.admit(&s, viewer(1, 9), t0);
        t.expire(
            Duration::from_secs(20),
            t0 + PENDING_TTL + Duration::from_millis(1),
        );
        assert_eq!(t.counts(&s), Counts::default());
        assert!(t.is_empty());
    }

    #[test]
    fn invented_sessions_of_one_address_are_bounded() {
        let (mut t, s, t0) = (Sessions::default(), name("s"), Instant::now());
        for sid in 0..200 {
            t.admit(&s, viewer(1000 + sid, 9), t0);
        }
        assert_eq!(t.counts(&s).pending, PENDING_PER_ADDR as usize);
        // Another address is not affected.
        t.admit(&s, viewer(5, 7), t0);
        assert_eq!(t.counts(&s).pending, PENDING_PER_ADDR as usize + 1);
        // Past the per-address bound, the address itself is the identity.
        for sid in 200..(SESSIONS_PER_ADDR as u128 + 10) {
            t.admit(&s, viewer(1000 + sid, 9), t0);
        }
        assert_eq!(t.addrs[&9].sessions, SESSIONS_PER_ADDR + 1);
        assert_eq!(t.key(&s, viewer(99_999, 9)), 9);
    }

    #[test]
    fn newest_are_shed_first() {
        let (mut t, s, t0) = (Sessions::default(), name("s"), Instant::now());
        for i in 0..4u128 {
            let at = t0 + Duration::from_secs(i as u64);
            t.media(&s, viewer(i, i), at);
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(t.shed_newest(250, |_| 100), 300);
        assert!(!t.playlist(&s, viewer(0, 0), later));
        assert!(t.playlist(&s, viewer(1, 1), later));
        assert!(t.playlist(&s, viewer(3, 3), later));
        t.remove(&s, viewer(3, 3));
        assert_eq!(t.counts(&s).watching, 3);
    }
}
