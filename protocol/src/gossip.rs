//! What travels over gossipsub. Small, signed messages only; media never does.

use crate::membership::Revocations;
use crate::segment::{Announcement, StreamEnd};
use crate::signed::Signed;
use crate::status::Status;
use serde::{Deserialize, Serialize};

/// Topic for node statuses.
pub const STATUS_TOPIC: &str = "shoal/status/1";
/// Topic for segment announcements and stream ends. One topic for all streams: gossipsub
/// limits the topics per peer, and announcements are small (~250 bytes).
pub const MEDIA_TOPIC: &str = "shoal/media/1";
/// Largest gossip message accepted (gossipsub's own default transmit limit).
pub const MAX_GOSSIP: usize = 64 * 1024;

/// A gossip message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Gossip {
    /// A node's status.
    Status(Signed<Status>),
    /// A new segment at an ingest node.
    Segment(Signed<Announcement>),
    /// A stream ended.
    End(Signed<StreamEnd>),
    /// The mesh CA's newest revocation list (closed meshes).
    Revocations(Signed<Revocations>),
}

impl Gossip {
    /// The topic this message goes on.
    pub fn topic(&self) -> &'static str {
        match self {
            Gossip::Status(_) | Gossip::Revocations(_) => STATUS_TOPIC,
            Gossip::Segment(_) | Gossip::End(_) => MEDIA_TOPIC,
        }
    }
}
