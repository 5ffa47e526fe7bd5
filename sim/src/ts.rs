//! Just enough MPEG-TS to loop a clip as one continuous live stream: shift every PCR,
//! PTS and DTS by an offset, and keep continuity counters counting across the loop, so
//! players see no jump back in time and no lost packets.

use std::collections::HashMap;

/// MPEG-TS packet size.
pub const PACKET: usize = 188;
/// PTS/DTS/PCR base are 33-bit counters of a 90 kHz clock.
const WRAP: u64 = 1 << 33;

fn read_ts(b: &[u8]) -> u64 {
    (((b[0] as u64 >> 1) & 0x07) << 30)
        | ((b[1] as u64) << 22)
        | (((b[2] as u64) >> 1) << 15)
        | ((b[3] as u64) << 7)
        | ((b[4] as u64) >> 1)
}

fn write_ts(b: &mut [u8], ts: u64) {
    let prefix = b[0] & 0xf0;
    b[0] = prefix | (((ts >> 29) as u8) & 0x0e) | 1;
    b[1] = (ts >> 22) as u8;
    b[2] = (((ts >> 14) as u8) & 0xfe) | 1;
    b[3] = (ts >> 7) as u8;
    b[4] = (((ts << 1) as u8) & 0xfe) | 1;
}

/// Where a packet's PCR, PTS and DTS are, as byte offsets into the packet.
#[derive(Debug, Default, PartialEq)]
struct Fields {
    pcr: Option<usize>,
    pts: Option<usize>,
    dts: Option<usize>,
}

fn fields(p: &[u8]) -> Fields {
    let mut f = Fields::default();
    let afc = (p[3] >> 4) & 0x03;
    let mut payload = 4;
    if afc & 0x02 != 0 {
        let len = p[4] as usize;
        if len > 0 && p[5] & 0x10 != 0 && len >= 7 {
            f.pcr = Some(6);
        }
        payload = 5 + len;
    }
    let start = p[1] & 0x40 != 0;
    if afc & 0x01 != 0 && start && payload + 19 <= PACKET && p[payload..payload + 3] == [0, 0, 1] {
        let stream_id = p[payload + 3];
        // Streams without the optional PES header (padding, private 2, ECM, ...).
        let header = !matches!(
            stream_id,
            0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff
        );
        if header {
            let flags = p[payload + 7] >> 6;
            if flags & 0x02 != 0 {
                f.pts = Some(payload + 9);
            }
            if flags == 0x03 {
                f.dts = Some(payload + 14);
            }
        }
    }
    f
}

/// The span of presentation/decoding timestamps in `data`: (min, max), in 90 kHz ticks.
pub fn timestamp_span(data: &[u8]) -> Option<(u64, u64)> {
    let mut span: Option<(u64, u64)> = None;
    for p in data.chunks_exact(PACKET).filter(|p| p[0] == 0x47) {
        let f = fields(p);
        for at in [f.pts, f.dts].into_iter().flatten() {
            let ts = read_ts(&p[at..at + 5]);
            span = Some(span.map_or((ts, ts), |(lo, hi)| (lo.min(ts), hi.max(ts))));
        }
    }
    span
}

/// Shifts every PCR, PTS and DTS in `data` by `offset` ticks (mod 2^33) and rewrites
/// continuity counters to continue from `counters` (per PID), which it updates.
pub fn retime(data: &mut [u8], offset: u64, counters: &mut HashMap<u16, u8>) {
    for p in data.chunks_exact_mut(PACKET).filter(|p| p[0] == 0x47) {
        let f = fields(p);
        if let Some(at) = f.pcr {
            let b = &mut p[at..at + 6];
            let base = ((b[0] as u64) << 25)
                | ((b[1] as u64) << 17)
                | ((b[2] as u64) << 9)
                | ((b[3] as u64) << 1)
                | ((b[4] as u64) >> 7);
            let base = (base + offset) % WRAP;
            b[0] = (base >> 25) as u8;
            b[1] = (base >> 17) as u8;
            b[2] = (base >> 9) as u8;
            b[3] = (base >> 1) as u8;
            b[4] = (((base & 1) as u8) << 7) | (b[4] & 0x7f);
        }
        for at in [f.pts, f.dts].into_iter().flatten() {
            let ts = (read_ts(&p[at..at + 5]) + offset) % WRAP;
            write_ts(&mut p[at..at + 5], ts);
        }
        let pid = (((p[1] & 0x1f) as u16) << 8) | p[2] as u16;
        if pid == 0x1fff {
            continue; // null packets carry no counter
        }
        let has_payload = p[3] & 0x10 != 0;
        let cc = match counters.get(&pid) {
            Some(&prev) if has_payload => (prev + 1) & 0x0f,
            Some(&prev) => prev,
            None => p[3] & 0x0f,
        };
        p[3] = (p[3] & 0xf0) | cc;
        counters.insert(pid, cc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PES packet start on `pid` with PTS and DTS, and a PCR.
    fn packet(pid: u16, cc: u8, pts: u64, dts: u64, pcr: u64) -> Vec<u8> {
        let mut p = vec![0xffu8; PACKET];
        p[0] = 0x47;
        p[1] = 0x40 | (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = 0x30 | cc; // adaptation field + payload
        p[4] = 7; // adaptation field length
        p[5] = 0x10; // PCR flag
        p[6] = (pcr >> 25) as u8;
        p[7] = (pcr >> 17) as u8;
        p[8] = (pcr >> 9) as u8;
        p[9] = (pcr >> 1) as u8;
        p[10] = (((pcr & 1) as u8) << 7) | 0x7e;
        p[11] = 0;
        let pes = 12;
        p[pes..pes + 4].copy_from_slice(&[0, 0, 1, 0xe0]);
        p[pes + 6] = 0x80;
        p[pes + 7] = 0xc0; // PTS and DTS
        p[pes + 8] = 10;
        p[pes + 9] = 0x30;
        write_ts(&mut p[pes + 9..pes + 14], pts);
        p[pes + 14] = 0x10;
        write_ts(&mut p[pes + 14..pes + 19], dts);
        p
    }

    #[test]
    fn timestamps_round_trip() {
        let mut b = [0x20u8, 0, 0, 0, 0];
        for ts in [0, 1, 90_000, WRAP - 1, 0x1_2345_6789 % WRAP] {
            write_ts(&mut b, ts);
            assert_eq!(read_ts(&b), ts);
            assert_eq!(b[0] & 0xf0, 0x20, "prefix kept");
        }
    }

    #[test]
    fn shifts_pcr_pts_dts_and_continues_counters() {
        let mut data = packet(0x100, 14, 180_000, 171_000, 170_000);
        data.extend(packet(0x100, 15, 183_600, 174_600, 173_600));
        assert_eq!(timestamp_span(&data), Some((171_000, 183_600)));
        let mut counters = HashMap::new();
        let mut first = data.clone();
        retime(&mut first, 0, &mut counters);
        assert_eq!(first, data, "offset 0 and fresh counters change nothing");
        let mut second = data.clone();
        retime(&mut second, 1_000_000, &mut counters);
        assert_eq!(timestamp_span(&second), Some((1_171_000, 1_183_600)));
        let f = fields(&second[..PACKET]);
        let b = &second[f.pcr.unwrap()..];
        let pcr = ((b[0] as u64) << 25)
            | ((b[1] as u64) << 17)
            | ((b[2] as u64) << 9)
            | ((b[3] as u64) << 1)
            | ((b[4] as u64) >> 7);
        assert_eq!(pcr, 1_170_000);
        // Counters continue 14, 15 -> 0, 1.
        assert_eq!(second[3] & 0x0f, 0);
        assert_eq!(second[PACKET + 3] & 0x0f, 1);
    }

    #[test]
    fn wraps_at_33_bits() {
        let mut data = packet(0x101, 0, WRAP - 10, WRAP - 20, WRAP - 30);
        retime(&mut data, 100, &mut HashMap::new());
        assert_eq!(timestamp_span(&data), Some((80, 90)));
    }

    #[test]
    fn the_committed_clip_has_timestamps() {
        let (lo, hi) = timestamp_span(crate::clip::segments()[0].bytes).unwrap();
        assert!(hi > lo);
    }
}
