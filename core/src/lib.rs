//! The sans-io core: every decision a node makes, with no sockets, no clock and no tasks.
//!
//! Events go in through the `handle_*` methods, each given `now`; decisions come out as
//! [`Action`]s pulled with [`Core::poll_action`], and queries ([`Core::holders`],
//! [`Core::playlist`], ...) answer from state. [`Core::poll_timeout`] says when it next
//! needs [`Core::handle_tick`] (no fixed tick). The node runtime drives it with tokio,
//! libp2p, quinn and HTTP (`shoal-node`); the simulator can drive the very same core in
//! virtual time. This crate depends on no I/O crate at all, and reads no clock.
//!
//! - [`peers`]: the peer table (status, RTT, liveness, penalties).
//! - [`streams`]: each stream's window of signed announcements and held segments.
//! - [`viewers`]: recent viewers per stream, which drive prefetching.
//! - [`balance`]: admission, redirects and pre-warming.
//! - [`carried`]: the streams this node carries, and the media shards it subscribes to.
//! - [`drain`]: drain's phases (serve, hand off, leave) on the core's clock.
//! - [`ingest_source`]: which node's encoder feeds a stream (redundant, moved ingest).
//! - [`own_status`]: the status this node publishes.
//! - [`pull`]: each pull of a segment, init or manifest as a state machine: whom to ask,
//!   in what order, what a busy or bad answer changes.

pub mod balance;
pub mod carried;
pub mod drain;
pub mod ingest_source;
pub mod own_status;
pub mod peers;
pub mod pull;
pub mod streams;
#[cfg(test)]
pub(crate) mod testing;
pub mod viewers;

use peers::{PeerTable, StatusUpdate};
use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::segment::{self, Announcement, StreamEnd};
use shoal_protocol::signed::Verified;
use shoal_protocol::status::{self, IngestClaim, Status, StreamHeld};
use shoal_protocol::stream;
use shoal_protocol::time::UnixMillis;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Least time between two manifest syncs of one stream.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// How many of the newest segments of a watched stream are pulled ahead of requests.
/// Players start three target durations from the live edge (RFC 8216 section 6.3.3;
/// hls.js `liveSyncDurationCount` 3); older segments are pulled when asked for, so a new
/// holder does not pull a whole playlist from its peers in one burst.
pub const PREFETCH_DEPTH: u64 = 3;
/// True if segment `seq` is among the [`PREFETCH_DEPTH`] newest up to `newest`.
fn near_edge(seq: u64, newest: u64) -> bool {
    seq + PREFETCH_DEPTH > newest
}

/// Most pulls in flight on one node: far more than its streams' windows ask for at once.
pub const MAX_PULLS: usize = 4096;

/// Most peers a node probes over the data plane to learn their RTT (others are ranked
/// by ping until a pull measures them).
pub const MAX_PROBED: usize = 32;
/// Holders nearer than this are pulled from directly (see [`Core::relay_leader`]).
pub const NEAR_ENOUGH: Duration = Duration::from_millis(10);
/// How often the core does its slow work (viewer sessions, pre-warm, shedding, idle
/// streams) and rechecks what may time out.
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The longest a node lets a nearer peer start pulling a segment before asking it.
pub const LEADER_WAIT: Duration = Duration::from_millis(100);
use std::time::{Duration, Instant};
use streams::{Added, Source, StreamState};
use thiserror::Error;
use viewers::{Media, Sessions, Viewer};

/// Tunables of the core. Defaults suit 2-6 s segments on a LAN or a region.
#[derive(Debug, Clone)]
pub struct Config {
    /// Segments kept per stream (memory bound: window x segment size per stream).
    pub window: usize,
    /// Segments listed in a live playlist (a player starts ~3 from the end).
    pub playlist_len: usize,
    /// A peer with no status for this long is gone.
    pub peer_timeout: Duration,
    /// Status is gossiped at least this often...
    pub status_interval: Duration,
    /// ...and on change, but not more often than this.
    pub status_min_interval: Duration,
    /// A viewer with no request for this long has left.
    pub viewer_idle: Duration,
    /// How long a peer that sent bad bytes is avoided (doubles for repeat offenders).
    pub bad_bytes_penalty: Duration,
    /// Largest segment accepted in an announcement.
    pub max_segment_size: u64,
    /// Most streams tracked at once.
    pub max_streams: usize,
    /// Peers a holder sends each segment to directly; further pullers are told "busy"
    /// and go to the holders it fed. The origin uploads each segment at most this many
    /// times, whatever the mesh size, and the mesh fills as a tree of this fan-out.
    pub fanout: usize,
    /// How long a peer that answered "busy" is ranked last.
    pub busy_backoff: Duration,
    /// An ingest claim lapses when its encoder has sent nothing for this long.
    pub ingest_idle: Duration,
    /// Egress this node may send, bits per second (0: no limit, every viewer is served).
    pub egress_capacity_bps: u64,
    /// The part of the capacity kept for ingest and relaying to peers; viewers get the
    /// rest.
    pub ingest_reserve_bps: u64,
    /// Above this CPU use (permille of all cores) a node takes no new viewers (0: CPU is
    /// not considered).
    pub cpu_limit_permille: u16,
    /// How far ahead demand is predicted when deciding to pre-warm peers.
    pub prewarm_horizon: Duration,
    /// How long a pre-warm request keeps a stream warm here unless renewed.
    pub warm_ttl: Duration,
    /// A new viewer fetches its first segments at once (players start about three
    /// segments behind the live edge): for this long after admission it counts twice
    /// its bitrate (zero: only its bitrate).
    pub startup_window: Duration,
    /// A stream with no new segment for this long, no viewers, no encoder here and no
    /// pre-warm request is forgotten: its state and bytes go, its name is free again.
    pub stream_forget: Duration,
    /// While this node knows fewer peers than this, it carries every stream (subscribes
    /// to every media shard): announcements cost little in a small mesh, and every
    /// node is ready for any stream's first viewer. At and above it, only the streams
    /// carried here (see [`carried`]). 0: always only those.
    pub carry_all_below: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: 32,
            playlist_len: 6,
            // Three missed 1 s statuses: a dead node is noticed in 3-4 s; a live one that
            // is falsely expired comes back with its next status.
            peer_timeout: Duration::from_secs(3),
            status_interval: Duration::from_secs(1),
            status_min_interval: Duration::from_millis(200),
            viewer_idle: Duration::from_secs(20),
            bad_bytes_penalty: Duration::from_secs(30),
            max_segment_size: 64 * 1024 * 1024,
            max_streams: status::MAX_STREAMS,
            fanout: 4,
            // About one segment transfer on a LAN: by then the peers it fed hold it.
            busy_backoff: Duration::from_millis(300),
            ingest_idle: Duration::from_secs(10),
            egress_capacity_bps: 0,
            ingest_reserve_bps: 0,
            cpu_limit_permille: 900,
            prewarm_horizon: Duration::from_secs(10),
            warm_ttl: Duration::from_secs(15),
            startup_window: Duration::from_secs(5),
            stream_forget: Duration::from_secs(30),
            carry_all_below: 32,
        }
    }
}

/// A decision for the runtime to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build, sign and gossip this node's status now.
    PublishStatus,
    /// Fetch this segment ahead of viewers (it was announced on a watched stream).
    Prefetch(segment::Id),
    /// Open the data-plane connection to this new peer, to measure its RTT (and have the
    /// connection ready for the first pull).
    Probe(PeerId),
    /// Ask a holder for the stream's manifest: announcements are missing.
    Sync {
        /// The stream.
        stream: stream::Name,
        /// The peer to ask.
        from: PeerId,
    },
    /// Drop a segment's bytes: it left the window.
    Evict(segment::Id),
    /// Drop an init segment: nothing in the window uses it.
    EvictInit(ContentId),
    /// The peer is gone: close connections to it.
    PeerGone(PeerId),
    /// The drain entered this phase (the status already says so).
    Drain(drain::Drain),
    /// Drained: leave the mesh and stop.
    Leave,
    /// Subscribe to this media shard's topic: a stream in it is carried here now.
    Subscribe(shoal_protocol::gossip::MediaShard),
    /// Unsubscribe from this media shard's topic: no stream in it is carried here.
    Unsubscribe(shoal_protocol::gossip::MediaShard),
}

/// The key under which a requesting peer's data-plane address is counted for fan-out.
/// A node sends requests from its own data endpoint, so this matches the data address in
/// its status.
pub fn requester_key(addr: std::net::SocketAddr) -> u128 {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ((u32::from(ip) as u128) << 16) | addr.port() as u128,
        std::net::IpAddr::V6(ip) => u128::from(ip) ^ addr.port() as u128,
    }
}

/// Whether to send a segment to a requesting peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// Send it.
    Serve,
    /// Already sent to `fanout` other peers: point the requester at them.
    Busy(Vec<PeerId>),
    /// Not held here.
    NotHeld,
}

/// Why an announcement was not taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Bigger than the configured maximum.
    #[error("segment of {0} bytes exceeds the maximum")]
    TooLarge(u64),
    /// Too many streams already.
    #[error("too many streams")]
    TooManyStreams,
    /// A stream this node does not carry, in a large mesh (a shard-mate's announcement).
    #[error("stream not carried here")]
    NotCarried,
    /// Same sequence number, different content.
    #[error("conflicts with an earlier announcement")]
    Conflict,
    /// Older than the window.
    #[error("older than the window")]
    TooOld,
    /// Seen already.
    #[error("duplicate")]
    Duplicate,
    /// A sequence number above [`segment::MAX_SEQ`].
    #[error("sequence number {0} out of range")]
    SeqOutOfRange(u64),
}

/// The core state machine of one node.
#[derive(Debug)]
pub struct Core {
    me: PeerId,
    config: Config,
    peers: PeerTable,
    streams: BTreeMap<stream::Name, StreamState>,
    sessions: Sessions,
    actions: VecDeque<Action>,
    last_status: Option<Instant>,
    status_dirty: bool,
    last_sync: HashMap<stream::Name, Instant>,
    claims: HashMap<stream::Name, Claim>,
    balance: balance::State,
    last_prewarm: Option<Instant>,
    /// No peer or ingest claim expires before this (see [`Core::poll_timeout`]).
    next_expiry: Option<Instant>,
    /// Set when [`Core::poll_timeout`] moved earlier since the driver last asked.
    woken: bool,
    /// Draining, if so: the phase and its deadlines.
    drain_plan: Option<drain::Plan>,
    pulls: pull::Pulls,
    carried: carried::Carried,
}

/// This node's own ingest claim on a stream.
#[derive(Debug, Clone, Copy)]
struct Claim {
    since: UnixMillis,
    last_activity: Instant,
    /// This node took the stream over from another's older claim (see
    /// [`Core::ingest_role`]).
    took_over: bool,
}

impl Core {
    /// A core for node `me`.
    pub fn new(me: PeerId, config: Config) -> Self {
        Self {
            me,
            config,
            peers: PeerTable::default(),
            streams: BTreeMap::new(),
            sessions: Sessions::default(),
            actions: VecDeque::new(),
            last_status: None,
            status_dirty: true,
            last_sync: HashMap::new(),
            claims: HashMap::new(),
            balance: balance::State::default(),
            last_prewarm: None,
            next_expiry: None,
            woken: false,
            drain_plan: None,
            pulls: pull::Pulls::default(),
            carried: carried::Carried::default(),
        }
    }

    /// This node's id.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Next decision to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A verified status arrived from `from`.
    pub fn handle_status(&mut self, from: PeerId, status: Status, now: Instant) {
        if from == self.me || status.check_bounds().is_err() {
            return;
        }
        let held: Vec<(stream::Name, u64)> = status
            .streams
            .iter()
            .map(|h| (h.name.clone(), h.last_seq))
            .collect();
        // Asked to pre-warm: fetch the stream's manifest now; its segments follow as
        // for a watched stream.
        let warm = self.take_warm_requests(&status.warm, now);
        if !warm.is_empty() {
            self.update_subscriptions();
        }
        for name in warm {
            self.mark_dirty();
            self.sync(name, from, now);
        }
        match self.peers.on_status(from, status, now) {
            StatusUpdate::Stale => {}
            StatusUpdate::New => {
                // Introduce ourselves promptly to a newcomer rather than at the next
                // interval.
                self.mark_dirty();
                self.settle_credits(from, now);
                // Measure the media path's RTT, up to a bound: a node does not keep a
                // connection to every peer of a large mesh.
                let measured = self.peers.known().filter(|(_, p)| p.data_rtt.is_some());
                if measured.count() < MAX_PROBED {
                    self.actions.push_back(Action::Probe(from));
                }
                // Prefetches that found no known holder before this peer's first status
                // get another chance now.
                self.prefetch_missing();
            }
            StatusUpdate::Updated => self.settle_credits(from, now),
        }
        // A watched stream this peer is ahead on by more than one segment: we missed
        // announcements (gossip is best effort), so catch up from its manifest.
        for (name, last) in held {
            let newest = self.streams.get(&name).and_then(|s| s.newest());
            let behind = newest.is_none_or(|n| n + 1 < last);
            if behind && self.is_watched(&name) {
                self.sync(name, from, now);
            }
        }
    }

    fn sync(&mut self, stream: stream::Name, from: PeerId, now: Instant) {
        let due = self
            .last_sync
            .get(&stream)
            .is_none_or(|t| now.saturating_duration_since(*t) >= SYNC_INTERVAL);
        if due {
            self.last_sync.insert(stream.clone(), now);
            self.actions.push_back(Action::Sync { stream, from });
        }
    }

    /// A round-trip time was measured to `peer`.
    pub fn handle_rtt(&mut self, peer: PeerId, rtt: Duration, now: Instant) {
        if peer != self.me {
            self.peers.on_rtt(peer, rtt, now);
        }
    }

    /// The data-plane (QUIC) connection to `peer` measured `rtt`. It ranks the peer from
    /// now on: it is the path the media takes.
    pub fn handle_data_rtt(&mut self, peer: PeerId, rtt: Duration, now: Instant) {
        if peer != self.me {
            self.peers.on_data_rtt(peer, rtt, now);
        }
    }

    /// A control-plane connection to `peer` opened or closed.
    pub fn handle_connection(&mut self, peer: PeerId, connected: bool, now: Instant) {
        if peer != self.me {
            self.peers.on_connection(peer, connected, now);
        }
    }

    /// `peer` was cut from the mesh (revoked, or its credential expired): it is
    /// forgotten now, no longer a holder, a source or a redirect target.
    pub fn handle_excluded(&mut self, peer: PeerId) {
        if peer != self.me && self.peers.remove(&peer) {
            self.mark_dirty();
            self.actions.push_back(Action::PeerGone(peer));
        }
    }

    /// A verified announcement arrived from the mesh (by gossip or in a manifest).
    pub fn handle_announcement(
        &mut self,
        announcement: Verified<Announcement>,
        now: Instant,
    ) -> Result<(), Rejected> {
        let signer = announcement.signer;
        let id = announcement.value.id.clone();
        // Shard-mates' announcements are not kept: with many streams a shard holds many,
        // and their state would crowd out the streams carried here (`max_streams`).
        if !self.takes_announcements_of(&id.stream) {
            return Err(Rejected::NotCarried);
        }
        let gap = self.add_announcement(announcement, now)?;
        if gap && signer != self.me {
            self.sync(id.stream.clone(), signer, now);
        }
        let held = self.is_held(&id);
        // Players start near the live edge: older segments of a manifest are not worth
        // pulling ahead of a request.
        let near = self
            .streams
            .get(&id.stream)
            .and_then(|s| s.newest())
            .is_some_and(|n| near_edge(id.seq, n));
        if self.is_watched(&id.stream) && !held && near {
            self.actions.push_back(Action::Prefetch(id));
        }
        Ok(())
    }

    /// Asks for every segment near the live edge of each watched stream that is
    /// announced but not held (fetches of one segment are coalesced, so a repeat costs
    /// nothing).
    fn prefetch_missing(&mut self) {
        let watched: Vec<stream::Name> = self
            .streams
            .keys()
            .filter(|name| self.is_watched(name))
            .cloned()
            .collect();
        for name in watched {
            self.prefetch_stream(&name);
        }
    }

    /// Asks for the segments of `stream` near its live edge that are not held.
    pub(crate) fn prefetch_stream(&mut self, name: &stream::Name) {
        let Some(s) = self.streams.get(name) else {
            return;
        };
        let newest = s.newest().unwrap_or(0);
        let missing = s
            .entries
            .iter()
            .filter(|(seq, e)| e.held.is_none() && near_edge(**seq, newest))
            .map(|(seq, _)| segment::Id {
                stream: name.clone(),
                seq: *seq,
            });
        self.actions.extend(missing.map(Action::Prefetch));
    }

    /// An encoder pushed a segment into this node; its bytes are already stored.
    pub fn handle_ingested(
        &mut self,
        announcement: Verified<Announcement>,
        now: Instant,
    ) -> Result<(), Rejected> {
        let id = announcement.value.id.clone();
        self.add_announcement(announcement, now)?;
        let stream = self.streams.get_mut(&id.stream).expect("just added");
        stream.ingest_here = true;
        stream.mark_held(id.seq, Source::Ingest, now);
        self.mark_dirty();
        Ok(())
    }

    /// A verified end-of-stream arrived (from the mesh or from local ingest).
    pub fn handle_end(&mut self, end: Verified<StreamEnd>) {
        if end.value.last_seq > segment::MAX_SEQ {
            return;
        }
        if let Some(stream) = self.streams.get_mut(&end.value.stream) {
            let newer = stream
                .end
                .as_ref()
                .is_none_or(|e| e.value.last_seq < end.value.last_seq);
            if newer {
                stream.end = Some(end);
                self.mark_dirty();
            }
        }
    }

    /// A segment's bytes arrived from `from` over the data plane and matched its
    /// announcement. Returns false if the segment left the window meanwhile (drop them).
    pub fn handle_fetched(&mut self, id: &segment::Id, from: PeerId, now: Instant) -> bool {
        let Some(stream) = self.streams.get_mut(&id.stream) else {
            return false;
        };
        let first = stream.held_range().is_none();
        let kept = stream.mark_held(id.seq, Source::Peer(from), now);
        // A new holder of the stream tells its peers promptly (relay leaders, redirects
        // and pullers look for holders of the stream); each further segment waits for the
        // periodic status: pullers find it through announcements and busy answers, and a
        // status per segment fetched would nearly double every node's statuses.
        if kept && first {
            self.mark_dirty();
        }
        kept
    }

    /// `peer` sent bytes that did not match their signed announcement.
    pub fn handle_bad_bytes(&mut self, peer: PeerId, now: Instant) {
        self.peers
            .on_bad_bytes(peer, self.config.bad_bytes_penalty, now);
    }

    /// A viewer fetched media (a segment or an init segment) of `stream`: its session
    /// watches from now on. Streams this node knows nothing of are not tracked.
    pub fn handle_media(&mut self, stream: &stream::Name, viewer: impl Into<Viewer>, now: Instant) {
        self.note_viewer_request(now);
        if !self.streams.contains_key(stream) {
            return;
        }
        let demanded = self.sessions.demanded(stream);
        if let Media::Started(admitted) = self.sessions.media(stream, viewer.into(), now) {
            // Viewer counts are load: peers balance on them, so they travel promptly.
            self.mark_dirty();
            self.note_startup(stream, admitted, now);
        }
        if !demanded {
            self.update_subscriptions();
            self.prefetch_stream(stream);
        }
    }

    /// Time passes: expire peers and viewers, decide whether to publish status.
    pub fn handle_tick(&mut self, now: Instant) {
        for peer in self.peers.expire(self.config.peer_timeout, now) {
            self.actions.push_back(Action::PeerGone(peer));
        }
        let ingest_idle = self.config.ingest_idle;
        let before = self.claims.len();
        self.claims
            .retain(|_, c| now.saturating_duration_since(c.last_activity) <= ingest_idle);
        if self.claims.len() != before {
            self.mark_dirty();
        }
        let prewarm_due = self
            .last_prewarm
            .is_none_or(|t| now.saturating_duration_since(t) >= HOUSEKEEPING);
        if prewarm_due {
            self.last_prewarm = Some(now);
            if self.sessions.expire(self.config.viewer_idle, now) {
                self.mark_dirty();
            }
            self.update_prewarm(now);
            self.shed_excess(now);
            self.forget_idle_streams(now);
            self.expire_asked(now);
            self.update_subscriptions();
        }
        self.advance_drain(now);
        let since = self.last_status.map(|t| now.saturating_duration_since(t));
        let due = match since {
            None => true,
            Some(s) if s >= self.config.status_interval => true,
            Some(s) => self.status_dirty && s >= self.config.status_min_interval,
        };
        if due {
            self.last_status = Some(now);
            self.status_dirty = false;
            self.actions.push_back(Action::PublishStatus);
        }
        // The first instant past the earliest timeout (they expire strictly after it).
        let past = |t: Instant| t + Duration::from_nanos(1);
        let claims = self
            .claims
            .values()
            .map(|c| past(c.last_activity + ingest_idle))
            .min();
        let peers = self.peers.next_expiry(self.config.peer_timeout).map(past);
        self.next_expiry = claims.into_iter().chain(peers).min();
    }

    /// When the core next needs [`Core::handle_tick`]: a status due (sooner when it
    /// changed), the once-a-second housekeeping, the earliest peer or ingest claim to
    /// time out, or the drain's next phase. `None` before the first tick: tick at once. Events can bring it
    /// forward; [`Core::take_wake`] says when one did. Peers and claims that appear
    /// between ticks are scheduled by the next housekeeping, within a second (their
    /// timeouts are longer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let last_status = self.last_status?;
        let status = last_status
            + if self.status_dirty {
                self.config.status_min_interval
            } else {
                self.config.status_interval
            };
        let housekeeping = self.last_prewarm? + HOUSEKEEPING;
        Some(
            [status, housekeeping]
                .into_iter()
                .chain(self.next_expiry)
                .chain(self.drain_deadline())
                .min()
                .expect("not empty"),
        )
    }

    /// True if the driver should run now rather than at [`Core::poll_timeout`]: an event
    /// brought the deadline forward (said once) or left actions to carry out. Code that
    /// feeds the core from outside its driver's loop wakes the driver then.
    pub fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.woken) || !self.actions.is_empty()
    }

    /// Something in the status changed: it goes out after
    /// [`Config::status_min_interval`] rather than at the next interval.
    pub(crate) fn mark_dirty(&mut self) {
        if !self.status_dirty {
            self.status_dirty = true;
            self.woken = true;
        }
    }

    /// Forgets streams idle for [`Config::stream_forget`] that nobody here watches,
    /// pushes or pre-warms: their segments and inits are evicted.
    fn forget_idle_streams(&mut self, now: Instant) {
        let forget = self.config.stream_forget;
        let idle: Vec<stream::Name> = self
            .streams
            .values()
            .filter(|s| {
                s.newest_at
                    .is_some_and(|t| now.saturating_duration_since(t) > forget)
            })
            .map(|s| s.name.clone())
            .filter(|name| !self.claims.contains_key(name) && !self.is_watched(name))
            .collect();
        for name in idle {
            let Some(state) = self.streams.remove(&name) else {
                continue;
            };
            let mut inits = std::collections::BTreeSet::new();
            for (seq, entry) in state.entries {
                inits.extend(entry.announcement.value.init.map(|i| i.hash));
                self.actions.push_back(Action::Evict(segment::Id {
                    stream: name.clone(),
                    seq,
                }));
            }
            self.actions
                .extend(inits.into_iter().map(Action::EvictInit));
            self.last_sync.remove(&name);
            self.mark_dirty();
        }
    }

    /// An encoder sent something for `stream` to this node. `unix_now` is the wall clock,
    /// used only to order competing claims across nodes.
    pub fn handle_ingest_activity(
        &mut self,
        stream: &stream::Name,
        unix_now: UnixMillis,
        now: Instant,
    ) {
        if let Some(claim) = self.claims.get_mut(stream) {
            claim.last_activity = now;
        } else if self.claims.len() < self.config.max_streams {
            let claim = Claim {
                since: unix_now,
                last_activity: now,
                took_over: false,
            };
            self.claims.insert(stream.clone(), claim);
            self.mark_dirty();
            self.update_subscriptions();
        }
    }

    /// A peer asks for a segment; `requester` identifies it (e.g. its address). Each held
    /// segment is sent to at most `fanout` distinct peers (fewer when capacity is short,
    /// see [`Core::upload_limit`]); a peer that was served before is served again (a
    /// retry).
    pub fn admit_upload(&mut self, id: &segment::Id, requester: u128) -> Upload {
        let relayed = self.streams.get(&id.stream).is_some_and(|s| !s.ingest_here);
        // Past capacity, a node keeps feeding the mesh only its own ingest: what it
        // relays, peers can pull from the other holders.
        let fanout = if relayed && self.over_capacity() {
            0
        } else {
            self.upload_limit()
        };
        let Some(entry) = self
            .streams
            .get_mut(&id.stream)
            .and_then(|s| s.entries.get_mut(&id.seq))
            .filter(|e| e.held.is_some())
        else {
            return Upload::NotHeld;
        };
        if entry.uploads.contains(&requester) {
            return Upload::Serve;
        }
        if entry.uploads.len() < fanout {
            entry.uploads.push(requester);
            return Upload::Serve;
        }
        // Name the peers fed, starting at a different one each time, so the turned-away
        // pullers spread over them rather than all asking the first.
        entry.busy_answers += 1;
        let fed = entry.uploads.clone();
        let start = entry.busy_answers % fed.len().max(1);
        let by_key: HashMap<u128, PeerId> = self
            .peers
            .known()
            .filter_map(|(id, p)| Some((requester_key(p.status.as_ref()?.data_addr), *id)))
            .collect();
        let hints = fed[start..]
            .iter()
            .chain(&fed[..start])
            .filter_map(|k| by_key.get(k).copied())
            .collect();
        Upload::Busy(hints)
    }

    /// `peer` refused a pull because it is at its fan-out limit.
    pub fn handle_busy(&mut self, peer: PeerId, now: Instant) {
        self.peers.on_busy(peer, self.config.busy_backoff, now);
    }

    fn add_announcement(
        &mut self,
        announcement: Verified<Announcement>,
        now: Instant,
    ) -> Result<bool, Rejected> {
        let a = &announcement.value;
        if a.id.seq > segment::MAX_SEQ {
            return Err(Rejected::SeqOutOfRange(a.id.seq));
        }
        if a.size > self.config.max_segment_size {
            return Err(Rejected::TooLarge(a.size));
        }
        if !self.streams.contains_key(&a.id.stream) && self.streams.len() >= self.config.max_streams
        {
            return Err(Rejected::TooManyStreams);
        }
        let (name, seq) = (a.id.stream.clone(), a.id.seq);
        let stream = self
            .streams
            .entry(name.clone())
            .or_insert_with(|| StreamState::new(name.clone()));
        let (added, evicted) = stream.add(announcement, self.config.window);
        if matches!(added, Added::New { .. }) {
            if let Some(entry) = stream.entries.get_mut(&seq) {
                entry.announced = Some(now);
            }
            if stream.newest() == Some(seq) {
                stream.newest_at = Some(now);
            }
        }
        for seq in evicted.segments {
            self.actions.push_back(Action::Evict(segment::Id {
                stream: name.clone(),
                seq,
            }));
        }
        for init in evicted.inits {
            self.actions.push_back(Action::EvictInit(init));
        }
        match added {
            Added::New { gap } => Ok(gap),
            Added::Duplicate => Err(Rejected::Duplicate),
            Added::Conflict => Err(Rejected::Conflict),
            Added::TooOld => Err(Rejected::TooOld),
        }
    }

    // ---- queries ----

    /// Peers to fetch `id` from, best first: known holders (by status, or the
    /// announcement's signer), not penalised, nearest (lowest RTT) first.
    pub fn holders(&self, id: &segment::Id, now: Instant) -> Vec<PeerId> {
        let signer = self
            .streams
            .get(&id.stream)
            .and_then(|s| s.entries.get(&id.seq))
            .map(|e| e.announcement.signer);
        self.rank(now, |peer, p| Some(*peer) == signer || p.holds(id))
    }

    /// A nearer peer to pull `id` through, and how long to let it start its own pull
    /// first: when every holder is far ([`NEAR_ENOUGH`] or more) and peers at a third of
    /// that distance carry the stream too (typically the same region), the one with the
    /// lowest id among them and this node pulls from afar; the others ask it, joining
    /// its pull in flight. `None`: pull from the holders directly.
    pub fn relay_leader(&self, id: &segment::Id, now: Instant) -> Option<(PeerId, Duration)> {
        let holders = self.holders(id, now);
        let far = self.peers.get(holders.first()?)?.rank_rtt();
        if far < NEAR_ENOUGH {
            return None;
        }
        let (leader, rtt) = self
            .peers
            .known()
            .filter(|(peer, p)| {
                !p.is_penalised(now)
                    && !holders.contains(peer)
                    && p.status.as_ref().is_some_and(|s| !s.draining)
                    && p.newest(&id.stream).is_some()
                    && p.rank_rtt().saturating_mul(3) < far
            })
            .map(|(peer, p)| (*peer, p.rank_rtt()))
            .min_by_key(|(peer, _)| *peer)?;
        (leader < self.me).then(|| {
            (
                leader,
                (rtt * 2 + Duration::from_millis(10)).min(LEADER_WAIT),
            )
        })
    }

    /// Peers to ask for `stream`'s manifest, best first: those holding it, freshest
    /// then nearest.
    pub fn stream_holders(&self, stream: &stream::Name, now: Instant) -> Vec<PeerId> {
        let mut ranked = self.rank(now, |_, p| p.newest(stream).is_some());
        ranked.sort_by_key(|peer| {
            std::cmp::Reverse(self.peers.get(peer).and_then(|p| p.newest(stream)))
        });
        ranked
    }

    fn rank(&self, now: Instant, pred: impl Fn(&PeerId, &peers::Peer) -> bool) -> Vec<PeerId> {
        let mut found: Vec<(bool, Duration, PeerId)> = self
            .peers
            .known()
            .filter(|(id, p)| !p.is_penalised(now) && pred(id, p))
            .map(|(id, p)| {
                // A draining peer is about to leave: pull from it only as a last resort.
                let draining = p.status.as_ref().is_some_and(|s| s.draining);
                (p.is_busy(now) || draining, p.rank_rtt(), *id)
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, _, id)| id).collect()
    }

    /// The announcement of a segment in the window.
    pub fn announcement(&self, id: &segment::Id) -> Option<&Verified<Announcement>> {
        self.streams
            .get(&id.stream)?
            .entries
            .get(&id.seq)
            .map(|e| &e.announcement)
    }

    /// True if this node holds the segment's bytes.
    pub fn is_held(&self, id: &segment::Id) -> bool {
        self.streams
            .get(&id.stream)
            .and_then(|s| s.entries.get(&id.seq))
            .is_some_and(|e| e.held.is_some())
    }

    /// A stream's state.
    pub fn stream(&self, name: &stream::Name) -> Option<&StreamState> {
        self.streams.get(name)
    }

    /// All streams.
    pub fn streams(&self) -> impl Iterator<Item = &StreamState> {
        self.streams.values()
    }

    /// The peer table.
    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// True if players ask for `stream` here (it has sessions), or a peer asked this
    /// node to pre-warm it: its segments are pulled as they are announced.
    pub fn is_watched(&self, stream: &stream::Name) -> bool {
        self.sessions.demanded(stream) || self.is_warm(stream)
    }

    /// Viewers of `stream` here: sessions that fetched media.
    pub fn viewer_count(&self, stream: &stream::Name) -> usize {
        self.sessions.counts(stream).watching
    }

    /// The streams part of this node's status: every stream with held segments.
    pub fn held_streams(&self) -> Vec<StreamHeld> {
        self.streams
            .values()
            .filter_map(|s| {
                let (first_seq, last_seq) = s.held_range()?;
                Some(StreamHeld {
                    name: s.name.clone(),
                    first_seq,
                    last_seq,
                    ingest: s.ingest_here,
                    ended: s.ended(),
                    viewers: self.viewer_count(&s.name) as u32,
                    bitrate_bps: s.bitrate_bps().unwrap_or(0),
                })
            })
            .take(status::MAX_STREAMS)
            .collect()
    }

    /// This node's ingest claims, for its status.
    pub fn ingest_claims(&self) -> Vec<IngestClaim> {
        self.claims
            .iter()
            .map(|(name, c)| IngestClaim {
                name: name.clone(),
                since: c.since,
            })
            .take(status::MAX_STREAMS)
            .collect()
    }

    /// The ingest node the mesh follows for `stream`: among this node (if an encoder
    /// pushes here) and live peers claiming it, the earliest claim, then the lowest id.
    /// Every node computes the same answer from the same statuses.
    pub fn active_source(&self, stream: &stream::Name) -> Option<PeerId> {
        let mine = self.claims.get(stream).map(|c| (c.since, self.me));
        let theirs = self.peers.known().filter_map(|(id, p)| {
            let s = p.status.as_ref()?;
            let claim = s.ingesting.iter().find(|c| &c.name == stream)?;
            Some((claim.since, *id))
        });
        mine.into_iter().chain(theirs).min().map(|(_, id)| id)
    }

    /// True if `stream` has segments but none new for twice its last segment's duration
    /// plus a second: its source has stopped (a moved or failed encoder), and a node with
    /// an encoder of its own should take over without waiting for the old claim to lapse.
    pub fn source_stalled(&self, stream: &stream::Name, now: Instant) -> bool {
        let Some(s) = self.streams.get(stream) else {
            return false;
        };
        let (Some(at), Some(last)) = (s.newest_at, s.entries.values().next_back()) else {
            return false;
        };
        let patience =
            Duration::from_millis(2 * u64::from(last.announcement.value.duration_ms) + 1000);
        now.saturating_duration_since(at) > patience
    }

    /// The node that signed the newest segment of `stream`.
    pub fn last_signer(&self, stream: &stream::Name) -> Option<PeerId> {
        let s = self.streams.get(stream)?;
        s.entries
            .values()
            .next_back()
            .map(|e| e.announcement.signer)
    }

    /// How many peers this node has sent a segment to.
    pub fn uploads(&self, id: &segment::Id) -> usize {
        self.streams
            .get(&id.stream)
            .and_then(|s| s.entries.get(&id.seq))
            .map_or(0, |e| e.uploads.len())
    }

    /// Total viewers across streams.
    pub fn total_viewers(&self) -> usize {
        self.sessions.all().map(|(_, c)| c.watching).sum()
    }

    /// Sessions tracked here, pending or watching.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

#[cfg(test)]
mod tests;
