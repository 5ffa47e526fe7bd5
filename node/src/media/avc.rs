//! H.264 as RTMP carries it: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15
//! 5.3.3.1) and access units of length-prefixed NAL units (AVCC), rewritten into the
//! start-code form (Annex B) MPEG-TS carries.

use super::{MediaError, sps};
use bytes::Bytes;

/// NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
const NAL_AUD: u8 = 9;
/// NAL unit types dropped from access units: delimiter (one of ours is written first),
/// end of sequence, end of stream (both would end a stream in the middle of a playlist)
/// and filler data.
const NAL_DROPPED: [u8; 4] = [NAL_AUD, 10, 11, 12];

/// A 4-byte Annex B start code.
const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// An access unit delimiter NAL (primary_pic_type 7: any slice type) with its start code.
const AUD: [u8; 6] = [0, 0, 0, 1, NAL_AUD, 0xF0];

/// What an H.264 decoder needs before the first frame, from the encoder's
/// AVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// `AVCProfileIndication` (66 baseline, 77 main, 100 high...).
    pub profile: u8,
    /// `profile_compatibility`: the constraint flags.
    pub compatibility: u8,
    /// `AVCLevelIndication` (level times 10).
    pub level: u8,
    /// Bytes in each NAL unit's length prefix: 1, 2 or 4.
    pub nal_length_size: u8,
    /// Sequence parameter set NAL units (at least one).
    pub sps: Vec<Bytes>,
    /// Picture parameter set NAL units.
    pub pps: Vec<Bytes>,
    /// Picture width in pixels from the first SPS, after cropping (0 if unreadable).
    pub width: u32,
    /// Picture height in pixels from the first SPS, after cropping (0 if unreadable).
    pub height: u32,
}

/// Reads an AVCDecoderConfigurationRecord. A malformed record is an error; an SPS whose
/// picture size cannot be read only leaves `width` and `height` at 0.
pub fn parse_config(record: &[u8]) -> Result<AvcConfig, MediaError> {
    let [
        version,
        profile,
        compatibility,
        level,
        length_size,
        sps_count,
        rest @ ..,
    ] = record
    else {
        return Err(MediaError::Truncated("AVC decoder configuration record"));
    };
    if *version != 1 {
        return Err(MediaError::Invalid("AVC configuration version"));
    }
    let nal_length_size = (length_size & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(MediaError::Invalid("AVC NAL length size"));
    }
    let mut rest = rest;
    let sps = parameter_sets(&mut rest, usize::from(sps_count & 0x1F), NAL_SPS, "SPS")?;
    let Some((pps_count, tail)) = rest.split_first() else {
        return Err(MediaError::Truncated("AVC decoder configuration record"));
    };
    rest = tail;
    let pps = parameter_sets(&mut rest, usize::from(*pps_count), NAL_PPS, "PPS")?;
    // Anything after the PPS (the high-profile extension) is not needed.
    let first = sps
        .first()
        .ok_or(MediaError::Invalid("AVC config without an SPS"))?;
    let (width, height) = sps::picture_size(first).unwrap_or((0, 0));
    Ok(AvcConfig {
        profile: *profile,
        compatibility: *compatibility,
        level: *level,
        nal_length_size,
        sps,
        pps,
        width,
        height,
    })
}

/// Reads `count` parameter sets of NAL type `nal_type`, each with a 16-bit length, from
/// the front of `rest`.
fn parameter_sets(
    rest: &mut &[u8],
    count: usize,
    nal_type: u8,
    what: &'static str,
) -> Result<Vec<Bytes>, MediaError> {
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let [hi, lo, tail @ ..] = *rest else {
            return Err(MediaError::Truncated(what));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let (nal, tail) = tail
            .split_at_checked(len)
            .ok_or(MediaError::Truncated(what))?;
        match nal.first() {
            Some(header) if header & 0x1F == nal_type => {}
            _ => return Err(MediaError::Invalid(what)),
        }
        sets.push(Bytes::copy_from_slice(nal));
        *rest = tail;
    }
    Ok(sets)
}

/// Most sequence parameter sets an AVCDecoderConfigurationRecord holds (5-bit count).
const MAX_SPS: usize = 31;
/// Most picture parameter sets an AVCDecoderConfigurationRecord holds (8-bit count).
const MAX_PPS: usize = 255;

/// The config of parameter sets carried in the stream itself, as MPEG-TS carries them:
/// profile, constraint flags and level from bytes 1 to 3 of the first SPS, 4-byte NAL
/// lengths, the picture size as [`parse_config`] reads it. Errors if there is no SPS or
/// no PPS, a set is not of its NAL type, the first SPS is shorter than 4 bytes, or there
/// are more or longer sets than an AVCDecoderConfigurationRecord can hold.
pub fn from_parameter_sets(sps: Vec<Bytes>, pps: Vec<Bytes>) -> Result<AvcConfig, MediaError> {
    check_sets(&sps, NAL_SPS, MAX_SPS, "SPS")?;
    check_sets(&pps, NAL_PPS, MAX_PPS, "PPS")?;
    let first = sps
        .first()
        .ok_or(MediaError::Invalid("AVC config without an SPS"))?;
    if pps.is_empty() {
        return Err(MediaError::Invalid("AVC config without a PPS"));
    }
    let [_, profile, compatibility, level, ..] = first[..] else {
        return Err(MediaError::Truncated("SPS"));
    };
    let (width, height) = sps::picture_size(first).unwrap_or((0, 0));
    Ok(AvcConfig {
        profile,
        compatibility,
        level,
        nal_length_size: 4,
        sps,
        pps,
        width,
        height,
    })
}

/// Checks parameter sets for a config: at most `max`, each of NAL type `nal_type` and
/// short enough for a 16-bit length.
fn check_sets(
    sets: &[Bytes],
    nal_type: u8,
    max: usize,
    what: &'static str,
) -> Result<(), MediaError> {
    if sets.len() > max {
        return Err(MediaError::Invalid(what));
    }
    for set in sets {
        match set.first() {
            Some(header) if header & 0x1F == nal_type && set.len() <= usize::from(u16::MAX) => {}
            _ => return Err(MediaError::Invalid(what)),
        }
    }
    Ok(())
}

impl AvcConfig {
    /// The RFC 6381 codec string of an HLS `CODECS` attribute: `avc1.PPCCLL`.
    pub fn codec(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }
}

/// The NAL units of an AVCC access unit, each without its length prefix.
struct Nals<'a> {
    rest: &'a [u8],
    length_size: usize,
}

impl<'a> Iterator for Nals<'a> {
    type Item = Result<&'a [u8], MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((prefix, tail)) = self.rest.split_at_checked(self.length_size) else {
            self.rest = &[];
            return Some(Err(MediaError::Truncated("NAL unit length")));
        };
        let len = prefix
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let Some((nal, tail)) = tail.split_at_checked(len) else {
            self.rest = &[];
            return Some(Err(MediaError::Truncated("NAL unit")));
        };
        self.rest = tail;
        Some(Ok(nal))
    }
}

/// Whether a NAL unit is written to the Annex B output: not a type this module drops,
/// and more than a header byte.
fn kept(nal: &[u8]) -> bool {
    match nal {
        [header, _, ..] => !NAL_DROPPED.contains(&(header & 0x1F)),
        _ => false,
    }
}

/// Appends the access unit in Annex B form: an AUD NAL (00 00 00 01 09 F0) first, then
/// (when keyframe and the AU itself has no SPS NAL) every SPS and PPS, then each NAL with
/// a 4-byte start code. Errors if a NAL length runs past the end, or the config's NAL
/// length size is not 1, 2 or 4; nothing is appended then. Delimiters, end-of-sequence,
/// end-of-stream, filler and empty NAL units of the input are left out, so the output is
/// at most twice the input plus the parameter sets and the delimiter.
pub fn to_annex_b(
    avcc: &[u8],
    config: &AvcConfig,
    keyframe: bool,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    if !matches!(config.nal_length_size, 1 | 2 | 4) {
        return Err(MediaError::Invalid("AVC NAL length size"));
    }
    let nals = || Nals {
        rest: avcc,
        length_size: usize::from(config.nal_length_size),
    };
    let mut has_sps = false;
    let mut size = AUD.len();
    for nal in nals() {
        let nal = nal?;
        has_sps |= nal.first().is_some_and(|h| h & 0x1F == NAL_SPS);
        if kept(nal) {
            size += START_CODE.len() + nal.len();
        }
    }
    let with_sets = keyframe && !has_sps;
    if with_sets {
        size += config
            .sps
            .iter()
            .chain(&config.pps)
            .map(|s| START_CODE.len() + s.len())
            .sum::<usize>();
    }
    out.reserve(size);
    out.extend_from_slice(&AUD);
    if with_sets {
        for set in config.sps.iter().chain(&config.pps) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(set);
        }
    }
    for nal in nals().flatten().filter(|n| kept(n)) {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// x264 (`ffmpeg -f lavfi -i testsrc=size=1280x720:rate=30 -pix_fmt yuv420p -c:v
    /// libx264`): High profile, level 3.1.
    pub(crate) const SPS_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];
    /// The PPS of the same encode.
    pub(crate) const PPS_720P: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
    /// x264 at 1920x1080, High, level 4.0: 1088 coded lines, 8 cropped.
    const SPS_1080P: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00,
        0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
    ];
    /// x264 at 1280x720 from RGB input, High 4:4:4 Predictive (profile 244, chroma
    /// format 3).
    const SPS_720P_444: &[u8] = &[
        0x67, 0xf4, 0x00, 0x1f, 0x91, 0x9b, 0x28, 0x0a, 0x00, 0xb7, 0x60, 0x22, 0x00, 0x00, 0x03,
        0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x78, 0x1e, 0x30, 0x63, 0x2c,
    ];
    /// x264 at 640x360, constrained baseline: 368 coded lines, 8 cropped.
    const SPS_360P_BASELINE: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
    ];
    const PPS_360P_BASELINE: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    /// An AVCDecoderConfigurationRecord with one SPS and one PPS, 4-byte NAL lengths.
    pub(crate) fn record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(pps);
        r
    }

    #[test]
    fn reads_a_720p_high_profile_record() {
        let c = parse_config(&record(SPS_720P, PPS_720P)).unwrap();
        assert_eq!((c.width, c.height), (1280, 720));
        assert_eq!((c.profile, c.level, c.nal_length_size), (100, 31, 4));
        assert_eq!(c.codec(), "avc1.64001f");
        assert_eq!(c.sps, [SPS_720P]);
        assert_eq!(c.pps, [PPS_720P]);
    }

    #[test]
    fn crops_1088_coded_lines_to_1080() {
        let c = parse_config(&record(SPS_1080P, PPS_720P)).unwrap();
        assert_eq!((c.width, c.height), (1920, 1080));
        assert_eq!(c.codec(), "avc1.640028");
    }

    #[test]
    fn reads_other_profiles() {
        let c = parse_config(&record(SPS_720P_444, PPS_720P)).unwrap();
        assert_eq!((c.width, c.height, c.profile), (1280, 720, 244));
        let c = parse_config(&record(SPS_360P_BASELINE, PPS_360P_BASELINE)).unwrap();
        assert_eq!((c.width, c.height), (640, 360));
        assert_eq!(c.codec(), "avc1.42c01e");
    }

    #[test]
    fn an_unreadable_sps_leaves_the_size_at_zero() {
        let c = parse_config(&record(&SPS_720P[..8], PPS_720P)).unwrap();
        assert_eq!((c.width, c.height), (0, 0));
    }

    #[test]
    fn malformed_records_are_errors() {
        let good = record(SPS_720P, PPS_720P);
        for cut in 0..good.len() {
            assert!(parse_config(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(
            parse_config(&bad),
            Err(MediaError::Invalid("AVC configuration version"))
        );
        let mut bad = good.clone();
        bad[5] = 0xE0;
        assert!(parse_config(&bad).is_err(), "no SPS");
        let mut bad = good.clone();
        bad[8] = 0x68;
        assert_eq!(parse_config(&bad), Err(MediaError::Invalid("SPS")));
        let mut bad = good;
        bad[4] = 0xFE;
        assert_eq!(
            parse_config(&bad),
            Err(MediaError::Invalid("AVC NAL length size"))
        );
    }

    #[test]
    fn builds_a_config_from_parameter_sets() {
        let sets = |s: &[&[u8]]| s.iter().map(|n| Bytes::copy_from_slice(n)).collect();
        let c = from_parameter_sets(sets(&[SPS_720P]), sets(&[PPS_720P])).unwrap();
        assert_eq!(c, parse_config(&record(SPS_720P, PPS_720P)).unwrap());
        let c = from_parameter_sets(sets(&[SPS_360P_BASELINE]), sets(&[PPS_360P_BASELINE]));
        assert_eq!(c.unwrap().codec(), "avc1.42c01e");
        // An SPS too short for its profile and level; one whose size cannot be read.
        assert_eq!(
            from_parameter_sets(sets(&[&SPS_720P[..3]]), sets(&[PPS_720P])),
            Err(MediaError::Truncated("SPS"))
        );
        let c = from_parameter_sets(sets(&[&SPS_720P[..6]]), sets(&[PPS_720P])).unwrap();
        assert_eq!((c.width, c.height, c.level), (0, 0, 31));
        // Missing, swapped, empty or too many sets.
        assert!(from_parameter_sets(vec![], sets(&[PPS_720P])).is_err());
        assert!(from_parameter_sets(sets(&[SPS_720P]), vec![]).is_err());
        assert!(from_parameter_sets(sets(&[PPS_720P]), sets(&[SPS_720P])).is_err());
        assert!(from_parameter_sets(sets(&[SPS_720P]), sets(&[&[]])).is_err());
        assert!(from_parameter_sets(sets(&[SPS_720P; 32]), sets(&[PPS_720P])).is_err());
        let long = Bytes::from([PPS_720P, &[0u8; 65_536]].concat());
        assert!(from_parameter_sets(sets(&[SPS_720P]), vec![long]).is_err());
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![];
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn writes_annex_b_with_parameter_sets_on_keyframes() {
        let config = parse_config(&record(SPS_720P, PPS_720P)).unwrap();
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00];
        let sei: &[u8] = &[0x06, 0x05, 0x01];
        let mut out = vec![];
        to_annex_b(&avcc(&[&[0x09, 0x10], sei, idr]), &config, true, &mut out).unwrap();
        let mut want = AUD.to_vec();
        for nal in [SPS_720P, PPS_720P, sei, idr] {
            want.extend_from_slice(&START_CODE);
            want.extend_from_slice(nal);
        }
        assert_eq!(out, want);

        // An inter frame: no parameter sets.
        let slice: &[u8] = &[0x41, 0x9a, 0x02];
        let mut out = vec![];
        to_annex_b(&avcc(&[slice]), &config, false, &mut out).unwrap();
        assert_eq!(out, [&AUD[..], &START_CODE, slice].concat());

        // A keyframe carrying its own SPS: not added again.
        let mut out = vec![];
        to_annex_b(&avcc(&[SPS_1080P, idr]), &config, true, &mut out).unwrap();
        assert_eq!(
            out,
            [&AUD[..], &START_CODE, SPS_1080P, &START_CODE, idr].concat()
        );
    }

    #[test]
    fn short_nal_lengths_and_bad_input() {
        let mut config = parse_config(&record(SPS_720P, PPS_720P)).unwrap();
        config.nal_length_size = 2;
        let mut out = vec![];
        to_annex_b(&[0, 2, 0x41, 0x9a], &config, false, &mut out).unwrap();
        assert_eq!(out, [&AUD[..], &START_CODE, &[0x41, 0x9a]].concat());

        let mut out = vec![1, 2, 3];
        assert_eq!(
            to_annex_b(&[0, 9, 0x41, 0x9a], &config, false, &mut out),
            Err(MediaError::Truncated("NAL unit"))
        );
        assert_eq!(
            to_annex_b(&[0, 2, 0x41, 0x9a, 0], &config, false, &mut out),
            Err(MediaError::Truncated("NAL unit length"))
        );
        assert_eq!(out, [1, 2, 3], "nothing appended on error");
        config.nal_length_size = 3;
        assert!(to_annex_b(&[0, 0, 2, 0x41, 0x9a], &config, false, &mut out).is_err());
    }
}
