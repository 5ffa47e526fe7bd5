//! The SRT listener (UDP): callers push MPEG-TS with a `streamid` naming the stream and
//! its key. Each accepted connection's TS is demuxed into frames for a [`Publisher`],
//! which cuts, signs and announces segments as for every other ingest.

use super::stream_id;
use crate::ingest_rate::RateWindow;
use crate::media::demux::{Demuxed, TsDemuxer};
use crate::metrics::add;
use crate::node::Shared;
use crate::publisher::Publisher;
use crate::stream_keys::KeyRefusal;
use futures::StreamExt;
use shoal_protocol::stream;
use srt_tokio::SrtListener;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::PacketSize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

/// Bounds on SRT connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Silence after which a connection is dropped.
    pub idle: Duration,
    /// Largest PES (one access unit) accepted.
    pub max_pes: usize,
    /// Bits per second one connection may send, averaged over
    /// [`crate::ingest_rate::WINDOW`].
    pub max_bitrate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            idle: Duration::from_secs(10),
            max_pes: 8 << 20,
            max_bitrate: 100_000_000,
        }
    }
}

/// SRT's live payload: seven TS packets. libsrt callers size their messages by the MSS
/// the listener announces, and this SRT stack announces its payload size there; the
/// largest live payload keeps a caller's standard 1,316-byte messages within it.
const PAYLOAD: u16 = 1456;

/// Takes SRT callers on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    node: Arc<Shared>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    // Bound here so an OS-chosen port (`:0`) is known.
    let socket = tokio::net::UdpSocket::bind(addr).await?;
    let local = socket.local_addr()?;
    let (listener, mut incoming) = SrtListener::builder()
        .set(|o| o.sender.max_payload_size = PacketSize(u64::from(PAYLOAD)))
        .socket(socket)
        .bind(local)
        .await?;
    let open = Arc::new(AtomicUsize::new(0));
    let mut quiet = Quiet::default();
    tokio::spawn(async move {
        let _listener = listener;
        loop {
            let request = tokio::select! {
                r = incoming.incoming().next() => match r {
                    Some(r) => r,
                    None => return,
                },
                _ = shutdown.changed() => return,
            };
            let peer = request.remote();
            let id = request
                .stream_id()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let verdict = admit(&node, &id, &open, limits);
            let name = match verdict {
                Ok(name) => name,
                Err((reason, why)) => {
                    add(&node.metrics.ingest_rejected, 1);
                    if matches!(
                        reason,
                        ServerRejectReason::Forbidden | ServerRejectReason::Unauthorized
                    ) {
                        add(&node.metrics.srt_key_refused, 1);
                    }
                    // Some callers retry at once, hundreds of times a second: one warning
                    // per address per interval, the rest at debug.
                    if quiet.should_warn(peer.ip(), Instant::now()) {
                        warn!(%peer, stream_id = %id, why, "srt caller refused (repeats from this address are logged at debug for 10 s)");
                    } else {
                        debug!(%peer, stream_id = %id, why, "srt caller refused");
                    }
                    let _ = request.reject(RejectReason::Server(reason)).await;
                    continue;
                }
            };
            let socket = match request.accept(None).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(%peer, error = %e, "srt accept failed");
                    continue;
                }
            };
            open.fetch_add(1, Ordering::Relaxed);
            add(&node.metrics.srt_connections, 1);
            let node = node.clone();
            let open = open.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(
                async move {
                    let result = connection(&node, socket, name, peer, limits, shutdown).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                    match result {
                        Ok(()) => info!("srt connection closed"),
                        Err(e) => {
                            add(&node.metrics.srt_cut, 1);
                            warn!(error = %e, "srt connection ended");
                        }
                    }
                }
                .instrument(info_span!("srt", %peer)),
            );
        }
    });
    Ok(local)
}

/// Rate of refusal warnings: one per caller address per [`Quiet::INTERVAL`].
#[derive(Default)]
struct Quiet {
    warned: std::collections::HashMap<std::net::IpAddr, Instant>,
}

impl Quiet {
    const INTERVAL: Duration = Duration::from_secs(10);
    /// Addresses remembered; past it the oldest memory is dropped wholesale.
    const MAX: usize = 1024;

    fn should_warn(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        if self.warned.len() >= Self::MAX {
            self.warned
                .retain(|_, at| now.saturating_duration_since(*at) < Self::INTERVAL);
            if self.warned.len() >= Self::MAX {
                self.warned.clear();
            }
        }
        match self.warned.get(&ip) {
            Some(at) if now.saturating_duration_since(*at) < Self::INTERVAL => false,
            _ => {
                self.warned.insert(ip, now);
                true
            }
        }
    }
}

/// Checks a caller's stream id and the connection limit.
fn admit(
    node: &Shared,
    id: &str,
    open: &AtomicUsize,
    limits: Limits,
) -> Result<stream::Name, (ServerRejectReason, &'static str)> {
    let request = stream_id::parse(id).ok_or((
        ServerRejectReason::BadRequest,
        "streamid names no stream: use #!::r=STREAM,m=publish,s=KEY or STREAM?key=KEY",
    ))?;
    if !request.publish {
        return Err((
            ServerRejectReason::BadMode,
            "this node takes publishing only",
        ));
    }
    let name = crate::stream_keys::check(&node.config.ingest_keys, &request.stream, &request.key)
        .map_err(|e| match e {
        KeyRefusal::BadName(..) => (ServerRejectReason::BadRequest, "invalid stream name"),
        KeyRefusal::NoKey => (ServerRejectReason::Unauthorized, "no key in the streamid"),
        KeyRefusal::WrongKey(_) => (
            ServerRejectReason::Forbidden,
            "key not accepted for this stream",
        ),
    })?;
    if open.load(Ordering::Relaxed) >= limits.max_connections {
        return Err((ServerRejectReason::Overload, "too many SRT connections"));
    }
    Ok(name)
}

/// Hands what the demuxer found to the publisher (the demuxer holds a stream's first
/// frames until every track's configuration is known), and counts its errors.
fn feed(
    node: &Arc<Shared>,
    publisher: &mut Publisher,
    found: Vec<Demuxed>,
    errors: &[crate::media::MediaError],
) {
    for item in found {
        match item {
            Demuxed::VideoConfig(c) => publisher.video_config(c),
            Demuxed::AudioConfig(c) => publisher.audio_config(c),
            Demuxed::Frame(f) => publisher.frame(node, f),
        }
    }
    if !errors.is_empty() {
        add(&node.metrics.ingest_media_errors, errors.len() as u64);
        debug!(stream = %publisher.name(), ?errors, "transport stream errors");
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("caller silent for {0:?}")]
    Idle(Duration),
    #[error("sent {0} bit/s, above the limit of {1}")]
    Bitrate(u64, u64),
    #[error("a newer connection took the stream over")]
    Replaced,
}

async fn connection(
    node: &Arc<Shared>,
    mut socket: srt_tokio::SrtSocket,
    name: stream::Name,
    peer: SocketAddr,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let mut publisher = Publisher::start(node, name, peer, "srt");
    let mut demux = TsDemuxer::new(limits.max_pes);
    let replaced = publisher.replaced();
    let mut rate = RateWindow::new(limits.max_bitrate, Instant::now());
    let mut reported_unsupported = 0;
    let result = loop {
        let item = tokio::select! {
            item = tokio::time::timeout(limits.idle, socket.next()) => item,
            _ = replaced.notified() => break Err(ConnError::Replaced),
            _ = shutdown.changed() => break Ok(()),
        };
        let bytes = match item {
            Err(_) => break Err(ConnError::Idle(limits.idle)),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(e.into()),
            Ok(Some(Ok((_, bytes)))) => bytes,
        };
        if let Err(bps) = rate.add(bytes.len() as u64, Instant::now()) {
            break Err(ConnError::Bitrate(bps, limits.max_bitrate));
        }
        let (found, errors) = demux.push(&bytes);
        feed(node, &mut publisher, found, &errors);
        let unsupported = demux.unsupported();
        if unsupported.len() > reported_unsupported {
            reported_unsupported = unsupported.len();
            warn!(stream = %publisher.name(), streams = ?unsupported, "elementary streams Shoal cannot carry are dropped");
        }
    };
    // The last access unit completes only now.
    let (found, errors) = demux.finish();
    feed(node, &mut publisher, found, &errors);
    // A caller that went away may come back: the stream continues after a discontinuity.
    publisher.finish(node, false);
    result
}
