//! Cuts an encoder's frames into HLS segments that each start with a keyframe, so every
//! segment can be played on its own: MPEG-TS segments that start with PAT and PMT, or
//! fragmented MP4 (CMAF) media segments that each name the init segment they need.
//!
//! Only the open segment is buffered (as MPEG-TS bytes, or as frames muxed into fMP4 when
//! it ends). A segment ends where the next one starts: at the
//! first video keyframe at or after the target duration (50 ms early counts, as
//! encoders' keyframe intervals jitter by a frame), or for an audio-only stream at the
//! first audio frame at or after it. Its duration is the distance between the two
//! starts.

use super::MediaError;
use super::aac::{ADTS_HEADER_LEN, AacConfig};
use super::avc::{self, AvcConfig};
use super::fmp4::{self, Sample};
use super::ts::TsMuxer;
use bytes::Bytes;
use std::time::Duration;

/// How much before the target duration a keyframe already starts a new segment.
const KEYFRAME_EARLY_MS: u64 = 50;
/// Samples in an AAC frame (the 960-sample frame length is not supported).
const AAC_FRAME_SAMPLES: u64 = 1024;

/// How segments are packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegmentFormat {
    /// MPEG-TS segments (`.ts`), each playable on its own.
    #[default]
    Ts,
    /// Fragmented MP4 / CMAF media segments (`.m4s`), each needing its init segment.
    Fmp4,
}

impl std::str::FromStr for SegmentFormat {
    type Err = String;

    /// `ts` or `fmp4` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ts" => Ok(Self::Ts),
            "fmp4" => Ok(Self::Fmp4),
            _ => Err(format!("unknown segment format {s:?}: ts or fmp4")),
        }
    }
}

impl std::fmt::Display for SegmentFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ts => "ts",
            Self::Fmp4 => "fmp4",
        })
    }
}

/// A frame as the segmenter takes it: timestamps in milliseconds on the encoder's clock
/// (already unwrapped to 64 bits by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One H.264 access unit.
    Video {
        /// Decoding timestamp in milliseconds.
        dts_ms: u64,
        /// Presentation timestamp in milliseconds.
        pts_ms: u64,
        /// An IDR frame: a segment may start here.
        keyframe: bool,
        /// The access unit in AVCC form (NAL units with length prefixes).
        avcc: Bytes,
    },
    /// One raw AAC frame.
    Audio {
        /// Presentation timestamp in milliseconds.
        pts_ms: u64,
        /// The frame without ADTS header, as FLV carries it.
        raw: Bytes,
    },
}

/// A finished segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// MPEG-TS: PAT, PMT, then the frames from a keyframe on. fMP4: a media segment
    /// (`styp`, `moof`, `mdat`) starting with a keyframe.
    pub bytes: Bytes,
    /// fMP4: the init segment this segment needs, the same `Bytes` for every segment
    /// until a codec config changes. `None` for MPEG-TS.
    pub init: Option<Bytes>,
    /// Duration in milliseconds (at least 1).
    pub duration_ms: u32,
    /// first segment after set_config or after discontinuity()
    pub discontinuity: bool,
}

/// Limits on segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Duration aimed at: a keyframe at or after it starts the next segment.
    pub target: Duration,
    /// Most bytes a segment may hold.
    pub max_bytes: u64,
    /// Longest a segment may run waiting for a keyframe.
    pub max_duration: Duration,
    /// How segments are packaged.
    pub format: SegmentFormat,
}

/// A video frame buffered for an fMP4 segment.
#[derive(Debug)]
struct VideoFrame {
    dts_ms: u64,
    pts_ms: u64,
    keyframe: bool,
    /// AVCC with 4-byte lengths.
    data: Bytes,
}

/// An audio frame buffered for an fMP4 segment.
#[derive(Debug)]
struct AudioFrame {
    /// Presentation time in samples of the sample rate.
    time: u64,
    /// The raw AAC frame.
    data: Bytes,
}

/// The frames of an open fMP4 segment, muxed when it ends.
#[derive(Debug)]
struct Fragment {
    /// The init segment of the codec configs in force when the segment started.
    init: Bytes,
    video: Vec<VideoFrame>,
    audio: Vec<AudioFrame>,
    video_bytes: u64,
    audio_bytes: u64,
}

impl Fragment {
    /// Bytes of the media segment these frames make.
    fn len(&self) -> u64 {
        fmp4::media_segment_len(
            self.video.len(),
            self.video_bytes,
            self.audio.len(),
            self.audio_bytes,
        )
    }

    /// The media segment: video on a 90 kHz clock, the last video sample lasting until
    /// `end_ms` (where the segment ends); audio at its sample-rate times, the last audio
    /// sample lasting the mean interval.
    fn mux(&self, sequence: u32, end_ms: u64) -> Bytes {
        let ticks = |ms: u64| ms.saturating_mul(90);
        let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let mean = |first: u64, last: u64, n: usize| {
            last.saturating_sub(first)
                .checked_div(n.saturating_sub(1) as u64)
                .unwrap_or(0)
        };
        let video_mean = match (self.video.first(), self.video.last()) {
            (Some(f), Some(l)) => mean(ticks(f.dts_ms), ticks(l.dts_ms), self.video.len()),
            _ => 0,
        };
        let video: Vec<Sample> = self
            .video
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let dts = ticks(f.dts_ms);
                let duration = match self.video.get(i + 1) {
                    Some(next) => ticks(next.dts_ms).saturating_sub(dts),
                    None => match ticks(end_ms).saturating_sub(dts) {
                        0 => video_mean,
                        d => d,
                    },
                };
                let cts = ticks(f.pts_ms.abs_diff(f.dts_ms));
                let cts = i32::try_from(cts).unwrap_or(i32::MAX);
                Sample {
                    dts,
                    duration: sat(duration),
                    cts_offset: if f.pts_ms >= f.dts_ms { cts } else { -cts },
                    keyframe: f.keyframe,
                    data: f.data.clone(),
                }
            })
            .collect();
        let audio_mean = match (self.audio.first(), self.audio.last()) {
            (Some(f), Some(l)) if self.audio.len() > 1 => mean(f.time, l.time, self.audio.len()),
            _ => AAC_FRAME_SAMPLES,
        };
        let audio: Vec<Sample> = self
            .audio
            .iter()
            .enumerate()
            .map(|(i, f)| Sample {
                dts: f.time,
                duration: sat(self
                    .audio
                    .get(i + 1)
                    .map_or(audio_mean, |next| next.time.saturating_sub(f.time))),
                cts_offset: 0,
                keyframe: true,
                data: f.data.clone(),
            })
            .collect();
        fmp4::media_segment(sequence, &video, &audio)
    }
}

/// The segment being written.
#[derive(Debug)]
struct Open {
    /// MPEG-TS: the segment's bytes so far.
    bytes: Vec<u8>,
    /// fMP4: the segment's frames so far.
    fragment: Option<Fragment>,
    /// Timestamp of the first frame: the keyframe's DTS, or for audio-only streams the
    /// first audio frame's PTS.
    first_ms: u64,
    /// Latest timestamp of the frames that keep the segment's clock (video frames, or
    /// audio frames of an audio-only stream).
    last_ms: u64,
    /// How many of those frames the segment holds.
    frames: u64,
    discontinuity: bool,
}

impl Open {
    /// The duration of a segment nothing follows: from its first to its last frame, plus
    /// one mean frame interval; at least 1 ms.
    fn estimated_duration(&self) -> u64 {
        let span = self.last_ms.saturating_sub(self.first_ms);
        let mean = span.checked_div(self.frames.saturating_sub(1)).unwrap_or(0);
        span.saturating_add(mean).max(1)
    }
}

/// Cuts HLS segments at keyframes.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: u64,
    max_bytes: u64,
    max_duration_ms: u64,
    format: SegmentFormat,
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    muxer: TsMuxer,
    /// Streams (video, audio) the muxer's PMT lists.
    muxed: (bool, bool),
    open: Option<Open>,
    /// The next segment follows a discontinuity.
    discontinuity: bool,
    /// The next keyframe (or audio frame, audio-only) starts a segment whatever the open
    /// one's length: the codec config changed or the encoder reconnected. Until then
    /// frames that would continue the open segment are dropped.
    cut: bool,
    /// Reused for each frame's Annex B or ADTS form.
    scratch: Vec<u8>,
    /// fMP4: the init segment of the configs in force, once built.
    init: Option<Bytes>,
    /// fMP4: the next media segment's sequence number.
    sequence: u32,
    /// fMP4: when the next AAC frame starts, in samples, if it follows on from the last.
    audio_next: Option<u64>,
}

/// Milliseconds of a duration, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// 90 kHz ticks of a millisecond timestamp (the muxer keeps 33 bits).
fn ticks(ms: u64) -> u64 {
    ms.wrapping_mul(90)
}

impl Segmenter {
    /// A segmenter with no codec config yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            target_ms: millis(limits.target),
            max_bytes: limits.max_bytes,
            max_duration_ms: millis(limits.max_duration),
            format: limits.format,
            video: None,
            audio: None,
            muxer: TsMuxer::new(false, false),
            muxed: (false, false),
            open: None,
            discontinuity: false,
            cut: false,
            scratch: Vec::new(),
            init: None,
            sequence: 1,
            audio_next: None,
        }
    }

    /// Sets the H.264 config. A config different from the one in force makes the next
    /// keyframe start a segment marked as a discontinuity; the same config again (some
    /// encoders repeat it) changes nothing.
    pub fn set_video_config(&mut self, cfg: AvcConfig) {
        if self.video.as_ref() != Some(&cfg) {
            self.video = Some(cfg);
            self.init = None;
            self.discontinuity();
        }
    }

    /// Sets the AAC config; as [`Segmenter::set_video_config`].
    pub fn set_audio_config(&mut self, cfg: AacConfig) {
        if self.audio.as_ref() != Some(&cfg) {
            self.audio = Some(cfg);
            self.init = None;
            self.discontinuity();
        }
    }

    /// The H.264 config in force.
    pub fn video_config(&self) -> Option<&AvcConfig> {
        self.video.as_ref()
    }

    /// The AAC config in force.
    pub fn audio_config(&self) -> Option<&AacConfig> {
        self.audio.as_ref()
    }

    /// Feeds one frame; returns a segment when this frame (a video keyframe at or after
    /// target minus 50 ms since the segment's first frame; for audio-only streams, an
    /// audio frame at or after target) starts a new one. Video frames before the first
    /// keyframe are dropped. Audio frames before the first video keyframe are dropped
    /// when a video config is set. Frames whose codec config is not set yet are dropped.
    /// Errors: the open segment would exceed max_bytes (SegmentTooLarge) or max_duration
    /// passes without a keyframe (NoKeyframe) — after an error the open segment is
    /// discarded and the segmenter waits for the next keyframe (it stays usable), and the
    /// next segment is marked as a discontinuity. A frame that cannot be converted (a
    /// malformed access unit, an AAC frame too long for ADTS) is dropped with its error;
    /// the open segment is kept.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Segment>, MediaError> {
        match frame {
            Frame::Video {
                dts_ms,
                pts_ms,
                keyframe,
                avcc,
            } => self.push_video(dts_ms, pts_ms, keyframe, avcc),
            Frame::Audio { pts_ms, raw } => self.push_audio(pts_ms, raw),
        }
    }

    fn push_video(
        &mut self,
        dts_ms: u64,
        pts_ms: u64,
        keyframe: bool,
        avcc: Bytes,
    ) -> Result<Option<Segment>, MediaError> {
        let Some(config) = &self.video else {
            return Ok(None);
        };
        let early_target = self.target_ms.saturating_sub(KEYFRAME_EARLY_MS);
        // Time running backwards at a keyframe: a new timeline.
        let backwards = self.open.as_ref().is_some_and(|o| dts_ms < o.first_ms);
        let starts = keyframe
            && match &self.open {
                None => true,
                Some(o) => self.cut || backwards || dts_ms - o.first_ms >= early_target,
            };
        if !starts && (self.open.is_none() || self.cut) {
            return Ok(None);
        }
        // fMP4: the sample; MPEG-TS: the Annex B form in `scratch`.
        let sample = match self.format {
            SegmentFormat::Ts => {
                self.scratch.clear();
                avc::to_annex_b(&avcc, config, keyframe, &mut self.scratch)?;
                None
            }
            SegmentFormat::Fmp4 => Some(fmp4::to_avcc4(&avcc, config)?),
        };
        let mut finished = None;
        if starts {
            if backwards {
                self.discontinuity = true;
            }
            let forced = self.cut || backwards;
            finished = self.close((!forced).then_some(dts_ms));
            self.start(dts_ms);
        } else {
            self.check_duration(dts_ms)?;
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(finished);
        };
        match (sample, open.fragment.as_mut()) {
            (Some(data), Some(fragment)) => {
                fragment.video_bytes += data.len() as u64;
                fragment.video.push(VideoFrame {
                    dts_ms,
                    pts_ms,
                    keyframe,
                    data,
                });
            }
            _ => self.muxer.write_video(
                ticks(pts_ms),
                ticks(dts_ms),
                keyframe,
                &self.scratch,
                &mut open.bytes,
            ),
        }
        open.last_ms = open.last_ms.max(dts_ms);
        open.frames += 1;
        self.check_size()?;
        Ok(finished)
    }

    fn push_audio(&mut self, pts_ms: u64, raw: Bytes) -> Result<Option<Segment>, MediaError> {
        let Some(config) = &self.audio else {
            return Ok(None);
        };
        let audio_only = self.video.is_none();
        let backwards = self.open.as_ref().is_some_and(|o| pts_ms < o.first_ms);
        let starts = audio_only
            && match &self.open {
                None => true,
                Some(o) => self.cut || backwards || pts_ms - o.first_ms >= self.target_ms,
            };
        if !starts && (self.open.is_none() || self.cut || !self.muxed.1) {
            return Ok(None);
        }
        let sample_rate = config.sample_rate;
        if self.format == SegmentFormat::Ts {
            let header = config.adts_header(raw.len())?;
            self.scratch.clear();
            self.scratch.reserve(ADTS_HEADER_LEN + raw.len());
            self.scratch.extend_from_slice(&header);
            self.scratch.extend_from_slice(&raw);
        }
        let mut finished = None;
        if starts {
            if backwards {
                self.discontinuity = true;
            }
            let forced = self.cut || backwards;
            finished = self.close((!forced).then_some(pts_ms));
            self.start(pts_ms);
        } else {
            self.check_duration(pts_ms)?;
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(finished);
        };
        match open.fragment.as_mut() {
            Some(fragment) => {
                // On from the last frame while that stays within a frame of the encoder's
                // clock; else back on that clock.
                let clock = u128::from(pts_ms) * u128::from(sample_rate) / 1000;
                let clock = u64::try_from(clock).unwrap_or(u64::MAX);
                let time = match self.audio_next {
                    Some(next) if next.abs_diff(clock) < AAC_FRAME_SAMPLES => next,
                    _ => clock,
                };
                self.audio_next = Some(time.saturating_add(AAC_FRAME_SAMPLES));
                fragment.audio_bytes += raw.len() as u64;
                fragment.audio.push(AudioFrame { time, data: raw });
            }
            None => self
                .muxer
                .write_audio(ticks(pts_ms), &self.scratch, &mut open.bytes),
        }
        if audio_only {
            open.last_ms = open.last_ms.max(pts_ms);
            open.frames += 1;
        }
        self.check_size()?;
        Ok(finished)
    }

    /// Opens a segment at `first_ms`. MPEG-TS: PAT and PMT, from a muxer listing the
    /// streams configured now. fMP4: the init segment of the configs in force.
    fn start(&mut self, first_ms: u64) {
        let streams = (self.video.is_some(), self.audio.is_some());
        if streams != self.muxed {
            self.muxer = TsMuxer::new(streams.0, streams.1);
            self.muxed = streams;
        }
        let mut bytes = Vec::new();
        let fragment = match self.format {
            SegmentFormat::Ts => {
                self.muxer.write_tables(&mut bytes);
                None
            }
            SegmentFormat::Fmp4 => {
                let (video, audio) = (self.video.as_ref(), self.audio.as_ref());
                let init = self
                    .init
                    .get_or_insert_with(|| fmp4::init_segment(video, audio));
                Some(Fragment {
                    init: init.clone(),
                    video: Vec::new(),
                    audio: Vec::new(),
                    video_bytes: 0,
                    audio_bytes: 0,
                })
            }
        };
        self.open = Some(Open {
            bytes,
            fragment,
            first_ms,
            last_ms: first_ms,
            frames: 0,
            discontinuity: std::mem::take(&mut self.discontinuity),
        });
        self.cut = false;
    }

    /// Ends the open segment. Its duration runs to `next_ms`, where the next segment
    /// starts, or is estimated from its frames when there is no next segment on the same
    /// timeline.
    fn close(&mut self, next_ms: Option<u64>) -> Option<Segment> {
        let open = self.open.take()?;
        let duration = match next_ms {
            Some(next) if next > open.first_ms => next - open.first_ms,
            _ => open.estimated_duration(),
        };
        let (bytes, init) = match &open.fragment {
            Some(fragment) => {
                let sequence = self.sequence;
                self.sequence = self.sequence.wrapping_add(1);
                let end_ms = open.first_ms.saturating_add(duration);
                (fragment.mux(sequence, end_ms), Some(fragment.init.clone()))
            }
            None => (Bytes::from(open.bytes), None),
        };
        Some(Segment {
            duration_ms: u32::try_from(duration).unwrap_or(u32::MAX),
            discontinuity: open.discontinuity,
            bytes,
            init,
        })
    }

    /// Drops the open segment after an error: the next one starts at a keyframe and
    /// follows a gap.
    fn discard(&mut self) {
        self.open = None;
        self.discontinuity = true;
    }

    /// Errors (and discards the open segment) if a frame at `ms` would make it run longer
    /// than the limit without a keyframe.
    fn check_duration(&mut self, ms: u64) -> Result<(), MediaError> {
        let elapsed = self
            .open
            .as_ref()
            .map_or(0, |o| ms.saturating_sub(o.first_ms));
        if elapsed > self.max_duration_ms {
            self.discard();
            return Err(MediaError::NoKeyframe(elapsed));
        }
        Ok(())
    }

    /// Errors (and discards the open segment) if it holds more than the limit.
    fn check_size(&mut self) -> Result<(), MediaError> {
        let size = self.buffered() as u64;
        if size > self.max_bytes {
            self.discard();
            return Err(MediaError::SegmentTooLarge(size));
        }
        Ok(())
    }

    /// Ends the stream: the open segment, if it has a keyframe and >0 duration (duration
    /// = last frame's ts - first + the mean frame interval, at least 1 ms), is returned.
    /// The next frame is treated as the stream's first.
    pub fn finish(&mut self) -> Option<Segment> {
        self.cut = false;
        self.audio_next = None;
        self.close(None)
    }

    /// The next segment is marked as following a discontinuity (encoder reconnected). It
    /// starts at the next keyframe whatever the open segment's length; until then frames
    /// are dropped (they belong to the new timeline).
    pub fn discontinuity(&mut self) {
        self.discontinuity = true;
        self.cut = true;
        self.audio_next = None;
    }

    /// Bytes buffered in the open segment (fMP4: the length of the media segment its
    /// frames make).
    pub fn buffered(&self) -> usize {
        self.open.as_ref().map_or(0, |o| match &o.fragment {
            Some(f) => usize::try_from(f.len()).unwrap_or(usize::MAX),
            None => o.bytes.len(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::ts::tests::{check_counters, packets, pes_units};
    use crate::media::ts::{AUDIO_PID, PMT_PID, VIDEO_PID};
    use crate::media::{aac, avc, flv};

    fn limits(target_ms: u64) -> Limits {
        Limits {
            target: Duration::from_millis(target_ms),
            max_bytes: 16 << 20,
            max_duration: Duration::from_secs(10),
            format: SegmentFormat::Ts,
        }
    }

    fn video_config() -> AvcConfig {
        avc::parse_config(&avc::tests::record(
            avc::tests::SPS_720P,
            avc::tests::PPS_720P,
        ))
        .expect("valid record")
    }

    fn audio_config() -> AacConfig {
        aac::parse_config(&[0x12, 0x10]).expect("valid config")
    }

    /// Frame `i` of a 30 fps stream with a keyframe every `gop` frames, `size` bytes of
    /// slice data.
    fn video(i: u64, gop: u64, size: usize) -> Frame {
        let keyframe = i.is_multiple_of(gop);
        let mut avcc = ((size + 1) as u32).to_be_bytes().to_vec();
        avcc.push(if keyframe { 0x65 } else { 0x41 });
        avcc.extend((0..size).map(|b| (b as u64 + i) as u8));
        let dts_ms = i * 1000 / 30;
        Frame::Video {
            dts_ms,
            pts_ms: dts_ms + 66,
            keyframe,
            avcc: Bytes::from(avcc),
        }
    }

    /// AAC frame `k` at 44.1 kHz (1024 samples each).
    fn audio(k: u64) -> Frame {
        Frame::Audio {
            pts_ms: k * 1024 * 1000 / 44_100,
            raw: Bytes::from(vec![0x21; 200]),
        }
    }

    /// Feeds 30 fps video (and 44.1 kHz audio, in timestamp order) up to `until_ms`.
    fn feed(s: &mut Segmenter, gop: u64, with_audio: bool, until_ms: u64) -> Vec<Segment> {
        let mut out = vec![];
        let (mut i, mut k) = (0, 0);
        loop {
            let v = i * 1000 / 30;
            let a = k * 1024 * 1000 / 44_100;
            let frame = if with_audio && a < v {
                k += 1;
                audio(k - 1)
            } else {
                i += 1;
                video(i - 1, gop, 500)
            };
            if v.min(if with_audio { a } else { u64::MAX }) >= until_ms {
                break;
            }
            out.extend(s.push(frame).expect("no error"));
        }
        out
    }

    /// Checks a segment starts with PAT, PMT and a keyframe PES, and its counters.
    fn check_segment(bytes: &[u8]) {
        let p = packets(bytes);
        assert_eq!((p[0].pid, p[1].pid), (0, PMT_PID));
        assert!(p[2].start);
        if p[2].pid == VIDEO_PID {
            let a = p[2].adaptation.expect("keyframe adaptation field");
            assert_ne!(a[0] & 0x40, 0, "random access indicator");
            let units = pes_units(&p, VIDEO_PID);
            // AUD, then SPS on the keyframe.
            assert_eq!(&units[0].2[..11], [0, 0, 0, 1, 9, 0xF0, 0, 0, 0, 1, 0x67]);
        }
        check_counters(&p);
    }

    #[test]
    fn cuts_two_second_segments_at_keyframes() {
        let mut s = Segmenter::new(limits(2000));
        s.set_video_config(video_config());
        s.set_audio_config(audio_config());
        let segments = feed(&mut s, 60, true, 10_000);
        assert_eq!(segments.len(), 4);
        for (n, seg) in segments.iter().enumerate() {
            assert_eq!(seg.duration_ms, 2000);
            assert_eq!(seg.discontinuity, n == 0);
            check_segment(&seg.bytes);
            let p = packets(&seg.bytes);
            assert_eq!(pes_units(&p, VIDEO_PID).len(), 60);
            assert!(pes_units(&p, AUDIO_PID).len() >= 85);
        }
        let last = s.finish().expect("open segment");
        assert!(
            (1990..=2010).contains(&last.duration_ms),
            "{}",
            last.duration_ms
        );
        check_segment(&last.bytes);
        assert_eq!(s.buffered(), 0);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_keyframe_slightly_early_still_cuts() {
        let mut s = Segmenter::new(limits(2000));
        s.set_video_config(video_config());
        // 29.97-ish: keyframe 60 lands at 1980 ms.
        let mut segments = vec![];
        for i in 0..=60u64 {
            let Frame::Video { avcc, keyframe, .. } = video(i, 60, 10) else {
                unreachable!()
            };
            let dts_ms = i * 33;
            segments.extend(
                s.push(Frame::Video {
                    dts_ms,
                    pts_ms: dts_ms,
                    keyframe,
                    avcc,
                })
                .unwrap(),
            );
        }
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].duration_ms, 1980);
    }

    #[test]
    fn audio_only_streams_cut_at_the_target() {
        let mut s = Segmenter::new(limits(1000));
        s.set_audio_config(audio_config());
        let mut segments = vec![];
        for k in 0..440 {
            segments.extend(s.push(audio(k)).unwrap());
        }
        assert_eq!(segments.len(), 9);
        for seg in &segments {
            assert!(
                (1000..1024).contains(&seg.duration_ms),
                "{}",
                seg.duration_ms
            );
            check_segment(&seg.bytes);
            let p = packets(&seg.bytes);
            let a = p[2].adaptation.expect("PCR on audio");
            assert_ne!(a[0] & 0x10, 0);
        }
        assert!(s.finish().is_some());
    }

    #[test]
    fn drops_what_cannot_start_a_segment() {
        let mut s = Segmenter::new(limits(1000));
        // No config yet.
        assert_eq!(s.push(video(0, 30, 100)), Ok(None));
        assert_eq!(s.push(audio(0)), Ok(None));
        assert_eq!(s.buffered(), 0);
        s.set_video_config(video_config());
        s.set_audio_config(audio_config());
        // Audio and inter frames before the first keyframe.
        assert_eq!(s.push(audio(1)), Ok(None));
        assert_eq!(s.push(video(1, 30, 100)), Ok(None));
        assert_eq!(s.buffered(), 0);
        assert_eq!(s.push(video(30, 30, 100)), Ok(None));
        assert!(s.buffered() > 0);
        assert_eq!(s.video_config(), Some(&video_config()));
        assert_eq!(s.audio_config(), Some(&audio_config()));
    }

    #[test]
    fn no_keyframe_in_time_is_an_error_and_recovers() {
        let mut s = Segmenter::new(Limits {
            max_duration: Duration::from_secs(3),
            ..limits(1000)
        });
        s.set_video_config(video_config());
        let mut error = None;
        for i in 0..200 {
            if let Err(e) = s.push(video(i, 1000, 100)) {
                error = Some((i, e));
                break;
            }
        }
        let (i, e) = error.expect("an error");
        assert_eq!(e, MediaError::NoKeyframe(i * 1000 / 30));
        assert!(i * 1000 / 30 > 3000 && (i - 1) * 1000 / 30 <= 3000);
        assert_eq!(s.buffered(), 0);
        // Inter frames are dropped until a keyframe.
        assert_eq!(s.push(video(i + 1, 1000, 100)), Ok(None));
        assert_eq!(s.buffered(), 0);
        assert_eq!(s.push(video(1000, 1000, 100)), Ok(None));
        assert_eq!(s.push(video(1001, 1000, 100)), Ok(None));
        let Ok(Some(seg)) = s.push(video(2000, 1000, 100)) else {
            panic!("a segment");
        };
        assert!(seg.discontinuity, "a segment after a gap");
        assert_eq!(seg.duration_ms, 33_333);
    }

    #[test]
    fn too_large_is_an_error_and_recovers() {
        let mut s = Segmenter::new(Limits {
            max_bytes: 20_000,
            ..limits(1000)
        });
        s.set_video_config(video_config());
        let mut error = None;
        for i in 0..30 {
            if let Err(e) = s.push(video(i, 60, 1000)) {
                error = Some(e);
                break;
            }
            assert!(s.buffered() <= 20_000);
        }
        assert!(matches!(error, Some(MediaError::SegmentTooLarge(n)) if n > 20_000));
        assert_eq!(s.buffered(), 0);
        assert_eq!(s.push(video(31, 60, 1000)), Ok(None));
        assert_eq!(s.buffered(), 0);
        // A keyframe alone over the limit.
        assert!(matches!(
            s.push(video(60, 60, 30_000)),
            Err(MediaError::SegmentTooLarge(_))
        ));
        assert_eq!(s.push(video(120, 60, 1000)), Ok(None));
        assert!(s.buffered() > 0);
        let seg = s.finish().expect("segment");
        assert!(seg.discontinuity);
        assert_eq!(seg.duration_ms, 1);
    }

    #[test]
    fn discontinuities_are_marked() {
        let mut s = Segmenter::new(limits(1000));
        s.set_video_config(video_config());
        let segments = feed(&mut s, 30, false, 3100);
        assert_eq!(
            segments.iter().map(|s| s.discontinuity).collect::<Vec<_>>(),
            [true, false, false]
        );
        // The same config again changes nothing.
        s.set_video_config(video_config());
        assert_eq!(s.push(video(100, 30, 10)), Ok(None));
        // The encoder reconnects: time starts over, the next keyframe starts a segment.
        s.discontinuity();
        assert_eq!(
            s.push(video(1, 30, 10)),
            Ok(None),
            "dropped: not a keyframe"
        );
        let Ok(Some(before)) = s.push(video(0, 30, 10)) else {
            panic!("the open segment is ended");
        };
        assert!(!before.discontinuity);
        // Estimated: frames at 3000, 3033, 3066 and 3333 ms, then a mean interval.
        assert_eq!(before.duration_ms, 333 + 111);
        let rest = feed(&mut s, 30, false, 1100);
        assert!(rest[0].discontinuity);
        // A new config: a discontinuity too.
        let mut other = video_config();
        other.level = 40;
        s.set_video_config(other);
        assert!(
            s.push(video(29, 30, 10)).unwrap().is_none(),
            "dropped: not a keyframe"
        );
        let Ok(Some(before)) = s.push(video(30, 30, 10)) else {
            panic!("the open segment is ended");
        };
        assert!(!before.discontinuity);
        assert!(s.finish().expect("segment").discontinuity);
    }

    /// Tags of an FLV file: (type, timestamp ms, body).
    fn flv_tags(file: &[u8]) -> Vec<(u8, u64, Bytes)> {
        assert_eq!(&file[..3], b"FLV");
        let header = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize;
        let mut at = header + 4;
        let mut tags = vec![];
        while at + 11 <= file.len() {
            let h = &file[at..at + 11];
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            let ts = u64::from(u32::from_be_bytes([h[7], h[4], h[5], h[6]]));
            let body = Bytes::copy_from_slice(&file[at + 11..at + 11 + size]);
            tags.push((h[0] & 0x1F, ts, body));
            at += 11 + size + 4;
        }
        tags
    }

    /// Decodes `path` with ffmpeg, asserting it prints no error.
    pub(crate) fn assert_decodes_cleanly(path: &std::path::Path) {
        let out = run(std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-i"])
            .arg(path)
            .args(["-f", "null", "-"]));
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a command, asserting it succeeds.
    pub(crate) fn run(cmd: &mut std::process::Command) -> std::process::Output {
        let out = cmd.output().expect("runs");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Encodes 5 s of x264 (GOP 30 at 30 fps, `width`x`height`) and 44.1 kHz AAC into
    /// `out.flv` in a new directory named after `tag`, which it returns; `None` (the test
    /// is skipped) without ffmpeg and ffprobe.
    pub(crate) fn encode_flv(tag: &str, width: u32, height: u32) -> Option<std::path::PathBuf> {
        use std::process::Command;
        let have = |tool: &str| Command::new(tool).arg("-version").output().is_ok();
        if !have("ffmpeg") || !have("ffprobe") {
            eprintln!("skipped: ffmpeg or ffprobe not on PATH");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("shoal-media-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc=size={width}x{height}:rate=30"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100",
                "-t",
                "5",
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-g",
                "30",
                "-c:a",
                "aac",
                "-f",
                "flv",
            ])
            .arg(dir.join("out.flv")));
        Some(dir)
    }

    /// An FLV file through the FLV, AVC and AAC parsers and a segmenter with `limits`:
    /// the segments (the open one too) and the segmenter.
    pub(crate) fn segment_flv(path: &std::path::Path, limits: Limits) -> (Vec<Segment>, Segmenter) {
        let file = std::fs::read(path).unwrap();
        let mut s = Segmenter::new(limits);
        let mut segments = vec![];
        for (kind, ts, body) in flv_tags(&file) {
            let frame = match kind {
                9 => match flv::parse_video(&body).unwrap() {
                    flv::VideoTag::AvcConfig(record) => {
                        s.set_video_config(avc::parse_config(&record).unwrap());
                        continue;
                    }
                    flv::VideoTag::AvcFrame {
                        keyframe,
                        composition_ms,
                        data,
                    } => Frame::Video {
                        dts_ms: ts,
                        pts_ms: ts.saturating_add_signed(composition_ms.into()),
                        keyframe,
                        avcc: data,
                    },
                    flv::VideoTag::Ignored => continue,
                },
                8 => match flv::parse_audio(&body).unwrap() {
                    flv::AudioTag::AacConfig(asc) => {
                        s.set_audio_config(aac::parse_config(&asc).unwrap());
                        continue;
                    }
                    flv::AudioTag::AacFrame(raw) => Frame::Audio { pts_ms: ts, raw },
                    flv::AudioTag::Ignored => continue,
                },
                _ => continue,
            };
            segments.extend(s.push(frame).unwrap());
        }
        segments.extend(s.finish());
        (segments, s)
    }

    /// ffprobe's streams (codec name, width, height) of a file, asserting it says
    /// nothing on stderr.
    pub(crate) fn probe_streams(path: &std::path::Path) -> Vec<serde_json::Value> {
        let out = run(std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
            ])
            .args(["-of", "json"])
            .arg(path));
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        probe["streams"].as_array().unwrap().clone()
    }

    /// The proof the muxer is right: an x264/AAC FLV from ffmpeg, through the FLV, AVC,
    /// AAC parsers and the segmenter, gives segments ffprobe reads as H.264 320x240 and
    /// AAC, which ffmpeg decodes without a complaint.
    #[test]
    fn segments_probe_with_ffprobe() {
        use std::process::Command;
        let Some(dir) = encode_flv("ts", 320, 240) else {
            return;
        };
        let (segments, s) = segment_flv(&dir.join("out.flv"), limits(1000));
        let config = s.video_config().unwrap();
        assert_eq!((config.width, config.height), (320, 240));
        assert_eq!(s.audio_config().unwrap().codec(), "mp4a.40.2");
        assert_eq!(segments.len(), 5, "GOP of 30 at 30 fps for 5 s");

        let mut all = vec![];
        for (n, seg) in segments.iter().enumerate() {
            assert!(
                (967..=1034).contains(&seg.duration_ms),
                "segment {n}: {} ms",
                seg.duration_ms
            );
            assert_eq!(seg.discontinuity, n == 0);
            assert_eq!(seg.init, None);
            check_segment(&seg.bytes);
            let path = dir.join(format!("seg{n}.ts"));
            std::fs::write(&path, &seg.bytes).unwrap();
            all.extend_from_slice(&seg.bytes);
            let streams = probe_streams(&path);
            assert_eq!(streams.len(), 2, "segment {n}: {streams:?}");
            let h264 = streams.iter().find(|s| s["codec_name"] == "h264").unwrap();
            assert_eq!(
                (&h264["width"], &h264["height"]),
                (&320.into(), &240.into())
            );
            assert!(
                streams.iter().any(|s| s["codec_name"] == "aac"),
                "{streams:?}"
            );
        }

        // All segments in a row decode without an error, every frame there.
        let path = dir.join("all.ts");
        std::fs::write(&path, &all).unwrap();
        assert_decodes_cleanly(&path);
        let out = run(Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v"])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(&path));
        // The stream is listed once on its own and once in its program.
        let counts = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            counts.split_whitespace().all(|c| c == "150") && !counts.trim().is_empty(),
            "frames decoded: {counts:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn fmp4_limits(target_ms: u64) -> Limits {
        Limits {
            format: SegmentFormat::Fmp4,
            ..limits(target_ms)
        }
    }

    /// A box's type and body at the top level of `data`.
    fn top_boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = vec![];
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            assert!(size >= 8 && at + size <= data.len());
            out.push((
                data[at + 4..at + 8].try_into().unwrap(),
                &data[at + 8..at + size],
            ));
            at += size;
        }
        assert_eq!(at, data.len());
        out
    }

    /// The boxes of type `kind` anywhere in the `moof` of a media segment, by a byte
    /// search (good enough for the fixed layout the muxer writes).
    fn find<'a>(data: &'a [u8], kind: &[u8; 4]) -> Vec<&'a [u8]> {
        (4..data.len().saturating_sub(4))
            .filter(|&i| &data[i..i + 4] == kind)
            .map(|i| {
                let size = u32::from_be_bytes(data[i - 4..i].try_into().unwrap()) as usize;
                &data[i + 4..i - 4 + size]
            })
            .collect()
    }

    #[test]
    fn fmp4_segments_with_a_stable_init() {
        let mut s = Segmenter::new(fmp4_limits(1000));
        s.set_video_config(video_config());
        s.set_audio_config(audio_config());
        let segments = feed(&mut s, 30, true, 5000);
        assert_eq!(segments.len(), 4);
        let init = segments[0].init.clone().expect("an init segment");
        assert_eq!(
            init,
            fmp4::init_segment(Some(&video_config()), Some(&audio_config()))
        );
        let mut audio_end = None;
        for (n, seg) in segments.iter().enumerate() {
            assert_eq!(seg.duration_ms, 1000);
            assert_eq!(seg.discontinuity, n == 0);
            let seg_init = seg.init.as_ref().expect("an init segment");
            assert_eq!(seg_init.as_ptr(), init.as_ptr(), "the same bytes");
            let top = top_boxes(&seg.bytes);
            assert_eq!(
                top.iter().map(|b| &b.0).collect::<Vec<_>>(),
                [b"styp", b"moof", b"mdat"]
            );
            let moof = top[1].1;
            assert_eq!(find(moof, b"mfhd")[0][4..], (n as u32 + 1).to_be_bytes());
            let tfdt: Vec<u64> = find(moof, b"tfdt")
                .iter()
                .map(|b| u64::from_be_bytes(b[4..12].try_into().unwrap()))
                .collect();
            // Video starts at the keyframe on the 90 kHz clock.
            assert_eq!(tfdt[0], n as u64 * 90_000);
            // Audio runs on from the last segment's: 1024 samples a frame.
            if let Some(end) = audio_end {
                assert_eq!(tfdt[1], end);
            }
            let truns = find(moof, b"trun");
            let video_count = u32::from_be_bytes(truns[0][4..8].try_into().unwrap());
            assert_eq!(video_count, 30);
            // Video durations add up to the segment's.
            let total: u64 = (0..30)
                .map(|i| {
                    u64::from(u32::from_be_bytes(
                        truns[0][12 + 16 * i..16 + 16 * i].try_into().unwrap(),
                    ))
                })
                .sum();
            assert_eq!(total, 90_000);
            let audio_count = u64::from(u32::from_be_bytes(truns[1][4..8].try_into().unwrap()));
            audio_end = Some(tfdt[1] + audio_count * 1024);
            assert_eq!(
                fmp4::media_segment_len(30, 30 * 505, audio_count as usize, audio_count * 200),
                seg.bytes.len() as u64
            );
        }
        // Buffered counts the media segment the frames make.
        assert!(s.buffered() > 0);
        let last = s.finish().expect("the open segment");
        assert!(s.buffered() == 0 && last.init.as_ref() == Some(&init));

        // A new SPS: a new init, a discontinuity.
        let mut sps = avc::tests::SPS_720P.to_vec();
        sps[3] = 0x28; // level 4.0
        let mut other = avc::parse_config(&avc::tests::record(&sps, avc::tests::PPS_720P)).unwrap();
        assert_ne!(other.sps, video_config().sps);
        s.set_video_config(other.clone());
        let segments = feed(&mut s, 30, true, 2100);
        assert_eq!(segments.len(), 2);
        let new_init = segments[0].init.clone().unwrap();
        assert_ne!(new_init, init);
        assert_eq!(
            new_init,
            fmp4::init_segment(Some(&other), Some(&audio_config()))
        );
        assert!(segments[0].discontinuity && !segments[1].discontinuity);
        assert_eq!(
            segments[1].init.as_ref().unwrap().as_ptr(),
            new_init.as_ptr()
        );
        // The same config again keeps it.
        s.set_video_config(other.clone());
        let seg = s.finish().unwrap();
        assert_eq!(seg.init.unwrap().as_ptr(), new_init.as_ptr());
        other.level = 50;
        s.set_video_config(other);
        let seg = feed(&mut s, 30, false, 1100).remove(0);
        assert_ne!(seg.init.unwrap(), new_init);
    }

    #[test]
    fn fmp4_audio_only_and_limits() {
        let mut s = Segmenter::new(fmp4_limits(1000));
        s.set_audio_config(audio_config());
        let mut segments = vec![];
        for k in 0..440 {
            segments.extend(s.push(audio(k)).unwrap());
        }
        assert_eq!(segments.len(), 9);
        let mut next = None;
        for seg in &segments {
            let init = seg.init.as_ref().unwrap();
            assert!(!init.windows(4).any(|w| w == b"avc1"));
            let moof = top_boxes(&seg.bytes)[1].1;
            assert_eq!(find(moof, b"traf").len(), 1);
            let tfhd = find(moof, b"tfhd")[0];
            assert_eq!(tfhd[4..8], 1u32.to_be_bytes(), "audio is track 1");
            let tfdt = u64::from_be_bytes(find(moof, b"tfdt")[0][4..12].try_into().unwrap());
            let count = u64::from(u32::from_be_bytes(
                find(moof, b"trun")[0][4..8].try_into().unwrap(),
            ));
            assert_eq!(tfdt, next.unwrap_or(0));
            next = Some(tfdt + count * 1024);
        }

        // The size limit counts the fMP4 bytes.
        let mut s = Segmenter::new(Limits {
            max_bytes: 20_000,
            ..fmp4_limits(1000)
        });
        s.set_video_config(video_config());
        let mut error = None;
        for i in 0..30 {
            if let Err(e) = s.push(video(i, 60, 1000)) {
                error = Some(e);
                break;
            }
            assert!(s.buffered() <= 20_000);
        }
        assert!(matches!(error, Some(MediaError::SegmentTooLarge(n)) if n > 20_000));
        assert_eq!(s.buffered(), 0);
        // A malformed access unit is an error; the open segment is kept.
        assert_eq!(s.push(video(60, 60, 10)), Ok(None));
        let bad = Frame::Video {
            dts_ms: 2100,
            pts_ms: 2100,
            keyframe: false,
            avcc: Bytes::from_static(&[0, 0, 0, 9, 0x41]),
        };
        assert_eq!(s.push(bad), Err(MediaError::Truncated("NAL unit")));
        assert!(s.buffered() > 0);
    }

    /// Audio on the encoder's millisecond clock: followed on 1024 samples a frame while
    /// within a frame of it, taken back onto it after a gap.
    #[test]
    fn fmp4_audio_clock() {
        let mut s = Segmenter::new(fmp4_limits(1000));
        s.set_audio_config(audio_config());
        let mut frames: Vec<u64> = (0..50).map(|k| k * 1024 * 1000 / 44_100).collect();
        // A 500 ms gap.
        frames.extend((50..100).map(|k| 500 + k * 1024 * 1000 / 44_100));
        let mut segments = vec![];
        for pts_ms in frames {
            segments.extend(
                s.push(Frame::Audio {
                    pts_ms,
                    raw: Bytes::from_static(&[0x21; 10]),
                })
                .unwrap(),
            );
        }
        segments.extend(s.finish());
        let mut times = vec![];
        for seg in &segments {
            let moof = top_boxes(&seg.bytes)[1].1;
            let mut t = u64::from_be_bytes(find(moof, b"tfdt")[0][4..12].try_into().unwrap());
            let trun = find(moof, b"trun")[0];
            let count = u32::from_be_bytes(trun[4..8].try_into().unwrap()) as usize;
            for i in 0..count {
                times.push(t);
                t += u64::from(u32::from_be_bytes(
                    trun[12 + 8 * i..16 + 8 * i].try_into().unwrap(),
                ));
            }
        }
        assert_eq!(times.len(), 100);
        for (k, t) in times.iter().enumerate() {
            let k = k as u64;
            let want = if k < 50 {
                k * 1024
            } else {
                500 * 441 / 10 + k * 1024
            };
            // After the gap: back on the millisecond clock, then on from there.
            let slack = if k < 50 { 0 } else { 1024 };
            assert!(t.abs_diff(want) <= slack, "frame {k}: {t} vs {want}");
        }
        assert_eq!(times[51] - times[50], 1024);
    }
}
