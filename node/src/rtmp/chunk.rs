//! RTMP's chunk stream: messages cut into chunks of at most the peer's chunk size,
//! interleaved over chunk stream ids, each chunk with a compressed header (types 0-3)
//! that reuses fields of the one before on its chunk stream.
//!
//! [`Decoder`] is sans-io: it takes bytes as they arrive and returns whole messages. It
//! bounds everything a peer controls: the chunk size, a message's length, how many
//! messages may be half received at once and the bytes they hold.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::HashMap;

/// Chunk size every RTMP peer starts with.
pub const DEFAULT_CHUNK_SIZE: usize = 128;
/// Largest chunk size a peer may set: a message is at most 2^24 - 1 bytes long anyway.
pub const MAX_CHUNK_SIZE: usize = 1 << 24;
/// Chunk streams with a message half received at once. Encoders use 3-6.
pub const MAX_OPEN_STREAMS: usize = 32;

/// A whole RTMP message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The chunk stream it came on.
    pub csid: u32,
    /// Timestamp in ms (RTMP's 32-bit clock, wrapping).
    pub timestamp: u32,
    /// Message type id (1 set chunk size, 8 audio, 9 video, 18 data, 20 command...).
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Its payload.
    pub payload: Bytes,
}

/// Why the chunk stream cannot go on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// A message longer than this side accepts.
    #[error("message of {0} bytes exceeds the limit of {1}")]
    TooLong(usize, usize),
    /// A chunk size of 0, or above [`MAX_CHUNK_SIZE`] (or with the top bit set).
    #[error("chunk size {0} out of range")]
    ChunkSize(u32),
    /// A type 1-3 header on a chunk stream that never had a type 0.
    #[error("chunk stream {0} continues a message it never started")]
    NoHeader(u32),
    /// Too many messages half received at once.
    #[error("more than {MAX_OPEN_STREAMS} messages half received at once")]
    TooManyOpen,
    /// Half-received messages hold more bytes than allowed.
    #[error("half-received messages hold more than {0} bytes")]
    Buffered(usize),
}

/// The last header seen on one chunk stream, and the message being assembled there.
#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    started: bool,
    partial: Option<BytesMut>,
}

/// Reassembles messages from chunks.
#[derive(Debug)]
pub struct Decoder {
    chunk_size: usize,
    max_message: usize,
    streams: HashMap<u32, ChunkStream>,
    buffered: usize,
}

impl Decoder {
    /// A decoder that refuses messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message,
            streams: HashMap::new(),
            buffered: 0,
        }
    }

    /// The peer's chunk size changed (its Set Chunk Size message).
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size as usize > MAX_CHUNK_SIZE {
            return Err(ChunkError::ChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// Drops the half-received message on chunk stream `csid` (the peer's Abort).
    pub fn abort(&mut self, csid: u32) {
        if let Some(partial) = self.streams.get_mut(&csid).and_then(|s| s.partial.take()) {
            self.buffered -= partial.len();
        }
    }

    /// Bytes held in half-received messages.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Takes whole chunks from the front of `buf` until a message is complete (returned)
    /// or `buf` holds no whole chunk (None; call again with more bytes).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some((header_len, csid, fmt)) = basic_header(buf) else {
                return Ok(None);
            };
            let mh_len = [11, 7, 3, 0][fmt as usize];
            if buf.len() < header_len + mh_len {
                return Ok(None);
            }
            let h = &buf[header_len..header_len + mh_len];
            let stream = self.streams.get(&csid);
            if fmt != 0 && !stream.is_some_and(|s| s.started) {
                return Err(ChunkError::NoHeader(csid));
            }
            let ts_field = if fmt < 3 { u24(&h[0..3]) } else { 0 };
            let extended = match fmt {
                3 => stream.is_some_and(|s| s.extended),
                _ => ts_field == 0xff_ffff,
            };
            let ext_len = if extended { 4 } else { 0 };
            let total_header = header_len + mh_len + ext_len;
            if buf.len() < total_header {
                return Ok(None);
            }
            let ext = extended.then(|| {
                let at = header_len + mh_len;
                u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
            });
            let length = match fmt {
                0 | 1 => u24(&h[3..6]) as usize,
                _ => stream.map_or(0, |s| s.length),
            };
            if length > self.max_message {
                return Err(ChunkError::TooLong(length, self.max_message));
            }
            let continuing = stream.is_some_and(|s| s.partial.is_some());
            let have = stream
                .and_then(|s| s.partial.as_ref())
                .map_or(0, BytesMut::len);
            // A type 0-2 header starts a new message, dropping any partial one.
            let have = if fmt < 3 { 0 } else { have };
            let piece = (length - have.min(length)).min(self.chunk_size);
            if buf.len() < total_header + piece {
                return Ok(None);
            }
            // The whole chunk is here: apply its header.
            if !self.streams.contains_key(&csid) && self.streams.len() >= MAX_OPEN_STREAMS * 4 {
                // Chunk stream ids are cheap to invent; their state is not.
                self.streams.retain(|_, s| s.partial.is_some());
                if self.streams.len() >= MAX_OPEN_STREAMS * 4 {
                    return Err(ChunkError::TooManyOpen);
                }
            }
            let s = self.streams.entry(csid).or_default();
            let ts = ext.unwrap_or(ts_field);
            match fmt {
                0 => {
                    s.timestamp = ts;
                    s.delta = 0;
                    s.length = length;
                    s.type_id = h[6];
                    s.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
                }
                1 => {
                    s.delta = ts;
                    s.timestamp = s.timestamp.wrapping_add(ts);
                    s.length = length;
                    s.type_id = h[6];
                }
                2 => {
                    s.delta = ts;
                    s.timestamp = s.timestamp.wrapping_add(ts);
                }
                _ => {
                    if !continuing {
                        s.timestamp = s.timestamp.wrapping_add(s.delta);
                    }
                }
            }
            if fmt < 3 {
                s.extended = extended;
                if let Some(old) = s.partial.take() {
                    self.buffered -= old.len();
                }
            }
            s.started = true;
            let data = &buf[total_header..total_header + piece];
            let mut partial = s.partial.take().unwrap_or_default();
            partial.put_slice(data);
            self.buffered += piece;
            buf.advance(total_header + piece);
            if partial.len() >= s.length {
                self.buffered -= partial.len();
                return Ok(Some(Message {
                    csid,
                    timestamp: s.timestamp,
                    type_id: s.type_id,
                    stream_id: s.stream_id,
                    payload: partial.freeze(),
                }));
            }
            s.partial = Some(partial);
            let open = self
                .streams
                .values()
                .filter(|s| s.partial.is_some())
                .count();
            if open > MAX_OPEN_STREAMS {
                return Err(ChunkError::TooManyOpen);
            }
            if self.buffered > 2 * self.max_message {
                return Err(ChunkError::Buffered(2 * self.max_message));
            }
        }
    }
}

/// The basic header's length, chunk stream id and format, if `buf` holds it.
fn basic_header(buf: &[u8]) -> Option<(usize, u32, u8)> {
    let first = *buf.first()?;
    let fmt = first >> 6;
    match first & 0x3f {
        0 => Some((2, 64 + u32::from(*buf.get(1)?), fmt)),
        1 => Some((
            3,
            64 + u32::from(*buf.get(1)?) + 256 * u32::from(*buf.get(2)?),
            fmt,
        )),
        id => Some((1, u32::from(id), fmt)),
    }
}

fn u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

/// Writes messages as chunks (type 0 header, then type 3 continuations).
#[derive(Debug)]
pub struct Encoder {
    chunk_size: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl Encoder {
    /// Uses `size` for the chunks that follow (after sending Set Chunk Size).
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    /// Appends `message` as chunks on its chunk stream (2-63).
    pub fn encode(&self, message: &Message, out: &mut Vec<u8>) {
        let csid = (message.csid.clamp(2, 63)) as u8;
        let extended = message.timestamp >= 0xff_ffff;
        let ts_field = if extended {
            0xff_ffff
        } else {
            message.timestamp
        };
        let len = message.payload.len().min(0xff_ffff);
        out.put_u8(csid);
        out.put_slice(&ts_field.to_be_bytes()[1..]);
        out.put_slice(&(len as u32).to_be_bytes()[1..]);
        out.put_u8(message.type_id);
        out.put_u32_le(message.stream_id);
        if extended {
            out.put_u32(message.timestamp);
        }
        for (i, piece) in message.payload[..len].chunks(self.chunk_size).enumerate() {
            if i > 0 {
                out.put_u8(0xc0 | csid);
                if extended {
                    out.put_u32(message.timestamp);
                }
            }
            out.put_slice(piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(csid: u32, ts: u32, len: usize) -> Message {
        Message {
            csid,
            timestamp: ts,
            type_id: 9,
            stream_id: 1,
            payload: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8], step: usize) -> Vec<Message> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(m) = d.decode(&mut buf).unwrap() {
                out.push(m);
            }
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn round_trip_in_any_split() {
        let mut enc = Encoder::default();
        enc.set_chunk_size(100);
        let msgs = vec![
            message(4, 0, 1000),
            message(6, 33, 5),
            message(4, 0x0100_0000, 301),
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            enc.encode(m, &mut wire);
        }
        for step in [1, 7, 100, wire.len()] {
            let mut d = Decoder::new(1 << 20);
            d.set_chunk_size(100).unwrap();
            assert_eq!(decode_all(&mut d, &wire, step), msgs);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn compressed_headers_reuse_fields() {
        // Type 0 on csid 5, then a type 2 (delta 40) and a type 3 (same delta again).
        let mut wire = vec![0x05, 0, 0, 10, 0, 0, 2, 8, 1, 0, 0, 0, 0xaa, 0xbb];
        wire.extend_from_slice(&[0x85, 0, 0, 40, 0xcc, 0xdd]);
        wire.extend_from_slice(&[0xc5, 0xee, 0xff]);
        let mut d = Decoder::new(1024);
        let got = decode_all(&mut d, &wire, 1);
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![10, 50, 90]);
        assert!(got.iter().all(|m| m.type_id == 8 && m.payload.len() == 2));
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut d = Decoder::new(1000);
        assert_eq!(
            d.set_chunk_size(0x8000_0000),
            Err(ChunkError::ChunkSize(0x8000_0000))
        );
        assert_eq!(d.set_chunk_size(0), Err(ChunkError::ChunkSize(0)));
        // A message longer than the limit.
        let mut buf = BytesMut::from(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(ChunkError::TooLong(0xff_ffff, 1000))
        );
        // A continuation with no message started.
        let mut buf = BytesMut::from(&[0xc7, 1][..]);
        assert_eq!(
            Decoder::new(10).decode(&mut buf),
            Err(ChunkError::NoHeader(7))
        );
        // Many messages opened and never finished.
        let mut d = Decoder::new(1000);
        let mut buf = BytesMut::new();
        for csid in 3..60u8 {
            buf.extend_from_slice(&[csid, 0, 0, 0, 0, 3, 0xe8, 9, 1, 0, 0, 0]);
            buf.extend_from_slice(&[0; 128]);
        }
        let err = loop {
            match d.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("should refuse"),
                Err(e) => break e,
            }
        };
        assert!(matches!(
            err,
            ChunkError::TooManyOpen | ChunkError::Buffered(_)
        ));
    }
}
