//! The single codec for every Shoal message: bincode 2.0.1 in serde mode.
//!
//! Every encoded message starts with a one-byte [`VERSION`]. Decoding refuses inputs larger
//! than [`MAX_MESSAGE`], trailing bytes, unknown versions, and any length field that would
//! make bincode allocate past the limit, so a hostile peer cannot make a node allocate
//! more than the size of the message it sent (bounded).

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

/// Version of the encoding; bumped on any incompatible change of a wire type.
pub const VERSION: u8 = 1;

/// The largest encoded message accepted anywhere. A status with 256 streams is about
/// 20 KiB and a manifest of 64 signed announcements about 25 KiB; 256 KiB leaves room
/// without letting a peer make us buffer much.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// bincode configuration: varint integers, little endian, and a decode limit that bounds
/// any allocation made while decoding.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE>()
}

/// Why bytes could not become a message (or a message bytes).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The input was empty.
    #[error("empty message")]
    Empty,
    /// The input was larger than the limit for this kind of message.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// The version byte is not one this build speaks.
    #[error("unsupported codec version {0} (this node speaks {VERSION})")]
    Version(u8),
    /// bincode rejected the body.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
    /// The value could not be encoded (should not happen for Shoal's own types).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes `value` with the version byte in front.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if out.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge {
            size: out.len(),
            limit: MAX_MESSAGE,
        });
    }
    Ok(out)
}

/// Decodes a message produced by [`encode`], refusing anything over `limit` bytes
/// (itself capped at [`MAX_MESSAGE`]).
pub fn decode_limited<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    let limit = limit.min(MAX_MESSAGE);
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// Decodes a message of at most [`MAX_MESSAGE`] bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_limited(bytes, MAX_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u64,
        b: String,
        c: Vec<u8>,
    }

    #[test]
    fn round_trip() {
        let v = Sample {
            a: 7,
            b: "x".into(),
            c: vec![1, 2, 3],
        };
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), v);
    }

    #[test]
    fn rejects_bad_inputs() {
        let v = Sample {
            a: 7,
            b: "x".into(),
            c: vec![],
        };
        let mut bytes = encode(&v).unwrap();
        assert_eq!(decode::<Sample>(&[]), Err(CodecError::Empty));
        assert!(matches!(
            decode::<Sample>(&[9, 0, 0]),
            Err(CodecError::Version(9))
        ));
        assert!(matches!(
            decode_limited::<Sample>(&bytes, 2),
            Err(CodecError::TooLarge { .. })
        ));
        bytes.push(0);
        assert_eq!(decode::<Sample>(&bytes), Err(CodecError::Trailing(1)));
        assert!(matches!(
            decode::<Sample>(&[VERSION, 1]),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A Vec<u8> claiming u64::MAX elements: varint 0xFF marker + 8 bytes.
        let mut bytes = vec![VERSION, 7, 1, b'x', 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(CodecError::Malformed(_))
        ));
    }
}
