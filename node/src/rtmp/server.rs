//! The RTMP listener: accepts encoders within connection limits, runs each connection's
//! handshake and [`Session`], and feeds an accepted publish to its [`FlvPublish`]. A
//! connection that misbehaves (bad chunking, silence, a bitrate far past the limit) is
//! cut; it holds at most one message's worth of memory meanwhile.

use super::handshake;
use super::publish::{self, FlvPublish};
use super::session::{Event, Session, SessionError};
use crate::ingest_rate::RateWindow;
use crate::metrics::add;
use crate::node::Shared;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

/// Bounds on RTMP connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections from one address (a studio may run many encoders behind one NAT).
    pub per_address: usize,
    /// Time for the handshake.
    pub handshake: Duration,
    /// Silence after which a connection is cut (encoders send many messages a second).
    pub idle: Duration,
    /// Time to get from the handshake to an accepted publish.
    pub to_publish: Duration,
    /// Longest message accepted (a keyframe of a high-bitrate 4K stream fits).
    pub max_message: usize,
    /// Bits per second one connection may send, averaged over
    /// [`crate::ingest_rate::WINDOW`].
    pub max_bitrate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            per_address: 64,
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            to_publish: Duration::from_secs(30),
            max_message: 8 << 20,
            max_bitrate: 100_000_000,
        }
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    #[error("protocol: {0}")]
    Session(#[from] SessionError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Timeout(&'static str),
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("sent {0} bit/s, above the limit of {1}")]
    Bitrate(u64, u64),
    #[error("a newer connection took the stream over")]
    Replaced,
}

/// Open connections, in all and by address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Releases a connection's slot when dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("poisoned");
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.ip);
            }
        }
    }
}

/// Accepts RTMP connections on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Shared>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let slot = {
            let mut o = open.lock().expect("poisoned");
            let from_here = o.by_address.get(&peer.ip()).copied().unwrap_or(0);
            if o.total >= limits.max_connections || from_here >= limits.per_address {
                warn!(%peer, open = o.total, from_here, "rtmp connection refused: too many open");
                add(&node.metrics.rtmp_cut, 1);
                continue;
            }
            o.total += 1;
            *o.by_address.entry(peer.ip()).or_default() += 1;
            Slot {
                open: open.clone(),
                ip: peer.ip(),
            }
        };
        let node = node.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                match connection(&node, socket, peer, limits, shutdown).await {
                    Ok(()) => debug!("rtmp connection closed"),
                    Err(e) => {
                        add(&node.metrics.rtmp_cut, 1);
                        warn!(error = %e, "rtmp connection ended");
                    }
                }
            }
            .instrument(info_span!("rtmp", %peer)),
        );
    }
}

async fn connection(
    node: &Arc<Shared>,
    mut socket: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let _ = socket.set_nodelay(true);
    let epoch = node.started.elapsed().as_millis() as u32;
    tokio::time::timeout(limits.handshake, handshake::accept(&mut socket, epoch))
        .await
        .map_err(|_| ConnError::Timeout("handshake not completed in time"))??;
    add(&node.metrics.rtmp_connections, 1);
    let mut session = Session::new(limits.max_message);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut publisher: Option<FlvPublish> = None;
    // Until a publish is accepted (again, after an unpublish).
    let mut publish_by = Instant::now() + limits.to_publish;
    let mut rate = RateWindow::new(limits.max_bitrate, Instant::now());
    // `buf` may still hold whole messages: the session returns early after a publish
    // request and when replies wait to be sent.
    let mut unread = false;
    let result = loop {
        if !unread {
            let replaced = publisher.as_ref().map(FlvPublish::replaced);
            let wait = if publisher.is_some() {
                limits.idle
            } else {
                publish_by.saturating_duration_since(Instant::now())
            };
            let read = tokio::select! {
                r = tokio::time::timeout(wait, socket.read_buf(&mut buf)) => r,
                _ = async { replaced.expect("checked").notified().await }, if replaced.is_some() => {
                    break Err(ConnError::Replaced);
                }
                _ = shutdown.changed() => break Ok(()),
            };
            let n = match read {
                Err(_) if publisher.is_some() => break Err(ConnError::Timeout("encoder silent")),
                Err(_) => break Err(ConnError::Timeout("no publish in time")),
                Ok(Err(e)) => break Err(e.into()),
                Ok(Ok(0)) => break Ok(()),
                Ok(Ok(n)) => n as u64,
            };
            if let Err(bps) = rate.add(n, Instant::now()) {
                break Err(ConnError::Bitrate(bps, limits.max_bitrate));
            }
        }
        let before = buf.len();
        let events = match session.receive(&mut buf) {
            Ok(events) => events,
            Err(e) => break Err(e.into()),
        };
        unread = buf.len() < before && !buf.is_empty();
        let mut refused = None;
        for event in events {
            match event {
                Event::Publish {
                    app,
                    name,
                    stream_id,
                } => {
                    if publisher.is_some() {
                        session.refuse_publish(
                            stream_id,
                            "NetStream.Publish.BadName",
                            "this connection already publishes a stream",
                        );
                        continue;
                    }
                    match publish::authorize(&node.config.ingest_keys, &name) {
                        Ok(stream) => {
                            session.accept_publish(stream_id, stream.as_str());
                            info!(%app, stream = %stream, "rtmp publish accepted");
                            publisher = Some(FlvPublish::start(node, stream, peer));
                        }
                        Err(r) => {
                            add(&node.metrics.rtmp_key_refused, 1);
                            add(&node.metrics.ingest_rejected, 1);
                            session.refuse_publish(stream_id, r.code, &r.description);
                            refused = Some(r.description);
                        }
                    }
                }
                Event::Media {
                    video,
                    timestamp,
                    body,
                } => {
                    if let Some(p) = publisher.as_mut() {
                        p.media(node, video, timestamp, &body);
                    }
                }
                Event::Metadata(props) => {
                    if let Some(p) = publisher.as_mut() {
                        p.metadata(node, &props);
                    }
                }
                Event::Unpublish => {
                    if let Some(p) = publisher.take() {
                        p.finish(node, true);
                        // Time for deleteStream and the close (or another publish).
                        publish_by = Instant::now() + limits.to_publish;
                    }
                }
            }
        }
        let out = session.take_output();
        if !out.is_empty() {
            let write = tokio::time::timeout(limits.handshake, socket.write_all(&out)).await;
            match write {
                Err(_) => break Err(ConnError::Timeout("encoder does not read")),
                Ok(Err(e)) => break Err(e.into()),
                Ok(Ok(())) => {}
            }
        }
        if let Some(reason) = refused {
            let _ = socket.shutdown().await;
            break Err(ConnError::Refused(reason));
        }
    };
    if let Some(p) = publisher {
        // Lost or replaced, not stopped: a reconnect continues the stream.
        p.finish(node, false);
    }
    result
}
