//! A UDP socket under quinn that holds each outgoing datagram for a delay chosen by its
//! destination: network latency emulated in userspace (this machine's kernel has no
//! netem), for the simulator's regions. Receiving is untouched; each side delays what it
//! sends, so a round trip costs both sides' one-way delays.
//!
//! Datagrams leave in due order from one task per socket (equal delays keep their
//! order, so QUIC sees no reordering). At most [`MAX_QUEUED`] wait; beyond that they
//! are dropped, as a full router queue would.
//!
//! A node gets it through its [`shoal_node::apparatus::Apparatus`] ([`factory`]): the node itself has no
//! notion of delays.

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};
use shoal_node::apparatus::SocketFactory;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most datagrams held at once per socket.
pub const MAX_QUEUED: usize = 16_384;

/// The one-way delay to add to datagrams sent to an address.
#[derive(Clone)]
pub struct DataDelay(Arc<dyn Fn(SocketAddr) -> Duration + Send + Sync>);

impl DataDelay {
    /// A delay chosen by `f` from the destination.
    pub fn new(f: impl Fn(SocketAddr) -> Duration + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The delay towards `to`.
    pub fn towards(&self, to: SocketAddr) -> Duration {
        (self.0)(to)
    }
}

impl fmt::Debug for DataDelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataDelay(..)")
    }
}

/// A datagram (or GSO batch) waiting for its time.
struct Held {
    destination: SocketAddr,
    ecn: Option<quinn::udp::EcnCodepoint>,
    contents: Vec<u8>,
    segment_size: Option<usize>,
    src_ip: Option<IpAddr>,
}

/// The delaying socket.
pub struct DelayedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    delay: DataDelay,
    queue: mpsc::UnboundedSender<(Instant, Held)>,
    queued: Arc<AtomicUsize>,
}

impl fmt::Debug for DelayedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedSocket")
            .field("inner", &self.inner)
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

impl DelayedSocket {
    /// Wraps `inner`; spawns the task that sends held datagrams (it ends with the socket).
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, delay: DataDelay) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(pump(inner.clone(), rx, queued.clone()));
        Arc::new(Self {
            inner,
            delay,
            queue: tx,
            queued,
        })
    }
}

/// Sends held datagrams when due, in due order (ties in arrival order).
async fn pump(
    socket: Arc<dyn AsyncUdpSocket>,
    held_rx: mpsc::UnboundedReceiver<(Instant, Held)>,
    queued: Arc<AtomicUsize>,
) {
    shoal_node::due::release(held_rx, |h: Held| {
        queued.fetch_sub(1, Ordering::Relaxed);
        let transmit = Transmit {
            destination: h.destination,
            ecn: h.ecn,
            contents: &h.contents,
            segment_size: h.segment_size,
            src_ip: h.src_ip,
        };
        // A full socket buffer loses the datagram, as a network would; QUIC retransmits.
        let _ = socket.try_send(&transmit);
        std::future::ready(true)
    })
    .await;
}

impl AsyncUdpSocket for DelayedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let delay = self.delay.towards(transmit.destination);
        if delay.is_zero() {
            return self.inner.try_send(transmit);
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Ok(());
        }
        let held = Held {
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents: transmit.contents.to_vec(),
            segment_size: transmit.segment_size,
            src_ip: transmit.src_ip,
        };
        if self.queue.send((Instant::now() + delay, held)).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A node's data-plane socket factory: sockets whose outgoing datagrams are held per
/// `delay`.
pub fn factory(delay: DataDelay) -> Arc<SocketFactory> {
    Arc::new(move |addr| {
        let socket = std::net::UdpSocket::bind(addr)?;
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        let delayed: Arc<dyn AsyncUdpSocket> = DelayedSocket::new(inner, delay.clone());
        Ok(delayed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use shoal_node::apparatus::{Apparatus, data_endpoint};
    use shoal_node::data::tls;

    /// A real quinn connection over loopback through delaying sockets: the handshake's
    /// measured RTT includes both directions' delays.
    #[tokio::test]
    async fn round_trip_includes_both_delays() {
        let identity = tls::generate().unwrap();
        let server_config = tls::server_config(&identity).unwrap();
        let apparatus = Apparatus {
            data_socket: Some(factory(DataDelay::new(|_| Duration::from_millis(30)))),
            ..Apparatus::default()
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = data_endpoint(&apparatus, server_config.clone(), any).unwrap();
        let client = data_endpoint(&apparatus, server_config, any).unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let got = recv.read_to_end(1024).await.unwrap();
            send.write_all(&got).await.unwrap();
            send.finish().unwrap();
            conn.closed().await;
        });
        let config = tls::client_config(identity.fingerprint, &identity).unwrap();
        let conn = client
            .connect_with(config, addr, tls::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let started = std::time::Instant::now();
        send.write_all(b"ping").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"ping");
        // One round trip of application data: at least 2 x 30 ms.
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert!(conn.rtt() >= Duration::from_millis(55), "{:?}", conn.rtt());
        conn.close(0u32.into(), b"done");
        accept.abort();
    }
}
