//! The control plane: a libp2p swarm with identify, kademlia, gossipsub and ping.
//!
//! It finds peers (bootstrap dials, kademlia walks fed with identify's addresses, and the
//! addresses in peers' statuses), carries signed gossip (checked here: a message that
//! fails verification is rejected and not forwarded), and reports RTTs and connection
//! changes. In a closed mesh it admits only peers whose [`hello`] carries a valid
//! membership credential ([`crate::members`]) and takes gossip only from them. [`start`]
//! returns a [`Handle`] to send commands, a receiver of [`Event`]s and
//! the [`Driver`] future, which the caller spawns.

pub mod hello;

use crate::members::Members;
use crate::strikes::{self, Strikes};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, identify, kad, noise, ping,
    request_response, tcp, yamux,
};
use shoal_protocol::codec;
use shoal_protocol::gossip::{self, Gossip, MediaShard};
use shoal_protocol::identity::Keypair;
use shoal_protocol::membership::{Hello, MembershipError, Revocations};
use shoal_protocol::segment::{Announcement, StreamEnd};
use shoal_protocol::signed::{Signed, Verified};
use shoal_protocol::status::Status;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Protocol name for identify.
const IDENTIFY_PROTOCOL: &str = "/shoal/id/1";
/// Kademlia protocol name: a Shoal mesh is its own DHT.
const KAD_PROTOCOL: &str = "/shoal/kad/1";
/// How often to walk the DHT for new peers.
const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(30);
/// Ping often enough that RTTs are fresh and a dead connection shows within seconds.
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// Least time between two dials of the same peer.
const REDIAL_INTERVAL: Duration = Duration::from_secs(2);
/// How often wanted peers that are not connected are dialed again.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// Most peers kept on the redial list.
const MAX_WANTED: usize = 512;
/// Commands queued to the swarm task before senders wait.
const COMMAND_QUEUE: usize = 1024;
/// Events queued to the node before the swarm task waits.
const EVENT_QUEUE: usize = 4096;
/// How long a peer refused for its credential (or for none) is kept out before it may
/// try again (a node restarted with a fixed credential gets in after this).
const REFUSED_BLOCK: Duration = Duration::from_secs(30);
/// Warn about this node's own credential once it expires within this.
const CREDENTIAL_WARNING: u64 = 24 * 3600;

/// The behaviours of a Shoal node.
#[derive(NetworkBehaviour)]
struct Behaviour {
    /// Peers banned for misbehaviour (see [`crate::strikes`]): refused and disconnected.
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    ping: ping::Behaviour,
    hello: hello::Behaviour,
}

/// Something the control plane observed.
#[derive(Debug)]
pub enum Event {
    /// A verified status.
    Status(Verified<Status>),
    /// A verified segment announcement.
    Announcement(Verified<Announcement>),
    /// A verified end of stream.
    End(Verified<StreamEnd>),
    /// A ping RTT.
    Rtt(PeerId, Duration),
    /// First connection to a peer opened (true) or last one closed (false). In a closed
    /// mesh a connection counts once the peer's credential checked.
    Connection(PeerId, bool),
    /// A member was cut from the mesh (revoked, or its credential expired): forget it
    /// now, do not wait for its status to time out.
    Excluded(PeerId),
    /// A revocation list from gossip, to be checked against the mesh CA here (never
    /// emitted to the node).
    Revocations(Signed<Revocations>),
}

/// Something for the control plane to do.
#[derive(Debug)]
pub enum Command {
    /// Publish a gossip message.
    Publish(Gossip),
    /// Connect to a peer at these addresses, unless already connected, and keep
    /// reconnecting while it is wanted.
    Dial(PeerId, Vec<Multiaddr>),
    /// The peer is gone: close every connection to it (stale ones included) and stop
    /// redialing it unless it is a bootstrap peer. A node that restarted then gets a
    /// fresh first connection, on which gossipsub exchanges subscriptions.
    Forget(PeerId),
    /// Subscribe to a media shard's topic (the core carries a stream in it).
    Subscribe(MediaShard),
    /// Unsubscribe from a media shard's topic.
    Unsubscribe(MediaShard),
    /// A revocation list was taken (through the admin API): cut the members it names,
    /// refuse the peers it names, save it and gossip it.
    Revoked(Signed<Revocations>, Vec<PeerId>),
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Building the transport or behaviours failed.
    #[error("libp2p setup: {0}")]
    Setup(String),
    /// A listen address could not be used.
    #[error("cannot listen on {0}: {1}")]
    Listen(Multiaddr, String),
    /// A bootstrap address has no /p2p/ peer id.
    #[error("bootstrap address {0} must end with /p2p/PEERID")]
    Bootstrap(Multiaddr),
}

/// Sends commands to the swarm task and reads its listen addresses.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    listen: Arc<Mutex<Vec<Multiaddr>>>,
    bandwidth: Arc<Mutex<libp2p::metrics::Registry>>,
    strikes: Arc<Mutex<Strikes>>,
    members: Arc<Mutex<Members>>,
    verified: Arc<AtomicU64>,
}

impl Handle {
    /// Membership state, for status.
    pub fn membership(&self) -> crate::members::Report {
        self.members.lock().expect("poisoned").report()
    }

    /// Whether the mesh is closed (peers need a credential).
    pub fn membership_closed(&self) -> bool {
        self.members.lock().expect("poisoned").is_closed()
    }

    /// Whether `peer` is a member (always, in an open mesh).
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.members.lock().expect("poisoned").allows(peer)
    }

    /// Takes a revocation list from an operator: checked against the mesh CA; if newer
    /// than the one held, applied here at once and gossiped. Returns whether it was
    /// newer.
    pub fn revoke(&self, list: Signed<Revocations>) -> Result<bool, MembershipError> {
        let mut members = self.members.lock().expect("poisoned");
        if !members.is_closed() {
            return Err(MembershipError::WrongCa);
        }
        let cut = members.take_revocations(&list)?;
        let issued = list.verify().map(|v| v.value.issued).ok();
        let newer = members.report().revocations_issued == issued;
        drop(members);
        if newer {
            self.send(Command::Revoked(list, cut));
        }
        Ok(newer)
    }

    /// Gossip messages rejected so far and bans imposed, and the peers struck recently
    /// or banned.
    pub fn misbehaviour(&self) -> ((u64, u64), Vec<strikes::Report>) {
        let s = self.strikes.lock().expect("poisoned");
        (s.totals(), s.report(Instant::now()))
    }

    /// Gossip messages verified so far (one signature check each: gossipsub hands a
    /// message over once, however many peers forwarded it).
    pub fn gossip_verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Bytes the control plane (libp2p: gossip, Kademlia, identify, ping, with their
    /// encryption and multiplexing) has sent and received on the wire so far.
    pub fn wire_bytes(&self) -> (u64, u64) {
        let mut text = String::new();
        let registry = self.bandwidth.lock().expect("poisoned");
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return (0, 0);
        }
        let (mut out, mut r#in) = (0u64, 0u64);
        for line in text
            .lines()
            .filter(|l| l.starts_with("libp2p_bandwidth_bytes_total"))
        {
            let value = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            if line.contains("direction=\"Outbound\"") {
                out += value;
            } else {
                r#in += value;
            }
        }
        (out, r#in)
    }

    /// Queues a command; drops it (with a warning) if the queue is full, so callers never
    /// block on the control plane.
    pub fn send(&self, command: Command) {
        if let Err(e) = self.commands.try_send(command) {
            warn!(error = %e, "control-plane command dropped");
        }
    }

    /// Addresses the swarm listens on.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.lock().expect("poisoned").clone()
    }
}

/// An emulated one-way delay for what a peer sends this node (the simulator's regions):
/// gossip from it is handed to the node that much later, and its ping RTT grows by twice
/// that. Messages keep their order.
#[derive(Clone)]
pub struct PeerDelay(Arc<dyn Fn(&PeerId) -> Duration + Send + Sync>);

impl PeerDelay {
    /// A delay chosen by `f` from the sending peer.
    pub fn new(f: impl Fn(&PeerId) -> Duration + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The delay from `peer`.
    pub fn from(&self, peer: &PeerId) -> Duration {
        (self.0)(peer)
    }
}

impl std::fmt::Debug for PeerDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerDelay(..)")
    }
}

/// Control-plane settings.
pub struct Config {
    /// The node's identity.
    pub keypair: Keypair,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through (each with /p2p/PEERID).
    pub bootstrap: Vec<Multiaddr>,
    /// Emulated latency of what peers send (none: as the network delivers it).
    pub delay: Option<PeerDelay>,
    /// Membership: open, or closed with the CA and this node's credential.
    pub members: Members,
    /// Where the newest revocation list is kept across restarts.
    pub revocations_file: Option<PathBuf>,
}

/// The swarm task: spawn it.
pub struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    listen: Arc<Mutex<Vec<Multiaddr>>>,
    status_topic: IdentTopic,
    dialed: HashMap<PeerId, Instant>,
    wanted: HashMap<PeerId, Vec<Multiaddr>>,
    bootstrap: HashMap<PeerId, Vec<Multiaddr>>,
    bootstrapped: bool,
    /// With an emulated delay: the delay, and the queue of events held for it.
    delayed: Option<(
        PeerDelay,
        mpsc::UnboundedSender<(tokio::time::Instant, Event)>,
    )>,
    /// Peers' rejected gossip and bans (shared with the [`Handle`] for status).
    strikes: Arc<Mutex<Strikes>>,
    /// Membership (shared with the [`Handle`] and, through it, the data plane).
    members: Arc<Mutex<Members>>,
    /// Gossip messages verified (see [`Handle::gossip_verified`]).
    verified: Arc<AtomicU64>,
    /// Closed mesh: connected peers whose hello has not come yet, since when.
    pending: HashMap<PeerId, Instant>,
    /// Peers refused for their credential, kept out until then.
    refused: HashMap<PeerId, Instant>,
    /// Peers blocked because the revocation list names them.
    revoked: HashSet<PeerId>,
    revocations_file: Option<PathBuf>,
    /// When the node last warned that its own credential is about to expire.
    expiry_warned: Option<Instant>,
}

/// Builds the swarm, starts listening and dials the bootstrap peers.
pub fn start(config: Config) -> Result<(Handle, mpsc::Receiver<Event>, Driver), StartError> {
    let setup = |e: &dyn std::fmt::Display| StartError::Setup(e.to_string());
    let mut bandwidth = libp2p::metrics::Registry::default();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| setup(&e))?
        .with_bandwidth_metrics(&mut bandwidth)
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            // Every payload is a signed envelope checked in `verify`, so gossipsub's own
            // per-message signature would only double the ed25519 work: messages travel
            // anonymously and are identified by their content hash.
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .message_id_fn(|m| {
                    gossipsub::MessageId::from(&blake3::hash(&m.data).as_bytes()[..20])
                })
                .validate_messages()
                .max_transmit_size(gossip::MAX_GOSSIP)
                .build()
                .map_err(|e| e.to_string())?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Anonymous,
                gossip_config,
            )?;
            let (params, thresholds) = peer_score();
            gossipsub.with_peer_score(params, thresholds)?;
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
            );
            // Serve DHT queries even without a confirmed external address (LANs, loopback).
            kad.set_mode(Some(kad::Mode::Server));
            Ok(Behaviour {
                blocked: allow_block_list::Behaviour::default(),
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL.into(),
                    key.public(),
                )),
                kad,
                gossipsub,
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
                hello: hello::behaviour(),
            })
        })
        .map_err(|e| setup(&e))?
        // Peers stay connected while idle: gossip and liveness need the connections.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();

    // Media shards are subscribed to as the core decides (`Command::Subscribe`).
    let status_topic = IdentTopic::new(gossip::STATUS_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&status_topic)
        .map_err(|e| setup(&e))?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| StartError::Listen(addr.clone(), e.to_string()))?;
    }
    let mut bootstrap: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
    for addr in &config.bootstrap {
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            return Err(StartError::Bootstrap(addr.clone()));
        };
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        bootstrap.entry(peer).or_default().push(addr.clone());
    }
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let listen = Arc::new(Mutex::new(Vec::new()));
    let strikes = Arc::new(Mutex::new(Strikes::default()));
    // Peers a saved revocation list names are refused from the first dial.
    let revoked: HashSet<PeerId> = config
        .members
        .hello()
        .revocations
        .and_then(|r| r.verify().ok())
        .map(|r| r.value.peers.into_iter().collect())
        .unwrap_or_default();
    for peer in &revoked {
        swarm.behaviour_mut().blocked.block_peer(*peer);
    }
    let members = Arc::new(Mutex::new(config.members));
    let verified = Arc::new(AtomicU64::new(0));
    let handle = Handle {
        commands: command_tx,
        listen: listen.clone(),
        bandwidth: Arc::new(Mutex::new(bandwidth)),
        strikes: strikes.clone(),
        members: members.clone(),
        verified: verified.clone(),
    };
    let delayed = config.delay.map(|delay| {
        let (held_tx, held_rx) = mpsc::unbounded_channel();
        let events = event_tx.clone();
        tokio::spawn(crate::due::release(held_rx, move |event| {
            let events = events.clone();
            async move { events.send(event).await.is_ok() }
        }));
        (delay, held_tx)
    });
    let driver = Driver {
        swarm,
        commands: command_rx,
        events: event_tx,
        listen,
        status_topic,
        dialed: HashMap::new(),
        wanted: bootstrap.clone(),
        bootstrap,
        bootstrapped: false,
        delayed,
        strikes,
        members,
        verified,
        pending: HashMap::new(),
        refused: HashMap::new(),
        revoked,
        revocations_file: config.revocations_file,
        expiry_warned: None,
    };
    Ok((handle, event_rx, driver))
}

impl Driver {
    /// Runs the swarm until every [`Handle`] is dropped.
    pub async fn run(mut self) {
        let mut walk = tokio::time::interval(BOOTSTRAP_INTERVAL);
        walk.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintain = tokio::time::interval(MAINTENANCE_INTERVAL);
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                command = self.commands.recv() => match command {
                    Some(Command::Revoked(list, cut)) => self.revoked(list, cut, true).await,
                    Some(command) => self.on_command(command),
                    None => return,
                },
                _ = walk.tick() => self.walk(),
                _ = maintain.tick() => {
                    self.lift_bans();
                    self.check_members().await;
                    self.redial();
                }
            }
        }
    }

    /// A gossip message from `peer` failed verification: strike it, and ban it when it
    /// has sent too many.
    fn strike(&mut self, peer: PeerId) {
        let verdict = self
            .strikes
            .lock()
            .expect("poisoned")
            .strike(peer, Instant::now());
        if let strikes::Verdict::Ban { .. } = verdict
            && self.swarm.behaviour_mut().blocked.block_peer(peer)
        {
            warn!(%peer, ban_secs = strikes::BAN.as_secs(), "banned a peer sending gossip that fails verification");
            self.wanted.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Lets peers whose ban (or refusal) ended connect again.
    fn lift_bans(&mut self) {
        let now = Instant::now();
        let ended = self.strikes.lock().expect("poisoned").expire(now);
        for peer in ended {
            if self.unblock(peer, now) {
                info!(%peer, "ban lifted");
            }
        }
        let refusals_over: Vec<PeerId> = self
            .refused
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in refusals_over {
            self.refused.remove(&peer);
            self.unblock(peer, now);
        }
    }

    /// Unblocks `peer` unless another reason (a ban, a refusal, the revocation list)
    /// still keeps it out.
    fn unblock(&mut self, peer: PeerId, now: Instant) -> bool {
        let kept_out = self.revoked.contains(&peer)
            || self.refused.contains_key(&peer)
            || self.strikes.lock().expect("poisoned").is_banned(&peer, now);
        !kept_out && self.swarm.behaviour_mut().blocked.unblock_peer(peer)
    }

    /// Closed mesh: refuses peers that sent no hello in time, cuts members whose
    /// credential expired, and warns when this node's own is about to.
    async fn check_members(&mut self) {
        let now = Instant::now();
        let late: Vec<PeerId> = self
            .pending
            .iter()
            .filter(|(_, since)| now.duration_since(**since) > hello::TIMEOUT)
            .map(|(p, _)| *p)
            .collect();
        for peer in late {
            self.refuse(peer, "no hello in time".into());
        }
        let unix = crate::tokens::unix_now();
        let (expired, own) = {
            let mut members = self.members.lock().expect("poisoned");
            (members.expire(unix), members.own_expiry())
        };
        for peer in expired {
            self.cut(peer, "its credential expired", REFUSED_BLOCK)
                .await;
        }
        if let Some(expires) = own
            && expires.saturating_sub(unix) < CREDENTIAL_WARNING
            && self
                .expiry_warned
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(600))
        {
            self.expiry_warned = Some(now);
            warn!(
                expires_in_s = expires.saturating_sub(unix),
                "this node's membership credential expires soon: peers will cut it then; restart it with a new --credential"
            );
        }
    }

    /// Refuses a peer that presented no valid credential: disconnected and kept out for
    /// [`REFUSED_BLOCK`].
    fn refuse(&mut self, peer: PeerId, why: String) {
        self.pending.remove(&peer);
        warn!(%peer, reason = %why, "refused a peer: no valid membership credential");
        self.refused.insert(peer, Instant::now() + REFUSED_BLOCK);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Cuts a member from the mesh: disconnected, kept out (`for_at_least`, or while a
    /// revocation list names it), and forgotten by the node.
    async fn cut(&mut self, peer: PeerId, why: &str, for_at_least: Duration) {
        warn!(%peer, reason = why, "cut a peer from the mesh");
        self.refused.insert(peer, Instant::now() + for_at_least);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        self.wanted.remove(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.emit(Event::Excluded(peer)).await;
    }

    /// A newer revocation list was taken: cuts the members it names (`cut`), keeps out
    /// every peer it names and lets in those a previous list named and this one does
    /// not, saves it, and (if it came from here) gossips it.
    async fn revoked(&mut self, list: Signed<Revocations>, cut: Vec<PeerId>, publish: bool) {
        let Ok(verified) = list.verify() else { return };
        let named: HashSet<PeerId> = verified.value.peers.iter().copied().collect();
        info!(
            issued = verified.value.issued,
            peers = named.len(),
            members_cut = cut.len(),
            "new revocation list"
        );
        let lifted: Vec<PeerId> = self.revoked.difference(&named).copied().collect();
        self.revoked = named;
        let now = Instant::now();
        for peer in lifted {
            self.unblock(peer, now);
        }
        for peer in self.revoked.clone() {
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.pending.remove(&peer);
            if self.swarm.is_connected(&peer) {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
        for peer in cut {
            self.cut(peer, "revoked", Duration::ZERO).await;
        }
        if let Some(path) = &self.revocations_file
            && let Some(text) = self.members.lock().expect("poisoned").revocations_text()
            && let Err(e) = std::fs::write(path, text + "\n")
        {
            warn!(path = %path.display(), error = %e, "cannot save the revocation list");
        }
        if publish {
            self.on_command(Command::Publish(Gossip::Revocations(list)));
        }
    }

    /// Takes a revocation list that came from a peer (gossip or hello). Returns whether
    /// it was the CA's (older lists included).
    async fn take_revocations(&mut self, list: Signed<Revocations>, publish: bool) -> bool {
        let taken = {
            let mut members = self.members.lock().expect("poisoned");
            let before = members.report().revocations_issued;
            members
                .take_revocations(&list)
                .map(|cut| (members.report().revocations_issued != before).then_some(cut))
        };
        match taken {
            Ok(Some(cut)) => {
                self.revoked(list, cut, publish).await;
                true
            }
            Ok(None) => true,
            Err(e) => {
                warn!(error = %e, "refused a revocation list");
                false
            }
        }
    }

    /// A peer's hello (its request or its answer to ours).
    async fn on_hello(&mut self, peer: PeerId, hello: Hello) {
        if !self.members.lock().expect("poisoned").is_closed() {
            return;
        }
        if let Some(list) = hello.revocations.clone() {
            // Learned from a peer: gossip it on, others may not have it yet.
            self.take_revocations(list, true).await;
        }
        let result = {
            let mut members = self.members.lock().expect("poisoned");
            if members.allows(&peer) {
                return;
            }
            members.on_hello(peer, &hello, crate::tokens::unix_now())
        };
        match result {
            Ok(()) if self.swarm.is_connected(&peer) => {
                self.pending.remove(&peer);
                info!(%peer, "peer admitted: its membership credential checked");
                self.emit(Event::Connection(peer, true)).await;
            }
            Ok(()) => self.members.lock().expect("poisoned").forget(&peer),
            Err(e) => self.refuse(peer, e.to_string()),
        }
    }

    /// Dials wanted peers (bootstrap peers, peers seen in statuses) that are not connected.
    fn redial(&mut self) {
        let missing: Vec<(PeerId, Vec<Multiaddr>)> = self
            .wanted
            .iter()
            .filter(|(peer, _)| !self.swarm.is_connected(peer))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (peer, addrs) in missing {
            self.dial(peer, addrs);
        }
    }

    fn walk(&mut self) {
        if self.swarm.connected_peers().next().is_some() {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish(message) => {
                let topic = match message.topic() {
                    Some(t) if t == gossip::STATUS_TOPIC => self.status_topic.clone(),
                    Some(t) => IdentTopic::new(t),
                    None => return warn!("not publishing a media message that does not decode"),
                };
                let bytes = match codec::encode(&message) {
                    Ok(b) => b,
                    Err(e) => return warn!(error = %e, "cannot encode gossip"),
                };
                match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                    Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                    Err(e) => debug!(error = %e, "gossip publish failed"),
                }
            }
            Command::Dial(peer, addrs) => {
                if self.wanted.len() < MAX_WANTED || self.wanted.contains_key(&peer) {
                    self.wanted.insert(peer, addrs.clone());
                }
                self.dial(peer, addrs);
            }
            Command::Forget(peer) => {
                if !self.bootstrap.contains_key(&peer) {
                    self.wanted.remove(&peer);
                }
                if self.swarm.disconnect_peer_id(peer).is_ok() {
                    info!(%peer, "disconnected a peer declared gone");
                }
            }
            Command::Subscribe(shard) => {
                let topic = IdentTopic::new(shard.topic());
                match self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                    Ok(_) => debug!(shard = shard.index(), "subscribed to a media shard"),
                    Err(e) => warn!(shard = shard.index(), error = %e, "cannot subscribe"),
                }
            }
            Command::Unsubscribe(shard) => {
                let topic = IdentTopic::new(shard.topic());
                self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
                debug!(shard = shard.index(), "unsubscribed from a media shard");
            }
            // Applied by the run loop (it needs to emit events).
            Command::Revoked(..) => {}
        }
    }

    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return;
        }
        let now = Instant::now();
        if self
            .dialed
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < REDIAL_INTERVAL)
        {
            return;
        }
        self.dialed.insert(peer, now);
        for addr in &addrs {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "dial failed");
        }
    }

    /// Emits an event that `peer` caused, after the emulated delay from it, if any.
    async fn emit_from(&mut self, peer: &PeerId, event: Event) {
        if let Some((delay, queue)) = &self.delayed {
            let d = delay.from(peer);
            if !d.is_zero() {
                let _ = queue.send((tokio::time::Instant::now() + d, event));
                return;
            }
        }
        self.emit(event).await;
    }

    async fn emit(&mut self, event: Event) {
        // Back-pressure: if the node is slow to consume, the swarm waits rather than
        // dropping statuses and announcements.
        let _ = self.events.send(event).await;
    }

    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address
                    .clone()
                    .with(Protocol::P2p(*self.swarm.local_peer_id()));
                info!(address = %full, "p2p listening");
                self.listen.lock().expect("poisoned").push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen
                    .lock()
                    .expect("poisoned")
                    .retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                if num_established.get() == 1 {
                    info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    let hello = {
                        let members = self.members.lock().expect("poisoned");
                        members.is_closed().then(|| members.hello())
                    };
                    match hello {
                        // Closed mesh: a member once its credential checks.
                        Some(hello) => {
                            self.pending.insert(peer_id, Instant::now());
                            self.swarm
                                .behaviour_mut()
                                .hello
                                .send_request(&peer_id, hello);
                        }
                        None => self.emit(Event::Connection(peer_id, true)).await,
                    }
                }
                if !self.bootstrapped {
                    self.bootstrapped = true;
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                info!(peer = %peer_id, cause = ?cause, "peer disconnected");
                self.pending.remove(&peer_id);
                let was_member = {
                    let mut members = self.members.lock().expect("poisoned");
                    let was = members.allows(&peer_id);
                    members.forget(&peer_id);
                    was || !members.is_closed()
                };
                if was_member {
                    self.emit(Event::Connection(peer_id, false)).await;
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event).await,
            _ => {}
        }
    }

    async fn on_hello_event(&mut self, event: request_response::Event<Hello, Hello>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let ours = self.members.lock().expect("poisoned").hello();
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .hello
                        .send_response(channel, ours);
                    self.on_hello(peer, request).await;
                }
                request_response::Message::Response { response, .. } => {
                    self.on_hello(peer, response).await;
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                if !self.pending.contains_key(&peer) || self.is_member(&peer) {
                    return;
                }
                match error {
                    // Not a Shoal node (or one too old to say hello), or silent: not a
                    // member.
                    request_response::OutboundFailure::UnsupportedProtocols
                    | request_response::OutboundFailure::Timeout => {
                        self.refuse(peer, format!("no hello: {error}"));
                    }
                    // The connection it went on closed (a duplicate of a simultaneous
                    // dial, say): ask again on another one; without one, nothing to do.
                    _ if self.swarm.is_connected(&peer) => {
                        let ours = self.members.lock().expect("poisoned").hello();
                        self.swarm.behaviour_mut().hello.send_request(&peer, ours);
                    }
                    _ => {
                        self.pending.remove(&peer);
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "hello from peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.members.lock().expect("poisoned").allows(peer)
    }

    async fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // Kademlia does not learn addresses from identify by itself.
                for addr in info.listen_addrs.into_iter().take(16) {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                let addrs: Vec<Multiaddr> = addresses.iter().take(8).cloned().collect();
                self.dial(peer, addrs);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                let emulated = self
                    .delayed
                    .as_ref()
                    .map_or(Duration::ZERO, |(d, _)| d.from(&peer));
                self.emit(Event::Rtt(peer, rtt + 2 * emulated)).await
            }
            BehaviourEvent::Hello(event) => self.on_hello_event(event).await,
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                // Closed mesh: only members' gossip is taken (and forwarded). Not a
                // strike: a peer's first messages may beat its hello.
                let (member, closed) = {
                    let members = self.members.lock().expect("poisoned");
                    (members.allows(&propagation_source), members.is_closed())
                };
                if !member {
                    debug!(from = %propagation_source, "ignored gossip from a non-member");
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Ignore,
                        );
                    return;
                }
                let verdict = verify(message.topic.as_str(), &message.data);
                if let Ok(Event::Revocations(list)) = verdict {
                    // Forwarded only if it is the CA's (only newer lists spread far:
                    // gossipsub drops what a node has seen).
                    let acceptance = if !closed {
                        MessageAcceptance::Ignore
                    } else if self.take_revocations(list, false).await {
                        MessageAcceptance::Accept
                    } else {
                        self.strike(propagation_source);
                        MessageAcceptance::Reject
                    };
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            acceptance,
                        );
                    return;
                }
                // Signed by a revoked peer, relayed by a member the list has not reached
                // yet: dropped here, not held against the relay.
                if let Ok(signer) = verdict.as_ref().map(signer)
                    && signer.is_some_and(|s| self.members.lock().expect("poisoned").is_revoked(&s))
                {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Ignore,
                        );
                    return;
                }
                let acceptance = match &verdict {
                    Ok(_) => MessageAcceptance::Accept,
                    Err(e) => {
                        warn!(from = %propagation_source, error = %e, "rejected gossip");
                        MessageAcceptance::Reject
                    }
                };
                if verdict.is_err() {
                    self.strike(propagation_source);
                }
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                if let Ok(event) = verdict {
                    self.verified.fetch_add(1, Ordering::Relaxed);
                    if let Event::Status(s) = &event {
                        tracing::trace!(from = %propagation_source, signer = %s.signer, "status received");
                    }
                    self.emit_from(&propagation_source, event).await;
                }
            }
            _ => {}
        }
    }
}

/// Gossipsub's peer scoring: only invalid messages count (P4, squared), so a peer
/// forwarding messages that fail verification is graylisted after nine in quick
/// succession: a backstop behind Shoal's own ban ([`strikes::LIMIT`] of them), which
/// must see them first. Colocation (many nodes behind one address: tests, NAT) and
/// delivery rates do not count.
fn peer_score() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -1.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    let params = gossipsub::PeerScoreParams {
        topics: MediaShard::all()
            .map(|shard| shard.topic())
            .chain([gossip::STATUS_TOPIC.to_string()])
            .map(|t| (IdentTopic::new(t).hash(), topic.clone()))
            .collect(),
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// Decodes and verifies a gossip message that came on `topic`. One on another topic
/// than its kind's (a media message: its stream's shard's) is refused: a node that
/// carries a stream must not be fed the others through its shard.
pub fn verify(topic: &str, bytes: &[u8]) -> Result<Event, String> {
    let message: Gossip =
        codec::decode_limited(bytes, gossip::MAX_GOSSIP).map_err(|e| e.to_string())?;
    if message.topic().as_deref() != Some(topic) {
        return Err(format!("message on the wrong topic {topic}"));
    }
    Ok(match message {
        Gossip::Status(s) => {
            let s = s.verify().map_err(|e| e.to_string())?;
            // Out of bounds: a well-behaved node never sends it; not forwarded either.
            s.value.check_bounds().map_err(str::to_string)?;
            Event::Status(s)
        }
        Gossip::Segment(s) => Event::Announcement(s.verify().map_err(|e| e.to_string())?),
        Gossip::End(s) => Event::End(s.verify().map_err(|e| e.to_string())?),
        // Checked against the mesh CA by the driver, which knows it.
        Gossip::Revocations(s) => Event::Revocations(s),
    })
}

/// The node that signed what a gossip event carries.
fn signer(event: &Event) -> Option<PeerId> {
    match event {
        Event::Status(v) => Some(v.signer),
        Event::Announcement(v) => Some(v.signer),
        Event::End(v) => Some(v.signer),
        _ => None,
    }
}
