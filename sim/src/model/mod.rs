//! Model mode: many real [`shoal_core::Core`]s in a discrete-event loop, in virtual time.
//!
//! The same brain the `shoal` binary runs, with the sockets replaced by events: a status
//! or an announcement is gossiped to every node after the delay of its path; a pull's
//! request reaches the holder after the one-way delay, is admitted by the holder's own
//! core (`admit_upload`: fan-out, busy answers naming the fed peers), queues on the
//! holder's upload link and lands after its serialisation time plus the way back. A node
//! asked for a segment it is still pulling answers when its pull lands (store and
//! forward), as the runtime does. Nothing sleeps: thousands of simulated seconds run in
//! wall-clock milliseconds, and a given spec gives the same figures every time.
//!
//! What the model leaves out (a real run has it): CPU time beyond a fixed cost per
//! transfer ([`TRANSFER_WORK`]) and per gossip hop ([`GOSSIP_HOP`]), QUIC's congestion control
//! (a transfer gets the uploader's whole link, queued behind earlier ones), gossipsub's
//! exact mesh (a message takes `hops(N)` hops, see [`gossip_delay`]), and lost packets.

pub mod net;
pub mod scenario;
#[cfg(test)]
mod tests;

use net::Net;
use shoal_core::drain::Drain;
use shoal_core::ingest_source::Role;
use shoal_core::own_status::Facts;
use shoal_core::pull::{PullFailed, PullId, PullResult, PullStep, Pulled};
use shoal_core::{Action, Config, Core, Upload, requester_key};
use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::gossip::MediaShard;
use shoal_protocol::identity::Keypair;
use shoal_protocol::segment::{self, Announcement, Container};
use shoal_protocol::signed::{Signed, Verified};
use shoal_protocol::status::Status;
use shoal_protocol::stream;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request to a dead node fails after this long (the data plane's QUIC idle timeout).
pub const DEAD_PEER: Duration = Duration::from_secs(6);
/// Gossipsub's mesh degree (`mesh_n`): a message reaches N nodes in about log_6 N hops.
pub const GOSSIP_DEGREE: f64 = 6.0;
/// What one gossip hop adds besides the path's delay (a node's receive, check and
/// forward).
pub const GOSSIP_HOP: Duration = Duration::from_micros(500);
/// The work of one segment transfer besides moving its bytes: the request, a QUIC
/// stream, the blake3 check and the store. Measured on this machine's loopback
/// (BENCHMARKS.md "First byte": a 200 KB pull from a peer takes 2.9 ms against 0.2 ms
/// for a held segment, of which the bytes take ~0.7 ms at the relay bench's rate).
pub const TRANSFER_WORK: Duration = Duration::from_millis(2);
/// Copies of a gossip message a node receives: gossipsub floods a node's own message to
/// every subscribed peer, and every node forwards what it receives to its mesh peers
/// (6 to 12) without knowing who has it; signatures are checked once. Estimated from the
/// mesh degree and checked against real runs (BENCHMARKS.md "Control plane").
pub const GOSSIP_COPIES: u64 = 8;
/// Bytes around one gossip copy on the wire: the protobuf RPC, yamux and noise framing.
pub const GOSSIP_FRAMING: u64 = 64;
/// Bytes a node spends advertising one message it holds: its id (~22 B in an IHAVE) to
/// 6 peers at each of the 3 heartbeats it stays in the gossip window.
pub const GOSSIP_IHAVE: u64 = 6 * 3 * 22;

/// Time a segment is given to reach everyone before it counts as missed.
pub const SETTLE: Duration = Duration::from_secs(10);

/// A stream fed into the model.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Its name.
    pub name: String,
    /// The nodes its encoder pushes into (more than one: redundant encoders).
    pub ingest: Vec<usize>,
    /// Segment size in bytes.
    pub segment_bytes: u64,
    /// Segment duration.
    pub segment: Duration,
    /// Segments produced (the first at `start`).
    pub segments: u64,
    /// When the first segment is complete.
    pub start: Duration,
}

/// What the model counts.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// For each (segment, node) that got it by a pull: time from its ingest to held there.
    pub propagation: Vec<Duration>,
    /// Uploads of each segment by the node that ingested it.
    pub origin_uploads: BTreeMap<(usize, u64), u32>,
    /// (segment, node) pairs that should have been reached (a watching node, alive when
    /// the segment was made and at the end) and were not.
    pub missed: Vec<(usize, u64, usize)>,
    /// Busy answers given.
    pub busy: u64,
    /// Pulls that ended without bytes.
    pub failed_pulls: u64,
    /// Segment transfers between nodes, and their bytes.
    pub transfers: u64,
    /// Media bytes between nodes.
    pub media_bytes: u64,
    /// Transfers between nodes of different regions, per segment.
    pub cross_region: BTreeMap<(usize, u64), u32>,
    /// Gossip bytes received, summed over the nodes (statuses and announcements).
    pub control_bytes: u64,
    /// Signatures checked, summed over the nodes (each gossip message received once).
    pub verifications: u64,
    /// Gossip bytes on the wire, estimated: each message received from up to
    /// [`GOSSIP_COPIES`] peers with its framing, and advertised in IHAVEs.
    pub control_wire_bytes: u64,
    /// The same two by kind of message: (bytes, messages) received.
    pub control_by_kind: BTreeMap<&'static str, (u64, u64)>,
    /// For each killed node and each live node that knew it: time from the kill until
    /// that node's core declared it gone.
    pub detection: Vec<Duration>,
    /// (live node, killed node) pairs where the killed node was still taken for alive
    /// at the end (killed at least `SETTLE` before it).
    pub undetected: u64,
    /// Live peers declared gone (a false suspicion; they come back with their next
    /// status).
    pub false_gone: u64,
    /// For each stream and each node watching it: time from the stream's first segment's
    /// ingest until that node knew of the segment (its announcement reached the core).
    pub first_known: Vec<Duration>,
    /// Segments ingested (announced by the leading ingest node).
    pub segments: u64,
    /// Segments an ingest node held back as a standby.
    pub held_back: u64,
    /// Source switches: (stream, when, the node now leading).
    pub switches: Vec<(usize, Duration, usize)>,
    /// Nodes that left after draining, and when.
    pub left: Vec<(usize, Duration)>,
    /// Events the loop handled (the model's own work).
    pub events: u64,
}

/// One modelled node: a core, and what its runtime would keep beside it.
struct Node {
    core: Core,
    peer: PeerId,
    keypair: Keypair,
    addr: SocketAddr,
    /// When it started (None: not yet).
    started: Option<Duration>,
    alive: bool,
    status_version: u64,
    /// The tick scheduled at the core's `poll_timeout` (earlier ones are stale).
    next_tick: Option<Duration>,
    /// Streams a viewer watches here.
    watching: Vec<stream::Name>,
    /// Pulls in flight: what each fetches, and the pull of each segment (coalescing).
    pulls: HashMap<PullId, segment::Id>,
    pulling: HashMap<segment::Id, PullId>,
    /// Requests from peers for a segment this node is still pulling: (peer, their pull).
    parked: HashMap<segment::Id, Vec<(usize, PullId)>>,
}

/// A scheduled event.
enum Ev {
    Tick {
        node: usize,
        at: Duration,
    },
    Start(usize),
    Kill(usize),
    Drain {
        node: usize,
        serve_for: Duration,
    },
    Segment {
        stream: usize,
        n: u64,
    },
    MoveIngest {
        stream: usize,
        to: usize,
    },
    Status {
        to: usize,
        from: usize,
        status: Arc<Status>,
    },
    Announce {
        to: usize,
        // Boxed: the heap moves events around, and this is the largest.
        a: Box<Verified<Announcement>>,
    },
    Manifest {
        to: usize,
        from: usize,
        stream: stream::Name,
    },
    Send {
        node: usize,
        pull: PullId,
        // Boxed, as a peer id is large (see `Announce`).
        peer: Box<PeerId>,
    },
    Ask {
        holder: usize,
        from: usize,
        pull: PullId,
        id: segment::Id,
    },
    Answer {
        to: usize,
        pull: PullId,
        peer: usize,
        result: PullResult,
    },
    Resume {
        node: usize,
        pull: PullId,
    },
}

struct Timed {
    at: Duration,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A modelled mesh.
pub struct Model {
    base: Instant,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<Timed>>,
    nodes: Vec<Node>,
    net: Net,
    by_key: HashMap<u128, usize>,
    by_peer: HashMap<PeerId, usize>,
    streams: Vec<StreamSpec>,
    /// When each segment was ingested, and at which node.
    ingested: HashMap<(usize, u64), Duration>,
    source: HashMap<(usize, u64), usize>,
    held: HashMap<(usize, u64), Vec<usize>>,
    /// Each stream's index by name.
    stream_ix: HashMap<String, usize>,
    /// When each killed node was killed.
    killed_at: HashMap<usize, Duration>,
    /// (stream, node) pairs whose first segment is known there.
    first_known: std::collections::HashSet<(usize, usize)>,
    /// The nodes subscribed to each media shard (as their cores decided).
    subscribers: HashMap<MediaShard, BTreeSet<usize>>,
    figures: Figures,
}

/// Delay of a gossip message from `a` to `b` in a mesh of `n`: the path's one-way delay,
/// plus a hop's work for each of the log_6 N hops it takes.
pub fn gossip_delay(net: &Net, n: usize, a: usize, b: usize) -> Duration {
    let hops = (n.max(2) as f64).log(GOSSIP_DEGREE).ceil().max(1.0) as u32;
    net.one_way(a, b) + GOSSIP_HOP * hops
}

/// Wire bytes of one gossip message of `size` bytes at one receiver, among `n` nodes on
/// its topic.
fn wire_bytes(size: u64, n: usize) -> u64 {
    let copies = GOSSIP_COPIES.min(n.saturating_sub(1) as u64).max(1);
    copies * (size + GOSSIP_FRAMING) + GOSSIP_IHAVE
}

impl Model {
    /// A mesh of `net`'s nodes, each running a core with `config`; all start at time 0
    /// except those in `late` (start them with [`Model::start_at`]).
    pub fn new(nodes: usize, net: Net, config: Config, late: &[usize]) -> Self {
        let base = epoch();
        let mut model = Self {
            base,
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::with_capacity(nodes),
            net,
            by_key: HashMap::new(),
            by_peer: HashMap::new(),
            streams: Vec::new(),
            ingested: HashMap::new(),
            source: HashMap::new(),
            held: HashMap::new(),
            stream_ix: HashMap::new(),
            killed_at: HashMap::new(),
            first_known: std::collections::HashSet::new(),
            subscribers: HashMap::new(),
            figures: Figures::default(),
        };
        for i in 0..nodes {
            let keypair = node_keypair(i);
            let peer = keypair.public().to_peer_id();
            let addr = node_addr(i);
            model.by_key.insert(requester_key(addr), i);
            model.by_peer.insert(peer, i);
            model.nodes.push(Node {
                core: Core::new(peer, config.clone()),
                peer,
                keypair,
                addr,
                started: None,
                alive: false,
                status_version: 1,
                next_tick: None,
                watching: Vec::new(),
                pulls: HashMap::new(),
                pulling: HashMap::new(),
                parked: HashMap::new(),
            });
            if !late.contains(&i) {
                model.schedule(Duration::ZERO, Ev::Start(i));
            }
        }
        model
    }

    /// Adds a stream: its encoder pushes a segment into its ingest nodes every segment
    /// duration.
    pub fn add_stream(&mut self, spec: StreamSpec) {
        let stream = self.streams.len();
        self.stream_ix.insert(spec.name.clone(), stream);
        self.schedule(spec.start, Ev::Segment { stream, n: 0 });
        self.streams.push(spec);
    }

    /// A viewer watches `stream` at `node` from the start (the node prefetches it).
    pub fn watch(&mut self, node: usize, stream: &str) {
        let name = stream::Name::new(stream).expect("valid stream name");
        self.nodes[node].watching.push(name);
    }

    /// Starts node `node` at `at`.
    pub fn start_at(&mut self, node: usize, at: Duration) {
        self.schedule(at, Ev::Start(node));
    }

    /// Kills node `node` at `at`: it stops answering, and its peers notice by silence.
    pub fn kill_at(&mut self, node: usize, at: Duration) {
        self.schedule(at, Ev::Kill(node));
    }

    /// From `at`, the stream's encoder pushes into node `to` only.
    pub fn move_ingest_at(&mut self, stream: &str, to: usize, at: Duration) {
        if let Some(i) = self.streams.iter().position(|s| s.name == stream) {
            self.schedule(at, Ev::MoveIngest { stream: i, to });
        }
    }

    /// Drains node `node` from `at`, serving its viewers for at most `serve_for`; it
    /// leaves when its core says so.
    pub fn drain_at(&mut self, node: usize, at: Duration, serve_for: Duration) {
        self.schedule(at, Ev::Drain { node, serve_for });
    }

    /// Runs until `end` (virtual time since the start) and returns the figures.
    pub fn run(mut self, end: Duration) -> Figures {
        while let Some(Reverse(next)) = self.queue.pop() {
            if next.at > end {
                break;
            }
            self.now = next.at;
            self.figures.events += 1;
            self.handle(next.ev);
        }
        self.tally();
        self.figures
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn schedule(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Timed {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(i) => {
                let now = self.instant();
                let node = &mut self.nodes[i];
                node.started = Some(self.now);
                node.alive = true;
                node.next_tick = None;
                // Its viewers ask for their streams' playlists.
                for stream in node.watching.clone() {
                    node.core.handle_wanted(&stream, now);
                }
                self.run_actions(i);
            }
            Ev::Kill(i) => {
                self.nodes[i].alive = false;
                for subscribers in self.subscribers.values_mut() {
                    subscribers.remove(&i);
                }
                self.killed_at.insert(i, self.now);
            }
            Ev::Drain { node, serve_for } => {
                if self.nodes[node].alive {
                    let now = self.instant();
                    self.nodes[node].core.start_drain(serve_for, now);
                    self.run_actions(node);
                }
            }
            Ev::Tick { node: i, at } => {
                if !self.nodes[i].alive || self.nodes[i].next_tick != Some(at) {
                    return;
                }
                let now = self.instant();
                let node = &mut self.nodes[i];
                node.next_tick = None;
                node.core.handle_tick(now);
                self.run_actions(i);
            }
            Ev::Segment { stream, n } => self.ingest(stream, n),
            Ev::MoveIngest { stream, to } => self.streams[stream].ingest = vec![to],
            Ev::Status { to, from, status } => {
                if self.nodes[to].alive {
                    let now = self.instant();
                    let peer = self.nodes[from].peer;
                    let rtt = self.net.rtt(to, from);
                    let core = &mut self.nodes[to].core;
                    core.handle_status(peer, Status::clone(&status), now);
                    // The runtime dials every peer a status names and pings it.
                    core.handle_rtt(peer, rtt, now);
                    self.run_actions(to);
                }
            }
            Ev::Announce { to, a } => {
                if self.nodes[to].alive {
                    let now = self.instant();
                    let stream = a.value.id.stream.clone();
                    let _ = self.nodes[to].core.handle_announcement(*a, now);
                    self.note_known(to, &stream);
                    self.watch_media(to, &stream);
                    self.run_actions(to);
                }
            }
            Ev::Manifest { to, from, stream } => {
                if self.nodes[to].alive && self.nodes[from].alive {
                    let now = self.instant();
                    let entries: Vec<Verified<Announcement>> = self.nodes[from]
                        .core
                        .stream(&stream)
                        .map(|s| s.entries.values().map(|e| e.announcement.clone()).collect())
                        .unwrap_or_default();
                    for a in entries {
                        let _ = self.nodes[to].core.handle_announcement(a, now);
                    }
                    self.note_known(to, &stream);
                    self.watch_media(to, &stream);
                    self.run_actions(to);
                }
            }
            Ev::Send { node, pull, peer } => self.send(node, pull, *peer),
            Ev::Ask {
                holder,
                from,
                pull,
                id,
            } => self.ask(holder, from, pull, id),
            Ev::Answer {
                to,
                pull,
                peer,
                result,
            } => {
                if !self.nodes[to].alive {
                    return;
                }
                let now = self.instant();
                let peer_id = self.nodes[peer].peer;
                let step = self.nodes[to]
                    .core
                    .handle_pull_result(pull, peer_id, result, now);
                self.carry(to, pull, step);
            }
            Ev::Resume { node, pull } => {
                if self.nodes[node].alive {
                    let now = self.instant();
                    let step = self.nodes[node].core.resume_pull(pull, now);
                    self.carry(node, pull, step);
                }
            }
        }
    }

    /// The encoder(s) deliver their `n`th segment of `stream` to its ingest nodes; each
    /// node's core decides whether it leads (announces it) or stands by
    /// ([`shoal_core::Core::ingest_role`]).
    fn ingest(&mut self, stream: usize, n: u64) {
        let spec = self.streams[stream].clone();
        if n + 1 < spec.segments {
            self.schedule(self.now + spec.segment, Ev::Segment { stream, n: n + 1 });
        }
        let name = stream::Name::new(&spec.name).expect("valid stream name");
        for &node in &spec.ingest {
            if self.nodes[node].alive {
                self.deliver(stream, &name, node);
            }
        }
    }

    /// Node `node`'s encoder delivered a segment of `stream`.
    fn deliver(&mut self, stream: usize, name: &stream::Name, node: usize) {
        let spec = &self.streams[stream];
        let (duration, size) = (spec.segment, spec.segment_bytes);
        let now = self.instant();
        let core = &mut self.nodes[node].core;
        core.handle_ingest_activity(name, self.now.as_millis() as u64, now);
        let after = match core.ingest_role(name, now) {
            Role::Lead { after } => after,
            Role::Standby { .. } => {
                self.figures.held_back += 1;
                self.run_actions(node);
                return;
            }
        };
        let seq = core
            .stream(name)
            .and_then(|s| s.newest())
            .map_or(0, |newest| newest + 1);
        let announcement = Announcement {
            id: segment::Id {
                stream: name.clone(),
                seq,
            },
            duration_ms: duration.as_millis() as u32,
            size,
            hash: ContentId::of(format!("{name}/{seq}/{node}").as_bytes()),
            container: Container::Ts,
            init: None,
            discontinuity: after.is_some(),
            ingested_at: self.now.as_millis() as u64,
        };
        let signed = Signed::sign(&self.nodes[node].keypair, &announcement).expect("signs");
        let bytes = signed.encoded_len() as u64;
        let verified = signed.verify().expect("own signature");
        if self.nodes[node]
            .core
            .handle_ingested(verified.clone(), now)
            .is_err()
        {
            return;
        }
        if after.is_some() {
            self.figures.switches.push((stream, self.now, node));
        }
        self.ingested.insert((stream, seq), self.now);
        self.source.insert((stream, seq), node);
        self.figures.segments += 1;
        self.held.entry((stream, seq)).or_default().push(node);
        let shard = MediaShard::of(name);
        self.gossip_shard(node, shard, bytes, |to| Ev::Announce {
            to,
            a: Box::new(verified.clone()),
        });
        self.run_actions(node);
    }

    /// Delivers a gossip message of `size` bytes from `from` to every other started node.
    fn gossip(&mut self, from: usize, kind: &'static str, size: u64, make: impl Fn(usize) -> Ev) {
        let n = self.nodes.len();
        for to in 0..n {
            if to == from || !self.nodes[to].alive {
                continue;
            }
            self.figures.control_bytes += size;
            self.figures.verifications += 1;
            self.figures.control_wire_bytes += wire_bytes(size, n);
            let k = self.figures.control_by_kind.entry(kind).or_default();
            k.0 += size;
            k.1 += 1;
            let at = self.now + gossip_delay(&self.net, n, from, to);
            self.schedule(at, make(to));
        }
    }

    /// Delivers a media message of `size` bytes from `from` to the other nodes
    /// subscribed to `shard`, after the path's delay and the hops of the shard's own
    /// gossipsub mesh.
    fn gossip_shard(
        &mut self,
        from: usize,
        shard: MediaShard,
        size: u64,
        make: impl Fn(usize) -> Ev,
    ) {
        let to: Vec<usize> = self
            .subscribers
            .get(&shard)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&to| to != from && self.nodes[to].alive)
            .collect();
        let n = to.len() + 1;
        for to in to {
            self.figures.control_bytes += size;
            self.figures.verifications += 1;
            self.figures.control_wire_bytes += wire_bytes(size, n);
            let k = self
                .figures
                .control_by_kind
                .entry("announcement")
                .or_default();
            k.0 += size;
            k.1 += 1;
            let at = self.now + gossip_delay(&self.net, n, from, to);
            self.schedule(at, make(to));
        }
    }

    /// Records when `stream`'s first segment became known at node `i`, if it watches it.
    fn note_known(&mut self, i: usize, stream: &stream::Name) {
        let Some(s) = self.stream_index(stream) else {
            return;
        };
        let Some(at) = self.ingested.get(&(s, 0)).copied() else {
            return;
        };
        if self.first_known.contains(&(s, i)) || !self.nodes[i].watching.contains(stream) {
            return;
        }
        let first = segment::Id {
            stream: stream.clone(),
            seq: 0,
        };
        if self.nodes[i].core.announcement(&first).is_some() {
            self.first_known.insert((s, i));
            self.figures.first_known.push(self.now.saturating_sub(at));
        }
    }

    /// Node `i`'s viewers of `stream` fetch its newest segment (players keep up with the
    /// live edge: a request per new segment). A node handing off has redirected them.
    fn watch_media(&mut self, i: usize, stream: &stream::Name) {
        let now = self.instant();
        let node = &mut self.nodes[i];
        if node.core.drain() == Some(Drain::HandOff) {
            return;
        }
        if let Some(v) = node.watching.iter().position(|w| w == stream) {
            node.core.handle_media(stream, v as u128 + 1, now);
        }
    }

    /// Schedules node `i`'s next tick at its core's `poll_timeout`, unless one is
    /// already due no later.
    fn reschedule(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if !node.alive {
            return;
        }
        let at = node
            .core
            .poll_timeout()
            .map_or(self.now, |t| t.saturating_duration_since(self.base))
            .max(self.now);
        if node.next_tick.is_none_or(|t| at < t) {
            node.next_tick = Some(at);
            self.schedule(at, Ev::Tick { node: i, at });
        }
    }

    /// Carries out node `i`'s pending actions, as the runtime's `run_actions` does, and
    /// schedules its next tick.
    fn run_actions(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].core.poll_action() {
            match action {
                Action::PublishStatus => self.publish_status(i),
                Action::Prefetch(id) => self.start_pull(i, id),
                Action::Probe(peer) => {
                    if let Some(&j) = self.by_peer.get(&peer) {
                        let rtt = self.net.rtt(i, j);
                        let now = self.instant();
                        self.nodes[i].core.handle_data_rtt(peer, rtt, now);
                    }
                }
                Action::Sync { stream, from } => {
                    if let Some(&j) = self.by_peer.get(&from) {
                        let at = self.now + self.net.rtt(i, j);
                        self.schedule(
                            at,
                            Ev::Manifest {
                                to: i,
                                from: j,
                                stream,
                            },
                        );
                    }
                }
                Action::Leave => {
                    self.nodes[i].alive = false;
                    self.figures.left.push((i, self.now));
                }
                Action::PeerGone(peer) => {
                    let Some(&j) = self.by_peer.get(&peer) else {
                        continue;
                    };
                    match self.killed_at.get(&j) {
                        Some(&at) => self.figures.detection.push(self.now.saturating_sub(at)),
                        None if self.nodes[j].alive => self.figures.false_gone += 1,
                        None => {}
                    }
                }
                Action::Subscribe(shard) => {
                    self.subscribers.entry(shard).or_default().insert(i);
                }
                Action::Unsubscribe(shard) => {
                    if let Some(s) = self.subscribers.get_mut(&shard) {
                        s.remove(&i);
                    }
                }
                Action::Evict(_) | Action::EvictInit(_) | Action::Drain(_) => {}
            }
        }
        self.reschedule(i);
    }

    fn publish_status(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.status_version += 1;
        let facts = Facts {
            version: node.status_version,
            issued_at: self.now.as_millis() as u64,
            data_addr: node.addr,
            cert_fingerprint: ContentId::of(&node.addr.port().to_le_bytes()),
            http_addr: node.addr,
            p2p_addrs: Vec::new(),
        };
        let status = node.core.status(facts);
        let size = Signed::sign(&node.keypair, &status)
            .map(|s| s.encoded_len() as u64)
            .unwrap_or(0);
        let status = Arc::new(status);
        self.gossip(i, "status", size, |to| Ev::Status {
            to,
            from: i,
            status: status.clone(),
        });
    }

    /// Node `i` pulls segment `id` (one pull per segment, as the runtime coalesces).
    fn start_pull(&mut self, i: usize, id: segment::Id) {
        let now = self.instant();
        let node = &mut self.nodes[i];
        if node.pulling.contains_key(&id) || node.core.is_held(&id) {
            return;
        }
        let (pull, step) = node.core.start_pull(Pulled::Segment(id.clone()), now);
        if !matches!(step, PullStep::Done(_)) {
            node.pulls.insert(pull, id.clone());
            node.pulling.insert(id, pull);
        }
        self.carry(i, pull, step);
    }

    /// Carries out one step of node `i`'s pull.
    fn carry(&mut self, i: usize, pull: PullId, step: PullStep) {
        match step {
            PullStep::Request { peer, at } => {
                let at = at.saturating_duration_since(self.base);
                if at > self.now {
                    self.schedule(
                        at,
                        Ev::Send {
                            node: i,
                            pull,
                            peer: Box::new(peer),
                        },
                    );
                } else {
                    self.send(i, pull, peer);
                }
            }
            PullStep::Wait { at } => {
                let at = at.saturating_duration_since(self.base).max(self.now);
                self.schedule(at, Ev::Resume { node: i, pull });
            }
            PullStep::Done(result) => self.finish(i, pull, result),
        }
    }

    fn send(&mut self, i: usize, pull: PullId, peer: PeerId) {
        let Some(id) = self.nodes[i].pulls.get(&pull).cloned() else {
            return;
        };
        match self.by_peer.get(&peer) {
            Some(&holder) => {
                let at = self.now + self.net.one_way(i, holder);
                self.schedule(
                    at,
                    Ev::Ask {
                        holder,
                        from: i,
                        pull,
                        id,
                    },
                );
            }
            None => {
                let now = self.instant();
                let step =
                    self.nodes[i]
                        .core
                        .handle_pull_result(pull, peer, PullResult::Failed, now);
                self.carry(i, pull, step);
            }
        }
    }

    /// A request from `from` for `id` reaches `holder`.
    fn ask(&mut self, holder: usize, from: usize, pull: PullId, id: segment::Id) {
        let back = self.net.one_way(holder, from);
        if !self.nodes[holder].alive {
            let at = self.now + DEAD_PEER;
            self.answer(at, from, pull, holder, PullResult::Failed);
            return;
        }
        let h = &mut self.nodes[holder];
        if !h.core.is_held(&id) && h.pulling.contains_key(&id) {
            // Store and forward: answered when this node's own pull lands.
            h.parked.entry(id).or_default().push((from, pull));
            return;
        }
        let key = requester_key(self.nodes[from].addr);
        match self.nodes[holder].core.admit_upload(&id, key) {
            Upload::Serve => {
                let size = self.nodes[holder]
                    .core
                    .announcement(&id)
                    .map_or(0, |a| a.value.size);
                let sent = self.net.upload(holder, size, self.now);
                self.figures.transfers += 1;
                self.figures.media_bytes += size;
                if let Some(stream) = self.stream_index(&id.stream) {
                    let key = (stream, id.seq);
                    if !self.net.same_region(holder, from) {
                        *self.figures.cross_region.entry(key).or_default() += 1;
                    }
                    if self.source.get(&key) == Some(&holder) {
                        *self.figures.origin_uploads.entry(key).or_default() += 1;
                    }
                }
                self.answer(
                    sent + back + TRANSFER_WORK,
                    from,
                    pull,
                    holder,
                    PullResult::Bytes,
                );
            }
            Upload::Busy(fed) => {
                self.figures.busy += 1;
                self.answer(
                    self.now + back,
                    from,
                    pull,
                    holder,
                    PullResult::Busy { fed },
                );
            }
            Upload::NotHeld => {
                self.answer(self.now + back, from, pull, holder, PullResult::Failed);
            }
        }
    }

    fn answer(&mut self, at: Duration, to: usize, pull: PullId, peer: usize, result: PullResult) {
        self.schedule(
            at,
            Ev::Answer {
                to,
                pull,
                peer,
                result,
            },
        );
    }

    /// Node `i`'s pull is over: keep the segment, and answer the requests it held back.
    fn finish(&mut self, i: usize, pull: PullId, result: Result<PeerId, PullFailed>) {
        let Some(id) = self.nodes[i].pulls.remove(&pull) else {
            return;
        };
        self.nodes[i].pulling.remove(&id);
        let now = self.instant();
        match result {
            Ok(from) => {
                if self.nodes[i].core.handle_fetched(&id, from, now)
                    && let Some(stream) = self.stream_index(&id.stream)
                {
                    let key = (stream, id.seq);
                    if let Some(at) = self.ingested.get(&key) {
                        self.figures.propagation.push(self.now - *at);
                    }
                    self.held.entry(key).or_default().push(i);
                }
            }
            Err(_) => self.figures.failed_pulls += 1,
        }
        for (from, their_pull) in self.nodes[i].parked.remove(&id).unwrap_or_default() {
            self.ask(i, from, their_pull, id.clone());
        }
        self.run_actions(i);
    }

    fn stream_index(&self, name: &stream::Name) -> Option<usize> {
        self.stream_ix.get(name.as_str()).copied()
    }

    /// Which watching nodes, alive at the end, missed which segments.
    fn tally(&mut self) {
        for (&(stream, seq), at) in &self.ingested {
            let name = &self.streams[stream].name;
            let holders = self.held.get(&(stream, seq));
            for (i, node) in self.nodes.iter().enumerate() {
                let watches = node.watching.iter().any(|w| w.as_str() == name);
                // Segments made before the node started are not owed to it.
                let owed = node.started.is_some_and(|t| t <= *at);
                if !watches || !node.alive || !owed {
                    continue;
                }
                if !holders.is_some_and(|h| h.contains(&i)) && *at + SETTLE < self.now {
                    self.figures.missed.push((stream, seq, i));
                }
            }
        }
        self.figures.missed.sort_unstable();
        for (&j, &at) in &self.killed_at {
            if at + SETTLE >= self.now {
                continue;
            }
            let peer = self.nodes[j].peer;
            self.figures.undetected += self
                .nodes
                .iter()
                .filter(|n| n.alive && n.core.peers().get(&peer).is_some())
                .count() as u64;
        }
    }
}

/// The model's epoch: virtual time is an offset from it.
fn epoch() -> Instant {
    Instant::now()
}

/// A deterministic identity for node `i`.
fn node_keypair(i: usize) -> Keypair {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    seed[31] = 0x6d;
    Keypair::ed25519_from_bytes(seed).expect("valid seed")
}

/// A distinct data-plane address for node `i` (never dialled: it keys fan-out counts).
fn node_addr(i: usize) -> SocketAddr {
    let [a, b, c, d] = (i as u32).to_be_bytes();
    SocketAddr::from(([10, a.wrapping_add(b), c, d], 4000))
}
