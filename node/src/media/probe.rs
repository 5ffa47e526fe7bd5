//! What a stream carries, read from one of its MPEG-TS segments: the codecs and the
//! picture size a multivariant playlist names. Any node that holds a segment can tell,
//! not only the one the encoder pushes into.

use super::demux::{Demuxed, TsDemuxer};
use super::{aac, avc};

/// Bytes of a segment looked at: its tables, first keyframe and first audio come first.
pub const PROBE_BYTES: usize = 512 * 1024;

/// Codecs (as HLS names them) and picture size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// `avc1.PPCCLL`, `mp4a.40.N`.
    pub codecs: Vec<String>,
    /// Width and height in pixels, if the stream has video.
    pub resolution: Option<(u32, u32)>,
}

/// Probes the start of an MPEG-TS segment; None if it shows no codec Shoal knows.
pub fn probe_ts(segment: &[u8]) -> Option<Probed> {
    let mut demux = TsDemuxer::new(PROBE_BYTES);
    let (mut found, _) = demux.push(&segment[..segment.len().min(PROBE_BYTES)]);
    found.extend(demux.finish().0);
    let mut video: Option<avc::AvcConfig> = None;
    let mut audio: Option<aac::AacConfig> = None;
    for item in found {
        match item {
            Demuxed::VideoConfig(c) if video.is_none() => video = Some(c),
            Demuxed::AudioConfig(c) if audio.is_none() => audio = Some(c),
            _ => {}
        }
    }
    if video.is_none() && audio.is_none() {
        return None;
    }
    Some(Probed {
        codecs: video
            .iter()
            .map(avc::AvcConfig::codec)
            .chain(audio.iter().map(aac::AacConfig::codec))
            .collect(),
        resolution: video
            .as_ref()
            .filter(|v| v.width > 0 && v.height > 0)
            .map(|v| (v.width, v.height)),
    })
}
