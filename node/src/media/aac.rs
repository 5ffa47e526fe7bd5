//! AAC as RTMP carries it: an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), then raw
//! frames; MPEG-TS carries each frame behind an ADTS header (ISO/IEC 14496-3 1.A.2),
//! which repeats the config.

use super::MediaError;
use super::bits::BitReader;

/// Sample rates by `samplingFrequencyIndex` (13 and 14 are reserved, 15 means explicit).
const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Longest ADTS frame, header included: its length field has 13 bits.
const MAX_ADTS_FRAME: usize = 0x1FFF;

/// Length of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;

/// What an AAC decoder needs, from the encoder's AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type: 1 Main, 2 LC, 3 SSR, 4 LTP (the ones ADTS can carry).
    pub object_type: u8,
    /// `samplingFrequencyIndex` (0..=12).
    pub frequency_index: u8,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channels: 1 to 6, or 8 (channel configuration 7).
    pub channels: u8,
}

/// Reads an AudioSpecificConfig: 5-bit object type (31 escapes to 32 + 6 bits), 4-bit
/// frequency index, 4-bit channel configuration. Configs ADTS cannot carry (object types
/// other than 1 to 4, an explicit sample rate, channels defined by a program config
/// element) are [`MediaError::Unsupported`].
pub fn parse_config(asc: &[u8]) -> Result<AacConfig, MediaError> {
    const WHAT: &str = "AAC AudioSpecificConfig";
    let mut r = BitReader::new(asc);
    let mut object_type = r.bits(5).ok_or(MediaError::Truncated(WHAT))?;
    if object_type == 31 {
        object_type = 32 + r.bits(6).ok_or(MediaError::Truncated(WHAT))?;
    }
    let frequency_index = r.bits(4).ok_or(MediaError::Truncated(WHAT))?;
    if frequency_index == 15 {
        return Err(MediaError::Unsupported(
            "AAC with an explicit sample rate (ADTS cannot carry it)".into(),
        ));
    }
    let channel_config = r.bits(4).ok_or(MediaError::Truncated(WHAT))?;
    config(object_type, frequency_index, channel_config)
}

/// The config of the fields an AudioSpecificConfig or an ADTS header holds, if ADTS can
/// carry it.
fn config(
    object_type: u32,
    frequency_index: u32,
    channel_config: u32,
) -> Result<AacConfig, MediaError> {
    if !(1..=4).contains(&object_type) {
        return Err(MediaError::Unsupported(format!(
            "AAC object type {object_type} ({}): ADTS carries only AAC Main, LC, SSR and LTP",
            object_type_name(object_type)
        )));
    }
    let sample_rate = usize::try_from(frequency_index)
        .ok()
        .and_then(|i| SAMPLE_RATES.get(i))
        .copied()
        .ok_or(MediaError::Invalid("AAC sampling frequency index"))?;
    let channels = match channel_config {
        0 => {
            return Err(MediaError::Unsupported(
                "AAC channels defined by a program config element".into(),
            ));
        }
        1..=6 => channel_config,
        7 => 8,
        _ => {
            return Err(MediaError::Unsupported(format!(
                "AAC channel configuration {channel_config} (ADTS carries 1 to 7)"
            )));
        }
    };
    Ok(AacConfig {
        object_type: object_type as u8,
        frequency_index: frequency_index as u8,
        sample_rate,
        channels: channels as u8,
    })
}

/// A name for an audio object type, for error messages.
fn object_type_name(object_type: u32) -> &'static str {
    match object_type {
        0 => "null",
        5 => "HE-AAC, SBR",
        6 => "AAC scalable",
        17 => "ER AAC LC",
        23 => "AAC LD",
        29 => "HE-AAC v2, PS",
        39 => "AAC ELD",
        42 => "USAC, xHE-AAC",
        _ => "not AAC Main, LC, SSR or LTP",
    }
}

impl AacConfig {
    /// The config an ADTS header states: its 2-bit `profile` (the object type minus 1),
    /// 4-bit sampling frequency index and 3-bit channel configuration. Errors as
    /// [`parse_config`] does: a reserved or explicit frequency index is invalid, channel
    /// configuration 0 (a program config element) unsupported.
    pub fn from_adts(
        profile: u8,
        frequency_index: u8,
        channel_config: u8,
    ) -> Result<AacConfig, MediaError> {
        config(
            u32::from(profile) + 1,
            frequency_index.into(),
            channel_config.into(),
        )
    }

    /// The RFC 6381 codec string of an HLS `CODECS` attribute: `mp4a.40.{object_type}`.
    pub fn codec(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The ADTS header (MPEG-4, no CRC) of a raw frame of `payload_len` bytes. Errors if
    /// the frame with its header is longer than ADTS can say (8191 bytes), or the config
    /// holds values ADTS cannot carry.
    pub fn adts_header(&self, payload_len: usize) -> Result<[u8; ADTS_HEADER_LEN], MediaError> {
        let frame_len = payload_len
            .checked_add(ADTS_HEADER_LEN)
            .filter(|&n| n <= MAX_ADTS_FRAME)
            .ok_or(MediaError::Invalid(
                "AAC frame length (longer than ADTS allows)",
            ))?;
        if !(1..=4).contains(&self.object_type) {
            return Err(MediaError::Unsupported(format!(
                "AAC object type {} in ADTS",
                self.object_type
            )));
        }
        if usize::from(self.frequency_index) >= SAMPLE_RATES.len() {
            return Err(MediaError::Invalid("AAC sampling frequency index"));
        }
        let channel_config = match self.channels {
            1..=6 => self.channels,
            8 => 7,
            n => {
                return Err(MediaError::Unsupported(format!("{n} AAC channels in ADTS")));
            }
        };
        let profile = self.object_type - 1;
        // Fits in 13 bits: checked above.
        let len = frame_len as u16;
        Ok([
            0xFF,
            // MPEG-4, layer 0, no CRC.
            0xF1,
            (profile << 6) | (self.frequency_index << 2) | (channel_config >> 2),
            ((channel_config & 0x03) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            // Low 3 bits of the length; buffer fullness 0x7FF (variable rate).
            (((len & 0x07) as u8) << 5) | 0x1F,
            // Buffer fullness; one raw data block.
            0xFC,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_aac_lc_44100_stereo() {
        let c = parse_config(&[0x12, 0x10]).unwrap();
        assert_eq!(
            c,
            AacConfig {
                object_type: 2,
                frequency_index: 4,
                sample_rate: 44_100,
                channels: 2
            }
        );
        assert_eq!(c.codec(), "mp4a.40.2");
    }

    #[test]
    fn writes_adts_headers() {
        let c = parse_config(&[0x12, 0x10]).unwrap();
        // 100 bytes of payload: frame length 107.
        assert_eq!(
            c.adts_header(100).unwrap(),
            [0xFF, 0xF1, 0x50, 0x80, 0x0D, 0x7F, 0xFC]
        );
        // 48 kHz mono LC, longest frame.
        let c = parse_config(&[0x11, 0x88]).unwrap();
        assert_eq!((c.sample_rate, c.channels), (48_000, 1));
        assert_eq!(
            c.adts_header(8191 - 7).unwrap(),
            [0xFF, 0xF1, 0x4C, 0x43, 0xFF, 0xFF, 0xFC]
        );
        assert!(c.adts_header(8191 - 6).is_err());
        assert!(c.adts_header(usize::MAX).is_err());
    }

    #[test]
    fn reads_adts_fields() {
        // LC (profile 1), 44.1 kHz (index 4), stereo.
        assert_eq!(AacConfig::from_adts(1, 4, 2), parse_config(&[0x12, 0x10]));
        let c = AacConfig::from_adts(0, 3, 7).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (1, 48_000, 8));
        assert!(AacConfig::from_adts(1, 13, 2).is_err());
        assert!(AacConfig::from_adts(1, 15, 2).is_err());
        assert!(matches!(
            AacConfig::from_adts(1, 4, 0),
            Err(MediaError::Unsupported(_))
        ));
        assert!(AacConfig::from_adts(1, 4, 8).is_err());
    }

    #[test]
    fn refuses_what_adts_cannot_carry() {
        // HE-AAC (object type 5).
        assert!(matches!(
            parse_config(&[0x2B, 0x92, 0x08, 0x00]),
            Err(MediaError::Unsupported(m)) if m.contains("HE-AAC")
        ));
        // Escaped object type 42 (USAC): 31, then 10.
        assert!(matches!(
            parse_config(&[0xF9, 0x46, 0x20]),
            Err(MediaError::Unsupported(m)) if m.contains("42")
        ));
        // Explicit sample rate.
        assert!(matches!(
            parse_config(&[0x17, 0x80, 0xBB, 0x80, 0x10]),
            Err(MediaError::Unsupported(_))
        ));
        // Channel configuration 0.
        assert!(matches!(
            parse_config(&[0x12, 0x00]),
            Err(MediaError::Unsupported(_))
        ));
        // Reserved frequency index 13.
        assert!(parse_config(&[0x16, 0x90]).is_err());
        assert_eq!(
            parse_config(&[0x12]),
            Err(MediaError::Truncated("AAC AudioSpecificConfig"))
        );
        assert!(parse_config(&[]).is_err());
    }
}
