//! The node runtime: starts the three planes around one [`Core`] and carries out its
//! decisions.
//!
//! [`Node::start`] binds the HTTP listener and the quinn endpoint, builds the libp2p
//! swarm, and spawns four tasks: the swarm driver, the data-plane server, the HTTP server
//! and the core driver (control-plane events in, ticks when the core asks for them,
//! actions out).

use crate::apparatus::Apparatus;
use crate::config::NodeConfig;
use crate::control::{self, Command, Event};
use crate::core_guard::CoreGuard;
use crate::data::{self, Provider, Supply};
use crate::fetch::Inflight;
use crate::identity::{self, IdentityError};
use crate::metrics::{Metrics, add};
use crate::store::Store;
use bytes::Bytes;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use shoal_core::own_status::Facts;
use shoal_core::streams::Source;
use shoal_core::{Action, Core, Upload, requester_key};
use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::gossip::Gossip;
use shoal_protocol::identity::Keypair;
use shoal_protocol::segment::Seq;
use shoal_protocol::signed::Signed;
use shoal_protocol::stream;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How often idle ingest state is expired and freed memory returned.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often the RTTs of open data-plane connections are fed to the core.
pub const RTT_REFRESH: Duration = Duration::from_secs(2);
/// How long a data-plane request for a segment this node is still pulling waits for the
/// pull to land before it is answered (not found).
const RELAY_WAIT: Duration = Duration::from_secs(5);
/// How long start-up waits for the swarm to report its listen addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The identity key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The data plane's TLS set-up failed.
    #[error("data-plane TLS: {0}")]
    Tls(String),
    /// A socket could not be bound.
    #[error("bind {what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The control plane could not start.
    #[error(transparent)]
    Control(#[from] control::StartError),
    /// Closed mesh: this node's credential or the revocation list is not good.
    #[error("membership: {0}")]
    Membership(String),
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// State shared by the node's tasks and HTTP handlers. Locks are held briefly and never
/// across an await; when several are needed the order is `ingest`, `core`, `store`.
pub struct Shared {
    pub(crate) keypair: Keypair,
    pub(crate) peer_id: PeerId,
    pub(crate) config: NodeConfig,
    /// The core. Outside the driver, lock it with [`Shared::core`].
    pub(crate) core: Mutex<Core>,
    /// Wakes the core's driver before its next deadline (see [`CoreGuard`]).
    driver_wake: tokio::sync::Notify,
    pub(crate) store: Mutex<Store>,
    pub(crate) ingest: Mutex<crate::ingest::Ingests>,
    pub(crate) conns: Arc<crate::http::conns::Conns>,
    pub(crate) session_ids: crate::http::session::Minter,
    /// Checks viewer tokens (None: anyone may watch).
    pub(crate) viewer_tokens: Option<crate::tokens::Verifier>,
    pub(crate) client: data::client::Client,
    pub(crate) inflight: Inflight,
    pub(crate) control: control::Handle,
    pub(crate) metrics: Metrics,
    pub(crate) http_addr: SocketAddr,
    /// The operators' listener, if it has one of its own.
    pub(crate) admin_addr: Option<SocketAddr>,
    pub(crate) data_addr: SocketAddr,
    /// The RTMP ingest listener's address, if it has one.
    pub(crate) rtmp_addr: Option<SocketAddr>,
    /// The SRT ingest listener's address, if it has one (known once it is bound, after
    /// the rest of the node exists).
    pub(crate) srt_addr: Mutex<Option<SocketAddr>>,
    /// Encoders connected over RTMP or SRT, by stream.
    pub(crate) encoders: crate::encoders::Encoders,
    pub(crate) fingerprint: ContentId,
    pub(crate) started: Instant,
    status_version: AtomicU64,
    egress_sample: Mutex<EgressSample>,
    cpu: Mutex<crate::cpu::CpuMeter>,
    pub(crate) drain_requested: tokio::sync::Notify,
    /// The core's drain is over ([`Action::Leave`]).
    drained: tokio::sync::Notify,
}

/// The last egress measurement: counters at `at` and the rates since the one before.
struct EgressSample {
    at: Instant,
    total: u64,
    relay: u64,
    total_bps: u64,
    relay_bps: u64,
}

/// Headline figures of a node.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Peers with a live status.
    pub peers: usize,
    /// Streams with held segments.
    pub streams: usize,
    /// Current viewers.
    pub viewers: usize,
    /// Where the segments it holds came from (`None`: an encoder, here), most first.
    pub sources: Vec<(Option<PeerId>, usize)>,
    /// Segments held.
    pub segments: usize,
    /// Bytes sent to viewers and peers so far.
    pub egress_bytes: u64,
    /// What its viewers cost (viewers x bitrate), bits per second.
    pub viewer_load_bps: u64,
    /// Its egress capacity (0: none).
    pub capacity_bps: u64,
    /// Media bytes sent to peers so far (the data plane).
    pub relay_bytes: u64,
    /// Bytes the control plane (libp2p) sent so far, on the wire.
    pub control_bytes: u64,
    /// Gossip messages verified so far (one signature check each).
    pub gossip_verified: u64,
}

/// One segment as a node sees it.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo {
    /// When its bytes arrived here (None: announced, not held).
    pub held_at: Option<Instant>,
    /// The peer it was pulled from (None: ingested here, or not held).
    pub from: Option<PeerId>,
    /// Peers this node sent it to over the data plane.
    pub uploads: usize,
    /// True if an encoder pushed it into this node.
    pub ingested: bool,
    /// Its size in bytes (from its announcement).
    pub size: u64,
    /// When its announcement arrived here.
    pub announced_at: Option<Instant>,
}

impl SegmentInfo {
    fn of(entry: &shoal_core::streams::Entry) -> Self {
        Self {
            held_at: entry.held.map(|h| h.at),
            from: match entry.held.map(|h| h.source) {
                Some(Source::Peer(p)) => Some(p),
                _ => None,
            },
            uploads: entry.uploads.len(),
            ingested: entry.held.is_some_and(|h| h.source == Source::Ingest),
            size: entry.announcement.value.size,
            announced_at: entry.announced,
        }
    }
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Starts a node: binds its sockets, joins the mesh through the bootstrap peers and
    /// begins serving.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        Self::start_with(config, Apparatus::default()).await
    }

    /// As [`Node::start`], with a simulator's or a test's hooks between the node and
    /// the network.
    pub async fn start_with(config: NodeConfig, apparatus: Apparatus) -> Result<Node, StartError> {
        let keypair = identity::load_or_create(&config.data_dir)?;
        let peer_id = keypair.public().to_peer_id();
        let tls = Arc::new(data::tls::generate().map_err(|e| StartError::Tls(e.to_string()))?);
        let server_config =
            data::tls::server_config(&tls).map_err(|e| StartError::Tls(e.to_string()))?;
        let bind = |what, addr| move |source| StartError::Bind { what, addr, source };
        let endpoint = crate::apparatus::data_endpoint(&apparatus, server_config, config.data)
            .map_err(bind("data plane", config.data))?;
        let data_addr = endpoint
            .local_addr()
            .map_err(bind("data plane", config.data))?;
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(bind("http", config.http))?;
        let http_addr = listener.local_addr().map_err(bind("http", config.http))?;
        let (admin_listener, admin_addr) = match config.admin_http {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind("admin http", addr))?;
                let local = l.local_addr().map_err(bind("admin http", addr))?;
                (Some(l), Some(local))
            }
            None => (None, None),
        };
        let (rtmp_listener, rtmp_addr) = match config.rtmp {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    let local = l.local_addr().map_err(bind("rtmp", addr))?;
                    (Some(l), Some(local))
                }
                // Several nodes on one host: the first takes the default port.
                Err(e) if !config.rtmp_explicit => {
                    warn!(%addr, error = %e, "default RTMP port unavailable: RTMP ingest off (set --rtmp)");
                    (None, None)
                }
                Err(e) => return Err(bind("rtmp", addr)(e)),
            },
            None => (None, None),
        };
        let revocations_file = config.data_dir.join(crate::members::REVOCATIONS_FILE);
        let members = crate::members::load(
            config.mesh_ca,
            config.credential.as_ref(),
            config.revocations.as_ref(),
            &revocations_file,
            &peer_id,
            crate::tokens::unix_now(),
        )
        .map_err(StartError::Membership)?;
        let closed = members.is_closed();
        let (control, events, driver) = control::start(control::Config {
            keypair: keypair.clone(),
            listen: config.p2p.clone(),
            bootstrap: config.bootstrap.clone(),
            delay: apparatus.control_delay.clone(),
            members,
            revocations_file: closed.then_some(revocations_file),
        })?;
        let session_seed = keypair_seed(&keypair);
        let shared = Arc::new(Shared {
            keypair,
            peer_id,
            core: Mutex::new(Core::new(peer_id, config.core.clone())),
            driver_wake: tokio::sync::Notify::new(),
            store: Mutex::new(Store::default()),
            ingest: Mutex::new(crate::ingest::Ingests::new(config.ingest_limits)),
            conns: crate::http::conns::Conns::new(crate::http::conns::fit_to_fd_limit(
                config.connections,
            )),
            session_ids: crate::http::session::Minter::new(&session_seed),
            viewer_tokens: (!config.viewer_keys.is_empty())
                .then(|| crate::tokens::Verifier::new(&config.viewer_keys)),
            client: data::client::Client::new(endpoint.clone(), tls.clone()),
            inflight: Inflight::default(),
            control,
            metrics: Metrics::default(),
            http_addr,
            admin_addr,
            data_addr,
            rtmp_addr,
            srt_addr: Mutex::new(None),
            encoders: crate::encoders::Encoders::default(),
            fingerprint: tls.fingerprint,
            started: Instant::now(),
            status_version: AtomicU64::new(unix_millis()),
            egress_sample: Mutex::new(EgressSample {
                at: Instant::now(),
                total: 0,
                relay: 0,
                total_bps: 0,
                relay_bps: 0,
            }),
            cpu: Mutex::new(crate::cpu::CpuMeter::default()),
            drain_requested: tokio::sync::Notify::new(),
            drained: tokio::sync::Notify::new(),
            config,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let faults = apparatus.faults;
        let provider: Arc<dyn Provider> = Arc::new(DataProvider(shared.clone()));
        let mut tasks = vec![
            tokio::spawn(driver.run()),
            tokio::spawn(data::server::run(endpoint.clone(), provider, faults)),
            tokio::spawn(crate::http::serve(
                listener,
                shared.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(shared.clone().drive(events, shutdown_rx.clone())),
        ];
        let srt_addr = match shared.config.srt {
            Some(addr) => {
                let limits = shared.config.srt_limits;
                match crate::srt::server::serve(addr, shared.clone(), limits, shutdown_rx.clone())
                    .await
                {
                    Ok(local) => Some(local),
                    Err(e) if !shared.config.srt_explicit => {
                        warn!(%addr, error = %e, "default SRT port unavailable: SRT ingest off (set --srt)");
                        None
                    }
                    Err(e) => return Err(bind("srt", addr)(e)),
                }
            }
            None => None,
        };
        *shared.srt_addr.lock().expect("poisoned") = srt_addr;
        if let Some(listener) = rtmp_listener {
            tasks.push(tokio::spawn(crate::rtmp::server::serve(
                listener,
                shared.clone(),
                shared.config.rtmp_limits,
                shutdown_rx.clone(),
            )));
        }
        if let Some(listener) = admin_listener {
            tasks.push(tokio::spawn(crate::http::serve_admin(
                listener,
                shared.clone(),
                shutdown_rx,
            )));
        }
        if shared.config.admin_token.is_none() && admin_addr.is_none() {
            info!("no --admin-token: status and metrics are open to anyone, the admin API is off");
        }
        let deadline = Instant::now() + LISTEN_WAIT;
        while shared.control.listen_addrs().len() < shared.config.p2p.len()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(
            %peer_id,
            http = %http_addr,
            admin = ?admin_addr,
            rtmp = ?rtmp_addr,
            srt = ?srt_addr,
            data = %data_addr,
            p2p = ?shared.p2p_addrs(),
            "node started"
        );
        Ok(Node {
            shared,
            endpoint,
            shutdown,
            tasks,
        })
    }

    /// The RTMP ingest address, if RTMP is on.
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.shared.rtmp_addr
    }

    /// The SRT ingest address (UDP), if SRT is on.
    pub fn srt_addr(&self) -> Option<SocketAddr> {
        *self.shared.srt_addr.lock().expect("poisoned")
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The HTTP address it serves on.
    pub fn http_addr(&self) -> SocketAddr {
        self.shared.http_addr
    }

    /// The operators' address, if it has a listener of its own (`--admin-http`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_addr
    }

    /// The data-plane address it serves on.
    pub fn data_addr(&self) -> SocketAddr {
        self.shared.data_addr
    }

    /// Its libp2p addresses, each ending in /p2p/PEERID: what others bootstrap from.
    pub fn p2p_addrs(&self) -> Vec<Multiaddr> {
        self.shared.p2p_addrs()
    }

    /// A few headline figures, for tools that run many nodes in one process.
    pub fn summary(&self) -> Summary {
        let control_bytes = self.shared.control.wire_bytes().0;
        let core = self.shared.core();
        let store = self.shared.store.lock().expect("poisoned");
        let mut sources: HashMap<Option<PeerId>, usize> = HashMap::new();
        for stream in core.streams() {
            for entry in stream.entries.values() {
                match entry.held.map(|h| h.source) {
                    Some(Source::Ingest) => *sources.entry(None).or_default() += 1,
                    Some(Source::Peer(p)) => *sources.entry(Some(p)).or_default() += 1,
                    None => {}
                }
            }
        }
        let mut sources: Vec<(Option<PeerId>, usize)> = sources.into_iter().collect();
        sources.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        Summary {
            peers: core.peers().len(),
            streams: core.held_streams().len(),
            viewers: core.total_viewers(),
            segments: store.segment_count(),
            egress_bytes: self.shared.metrics.egress_bytes(),
            viewer_load_bps: core.viewer_load_bps(),
            capacity_bps: core.config().egress_capacity_bps,
            sources,
            relay_bytes: self.shared.metrics.data_bytes_out.load(Ordering::Relaxed),
            control_bytes,
            gossip_verified: self.shared.control.gossip_verified(),
        }
    }

    /// A segment's bytes as a viewer would get them: from the store, or pulled from the
    /// nearest holder over the data plane, verified and cached.
    pub async fn fetch_segment(
        &self,
        stream: &stream::Name,
        seq: Seq,
    ) -> Result<Bytes, crate::fetch::FetchError> {
        let id = shoal_protocol::segment::Id {
            stream: stream.clone(),
            seq,
        };
        self.shared.segment(&id).await
    }

    /// What this node knows of one segment, if it is in the window.
    pub fn segment_info(&self, stream: &stream::Name, seq: Seq) -> Option<SegmentInfo> {
        let core = self.shared.core();
        core.stream(stream)?.entries.get(&seq).map(SegmentInfo::of)
    }

    /// What this node knows of every segment of `stream` in its window, oldest first.
    pub fn segments(&self, stream: &stream::Name) -> Vec<(Seq, SegmentInfo)> {
        let core = self.shared.core();
        core.stream(stream).map_or_else(Vec::new, |s| {
            s.entries
                .iter()
                .map(|(seq, e)| (*seq, SegmentInfo::of(e)))
                .collect()
        })
    }

    /// Resolves when an operator asked this node to drain (`POST /api/drain`).
    pub async fn drain_requested(&self) {
        self.shared.drain_requested.notified().await;
    }

    /// Drains, then stops. The node gossips that it is draining at once, so new viewers
    /// go to peers; its admitted viewers are served until they leave or `deadline`
    /// passes. Then it hands them off (their playlist requests are redirected too) until
    /// they are quiet, and leaves the mesh. The phases and their timing are the core's
    /// ([`shoal_core::drain`]); this waits for its [`Action::Leave`].
    pub async fn drain(self, deadline: Duration) {
        let started = Instant::now();
        let viewers = {
            let mut core = self.shared.core();
            core.start_drain(deadline, started);
            core.total_viewers()
        };
        self.shared.publish_status();
        // Under systemd: the stop has begun (the drain is under way, /readyz says 503).
        crate::sd_notify::notify("STOPPING=1\nSTATUS=draining");
        info!(viewers, deadline_s = deadline.as_secs(), "draining");
        self.shared.drained.notified().await;
        info!(
            drained_s = format!("{:.1}", started.elapsed().as_secs_f64()),
            "drained; leaving the mesh"
        );
        self.shutdown().await;
    }

    /// Stops every task and closes the sockets.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"node shutting down");
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        info!(peer_id = %self.shared.peer_id, "node stopped");
    }
}

impl Shared {
    /// libp2p listen addresses with /p2p/PEERID.
    pub(crate) fn p2p_addrs(&self) -> Vec<Multiaddr> {
        self.control
            .listen_addrs()
            .into_iter()
            .map(|a| a.with(Protocol::P2p(self.peer_id)))
            .collect()
    }

    /// The IP peers and viewers should use: the bound one, or when bound to 0.0.0.0 the
    /// configured `advertise_ip`, else the first non-loopback address libp2p listens on.
    pub(crate) fn advertised(&self, bound: SocketAddr) -> SocketAddr {
        if !bound.ip().is_unspecified() {
            return bound;
        }
        let ip = self.config.advertise_ip.unwrap_or_else(|| {
            self.control
                .listen_addrs()
                .iter()
                .flat_map(|a| a.iter())
                .find_map(|p| match p {
                    Protocol::Ip4(ip) if !ip.is_loopback() => Some(IpAddr::V4(ip)),
                    _ => None,
                })
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        });
        SocketAddr::new(ip, bound.port())
    }

    /// The core, locked by code other than its driver: the driver is woken as the guard
    /// drops if the core needs it sooner than it planned.
    pub(crate) fn core(&self) -> CoreGuard<'_> {
        CoreGuard::new(self.core.lock().expect("poisoned"), &self.driver_wake)
    }

    /// The core driver: control-plane events and ticks in, actions out.
    async fn drive(
        self: Arc<Self>,
        mut events: mpsc::Receiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut rtts = tokio::time::interval(RTT_REFRESH);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        loop {
            // Sleep until the core needs time, an event comes, or other code changed the
            // core so that it needs the driver sooner (`CoreGuard`).
            let due = {
                let mut core = self.core.lock().expect("poisoned");
                core.take_wake();
                core.poll_timeout()
            };
            let due = due.map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => return,
                },
                _ = tokio::time::sleep_until(due) => {
                    self.core.lock().expect("poisoned").handle_tick(Instant::now());
                }
                _ = self.driver_wake.notified() => {}
                _ = rtts.tick() => self.refresh_rtts(),
                _ = housekeeping.tick() => self.housekeeping(),
                _ = shutdown.changed() => return,
            }
            self.run_actions();
        }
    }

    /// Once a second: ingest state expires, and memory freed by closed connections goes
    /// back to the system.
    fn housekeeping(&self) {
        let forgotten = self.ingest.lock().expect("poisoned").expire(Instant::now());
        for name in forgotten {
            debug!(stream = %name, "ingest state forgotten after idling");
        }
        crate::memory::release_if_shrunk(self.conns.open());
    }

    fn on_event(&self, event: Event) {
        let now = Instant::now();
        let mut core = self.core.lock().expect("poisoned");
        match event {
            Event::Status(v) => {
                let connected = core.peers().get(&v.signer).is_some_and(|p| p.connected);
                if !connected && v.signer != self.peer_id {
                    let addrs: Vec<Multiaddr> = v
                        .value
                        .p2p_addrs
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .collect();
                    self.control.send(Command::Dial(v.signer, addrs));
                }
                core.handle_status(v.signer, v.value, now);
            }
            Event::Announcement(v) => {
                let id = v.value.id.clone();
                if let Err(e) = core.handle_announcement(v, now) {
                    debug!(segment = %id, error = %e, "announcement not taken");
                }
            }
            Event::End(v) => core.handle_end(v),
            Event::Rtt(peer, rtt) => core.handle_rtt(peer, rtt, now),
            Event::Connection(peer, up) => core.handle_connection(peer, up, now),
            Event::Excluded(peer) => core.handle_excluded(peer),
            // Checked and applied by the control plane itself.
            Event::Revocations(_) => {}
        }
    }

    /// Carries out every pending decision of the core.
    pub(crate) fn run_actions(self: &Arc<Self>) {
        let actions: Vec<Action> = {
            let mut core = self.core();
            std::iter::from_fn(|| core.poll_action()).collect()
        };
        for action in actions {
            match action {
                Action::PublishStatus => self.publish_status(),
                Action::Prefetch(id) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.segment(&id).await {
                            debug!(segment = %id, error = %e, "prefetch failed");
                        }
                    });
                }
                Action::Probe(peer) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.probe(peer).await {
                            debug!(%peer, error = %e, "data-plane probe failed");
                        }
                    });
                }
                Action::Sync { stream, from } => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.sync(&stream, Some(from)).await {
                            debug!(%stream, error = %e, "manifest sync failed");
                        }
                    });
                }
                Action::Evict(id) => self.store.lock().expect("poisoned").evict_segment(&id),
                Action::EvictInit(hash) => self.store.lock().expect("poisoned").evict_init(&hash),
                Action::PeerGone(peer) => {
                    info!(%peer, "peer gone");
                    self.client.forget(&peer);
                    self.control.send(Command::Forget(peer));
                }
                Action::Drain(phase) => {
                    let viewers = self.core().total_viewers();
                    info!(?phase, viewers, "drain phase");
                }
                Action::Leave => self.drained.notify_one(),
                Action::Subscribe(shard) => self.control.send(Command::Subscribe(shard)),
                Action::Unsubscribe(shard) => self.control.send(Command::Unsubscribe(shard)),
            }
        }
    }

    /// The egress figures of the last status: (total, relay) bits per second.
    pub(crate) fn last_egress_bps(&self) -> (u64, u64) {
        let s = self.egress_sample.lock().expect("poisoned");
        (s.total_bps, s.relay_bps)
    }

    /// Current egress and relay egress in bits per second, measured since the previous
    /// call (the previous figures when called again within 0.5 s).
    fn egress_bps(&self) -> (u64, u64) {
        let mut sample = self.egress_sample.lock().expect("poisoned");
        let now = Instant::now();
        let total = self.metrics.egress_bytes();
        let relay = self.metrics.data_bytes_out.load(Ordering::Relaxed);
        let elapsed = now.duration_since(sample.at).as_secs_f64();
        if elapsed >= 0.5 {
            let rate =
                |now: u64, before: u64| (now.saturating_sub(before) as f64 * 8.0 / elapsed) as u64;
            *sample = EgressSample {
                at: now,
                total,
                relay,
                total_bps: rate(total, sample.total),
                relay_bps: rate(relay, sample.relay),
            };
        }
        (sample.total_bps, sample.relay_bps)
    }

    pub(crate) fn publish_status(&self) {
        let cpu = self.cpu.lock().expect("poisoned").sample();
        let (egress_bps, relay_bps) = self.egress_bps();
        let facts = Facts {
            version: self.status_version.fetch_add(1, Ordering::Relaxed),
            issued_at: unix_millis(),
            data_addr: self.advertised(self.data_addr),
            cert_fingerprint: self.fingerprint,
            http_addr: self.advertised(self.http_addr),
            p2p_addrs: self.p2p_addrs().iter().map(|a| a.to_string()).collect(),
        };
        let status = {
            let mut core = self.core();
            core.set_cpu(cpu);
            core.observe_egress(egress_bps, relay_bps, Instant::now());
            core.status(facts)
        };
        match Signed::sign(&self.keypair, &status) {
            Ok(signed) => self.publish(Gossip::Status(signed)),
            Err(e) => warn!(error = %e, "cannot sign status"),
        }
    }

    pub(crate) fn publish(&self, message: Gossip) {
        add(&self.metrics.gossip_published, 1);
        let size = match &message {
            Gossip::Status(s) => s.encoded_len(),
            Gossip::Segment(s) => s.encoded_len(),
            Gossip::End(s) => s.encoded_len(),
            Gossip::Revocations(s) => s.encoded_len(),
        };
        add(&self.metrics.gossip_bytes, size as u64);
        self.control.send(Command::Publish(message));
    }

    /// The sequence number the next ingested segment of `stream` should get.
    pub(crate) fn next_seq(&self, stream: &stream::Name) -> Seq {
        self.core()
            .stream(stream)
            .and_then(|s| s.newest())
            .map_or(0, |n| n + 1)
    }
}

/// Serves the data plane from the node's store and core.
struct DataProvider(Arc<Shared>);

impl Provider for DataProvider {
    fn segment(
        &self,
        stream: stream::Name,
        seq: Seq,
        requester: SocketAddr,
    ) -> futures::future::BoxFuture<'_, Supply> {
        Box::pin(async move {
            let id = shoal_protocol::segment::Id { stream, seq };
            // Store and forward: a segment this node is pulling right now is served as
            // soon as the pull lands, so a relay can feed others one transfer after it
            // was fed, before its status says it holds the segment.
            if !self.0.core().is_held(&id)
                && let Some(pull) = self.0.inflight.segment_pull(&id)
            {
                let _ = tokio::time::timeout(RELAY_WAIT, pull).await;
            }
            let admitted = self.0.core().admit_upload(&id, requester_key(requester));
            match admitted {
                Upload::Serve => {}
                Upload::Busy(fed) => return Supply::Busy(fed),
                Upload::NotHeld => return Supply::NotFound,
            }
            match self.0.store.lock().expect("poisoned").segment(&id) {
                Some(bytes) => Supply::Bytes(bytes),
                None => Supply::NotFound,
            }
        })
    }

    fn init(&self, _stream: &stream::Name, hash: &ContentId) -> Option<Bytes> {
        self.0.store.lock().expect("poisoned").init(hash)
    }

    fn manifest(&self, stream: &stream::Name) -> Option<data::client::Manifest> {
        let core = self.0.core();
        let s = core.stream(stream)?;
        let announcements = s
            .entries
            .values()
            .map(|e| e.announcement.envelope.clone())
            .collect();
        Some((announcements, s.end.as_ref().map(|e| e.envelope.clone())))
    }

    fn served(&self, bytes: u64) {
        add(&self.0.metrics.data_bytes_out, bytes);
    }

    fn admits(&self, fingerprint: Option<&ContentId>) -> bool {
        if !self.0.control.membership_closed() {
            return true;
        }
        // The peer whose signed status names this certificate, if a member.
        let peer = fingerprint.and_then(|fp| {
            let core = self.0.core();
            core.peers()
                .known()
                .find(|(_, p)| p.status.as_ref().is_some_and(|s| s.cert_fingerprint == *fp))
                .map(|(id, _)| *id)
        });
        let member = peer.is_some_and(|p| self.0.control.is_member(&p));
        if !member {
            add(&self.0.metrics.data_refused_non_member, 1);
        }
        member
    }
}

/// Secret material for keyed hashes private to this node (session ids), derived from its
/// identity key.
fn keypair_seed(keypair: &Keypair) -> Vec<u8> {
    keypair
        .clone()
        .try_into_ed25519()
        .map(|k| k.secret().as_ref().to_vec())
        .unwrap_or_default()
}
