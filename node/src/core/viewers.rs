//! Viewer sessions: who watches what here, and what they cost.
//!
//! A viewer is a session, not an address: many players share one NAT address, so the
//! edge gives each player a session id it carries in its URLs, and counts, admits and
//! hands off sessions. A player that sends no session id (or drops query strings) is
//! known by its address alone.
//!
//! A session is **pending** from its admission (a playlist request) until it fetches
//! media; then it is **watching**. Either lasts until the session goes quiet for the idle
//! time. Only watching sessions count as viewers. A pending session costs its stream's
//! bitrate (twice during the startup window: the player is about to fetch its first
//! segments at once) for at most [`PENDING_TTL`]: a session that never fetches media
//! stops costing within seconds, though while it polls the stream counts as demanded and
//! is prefetched. Per address, at most [`PENDING_PER_ADDR`] pending sessions cost
//! anything and at most [`SESSIONS_PER_ADDR`] sessions exist, so one client inventing
//! session ids cannot fill a node's budget.

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
/// A session that fetched no media this long after admission stops costing anything.
/// Players fetch their first segment right after the playlist; a few seconds cover a
/// slow start.
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
    /// Pending and costing (within its address's [`PENDING_PER_ADDR`] and
    /// [`PENDING_TTL`]).
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

/// The sessions of one stream.
#[derive(Debug, Default)]
struct StreamSessions {
    sessions: HashMap<u128, Session>,
    counts: Counts,
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

/// Every session of this node, by stream.
#[derive(Debug, Default)]
pub struct Sessions {
    streams: HashMap<stream::Name, StreamSessions>,
    addrs: HashMap<u128, AddrCounts>,
    total: usize,
}

impl Sessions {
    /// The key `viewer` is tracked under in `stream`: its session, or its address when
    /// the address holds too many sessions already.
    fn key(&self, stream: Option<&StreamSessions>, viewer: Viewer) -> u128 {
        let known = stream.is_some_and(|s| s.sessions.contains_key(&viewer.session));
        if viewer.session == viewer.addr || known {
            return viewer.session;
        }
        let held = self.addrs.get(&viewer.addr).map_or(0, |a| a.sessions);
        if held >= SESSIONS_PER_ADDR {
            viewer.addr
        } else {
            viewer.session
        }
    }

    fn session_mut(&mut self, stream: &stream::Name, viewer: Viewer) -> Option<&mut Session> {
        let key = self.key(self.streams.get(stream), viewer);
        self.streams.get_mut(stream)?.sessions.get_mut(&key)
    }

    /// Admits a new session (pending); a known one is only touched. True if `stream`
    /// had no session before (demand for it starts here).
    pub fn admit(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) -> bool {
        if let Some(s) = self.session_mut(stream, viewer) {
            s.last = now;
            return false;
        }
        if self.total >= MAX_SESSIONS {
            return false;
        }
        let key = self.key(self.streams.get(stream), viewer);
        let addr = self.addrs.entry(viewer.addr).or_default();
        let counted = addr.pending < PENDING_PER_ADDR;
        addr.sessions += 1;
        addr.pending += u32::from(counted);
        let first = !self.streams.contains_key(stream);
        let entry = self.streams.entry(stream.clone()).or_default();
        entry.counts.pending += usize::from(counted);
        entry.sessions.insert(
            key,
            Session {
                addr: viewer.addr,
                admitted: now,
                last: now,
                watching: false,
                counted,
                shed: false,
            },
        );
        self.total += 1;
        first
    }

    /// A playlist request of `viewer`: `None` if it has no session for `stream`, else
    /// whether the session was marked to be shed.
    pub fn playlist(
        &mut self,
        stream: &stream::Name,
        viewer: Viewer,
        now: Instant,
    ) -> Option<bool> {
        let s = self.session_mut(stream, viewer)?;
        s.last = now;
        Some(s.shed)
    }

    /// A media request (segment or init) of `viewer`: it watches from now on.
    pub fn media(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) -> Media {
        if self.session_mut(stream, viewer).is_none() {
            // Media without a playlist here (a player moved by a redirect chain, or one
            // that fetches segments directly): admitted by its first media request.
            self.admit(stream, viewer, now);
        }
        let key = self.key(self.streams.get(stream), viewer);
        let Some(entry) = self.streams.get_mut(stream) else {
            return Media::Untracked;
        };
        let Some(s) = entry.sessions.get_mut(&key) else {
            return Media::Untracked;
        };
        s.last = now;
        if s.watching {
            return Media::Watching;
        }
        s.watching = true;
        entry.counts.watching += 1;
        if std::mem::take(&mut s.counted) {
            entry.counts.pending -= 1;
            if let Some(a) = self.addrs.get_mut(&s.addr) {
                a.pending -= 1;
            }
        }
        Media::Started(s.admitted)
    }

    /// Forgets a session (it was redirected away).
    pub fn remove(&mut self, stream: &stream::Name, viewer: Viewer) {
        let key = self.key(self.streams.get(stream), viewer);
        let Some(entry) = self.streams.get_mut(stream) else {
            return;
        };
        if let Some(s) = entry.sessions.remove(&key) {
            release(&mut entry.counts, &mut self.addrs, &s);
            self.total -= 1;
        }
        if entry.sessions.is_empty() {
            self.streams.remove(stream);
        }
    }

    /// Forgets sessions with no request for longer than `idle`; pending sessions stop
    /// costing [`PENDING_TTL`] after their admission. True if a viewer count changed.
    pub fn expire(&mut self, idle: Duration, now: Instant) -> bool {
        let mut changed = false;
        let addrs = &mut self.addrs;
        let mut removed = 0;
        self.streams.retain(|_, entry| {
            let counts = &mut entry.counts;
            entry.sessions.retain(|_, s| {
                if now.saturating_duration_since(s.last) > idle {
                    changed |= s.watching;
                    release(counts, addrs, s);
                    removed += 1;
                    return false;
                }
                if s.counted && now.saturating_duration_since(s.admitted) > PENDING_TTL {
                    s.counted = false;
                    counts.pending -= 1;
                    if let Some(a) = addrs.get_mut(&s.addr) {
                        a.pending -= 1;
                    }
                }
                true
            });
            !entry.sessions.is_empty()
        });
        self.total -= removed;
        changed
    }

    /// Marks the newest watching sessions to be moved elsewhere until their cost
    /// (`cost_of` each stream's per-viewer cost) adds up to `excess`; returns what was
    /// marked, in bits per second.
    pub fn shed_newest(&mut self, excess: u64, cost_of: impl Fn(&stream::Name) -> u64) -> u64 {
        let mut newest: Vec<(Instant, u64, &mut Session)> = self
            .streams
            .iter_mut()
            .flat_map(|(name, entry)| {
                let cost = cost_of(name).max(1);
                entry
                    .sessions
                    .values_mut()
                    .map(move |s| (s.admitted, cost, s))
            })
            .filter(|(_, _, s)| s.watching && !s.shed)
            .collect();
        newest.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut marked = 0;
        for (_, cost, s) in newest {
            if marked >= excess {
                break;
            }
            s.shed = true;
            marked += cost;
        }
        marked
    }

    /// Counts for `stream`.
    pub fn counts(&self, stream: &stream::Name) -> Counts {
        self.streams
            .get(stream)
            .map(|e| e.counts)
            .unwrap_or_default()
    }

    /// True if `stream` has sessions here, pending or watching: players ask for it.
    pub fn demanded(&self, stream: &stream::Name) -> bool {
        self.streams.contains_key(stream)
    }

    /// Counts of every stream with sessions.
    pub fn all(&self) -> impl Iterator<Item = (&stream::Name, Counts)> {
        self.streams.iter().map(|(n, e)| (n, e.counts))
    }

    /// Sessions tracked, pending or watching.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True if no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Takes a removed session out of its stream's and its address's counts.
fn release(counts: &mut Counts, addrs: &mut HashMap<u128, AddrCounts>, s: &Session) {
    counts.watching -= usize::from(s.watching);
    counts.pending -= usize::from(s.counted);
    if let Some(a) = addrs.get_mut(&s.addr) {
        a.sessions -= 1;
        a.pending -= u32::from(s.counted);
        if a.sessions == 0 {
            addrs.remove(&s.addr);
        }
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
        assert!(
            t.admit(&s, viewer(1, 9), t0),
            "demand for the stream starts"
        );
        let idle = Duration::from_secs(20);
        t.expire(idle, t0 + PENDING_TTL + Duration::from_millis(1));
        assert_eq!(t.counts(&s), Counts::default());
        // While it polls, the stream is still asked for (and prefetched).
        assert!(t.demanded(&s));
        let polled = t0 + Duration::from_secs(10);
        assert_eq!(t.playlist(&s, viewer(1, 9), polled), Some(false));
        t.expire(idle, polled + idle + Duration::from_millis(1));
        assert!(t.is_empty() && !t.demanded(&s));
        assert!(t.addrs.is_empty());
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
        assert_eq!(t.key(t.streams.get(&s), viewer(99_999, 9)), 9);
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
        assert_eq!(t.playlist(&s, viewer(0, 0), later), Some(false));
        assert_eq!(t.playlist(&s, viewer(1, 1), later), Some(true));
        assert_eq!(t.playlist(&s, viewer(3, 3), later), Some(true));
        assert_eq!(t.playlist(&s, viewer(7, 7), later), None);
        t.remove(&s, viewer(3, 3));
        assert_eq!(t.counts(&s).watching, 3);
    }
}
