//! The data plane: segment, init and manifest pulls between nodes over QUIC (quinn).
//!
//! One bidirectional stream per request ([`shoal_protocol::data`]). Each node's
//! certificate is self-signed and bound to its identity by the fingerprint in its signed
//! status: a client accepts exactly the certificate its peer announced ([`tls`]).
//! [`server`] answers from a [`Provider`]; [`client`] keeps one connection per peer.

pub mod client;
pub mod server;
pub mod tls;

use bytes::Bytes;
use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::segment::Seq;
use shoal_protocol::stream;
use std::net::SocketAddr;
use std::time::Duration;

/// The answer to a request for bytes.
#[derive(Debug, Clone)]
pub enum Supply {
    /// Here they are.
    Bytes(Bytes),
    /// Held, but already sent to enough peers: ask one of these (the peers it fed).
    Busy(Vec<PeerId>),
    /// Not held.
    NotFound,
}

/// What the data-plane server serves from. The node implements it over its store and
/// core; tests can implement it over anything.
pub trait Provider: Send + Sync + 'static {
    /// A segment's bytes for the peer at `requester`, subject to the fan-out limit. A
    /// segment still being pulled here may be waited for (store and forward).
    fn segment(
        &self,
        stream: stream::Name,
        seq: Seq,
        requester: SocketAddr,
    ) -> futures::future::BoxFuture<'_, Supply>;
    /// A held init segment's bytes.
    fn init(&self, stream: &stream::Name, hash: &ContentId) -> Option<Bytes>;
    /// The announcements held for a stream (oldest first) and its end, if any.
    fn manifest(&self, stream: &stream::Name) -> Option<client::Manifest>;
    /// `bytes` of media were sent to a peer.
    fn served(&self, bytes: u64);
    /// Whether the client whose certificate has `fingerprint` (none: it presented no
    /// certificate) may pull from here: in a closed mesh, only members.
    fn admits(&self, fingerprint: Option<&ContentId>) -> bool;
}

/// QUIC transport settings shared by both sides.
pub fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Notice a vanished peer within seconds; keep idle connections alive in between.
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(6)).expect("valid"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    // Requests in flight from one peer: a window of prefetches plus manifests.
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(64));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // Segments are ~0.2-4 MB: let a stream and the connection carry a whole one per RTT
    // on a LAN.
    t.stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(quinn::VarInt::from_u32(32 * 1024 * 1024));
    t.send_window(32 * 1024 * 1024);
    t
}
