//! Media segments: identity, container and the signed announcement an ingest node makes
//! for each one.

use crate::content::ContentId;
use crate::signed::Signable;
use crate::stream;
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Sequence number of a segment within its stream. Equal on every node: it is the HLS
/// media sequence number of the segment.
pub type Seq = u64;

/// The largest sequence number a node accepts (2^53): a segment a millisecond for 285
/// years, and far enough from `u64::MAX` that arithmetic on a number (the next one, a
/// window's edge) cannot overflow, whatever a peer or an encoder sends.
pub const MAX_SEQ: Seq = 1 << 53;

/// A segment's identity in the mesh.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    /// The stream it belongs to.
    pub stream: stream::Name,
    /// Its media sequence number.
    pub seq: Seq,
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.stream, self.seq)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.stream, self.seq)
    }
}

/// How a segment's bytes are packaged, as the encoder produced them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Container {
    /// MPEG transport stream (`.ts`).
    Ts,
    /// Fragmented MP4 / CMAF media segment (`.m4s`), needing an init segment.
    Fmp4,
}

impl Container {
    /// File extension used in playlists.
    pub fn extension(self) -> &'static str {
        match self {
            Container::Ts => "ts",
            Container::Fmp4 => "m4s",
        }
    }

    /// HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Container::Ts => "video/mp2t",
            Container::Fmp4 => "video/iso.segment",
        }
    }
}

/// A reference to an fMP4 initialization segment (`#EXT-X-MAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InitRef {
    /// blake3 of the init segment.
    pub hash: ContentId,
    /// Its size in bytes.
    pub size: u64,
}

/// What an ingest node says about a segment it accepted. Signed with the ingest node's
/// identity; a node never caches or serves bytes that do not match a verified
/// announcement's `hash` and `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Stream and sequence number.
    pub id: Id,
    /// Duration from the encoder's `#EXTINF`, in milliseconds.
    pub duration_ms: u32,
    /// Size of the segment in bytes.
    pub size: u64,
    /// blake3 of the bytes.
    pub hash: ContentId,
    /// Packaging.
    pub container: Container,
    /// The init segment this segment needs, for fMP4.
    pub init: Option<InitRef>,
    /// The encoder marked a discontinuity before this segment.
    pub discontinuity: bool,
    /// When the ingest node finished receiving it (for propagation figures only).
    pub ingested_at: UnixMillis,
}

impl Signable for Announcement {
    const DOMAIN: &'static [u8] = b"shoal/v1/announcement";
}

/// The end of a live stream: the encoder's playlist carried `#EXT-X-ENDLIST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// The stream that ended.
    pub stream: stream::Name,
    /// Its last segment.
    pub last_seq: Seq,
}

impl Signable for StreamEnd {
    const DOMAIN: &'static [u8] = b"shoal/v1/stream-end";
}
