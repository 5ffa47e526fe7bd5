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
/// Largest chunk size used: a message is at most 2^24 - 1 bytes long, so a peer's larger
/// size (it may set up to 2^31 - 1) means the same.
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
    /// A chunk size of 0, or with the top bit set.
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
    /// The message's first chunk had an extended timestamp (its other chunks repeat it).
    extended: bool,
    /// That extended timestamp.
    ext_value: u32,
    started: bool,
    partial: Option<BytesMut>,
}

/// Reassembles messages from chunks.
#[derive(Debug)]
pub struct Decoder {
    chunk_size: usize,
    max_message: usize,
    streams: HashMap<u32, ChunkStream>,
    /// Bytes in the partial messages.
    buffered: usize,
    /// Chunk streams with a partial message.
    open: usize,
}

impl Decoder {
    /// A decoder that refuses messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message,
            streams: HashMap::new(),
            buffered: 0,
            open: 0,
        }
    }

    /// The peer's chunk size changed (its Set Chunk Size message): 1 to 2^31 - 1.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > 0x7fff_ffff {
            return Err(ChunkError::ChunkSize(size));
        }
        self.chunk_size = (size as usize).min(MAX_CHUNK_SIZE);
        Ok(())
    }

    /// Takes messages of up to `max_message` bytes from now on (never below the limit
    /// it had: what is held was judged against that).
    pub fn raise_max_message(&mut self, max_message: usize) {
        self.max_message = self.max_message.max(max_message);
    }

    /// Drops the half-received message on chunk stream `csid` (the peer's Abort).
    pub fn abort(&mut self, csid: u32) {
        if let Some(partial) = self.streams.get_mut(&csid).and_then(|s| s.partial.take()) {
            self.buffered -= partial.len();
            self.open -= 1;
        }
    }

    /// Bytes held in half-received messages (never more than twice the longest message).
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
            let was_open = stream.is_some_and(|s| s.partial.is_some());
            // A type 3 header continues the partial message; any other starts a new one
            // (type 0-2 drop a partial one).
            let continuing = fmt == 3 && was_open;
            let ts_field = if fmt < 3 { u24(&h[0..3]) } else { 0 };
            let extended = match fmt {
                3 => stream.is_some_and(|s| s.extended),
                _ => ts_field == 0xff_ffff,
            };
            let mut at = header_len + mh_len;
            let mut ext = None;
            if extended {
                if buf.len() < at + 4 {
                    return Ok(None);
                }
                let value = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
                // Old librtmp and ffmpeg leave it out of a message's later chunks: there,
                // four bytes other than the first chunk's value are payload.
                if !continuing || stream.is_some_and(|s| s.ext_value == value) {
                    ext = Some(value);
                    at += 4;
                }
            }
            let length = match fmt {
                0 | 1 => u24(&h[3..6]) as usize,
                _ => stream.map_or(0, |s| s.length),
            };
            if length > self.max_message {
                return Err(ChunkError::TooLong(length, self.max_message));
            }
            let old = stream
                .and_then(|s| s.partial.as_ref())
                .map_or(0, BytesMut::len);
            let have = if continuing { old } else { 0 };
            let piece = length.saturating_sub(have).min(self.chunk_size);
            if buf.len() < at + piece {
                return Ok(None);
            }
            // The whole chunk is here. Refuse it if the partial messages would grow past
            // their limits, before anything is kept.
            let complete = have + piece >= length;
            if !complete {
                if self.open - usize::from(was_open) >= MAX_OPEN_STREAMS {
                    return Err(ChunkError::TooManyOpen);
                }
                if self.buffered - (old - have) + piece > 2 * self.max_message {
                    return Err(ChunkError::Buffered(2 * self.max_message));
                }
            }
            if stream.is_none() && self.streams.len() >= MAX_OPEN_STREAMS * 4 {
                // Chunk stream ids are cheap to invent; their state is not.
                self.streams.retain(|_, s| s.partial.is_some());
            }
            let s = self.streams.entry(csid).or_default();
            let ts = ext.unwrap_or(ts_field);
            match fmt {
                // A type 3 header after a type 0 adds the type 0's timestamp (RTMP 1.0
                // 5.3.1.2.4; ffmpeg writes it so).
                0 => {
                    s.timestamp = ts;
                    s.delta = ts;
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
                _ if !continuing => {
                    // A new message repeating the last delta; past 2^24 - 1, the one
                    // its extended timestamp holds.
                    s.delta = ext.unwrap_or(s.delta);
                    s.timestamp = s.timestamp.wrapping_add(s.delta);
                }
                _ => {}
            }
            if fmt < 3 {
                s.extended = extended;
            }
            if let (Some(value), false) = (ext, continuing) {
                s.ext_value = value;
            }
            s.started = true;
            let mut partial = match s.partial.take() {
                Some(p) if continuing => p,
                Some(p) => {
                    self.buffered -= p.len();
                    BytesMut::new()
                }
                None => BytesMut::new(),
            };
            if was_open {
                self.open -= 1;
            }
            partial.put_slice(&buf[at..at + piece]);
            buf.advance(at + piece);
            if complete {
                self.buffered -= have;
                return Ok(Some(Message {
                    csid,
                    timestamp: s.timestamp,
                    type_id: s.type_id,
                    stream_id: s.stream_id,
                    payload: partial.freeze(),
                }));
            }
            self.buffered += piece;
            self.open += 1;
            s.partial = Some(partial);
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

    #[test]
    fn type_3_after_type_0_repeats_its_timestamp_as_the_delta() {
        // ffmpeg: a type 0 at 23 ms, then a same-sized message 23 ms later as type 3.
        let mut wire = vec![0x04, 0, 0, 23, 0, 0, 1, 8, 1, 0, 0, 0, 0xaa];
        wire.extend_from_slice(&[0xc4, 0xbb]);
        // Past 2^24 - 1 ms: a type 1 whose delta is extended, then a type 3 with its own.
        wire.extend_from_slice(&[0x44, 0xff, 0xff, 0xff, 0, 0, 1, 8, 0x01, 0, 0, 0, 0xcc]);
        wire.extend_from_slice(&[0xc4, 0x01, 0, 0, 1, 0xdd]);
        let got = decode_all(&mut Decoder::new(1024), &wire, 1);
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![23, 46, 46 + 0x0100_0000, 47 + 0x0200_0000]);
    }

    #[test]
    fn chunk_sizes_up_to_2_31_are_taken() {
        let mut d = Decoder::new(1 << 20);
        assert_eq!(d.set_chunk_size(0x7fff_ffff), Ok(()));
        let mut enc = Encoder::default();
        enc.set_chunk_size(MAX_CHUNK_SIZE);
        let m = message(4, 7, 100_000);
        let mut wire = Vec::new();
        enc.encode(&m, &mut wire);
        assert_eq!(decode_all(&mut d, &wire, 4096), vec![m]);
    }

    #[test]
    fn continuation_without_its_extended_timestamp() {
        // Old librtmp: the type 3 chunk of a message at 2^24 ms lacks the 4 bytes.
        let m = message(4, 0x0100_0000, 200);
        let mut wire = vec![0x04, 0xff, 0xff, 0xff, 0, 0, 200, 9, 1, 0, 0, 0, 1, 0, 0, 0];
        wire.extend_from_slice(&m.payload[..128]);
        wire.push(0xc4);
        wire.extend_from_slice(&m.payload[128..]);
        assert_eq!(decode_all(&mut Decoder::new(1024), &wire, 1), vec![m]);
    }

    #[test]
    fn buffered_bytes_never_pass_the_limit() {
        let mut d = Decoder::new(1000);
        d.set_chunk_size(999).unwrap();
        let mut buf = BytesMut::new();
        for csid in 3..6u8 {
            buf.extend_from_slice(&[csid, 0, 0, 0, 0, 3, 0xe8, 9, 1, 0, 0, 0]);
            buf.extend_from_slice(&[0; 999]);
        }
        assert_eq!(d.decode(&mut buf), Err(ChunkError::Buffered(2000)));
        assert_eq!(d.buffered(), 1998);
        d.abort(3);
        d.abort(4);
        assert_eq!(d.buffered(), 0);
    }
}
