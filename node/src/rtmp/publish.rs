//! One stream being published over RTMP: the stream key's check, and FLV tags (with
//! RTMP's 32-bit clock) translated into frames for the stream's [`Publisher`].

use crate::media::segmenter::Frame;
use crate::media::{MediaError, aac, avc, flv};
use crate::node::Shared;
use crate::publisher::Publisher;
use crate::rtmp::amf::Value;
use crate::stream_keys::KeyRefusal;
use bytes::Bytes;
use shoal_protocol::stream;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a publish request was refused: an RTMP status code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `NetStream.Publish.*` code the encoder shows.
    pub code: &'static str,
    /// What went wrong.
    pub description: String,
}

/// Checks OBS's "Stream Key" (`STREAM?key=KEY`, as ffmpeg's URL path also ends).
pub fn authorize(keys: &[String], publish_name: &str) -> Result<stream::Name, Refusal> {
    let (stream, key) = crate::stream_keys::split(publish_name);
    crate::stream_keys::check(keys, stream, key).map_err(|e| Refusal {
        code: match e {
            KeyRefusal::BadName(..) => "NetStream.Publish.BadName",
            KeyRefusal::NoKey | KeyRefusal::WrongKey(_) => "NetStream.Publish.Denied",
        },
        description: e.to_string(),
    })
}

/// Extends RTMP's 32-bit millisecond clock to 64 bits across its wrap (49.7 days).
#[derive(Debug, Default)]
struct Clock {
    last: Option<u32>,
    high: u64,
}

impl Clock {
    fn extend(&mut self, ts: u32) -> u64 {
        if let Some(last) = self.last {
            // Far backwards is a wrap; slightly backwards is audio/video interleaving.
            if ts < last && last - ts > 1 << 31 {
                self.high += 1 << 32;
            }
        }
        self.last = Some(ts);
        self.high + u64::from(ts)
    }
}

/// An RTMP publish: FLV tags translated for the stream's [`Publisher`].
pub struct FlvPublish {
    publisher: Publisher,
    clock: Clock,
}

impl FlvPublish {
    /// Starts publishing `name` from `address`.
    pub fn start(node: &Arc<Shared>, name: stream::Name, address: SocketAddr) -> Self {
        Self {
            publisher: Publisher::start(node, name, address, "rtmp"),
            clock: Clock::default(),
        }
    }

    /// Told when a newer connection takes the stream over.
    pub fn replaced(&self) -> Arc<tokio::sync::Notify> {
        self.publisher.replaced()
    }

    /// One audio or video message.
    pub fn media(&mut self, node: &Arc<Shared>, video: bool, timestamp: u32, body: &Bytes) {
        let ms = self.clock.extend(timestamp);
        let frame = if video {
            self.video(ms, body)
        } else {
            self.audio(ms, body)
        };
        match frame {
            Ok(Some(frame)) => self.publisher.frame(node, frame),
            Ok(None) => {}
            Err(e) => self.publisher.media_error(node, &e),
        }
    }

    fn video(&mut self, ms: u64, body: &Bytes) -> Result<Option<Frame>, MediaError> {
        Ok(match flv::parse_video(body)? {
            flv::VideoTag::AvcConfig(record) => {
                self.publisher.video_config(avc::parse_config(&record)?);
                None
            }
            flv::VideoTag::AvcFrame {
                keyframe,
                composition_ms,
                data,
            } => Some(Frame::Video {
                dts_ms: ms,
                pts_ms: ms.saturating_add_signed(i64::from(composition_ms)),
                keyframe,
                avcc: data,
            }),
            flv::VideoTag::Ignored => None,
        })
    }

    fn audio(&mut self, ms: u64, body: &Bytes) -> Result<Option<Frame>, MediaError> {
        Ok(match flv::parse_audio(body)? {
            flv::AudioTag::AacConfig(asc) => {
                self.publisher.audio_config(aac::parse_config(&asc)?);
                None
            }
            flv::AudioTag::AacFrame(raw) => Some(Frame::Audio { pts_ms: ms, raw }),
            flv::AudioTag::Ignored => None,
        })
    }

    /// `onMetaData`: the encoder's software and a provisional resolution.
    pub fn metadata(&mut self, node: &Arc<Shared>, props: &[(String, Value)]) {
        let get = |k: &str| props.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let encoder = get("encoder")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(64).collect());
        let dim = |k: &str| {
            get(k)
                .and_then(Value::as_number)
                .filter(|n| (1.0..=16384.0).contains(n))
                .map_or(0, |n| n as u32)
        };
        self.publisher
            .metadata(node, encoder, dim("width"), dim("height"));
    }

    /// The connection ends (see [`Publisher::finish`]).
    pub fn finish(self, node: &Arc<Shared>, unpublished: bool) {
        self.publisher.finish(node, unpublished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_in_the_publish_name() {
        let keys = vec!["k1".to_string(), "cam2=k2".to_string()];
        assert_eq!(authorize(&keys, "cam?key=k1").unwrap().as_str(), "cam");
        assert_eq!(
            authorize(&keys, "cam2?foo=1&key=k2").unwrap().as_str(),
            "cam2"
        );
        assert_eq!(
            authorize(&keys, "cam").unwrap_err().code,
            "NetStream.Publish.Denied"
        );
        assert_eq!(
            authorize(&keys, "cam?key=nope").unwrap_err().code,
            "NetStream.Publish.Denied"
        );
        assert_eq!(
            authorize(&keys, "cam3?key=k2").unwrap_err().code,
            "NetStream.Publish.Denied"
        );
        assert_eq!(
            authorize(&keys, "../x?key=k1").unwrap_err().code,
            "NetStream.Publish.BadName"
        );
    }

    #[test]
    fn clock_extends_across_the_wrap() {
        let mut c = Clock::default();
        assert_eq!(c.extend(u32::MAX - 10), u64::from(u32::MAX - 10));
        assert_eq!(
            c.extend(u32::MAX - 30),
            u64::from(u32::MAX - 30),
            "small step back"
        );
        assert_eq!(c.extend(5), (1u64 << 32) + 5);
    }
}
