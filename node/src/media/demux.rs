//! An MPEG-TS demuxer (ISO/IEC 13818-1) for what an encoder sends over SRT: the first
//! program of the PAT, its first H.264 stream and first ADTS AAC stream, turned into
//! codec configs and frames for the [`Segmenter`](super::segmenter::Segmenter).
//!
//! Bytes come in any split. A transport packet is taken when it starts with the sync
//! byte 0x47 and the next one does too; else bytes are skipped to the next 0x47, so a
//! packet cut short or garbage between packets costs only what it hits. PAT and PMT
//! sections must fit in the packet that starts them (every encoder writes them so);
//! their CRC is checked. A PES is collected per stream up to a size limit and completes
//! at the next unit start, or as soon as its declared length is reached. A continuity
//! counter gap drops the PES it hits.
//!
//! At the start, frames wait (within limits) until every stream the PMT picked has its
//! config, so a segmenter gets both configs before the first frame.
//!
//! Memory: one partial packet, at most `max_pes` bytes of open PES per stream, and at
//! the start at most `max_pes` bytes of frames waiting.

use super::MediaError;
use super::aac::AacConfig;
use super::avc::{self, AvcConfig};
use super::segmenter::Frame;
use super::ts::{PACKET_LEN, crc32};
use bytes::Bytes;

/// What the demuxer found.
#[derive(Debug, Clone, PartialEq)]
pub enum Demuxed {
    /// The H.264 parameter sets changed (first seen, or different from before).
    VideoConfig(super::avc::AvcConfig),
    /// The AAC configuration changed (from the ADTS headers).
    AudioConfig(super::aac::AacConfig),
    /// A frame for the segmenter (timestamps in ms on the encoder's 90 kHz clock,
    /// unwrapped across the 33-bit wrap, starting wherever the encoder's clock is).
    Frame(super::segmenter::Frame),
}

/// The byte every transport packet starts with.
const SYNC: u8 = 0x47;
/// PID of the program association table.
const PAT_PID: u16 = 0;
/// PID of null packets.
const NULL_PID: u16 = 0x1FFF;
/// PIDs below this are reserved for tables of their own.
const FIRST_ES_PID: u16 = 0x10;
/// PMT stream type of H.264.
const STREAM_TYPE_H264: u8 = 0x1B;
/// PMT stream type of AAC with ADTS framing.
const STREAM_TYPE_ADTS: u8 = 0x0F;
/// PMT stream type of PES private data (the codec is named by a descriptor).
const STREAM_TYPE_PRIVATE: u8 = 0x06;
/// Longest PSI section after its length field (PAT and PMT).
const MAX_SECTION_LEN: usize = 1021;
/// Bytes of a PES header before its optional fields.
const PES_FIXED_HEADER: usize = 6;
/// PTS and DTS count 90 kHz ticks in 33 bits.
const TS_MASK: u64 = (1 << 33) - 1;
/// A timestamp further than this from the last one (either way) crossed the wrap.
const HALF_WRAP: u64 = 1 << 32;
/// Samples in one AAC frame.
const AAC_FRAME_SAMPLES: u64 = 1024;
/// Longest stretch of stream time frames are held at the start waiting for the config
/// of every stream.
const HOLD_MS: u64 = 2000;
/// Longest stretch of stream time audio is dropped while the PMT lists a video stream
/// whose parameter sets have not come (a caller that lost its first keyframe's SPS, as
/// GStreamer's `srtsink` does while it connects, repeats them at a later keyframe):
/// audio-only segments followed by video ones would change the tracks under a player.
/// Past it the stream is taken as audio only.
const VIDEO_WAIT_MS: u64 = 10_000;
/// Most distinct parameter sets of each kind kept from one access unit (H.264 allows
/// 32 SPS and 256 PPS ids; an AVCDecoderConfigurationRecord counts 31 SPS).
const MAX_SETS: usize = 31;

/// NAL unit types of H.264 the demuxer looks at.
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;

/// Which of the two streams a PES belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

/// One elementary stream being collected.
#[derive(Debug)]
struct Stream {
    pid: u16,
    /// Continuity counter of the last packet with payload.
    cc: Option<u8>,
    /// A PES is being collected in `buf` (else payload waits for the next unit start).
    open: bool,
    buf: Vec<u8>,
    /// Length of the open PES, header included, once its header says: 0 for unbounded.
    declared: Option<usize>,
}

impl Stream {
    fn new(pid: u16) -> Self {
        Self {
            pid,
            cc: None,
            open: false,
            buf: Vec::new(),
            declared: None,
        }
    }

    /// Drops the open PES: the stream waits for the next unit start.
    fn abandon(&mut self) {
        self.open = false;
        self.buf.clear();
        self.declared = None;
    }

    /// Bytes held.
    fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// What a transport packet's header says of its elementary stream payload.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// payload_unit_start_indicator: a PES starts in this packet.
    unit_start: bool,
    /// Continuity counter.
    cc: u8,
    /// The adaptation field's discontinuity indicator: the counter may jump.
    discontinuity: bool,
    /// transport_scrambling_control is not 0.
    scrambled: bool,
}

/// What one call finds.
#[derive(Debug, Default)]
struct Out {
    items: Vec<Demuxed>,
    errors: Vec<MediaError>,
}

/// Demuxes an MPEG-TS byte stream into codec configs and frames.
///
/// Limits: largest PES accepted (bytes) — a bigger one is dropped with an error and the
/// demuxer resyncs at the next payload_unit_start.
#[derive(Debug)]
pub struct TsDemuxer {
    max_pes: usize,
    /// The start of a packet (from its sync byte), or a whole one waiting for the sync
    /// byte of the next to confirm it.
    partial: Vec<u8>,
    /// Bytes were skipped since the last packet read, and an error said so.
    skip_reported: bool,
    /// Program number and PMT PID of the first program of the PAT.
    program: Option<(u16, u16)>,
    /// CRCs of the PAT and PMT sections last read: the same again is not read again.
    pat_crc: Option<u32>,
    pmt_crc: Option<u32>,
    /// The last PSI error reported: a table repeated ten times a second with the same
    /// flaw says so once.
    psi_error: Option<MediaError>,
    video: Option<Stream>,
    audio: Option<Stream>,
    unsupported: Vec<String>,
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    /// The latest parameter sets seen.
    sps: Vec<Bytes>,
    pps: Vec<Bytes>,
    /// The last timestamp read, unwrapped (90 kHz): the reference both streams unwrap
    /// against, so they stay on one timeline across the wrap.
    clock: Option<u64>,
    /// Frames are held at the start until every stream the PMT picked has its config
    /// (see [`TsDemuxer::frame`]); false once they are let go.
    holding: bool,
    held: Vec<Frame>,
    /// Bytes of frame data held.
    held_bytes: usize,
    /// The first frame's timestamp, ms (see [`VIDEO_WAIT_MS`]).
    first_ms: Option<u64>,
}

impl TsDemuxer {
    /// A demuxer that accepts PES packets of up to `max_pes` bytes.
    pub fn new(max_pes: usize) -> Self {
        Self {
            max_pes,
            partial: Vec::with_capacity(PACKET_LEN),
            skip_reported: false,
            program: None,
            pat_crc: None,
            pmt_crc: None,
            psi_error: None,
            video: None,
            audio: None,
            unsupported: Vec::new(),
            avc: None,
            aac: None,
            sps: Vec::new(),
            pps: Vec::new(),
            clock: None,
            holding: true,
            held: Vec::new(),
            held_bytes: 0,
            first_ms: None,
        }
    }

    /// Feeds bytes as they arrive (any split, not necessarily 188-aligned; resync on
    /// 0x47 when lost). Returns what became complete, and the per-packet and per-PES
    /// problems met (for the caller to log and count); the demuxer stays usable after
    /// any of them.
    pub fn push(&mut self, bytes: &[u8]) -> (Vec<Demuxed>, Vec<MediaError>) {
        let mut out = Out::default();
        let mut input = bytes;
        while !input.is_empty() {
            input = if self.partial.is_empty() {
                self.scan(input, &mut out)
            } else {
                self.fill(input, &mut out)
            };
        }
        (out.items, out.errors)
    }

    /// Ends the stream: takes the last packet (a packet is otherwise taken when the
    /// sync byte of the next one confirms it), completes the open PES of each stream (a
    /// video PES of unbounded length otherwise waits for the next one to start) and
    /// forgets a partial packet. The demuxer can be fed again afterwards.
    pub fn finish(&mut self) -> (Vec<Demuxed>, Vec<MediaError>) {
        let mut out = Out::default();
        let partial = std::mem::take(&mut self.partial);
        if partial.len() == PACKET_LEN {
            self.packet(&partial, &mut out);
        }
        self.complete(Kind::Video, &mut out);
        self.complete(Kind::Audio, &mut out);
        self.release(&mut out);
        self.skip_reported = false;
        (out.items, out.errors)
    }

    /// Bytes buffered (partial packet + open PES + frames held at the start), for the
    /// caller's accounting: at most `max_pes` * 3 + 188.
    pub fn buffered(&self) -> usize {
        self.held_bytes
            + self.partial.len()
            + self.video.as_ref().map_or(0, Stream::buffered)
            + self.audio.as_ref().map_or(0, Stream::buffered)
    }

    /// Codec names of the elementary streams found in the PMT that Shoal cannot carry
    /// (e.g. "HEVC (0x24)", "MPEG-2 video (0x02)", "AC-3 (0x81)"), so the caller can
    /// report them once.
    pub fn unsupported(&self) -> &[String] {
        &self.unsupported
    }

    /// Reads from `input` while no partial packet is held; returns what is left to read
    /// (empty once it is all read or held).
    fn scan<'a>(&mut self, mut input: &'a [u8], out: &mut Out) -> &'a [u8] {
        match input.iter().position(|&b| b == SYNC) {
            None => {
                self.skipped(out);
                return &[];
            }
            Some(0) => {}
            Some(at) => {
                self.skipped(out);
                input = &input[at..];
            }
        }
        match input.get(PACKET_LEN) {
            None => {
                self.partial.extend_from_slice(input);
                &[]
            }
            Some(&SYNC) => {
                let (packet, rest) = input.split_at(PACKET_LEN);
                self.packet(packet, out);
                rest
            }
            Some(_) => {
                // Not followed by a packet: not a packet start (or a packet cut short).
                self.skipped(out);
                &input[1..]
            }
        }
    }

    /// Completes the partial packet from `input` and takes it if a sync byte follows;
    /// returns what is left to read.
    fn fill<'a>(&mut self, input: &'a [u8], out: &mut Out) -> &'a [u8] {
        let need = PACKET_LEN.saturating_sub(self.partial.len());
        let (head, rest) = input.split_at(need.min(input.len()));
        self.partial.extend_from_slice(head);
        // Bytes left over mean the packet is whole.
        match rest.first() {
            None => {}
            Some(&SYNC) => {
                let packet = std::mem::take(&mut self.partial);
                self.packet(&packet, out);
                self.partial = packet;
                self.partial.clear();
            }
            Some(_) => {
                // Look again from the byte after the supposed sync byte.
                self.skipped(out);
                match self.partial.iter().skip(1).position(|&b| b == SYNC) {
                    Some(at) => drop(self.partial.drain(..=at)),
                    None => self.partial.clear(),
                }
            }
        }
        rest
    }

    /// Bytes are skipped looking for a packet start: an error the first time since a
    /// packet was last read.
    fn skipped(&mut self, out: &mut Out) {
        if !self.skip_reported {
            self.skip_reported = true;
            out.errors
                .push(MediaError::Invalid("TS sync byte (bytes skipped)"));
        }
    }

    /// One transport packet (188 bytes, starting with the sync byte).
    fn packet(&mut self, packet: &[u8], out: &mut Out) {
        let [_, b1, b2, b3, rest @ ..] = packet else {
            return;
        };
        self.skip_reported = false;
        let pid = u16::from_be_bytes([b1 & 0x1F, *b2]);
        if pid == NULL_PID {
            return;
        }
        if b1 & 0x80 != 0 {
            out.errors.push(MediaError::Invalid(
                "TS packet with the transport error indicator set",
            ));
            return;
        }
        let unit_start = b1 & 0x40 != 0;
        let (discontinuity, payload) = match (b3 >> 4) & 0x03 {
            0b01 => (false, rest),
            0b11 => {
                let Some((&len, after)) = rest.split_first() else {
                    return;
                };
                let Some((field, payload)) = after.split_at_checked(usize::from(len)) else {
                    out.errors
                        .push(MediaError::Invalid("TS adaptation field length"));
                    return;
                };
                let discontinuity = field.first().is_some_and(|flags| flags & 0x80 != 0);
                (discontinuity, payload)
            }
            // An adaptation field only (no payload, the counter does not advance), or
            // the reserved value.
            _ => return,
        };
        if pid == PAT_PID {
            if unit_start {
                let result = self.pat(payload);
                self.psi_result(result, out);
            }
            return;
        }
        if let Some((_, pmt_pid)) = self.program
            && pid == pmt_pid
        {
            if unit_start {
                let result = self.pmt(pmt_pid, payload);
                self.psi_result(result, out);
            }
            return;
        }
        let kind = if self.video.as_ref().is_some_and(|s| s.pid == pid) {
            Kind::Video
        } else if self.audio.as_ref().is_some_and(|s| s.pid == pid) {
            Kind::Audio
        } else {
            return;
        };
        let header = Header {
            unit_start,
            cc: b3 & 0x0F,
            discontinuity,
            scrambled: b3 >> 6 != 0,
        };
        self.es_packet(kind, header, payload, out);
    }

    /// Reports a PSI error unless it is the one reported last.
    fn psi_result(&mut self, result: Result<(), MediaError>, out: &mut Out) {
        match result {
            Ok(()) => {}
            Err(e) if self.psi_error.as_ref() == Some(&e) => {}
            Err(e) => {
                self.psi_error = Some(e.clone());
                out.errors.push(e);
            }
        }
    }

    /// A PAT: the first program (not the network PID) picks the PMT PID.
    fn pat(&mut self, payload: &[u8]) -> Result<(), MediaError> {
        let Some((_, body)) = section(payload, 0x00, &mut self.pat_crc)? else {
            return Ok(());
        };
        let program = body
            .chunks_exact(4)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u16::from_be_bytes([e[2] & 0x1F, e[3]]),
                )
            })
            .find(|&(number, _)| number != 0);
        let Some((number, pmt_pid)) = program else {
            return Err(MediaError::Invalid("PAT without a program"));
        };
        if pmt_pid < FIRST_ES_PID || pmt_pid == NULL_PID {
            return Err(MediaError::Invalid("PMT PID"));
        }
        if self.program != Some((number, pmt_pid)) {
            self.program = Some((number, pmt_pid));
            self.pmt_crc = None;
        }
        self.psi_error = None;
        Ok(())
    }

    /// A PMT of the program: picks the first H.264 and the first ADTS AAC stream, and
    /// names the others.
    fn pmt(&mut self, pmt_pid: u16, payload: &[u8]) -> Result<(), MediaError> {
        let mut crc = self.pmt_crc;
        let Some((number, body)) = section(payload, 0x02, &mut crc)? else {
            return Ok(());
        };
        if self.program.is_none_or(|(program, _)| program != number) {
            // Another program's map on the same PID.
            return Ok(());
        }
        self.pmt_crc = crc;
        let [_pcr_hi, _pcr_lo, info_hi, info_lo, rest @ ..] = body else {
            return Err(MediaError::Truncated("PMT"));
        };
        let info_len = usize::from(u16::from_be_bytes([info_hi & 0x0F, *info_lo]));
        let mut entries = rest
            .get(info_len..)
            .ok_or(MediaError::Truncated("PMT program info"))?;
        let (mut video, mut audio) = (None, None);
        let mut unsupported: Vec<String> = Vec::new();
        while !entries.is_empty() {
            let [stream_type, pid_hi, pid_lo, len_hi, len_lo, tail @ ..] = entries else {
                return Err(MediaError::Truncated("PMT stream entry"));
            };
            let len = usize::from(u16::from_be_bytes([len_hi & 0x0F, *len_lo]));
            let (descriptors, tail) = tail
                .split_at_checked(len)
                .ok_or(MediaError::Truncated("PMT stream descriptors"))?;
            entries = tail;
            let pid = u16::from_be_bytes([pid_hi & 0x1F, *pid_lo]);
            if pid < FIRST_ES_PID || pid == NULL_PID || pid == pmt_pid {
                continue;
            }
            let name = match *stream_type {
                STREAM_TYPE_H264 if video.is_none() && audio != Some(pid) => {
                    video = Some(pid);
                    continue;
                }
                STREAM_TYPE_ADTS if audio.is_none() && video != Some(pid) => {
                    audio = Some(pid);
                    continue;
                }
                STREAM_TYPE_H264 => "H.264 (0x1B), not the first video stream".to_owned(),
                STREAM_TYPE_ADTS => "AAC (0x0F), not the first audio stream".to_owned(),
                other => codec_name(other, descriptors),
            };
            if !unsupported.contains(&name) {
                unsupported.push(name);
            }
        }
        if self.video.as_ref().map(|s| s.pid) != video {
            self.video = video.map(Stream::new);
        }
        if self.audio.as_ref().map(|s| s.pid) != audio {
            self.audio = audio.map(Stream::new);
        }
        self.unsupported = unsupported;
        self.psi_error = None;
        Ok(())
    }

    fn stream(&mut self, kind: Kind) -> Option<&mut Stream> {
        match kind {
            Kind::Video => self.video.as_mut(),
            Kind::Audio => self.audio.as_mut(),
        }
    }

    /// A packet of an elementary stream: continuity, then the PES it starts or goes on.
    fn es_packet(&mut self, kind: Kind, header: Header, payload: &[u8], out: &mut Out) {
        let Header {
            unit_start,
            cc,
            discontinuity,
            scrambled,
        } = header;
        let max_pes = self.max_pes;
        let Some(s) = self.stream(kind) else {
            return;
        };
        if let Some(last) = s.cc
            && !discontinuity
        {
            if cc == last {
                // A duplicate packet (sent twice on purpose): once is enough.
                return;
            }
            if cc != (last + 1) & 0x0F {
                s.cc = Some(cc);
                if s.open {
                    s.abandon();
                    out.errors.push(MediaError::Invalid(
                        "TS continuity counter gap (PES dropped)",
                    ));
                }
                if !unit_start {
                    return;
                }
            }
        }
        s.cc = Some(cc);
        if scrambled {
            if s.open || unit_start {
                s.abandon();
                out.errors
                    .push(MediaError::Unsupported("scrambled MPEG-TS".into()));
            }
            return;
        }
        if unit_start {
            self.complete(kind, out);
            let Some(s) = self.stream(kind) else {
                return;
            };
            s.abandon();
            s.open = true;
        } else if !s.open {
            return;
        }
        let Some(s) = self.stream(kind) else {
            return;
        };
        if s.buf.len().saturating_add(payload.len()) > max_pes {
            s.abandon();
            out.errors
                .push(MediaError::Invalid("PES larger than the limit (dropped)"));
            return;
        }
        // Grow to at most the limit.
        let wanted = s.buf.len() + payload.len();
        if wanted > s.buf.capacity() {
            let target = wanted.max(s.buf.capacity().saturating_mul(2)).min(max_pes);
            s.buf.reserve_exact(target - s.buf.len());
        }
        s.buf.extend_from_slice(payload);
        if s.declared.is_none()
            && let Some(header) = s.buf.get(..PES_FIXED_HEADER)
        {
            if header[..3] != [0, 0, 1] {
                s.abandon();
                out.errors.push(MediaError::Invalid("PES start code"));
                return;
            }
            let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
            let declared = if len == 0 { 0 } else { PES_FIXED_HEADER + len };
            if declared > max_pes {
                s.abandon();
                out.errors
                    .push(MediaError::Invalid("PES larger than the limit (dropped)"));
                return;
            }
            s.declared = Some(declared);
        }
        if let Some(declared) = s.declared
            && declared > 0
            && s.buf.len() >= declared
        {
            s.buf.truncate(declared);
            self.complete(kind, out);
        }
    }

    /// Completes the open PES of `kind`, if any.
    fn complete(&mut self, kind: Kind, out: &mut Out) {
        let Some(s) = self.stream(kind) else {
            return;
        };
        if !s.open {
            return;
        }
        let declared = s.declared.unwrap_or(0);
        let mut buf = std::mem::take(&mut s.buf);
        s.abandon();
        if buf.len() < declared {
            out.errors.push(MediaError::Truncated("PES"));
        } else {
            match pes(&buf) {
                Ok((pts, dts, data)) => match kind {
                    Kind::Video => self.video_unit(pts, dts, data, out),
                    Kind::Audio => self.audio_frames(pts, data, out),
                },
                Err(e) => out.errors.push(e),
            }
        }
        buf.clear();
        if let Some(s) = self.stream(kind) {
            s.buf = buf;
        }
    }

    /// The unwrapped value of a 33-bit timestamp: the one nearest the last timestamp
    /// read (a jump back of more than 2^32 ticks is a wrap, and one forward of more than
    /// that a timestamp from before it). The reference moves to it if `advance`.
    fn unwrapped(&mut self, raw: u64, advance: bool) -> u64 {
        let value = match self.clock {
            None => raw,
            Some(last) => {
                let ahead = raw.wrapping_sub(last) & TS_MASK;
                if ahead <= HALF_WRAP {
                    last.saturating_add(ahead)
                } else {
                    last.saturating_sub(TS_MASK + 1 - ahead)
                }
            }
        };
        if advance || self.clock.is_none() {
            self.clock = Some(value);
        }
        value
    }

    /// A video PES: one access unit in Annex B form.
    fn video_unit(&mut self, pts_raw: u64, dts_raw: Option<u64>, data: &[u8], out: &mut Out) {
        let dts = self.unwrapped(dts_raw.unwrap_or(pts_raw), true);
        let pts = self.unwrapped(pts_raw, false);
        let mut avcc = Vec::with_capacity(data.len() + data.len() / 8 + 8);
        let mut keyframe = false;
        let (mut sps, mut pps): (Vec<Bytes>, Vec<Bytes>) = (Vec::new(), Vec::new());
        for nal in AnnexB::new(data) {
            let Some(&header) = nal.first() else {
                continue;
            };
            match header & 0x1F {
                NAL_SPS => keep_set(&mut sps, nal),
                NAL_PPS => keep_set(&mut pps, nal),
                NAL_AUD | NAL_FILLER => {}
                kind => {
                    keyframe |= kind == NAL_IDR;
                    // A NAL of an access unit is far shorter than 4 GiB: the PES limit.
                    let Ok(len) = u32::try_from(nal.len()) else {
                        continue;
                    };
                    avcc.extend_from_slice(&len.to_be_bytes());
                    avcc.extend_from_slice(nal);
                }
            }
        }
        if !sps.is_empty() || !pps.is_empty() {
            if !sps.is_empty() {
                self.sps = sps;
            }
            if !pps.is_empty() {
                self.pps = pps;
            }
            let changed = self
                .avc
                .as_ref()
                .is_none_or(|c| c.sps != self.sps || c.pps != self.pps);
            if changed && !self.sps.is_empty() && !self.pps.is_empty() {
                match avc::from_parameter_sets(self.sps.clone(), self.pps.clone()) {
                    Ok(config) => {
                        self.avc = Some(config.clone());
                        self.config(Demuxed::VideoConfig(config), out);
                    }
                    Err(e) => {
                        // Frames of these parameter sets cannot be decoded.
                        self.avc = None;
                        out.errors.push(e);
                    }
                }
            }
        }
        if self.avc.is_none() || avcc.is_empty() {
            return;
        }
        let frame = Frame::Video {
            dts_ms: dts / 90,
            pts_ms: pts / 90,
            keyframe,
            avcc: Bytes::from(avcc),
        };
        self.frame(frame, out);
    }

    /// An audio PES: ADTS frames, the first at the PES's PTS, each next one 1024 samples
    /// later.
    fn audio_frames(&mut self, pts_raw: u64, data: &[u8], out: &mut Out) {
        let pts = self.unwrapped(pts_raw, true);
        let mut rest = data;
        let mut index = 0u64;
        while !rest.is_empty() {
            let (config, raw, tail) = match adts(rest) {
                Ok(frame) => frame,
                Err(e) => {
                    out.errors.push(e);
                    return;
                }
            };
            rest = tail;
            let rate = u64::from(config.sample_rate.max(1));
            if self.aac.as_ref() != Some(&config) {
                self.aac = Some(config.clone());
                self.config(Demuxed::AudioConfig(config), out);
            }
            let offset = index.saturating_mul(AAC_FRAME_SAMPLES * 90_000) / rate;
            index += 1;
            let frame = Frame::Audio {
                pts_ms: pts.saturating_add(offset) / 90,
                raw: Bytes::copy_from_slice(raw),
            };
            self.frame(frame, out);
        }
    }

    /// Emits a config. Frames of its stream held until now belong to the config before:
    /// they go first.
    fn config(&mut self, config: Demuxed, out: &mut Out) {
        let video = matches!(config, Demuxed::VideoConfig(_));
        if self
            .held
            .iter()
            .any(|f| matches!(f, Frame::Video { .. }) == video)
        {
            self.release(out);
        }
        out.items.push(config);
    }

    /// Emits a frame, or holds it at the start of the stream: an encoder's first audio
    /// PES often comes a few hundred milliseconds after its first keyframe, and a
    /// segmenter given the audio config after frames would cut its first segment short.
    /// Frames are held while a stream the PMT picked has no config yet, up to `max_pes`
    /// bytes and [`HOLD_MS`] of stream time; then let go in order, and none is held
    /// again.
    fn frame(&mut self, frame: Frame, out: &mut Out) {
        let start = *self.first_ms.get_or_insert(frame_time_and_size(&frame).0);
        if self.holding {
            let waiting = self.video.is_some() && self.avc.is_none()
                || self.audio.is_some() && self.aac.is_none();
            let (ms, size) = frame_time_and_size(&frame);
            let first = self.held.first().map_or(ms, |f| frame_time_and_size(f).0);
            if waiting
                && self.held_bytes.saturating_add(size) <= self.max_pes
                && ms.abs_diff(first) <= HOLD_MS
            {
                self.held_bytes += size;
                self.held.push(frame);
                return;
            }
            self.release(out);
        }
        let (ms, _) = frame_time_and_size(&frame);
        if matches!(frame, Frame::Audio { .. })
            && self.video.is_some()
            && self.avc.is_none()
            && ms.abs_diff(start) <= VIDEO_WAIT_MS
        {
            return; // the video's parameter sets are still to come
        }
        out.items.push(Demuxed::Frame(frame));
    }

    /// Lets the held frames go; none is held from now on.
    fn release(&mut self, out: &mut Out) {
        self.holding = false;
        self.held_bytes = 0;
        // Audio waits for the video the PMT promises (see [`VIDEO_WAIT_MS`]).
        let drop_audio = self.video.is_some() && self.avc.is_none();
        out.items.extend(
            std::mem::take(&mut self.held)
                .into_iter()
                .filter(|f| !(drop_audio && matches!(f, Frame::Audio { .. })))
                .map(Demuxed::Frame),
        );
    }
}

/// A frame's timestamp (DTS for video) and data size.
fn frame_time_and_size(frame: &Frame) -> (u64, usize) {
    match frame {
        Frame::Video { dts_ms, avcc, .. } => (*dts_ms, avcc.len()),
        Frame::Audio { pts_ms, raw } => (*pts_ms, raw.len()),
    }
}

/// Adds a parameter set unless the same one is there or there are enough.
fn keep_set(sets: &mut Vec<Bytes>, nal: &[u8]) {
    if sets.len() < MAX_SETS && !sets.iter().any(|s| s[..] == *nal) {
        sets.push(Bytes::copy_from_slice(nal));
    }
}

/// The PSI section of table `table_id` starting in `payload` (pointer field first):
/// its table id extension and the bytes between its 8-byte header and its CRC. `None`
/// for another table, a section not yet applicable, or one with the CRC in `seen` (read
/// before); else `seen` is set to its CRC.
fn section<'a>(
    payload: &'a [u8],
    table_id: u8,
    seen: &mut Option<u32>,
) -> Result<Option<(u16, &'a [u8])>, MediaError> {
    let (&pointer, rest) = payload
        .split_first()
        .ok_or(MediaError::Truncated("PSI pointer field"))?;
    let section = rest
        .get(usize::from(pointer)..)
        .ok_or(MediaError::Truncated("PSI pointer field"))?;
    let [id, len_hi, len_lo, ..] = *section else {
        return Err(MediaError::Truncated("PSI section header"));
    };
    if id != table_id {
        return Ok(None);
    }
    if len_hi & 0x80 == 0 {
        return Err(MediaError::Invalid("PSI section syntax indicator"));
    }
    let len = usize::from(u16::from_be_bytes([len_hi & 0x0F, len_lo]));
    if len > MAX_SECTION_LEN {
        return Err(MediaError::Invalid("PSI section length"));
    }
    // Header after the length field (5 bytes) and CRC (4).
    if len < 9 {
        return Err(MediaError::Truncated("PSI section"));
    }
    let section = section.get(..3 + len).ok_or(MediaError::Unsupported(
        "a PAT or PMT section spanning MPEG-TS packets".into(),
    ))?;
    let (body, crc) = section.split_at(section.len() - 4);
    let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if *seen == Some(crc) {
        return Ok(None);
    }
    if crc32(section) != 0 {
        return Err(MediaError::Invalid("PSI section CRC"));
    }
    let [_, _, _, ext_hi, ext_lo, version, _, _, fields @ ..] = body else {
        return Err(MediaError::Truncated("PSI section"));
    };
    if version & 0x01 == 0 {
        // current_next_indicator 0: a table to apply later; it will be sent again.
        return Ok(None);
    }
    *seen = Some(crc);
    Ok(Some((u16::from_be_bytes([*ext_hi, *ext_lo]), fields)))
}

/// A name for a PMT stream type Shoal cannot carry, from the type and, for private data,
/// its descriptors: "NAME (0xTT)".
fn codec_name(stream_type: u8, descriptors: &[u8]) -> String {
    let name = match stream_type {
        0x01 => "MPEG-1 video",
        0x02 => "MPEG-2 video",
        0x03 => "MPEG-1 audio",
        0x04 => "MPEG-2 audio",
        0x05 => "MPEG-2 private sections",
        STREAM_TYPE_PRIVATE => private_name(descriptors),
        0x10 => "MPEG-4 video",
        0x11 => "AAC LATM",
        0x15 => "ID3 metadata",
        0x1C => "MPEG-4 audio",
        0x1F => "H.264 SVC",
        0x20 => "H.264 MVC",
        0x24 => "HEVC",
        0x2D | 0x2E => "MPEG-H 3D audio",
        0x33 => "VVC",
        0x42 => "AVS",
        0x81 => "AC-3",
        0x86 => "SCTE-35",
        0x87 => "E-AC-3",
        0xD2 => "AVS2",
        0xEA => "VC-1",
        _ => "stream type",
    };
    format!("{name} (0x{stream_type:02X})")
}

/// What private PES data holds, from its descriptors (DVB tags or a registration).
fn private_name(mut descriptors: &[u8]) -> &'static str {
    while let [tag, len, rest @ ..] = descriptors {
        let Some((body, tail)) = rest.split_at_checked(usize::from(*len)) else {
            break;
        };
        descriptors = tail;
        let name = match (*tag, body) {
            (0x05, [a, b, c, d, ..]) => match &[*a, *b, *c, *d] {
                b"AC-3" => "AC-3",
                b"EAC3" => "E-AC-3",
                b"AC-4" => "AC-4",
                b"DTS1" | b"DTS2" | b"DTS3" => "DTS",
                b"Opus" => "Opus",
                b"AV01" => "AV1",
                b"HEVC" => "HEVC",
                b"VC-1" => "VC-1",
                b"ID3 " => "ID3 metadata",
                b"KLVA" => "KLV metadata",
                _ => continue,
            },
            (0x56, _) => "teletext",
            (0x59, _) => "DVB subtitles",
            (0x6A, _) => "AC-3",
            (0x7A, _) => "E-AC-3",
            (0x7B, _) => "DTS",
            _ => continue,
        };
        return name;
    }
    "private data"
}

/// A PES: its PTS, DTS (if it has its own) and payload. Errors for a header that does
/// not hold what an audio or video PES must (the optional header, a PTS).
fn pes(buf: &[u8]) -> Result<(u64, Option<u64>, &[u8]), MediaError> {
    let [
        0,
        0,
        1,
        _stream_id,
        _,
        _,
        flags,
        ts_flags,
        header_len,
        rest @ ..,
    ] = buf
    else {
        return Err(MediaError::Truncated("PES header"));
    };
    if flags & 0xC0 != 0x80 {
        return Err(MediaError::Invalid("PES header (no optional fields)"));
    }
    if flags & 0x30 != 0 {
        return Err(MediaError::Unsupported("scrambled PES".into()));
    }
    let (header, payload) = rest
        .split_at_checked(usize::from(*header_len))
        .ok_or(MediaError::Truncated("PES header"))?;
    let (pts, dts) = match ts_flags >> 6 {
        0b10 => (timestamp(header)?, None),
        0b11 => (
            timestamp(header)?,
            Some(timestamp(header.get(5..).unwrap_or_default())?),
        ),
        _ => return Err(MediaError::Invalid("PES without a PTS")),
    };
    Ok((pts, dts, payload))
}

/// A PTS or DTS field: 33 bits in 3, 15 and 15 (marker bits not checked).
fn timestamp(field: &[u8]) -> Result<u64, MediaError> {
    let [a, b, c, d, e, ..] = *field else {
        return Err(MediaError::Truncated("PES timestamp"));
    };
    Ok(u64::from((a >> 1) & 0x07) << 30
        | u64::from(b) << 22
        | u64::from(c >> 1) << 15
        | u64::from(d) << 7
        | u64::from(e >> 1))
}

/// The ADTS frame at the start of `data`: its config, raw frame, and what follows it.
fn adts(data: &[u8]) -> Result<(AacConfig, &[u8], &[u8]), MediaError> {
    let [b0, b1, b2, b3, b4, b5, b6, ..] = *data else {
        return Err(MediaError::Truncated("ADTS header"));
    };
    if b0 != 0xFF || b1 & 0xF0 != 0xF0 {
        return Err(MediaError::Invalid("ADTS sync word"));
    }
    if b1 & 0x06 != 0 {
        return Err(MediaError::Invalid("ADTS layer"));
    }
    if b6 & 0x03 != 0 {
        return Err(MediaError::Unsupported(
            "ADTS frames of several raw data blocks".into(),
        ));
    }
    let header_len = if b1 & 0x01 != 0 { 7 } else { 9 };
    let config = AacConfig::from_adts(b2 >> 6, (b2 >> 2) & 0x0F, (b2 & 0x01) << 2 | b3 >> 6)?;
    let frame_len = usize::from(b3 & 0x03) << 11 | usize::from(b4) << 3 | usize::from(b5 >> 5);
    if frame_len <= header_len {
        return Err(MediaError::Invalid("ADTS frame length"));
    }
    let (frame, rest) = data
        .split_at_checked(frame_len)
        .ok_or(MediaError::Truncated("ADTS frame"))?;
    Ok((config, &frame[header_len..], rest))
}

/// The NAL units of an Annex B byte stream, without start codes or trailing zeros.
/// Bytes before the first start code are skipped.
struct AnnexB<'a> {
    /// From the first byte after a start code; `None` when done.
    rest: Option<&'a [u8]>,
}

impl<'a> AnnexB<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            rest: start_code(data).map(|(_, after)| &data[after..]),
        }
    }
}

impl<'a> Iterator for AnnexB<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let (nal, next) = match start_code(rest) {
            Some((at, after)) => (&rest[..at], Some(&rest[after..])),
            None => (rest, None),
        };
        self.rest = next;
        let end = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        Some(&nal[..end])
    }
}

/// Where the first `00 00 01` of `data` starts, and where it ends.
fn start_code(data: &[u8]) -> Option<(usize, usize)> {
    data.windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|at| (at, at + 3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::tests::{PPS_720P, SPS_720P};
    use crate::media::segmenter::tests::{assert_decodes_cleanly, run};
    use crate::media::ts::{AUDIO_PID, PMT_PID, TsMuxer, VIDEO_PID};
    use crate::media::{aac, avc};

    const MAX_PES: usize = 1 << 20;

    fn video_config() -> AvcConfig {
        avc::parse_config(&avc::tests::record(SPS_720P, PPS_720P)).expect("valid record")
    }

    fn audio_config() -> AacConfig {
        aac::parse_config(&[0x12, 0x10]).expect("valid config")
    }

    /// Video frame `i` (30 fps, keyframe every 30, B-frame-like PTS offset) of about
    /// `size` bytes: an SEI and an IDR slice, or one inter slice (of at least 2 bytes:
    /// the muxer drops empty NAL units).
    fn video(i: u64, size: usize) -> Frame {
        let keyframe = i.is_multiple_of(30);
        let mut avcc = vec![];
        if keyframe {
            let sei = [0x06, 0x05, 0x02, 0xdc, 0x45, 0x80];
            avcc.extend_from_slice(&(sei.len() as u32).to_be_bytes());
            avcc.extend_from_slice(&sei);
        }
        // Slice bytes with no 00 00 0x (escaped as an encoder would).
        let slice: Vec<u8> = std::iter::once(if keyframe { 0x65 } else { 0x41 })
            .chain((0..=size).map(|b| ((b as u64 * 31 + i) % 255 + 1) as u8))
            .collect();
        avcc.extend_from_slice(&(slice.len() as u32).to_be_bytes());
        avcc.extend_from_slice(&slice);
        let dts_ms = 1000 + i * 1000 / 30;
        Frame::Video {
            dts_ms,
            pts_ms: dts_ms + if i % 3 == 1 { 66 } else { 0 },
            keyframe,
            avcc: Bytes::from(avcc),
        }
    }

    /// AAC frame `k` at 44.1 kHz, `size` bytes.
    fn audio(k: u64, size: usize) -> Frame {
        Frame::Audio {
            pts_ms: 1000 + k * 1024 * 1000 / 44_100,
            raw: Bytes::from(vec![0x21 ^ k as u8; size]),
        }
    }

    fn ms_to_ticks(ms: u64) -> u64 {
        ms * 90
    }

    /// Muxes frames as an encoder would: tables first and every `tables_every` frames,
    /// each frame its own PES.
    fn mux(frames: &[Frame], tables_every: usize) -> Vec<u8> {
        let mut m = TsMuxer::new(true, true);
        let mut out = vec![];
        let (video, audio) = (video_config(), audio_config());
        for (n, f) in frames.iter().enumerate() {
            if n.is_multiple_of(tables_every) {
                m.write_tables(&mut out);
            }
            match f {
                Frame::Video {
                    dts_ms,
                    pts_ms,
                    keyframe,
                    avcc,
                } => {
                    let mut annex_b = vec![];
                    avc::to_annex_b(avcc, &video, *keyframe, &mut annex_b).unwrap();
                    m.write_video(
                        ms_to_ticks(*pts_ms),
                        ms_to_ticks(*dts_ms),
                        *keyframe,
                        &annex_b,
                        &mut out,
                    );
                }
                Frame::Audio { pts_ms, raw } => {
                    let mut adts = audio.adts_header(raw.len()).unwrap().to_vec();
                    adts.extend_from_slice(raw);
                    m.write_audio(ms_to_ticks(*pts_ms), &adts, &mut out);
                }
            }
        }
        out
    }

    /// 60 video frames of many sizes and the audio of the same 2 s, in time order.
    fn sample() -> Vec<Frame> {
        let mut frames = vec![];
        let (mut i, mut k) = (0, 0);
        while i < 60 {
            let v = i * 1000 / 30;
            let a = k * 1024 * 1000 / 44_100;
            if a < v {
                frames.push(audio(k, 100 + (k as usize * 37) % 400));
                k += 1;
            } else {
                frames.push(video(i, (i as usize * 397) % 5000));
                i += 1;
            }
        }
        frames
    }

    /// Everything a demuxer gives for `ts` pushed in pieces of `split` bytes, then
    /// finished; checks the buffered bytes stay in bounds.
    fn demux_in(ts: &[u8], split: usize, max_pes: usize) -> (Vec<Demuxed>, Vec<MediaError>) {
        let mut d = TsDemuxer::new(max_pes);
        let (mut items, mut errors) = (vec![], vec![]);
        for piece in ts.chunks(split) {
            let (i, e) = d.push(piece);
            items.extend(i);
            errors.extend(e);
            assert!(d.buffered() <= max_pes * 3 + PACKET_LEN);
        }
        let (i, e) = d.finish();
        items.extend(i);
        errors.extend(e);
        assert_eq!(d.buffered(), 0);
        (items, errors)
    }

    /// The frames of each kind, in order, and the configs.
    fn split_kinds(items: &[Demuxed]) -> (Vec<Frame>, Vec<Frame>, Vec<Demuxed>) {
        let (mut video, mut audio, mut configs) = (vec![], vec![], vec![]);
        for item in items {
            match item {
                Demuxed::Frame(f @ Frame::Video { .. }) => video.push(f.clone()),
                Demuxed::Frame(f @ Frame::Audio { .. }) => audio.push(f.clone()),
                other => configs.push(other.clone()),
            }
        }
        (video, audio, configs)
    }

    fn kinds(frames: &[Frame]) -> (Vec<Frame>, Vec<Frame>) {
        frames
            .iter()
            .cloned()
            .partition(|f| matches!(f, Frame::Video { .. }))
    }

    #[test]
    fn muxed_frames_come_back_the_same() {
        let frames = sample();
        let ts = mux(&frames, 25);
        let (items, errors) = demux_in(&ts, ts.len(), MAX_PES);
        assert_eq!(errors, []);
        let (video, audio, configs) = split_kinds(&items);
        // Audio first: a video PES (unbounded) completes when the next one starts.
        assert_eq!(
            configs,
            [
                Demuxed::AudioConfig(audio_config()),
                Demuxed::VideoConfig(video_config())
            ]
        );
        // Both come before the first frame (the first audio frames waited).
        assert_eq!(items[..2], configs);
        let (want_video, want_audio) = kinds(&frames);
        assert_eq!(video, want_video);
        assert_eq!(audio, want_audio);
    }

    #[test]
    fn any_split_of_the_input_gives_the_same() {
        let ts = mux(&sample(), 25);
        let whole = demux_in(&ts, ts.len(), MAX_PES);
        for split in [1, 7, 188, 1316, 1317] {
            assert_eq!(demux_in(&ts, split, MAX_PES), whole, "pieces of {split}");
        }
        // Without finish: all but the last video frame, whatever the split.
        let mut d = TsDemuxer::new(MAX_PES);
        let mut items = vec![];
        let mut at = 0;
        let mut n = 0;
        while at < ts.len() {
            let len = (n * 7919 % 3000 + 1).min(ts.len() - at);
            items.extend(d.push(&ts[at..at + len]).0);
            at += len;
            n += 1;
        }
        assert_eq!(items.len(), whole.0.len() - 1);
        assert_eq!(items[..], whole.0[..items.len()]);
    }

    #[test]
    fn audio_completes_at_its_declared_length_and_video_at_the_next_start() {
        let frames = [
            video(0, 300),
            audio(0, 200),
            audio(1, 200),
            video(1, 300),
            audio(2, 200),
            video(2, 300),
        ];
        let ts = mux(&frames, 10);
        // Up to packet `n` of `pid`, and the byte that confirms its sync.
        let upto = |pid, n| (packets_of(&ts, pid)[n] + 1) * PACKET_LEN + 1;
        let mut d = TsDemuxer::new(MAX_PES);
        let mut at = 0;
        let mut push = |end: usize| {
            let (items, errors) = d.push(&ts[at..end]);
            assert_eq!(errors, []);
            at = end;
            (items, d.buffered())
        };
        let frame = |n: usize| Demuxed::Frame(frames[n].clone());
        // The first audio PES (2 packets) is complete; its frame waits for the video
        // config, which comes when the first video PES ends.
        let (items, buffered) = push(upto(AUDIO_PID, 1));
        assert_eq!(items, [Demuxed::AudioConfig(audio_config())]);
        assert_eq!(buffered, 200 + 376 + 1, "held frame, video PES, next byte");
        assert_eq!(push(upto(AUDIO_PID, 3)).0, []);
        // The next video PES starts.
        let (items, buffered) = push(upto(VIDEO_PID, 3));
        assert_eq!(
            items,
            [
                Demuxed::VideoConfig(video_config()),
                frame(1),
                frame(2),
                frame(0)
            ]
        );
        assert_eq!(buffered, 184 - 8 + 1, "the video PES begun, the next byte");
        // Audio now comes at once.
        assert_eq!(push(upto(AUDIO_PID, 5)).0, [frame(4)]);
        assert_eq!(push(ts.len()).0, [frame(3)]);
        assert_eq!(
            d.finish().0,
            [frame(5)],
            "the last video PES completes at the end"
        );
    }

    /// Where the `n`th PES of `pid` has begun (its first packet read: the byte after it
    /// included).
    fn pes_begun(ts: &[u8], pid: u16, n: usize) -> usize {
        let starts: Vec<usize> = packets_of(ts, pid)
            .into_iter()
            .filter(|p| ts[p * PACKET_LEN + 1] & 0x40 != 0)
            .collect();
        (starts[n] + 1) * PACKET_LEN + 1
    }

    #[test]
    fn frames_wait_for_the_audio_config_within_limits() {
        // The PMT lists audio, none comes: video waits 2 s of stream time.
        let frames: Vec<Frame> = (0..70).map(|i| video(i, 10)).collect();
        let ts = mux(&frames, 1000);
        let mut d = TsDemuxer::new(MAX_PES);
        let end = pes_begun(&ts, VIDEO_PID, 61);
        let (items, _) = d.push(&ts[..end]);
        assert_eq!(items, [Demuxed::VideoConfig(video_config())]);
        assert!(d.buffered() > 61 * 15);
        // Frame 61 is 2033 ms after the first.
        let end2 = pes_begun(&ts, VIDEO_PID, 62);
        let (items, _) = d.push(&ts[end..end2]);
        assert_eq!(split_kinds(&items).0, frames[..62]);
        assert!(d.buffered() < 200);
        let (items, _) = d.push(&ts[end2..]);
        assert_eq!(split_kinds(&items).0, frames[62..68], "the last two wait");

        // ... and at most `max_pes` bytes: 4 frames of 1 kB with a 5000-byte limit.
        let frames: Vec<Frame> = (0..10).map(|i| video(i, 1000)).collect();
        let ts = mux(&frames, 1000);
        let mut d = TsDemuxer::new(5000);
        let end = pes_begun(&ts, VIDEO_PID, 4);
        let (items, _) = d.push(&ts[..end]);
        assert_eq!(items, [Demuxed::VideoConfig(video_config())]);
        assert!(d.buffered() > 4000);
        let (items, _) = d.push(&ts[end..pes_begun(&ts, VIDEO_PID, 5)]);
        assert_eq!(split_kinds(&items).0, frames[..5]);
        assert_eq!(
            demux_in(&ts, 1316, 5000).0[1..],
            frames
                .iter()
                .cloned()
                .map(Demuxed::Frame)
                .collect::<Vec<_>>()[..]
        );

        // Without audio in the PMT nothing waits.
        let mut m = TsMuxer::new(true, false);
        let mut ts = vec![];
        m.write_tables(&mut ts);
        let config = video_config();
        for f in &frames[..3] {
            let Frame::Video {
                avcc,
                dts_ms,
                pts_ms,
                keyframe,
            } = f
            else {
                unreachable!()
            };
            let mut annex_b = vec![];
            avc::to_annex_b(avcc, &config, *keyframe, &mut annex_b).unwrap();
            m.write_video(pts_ms * 90, dts_ms * 90, *keyframe, &annex_b, &mut ts);
        }
        let (items, _) = TsDemuxer::new(MAX_PES).push(&ts);
        assert_eq!(
            split_kinds(&items).0,
            frames[..2],
            "the third waits for its end"
        );
    }

    #[test]
    fn several_adts_frames_in_one_pes() {
        let config = audio_config();
        let mut adts = vec![];
        for size in [10, 300, 20] {
            adts.extend_from_slice(&config.adts_header(size).unwrap());
            adts.extend(std::iter::repeat_n(size as u8, size));
        }
        // A frame with a CRC (9-byte header): the CRC is not part of the frame.
        let mut header = config.adts_header(5 + 2).unwrap();
        header[1] &= 0xFE;
        adts.extend_from_slice(&header);
        adts.extend_from_slice(&[0xCC, 0xCC, 1, 2, 3, 4, 5]);
        let mut m = TsMuxer::new(false, true);
        let mut ts = vec![];
        m.write_tables(&mut ts);
        let pts = (1 << 33) - 90 * 10;
        m.write_audio(pts, &adts, &mut ts);
        let (items, errors) = demux_in(&ts, ts.len(), MAX_PES);
        assert_eq!(errors, []);
        let frame = |k: u64, raw: Vec<u8>| {
            Demuxed::Frame(Frame::Audio {
                pts_ms: (pts + k * 1024 * 90_000 / 44_100) / 90,
                raw: Bytes::from(raw),
            })
        };
        assert_eq!(
            items,
            [
                Demuxed::AudioConfig(config),
                frame(0, vec![10; 10]),
                frame(1, vec![44; 300]),
                frame(2, vec![20; 20]),
                frame(3, vec![1, 2, 3, 4, 5]),
            ]
        );
    }

    #[test]
    fn resyncs_after_garbage() {
        let frames = sample();
        let ts = mux(&frames, 25);
        // Garbage (with sync bytes in it) before the stream and between two packets.
        let garbage: Vec<u8> = (0..1000u32)
            .map(|b| [0x47, 0x00, 0x13][b as usize % 3])
            .collect();
        let cut = 40 * PACKET_LEN;
        let stream = [&garbage[..], &ts[..cut], &garbage[..333], &ts[cut..]].concat();
        for split in [1, 7, 1316, stream.len()] {
            let (items, errors) = demux_in(&stream, split, MAX_PES);
            assert_eq!(
                errors,
                [
                    MediaError::Invalid("TS sync byte (bytes skipped)"),
                    MediaError::Invalid("TS sync byte (bytes skipped)")
                ],
                "pieces of {split}"
            );
            let (video, audio, _) = split_kinds(&items);
            assert_eq!((video, audio), kinds(&frames), "pieces of {split}");
        }

        // A video packet cut short in the middle of a PES: that frame is lost, nothing
        // else.
        let video_packets = packets_of(&ts, VIDEO_PID);
        let n = *video_packets
            .iter()
            .find(|&&n| {
                n > 40
                    && video_packets.contains(&(n + 1))
                    && ts[n * PACKET_LEN + 1] & 0x40 == 0
                    && ts[(n + 1) * PACKET_LEN + 1] & 0x40 == 0
            })
            .expect("a PES of several packets");
        let mut stream = ts.clone();
        stream.drain(n * PACKET_LEN + 10..n * PACKET_LEN + 100);
        let (items, errors) = demux_in(&stream, 1316, MAX_PES);
        assert_eq!(
            errors,
            [
                MediaError::Invalid("TS sync byte (bytes skipped)"),
                MediaError::Invalid("TS continuity counter gap (PES dropped)")
            ]
        );
        let (video, audio, _) = split_kinds(&items);
        let (want_video, want_audio) = kinds(&frames);
        assert_eq!(audio, want_audio);
        assert_eq!(video.len(), want_video.len() - 1);
        assert!(video.iter().all(|f| want_video.contains(f)));
    }

    /// Indices of the packets of `pid` in `ts`.
    fn packets_of(ts: &[u8], pid: u16) -> Vec<usize> {
        ts.chunks(PACKET_LEN)
            .enumerate()
            .filter(|(_, p)| u16::from_be_bytes([p[1] & 0x1F, p[2]]) == pid)
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn a_continuity_gap_drops_the_pes() {
        let frames = [video(0, 2000), video(1, 2000), video(2, 2000), video(3, 10)];
        let ts = mux(&frames, 100);
        let video_packets = packets_of(&ts, VIDEO_PID);
        // Drop a middle packet of the second frame's PES (each PES is 11 packets).
        let lost = video_packets[11 + 5];
        let mut stream = ts.clone();
        stream.drain(lost * PACKET_LEN..(lost + 1) * PACKET_LEN);
        let (items, errors) = demux_in(&stream, 1316, MAX_PES);
        assert_eq!(
            errors,
            [MediaError::Invalid(
                "TS continuity counter gap (PES dropped)"
            )]
        );
        let (video, _, _) = split_kinds(&items);
        assert_eq!(
            video,
            [&frames[0], &frames[2], &frames[3]].map(Clone::clone)
        );

        // A packet sent twice is taken once.
        let again = video_packets[3];
        let mut stream = ts.clone();
        let copy = stream[again * PACKET_LEN..(again + 1) * PACKET_LEN].to_vec();
        stream.splice(again * PACKET_LEN..again * PACKET_LEN, copy);
        let (items, errors) = demux_in(&stream, 1316, MAX_PES);
        assert_eq!(errors, []);
        assert_eq!(split_kinds(&items).0, frames);

        // The discontinuity indicator excuses a jump.
        let mut stream = ts.clone();
        let at = video_packets[11] * PACKET_LEN;
        assert_eq!(stream[at + 3] & 0x20, 0x20, "the first packet has a field");
        stream[at + 3] = (stream[at + 3] & 0xF0) | ((stream[at + 3] + 5) & 0x0F);
        stream[at + 5] |= 0x80;
        for n in &video_packets[12..] {
            let p = n * PACKET_LEN + 3;
            stream[p] = (stream[p] & 0xF0) | ((stream[p] + 5) & 0x0F);
        }
        let (items, errors) = demux_in(&stream, 1316, MAX_PES);
        assert_eq!(errors, []);
        assert_eq!(split_kinds(&items).0, frames);
    }

    #[test]
    fn an_oversize_pes_is_dropped_and_the_next_one_taken() {
        // Audio declares its length (refused at the start), video does not (refused when
        // it grows over the limit).
        let frames = [
            video(0, 100),
            audio(0, 3000),
            video(1, 100),
            video(2, 5000),
            audio(1, 100),
            video(3, 100),
            video(4, 100),
        ];
        let ts = mux(&frames, 100);
        for split in [7, 1316] {
            let (items, errors) = demux_in(&ts, split, 2000);
            assert_eq!(
                errors,
                vec![MediaError::Invalid("PES larger than the limit (dropped)"); 2]
            );
            let (video, audio, _) = split_kinds(&items);
            assert_eq!(
                video,
                [&frames[0], &frames[2], &frames[5], &frames[6]].map(Clone::clone)
            );
            assert_eq!(audio, [frames[4].clone()]);
        }
    }

    /// A PSI section in a packet of `pid`, CRC and all.
    fn psi_packet(pid: u16, table_id: u8, ext: u16, fields: &[u8]) -> Vec<u8> {
        let len = 5 + fields.len() + 4;
        let mut s = vec![table_id, 0xB0 | (len >> 8) as u8, len as u8];
        s.extend_from_slice(&ext.to_be_bytes());
        s.extend_from_slice(&[0xC1, 0, 0]);
        s.extend_from_slice(fields);
        let crc = crc32(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        let mut p = vec![0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0];
        p.extend_from_slice(&s);
        p.resize(PACKET_LEN, 0xFF);
        p
    }

    fn pmt_entry(stream_type: u8, pid: u16, descriptors: &[u8]) -> Vec<u8> {
        let mut e = vec![stream_type];
        e.extend_from_slice(&(0xE000 | pid).to_be_bytes());
        e.extend_from_slice(&(0xF000 | descriptors.len() as u16).to_be_bytes());
        e.extend_from_slice(descriptors);
        e
    }

    #[test]
    fn reads_the_first_program_and_names_what_it_cannot_carry() {
        // PAT: the network PID, then programs 7 (PMT on 0x1000) and 8.
        let pat = psi_packet(
            0,
            0x00,
            1,
            &[0, 0, 0xE0, 0x10, 0, 7, 0xF0, 0, 0, 8, 0xE2, 0],
        );
        let mut entries = vec![0xE1, 0x00, 0xF0, 0x00];
        for e in [
            pmt_entry(0x24, 0x200, &[]),
            pmt_entry(0x1B, VIDEO_PID, &[0x28, 0x04, 0x64, 0x00, 0x1F, 0x3F]),
            pmt_entry(
                0x06,
                0x201,
                &[0x0A, 0x04, b'e', b'n', b'g', 0, 0x6A, 0x01, 0x00],
            ),
            pmt_entry(0x0F, AUDIO_PID, &[]),
            pmt_entry(0x0F, 0x202, &[]),
            pmt_entry(0x06, 0x203, &[0x05, 0x04, b'O', b'p', b'u', b's']),
            pmt_entry(0x02, 0x204, &[]),
            pmt_entry(0x24, 0x205, &[]),
            pmt_entry(0x99, 0x206, &[]),
        ] {
            entries.extend_from_slice(&e);
        }
        let pmt = psi_packet(PMT_PID, 0x02, 7, &entries);
        // Program 8's map on the same PID: ignored.
        let other = psi_packet(PMT_PID, 0x02, 8, &pmt_entry(0x1B, 0x300, &[]));
        // The streams of the program, muxed by the muxer (its own tables dropped).
        let frames = [video(0, 100), audio(0, 100), video(1, 100), video(2, 100)];
        let media = mux(&frames, 100);
        let mut ts = [pat, other, pmt].concat();
        ts.extend_from_slice(&media[2 * PACKET_LEN..]);
        let mut d = TsDemuxer::new(MAX_PES);
        let (items, errors) = d.push(&ts);
        assert_eq!(errors, []);
        assert_eq!(
            d.unsupported(),
            [
                "HEVC (0x24)",
                "AC-3 (0x06)",
                "AAC (0x0F), not the first audio stream",
                "Opus (0x06)",
                "MPEG-2 video (0x02)",
                "stream type (0x99)"
            ]
        );
        let (video, audio, _) = split_kinds(&items);
        assert_eq!((video.len(), audio.len()), (1, 1));

        // A corrupt PMT (bad CRC) is an error, reported once, and changes nothing.
        let mut bad = psi_packet(PMT_PID, 0x02, 7, &pmt_entry(0x24, VIDEO_PID, &[]));
        bad[20] ^= 1;
        // A new PMT: video now HEVC, not carried.
        let pmt = psi_packet(
            PMT_PID,
            0x02,
            7,
            &[
                &[0xE1, 0x00, 0xF0, 0x00][..],
                &pmt_entry(0x24, VIDEO_PID, &[]),
            ]
            .concat(),
        );
        // (A packet is read when the next one's sync byte comes.)
        let (_, errors) = d.push(&[&bad[..], &bad, &pmt[..1]].concat());
        assert_eq!(errors, [MediaError::Invalid("PSI section CRC")]);
        assert_eq!(d.unsupported().len(), 6);
        let (items, errors) = d.push(&[&pmt[1..], &media[2 * PACKET_LEN..]].concat());
        assert_eq!(errors, []);
        assert_eq!(d.unsupported(), ["HEVC (0x24)"]);
        assert_eq!(split_kinds(&items).0, []);
        assert_eq!(
            d.buffered(),
            PACKET_LEN,
            "the last packet, awaiting its sync"
        );
    }

    #[test]
    fn bad_tables_are_errors() {
        let mut d = TsDemuxer::new(MAX_PES);
        let pat = psi_packet(0, 0x00, 1, &[0, 0, 0xE0, 0x10]);
        let (_, errors) = d.push(&[&pat[..], &pat[..1]].concat());
        assert_eq!(errors, [MediaError::Invalid("PAT without a program")]);
        let mut long = psi_packet(0, 0x00, 1, &[0, 1, 0xF0, 0x00]);
        long[7] = 0xFF;
        let (_, errors) = d.push(&[&long[1..], &pat[..1]].concat());
        assert_eq!(
            errors,
            [MediaError::Unsupported(
                "a PAT or PMT section spanning MPEG-TS packets".into()
            )]
        );
    }

    #[test]
    fn timestamps_unwrap_across_the_33_bit_wrap() {
        let mut m = TsMuxer::new(true, true);
        let mut ts = vec![];
        m.write_tables(&mut ts);
        let config = video_config();
        let start = (1u64 << 33) - 90 * 1000;
        let mut want = vec![];
        for i in 0..90u64 {
            let Frame::Video { avcc, keyframe, .. } = video(i, 10) else {
                unreachable!()
            };
            let dts = start + i * 3000;
            let pts = dts + 6000;
            let mut annex_b = vec![];
            avc::to_annex_b(&avcc, &config, keyframe, &mut annex_b).unwrap();
            m.write_video(pts, dts, keyframe, &annex_b, &mut ts);
            m.write_audio(
                dts - 900,
                &[0xFF, 0xF1, 0x50, 0x80, 0x01, 0x3F, 0xFC, 0xAA, 0xBB],
                &mut ts,
            );
            want.push((dts / 90, pts / 90));
        }
        let (items, errors) = demux_in(&ts, 1316, MAX_PES);
        assert_eq!(errors, []);
        let (video, audio, _) = split_kinds(&items);
        let got: Vec<(u64, u64)> = video
            .iter()
            .map(|f| match f {
                Frame::Video { dts_ms, pts_ms, .. } => (*dts_ms, *pts_ms),
                Frame::Audio { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(got, want);
        for (a, (dts, _)) in audio.iter().zip(&want) {
            let Frame::Audio { pts_ms, .. } = a else {
                unreachable!()
            };
            assert_eq!(*pts_ms, dts - 10);
        }
    }

    #[test]
    fn access_units_split_into_nal_units() {
        let nals: Vec<&[u8]> = AnnexB::new(&[
            9, 9, 0, 0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 0, 1, 0x41, 7, 0, 0, 3, 0,
            0, 0, 1, 0, 0, 1,
        ])
        .collect();
        assert_eq!(
            nals,
            [
                &[0x09, 0xF0][..],
                &[0x67, 1, 2],
                &[0x41, 7, 0, 0, 3],
                &[],
                &[]
            ]
        );
        assert_eq!(AnnexB::new(&[0, 0, 2, 0x41]).count(), 0);
    }

    #[test]
    fn an_access_unit_with_new_parameter_sets_changes_the_config() {
        let frames = [video(0, 100), video(1, 100)];
        let mut ts = mux(&frames, 100);
        // A keyframe with other parameter sets (baseline 360p) and filler data.
        let mut m = TsMuxer::new(true, false);
        let sps: &[u8] = &[
            0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
            0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
        ];
        let pps: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];
        let au = [
            &[0, 0, 0, 1, 9, 0xF0, 0, 0, 1][..],
            sps,
            &[0, 0, 1],
            pps,
            &[0, 0, 1, 0x0C, 0xFF, 0xFF, 0x80, 0, 0, 1, 0x65, 0x88, 0x80],
        ]
        .concat();
        // Continue the counters of the first stream's video PID.
        for _ in 0..packets_of(&ts, VIDEO_PID).len() {
            m.write_video(0, 0, false, &[], &mut vec![]);
        }
        m.write_video(90_000, 90_000, true, &au, &mut ts);
        let (items, errors) = demux_in(&ts, 7, MAX_PES);
        assert_eq!(errors, []);
        let new = avc::from_parameter_sets(
            vec![Bytes::copy_from_slice(sps)],
            vec![Bytes::copy_from_slice(pps)],
        )
        .unwrap();
        assert_eq!((new.width, new.height), (640, 360));
        assert_eq!(
            items[3..],
            [
                Demuxed::VideoConfig(new),
                Demuxed::Frame(Frame::Video {
                    dts_ms: 1000,
                    pts_ms: 1000,
                    keyframe: true,
                    avcc: Bytes::from_static(&[0, 0, 0, 3, 0x65, 0x88, 0x80]),
                })
            ]
        );
    }

    #[test]
    fn audio_waits_for_the_video_the_pmt_promises() {
        // The PMT lists video, whose parameter sets never come (lost at the caller's
        // start): audio is not made into audio-only segments for VIDEO_WAIT_MS.
        let config = audio_config();
        let mut m = TsMuxer::new(true, true);
        let mut ts = vec![];
        m.write_tables(&mut ts);
        let frames = 12 * 44_100 / 1024; // 12 s
        for k in 0..frames {
            let Frame::Audio { pts_ms, raw } = audio(k, 20) else {
                unreachable!()
            };
            let mut adts = config.adts_header(raw.len()).unwrap().to_vec();
            adts.extend_from_slice(&raw);
            m.write_audio(ms_to_ticks(pts_ms), &adts, &mut ts);
        }
        let (items, errors) = demux_in(&ts, 1316, MAX_PES);
        assert_eq!(errors, []);
        let audio_ms: Vec<u64> = items
            .iter()
            .filter_map(|i| match i {
                Demuxed::Frame(Frame::Audio { pts_ms, .. }) => Some(*pts_ms),
                _ => None,
            })
            .collect();
        let first = audio_ms
            .first()
            .copied()
            .expect("audio once the wait is over");
        assert!(first > 1000 + VIDEO_WAIT_MS, "audio from {first} ms");
        assert!(
            audio_ms.len() < 3 * 44_100 / 1024,
            "{} frames",
            audio_ms.len()
        );
    }

    #[test]
    fn frames_before_the_first_config_are_dropped() {
        let frames = [video(1, 100), video(2, 100), video(30, 100), video(31, 100)];
        let (items, errors) = demux_in(&mux(&frames, 100), 1316, MAX_PES);
        assert_eq!(errors, []);
        assert!(matches!(items[0], Demuxed::VideoConfig(_)));
        assert_eq!(split_kinds(&items).0, frames[2..]);
    }

    /// What ffprobe says of the packets of one stream of a file: (pts, dts) in 90 kHz
    /// ticks.
    fn probe_packets(path: &std::path::Path, stream: &str) -> Vec<(u64, u64)> {
        let out = run(std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", stream])
            .args(["-show_entries", "packet=pts,dts", "-of", "csv=p=0"])
            .arg(path));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut v = l
                    .split(',')
                    .map(|n| n.trim().parse::<u64>().expect("ticks"));
                let pts = v.next().expect("pts");
                (pts, v.next().unwrap_or(pts))
            })
            .collect()
    }

    /// The proof against a real encoder: ffmpeg's MPEG-TS (x264 with B-frames, AAC
    /// several frames per PES), in the 1316-byte pieces SRT carries, through the
    /// demuxer and the segmenter, gives every frame at ffprobe's timestamps and
    /// segments ffprobe reads as H.264 320x240 and AAC.
    #[test]
    fn demuxes_what_ffmpeg_writes() {
        use crate::media::segmenter::{Limits, Segmenter};
        use std::process::Command;
        use std::time::Duration;
        let have = |tool: &str| Command::new(tool).arg("-version").output().is_ok();
        if !have("ffmpeg") || !have("ffprobe") {
            eprintln!("skipped: ffmpeg or ffprobe not on PATH");
            return;
        }
        let dir = std::env::temp_dir().join(format!("shoal-demux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.ts");
        run(Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
            .args(["-f", "lavfi", "-i", "sine", "-t", "5"])
            .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "30"])
            .args(["-c:a", "aac", "-f", "mpegts"])
            .arg(&path));
        let ts = std::fs::read(&path).unwrap();

        let mut d = TsDemuxer::new(4 << 20);
        let mut s = Segmenter::new(Limits {
            target: Duration::from_secs(1),
            max_bytes: 16 << 20,
            max_duration: Duration::from_secs(10),
            format: Default::default(),
        });
        let (mut segments, mut video, mut audio) = (vec![], vec![], vec![]);
        let mut feed = |(items, errors): (Vec<Demuxed>, Vec<MediaError>)| {
            assert_eq!(errors, []);
            for item in items {
                match item {
                    Demuxed::VideoConfig(c) => s.set_video_config(c),
                    Demuxed::AudioConfig(c) => s.set_audio_config(c),
                    Demuxed::Frame(f) => {
                        match &f {
                            Frame::Video { dts_ms, pts_ms, .. } => video.push((*pts_ms, *dts_ms)),
                            Frame::Audio { pts_ms, .. } => audio.push(*pts_ms),
                        }
                        segments.extend(s.push(f).unwrap());
                    }
                }
            }
        };
        for piece in ts.chunks(1316) {
            feed(d.push(piece));
            assert!(d.buffered() < 1 << 20);
        }
        feed(d.finish());
        segments.extend(s.finish());
        assert_eq!(d.unsupported(), [] as [String; 0]);
        let config = s.video_config().unwrap();
        assert_eq!((config.width, config.height), (320, 240));
        assert_eq!(config.codec(), "avc1.64000d");
        assert_eq!(s.audio_config().unwrap().codec(), "mp4a.40.2");

        // Every packet ffprobe sees, at its timestamps.
        let want: Vec<(u64, u64)> = probe_packets(&path, "v")
            .into_iter()
            .map(|(pts, dts)| (pts / 90, dts / 90))
            .collect();
        assert_eq!(want.len(), 150);
        assert_eq!(video, want);
        let want: Vec<u64> = probe_packets(&path, "a")
            .into_iter()
            .map(|(pts, _)| pts / 90)
            .collect();
        assert!(want.len() > 200);
        // Frames after the first of a PES: ffmpeg adds 2090 ticks (1024 samples at 44.1
        // kHz, rounded) per frame, the demuxer the exact time; a millisecond apart at
        // most.
        let first_difference = audio
            .iter()
            .zip(&want)
            .position(|(a, b)| a.abs_diff(*b) > 1);
        assert_eq!(
            (audio.len(), first_difference),
            (want.len(), None),
            "audio {:?}, ffprobe {:?}",
            first_difference.map(|n| &audio[n.saturating_sub(2)..(n + 3).min(audio.len())]),
            first_difference.map(|n| &want[n.saturating_sub(2)..(n + 3).min(want.len())]),
        );

        assert_eq!(segments.len(), 5, "GOP of 30 at 30 fps for 5 s");
        let mut all = vec![];
        for (n, seg) in segments.iter().enumerate() {
            assert!(
                (967..=1034).contains(&seg.duration_ms),
                "segment {n}: {} ms",
                seg.duration_ms
            );
            let path = dir.join(format!("seg{n}.ts"));
            std::fs::write(&path, &seg.bytes).unwrap();
            all.extend_from_slice(&seg.bytes);
            let out = run(Command::new("ffprobe")
                .args(["-v", "error", "-show_entries"])
                .args(["stream=codec_name,width,height", "-of", "json"])
                .arg(&path));
            assert!(
                out.stderr.is_empty(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let streams = probe["streams"].as_array().unwrap();
            assert_eq!(streams.len(), 2, "segment {n}: {probe}");
            let h264 = streams.iter().find(|s| s["codec_name"] == "h264").unwrap();
            assert_eq!(
                (&h264["width"], &h264["height"]),
                (&320.into(), &240.into())
            );
            assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{probe}");
        }
        // The segments in a row decode without an error, all 150 frames.
        let path = dir.join("all.ts");
        std::fs::write(&path, &all).unwrap();
        assert_decodes_cleanly(&path);
        assert_eq!(probe_packets(&path, "v").len(), 150);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
