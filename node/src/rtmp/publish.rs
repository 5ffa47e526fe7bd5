//! One stream being published over RTMP: the stream key's check, FLV tags to frames,
//! frames to segments (the node's segmenter), segments into the mesh (the same path as
//! HTTP ingest: numbering that continues the mesh's, source election, signing).

use crate::announce::{self, Delivered};
use crate::encoders::{EncoderInfo, Registration};
use crate::ingest::Ready;
use crate::media::segmenter::{Frame, Limits, Segment, Segmenter};
use crate::media::{MediaError, aac, avc, flv};
use crate::metrics::add;
use crate::node::{Shared, unix_millis};
use crate::rtmp::amf::Value;
use bytes::Bytes;
use shoal_protocol::segment::Container;
use shoal_protocol::stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How often a live publisher tells the core its encoder is still there. The claim
/// lapses after seconds; the encoder sends many frames a second.
const ACTIVITY_EVERY: Duration = Duration::from_millis(500);

/// Why a publish request was refused: an RTMP status code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `NetStream.Publish.*` code the encoder shows.
    pub code: &'static str,
    /// What went wrong.
    pub description: String,
}

/// Splits OBS's "Stream Key" (`STREAM?key=KEY`, as ffmpeg's URL path also ends) into the
/// stream and the key, and checks both.
pub fn authorize(keys: &[String], publish_name: &str) -> Result<stream::Name, Refusal> {
    let (stream_part, query) = publish_name.split_once('?').unwrap_or((publish_name, ""));
    let name = stream::Name::new(stream_part).map_err(|e| Refusal {
        code: "NetStream.Publish.BadName",
        description: format!("invalid stream name {stream_part:?}: {e}"),
    })?;
    let key = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .unwrap_or("");
    if key.is_empty() || !crate::stream_keys::allows(keys, stream_part, key) {
        return Err(Refusal {
            code: "NetStream.Publish.Denied",
            description: if key.is_empty() {
                "a stream key is needed: use STREAM?key=KEY as the stream key".into()
            } else {
                format!("the key is not accepted for stream {stream_part}")
            },
        });
    }
    Ok(name)
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

/// The publishing side of one RTMP connection.
pub struct Publisher {
    name: stream::Name,
    registration: Registration,
    segmenter: Segmenter,
    clock: Clock,
    activity_at: Instant,
    video: Option<avc::AvcConfig>,
    audio: Option<aac::AacConfig>,
}

impl Publisher {
    /// Starts publishing `name` from `address`: registers the encoder (a previous
    /// connection of the same stream is told to go) and claims the stream.
    pub fn start(node: &Arc<Shared>, name: stream::Name, address: SocketAddr) -> Self {
        let registration = node.encoders.register(
            &name,
            EncoderInfo {
                protocol: "rtmp",
                address,
                codecs: vec![],
                width: 0,
                height: 0,
                bitrate_bps: 0,
                encoder: None,
                segments: 0,
                since_ms: unix_millis(),
            },
        );
        let now = Instant::now();
        node.core()
            .handle_ingest_activity(&name, unix_millis(), now);
        let limits = Limits {
            target: node.config.segment_duration,
            max_bytes: node.config.core.max_segment_size,
            max_duration: (node.config.segment_duration * 5).max(Duration::from_secs(10)),
        };
        info!(stream = %name, %address, "rtmp publish started");
        Self {
            name,
            registration,
            segmenter: Segmenter::new(limits),
            clock: Clock::default(),
            activity_at: now,
            video: None,
            audio: None,
        }
    }

    /// Told when a newer connection takes the stream over.
    pub fn replaced(&self) -> Arc<tokio::sync::Notify> {
        self.registration.replaced.clone()
    }

    /// The stream published.
    pub fn name(&self) -> &stream::Name {
        &self.name
    }

    /// One audio or video message.
    pub fn media(&mut self, node: &Arc<Shared>, video: bool, timestamp: u32, body: &Bytes) {
        let now = Instant::now();
        if now.saturating_duration_since(self.activity_at) >= ACTIVITY_EVERY {
            self.activity_at = now;
            node.core()
                .handle_ingest_activity(&self.name, unix_millis(), now);
        }
        let ms = self.clock.extend(timestamp);
        let result = if video {
            self.video(ms, body)
        } else {
            self.audio(ms, body)
        };
        match result {
            Ok(Some(segment)) => self.deliver(node, segment, false),
            Ok(None) => {}
            Err(e) => {
                add(&node.metrics.ingest_media_errors, 1);
                warn!(stream = %self.name, error = %e, "encoder media not usable");
            }
        }
    }

    fn video(&mut self, ms: u64, body: &Bytes) -> Result<Option<Segment>, MediaError> {
        match flv::parse_video(body)? {
            flv::VideoTag::AvcConfig(record) => {
                let config = avc::parse_config(&record)?;
                if self
                    .video
                    .as_ref()
                    .is_some_and(|c| c.sps == config.sps && c.pps == config.pps)
                {
                    return Ok(None); // a repeat (OBS resends it), not a change
                }
                debug!(stream = %self.name, codec = %config.codec(), width = config.width, height = config.height, "video configuration");
                self.video = Some(config.clone());
                self.segmenter.set_video_config(config);
                Ok(None)
            }
            flv::VideoTag::AvcFrame {
                keyframe,
                composition_ms,
                data,
            } => self.segmenter.push(Frame::Video {
                dts_ms: ms,
                pts_ms: ms.saturating_add_signed(i64::from(composition_ms)),
                keyframe,
                avcc: data,
            }),
            flv::VideoTag::Ignored => Ok(None),
        }
    }

    fn audio(&mut self, ms: u64, body: &Bytes) -> Result<Option<Segment>, MediaError> {
        match flv::parse_audio(body)? {
            flv::AudioTag::AacConfig(asc) => {
                let config = aac::parse_config(&asc)?;
                if self.audio.as_ref() == Some(&config) {
                    return Ok(None);
                }
                self.audio = Some(config.clone());
                self.segmenter.set_audio_config(config);
                Ok(None)
            }
            flv::AudioTag::AacFrame(raw) => self.segmenter.push(Frame::Audio { pts_ms: ms, raw }),
            flv::AudioTag::Ignored => Ok(None),
        }
    }

    /// `onMetaData`: fills in what the codec configuration does not say.
    pub fn metadata(&mut self, node: &Arc<Shared>, props: &[(String, Value)]) {
        let get = |k: &str| props.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let encoder = get("encoder")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(64).collect());
        let width = get("width").and_then(Value::as_number).unwrap_or(0.0);
        let height = get("height").and_then(Value::as_number).unwrap_or(0.0);
        node.encoders
            .update(&self.name, &self.registration, |info| {
                info.encoder = encoder;
                if info.width == 0
                    && (1.0..=16384.0).contains(&width)
                    && (1.0..=16384.0).contains(&height)
                {
                    info.width = width as u32;
                    info.height = height as u32;
                }
            });
    }

    /// Hands one finished segment to the mesh.
    fn deliver(&mut self, node: &Arc<Shared>, segment: Segment, ended: bool) {
        let seq = node.next_seq(&self.name);
        let size = segment.bytes.len() as u64;
        let ready = Ready {
            seq,
            file: format!("rtmp-{seq}.ts"),
            bytes: segment.bytes,
            duration_ms: segment.duration_ms,
            container: Container::Ts,
            init: None,
            // A stream's first segment follows nothing; after a reconnect, the new
            // connection's media follows a break.
            discontinuity: segment.discontinuity && seq > 0,
        };
        let codecs: Vec<String> = self
            .video
            .iter()
            .map(avc::AvcConfig::codec)
            .chain(self.audio.iter().map(aac::AacConfig::codec))
            .collect();
        let (width, height) = self.video.as_ref().map_or((0, 0), |v| (v.width, v.height));
        let bitrate = size * 8000 / u64::from(segment.duration_ms.max(1));
        node.encoders
            .update(&self.name, &self.registration, |info| {
                info.codecs = codecs;
                if width > 0 {
                    (info.width, info.height) = (width, height);
                }
                info.bitrate_bps = bitrate;
                info.segments += 1;
            });
        match announce::deliver(node, &self.name, vec![ready], ended) {
            Ok(Delivered::Announced) | Ok(Delivered::Standby) => {}
            Err(e) => {
                add(&node.metrics.ingest_rejected, 1);
                warn!(stream = %self.name, error = %e, "segment not announced");
            }
        }
    }

    /// The connection ends. `unpublished`: the encoder said it stopped (the stream ends
    /// after its last segment); otherwise the connection was lost and a reconnect
    /// continues the stream after a discontinuity.
    pub fn finish(mut self, node: &Arc<Shared>, unpublished: bool) {
        match self.segmenter.finish() {
            Some(last) => self.deliver(node, last, unpublished),
            None if unpublished => {
                if let Err(e) = announce::deliver(node, &self.name, vec![], true) {
                    warn!(stream = %self.name, error = %e, "stream end not announced");
                }
            }
            None => {}
        }
        node.encoders.remove(&self.name, &self.registration);
        info!(stream = %self.name, unpublished, "rtmp publish ended");
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
