//! An MPEG-TS muxer (ISO/IEC 13818-1) for HLS: one program with an H.264 stream, an
//! ADTS AAC stream or both; PAT and PMT on request, then each access unit or group of
//! ADTS frames as one PES split over 188-byte transport packets.

/// PID of the H.264 elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the ADTS AAC elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// Bytes in a transport packet.
pub const PACKET_LEN: usize = 188;

/// PID of the program association table.
const PAT_PID: u16 = 0;
/// PID meaning "none" (the PCR PID of a program without streams).
const NULL_PID: u16 = 0x1FFF;
/// The one program's number.
const PROGRAM: u16 = 1;
/// PMT stream type of H.264.
const STREAM_TYPE_H264: u8 = 0x1B;
/// PMT stream type of AAC with ADTS framing.
const STREAM_TYPE_ADTS: u8 = 0x0F;
/// PES stream id of the first video stream.
const STREAM_ID_VIDEO: u8 = 0xE0;
/// PES stream id of the first audio stream.
const STREAM_ID_AUDIO: u8 = 0xC0;
/// Bytes after the 4-byte transport packet header.
const PAYLOAD_LEN: usize = PACKET_LEN - 4;
/// PTS, DTS and PCR bases count 90 kHz ticks in 33 bits.
const TS_MASK: u64 = (1 << 33) - 1;

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, initial value 0xFFFFFFFF, not reflected, no
/// final xor), as PSI sections end with.
pub fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

/// [`crc32`] a byte at a time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Muxes one program into transport packets. Continuity counters are kept per PID for
/// the muxer's life, so consecutive segments of one muxer play as one stream.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    video: bool,
    audio: bool,
    /// Continuity counters of PAT, PMT, video and audio.
    counters: [u8; 4],
}

impl TsMuxer {
    /// A muxer for a program with an H.264 stream (`video`), an AAC stream (`audio`) or
    /// both.
    pub fn new(video: bool, audio: bool) -> Self {
        Self {
            video,
            audio,
            counters: [0; 4],
        }
    }

    /// The PID whose packets carry the program clock.
    fn pcr_pid(&self) -> u16 {
        match (self.video, self.audio) {
            (true, _) => VIDEO_PID,
            (false, true) => AUDIO_PID,
            (false, false) => NULL_PID,
        }
    }

    /// The next continuity counter of `pid`.
    fn next_counter(&mut self, pid: u16) -> u8 {
        let slot = match pid {
            PAT_PID => 0,
            PMT_PID => 1,
            VIDEO_PID => 2,
            _ => 3,
        };
        let cc = self.counters[slot];
        self.counters[slot] = (cc + 1) & 0x0F;
        cc
    }

    /// PAT and PMT (PMT lists H.264 stream type 0x1B on VIDEO_PID if video, ADTS AAC 0x0F
    /// on AUDIO_PID if audio; PCR_PID = video pid if video else audio pid). Correct CRC32
    /// (MPEG-2 CRC, poly 0x04C11DB7, init 0xFFFFFFFF, no reflection).
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        // table_id 0, then: transport_stream_id 1, version 0 (current), section 0 of 0,
        // and the one program's PMT PID.
        let mut pat = vec![0x00, 0, 0, 0x00, 0x01, 0xC1, 0x00, 0x00];
        pat.extend_from_slice(&PROGRAM.to_be_bytes());
        pat.extend_from_slice(&(0xE000 | PMT_PID).to_be_bytes());
        self.write_section(PAT_PID, pat, out);

        let [program_hi, program_lo] = PROGRAM.to_be_bytes();
        let mut pmt = vec![0x02, 0, 0, program_hi, program_lo, 0xC1, 0x00, 0x00];
        pmt.extend_from_slice(&(0xE000 | self.pcr_pid()).to_be_bytes());
        // No program descriptors.
        pmt.extend_from_slice(&[0xF0, 0x00]);
        let streams = [
            (self.video, STREAM_TYPE_H264, VIDEO_PID),
            (self.audio, STREAM_TYPE_ADTS, AUDIO_PID),
        ];
        for (_, stream_type, pid) in streams.into_iter().filter(|s| s.0) {
            pmt.push(stream_type);
            pmt.extend_from_slice(&(0xE000 | pid).to_be_bytes());
            pmt.extend_from_slice(&[0xF0, 0x00]);
        }
        self.write_section(PMT_PID, pmt, out);
    }

    /// Writes a PSI section (its first three bytes to be filled in) with its length and
    /// CRC in one packet.
    fn write_section(&mut self, pid: u16, mut section: Vec<u8>, out: &mut Vec<u8>) {
        // Everything after the length field, CRC included; a few bytes for these tables.
        let len = (section.len() - 3 + 4) as u16;
        section[1] = 0xB0 | (len >> 8) as u8;
        section[2] = len as u8;
        let crc = crc32(&section);
        section.extend_from_slice(&crc.to_be_bytes());
        let mut packet = [0xFF; PACKET_LEN];
        let cc = self.next_counter(pid);
        packet[..5].copy_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | cc, 0]);
        packet[5..5 + section.len()].copy_from_slice(&section);
        out.extend_from_slice(&packet);
    }

    /// One video access unit (Annex B). PES stream id 0xE0, PES packet length 0
    /// (unbounded) for video, PTS and DTS (both written when they differ, else PTS only),
    /// 90 kHz, 33-bit wrapped. The first packet has payload_unit_start, and an adaptation
    /// field with a PCR (= dts) when this is the PCR PID and (random_access_indicator set
    /// when keyframe). Stuff the last packet with adaptation-field padding so the PES ends
    /// exactly at a packet boundary.
    pub fn write_video(
        &mut self,
        pts_90k: u64,
        dts_90k: u64,
        keyframe: bool,
        annex_b: &[u8],
        out: &mut Vec<u8>,
    ) {
        let (pts, dts) = (pts_90k & TS_MASK, dts_90k & TS_MASK);
        // Data alignment: the payload starts with an access unit delimiter.
        let mut header = vec![0, 0, 1, STREAM_ID_VIDEO, 0, 0, 0x84];
        if pts == dts {
            header.extend_from_slice(&[0x80, 5]);
            header.extend_from_slice(&timestamp(0b0010, pts));
        } else {
            header.extend_from_slice(&[0xC0, 10]);
            header.extend_from_slice(&timestamp(0b0011, pts));
            header.extend_from_slice(&timestamp(0b0001, dts));
        }
        let pcr = (self.pcr_pid() == VIDEO_PID).then_some(dts);
        self.write_pes(VIDEO_PID, &header, annex_b, pcr, keyframe, out);
    }

    /// One or more ADTS frames as one PES (stream id 0xC0, PTS only, packet length set if
    /// it fits in 16 bits else 0); PCR in the first packet if audio is the PCR PID.
    pub fn write_audio(&mut self, pts_90k: u64, adts: &[u8], out: &mut Vec<u8>) {
        let pts = pts_90k & TS_MASK;
        // Flags, header length and PTS follow the length field.
        let len = u16::try_from(3 + 5 + adts.len()).unwrap_or(0);
        let [len_hi, len_lo] = len.to_be_bytes();
        let mut header = vec![0, 0, 1, STREAM_ID_AUDIO, len_hi, len_lo, 0x84, 0x80, 5];
        header.extend_from_slice(&timestamp(0b0010, pts));
        let pcr = (self.pcr_pid() == AUDIO_PID).then_some(pts);
        self.write_pes(AUDIO_PID, &header, adts, pcr, false, out);
    }

    /// Splits a PES (`header` then `payload`) over transport packets of `pid`. The first
    /// packet starts the unit and carries `pcr` and the random access indicator in an
    /// adaptation field; the last is padded with adaptation-field stuffing.
    fn write_pes(
        &mut self,
        pid: u16,
        header: &[u8],
        payload: &[u8],
        pcr: Option<u64>,
        random_access: bool,
        out: &mut Vec<u8>,
    ) {
        let total = header.len() + payload.len();
        out.reserve(total.div_ceil(PAYLOAD_LEN) * PACKET_LEN);
        let mut written = 0;
        loop {
            let first = written == 0;
            let mut packet = [0xFF; PACKET_LEN];
            // Adaptation field flags and PCR of the first packet.
            let mut fields = [0u8; 7];
            let mut fields_len = 0;
            if first && (pcr.is_some() || random_access) {
                fields[0] = if random_access { 0x40 } else { 0 };
                fields_len = 1;
                if let Some(pcr) = pcr {
                    fields[0] |= 0x10;
                    fields[1..7].copy_from_slice(&pcr_field(pcr));
                    fields_len = 7;
                }
            }
            let min_field = if fields_len > 0 { 1 + fields_len } else { 0 };
            let take = (total - written).min(PAYLOAD_LEN - min_field);
            // The adaptation field fills what the payload leaves: its length byte, the
            // flags (zero if only stuffing), fields, then stuffing 0xFF.
            let field = PAYLOAD_LEN - take;
            let cc = self.next_counter(pid);
            let control = if field > 0 { 0x30 } else { 0x10 };
            let start = if first { 0x40 } else { 0 };
            packet[..4].copy_from_slice(&[0x47, start | (pid >> 8) as u8, pid as u8, control | cc]);
            if field > 0 {
                packet[4] = (field - 1) as u8;
                if field > 1 {
                    packet[5] = 0;
                    packet[5..5 + fields_len].copy_from_slice(&fields[..fields_len]);
                }
            }
            let body = &mut packet[4 + field..];
            copy_from_chain(header, payload, written, body);
            out.extend_from_slice(&packet);
            written += take;
            if written >= total {
                break;
            }
        }
    }
}

/// Fills `into` with the bytes of `a` then `b` from offset `at`.
fn copy_from_chain(a: &[u8], b: &[u8], at: usize, into: &mut [u8]) {
    let mut filled = 0;
    if let Some(rest) = a.get(at..) {
        let n = rest.len().min(into.len());
        into[..n].copy_from_slice(&rest[..n]);
        filled = n;
    }
    let from = (at + filled).saturating_sub(a.len());
    if let Some(rest) = b.get(from..) {
        let n = rest.len().min(into.len() - filled);
        into[filled..filled + n].copy_from_slice(&rest[..n]);
    }
}

/// A PTS or DTS field: a 4-bit prefix, then the 33-bit value in 3, 15 and 15 bits, each
/// followed by a marker bit.
fn timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 30) & 0x07) as u8) << 1 | 1,
        (ts >> 22) as u8,
        (((ts >> 15) & 0x7F) as u8) << 1 | 1,
        (ts >> 7) as u8,
        ((ts & 0x7F) as u8) << 1 | 1,
    ]
}

/// A PCR field: the 33-bit 90 kHz base, 6 reserved bits, a 9-bit extension of 0.
fn pcr_field(base: u64) -> [u8; 6] {
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        ((base & 1) as u8) << 7 | 0x7E,
        0,
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A transport packet, decoded.
    #[derive(Debug)]
    pub(crate) struct Packet<'a> {
        pub(crate) pid: u16,
        pub(crate) start: bool,
        pub(crate) cc: u8,
        pub(crate) adaptation: Option<&'a [u8]>,
        pub(crate) payload: &'a [u8],
    }

    /// Splits a transport stream into packets, checking sync bytes and sizes.
    pub(crate) fn packets(ts: &[u8]) -> Vec<Packet<'_>> {
        assert_eq!(ts.len() % PACKET_LEN, 0, "not whole packets");
        ts.chunks(PACKET_LEN)
            .map(|p| {
                assert_eq!(p[0], 0x47, "sync byte");
                let control = p[3] >> 4;
                let (adaptation, payload) = if control & 0x2 != 0 {
                    let len = usize::from(p[4]);
                    (Some(&p[5..5 + len]), &p[5 + len..])
                } else {
                    (None, &p[4..])
                };
                assert!(control & 0x1 != 0, "every packet has payload");
                Packet {
                    pid: u16::from_be_bytes([p[1] & 0x1F, p[2]]),
                    start: p[1] & 0x40 != 0,
                    cc: p[3] & 0x0F,
                    adaptation,
                    payload,
                }
            })
            .collect()
    }

    /// Checks continuity counters advance by one per PID.
    pub(crate) fn check_counters(packets: &[Packet<'_>]) {
        let mut last = std::collections::HashMap::new();
        for p in packets {
            if let Some(prev) = last.insert(p.pid, p.cc) {
                assert_eq!(p.cc, (prev + 1) % 16, "continuity of PID {:#x}", p.pid);
            }
        }
    }

    /// CRC-32/MPEG-2 a bit at a time, independent of the table.
    fn crc_bitwise(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            for i in (0..8).rev() {
                let bit = u32::from((b >> i) & 1);
                let top = crc >> 31;
                crc <<= 1;
                if top ^ bit == 1 {
                    crc ^= 0x04C1_1DB7;
                }
            }
        }
        crc
    }

    /// The section of a PSI packet, its CRC checked.
    fn section<'a>(p: &Packet<'a>) -> &'a [u8] {
        assert!(p.start);
        assert_eq!(p.payload[0], 0, "pointer field");
        let s = &p.payload[1..];
        let len = usize::from(u16::from_be_bytes([s[1] & 0x0F, s[2]]));
        let s = &s[..3 + len];
        let (body, crc) = s.split_at(s.len() - 4);
        assert_eq!(crc_bitwise(body).to_be_bytes(), crc, "section CRC");
        assert_eq!(crc32(body), crc_bitwise(body));
        assert_eq!(crc32(s), 0, "a section with its CRC sums to zero");
        s
    }

    fn decode_ts(b: &[u8]) -> u64 {
        assert_eq!(b[0] & 1, 1);
        assert_eq!(b[2] & 1, 1);
        assert_eq!(b[4] & 1, 1);
        (u64::from(b[0] >> 1) & 7) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1)
    }

    /// PTS, DTS (if any) and payload of each PES on `pid`.
    pub(crate) fn pes_units(packets: &[Packet<'_>], pid: u16) -> Vec<(u64, Option<u64>, Vec<u8>)> {
        let mut units: Vec<Vec<u8>> = vec![];
        for p in packets.iter().filter(|p| p.pid == pid) {
            if p.start {
                units.push(vec![]);
            }
            units
                .last_mut()
                .expect("starts with a unit")
                .extend_from_slice(p.payload);
        }
        units
            .into_iter()
            .map(|u| {
                assert_eq!(&u[..3], [0, 0, 1], "PES start code");
                let declared = usize::from(u16::from_be_bytes([u[4], u[5]]));
                if declared != 0 {
                    assert_eq!(declared, u.len() - 6, "PES packet length");
                }
                let header_len = usize::from(u[8]);
                let pts = decode_ts(&u[9..14]);
                let dts = match u[7] >> 6 {
                    0b10 => {
                        assert_eq!(u[9] >> 4, 0b0010);
                        None
                    }
                    0b11 => {
                        assert_eq!(u[9] >> 4, 0b0011);
                        assert_eq!(u[14] >> 4, 0b0001);
                        Some(decode_ts(&u[14..19]))
                    }
                    other => panic!("PTS_DTS_flags {other:#b}"),
                };
                (pts, dts, u[9 + header_len..].to_vec())
            })
            .collect()
    }

    fn pcr_of(adaptation: &[u8]) -> Option<u64> {
        (adaptation.first()? & 0x10 != 0).then(|| {
            let b = &adaptation[1..7];
            u64::from(b[0]) << 25
                | u64::from(b[1]) << 17
                | u64::from(b[2]) << 9
                | u64::from(b[3]) << 1
                | u64::from(b[4] >> 7)
        })
    }

    #[test]
    fn tables_have_valid_crcs_and_list_the_streams() {
        for (video, audio, pcr_pid, streams) in [
            (
                true,
                true,
                VIDEO_PID,
                vec![(0x1B, VIDEO_PID), (0x0F, AUDIO_PID)],
            ),
            (true, false, VIDEO_PID, vec![(0x1B, VIDEO_PID)]),
            (false, true, AUDIO_PID, vec![(0x0F, AUDIO_PID)]),
        ] {
            let mut m = TsMuxer::new(video, audio);
            let mut out = vec![];
            m.write_tables(&mut out);
            let p = packets(&out);
            assert_eq!((p.len(), p[0].pid, p[1].pid), (2, 0, PMT_PID));
            let pat = section(&p[0]);
            assert_eq!(pat[0], 0x00);
            assert_eq!(
                &pat[8..12],
                [0x00, 0x01, 0xF0, 0x00],
                "program 1 on PID 0x1000"
            );
            let pmt = section(&p[1]);
            assert_eq!(pmt[0], 0x02);
            assert_eq!(u16::from_be_bytes([pmt[8] & 0x1F, pmt[9]]), pcr_pid);
            let listed: Vec<(u8, u16)> = pmt[12..pmt.len() - 4]
                .chunks(5)
                .map(|e| (e[0], u16::from_be_bytes([e[1] & 0x1F, e[2]])))
                .collect();
            assert_eq!(listed, streams);
        }
    }

    #[test]
    fn every_size_of_access_unit_round_trips() {
        let mut m = TsMuxer::new(true, true);
        let mut out = vec![];
        let mut sent = vec![];
        m.write_tables(&mut out);
        for size in 0..=800usize {
            let au: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            let (pts, dts) = (size as u64 * 3000 + 6000, size as u64 * 3000);
            let keyframe = size.is_multiple_of(30);
            m.write_video(
                pts,
                if size.is_multiple_of(2) { pts } else { dts },
                keyframe,
                &au,
                &mut out,
            );
            sent.push((pts, (size % 2 == 1).then_some(dts), au));
            if size.is_multiple_of(100) {
                m.write_tables(&mut out);
            }
        }
        let p = packets(&out);
        check_counters(&p);
        assert_eq!(pes_units(&p, VIDEO_PID), sent);
        // The first packet of each unit carries the PCR (the DTS), and the random access
        // indicator on keyframes.
        let starts: Vec<&Packet<'_>> = p.iter().filter(|p| p.pid == VIDEO_PID && p.start).collect();
        for (s, (pts, dts, au)) in starts.iter().zip(&sent) {
            let a = s.adaptation.expect("PCR");
            assert_eq!(pcr_of(a), Some(dts.unwrap_or(*pts)));
            assert_eq!(a[0] & 0x40 != 0, au.len().is_multiple_of(30));
        }
    }

    #[test]
    fn audio_pes_has_pts_and_length() {
        let mut m = TsMuxer::new(false, true);
        let mut out = vec![];
        m.write_audio(1234, &[0xAA; 300], &mut out);
        m.write_audio(5678, &[0xBB; 70_000], &mut out);
        let p = packets(&out);
        check_counters(&p);
        let units = pes_units(&p, AUDIO_PID);
        assert_eq!(units[0], (1234, None, vec![0xAA; 300]));
        assert_eq!(units[1], (5678, None, vec![0xBB; 70_000]));
        // Audio-only: audio carries the PCR.
        assert_eq!(pcr_of(p[0].adaptation.expect("PCR")), Some(1234));
        // With video, audio carries none.
        let mut m = TsMuxer::new(true, true);
        let mut out = vec![];
        m.write_audio(1234, &[0xAA; 300], &mut out);
        assert!(packets(&out)[0].adaptation.is_none());
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        let mut m = TsMuxer::new(true, false);
        let mut out = vec![];
        let big = (1u64 << 33) + 77;
        m.write_video(big + 3000, big, false, &[1, 2, 3], &mut out);
        m.write_video(u64::MAX, u64::MAX, false, &[], &mut out);
        let units = pes_units(&packets(&out), VIDEO_PID);
        assert_eq!((units[0].0, units[0].1), (3077, Some(77)));
        assert_eq!((units[1].0, units[1].1), (TS_MASK, None));
    }
}
