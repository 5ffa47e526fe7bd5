//! One stream being pushed by an encoder, whatever the protocol (RTMP, SRT): codec
//! configurations and frames in; segments cut by the node's segmenter out to the mesh,
//! on the same path as HTTP ingest (numbering that continues the mesh's, source
//! election, signing, announcement). The protocol front ends translate their framing
//! (FLV tags, MPEG-TS) into calls here.

use crate::announce::{self, Delivered};
use crate::encoders::{EncoderInfo, Registration};
use crate::ingest::Ready;
use crate::media::segmenter::{Frame, Limits, Segment, Segmenter};
use crate::media::{aac, avc};
use crate::metrics::add;
use crate::node::{Shared, unix_millis};
use shoal_protocol::segment::Container;
use shoal_protocol::stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How often a live publisher tells the core its encoder is still there. The claim
/// lapses after seconds; the encoder sends many frames a second.
const ACTIVITY_EVERY: Duration = Duration::from_millis(500);

/// The publishing side of one encoder connection.
pub struct Publisher {
    name: stream::Name,
    registration: Registration,
    segmenter: Segmenter,
    activity_at: Instant,
}

impl Publisher {
    /// Starts publishing `name` from `address` over `protocol`: registers the encoder (a
    /// previous connection of the same stream is told to go) and claims the stream.
    pub fn start(
        node: &Arc<Shared>,
        name: stream::Name,
        address: SocketAddr,
        protocol: &'static str,
    ) -> Self {
        let registration = node.encoders.register(
            &name,
            EncoderInfo {
                protocol,
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
            format: node.config.segment_format,
        };
        info!(stream = %name, %address, protocol, "publish started");
        Self {
            name,
            registration,
            segmenter: Segmenter::new(limits),
            activity_at: now,
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

    /// The encoder's H.264 configuration (a repeat of the current one changes nothing).
    pub fn video_config(&mut self, config: avc::AvcConfig) {
        if self.segmenter.video_config() != Some(&config) {
            debug!(stream = %self.name, codec = %config.codec(), width = config.width, height = config.height, "video configuration");
        }
        self.segmenter.set_video_config(config);
    }

    /// The encoder's AAC configuration (a repeat changes nothing).
    pub fn audio_config(&mut self, config: aac::AacConfig) {
        self.segmenter.set_audio_config(config);
    }

    /// One frame; a segment it completes goes to the mesh.
    pub fn frame(&mut self, node: &Arc<Shared>, frame: Frame) {
        let now = Instant::now();
        if now.saturating_duration_since(self.activity_at) >= ACTIVITY_EVERY {
            self.activity_at = now;
            node.core()
                .handle_ingest_activity(&self.name, unix_millis(), now);
        }
        match self.segmenter.push(frame) {
            Ok(Some(segment)) => self.deliver(node, segment, false),
            Ok(None) => {}
            Err(e) => self.media_error(node, &e),
        }
    }

    /// Media that could not be used: counted and logged; the stream goes on.
    pub fn media_error(&self, node: &Shared, error: &crate::media::MediaError) {
        add(&node.metrics.ingest_media_errors, 1);
        warn!(stream = %self.name, %error, "encoder media not usable");
    }

    /// What the encoder says of itself (RTMP's `onMetaData`): its software, and a
    /// resolution used until the codec configuration gives one.
    pub fn metadata(&mut self, node: &Shared, encoder: Option<String>, width: u32, height: u32) {
        node.encoders
            .update(&self.name, &self.registration, |info| {
                info.encoder = encoder;
                if info.width == 0 && (1..=16384).contains(&width) && (1..=16384).contains(&height)
                {
                    (info.width, info.height) = (width, height);
                }
            });
    }

    /// Hands one finished segment to the mesh.
    fn deliver(&mut self, node: &Arc<Shared>, segment: Segment, ended: bool) {
        let seq = node.next_seq(&self.name);
        let size = segment.bytes.len() as u64;
        // fMP4 segments come with their init segment; MPEG-TS ones without.
        let container = match segment.init {
            Some(_) => Container::Fmp4,
            None => Container::Ts,
        };
        let ready = Ready {
            seq,
            file: format!("live-{seq}.{}", container.extension()),
            bytes: segment.bytes,
            duration_ms: segment.duration_ms,
            container,
            init: segment.init.map(|b| {
                let init = shoal_protocol::segment::InitRef {
                    hash: shoal_protocol::content::ContentId::of(&b),
                    size: b.len() as u64,
                };
                (init, b)
            }),
            // A stream's first segment follows nothing; after a reconnect, the new
            // connection's media follows a break.
            discontinuity: segment.discontinuity && seq > 0,
        };
        let (video, audio) = (self.segmenter.video_config(), self.segmenter.audio_config());
        let codecs: Vec<String> = video
            .map(avc::AvcConfig::codec)
            .into_iter()
            .chain(audio.map(aac::AacConfig::codec))
            .collect();
        let (width, height) = video.map_or((0, 0), |v| (v.width, v.height));
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
            Ok(Delivered::Announced | Delivered::Standby) => {}
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
        info!(stream = %self.name, unpublished, "publish ended");
    }
}
