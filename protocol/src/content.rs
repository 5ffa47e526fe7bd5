//! Content ids: the blake3 hash of a segment's bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The blake3 hash of some bytes. Two nodes holding the same `ContentId` hold the same
/// bytes; a node never serves bytes whose id does not match a signed announcement.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 16 hex digits: enough to name a file, short enough for a log line.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }

    /// Parses the full 64-digit hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.short())
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ContentId::of(b"hello");
        assert_eq!(ContentId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short().len(), 16);
        assert_eq!(ContentId::from_hex("zz"), None);
        assert_ne!(ContentId::of(b"hello"), ContentId::of(b"hellp"));
    }
}
