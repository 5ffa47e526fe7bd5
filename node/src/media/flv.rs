//! FLV audio and video tag bodies, as RTMP carries them in messages of type 8 (audio)
//! and 9 (video): which codec, and whether the body is a codec config or a frame.
//!
//! Only H.264 and AAC are taken (what MPEG-TS HLS plays everywhere); every other codec is
//! named in an [`MediaError::Unsupported`] so an operator knows what the encoder sent.

use super::MediaError;
use bytes::Bytes;

/// FLV codec id of H.264.
const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
const SOUND_AAC: u8 = 10;
/// High bit of an enhanced RTMP video tag's first byte (`IsExHeader`).
const EX_HEADER: u8 = 0x80;

/// A video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// AVCDecoderConfigurationRecord
    AvcConfig(Bytes),
    /// One access unit, AVCC (length-prefixed NALs)
    AvcFrame {
        /// A keyframe (FLV frame type 1): decoding can start here.
        keyframe: bool,
        /// Composition time offset (PTS minus DTS) in milliseconds.
        composition_ms: i32,
        /// The access unit.
        data: Bytes,
    },
    /// End of sequence, video info/command frames, empty frames: nothing to mux.
    Ignored,
}

/// An audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AudioSpecificConfig
    AacConfig(Bytes),
    /// One raw AAC frame
    AacFrame(Bytes),
    /// An empty body or an empty frame: nothing to mux.
    Ignored,
}

/// Reads a video tag body: a first byte of frame type (high nibble: 1 key, 2 inter,
/// 3 disposable inter, 4 generated key, 5 info/command) and codec id (low nibble, 7 for
/// AVC), then for AVC the AVCPacketType (0 config, 1 NAL units, 2 end of sequence) and a
/// signed 24-bit composition time. Enhanced RTMP (HEVC, AV1, VP9 by FourCC) and codecs
/// other than AVC are [`MediaError::Unsupported`].
pub fn parse_video(body: &Bytes) -> Result<VideoTag, MediaError> {
    let Some(&first) = body.first() else {
        return Ok(VideoTag::Ignored);
    };
    if first & EX_HEADER != 0 {
        let fourcc = body
            .get(1..5)
            .filter(|f| f.iter().all(u8::is_ascii_alphanumeric))
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_else(|| "?".into());
        return Err(MediaError::Unsupported(format!(
            "enhanced RTMP (HEVC/AV1) video, FourCC {fourcc}: send H.264"
        )));
    }
    let frame_type = first >> 4;
    let codec = first & 0x0F;
    match frame_type {
        1..=4 => {}
        5 => return Ok(VideoTag::Ignored),
        _ => return Err(MediaError::Invalid("FLV video frame type")),
    }
    if codec != CODEC_AVC {
        return Err(MediaError::Unsupported(format!(
            "{} video: send H.264",
            video_codec_name(codec)
        )));
    }
    let [_, packet_type, c0, c1, c2, ..] = **body else {
        return Err(MediaError::Truncated("AVC video tag header"));
    };
    let data = body.slice(5..);
    match packet_type {
        0 if data.is_empty() => Err(MediaError::Truncated("AVC sequence header")),
        0 => Ok(VideoTag::AvcConfig(data)),
        1 if data.is_empty() => Ok(VideoTag::Ignored),
        1 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == 1,
            composition_ms: i32::from_be_bytes([c0, c1, c2, 0]) >> 8,
            data,
        }),
        2 => Ok(VideoTag::Ignored),
        _ => Err(MediaError::Invalid("AVC packet type")),
    }
}

/// A name for an FLV video codec id.
fn video_codec_name(codec: u8) -> String {
    match codec {
        1 => "JPEG".into(),
        2 => "Sorenson H.263".into(),
        3 => "Screen video".into(),
        4 => "VP6".into(),
        5 => "VP6 with alpha".into(),
        6 => "Screen video v2".into(),
        12 => "HEVC (non-standard FLV codec id 12)".into(),
        n => format!("unknown FLV codec id {n}"),
    }
}

/// Reads an audio tag body: a first byte whose high nibble is the sound format (10 for
/// AAC), then for AAC the AACPacketType (0 config, 1 raw frame). An empty body is
/// ignored; formats other than AAC are [`MediaError::Unsupported`].
pub fn parse_audio(body: &Bytes) -> Result<AudioTag, MediaError> {
    let Some(&first) = body.first() else {
        return Ok(AudioTag::Ignored);
    };
    let format = first >> 4;
    if format != SOUND_AAC {
        return Err(MediaError::Unsupported(format!(
            "{} audio: send AAC",
            sound_format_name(format)
        )));
    }
    let Some(&packet_type) = body.get(1) else {
        return Err(MediaError::Truncated("AAC audio tag header"));
    };
    let data = body.slice(2..);
    match packet_type {
        0 if data.is_empty() => Err(MediaError::Truncated("AAC sequence header")),
        0 => Ok(AudioTag::AacConfig(data)),
        1 if data.is_empty() => Ok(AudioTag::Ignored),
        1 => Ok(AudioTag::AacFrame(data)),
        _ => Err(MediaError::Invalid("AAC packet type")),
    }
}

/// A name for an FLV sound format.
fn sound_format_name(format: u8) -> &'static str {
    match format {
        0 => "Linear PCM (platform endian)",
        1 => "ADPCM",
        2 => "MP3",
        3 => "Linear PCM (little endian)",
        4 => "Nellymoser 16 kHz mono",
        5 => "Nellymoser 8 kHz mono",
        6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        9 => "enhanced RTMP (Opus/FLAC/AC-3/E-AC-3/MP3 by FourCC)",
        11 => "Speex",
        14 => "MP3 8 kHz",
        15 => "device-specific",
        _ => "reserved FLV sound format",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(bytes: &[u8]) -> Result<VideoTag, MediaError> {
        parse_video(&Bytes::copy_from_slice(bytes))
    }

    fn audio(bytes: &[u8]) -> Result<AudioTag, MediaError> {
        parse_audio(&Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn splits_avc_tags() {
        assert_eq!(
            video(&[0x17, 0, 0, 0, 0, 1, 0x64]),
            Ok(VideoTag::AvcConfig(Bytes::from_static(&[1, 0x64])))
        );
        assert_eq!(
            video(&[0x17, 1, 0, 0, 0x42, 0, 0, 0, 1, 0x65]),
            Ok(VideoTag::AvcFrame {
                keyframe: true,
                composition_ms: 0x42,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65])
            })
        );
        assert_eq!(
            video(&[0x27, 1, 0xFF, 0xFF, 0xDF, 0, 0, 0, 1, 0x41]),
            Ok(VideoTag::AvcFrame {
                keyframe: false,
                composition_ms: -33,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x41])
            })
        );
        assert_eq!(video(&[0x17, 2, 0, 0, 0]), Ok(VideoTag::Ignored));
        assert_eq!(video(&[0x17, 1, 0, 0, 0]), Ok(VideoTag::Ignored));
        assert_eq!(video(&[0x57, 0]), Ok(VideoTag::Ignored));
        assert_eq!(video(&[]), Ok(VideoTag::Ignored));
        assert_eq!(
            video(&[0x17, 1, 0]),
            Err(MediaError::Truncated("AVC video tag header"))
        );
        assert_eq!(
            video(&[0x17, 3, 0, 0, 0]),
            Err(MediaError::Invalid("AVC packet type"))
        );
        assert_eq!(
            video(&[0x07, 1, 0, 0, 0, 1]),
            Err(MediaError::Invalid("FLV video frame type"))
        );
    }

    #[test]
    fn names_unsupported_video() {
        let Err(MediaError::Unsupported(m)) = video(&[0x90, b'h', b'v', b'c', b'1']) else {
            panic!("enhanced RTMP accepted");
        };
        assert!(m.contains("enhanced RTMP") && m.contains("hvc1"), "{m}");
        let Err(MediaError::Unsupported(m)) = video(&[0x12, 0, 0]) else {
            panic!("H.263 accepted");
        };
        assert!(m.contains("Sorenson H.263"), "{m}");
        let Err(MediaError::Unsupported(m)) = video(&[0x14]) else {
            panic!("VP6 accepted");
        };
        assert!(m.contains("VP6"), "{m}");
    }

    #[test]
    fn splits_aac_tags() {
        assert_eq!(
            audio(&[0xAF, 0, 0x12, 0x10]),
            Ok(AudioTag::AacConfig(Bytes::from_static(&[0x12, 0x10])))
        );
        assert_eq!(
            audio(&[0xAF, 1, 0x21, 0x1B]),
            Ok(AudioTag::AacFrame(Bytes::from_static(&[0x21, 0x1B])))
        );
        assert_eq!(audio(&[]), Ok(AudioTag::Ignored));
        assert_eq!(audio(&[0xAF, 1]), Ok(AudioTag::Ignored));
        assert_eq!(
            audio(&[0xAF]),
            Err(MediaError::Truncated("AAC audio tag header"))
        );
        assert_eq!(
            audio(&[0xAF, 7, 1]),
            Err(MediaError::Invalid("AAC packet type"))
        );
        for (byte, name) in [(0x2F, "MP3"), (0xB6, "Speex"), (0x72, "G.711 A-law")] {
            let Err(MediaError::Unsupported(m)) = audio(&[byte, 0, 0]) else {
                panic!("{name} accepted");
            };
            assert!(m.contains(name), "{m}");
        }
    }
}
