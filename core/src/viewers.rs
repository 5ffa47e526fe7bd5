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
//!
//! Players that keep their connections carry their session on them; players that drop
//! the id from their playlist reloads *and* open a new connection for every request
//! cannot be told apart by any request. Their sessions are **anonymous** (every request
//! so far opened its connection), and a bare playlist request on a new connection from
//! their address *adopts* the one of them that reloaded longest ago (at least
//! [`ADOPT_AFTER`] ago) instead of starting another: such players are counted by number,
//! not once per reload. Only a session whose second request opened a new connection as
//! well is adopted, and players keeping a connection leave the pool with their second
//! request, so players behind one NAT are never merged when they keep connections,
//! however long their second request takes to come.

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

/// A bare playlist request adopts an anonymous session of its address only if that
/// session's last playlist request is at least this old: two players starting together
/// are two sessions.
pub const ADOPT_AFTER: Duration = Duration::from_millis(100);

/// A session id as the edge hands it out (at most [`Sid::MAX`] bytes), kept inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid {
    len: u8,
    bytes: [u8; Sid::MAX],
}

impl Sid {
    /// Longest id kept.
    pub const MAX: usize = 32;

    /// `id` as a `Sid`, if it is ASCII and short enough.
    pub fn new(id: &str) -> Option<Self> {
        if id.len() > Self::MAX || !id.is_ascii() {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..id.len()].copy_from_slice(id.as_bytes());
        Some(Sid {
            len: id.len() as u8,
            bytes,
        })
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("ASCII by construction")
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is asking, and how: the session (a key derived from its id, or the address key
/// when it has none), the client address key, the id itself, and whether the request
/// opened its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Viewer {
    /// The session key.
    pub session: u128,
    /// The client address key.
    pub addr: u128,
    /// The session id the request carried (or was given), if any.
    pub sid: Option<Sid>,
    /// The request was the first on its connection.
    pub opened_connection: bool,
}

impl From<u128> for Viewer {
    /// A viewer known by its address alone.
    fn from(addr: u128) -> Self {
        Viewer {
            session: addr,
            addr,
            sid: None,
            opened_connection: false,
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
    /// Its id, to hand back when a request adopts it.
    sid: Option<Sid>,
    /// Every request of it so far opened its connection (see the module docs).
    anonymous: bool,
    /// A request after its first opened a new connection too: a player that opens a
    /// connection per request. Only such sessions are adopted: a player that just
    /// started may still send its next request on the same connection, however slow
    /// the network or this node is to bring it.
    reconnected: bool,
    /// Its latest playlist request.
    last_playlist: Instant,
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
    /// Anonymous sessions by address.
    anonymous: HashMap<u128, Vec<u128>>,
}

/// Takes `key` out of `addr`'s anonymous sessions.
fn unlist(anonymous: &mut HashMap<u128, Vec<u128>>, addr: u128, key: u128) {
    if let Some(keys) = anonymous.get_mut(&addr) {
        keys.retain(|k| *k != key);
        if keys.is_empty() {
            anonymous.remove(&addr);
        }
    }
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

    /// Notes a request of `viewer` to `stream` at `now` (a playlist request if
    /// `playlist`): its session, if it has one.
    fn touch(
        &mut self,
        stream: &stream::Name,
        viewer: Viewer,
        playlist: bool,
        now: Instant,
    ) -> Option<&mut Session> {
        let key = self.key(self.streams.get(stream), viewer);
        let entry = self.streams.get_mut(stream)?;
        let s = entry.sessions.get_mut(&key)?;
        s.last = now;
        if playlist {
            s.last_playlist = now;
        }
        if s.anonymous {
            if viewer.opened_connection {
                s.reconnected = true;
            } else {
                s.anonymous = false;
                unlist(&mut entry.anonymous, s.addr, key);
            }
        }
        Some(s)
    }

    /// Admits a new session (pending); a known one is only touched. True if `stream`
    /// had no session before (demand for it starts here).
    pub fn admit(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) -> bool {
        if self.touch(stream, viewer, true, now).is_some() {
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
        // Only a session of its own (not an address standing in for many) can be adopted.
        let anonymous = viewer.opened_connection && viewer.sid.is_some() && key == viewer.session;
        if anonymous {
            entry.anonymous.entry(viewer.addr).or_default().push(key);
        }
        entry.sessions.insert(
            key,
            Session {
                addr: viewer.addr,
                admitted: now,
                last: now,
                watching: false,
                counted,
                shed: false,
                sid: viewer.sid,
                anonymous,
                reconnected: false,
                last_playlist: now,
            },
        );
        self.total += 1;
        first
    }

    /// The id of the anonymous session of address `addr` in `stream` that opened a new
    /// connection for a later request too and whose playlist request is the oldest, at
    /// least [`ADOPT_AFTER`] ago: the one a bare playlist request on a new connection
    /// from `addr` continues (see the module docs).
    pub fn adopt(&self, stream: &stream::Name, addr: u128, now: Instant) -> Option<Sid> {
        let entry = self.streams.get(stream)?;
        entry
            .anonymous
            .get(&addr)?
            .iter()
            .filter_map(|key| entry.sessions.get(key))
            .filter(|s| s.reconnected)
            .filter(|s| now.saturating_duration_since(s.last_playlist) >= ADOPT_AFTER)
            .min_by_key(|s| s.last_playlist)
            .and_then(|s| s.sid)
    }

    /// A playlist request of `viewer`: `None` if it has no session for `stream`, else
    /// whether the session was marked to be shed.
    pub fn playlist(
        &mut self,
        stream: &stream::Name,
        viewer: Viewer,
        now: Instant,
    ) -> Option<bool> {
        self.touch(stream, viewer, true, now).map(|s| s.shed)
    }

    /// A media request (segment or init) of `viewer`: it watches from now on.
    pub fn media(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) -> Media {
        if self.touch(stream, viewer, false, now).is_none() {
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
            if s.anonymous {
                unlist(&mut entry.anonymous, s.addr, key);
            }
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
            let anonymous = &mut entry.anonymous;
            entry.sessions.retain(|key, s| {
                if now.saturating_duration_since(s.last) > idle {
                    changed |= s.watching;
                    if s.anonymous {
                        unlist(anonymous, s.addr, *key);
                    }
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
        Viewer {
            session,
            addr,
            sid: None,
            opened_connection: false,
        }
    }

    /// A request carrying `sid` from `addr`, on a new connection if `opened`.
    fn with_sid(sid: Sid, addr: u128, opened: bool) -> Viewer {
        let session = sid
            .as_str()
            .bytes()
            .fold(1u128 << 127, |k, b| k.wrapping_mul(31) ^ b as u128);
        Viewer {
            session,
            addr,
            sid: Some(sid),
            opened_connection: opened,
        }
    }

    #[test]
    fn players_that_open_a_connection_per_request_are_counted_once_each() {
        let (mut t, s, t0) = (Sessions::default(), name("s"), crate::testing::t0());
        let mut minted = 0;
        // Three players behind address 9, 10 ms apart, reload every second for 30 s, each
        // time on a new connection and without their id; segments carry the id they got.
        for round in 0..30u64 {
            for player in 0..3u64 {
                let at = t0 + Duration::from_millis(round * 1000 + player * 10);
                let sid = t.adopt(&s, 9, at).unwrap_or_else(|| {
                    minted += 1;
                    Sid::new(&format!("minted{minted}")).unwrap()
                });
                let v = with_sid(sid, 9, true);
                if t.playlist(&s, v, at).is_none() {
                    t.admit(&s, v, at);
                }
                t.media(&s, v, at + Duration::from_millis(2));
            }
            t.expire(Duration::from_secs(20), t0 + Duration::from_secs(round));
        }
        assert_eq!(minted, 3, "each player got one session");
        assert_eq!(t.counts(&s).watching, 3);
    }

    #[test]
    fn players_keeping_a_connection_are_never_adopted() {
        let (mut t, s, t0) = (Sessions::default(), name("s"), crate::testing::t0());
        let a = Sid::new("a").unwrap();
        // Its playlist opened the connection; until its next request comes it may be a
        // player keeping its connection, however long that takes (a slow network, a
        // busy node): not adopted.
        t.admit(&s, with_sid(a, 9, true), t0);
        assert_eq!(t.adopt(&s, 9, t0 + Duration::from_secs(5)), None);
        // Its segment came on the same connection.
        t.media(&s, with_sid(a, 9, false), t0 + Duration::from_secs(5));
        assert_eq!(t.adopt(&s, 9, t0 + Duration::from_secs(6)), None);
        // Nor is a session too fresh, or one of another address.
        let b = Sid::new("b").unwrap();
        t.admit(&s, with_sid(b, 9, true), t0);
        t.media(&s, with_sid(b, 9, true), t0 + Duration::from_millis(10));
        assert_eq!(t.adopt(&s, 9, t0 + Duration::from_millis(50)), None);
        assert_eq!(t.adopt(&s, 9, t0 + ADOPT_AFTER), Some(b));
        assert_eq!(t.adopt(&s, 8, t0 + Duration::from_secs(1)), None);
        t.remove(&s, with_sid(b, 9, true));
        assert!(t.streams[&s].anonymous.is_empty());
    }

    #[test]
    fn pending_until_media_then_watching_until_idle() {
        let (mut t, s, t0) = (Sessions::default(), name("s"), crate::testing::t0());
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
        let (mut t, s, t0) = (Sessions::default(), name("s"), crate::testing::t0());
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
        let (mut t, s, t0) = (Sessions::default(), name("s"), crate::testing::t0());
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
        let (mut t, s, t0) = (Sessions::default(), name("s"), crate::testing::t0());
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
