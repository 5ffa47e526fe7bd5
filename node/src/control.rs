//! The control plane: a libp2p swarm with identify, kademlia, gossipsub and ping.
//!
//! It finds peers (bootstrap dials, kademlia walks fed with identify's addresses, and the
//! addresses in peers' statuses), carries signed gossip (checked here: a message that
//! fails verification is rejected and not forwarded), and reports RTTs and connection
//! changes. [`start`] returns a [`Handle`] to send commands, a receiver of [`Event`]s and
//! the [`Driver`] future, which the caller spawns.

use crate::strikes::{self, Strikes};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, identify, kad, noise, ping, tcp,
    yamux,
};
use shoal_protocol::codec;
use shoal_protocol::gossip::{self, Gossip};
use shoal_protocol::identity::Keypair;
use shoal_protocol::segment::{Announcement, StreamEnd};
use shoal_protocol::signed::Verified;
use shoal_protocol::status::Status;
use std::collections::HashMap;
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

/// The behaviours of a Shoal node.
#[derive(NetworkBehaviour)]
struct Behaviour {
    /// Peers banned for misbehaviour (see [`crate::strikes`]): refused and disconnected.
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    ping: ping::Behaviour,
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
    /// First connection to a peer opened (true) or last one closed (false).
    Connection(PeerId, bool),
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
}

impl Handle {
    /// Gossip messages rejected so far and bans imposed, and the peers struck recently
    /// or banned.
    pub fn misbehaviour(&self) -> ((u64, u64), Vec<strikes::Report>) {
        let s = self.strikes.lock().expect("poisoned");
        (s.totals(), s.report(Instant::now()))
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
}

/// The swarm task: spawn it.
pub struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    listen: Arc<Mutex<Vec<Multiaddr>>>,
    status_topic: IdentTopic,
    media_topic: IdentTopic,
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
            })
        })
        .map_err(|e| setup(&e))?
        // Peers stay connected while idle: gossip and liveness need the connections.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();

    let status_topic = IdentTopic::new(gossip::STATUS_TOPIC);
    let media_topic = IdentTopic::new(gossip::MEDIA_TOPIC);
    for topic in [&status_topic, &media_topic] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(topic)
            .map_err(|e| setup(&e))?;
    }
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
    let handle = Handle {
        commands: command_tx,
        listen: listen.clone(),
        bandwidth: Arc::new(Mutex::new(bandwidth)),
        strikes: strikes.clone(),
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
        media_topic,
        dialed: HashMap::new(),
        wanted: bootstrap.clone(),
        bootstrap,
        bootstrapped: false,
        delayed,
        strikes,
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
                    Some(command) => self.on_command(command),
                    None => return,
                },
                _ = walk.tick() => self.walk(),
                _ = maintain.tick() => {
                    self.lift_bans();
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

    /// Lets peers whose ban ended connect again.
    fn lift_bans(&mut self) {
        let ended = self
            .strikes
            .lock()
            .expect("poisoned")
            .expire(Instant::now());
        for peer in ended {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            info!(%peer, "ban lifted");
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
                    gossip::STATUS_TOPIC => self.status_topic.clone(),
                    _ => self.media_topic.clone(),
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
                    self.emit(Event::Connection(peer_id, true)).await;
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
                self.emit(Event::Connection(peer_id, false)).await;
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event).await,
            _ => {}
        }
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
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let verdict = verify(&message.data);
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
        topics: [gossip::STATUS_TOPIC, gossip::MEDIA_TOPIC]
            .iter()
            .map(|t| (IdentTopic::new(*t).hash(), topic.clone()))
            .collect(),
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// Decodes and verifies a gossip message.
pub fn verify(bytes: &[u8]) -> Result<Event, String> {
    let message: Gossip =
        codec::decode_limited(bytes, gossip::MAX_GOSSIP).map_err(|e| e.to_string())?;
    Ok(match message {
        Gossip::Status(s) => {
            let s = s.verify().map_err(|e| e.to_string())?;
            // Out of bounds: a well-behaved node never sends it; not forwarded either.
            s.value.check_bounds().map_err(str::to_string)?;
            Event::Status(s)
        }
        Gossip::Segment(s) => Event::Announcement(s.verify().map_err(|e| e.to_string())?),
        Gossip::End(s) => Event::End(s.verify().map_err(|e| e.to_string())?),
    })
}
