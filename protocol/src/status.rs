//! A node's status: what it gossips about itself, periodically and on change.

use crate::content::ContentId;
use crate::segment::Seq;
use crate::signed::Signable;
use crate::stream;
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Most streams listed in one status. Keeps a status well under gossipsub's 64 KiB
/// message limit (a stream entry is at most ~90 bytes).
pub const MAX_STREAMS: usize = 256;
/// Most libp2p listen addresses listed in one status.
pub const MAX_P2P_ADDRS: usize = 8;
/// Longest multiaddr string accepted in a status.
pub const MAX_ADDR_LEN: usize = 256;
/// Most streams a status asks peers to pre-warm.
pub const MAX_WARM: usize = 16;
/// Most peers named in one pre-warm request.
pub const MAX_WARM_PEERS: usize = 8;

/// A node's view of itself, signed with its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Grows with every status a node issues (per run it starts from the wall clock in
    /// ms, so a restarted node's statuses still supersede the old ones).
    pub version: u64,
    /// When it was issued.
    pub issued_at: UnixMillis,
    /// The quinn data-plane endpoint.
    pub data_addr: SocketAddr,
    /// blake3 of the DER of the data plane's TLS certificate; the only certificate a peer
    /// accepts from this node.
    pub cert_fingerprint: ContentId,
    /// The HTTP endpoint for viewers (used to redirect viewers).
    pub http_addr: SocketAddr,
    /// libp2p addresses to dial this node at (multiaddr strings).
    pub p2p_addrs: Vec<String>,
    /// Streams this node holds segments of.
    pub streams: Vec<StreamHeld>,
    /// Streams an encoder is pushing into this node right now (active or standby).
    pub ingesting: Vec<IngestClaim>,
    /// Load figures.
    pub load: Load,
    /// The node is draining: send it no new viewers.
    pub draining: bool,
    /// Streams whose demand is about to outgrow this node, and the peers it asks to start
    /// pulling them before the viewers it will redirect arrive.
    pub warm: Vec<WarmRequest>,
}

/// A request to pre-warm a stream: the named peers should start pulling it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmRequest {
    /// The stream.
    pub stream: stream::Name,
    /// The peers asked to pull it.
    pub peers: Vec<crate::PeerId>,
}

impl Signable for Status {
    const DOMAIN: &'static [u8] = b"shoal/v1/status";
}

impl Status {
    /// Checks the bounds a well-behaved node respects.
    pub fn check_bounds(&self) -> Result<(), &'static str> {
        if self.streams.len() > MAX_STREAMS || self.ingesting.len() > MAX_STREAMS {
            return Err("too many streams");
        }
        if self.p2p_addrs.len() > MAX_P2P_ADDRS
            || self.p2p_addrs.iter().any(|a| a.len() > MAX_ADDR_LEN)
        {
            return Err("too many or too long addresses");
        }
        if self.streams.iter().any(|s| s.first_seq > s.last_seq) {
            return Err("stream range reversed");
        }
        if self
            .streams
            .iter()
            .any(|s| s.last_seq > crate::segment::MAX_SEQ)
        {
            return Err("sequence number out of range");
        }
        if self.warm.len() > MAX_WARM || self.warm.iter().any(|w| w.peers.len() > MAX_WARM_PEERS) {
            return Err("too many pre-warm requests");
        }
        Ok(())
    }
}

/// A stream as held by a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHeld {
    /// The stream.
    pub name: stream::Name,
    /// Oldest segment held.
    pub first_seq: Seq,
    /// Newest segment held.
    pub last_seq: Seq,
    /// This node is the stream's ingest point.
    pub ingest: bool,
    /// The stream has ended.
    pub ended: bool,
    /// Viewers of it on this node.
    pub viewers: u32,
    /// Its measured bitrate, bits per second (0: not measured yet): what one more viewer
    /// costs in egress.
    pub bitrate_bps: u64,
}

/// A stream being pushed into a node. When several nodes take the same stream (redundant
/// encoders), the mesh follows the claim with the earliest `since` (then the lowest peer
/// id); the others stand by and take over when it disappears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestClaim {
    /// The stream.
    pub name: stream::Name,
    /// When this node's encoder started pushing it.
    pub since: UnixMillis,
}

/// Load figures a node reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Egress the operator allows, bits per second (0 = not set: no limit).
    pub capacity_bps: u64,
    /// The part of the capacity kept for ingest and relaying to peers; viewers get the
    /// rest.
    pub reserve_bps: u64,
    /// What this node's viewers cost: the sum over streams of viewers x bitrate.
    pub viewer_load_bps: u64,
    /// Current measured egress (viewers and peers), bits per second.
    pub egress_bps: u64,
    /// The part of it sent to peers (relaying), bits per second. When relaying needs
    /// more than the reserve, viewers get that much less.
    pub relay_bps: u64,
    /// Current viewers, all streams.
    pub viewers: u32,
    /// CPU use in permille of all cores.
    pub cpu_permille: u16,
}
