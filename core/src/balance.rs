//! Load balancing: which node serves a viewer, which nodes pre-warm a stream, and drain.
//!
//! Every node decides from the same inputs: its own viewers and the statuses its peers
//! gossip (capacity, the part reserved for ingest and relaying, viewers x bitrate per
//! stream, CPU, draining), plus RTTs it measured itself.
//!
//! - **Cost of one more viewer**: the stream's measured bitrate. A node has headroom for
//!   a viewer when its viewer load plus that bitrate stays within its viewer budget
//!   (capacity minus the reserve for ingest and relaying, or minus the measured relay
//!   egress when that is more). The viewer load is the larger of the model (viewers x
//!   bitrate, plus a startup surcharge) and what viewers were measured to take
//!   ([`viewer_use`]): the model answers at once, the measurement catches what the model
//!   misses (players fetching ahead, bitrate changes).
//! - **Admission**: a viewer's first playlist request is served here when this node has
//!   headroom and is not draining; otherwise it is redirected to the cheapest peer (see
//!   [`cost`]), or refused with a retry delay when no node has room. A redirected viewer
//!   carries a marker and is never redirected again, so redirects cannot loop. Admitted
//!   viewers keep their node; only a draining node's hand-off moves them.
//! - **Stale statuses**: a redirect adds the viewer's bitrate to the target's load here
//!   until its own status has counted the viewer ([`CREDIT_SETTLE`], at most
//!   [`REDIRECT_CREDIT`]), so a burst of arrivals between two statuses does not all land
//!   on one peer.
//! - **Pre-warming**: from the arrival rate of viewers, a node predicts its load one
//!   horizon ahead; if that exceeds its budget it names, in its status, the peers it would
//!   redirect the excess to and that do not hold the stream yet. They start pulling it
//!   before the viewers arrive.

use super::Core;
use super::drain::Drain;
use super::peers::Peer;
use super::viewers::Viewer;
use shoal_protocol::PeerId;
use shoal_protocol::status::{self, Load, WarmRequest};
use shoal_protocol::stream;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a redirect counts against its target's load before the target's own status
/// is trusted to include the viewer (two status intervals).
pub const REDIRECT_CREDIT: Duration = Duration::from_secs(2);
/// A redirect older than this is assumed counted in its target's next status (a viewer
/// follows a redirect within an RTT; a node publishes a changed status within
/// `status_min_interval`).
pub const CREDIT_SETTLE: Duration = Duration::from_secs(1);
/// Time constant of the smoothed egress figures (exponentially weighted): long enough to
/// even out segment-sized bursts, short enough to see a crowd within a few seconds.
pub const EGRESS_SMOOTHING: Duration = Duration::from_secs(2);
/// Arrivals are counted over this long to estimate demand growth.
pub const TREND_WINDOW: Duration = Duration::from_secs(5);
/// What a client refused for lack of room anywhere is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Cost of a node that does not hold the stream yet (it must pull it first), in
/// milliseconds of RTT.
pub const NOT_HOLDING_COST_MS: f64 = 25.0;
/// Cost of a full node over an empty one, in milliseconds of RTT: within a region the
/// emptier node wins; a node 50 ms further away wins only against a full one.
pub const LOAD_COST_MS: f64 = 50.0;
/// Most remembered redirect targets (viewers redirected again go to the same node).
const MAX_STICKY: usize = 100_000;
/// Shed sessions take this long to leave (their next playlist reload, then the smoothed
/// egress must see them gone) before more are shed for the same excess.
pub const SHED_SETTLE: Duration = Duration::from_secs(4);
/// Measured viewer egress may exceed the budget by this fraction before sessions are shed
/// (segment-sized bursts and smoothing noise are not overload).
pub const SHED_TOLERANCE: f64 = 0.05;
/// Most arrivals remembered per stream for the demand trend.
const MAX_ARRIVALS: usize = 100_000;

/// Where a viewer should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The node.
    pub peer: PeerId,
    /// Its HTTP address (`None`: this node).
    pub http: Option<SocketAddr>,
}

/// The answer to a viewer's playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Serve it here (it now counts as this node's viewer).
    Serve,
    /// Send it to this peer.
    Redirect(Target),
    /// No node has room: try again later.
    Full {
        /// When to retry.
        retry_after: Duration,
    },
}

/// The balancer's memory.
#[derive(Debug, Default)]
pub struct State {
    /// Redirects not yet reflected in their target's status: (target, bps, when).
    credits: Vec<(PeerId, u64, Instant)>,
    /// Where each redirected viewer was sent, so it is sent there again.
    sticky: HashMap<(stream::Name, u128), (PeerId, Instant)>,
    /// Recent new-viewer arrivals per stream (served or redirected).
    arrivals: HashMap<stream::Name, VecDeque<Instant>>,
    /// Pre-warm requests this node gossips.
    warm_out: Vec<WarmRequest>,
    /// Streams peers asked this node to pre-warm, until when.
    warm_in: BTreeMap<stream::Name, Instant>,
    /// This node's CPU use, permille of all cores.
    cpu_permille: u16,
    /// Smoothed measured egress: (total, relay) bits per second, and when last updated.
    egress: Option<(f64, f64, Instant)>,
    /// Sessions that started watching within the configured startup window of their
    /// admission: (admitted, bitrate). Each costs its bitrate once more while it fills
    /// its buffer.
    startups: VecDeque<(Instant, u64)>,
    /// Sessions marked to be moved away for overload: (when, bits per second).
    shed: Vec<(Instant, u64)>,
}

/// The viewer budget of a node with `load`: capacity minus what ingest and relaying
/// take (the reserve, or the measured relay egress when it is more); `None`: no limit.
pub fn viewer_budget(load: &Load) -> Option<u64> {
    (load.capacity_bps > 0).then(|| {
        load.capacity_bps
            .saturating_sub(load.reserve_bps.max(load.relay_bps))
    })
}

/// What a node's viewers take, as far as it is known: the larger of its modelled viewer
/// load and its measured egress to viewers (total minus relaying).
pub fn viewer_use(load: &Load) -> u64 {
    load.viewer_load_bps
        .max(load.egress_bps.saturating_sub(load.relay_bps))
}

/// The cost of sending a viewer to a node (lower is better), in milliseconds: its RTT,
/// plus [`NOT_HOLDING_COST_MS`] if it does not hold the stream, plus [`LOAD_COST_MS`]
/// times its viewer-budget use after taking the viewer (0 to 1).
pub fn cost(rtt: Duration, holds: bool, utilization_after: f64) -> f64 {
    let hold = if holds { 0.0 } else { NOT_HOLDING_COST_MS };
    rtt.as_secs_f64() * 1000.0 + hold + LOAD_COST_MS * utilization_after.clamp(0.0, 1.0)
}

/// Budget use after adding `add` to `used` (0 when there is no limit).
fn utilization(used: u64, add: u64, budget: Option<u64>) -> f64 {
    match budget {
        None => 0.0,
        Some(0) => 1.0,
        Some(b) => (used + add) as f64 / b as f64,
    }
}

fn fits(used: u64, add: u64, budget: Option<u64>) -> bool {
    budget.is_none_or(|b| used.saturating_add(add) <= b)
}

impl State {
    /// Streams peers asked this node to pre-warm, not yet expired.
    pub(crate) fn warm_streams(&self) -> impl Iterator<Item = &stream::Name> {
        self.warm_in.keys()
    }
}

impl Core {
    /// This node's load figures.
    pub fn own_load(&self) -> Load {
        let (egress, relay) = self
            .balance
            .egress
            .map_or((0, 0), |(t, r, _)| (t as u64, r as u64));
        Load {
            capacity_bps: self.config.egress_capacity_bps,
            reserve_bps: self.reserve_bps(),
            viewer_load_bps: self.viewer_load_bps(),
            egress_bps: egress,
            relay_bps: relay,
            viewers: self.total_viewers() as u32,
            cpu_permille: self.balance.cpu_permille,
        }
    }

    /// The egress kept from viewers for ingest and relaying: the configured reserve, or
    /// one copy of every stream ingested here when that is more (the mesh must be fed
    /// whatever the viewers want). At most the capacity.
    pub fn reserve_bps(&self) -> u64 {
        let ingest: u64 = self
            .streams
            .values()
            .filter(|s| s.ingest_here)
            .filter_map(|s| s.bitrate_bps())
            .sum();
        self.config
            .ingest_reserve_bps
            .max(ingest)
            .min(self.config.egress_capacity_bps)
    }

    /// What this node's viewers cost: watching sessions x bitrate, summed over streams,
    /// plus the bitrate once more for each session still filling its buffer
    /// ([`Config::startup_window`](super::Config::startup_window)), and so for each
    /// pending one (admitted, no media yet: about to fetch its first segments).
    pub fn viewer_load_bps(&self) -> u64 {
        let surcharge = if self.config.startup_window.is_zero() {
            1
        } else {
            2
        };
        let sessions: u64 = self
            .sessions
            .all()
            .map(|(name, c)| {
                (c.watching as u64 + surcharge * c.pending as u64) * self.bitrate_bps(name)
            })
            .sum();
        sessions + self.balance.startups.iter().map(|(_, b)| b).sum::<u64>()
    }

    fn admit(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) -> Admission {
        if self.sessions.admit(stream, viewer, now) {
            // Players start near the live edge: pull what they will ask for first.
            self.prefetch_stream(stream);
        }
        Admission::Serve
    }

    /// A session admitted at `admitted` fetched its first media: it costs its bitrate once
    /// more until the startup window closes.
    pub(super) fn note_startup(&mut self, stream: &stream::Name, admitted: Instant, now: Instant) {
        let window = self.config.startup_window;
        if window.is_zero()
            || now.saturating_duration_since(admitted) >= window
            || self.balance.startups.len() >= MAX_ARRIVALS
        {
            return;
        }
        let bitrate = self.bitrate_bps(stream);
        // Kept in admission order (the queue expires from the front).
        let at = self
            .balance
            .startups
            .iter()
            .rposition(|(t, _)| *t <= admitted)
            .map_or(0, |i| i + 1);
        self.balance.startups.insert(at, (admitted, bitrate));
    }

    /// Marks the newest sessions to be moved to other nodes when the measured egress to
    /// viewers exceeds the budget (identities the model could not tell apart, players
    /// fetching far ahead): they are redirected at their next playlist reload, so they
    /// move without a stall.
    pub(super) fn shed_excess(&mut self, now: Instant) {
        self.balance
            .shed
            .retain(|(at, _)| now.saturating_duration_since(*at) < SHED_SETTLE);
        let load = self.own_load();
        let Some(budget) = viewer_budget(&load) else {
            return;
        };
        let measured = load.egress_bps.saturating_sub(load.relay_bps);
        if (measured as f64) <= budget as f64 * (1.0 + SHED_TOLERANCE) {
            return;
        }
        let leaving: u64 = self.balance.shed.iter().map(|(_, b)| b).sum();
        let excess = measured.saturating_sub(budget).saturating_sub(leaving);
        if excess == 0 {
            return;
        }
        let rates: HashMap<stream::Name, u64> = self
            .sessions
            .all()
            .map(|(name, _)| (name.clone(), self.bitrate_bps(name)))
            .collect();
        let marked = self
            .sessions
            .shed_newest(excess, |name| rates.get(name).copied().unwrap_or(0));
        if marked > 0 {
            self.balance.shed.push((now, marked));
        }
    }

    /// The cost of one more viewer of `stream`: its bitrate as measured here, else as a
    /// peer reports it, else 0 (unknown).
    pub fn bitrate_bps(&self, stream: &stream::Name) -> u64 {
        if let Some(b) = self.streams.get(stream).and_then(|s| s.bitrate_bps()) {
            return b;
        }
        self.peers
            .known()
            .filter_map(|(_, p)| p.status.as_ref())
            .flat_map(|s| s.streams.iter())
            .filter(|h| &h.name == stream)
            .map(|h| h.bitrate_bps)
            .max()
            .unwrap_or(0)
    }

    /// Records this node's CPU use (permille of all cores).
    pub fn set_cpu(&mut self, permille: u16) {
        self.balance.cpu_permille = permille;
    }

    /// How many peers each segment is sent to: the configured fan-out, or fewer when the
    /// egress this node's viewers leave free cannot carry that many copies of every
    /// stream it holds (at least one: the mesh must always be fed). Peers turned away go
    /// to the holders already fed, so relaying moves to nodes with room.
    pub fn upload_limit(&self) -> usize {
        let fanout = self.config.fanout.max(1);
        let capacity = self.config.egress_capacity_bps;
        if capacity == 0 {
            return fanout;
        }
        let per_copy: u64 = self
            .streams
            .values()
            .filter(|s| s.held_range().is_some())
            .filter_map(|s| s.bitrate_bps())
            .sum();
        if per_copy == 0 {
            return fanout;
        }
        let room = capacity.saturating_sub(viewer_use(&self.own_load()));
        ((room / per_copy) as usize).clamp(1, fanout)
    }

    /// True if this node's smoothed measured egress is above its capacity.
    pub fn over_capacity(&self) -> bool {
        let load = self.own_load();
        load.capacity_bps > 0 && load.egress_bps > load.capacity_bps
    }

    /// Records a measurement of this node's egress, bits per second: `total` (viewers
    /// and peers) and the part of it sent to peers, `relay`, each averaged since the
    /// previous measurement. Smoothed over [`EGRESS_SMOOTHING`].
    pub fn observe_egress(&mut self, total: u64, relay: u64, now: Instant) {
        let (total, relay) = (total as f64, relay as f64);
        self.balance.egress = Some(match self.balance.egress {
            None => (total, relay, now),
            Some((t, r, at)) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let a = 1.0 - (-dt / EGRESS_SMOOTHING.as_secs_f64()).exp();
                (t + a * (total - t), r + a * (relay - r), now)
            }
        });
    }

    fn cpu_ok(&self, permille: u16) -> bool {
        let limit = self.config.cpu_limit_permille;
        limit == 0 || permille <= limit
    }

    /// True if this node can take one more viewer of `stream`.
    pub fn has_headroom(&self, stream: &stream::Name) -> bool {
        let load = self.own_load();
        self.cpu_ok(load.cpu_permille)
            && fits(
                viewer_use(&load),
                self.bitrate_bps(stream),
                viewer_budget(&load),
            )
    }

    /// Decides a viewer's playlist request for `stream`. `redirected` is set when the
    /// request carries the redirect marker (it was sent here by a peer).
    pub fn admit_viewer(
        &mut self,
        stream: &stream::Name,
        viewer: impl Into<Viewer>,
        redirected: bool,
        now: Instant,
    ) -> Admission {
        let viewer = viewer.into();
        self.note_viewer_request(now);
        if let Some(shed) = self.sessions.playlist(stream, viewer, now) {
            if (shed || self.drain() == Some(Drain::HandOff))
                && let Some(target) = self.redirect(stream, viewer, now)
            {
                self.sessions.remove(stream, viewer);
                return Admission::Redirect(target);
            }
            return Admission::Serve;
        }
        self.note_arrival(stream, now);
        let room = self.has_headroom(stream);
        if room && redirected {
            return self.admit(stream, viewer, now);
        }
        if room && self.drain().is_none() {
            // With a capacity set, a stream this node does not hold yet costs one more
            // copy in the mesh: a cheaper holder (near, with room) takes the viewer.
            if let Some(target) = self.cheaper_holder(stream, viewer, now) {
                return Admission::Redirect(target);
            }
            return self.admit(stream, viewer, now);
        }
        if !redirected && let Some(target) = self.redirect(stream, viewer, now) {
            return Admission::Redirect(target);
        }
        if room {
            // Draining, but no peer can take the viewer: serving beats refusing.
            return self.admit(stream, viewer, now);
        }
        Admission::Full {
            retry_after: RETRY_AFTER,
        }
    }

    /// The best node for a new viewer of `stream`, this one included (`http: None`), for
    /// a front end (`GET /route/{stream}`). A peer chosen is charged the viewer's bitrate
    /// as a redirect would be.
    pub fn route(&mut self, stream: &stream::Name, now: Instant) -> Option<Target> {
        self.prune_credits(now);
        let bitrate = self.bitrate_bps(stream);
        let load = self.own_load();
        let mine = (self.drain().is_none() && self.has_headroom(stream)).then(|| {
            let holds = self
                .streams
                .get(stream)
                .is_some_and(|s| s.newest().is_some());
            let util = utilization(viewer_use(&load), bitrate, viewer_budget(&load));
            cost(Duration::ZERO, holds, util)
        });
        let best_peer = self.candidates(stream, bitrate, now).into_iter().next();
        match (mine, best_peer) {
            (Some(m), Some((c, peer, http))) if c < m => {
                Some(self.charge(peer, http, bitrate, now))
            }
            (Some(_), _) => Some(Target {
                peer: self.me,
                http: None,
            }),
            (None, Some((_, peer, http))) => Some(self.charge(peer, http, bitrate, now)),
            (None, None) => None,
        }
    }

    /// A peer holding `stream` that is cheaper (see [`cost`]) than serving it here, when
    /// this node has a capacity and does not hold the stream.
    fn cheaper_holder(
        &mut self,
        stream: &stream::Name,
        viewer: Viewer,
        now: Instant,
    ) -> Option<Target> {
        let holds = self
            .streams
            .get(stream)
            .is_some_and(|s| s.held_range().is_some());
        let load = self.own_load();
        let budget = viewer_budget(&load);
        if holds || budget.is_none() {
            return None;
        }
        self.prune_credits(now);
        let bitrate = self.bitrate_bps(stream);
        let here = cost(
            Duration::ZERO,
            false,
            utilization(viewer_use(&load), bitrate, budget),
        );
        let (best, peer, http) = self.candidates(stream, bitrate, now).into_iter().next()?;
        let holder = self.peers.get(&peer)?.newest(stream).is_some();
        if !holder || best >= here {
            return None;
        }
        Some(self.send(stream, viewer, peer, http, bitrate, now))
    }

    /// Picks the peer a viewer of `stream` is redirected to: the one it was sent to before
    /// if that peer is still a fit, else the cheapest eligible peer.
    fn redirect(&mut self, stream: &stream::Name, viewer: Viewer, now: Instant) -> Option<Target> {
        self.prune_credits(now);
        let key = (stream.clone(), viewer.session);
        // Sticky while the target is not over its budget (the viewer may be counted
        // there already).
        if let Some((peer, _)) = self.balance.sticky.get(&key).copied()
            && let Some(p) = self.peers.get(&peer)
            && let Some(http) = self.eligible(p, now)
            && p.status
                .as_ref()
                .is_some_and(|s| fits(viewer_use(&s.load), 0, viewer_budget(&s.load)))
        {
            self.balance.sticky.insert(key, (peer, now));
            return Some(Target {
                peer,
                http: Some(http),
            });
        }
        let bitrate = self.bitrate_bps(stream);
        let (_, peer, http) = self.candidates(stream, bitrate, now).into_iter().next()?;
        Some(self.send(stream, viewer, peer, http, bitrate, now))
    }

    /// Sends a new viewer to `peer`: remembered, so the viewer goes there again, and
    /// charged to the peer's load.
    fn send(
        &mut self,
        stream: &stream::Name,
        viewer: Viewer,
        peer: PeerId,
        http: SocketAddr,
        bitrate: u64,
        now: Instant,
    ) -> Target {
        if self.balance.sticky.len() >= MAX_STICKY {
            let idle = self.config.viewer_idle;
            self.balance
                .sticky
                .retain(|_, (_, at)| now.saturating_duration_since(*at) <= idle);
        }
        if self.balance.sticky.len() < MAX_STICKY {
            self.balance
                .sticky
                .insert((stream.clone(), viewer.session), (peer, now));
        }
        self.charge(peer, http, bitrate, now)
    }

    fn charge(&mut self, peer: PeerId, http: SocketAddr, bps: u64, now: Instant) -> Target {
        self.balance.credits.push((peer, bps, now));
        Target {
            peer,
            http: Some(http),
        }
    }

    /// A fresh status from `peer` arrived: its redirects older than [`CREDIT_SETTLE`] are
    /// in it.
    pub(super) fn settle_credits(&mut self, peer: PeerId, now: Instant) {
        self.balance
            .credits
            .retain(|(p, _, at)| *p != peer || now.saturating_duration_since(*at) < CREDIT_SETTLE);
    }

    fn prune_credits(&mut self, now: Instant) {
        self.balance
            .credits
            .retain(|(_, _, at)| now.saturating_duration_since(*at) < REDIRECT_CREDIT);
    }

    /// A peer's HTTP address if it may be sent viewers at all (has a status, not draining,
    /// not penalised, CPU under the limit).
    fn eligible(&self, p: &Peer, now: Instant) -> Option<SocketAddr> {
        let s = p.status.as_ref()?;
        (!s.draining && !p.is_penalised(now) && self.cpu_ok(s.load.cpu_permille))
            .then_some(s.http_addr)
    }

    /// Peers with headroom for one more viewer of `stream`, cheapest first, with their
    /// cost and HTTP address.
    fn candidates(
        &self,
        stream: &stream::Name,
        bitrate: u64,
        now: Instant,
    ) -> Vec<(f64, PeerId, SocketAddr)> {
        let mut found: Vec<(f64, PeerId, SocketAddr)> = self
            .peers
            .known()
            .filter_map(|(id, p)| {
                let http = self.eligible(p, now)?;
                let load = &p.status.as_ref()?.load;
                let used = viewer_use(load) + self.credited(id);
                let budget = viewer_budget(load);
                if !fits(used, bitrate, budget) {
                    return None;
                }
                let holds = p.newest(stream).is_some();
                let c = cost(p.rank_rtt(), holds, utilization(used, bitrate, budget));
                Some((c, *id, http))
            })
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        found
    }

    fn credited(&self, peer: &PeerId) -> u64 {
        self.balance
            .credits
            .iter()
            .filter(|(p, _, _)| p == peer)
            .map(|(_, bps, _)| bps)
            .sum()
    }

    fn note_arrival(&mut self, stream: &stream::Name, now: Instant) {
        let known = self.balance.arrivals.contains_key(stream);
        if !known && self.balance.arrivals.len() >= self.config.max_streams {
            return;
        }
        let arrivals = self.balance.arrivals.entry(stream.clone()).or_default();
        if arrivals.len() < MAX_ARRIVALS {
            arrivals.push_back(now);
        }
    }

    /// Recomputes the pre-warm requests from the arrival trend (called from the tick).
    pub(super) fn update_prewarm(&mut self, now: Instant) {
        while self
            .balance
            .startups
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.config.startup_window)
        {
            self.balance.startups.pop_front();
        }
        for arrivals in self.balance.arrivals.values_mut() {
            while arrivals
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > TREND_WINDOW)
            {
                arrivals.pop_front();
            }
        }
        self.balance.arrivals.retain(|_, a| !a.is_empty());
        self.balance.warm_in.retain(|_, until| now < *until);
        self.prune_credits(now);
        let load = self.own_load();
        let mut requests = Vec::new();
        if let Some(budget) = viewer_budget(&load) {
            let horizon = self.config.prewarm_horizon.as_secs_f64();
            let mut streams: Vec<(&stream::Name, usize)> = self
                .balance
                .arrivals
                .iter()
                .map(|(name, a)| (name, a.len()))
                .collect();
            streams.sort();
            for (name, count) in streams {
                let rate = count as f64 / TREND_WINDOW.as_secs_f64();
                let bitrate = self.bitrate_bps(name);
                let predicted = viewer_use(&load) as f64 + rate * horizon * bitrate as f64;
                let excess = predicted - budget as f64;
                if excess <= 0.0 || bitrate == 0 {
                    continue;
                }
                let peers = self.warm_choice(name, bitrate, excess, now);
                if !peers.is_empty() {
                    requests.push(WarmRequest {
                        stream: name.clone(),
                        peers,
                    });
                }
                if requests.len() >= status::MAX_WARM {
                    break;
                }
            }
        }
        if requests != self.balance.warm_out {
            self.balance.warm_out = requests;
            self.mark_dirty();
        }
    }

    /// The peers that would take `excess` bps of new viewers of `stream` and do not hold
    /// it yet, in the order viewers would be redirected to them.
    fn warm_choice(
        &self,
        stream: &stream::Name,
        bitrate: u64,
        excess: f64,
        now: Instant,
    ) -> Vec<PeerId> {
        let mut covered = 0.0;
        let mut chosen = Vec::new();
        for (_, id, _) in self.candidates(stream, bitrate, now) {
            if covered >= excess || chosen.len() >= status::MAX_WARM_PEERS {
                break;
            }
            let Some(p) = self.peers.get(&id) else {
                continue;
            };
            let Some(load) = p.status.as_ref().map(|s| &s.load) else {
                continue;
            };
            let room = viewer_budget(load).map_or(f64::INFINITY, |b| {
                b.saturating_sub(viewer_use(load) + self.credited(&id)) as f64
            });
            covered += room;
            if p.newest(stream).is_none() {
                chosen.push(id);
            }
        }
        chosen
    }

    /// Takes the pre-warm requests in a peer's status; returns the streams newly warmed
    /// here.
    pub(super) fn take_warm_requests(
        &mut self,
        requests: &[WarmRequest],
        now: Instant,
    ) -> Vec<stream::Name> {
        let mut new = Vec::new();
        let until = now + self.config.warm_ttl;
        for r in requests.iter().filter(|r| r.peers.contains(&self.me)) {
            let known = self.balance.warm_in.contains_key(&r.stream);
            if !known && self.balance.warm_in.len() >= self.config.max_streams {
                continue;
            }
            if self
                .balance
                .warm_in
                .insert(r.stream.clone(), until)
                .is_none()
            {
                new.push(r.stream.clone());
            }
        }
        new
    }

    /// True if a peer asked this node to pre-warm `stream` recently.
    pub fn is_warm(&self, stream: &stream::Name) -> bool {
        self.balance.warm_in.contains_key(stream)
    }

    /// The pre-warm requests for this node's status.
    pub fn warm_requests(&self) -> Vec<WarmRequest> {
        self.balance.warm_out.clone()
    }
}

#[cfg(test)]
mod tests;
