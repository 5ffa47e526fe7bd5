//! The data plane's vocabulary: one request and one response per QUIC bidirectional
//! stream.
//!
//! The requester writes a frame (`u32` big-endian length, then a [`codec`] message) with a
//! [`Request`] and finishes its side. The responder writes a frame with a [`Response`];
//! for `Segment` and `Init` the raw bytes follow until the stream ends.
//!
//! [`codec`]: crate::codec

use crate::content::ContentId;
use crate::segment::{Announcement, Seq, StreamEnd};
use crate::signed::Signed;
use crate::stream;
use serde::{Deserialize, Serialize};

/// ALPN of the data plane.
pub const ALPN: &[u8] = b"shoal/1";
/// Largest request frame: a request is a stream name and a number or hash.
pub const MAX_REQUEST: usize = 1024;
/// Largest response header frame (a manifest of [`MAX_MANIFEST`] announcements fits).
pub const MAX_RESPONSE_HEADER: usize = 128 * 1024;
/// Most peers named in a `Busy` answer.
pub const MAX_HINTS: usize = 16;
/// Most announcements in a manifest.
pub const MAX_MANIFEST: usize = 128;

/// A request to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A media segment's bytes.
    Segment {
        /// Stream.
        stream: stream::Name,
        /// Sequence number.
        seq: Seq,
    },
    /// An init segment's bytes.
    Init {
        /// Stream.
        stream: stream::Name,
        /// Its hash.
        hash: ContentId,
    },
    /// The signed announcements of the segments the peer holds for a stream, so a node
    /// that joined late can build the same playlist as everyone else.
    Manifest {
        /// Stream.
        stream: stream::Name,
    },
}

/// A response header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Bytes follow: exactly `size` of them.
    Bytes {
        /// Body length.
        size: u64,
    },
    /// The manifest asked for.
    Manifest {
        /// Announcements, oldest first.
        announcements: Vec<Signed<Announcement>>,
        /// Set when the stream has ended.
        end: Option<Signed<StreamEnd>>,
    },
    /// The peer does not hold it.
    NotFound,
    /// The peer is at its fan-out limit for this segment; ask one of the peers it sent
    /// the segment to (peer ids as bytes, at most [`MAX_HINTS`]).
    Busy {
        /// Peers this holder fed: they hold the segment or are pulling it.
        fed: Vec<Vec<u8>>,
    },
    /// The request was malformed or failed.
    Error(String),
}

/// Encodes a frame: 4-byte big-endian length, then the message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}
