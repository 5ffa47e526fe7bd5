//! The bytes of held segments and init segments. Only verified bytes go in; the core
//! decides what is evicted.

use bytes::Bytes;
use shoal_protocol::content::ContentId;
use shoal_protocol::segment;
use std::collections::HashMap;

/// Segment and init bytes held by this node.
#[derive(Debug, Default)]
pub struct Store {
    segments: HashMap<segment::Id, Bytes>,
    inits: HashMap<ContentId, Bytes>,
    bytes: usize,
}

impl Store {
    /// Stores a segment (already checked against its announcement).
    pub fn put_segment(&mut self, id: segment::Id, bytes: Bytes) {
        self.bytes += bytes.len();
        if let Some(old) = self.segments.insert(id, bytes) {
            self.bytes -= old.len();
        }
    }

    /// A segment's bytes.
    pub fn segment(&self, id: &segment::Id) -> Option<Bytes> {
        self.segments.get(id).cloned()
    }

    /// Drops a segment.
    pub fn evict_segment(&mut self, id: &segment::Id) {
        if let Some(old) = self.segments.remove(id) {
            self.bytes -= old.len();
        }
    }

    /// Stores an init segment under its hash (already checked).
    pub fn put_init(&mut self, hash: ContentId, bytes: Bytes) {
        self.bytes += bytes.len();
        if let Some(old) = self.inits.insert(hash, bytes) {
            self.bytes -= old.len();
        }
    }

    /// An init segment's bytes.
    pub fn init(&self, hash: &ContentId) -> Option<Bytes> {
        self.inits.get(hash).cloned()
    }

    /// Drops an init segment.
    pub fn evict_init(&mut self, hash: &ContentId) {
        if let Some(old) = self.inits.remove(hash) {
            self.bytes -= old.len();
        }
    }

    /// Total bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of segments held.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}
