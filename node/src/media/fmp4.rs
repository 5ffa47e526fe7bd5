//! A fragmented MP4 (ISO/IEC 14496-12) muxer in the CMAF shape HLS plays: an init
//! segment (`ftyp` + `moov` with one track per stream and no samples) and media segments
//! (`styp` + one `moof` + one `mdat`), for an H.264 track, an AAC track or both.
//!
//! Video is track 1 with a 90 kHz timescale; audio is track 2 (track 1 without video)
//! with its sample rate as timescale. Video samples are AVCC with 4-byte NAL lengths
//! ([`to_avcc4`] makes them so), audio samples raw AAC frames.
//!
//! Nothing here panics: sizes that do not fit their fields saturate, which only happens
//! for inputs far beyond any segment limit.

use super::MediaError;
use super::aac::AacConfig;
use super::avc::AvcConfig;
use super::bits::{BitReader, unescape};
use bytes::Bytes;

/// Timescale of the video track: 90 kHz, as MPEG-TS.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Track id of the video track.
const VIDEO_TRACK: u32 = 1;
/// Sample flags of a sync sample: `sample_depends_on` 2 (depends on no other sample).
const SYNC_FLAGS: u32 = 0x0200_0000;
/// Sample flags of other samples: `sample_depends_on` 1 and `sample_is_non_sync_sample`.
const NON_SYNC_FLAGS: u32 = 0x0101_0000;
/// `tfhd` flag: offsets are relative to the `moof`.
const DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `tfhd` flag: `default_sample_flags` present.
const DEFAULT_SAMPLE_FLAGS_PRESENT: u32 = 0x20;
/// `trun` flags: data offset, then per sample duration, size, flags and CTS offset.
const TRUN_VIDEO_FLAGS: u32 = 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800;
/// `trun` flags: data offset, then per sample duration and size.
const TRUN_AUDIO_FLAGS: u32 = 0x0001 | 0x0100 | 0x0200;
/// The identity matrix of `mvhd` and `tkhd`.
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];
/// ISO 639-2 `und`, packed as `mdhd` wants it.
const LANGUAGE_UND: u16 = 0x55C4;
/// NAL unit types left out of samples: access unit delimiter, end of sequence, end of
/// stream, filler data (as [`super::avc::to_annex_b`] leaves them out).
const NAL_DROPPED: [u8; 4] = [9, 10, 11, 12];
/// H.264 profiles whose AVCDecoderConfigurationRecord carries chroma format and bit
/// depths (ISO/IEC 14496-15 5.3.3.1.2).
const EXTENDED_PROFILES: [u8; 5] = [100, 110, 122, 144, 244];

/// One sample of a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Decoding time in the track's timescale.
    pub dts: u64,
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Presentation minus decoding time, in the track's timescale (video only).
    pub cts_offset: i32,
    /// A sync sample: decoding can start here (audio samples are always written as
    /// sync samples).
    pub keyframe: bool,
    /// Video: an access unit in AVCC form with 4-byte NAL lengths. Audio: one raw AAC
    /// frame.
    pub data: Bytes,
}

/// Writes boxes into a byte vector.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// A box of type `kind` whose body `body` writes; its size is patched in after.
    fn boxed(&mut self, kind: &[u8; 4], body: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.u32(0);
        self.bytes(kind);
        body(self);
        let size = u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX);
        self.patch_u32(start, size);
    }

    /// A full box: version and 24-bit flags before the body.
    fn full(&mut self, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Self)) {
        self.boxed(kind, |w| {
            w.u32((u32::from(version) << 24) | (flags & 0x00FF_FFFF));
            body(w);
        });
    }

    /// Overwrites the 4 bytes at `at` (always inside the buffer: callers pass positions
    /// they wrote).
    fn patch_u32(&mut self, at: usize, v: u32) {
        if let Some(slot) = self.buf.get_mut(at..at + 4) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// The track id of the audio track: 2 after a video track, else 1.
fn audio_track(with_video: bool) -> u32 {
    if with_video { 2 } else { 1 }
}

/// Clamps a count or size to 32 bits.
fn u32_sat(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The init segment of a stream with these tracks: `ftyp` and a `moov` that describes
/// each track and holds no samples (they come in media segments), with a `trex` per track
/// in its `mvex`. Video is track 1, audio track 2 (1 without video). The `avcC` is
/// rebuilt from the config's parameter sets with 4-byte NAL lengths, the `esds` carries
/// an AudioSpecificConfig built from the AAC config.
pub fn init_segment(video: Option<&AvcConfig>, audio: Option<&AacConfig>) -> Bytes {
    let mut w = Writer::default();
    w.boxed(b"ftyp", |w| {
        w.bytes(b"isom");
        w.u32(0x200);
        w.bytes(b"isom");
        w.bytes(b"iso6");
        w.bytes(b"cmfc");
        if video.is_some() {
            w.bytes(b"avc1");
        }
        w.bytes(b"mp41");
    });
    let tracks = u32::from(video.is_some()) + u32::from(audio.is_some());
    w.boxed(b"moov", |w| {
        w.full(b"mvhd", 0, 0, |w| {
            w.u32(0); // creation time
            w.u32(0); // modification time
            w.u32(1000); // timescale
            w.u32(0); // duration: unknown, the samples are in fragments
            w.u32(0x0001_0000); // rate 1.0
            w.u16(0x0100); // volume 1.0
            w.zeros(10);
            MATRIX.iter().for_each(|&m| w.u32(m));
            w.zeros(24);
            w.u32(tracks + 1); // next track id
        });
        if let Some(v) = video {
            video_trak(w, v);
        }
        if let Some(a) = audio {
            audio_trak(w, a, audio_track(video.is_some()));
        }
        w.boxed(b"mvex", |w| {
            for track in 1..=tracks {
                w.full(b"trex", 0, 0, |w| {
                    w.u32(track);
                    w.u32(1); // sample description index
                    w.u32(0); // default duration
                    w.u32(0); // default size
                    w.u32(0); // default flags
                });
            }
        });
    });
    Bytes::from(w.buf)
}

/// `tkhd` of a track: enabled and in the movie, no duration.
fn tkhd(w: &mut Writer, track: u32, audio: bool, width: u32, height: u32) {
    w.full(b"tkhd", 0, 0x03, |w| {
        w.u32(0); // creation time
        w.u32(0); // modification time
        w.u32(track);
        w.u32(0); // reserved
        w.u32(0); // duration
        w.zeros(8);
        w.u16(0); // layer
        w.u16(0); // alternate group
        w.u16(if audio { 0x0100 } else { 0 }); // volume
        w.u16(0);
        MATRIX.iter().for_each(|&m| w.u32(m));
        w.u32(width.min(0xFFFF) << 16);
        w.u32(height.min(0xFFFF) << 16);
    });
}

/// `mdhd` and `hdlr` of a track.
fn media_header(w: &mut Writer, timescale: u32, handler: &[u8; 4], name: &str) {
    w.full(b"mdhd", 0, 0, |w| {
        w.u32(0); // creation time
        w.u32(0); // modification time
        w.u32(timescale.max(1));
        w.u32(0); // duration
        w.u16(LANGUAGE_UND);
        w.u16(0);
    });
    w.full(b"hdlr", 0, 0, |w| {
        w.u32(0); // pre-defined
        w.bytes(handler);
        w.zeros(12);
        w.bytes(name.as_bytes());
        w.u8(0);
    });
}

/// `dinf` (the data is in this file) and an `stbl` whose only entry is the sample
/// description `entry` writes; the sample tables are empty.
fn dinf_stbl(w: &mut Writer, entry: impl FnOnce(&mut Writer)) {
    w.boxed(b"dinf", |w| {
        w.full(b"dref", 0, 0, |w| {
            w.u32(1);
            w.full(b"url ", 0, 1, |_| {});
        });
    });
    w.boxed(b"stbl", |w| {
        w.full(b"stsd", 0, 0, |w| {
            w.u32(1);
            entry(w);
        });
        w.full(b"stts", 0, 0, |w| w.u32(0));
        w.full(b"stsc", 0, 0, |w| w.u32(0));
        w.full(b"stsz", 0, 0, |w| {
            w.u32(0); // sample size
            w.u32(0); // sample count
        });
        w.full(b"stco", 0, 0, |w| w.u32(0));
    });
}

/// The video `trak`.
fn video_trak(w: &mut Writer, config: &AvcConfig) {
    let (width, height) = (config.width.min(0xFFFF), config.height.min(0xFFFF));
    w.boxed(b"trak", |w| {
        tkhd(w, VIDEO_TRACK, false, width, height);
        w.boxed(b"mdia", |w| {
            media_header(w, VIDEO_TIMESCALE, b"vide", "VideoHandler");
            w.boxed(b"minf", |w| {
                w.full(b"vmhd", 0, 1, |w| w.zeros(8));
                dinf_stbl(w, |w| {
                    w.boxed(b"avc1", |w| {
                        w.zeros(6);
                        w.u16(1); // data reference index
                        w.zeros(16); // pre-defined and reserved
                        w.u16(width as u16);
                        w.u16(height as u16);
                        w.u32(0x0048_0000); // 72 dpi
                        w.u32(0x0048_0000);
                        w.u32(0);
                        w.u16(1); // frame count
                        w.zeros(32); // compressor name
                        w.u16(0x0018); // depth
                        w.u16(0xFFFF); // pre-defined -1
                        w.boxed(b"avcC", |w| w.bytes(&avc_decoder_config(config)));
                    });
                });
            });
        });
    });
}

/// The audio `trak`.
fn audio_trak(w: &mut Writer, config: &AacConfig, track: u32) {
    w.boxed(b"trak", |w| {
        tkhd(w, track, true, 0, 0);
        w.boxed(b"mdia", |w| {
            media_header(w, config.sample_rate, b"soun", "SoundHandler");
            w.boxed(b"minf", |w| {
                w.full(b"smhd", 0, 0, |w| w.zeros(4));
                dinf_stbl(w, |w| {
                    w.boxed(b"mp4a", |w| {
                        w.zeros(6);
                        w.u16(1); // data reference index
                        w.zeros(8);
                        w.u16(u16::from(config.channels));
                        w.u16(16); // sample size
                        w.zeros(4);
                        // 16.16 fixed point; rates over 65535 Hz do not fit (the esds
                        // says the rate).
                        w.u32(if config.sample_rate <= 0xFFFF {
                            config.sample_rate << 16
                        } else {
                            0
                        });
                        esds(w, config, track);
                    });
                });
            });
        });
    });
}

/// The `esds` box: an ES_Descriptor with the DecoderConfigDescriptor (MPEG-4 audio) and
/// the AudioSpecificConfig.
fn esds(w: &mut Writer, config: &AacConfig, track: u32) {
    let asc = audio_specific_config(config);
    // Every descriptor here is shorter than 128 bytes: a one-byte length.
    let dcd_body = 13 + 2 + asc.len();
    let es_body = 3 + 2 + dcd_body + 3;
    w.full(b"esds", 0, 0, |w| {
        w.u8(0x03); // ES_DescrTag
        w.u8(es_body as u8);
        w.u16(track.min(0xFFFF) as u16); // ES_ID
        w.u8(0); // no dependency, URL or OCR stream
        w.u8(0x04); // DecoderConfigDescrTag
        w.u8(dcd_body as u8);
        w.u8(0x40); // objectTypeIndication: MPEG-4 audio
        w.u8(0x15); // streamType audio (5), upStream 0, reserved 1
        w.bytes(&[0, 0, 0]); // bufferSizeDB
        w.u32(0); // maxBitrate
        w.u32(0); // avgBitrate
        w.u8(0x05); // DecSpecificInfoTag
        w.u8(asc.len() as u8);
        w.bytes(&asc);
        w.bytes(&[0x06, 0x01, 0x02]); // SLConfigDescriptor: predefined MP4
    });
}

/// Writes bits most significant first.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    /// Bits used in the last byte of `out` (0 when a new byte starts).
    used: u32,
}

impl BitWriter {
    /// Writes the low `n` bits of `v`.
    fn bits(&mut self, n: u32, v: u32) {
        for i in (0..n.min(32)).rev() {
            if self.used == 0 {
                self.out.push(0);
            }
            let bit = ((v >> i) & 1) as u8;
            if let Some(last) = self.out.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }
}

/// The AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) of an AAC config: object type
/// (escaped past 30), frequency index (15 and the explicit rate when the index is not a
/// table one), channel configuration, and a GASpecificConfig of 1024-sample frames
/// without core coder or extension.
pub fn audio_specific_config(config: &AacConfig) -> Vec<u8> {
    let mut b = BitWriter::default();
    let object_type = u32::from(config.object_type);
    if object_type < 31 {
        b.bits(5, object_type);
    } else {
        b.bits(5, 31);
        b.bits(6, object_type.saturating_sub(32));
    }
    if config.frequency_index <= 12 {
        b.bits(4, u32::from(config.frequency_index));
    } else {
        b.bits(4, 15);
        b.bits(24, config.sample_rate);
    }
    let channel_config = match config.channels {
        1..=6 => config.channels,
        8 => 7,
        _ => 0,
    };
    b.bits(4, u32::from(channel_config));
    b.bits(3, 0); // frameLengthFlag, dependsOnCoreCoder, extensionFlag
    b.out
}

/// The AVCDecoderConfigurationRecord of a config, with 4-byte NAL lengths (what
/// [`to_avcc4`] writes) and, for the high profiles, the chroma format and bit depths read
/// from the first SPS (left out if it cannot be read). Parameter sets longer than 65535
/// bytes, and those past the 31st SPS or the 255th PPS, are left out.
pub fn avc_decoder_config(config: &AvcConfig) -> Vec<u8> {
    let fits = |s: &&Bytes| s.len() <= usize::from(u16::MAX);
    let sps: Vec<&Bytes> = config.sps.iter().filter(fits).take(31).collect();
    let pps: Vec<&Bytes> = config.pps.iter().filter(fits).take(255).collect();
    let mut out = vec![
        1,
        config.profile,
        config.compatibility,
        config.level,
        0xFF, // reserved bits, lengthSizeMinusOne 3
        0xE0 | sps.len() as u8,
    ];
    for set in &sps {
        out.extend_from_slice(&(set.len() as u16).to_be_bytes());
        out.extend_from_slice(set);
    }
    out.push(pps.len() as u8);
    for set in &pps {
        out.extend_from_slice(&(set.len() as u16).to_be_bytes());
        out.extend_from_slice(set);
    }
    if EXTENDED_PROFILES.contains(&config.profile)
        && let Some((chroma, luma_depth, chroma_depth)) = sps.first().and_then(|s| chroma(s))
    {
        out.extend_from_slice(&[
            0xFC | chroma,
            0xF8 | luma_depth,
            0xF8 | chroma_depth,
            0, // no SPS extensions
        ]);
    }
    out
}

/// `chroma_format_idc`, `bit_depth_luma_minus8` and `bit_depth_chroma_minus8` of a
/// high-profile SPS NAL unit.
fn chroma(nal: &[u8]) -> Option<(u8, u8, u8)> {
    let rbsp = unescape(nal);
    let mut r = BitReader::new(rbsp.get(4..)?);
    let _seq_parameter_set_id = r.ue()?;
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return None;
    }
    if chroma_format_idc == 3 {
        let _separate_colour_plane = r.flag()?;
    }
    let luma = r.ue()?;
    let chroma = r.ue()?;
    if luma > 6 || chroma > 6 {
        return None;
    }
    Some((chroma_format_idc as u8, luma as u8, chroma as u8))
}

/// An AVCC access unit (NAL lengths of `config.nal_length_size` bytes) as a sample:
/// 4-byte lengths, without the NAL units MP4 samples do not need (delimiters, end of
/// sequence or stream, filler, units of a header byte or less, and parameter sets equal
/// to one of the config's, which the init segment carries). Returns the input itself when
/// nothing changes. Errors if a length runs past the end or the length size is not 1, 2
/// or 4.
pub fn to_avcc4(avcc: &Bytes, config: &AvcConfig) -> Result<Bytes, MediaError> {
    let length_size = usize::from(config.nal_length_size);
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(MediaError::Invalid("AVC NAL length size"));
    }
    let keep = |nal: &[u8]| -> bool {
        let Some(&header) = nal.first() else {
            return false;
        };
        if nal.len() < 2 || NAL_DROPPED.contains(&(header & 0x1F)) {
            return false;
        }
        !config.sps.iter().chain(&config.pps).any(|s| s[..] == *nal)
    };
    let mut nals = Vec::new();
    let mut rest = &avcc[..];
    let mut unchanged = length_size == 4;
    while !rest.is_empty() {
        let (prefix, tail) = rest
            .split_at_checked(length_size)
            .ok_or(MediaError::Truncated("NAL unit length"))?;
        let len = prefix
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let (nal, tail) = tail
            .split_at_checked(len)
            .ok_or(MediaError::Truncated("NAL unit"))?;
        if keep(nal) {
            nals.push(nal);
        } else {
            unchanged = false;
        }
        rest = tail;
    }
    if unchanged {
        return Ok(avcc.clone());
    }
    let mut out = Vec::with_capacity(nals.iter().map(|n| 4 + n.len()).sum());
    for nal in nals {
        // A NAL unit within a Bytes shorter than 4 GiB: its length fits (1- and 2-byte
        // prefixes cannot say more than 65535).
        out.extend_from_slice(&u32_sat(nal.len()).to_be_bytes());
        out.extend_from_slice(nal);
    }
    Ok(Bytes::from(out))
}

/// The `styp` of a media segment.
const STYP: [u8; 24] = [
    0, 0, 0, 24, b's', b't', b'y', b'p', b'm', b's', b'd', b'h', 0, 0, 0, 0, b'm', b's', b'd',
    b'h', b'c', b'm', b'f', b's',
];

/// Length in bytes of the media segment [`media_segment`] writes for this many samples
/// and bytes of sample data (what a segmenter can count before muxing).
pub fn media_segment_len(
    video_samples: usize,
    video_bytes: u64,
    audio_samples: usize,
    audio_bytes: u64,
) -> u64 {
    let traf = |samples: usize, per_sample: u64, tfhd: u64| -> u64 {
        if samples == 0 {
            return 0;
        }
        // traf header, tfhd, tfdt v1, trun header with count and data offset.
        8 + tfhd + 20 + 20 + per_sample.saturating_mul(samples as u64)
    };
    let moof = 8 + 16 + traf(video_samples, 16, 16) + traf(audio_samples, 8, 20);
    let data = video_bytes.saturating_add(audio_bytes);
    let mdat_header = if data.saturating_add(8) > u64::from(u32::MAX) {
        16
    } else {
        8
    };
    (STYP.len() as u64)
        .saturating_add(moof)
        .saturating_add(mdat_header)
        .saturating_add(data)
}

/// A media segment: `styp`, a `moof` (`mfhd` with `sequence`; a `traf` per non-empty
/// track, offsets from the `moof`'s start, `tfdt` the first sample's decoding time, one
/// `trun` with each sample's duration, size, and for video flags and signed composition
/// offset) and an `mdat` holding the video samples, then the audio ones. The audio track
/// is track 2 when `video` is not empty, else track 1: a stream with video must put video
/// in every segment (segments start with a keyframe). Data offsets past 2 GiB saturate.
pub fn media_segment(sequence: u32, video: &[Sample], audio: &[Sample]) -> Bytes {
    let data_len = |s: &[Sample]| s.iter().map(|s| s.data.len() as u64).sum::<u64>();
    let (video_bytes, audio_bytes) = (data_len(video), data_len(audio));
    let total = media_segment_len(video.len(), video_bytes, audio.len(), audio_bytes);
    let mut w = Writer {
        buf: Vec::with_capacity(usize::try_from(total).unwrap_or(0)),
    };
    w.bytes(&STYP);
    let moof_start = w.buf.len();
    // Where each trun's data offset goes, and how far into the mdat's data its samples
    // start.
    let mut offsets = Vec::with_capacity(2);
    w.boxed(b"moof", |w| {
        w.full(b"mfhd", 0, 0, |w| w.u32(sequence));
        if !video.is_empty() {
            w.boxed(b"traf", |w| {
                w.full(b"tfhd", 0, DEFAULT_BASE_IS_MOOF, |w| w.u32(VIDEO_TRACK));
                w.full(b"tfdt", 1, 0, |w| w.u64(video[0].dts));
                w.full(b"trun", 1, TRUN_VIDEO_FLAGS, |w| {
                    w.u32(u32_sat(video.len()));
                    offsets.push((w.buf.len(), 0));
                    w.u32(0);
                    for s in video {
                        w.u32(s.duration);
                        w.u32(u32_sat(s.data.len()));
                        w.u32(if s.keyframe {
                            SYNC_FLAGS
                        } else {
                            NON_SYNC_FLAGS
                        });
                        w.u32(s.cts_offset as u32);
                    }
                });
            });
        }
        if !audio.is_empty() {
            w.boxed(b"traf", |w| {
                let flags = DEFAULT_BASE_IS_MOOF | DEFAULT_SAMPLE_FLAGS_PRESENT;
                w.full(b"tfhd", 0, flags, |w| {
                    w.u32(audio_track(!video.is_empty()));
                    w.u32(SYNC_FLAGS);
                });
                w.full(b"tfdt", 1, 0, |w| w.u64(audio[0].dts));
                w.full(b"trun", 1, TRUN_AUDIO_FLAGS, |w| {
                    w.u32(u32_sat(audio.len()));
                    offsets.push((w.buf.len(), video_bytes));
                    w.u32(0);
                    for s in audio {
                        w.u32(s.duration);
                        w.u32(u32_sat(s.data.len()));
                    }
                });
            });
        }
    });
    let moof_len = (w.buf.len() - moof_start) as u64;
    let data = video_bytes.saturating_add(audio_bytes);
    let mdat_header: u64 = if data.saturating_add(8) > u64::from(u32::MAX) {
        w.u32(1);
        w.bytes(b"mdat");
        w.u64(data.saturating_add(16));
        16
    } else {
        w.u32((data + 8) as u32);
        w.bytes(b"mdat");
        8
    };
    for (at, into) in offsets {
        let offset = (moof_len + mdat_header).saturating_add(into);
        w.patch_u32(
            at,
            u32::try_from(offset)
                .unwrap_or(u32::MAX)
                .min(i32::MAX as u32),
        );
    }
    for s in video.iter().chain(audio) {
        w.bytes(&s.data);
    }
    Bytes::from(w.buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{aac, avc};

    /// A box: type, body (after the header), and where it starts.
    #[derive(Debug)]
    struct Atom<'a> {
        kind: [u8; 4],
        body: &'a [u8],
        start: usize,
    }

    /// The boxes of `data` (at `base` in the file), checking their sizes add up.
    fn atoms(data: &[u8], base: usize) -> Vec<Atom<'_>> {
        let mut out = vec![];
        let mut at = 0;
        while at < data.len() {
            assert!(at + 8 <= data.len(), "box header at {at} runs past the end");
            let mut size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = data[at + 4..at + 8].try_into().unwrap();
            let mut header = 8;
            if size == 1 {
                size = u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap()) as usize;
                header = 16;
            }
            assert!(
                size >= header && at + size <= data.len(),
                "box {kind:?} size"
            );
            out.push(Atom {
                kind,
                body: &data[at + header..at + size],
                start: base + at,
            });
            at += size;
        }
        assert_eq!(at, data.len());
        out
    }

    /// The one child of type `kind`, skipping `skip` bytes of the parent's own fields.
    fn child<'a>(parent: &Atom<'a>, skip: usize, kind: &[u8; 4]) -> Atom<'a> {
        let mut found: Vec<_> = atoms(&parent.body[skip..], parent.start + 8 + skip)
            .into_iter()
            .filter(|a| &a.kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} box");
        found.remove(0)
    }

    fn kinds(atoms: &[Atom]) -> Vec<String> {
        atoms
            .iter()
            .map(|a| String::from_utf8_lossy(&a.kind).into_owned())
            .collect()
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn video_config() -> AvcConfig {
        avc::parse_config(&avc::tests::record(
            avc::tests::SPS_720P,
            avc::tests::PPS_720P,
        ))
        .unwrap()
    }

    fn audio_config() -> AacConfig {
        aac::parse_config(&[0x12, 0x10]).unwrap()
    }

    #[test]
    fn init_segment_structure() {
        let init = init_segment(Some(&video_config()), Some(&audio_config()));
        let top = atoms(&init, 0);
        assert_eq!(kinds(&top), ["ftyp", "moov"]);
        assert_eq!(&top[0].body[..4], b"isom");
        let moov = &top[1];
        assert_eq!(
            kinds(&atoms(moov.body, 0)),
            ["mvhd", "trak", "trak", "mvex"]
        );
        let traks: Vec<_> = atoms(moov.body, 0)
            .into_iter()
            .filter(|a| &a.kind == b"trak")
            .collect();
        // Video: track 1, 1280x720, 90 kHz, avcC equal to the encoder's record (plus the
        // high-profile extension).
        let tkhd = child(&traks[0], 0, b"tkhd");
        assert_eq!(u32_at(tkhd.body, 12), 1);
        assert_eq!(u32_at(tkhd.body, 76), 1280 << 16);
        assert_eq!(u32_at(tkhd.body, 80), 720 << 16);
        let mdia = child(&traks[0], 0, b"mdia");
        assert_eq!(u32_at(child(&mdia, 0, b"mdhd").body, 12), 90_000);
        assert_eq!(&child(&mdia, 0, b"hdlr").body[8..12], b"vide");
        let stbl = child(&child(&mdia, 0, b"minf"), 0, b"stbl");
        assert_eq!(
            kinds(&atoms(stbl.body, 0)),
            ["stsd", "stts", "stsc", "stsz", "stco"]
        );
        let avc1 = child(&child(&stbl, 0, b"stsd"), 8, b"avc1");
        assert_eq!(&avc1.body[24..28], [0x05, 0x00, 0x02, 0xD0]);
        let avcc = child(&avc1, 78, b"avcC");
        let record = avc::tests::record(avc::tests::SPS_720P, avc::tests::PPS_720P);
        assert_eq!(avcc.body[..4], record[..4]);
        assert_eq!(avcc.body[4], 0xFF);
        assert_eq!(avcc.body[5..record.len()], record[5..]);
        // 4:2:0, 8 bits.
        assert_eq!(avcc.body[record.len()..], [0xFD, 0xF8, 0xF8, 0]);
        assert_eq!(avc::parse_config(avcc.body).unwrap(), video_config());

        // Audio: track 2 at 44.1 kHz, AudioSpecificConfig 12 10.
        assert_eq!(u32_at(child(&traks[1], 0, b"tkhd").body, 12), 2);
        let mdia = child(&traks[1], 0, b"mdia");
        assert_eq!(u32_at(child(&mdia, 0, b"mdhd").body, 12), 44_100);
        assert_eq!(&child(&mdia, 0, b"hdlr").body[8..12], b"soun");
        let stbl = child(&child(&mdia, 0, b"minf"), 0, b"stbl");
        let mp4a = child(&child(&stbl, 0, b"stsd"), 8, b"mp4a");
        assert_eq!(u32_at(mp4a.body, 24), 44_100 << 16);
        let esds = child(&mp4a, 28, b"esds");
        let asc_at = esds
            .body
            .windows(2)
            .position(|w| w == [0x05, 0x02])
            .expect("DecSpecificInfo");
        assert_eq!(esds.body[asc_at + 2..asc_at + 4], [0x12, 0x10]);
        assert_eq!(usize::from(esds.body[5]), esds.body.len() - 6, "ES length");

        let mvex = child(moov, 0, b"mvex");
        let trex: Vec<_> = atoms(mvex.body, 0)
            .iter()
            .map(|t| u32_at(t.body, 4))
            .collect();
        assert_eq!(trex, [1, 2]);
        assert_eq!(u32_at(child(moov, 0, b"mvhd").body, 96), 3, "next track id");

        // Audio only: track 1.
        let init = init_segment(None, Some(&audio_config()));
        let moov = &atoms(&init, 0)[1];
        assert_eq!(kinds(&atoms(moov.body, 0)), ["mvhd", "trak", "mvex"]);
        let trak = child(moov, 0, b"trak");
        assert_eq!(u32_at(child(&trak, 0, b"tkhd").body, 12), 1);
        assert!(!init.windows(4).any(|w| w == b"avc1"));
    }

    #[test]
    fn audio_specific_configs() {
        let asc = |object_type, frequency_index, sample_rate, channels| {
            audio_specific_config(&AacConfig {
                object_type,
                frequency_index,
                sample_rate,
                channels,
            })
        };
        assert_eq!(asc(2, 4, 44_100, 2), [0x12, 0x10]);
        assert_eq!(asc(2, 3, 48_000, 1), [0x11, 0x88]);
        for bytes in [[0x12, 0x10], [0x11, 0x88], [0x0A, 0x10], [0x13, 0x90]] {
            let c = aac::parse_config(&bytes).unwrap();
            assert_eq!(audio_specific_config(&c), bytes);
        }
        // 8 channels: configuration 7; escapes and explicit rates do not panic.
        assert_eq!(asc(2, 4, 44_100, 8), [0x12, 0x38]);
        assert_eq!(asc(42, 15, 12_345, 0).len(), 6);
        assert_eq!(asc(255, 255, u32::MAX, 255).len(), 6);
    }

    fn nal_units(nals: &[&[u8]], length_size: usize) -> Bytes {
        let mut v = vec![];
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes()[4 - length_size..]);
            v.extend_from_slice(n);
        }
        Bytes::from(v)
    }

    #[test]
    fn samples_get_four_byte_lengths() {
        let mut config = video_config();
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00];
        let sei: &[u8] = &[0x06, 0x05, 0x01];
        let plain = nal_units(&[sei, idr], 4);
        let out = to_avcc4(&plain, &config).unwrap();
        assert_eq!(out, plain);
        assert_eq!(out.as_ptr(), plain.as_ptr(), "unchanged: not copied");
        // Delimiter, the config's own SPS and PPS, end of sequence: left out.
        let with = nal_units(
            &[
                &[0x09, 0xF0],
                avc::tests::SPS_720P,
                avc::tests::PPS_720P,
                sei,
                idr,
                &[0x0A],
            ],
            4,
        );
        assert_eq!(to_avcc4(&with, &config).unwrap(), plain);
        // A different SPS stays.
        let other_sps: &[u8] = &[0x67, 0x42, 0x00, 0x1e];
        let with = nal_units(&[other_sps, idr], 4);
        assert_eq!(to_avcc4(&with, &config).unwrap(), with);
        for size in [1, 2] {
            config.nal_length_size = size as u8;
            let short = nal_units(&[sei, idr], size);
            assert_eq!(to_avcc4(&short, &config).unwrap(), plain);
            let mut cut = short.to_vec();
            cut.pop();
            assert_eq!(
                to_avcc4(&Bytes::from(cut), &config),
                Err(MediaError::Truncated("NAL unit"))
            );
        }
        assert_eq!(
            to_avcc4(&Bytes::from_static(&[0, 0, 0]), &video_config()),
            Err(MediaError::Truncated("NAL unit length"))
        );
        config.nal_length_size = 3;
        assert!(to_avcc4(&plain, &config).is_err());
        assert_eq!(
            to_avcc4(&Bytes::new(), &video_config()).unwrap(),
            Bytes::new()
        );
    }

    fn samples(n: usize, start: u64, duration: u32, size: usize, fill: u8) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                dts: start + i as u64 * u64::from(duration),
                duration,
                cts_offset: if i % 2 == 0 { 6000 } else { -3000 },
                keyframe: i == 0,
                data: Bytes::from(vec![fill.wrapping_add(i as u8); size + i]),
            })
            .collect()
    }

    /// Checks a media segment's boxes and that each trun's data offset and sizes point at
    /// its samples' bytes.
    fn check_segment(seg: &[u8], sequence: u32, tracks: &[(u32, &[Sample])]) {
        let top = atoms(seg, 0);
        assert_eq!(kinds(&top), ["styp", "moof", "mdat"]);
        let moof = &top[1];
        let children = atoms(moof.body, moof.start + 8);
        assert_eq!(u32_at(children[0].body, 4), sequence);
        let trafs: Vec<_> = children.iter().filter(|a| &a.kind == b"traf").collect();
        assert_eq!(trafs.len(), tracks.len());
        for (traf, (track, samples)) in trafs.iter().zip(tracks) {
            let tfhd = child(traf, 0, b"tfhd");
            assert_eq!(
                u32_at(tfhd.body, 0) & DEFAULT_BASE_IS_MOOF,
                DEFAULT_BASE_IS_MOOF
            );
            assert_eq!(u32_at(tfhd.body, 4), *track);
            let tfdt = child(traf, 0, b"tfdt");
            assert_eq!(tfdt.body[0], 1, "version 1");
            assert_eq!(
                u64::from_be_bytes(tfdt.body[4..12].try_into().unwrap()),
                samples[0].dts
            );
            let trun = child(traf, 0, b"trun");
            assert_eq!(trun.body[0], 1, "version 1");
            let flags = u32_at(trun.body, 0) & 0xFF_FFFF;
            assert_eq!(u32_at(trun.body, 4) as usize, samples.len());
            let mut data_at = moof.start + u32_at(trun.body, 8) as usize;
            let per = if flags & 0x800 != 0 { 16 } else { 8 };
            assert_eq!(trun.body.len(), 12 + per * samples.len());
            for (i, s) in samples.iter().enumerate() {
                let e = &trun.body[12 + per * i..];
                assert_eq!(u32_at(e, 0), s.duration);
                let size = u32_at(e, 4) as usize;
                assert_eq!(&seg[data_at..data_at + size], &s.data[..]);
                data_at += size;
                if per == 16 {
                    let want = if s.keyframe {
                        SYNC_FLAGS
                    } else {
                        NON_SYNC_FLAGS
                    };
                    assert_eq!(u32_at(e, 8), want);
                    assert_eq!(u32_at(e, 12) as i32, s.cts_offset);
                }
            }
        }
        let total: usize = tracks
            .iter()
            .flat_map(|(_, s)| s.iter())
            .map(|s| s.data.len())
            .sum();
        assert_eq!(top[2].body.len(), total);
    }

    #[test]
    fn media_segment_structure() {
        let video = samples(30, 900_000, 3000, 100, 1);
        let audio = samples(43, 441_000, 1024, 20, 0x80);
        let seg = media_segment(7, &video, &audio);
        check_segment(&seg, 7, &[(1, &video), (2, &audio)]);
        let len = |s: &[Sample]| s.iter().map(|s| s.data.len() as u64).sum();
        assert_eq!(
            media_segment_len(30, len(&video), 43, len(&audio)),
            seg.len() as u64
        );

        // Audio only: track 1; video only.
        let seg = media_segment(8, &[], &audio);
        check_segment(&seg, 8, &[(1, &audio)]);
        assert_eq!(media_segment_len(0, 0, 43, len(&audio)), seg.len() as u64);
        let seg = media_segment(9, &video, &[]);
        check_segment(&seg, 9, &[(1, &video)]);
        assert_eq!(media_segment_len(30, len(&video), 0, 0), seg.len() as u64);
        let seg = media_segment(0, &[], &[]);
        assert_eq!(kinds(&atoms(&seg, 0)), ["styp", "moof", "mdat"]);
        assert_eq!(media_segment_len(0, 0, 0, 0), seg.len() as u64);
    }

    /// What ffprobe and ffmpeg make of an init segment and media segments from a real
    /// x264/AAC encode: the FLV that ffmpeg writes, through the FLV, AVC and AAC parsers
    /// and the segmenter in fMP4 mode.
    #[test]
    fn fmp4_probes_with_ffprobe() {
        use crate::media::segmenter::tests::{
            assert_decodes_cleanly, encode_flv, probe_streams, run, segment_flv,
        };
        use crate::media::segmenter::{Limits, SegmentFormat};
        use std::process::Command;
        use std::time::Duration;
        let Some(dir) = encode_flv("fmp4", 320, 240) else {
            return;
        };
        let (segments, _) = segment_flv(
            &dir.join("out.flv"),
            Limits {
                target: Duration::from_secs(1),
                max_bytes: 16 << 20,
                max_duration: Duration::from_secs(10),
                format: SegmentFormat::Fmp4,
            },
        );
        assert_eq!(segments.len(), 5, "GOP of 30 at 30 fps for 5 s");
        let init = segments[0].init.clone().expect("an init segment");
        for seg in &segments {
            assert_eq!(seg.init.as_ref(), Some(&init), "the same init throughout");
        }

        let path = dir.join("first.mp4");
        std::fs::write(&path, [&init[..], &segments[0].bytes].concat()).unwrap();
        let streams = probe_streams(&path);
        let h264 = streams.iter().find(|s| s["codec_name"] == "h264").unwrap();
        assert_eq!(
            (&h264["width"], &h264["height"]),
            (&320.into(), &240.into())
        );
        assert!(streams.iter().any(|s| s["codec_name"] == "aac"));

        let mut all = init.to_vec();
        for seg in &segments {
            all.extend_from_slice(&seg.bytes);
        }
        let path = dir.join("all.mp4");
        std::fs::write(&path, &all).unwrap();
        assert_decodes_cleanly(&path);
        let out = run(Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v"])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(&path));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "150");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
