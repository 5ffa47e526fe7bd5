//! One RTMP connection after the handshake, sans-io: bytes in, [`Event`]s and reply
//! bytes out. It answers the command flow every publisher runs (`connect`,
//! `releaseStream`, `FCPublish`, `createStream`, `publish`, then media until
//! `FCUnpublish`/`deleteStream`), acknowledges what it receives, and leaves the one
//! decision that is not protocol, whether this publish is allowed, to its owner
//! ([`Session::accept_publish`] / [`Session::refuse_publish`]).

use super::amf::{self, Value};
use super::chunk::{ChunkError, Decoder, Encoder, Message};
use bytes::{Bytes, BytesMut};

/// Chunk size this side sends with.
const OUR_CHUNK_SIZE: u32 = 4096;
/// Acknowledgement window announced to the peer, and bandwidth limit (RTMP's figures).
const WINDOW: u32 = 5_000_000;
/// Longest command or data message decoded. Encoders send a few hundred bytes; decoded
/// AMF0 takes up to 32 times the bytes it came in.
const MAX_AMF: usize = 64 * 1024;
/// Longest message taken before a publish is accepted: only commands come before,
/// and a connection not yet authorised should not hold megabytes.
const BEFORE_PUBLISH: usize = 64 * 1024;
/// Replies waiting after which [`Session::receive`] returns for its owner to send them.
const OUTPUT_HIGH: usize = 64 * 1024;

/// Message type ids.
mod kind {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACK: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
}

/// What the connection's owner has to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client asks to publish `name` (the stream key, with any `?query`) in `app`.
    Publish {
        /// The application named in `connect` (OBS's "Server" path, e.g. `live`).
        app: String,
        /// The publishing name (OBS's "Stream Key").
        name: String,
        /// The message stream it publishes on.
        stream_id: u32,
    },
    /// An audio (`video` false) or video message of the accepted publish.
    Media {
        /// Video (type 9) or audio (type 8).
        video: bool,
        /// RTMP timestamp, ms.
        timestamp: u32,
        /// The FLV tag body.
        body: Bytes,
    },
    /// `onMetaData` properties (width, height, bitrates, encoder...).
    Metadata(Vec<(String, Value)>),
    /// The client stopped publishing (`FCUnpublish`, `deleteStream`, `closeStream`).
    Unpublish,
}

/// Why the connection cannot go on.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SessionError {
    /// Bad chunking.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// A command that is not AMF0.
    #[error("command: {0}")]
    Amf(#[from] amf::AmfError),
    /// A malformed protocol message.
    #[error("{0}")]
    Protocol(&'static str),
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    decoder: Decoder,
    max_message: usize,
    encoder: Encoder,
    out: Vec<u8>,
    app: Option<String>,
    publishing: Option<u32>,
    next_stream: u32,
    ack_window: u32,
    received: u64,
    acked: u64,
}

impl Session {
    /// A session that takes messages of at most `max_message` bytes (64 KiB until a
    /// publish is accepted).
    pub fn new(max_message: usize) -> Self {
        Self {
            decoder: Decoder::new(max_message.min(BEFORE_PUBLISH)),
            max_message,
            encoder: Encoder::default(),
            out: Vec::new(),
            app: None,
            publishing: None,
            next_stream: 1,
            ack_window: 0,
            received: 0,
            acked: 0,
        }
    }

    /// Takes the bytes the peer sent (whole chunks are consumed from `buf`) and returns
    /// what happened.
    ///
    /// It returns early, leaving the rest in `buf`, after an [`Event::Publish`] (so what
    /// follows it, often media, finds the publish decided) and once 64 KiB of replies
    /// wait in [`Session::take_output`]: call it again, after taking the output, until
    /// it takes no bytes from `buf`.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<Vec<Event>, SessionError> {
        let before = buf.len();
        let mut events = Vec::new();
        let result = loop {
            if self.out.len() >= OUTPUT_HIGH || matches!(events.last(), Some(Event::Publish { .. }))
            {
                break Ok(());
            }
            match self.decoder.decode(buf) {
                Ok(Some(message)) => {
                    if let Err(e) = self.handle(message, &mut events) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        self.received += (before - buf.len()) as u64;
        if self.ack_window > 0 && self.received - self.acked >= u64::from(self.ack_window) {
            self.acked = self.received;
            self.send(control(kind::ACK, &(self.received as u32).to_be_bytes()));
        }
        result.map(|()| events)
    }

    /// Bytes to send to the peer, taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes held in half-received messages: at most twice `max_message`.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Lets the requested publish go ahead.
    pub fn accept_publish(&mut self, stream_id: u32, name: &str) {
        self.publishing = Some(stream_id);
        self.decoder.raise_max_message(self.max_message);
        // Stream Begin (user control event 0) on the publishing stream.
        let mut payload = vec![0, 0];
        payload.extend_from_slice(&stream_id.to_be_bytes());
        self.send(control(kind::USER_CONTROL, &payload));
        self.on_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("{name} is now published"),
        );
    }

    /// Refuses the requested publish with an RTMP status `code` (e.g.
    /// `NetStream.Publish.BadName`) the encoder shows to its user.
    pub fn refuse_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        self.on_status(stream_id, "error", code, description);
    }

    fn handle(&mut self, m: Message, events: &mut Vec<Event>) -> Result<(), SessionError> {
        match m.type_id {
            kind::SET_CHUNK_SIZE => {
                let size =
                    be_u32(&m.payload).ok_or(SessionError::Protocol("short Set Chunk Size"))?;
                self.decoder.set_chunk_size(size)?;
            }
            kind::WINDOW_ACK_SIZE => {
                self.ack_window = be_u32(&m.payload)
                    .ok_or(SessionError::Protocol("short Window Acknowledgement Size"))?;
            }
            kind::ABORT => {
                let csid = be_u32(&m.payload).ok_or(SessionError::Protocol("short Abort"))?;
                self.decoder.abort(csid);
            }
            // Ping request (6): answer with a ping response (7) carrying its time.
            kind::USER_CONTROL if m.payload.len() >= 6 && m.payload[..2] == [0, 6] => {
                let mut p = vec![0, 7];
                p.extend_from_slice(&m.payload[2..6]);
                self.send(control(kind::USER_CONTROL, &p));
            }
            // Media of the accepted publish (anything else is dropped).
            kind::AUDIO | kind::VIDEO
                if self.publishing == Some(m.stream_id) && !m.payload.is_empty() =>
            {
                events.push(Event::Media {
                    video: m.type_id == kind::VIDEO,
                    timestamp: m.timestamp,
                    body: m.payload,
                });
            }
            // (Longer metadata is dropped.)
            kind::DATA_AMF0 | kind::DATA_AMF3 if m.payload.len() <= MAX_AMF => {
                let payload = skip_amf3_marker(m.type_id == kind::DATA_AMF3, m.payload);
                // Metadata that does not parse is not worth a connection.
                if let Ok(values) = amf::decode_all(payload) {
                    let mut it = values
                        .into_iter()
                        .skip_while(|v| matches!(v.as_str(), Some("@setDataFrame" | "onMetaData")));
                    if let Some(Value::Object(props)) = it.next() {
                        events.push(Event::Metadata(props));
                    }
                }
            }
            kind::COMMAND_AMF0 | kind::COMMAND_AMF3 => {
                if m.payload.len() > MAX_AMF {
                    return Err(SessionError::Protocol("command longer than 64 KiB"));
                }
                let payload = skip_amf3_marker(m.type_id == kind::COMMAND_AMF3, m.payload);
                let values = amf::decode_all(payload)?;
                self.command(m.stream_id, &values, events)?;
            }
            _ => {} // other types carry nothing a publisher needs
        }
        Ok(())
    }

    fn command(
        &mut self,
        stream_id: u32,
        values: &[Value],
        events: &mut Vec<Event>,
    ) -> Result<(), SessionError> {
        let name = values.first().and_then(Value::as_str).unwrap_or("");
        let txn = values.get(1).and_then(Value::as_number).unwrap_or(0.0);
        if self.app.is_none() && name != "connect" {
            return Err(SessionError::Protocol("command before connect"));
        }
        match name {
            "connect" => {
                let app = values
                    .get(2)
                    .and_then(|o| o.get("app"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.app = Some(app.trim_end_matches('/').to_string());
                self.send(control(kind::WINDOW_ACK_SIZE, &WINDOW.to_be_bytes()));
                let mut bw = WINDOW.to_be_bytes().to_vec();
                bw.push(2); // dynamic
                self.send(control(kind::SET_PEER_BANDWIDTH, &bw));
                self.send(control(kind::SET_CHUNK_SIZE, &OUR_CHUNK_SIZE.to_be_bytes()));
                self.encoder.set_chunk_size(OUR_CHUNK_SIZE as usize);
                self.reply(
                    0,
                    &[
                        amf::string("_result"),
                        Value::Number(txn),
                        amf::object([
                            ("fmsVer", amf::string("FMS/3,0,1,123")),
                            ("capabilities", Value::Number(31.0)),
                        ]),
                        amf::object([
                            ("level", amf::string("status")),
                            ("code", amf::string("NetConnection.Connect.Success")),
                            ("description", amf::string("Connection succeeded.")),
                            ("objectEncoding", Value::Number(0.0)),
                        ]),
                    ],
                );
            }
            "createStream" => {
                let id = self.next_stream;
                self.next_stream = self.next_stream.saturating_add(1);
                self.reply(
                    0,
                    &[
                        amf::string("_result"),
                        Value::Number(txn),
                        Value::Null,
                        Value::Number(f64::from(id)),
                    ],
                );
            }
            "releaseStream" | "FCPublish" | "_checkbw" if txn > 0.0 => {
                self.reply(
                    0,
                    &[
                        amf::string("_result"),
                        Value::Number(txn),
                        Value::Null,
                        Value::Undefined,
                    ],
                );
            }
            "publish" => {
                let publish_name = values.get(3).and_then(Value::as_str).unwrap_or("");
                events.push(Event::Publish {
                    app: self.app.clone().unwrap_or_default(),
                    name: publish_name.to_string(),
                    stream_id,
                });
            }
            "FCUnpublish" | "deleteStream" | "closeStream" if self.publishing.take().is_some() => {
                events.push(Event::Unpublish);
            }
            "play" | "play2" => self.on_status(
                stream_id,
                "error",
                "NetStream.Play.Failed",
                "this node takes publishing only: watch over HLS at /live/STREAM/index.m3u8",
            ),
            _ => {}
        }
        Ok(())
    }

    fn on_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.reply(
            stream_id,
            &[
                amf::string("onStatus"),
                Value::Number(0.0),
                Value::Null,
                amf::object([
                    ("level", amf::string(level)),
                    ("code", amf::string(code)),
                    ("description", amf::string(description)),
                ]),
            ],
        );
    }

    fn reply(&mut self, stream_id: u32, values: &[Value]) {
        let mut payload = Vec::new();
        for v in values {
            amf::encode(v, &mut payload);
        }
        self.send(Message {
            csid: if stream_id == 0 { 3 } else { 5 },
            timestamp: 0,
            type_id: kind::COMMAND_AMF0,
            stream_id,
            payload: payload.into(),
        });
    }

    fn send(&mut self, message: Message) {
        self.encoder.encode(&message, &mut self.out);
    }
}

/// A protocol control message (chunk stream 2, message stream 0).
fn control(type_id: u8, payload: &[u8]) -> Message {
    Message {
        csid: 2,
        timestamp: 0,
        type_id,
        stream_id: 0,
        payload: Bytes::copy_from_slice(payload),
    }
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// AMF3 command and data messages start with a format byte before AMF0 values.
fn skip_amf3_marker(amf3: bool, payload: Bytes) -> Bytes {
    if amf3 && !payload.is_empty() {
        payload.slice(1..)
    } else {
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(stream_id: u32, values: &[Value]) -> Vec<u8> {
        let mut payload = Vec::new();
        for v in values {
            amf::encode(v, &mut payload);
        }
        let mut out = Vec::new();
        Encoder::default().encode(
            &Message {
                csid: 3,
                timestamp: 0,
                type_id: kind::COMMAND_AMF0,
                stream_id,
                payload: payload.into(),
            },
            &mut out,
        );
        out
    }

    fn replies(bytes: Vec<u8>) -> Vec<Vec<Value>> {
        let mut d = Decoder::new(1 << 20);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf).unwrap() {
            if m.type_id == kind::SET_CHUNK_SIZE {
                d.set_chunk_size(be_u32(&m.payload).unwrap()).unwrap();
            }
            if m.type_id == kind::COMMAND_AMF0 {
                out.push(amf::decode_all(m.payload).unwrap());
            }
        }
        out
    }

    #[test]
    fn publish_flow_as_ffmpeg_runs_it() {
        let mut s = Session::new(1 << 20);
        let mut wire = command(
            0,
            &[
                amf::string("connect"),
                Value::Number(1.0),
                amf::object([
                    ("app", amf::string("live")),
                    ("type", amf::string("nonprivate")),
                ]),
            ],
        );
        wire.extend(command(
            0,
            &[
                amf::string("releaseStream"),
                Value::Number(2.0),
                Value::Null,
                amf::string("cam?key=k"),
            ],
        ));
        wire.extend(command(
            0,
            &[
                amf::string("FCPublish"),
                Value::Number(3.0),
                Value::Null,
                amf::string("cam?key=k"),
            ],
        ));
        wire.extend(command(
            0,
            &[amf::string("createStream"), Value::Number(4.0), Value::Null],
        ));
        wire.extend(command(
            1,
            &[
                amf::string("publish"),
                Value::Number(5.0),
                Value::Null,
                amf::string("cam?key=k"),
                amf::string("live"),
            ],
        ));
        let events = s.receive(&mut BytesMut::from(&wire[..])).unwrap();
        assert_eq!(
            events,
            vec![Event::Publish {
                app: "live".into(),
                name: "cam?key=k".into(),
                stream_id: 1
            }]
        );
        let r = replies(s.take_output());
        assert_eq!(
            r[0][3].get("code").and_then(Value::as_str),
            Some("NetConnection.Connect.Success")
        );
        assert_eq!(
            r.last().unwrap()[3],
            Value::Number(1.0),
            "createStream gives stream 1"
        );

        // Media before the publish is accepted is dropped; after, it is passed on.
        let mut video = Vec::new();
        Encoder::default().encode(
            &Message {
                csid: 6,
                timestamp: 40,
                type_id: kind::VIDEO,
                stream_id: 1,
                payload: Bytes::from_static(&[0x17, 1, 0, 0, 0]),
            },
            &mut video,
        );
        assert!(
            s.receive(&mut BytesMut::from(&video[..]))
                .unwrap()
                .is_empty()
        );
        s.accept_publish(1, "cam");
        let r = replies(s.take_output());
        assert_eq!(
            r[0][3].get("code").and_then(Value::as_str),
            Some("NetStream.Publish.Start")
        );
        let ev = s.receive(&mut BytesMut::from(&video[..])).unwrap();
        assert!(matches!(
            &ev[..],
            [Event::Media {
                video: true,
                timestamp: 40,
                ..
            }]
        ));
        let stop = command(
            1,
            &[
                amf::string("deleteStream"),
                Value::Number(6.0),
                Value::Null,
                Value::Number(1.0),
            ],
        );
        assert_eq!(
            s.receive(&mut BytesMut::from(&stop[..])).unwrap(),
            vec![Event::Unpublish]
        );
    }

    fn connect() -> Vec<u8> {
        command(
            0,
            &[
                amf::string("connect"),
                Value::Number(1.0),
                amf::object([("app", amf::string("live"))]),
            ],
        )
    }

    fn publish() -> Vec<u8> {
        command(
            1,
            &[
                amf::string("publish"),
                Value::Number(5.0),
                Value::Null,
                amf::string("cam?key=k"),
            ],
        )
    }

    #[test]
    fn media_sent_with_the_publish_is_kept() {
        // An encoder that does not wait for NetStream.Publish.Start: publish and the
        // video configuration arrive in one read.
        let mut wire = connect();
        wire.extend(publish());
        Encoder::default().encode(
            &Message {
                csid: 6,
                timestamp: 0,
                type_id: kind::VIDEO,
                stream_id: 1,
                payload: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
            },
            &mut wire,
        );
        let mut s = Session::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        let events = s.receive(&mut buf).unwrap();
        assert!(matches!(&events[..], [Event::Publish { stream_id: 1, .. }]));
        s.accept_publish(1, "cam");
        let events = s.receive(&mut buf).unwrap();
        assert!(matches!(&events[..], [Event::Media { video: true, .. }]));
        assert!(buf.is_empty());
    }

    #[test]
    fn commands_before_connect_are_refused() {
        let mut s = Session::new(1 << 20);
        assert_eq!(
            s.receive(&mut BytesMut::from(&publish()[..])),
            Err(SessionError::Protocol("command before connect"))
        );
        assert!(s.take_output().is_empty());
    }

    #[test]
    fn long_commands_and_metadata_are_not_decoded() {
        let mut s = Session::new(1 << 20);
        let mut wire = connect();
        wire.extend(publish());
        s.receive(&mut BytesMut::from(&wire[..])).unwrap();
        s.accept_publish(1, "cam");
        // 100 KiB of nulls: metadata that would take 3 MiB decoded is dropped...
        let mut wire = Vec::new();
        let mut m = Message {
            csid: 5,
            timestamp: 0,
            type_id: kind::DATA_AMF0,
            stream_id: 1,
            payload: Bytes::from(vec![0x05; 100 << 10]),
        };
        Encoder::default().encode(&m, &mut wire);
        assert_eq!(s.receive(&mut BytesMut::from(&wire[..])), Ok(vec![]));
        // ... and such a command ends the connection.
        m.type_id = kind::COMMAND_AMF0;
        wire.clear();
        Encoder::default().encode(&m, &mut wire);
        assert!(matches!(
            s.receive(&mut BytesMut::from(&wire[..])),
            Err(SessionError::Protocol(_))
        ));
    }

    #[test]
    fn replies_wait_to_be_sent_before_more_is_read() {
        let mut s = Session::new(1 << 20);
        let wire: Vec<u8> = std::iter::repeat_with(connect)
            .take(2000)
            .flatten()
            .collect();
        let mut buf = BytesMut::from(&wire[..]);
        let mut rounds = 0;
        while !buf.is_empty() {
            s.receive(&mut buf).unwrap();
            assert!(s.take_output().len() < 66 << 10);
            rounds += 1;
        }
        assert!(rounds > 2);
    }

    #[test]
    fn long_messages_wait_for_an_accepted_publish() {
        let video = |len: usize| {
            let mut wire = Vec::new();
            Encoder::default().encode(
                &Message {
                    csid: 6,
                    timestamp: 0,
                    type_id: kind::VIDEO,
                    stream_id: 1,
                    payload: Bytes::from(vec![0x27; len]),
                },
                &mut wire,
            );
            wire
        };
        let mut s = Session::new(1 << 20);
        let mut wire = connect();
        wire.extend(video(100 << 10));
        assert!(matches!(
            s.receive(&mut BytesMut::from(&wire[..])),
            Err(SessionError::Chunk(ChunkError::TooLong(..)))
        ));
        let mut s = Session::new(1 << 20);
        let mut wire = connect();
        wire.extend(publish());
        wire.extend(video(100 << 10));
        let mut buf = BytesMut::from(&wire[..]);
        s.receive(&mut buf).unwrap();
        s.accept_publish(1, "cam");
        let events = s.receive(&mut buf).unwrap();
        assert!(matches!(&events[..], [Event::Media { body, .. }] if body.len() == 100 << 10));
    }

    #[test]
    fn refusal_is_an_error_status() {
        let mut s = Session::new(1024);
        s.refuse_publish(1, "NetStream.Publish.BadName", "wrong key");
        let r = replies(s.take_output());
        assert_eq!(r[0][3].get("level").and_then(Value::as_str), Some("error"));
    }
}
